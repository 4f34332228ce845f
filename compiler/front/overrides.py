"""``--set key.path=value``: command-line overrides of any spec value, validated exactly like the file.

An override replaces one value of the loaded data before validation, or creates it (with the mappings on its
way) where the file has none: ``--set train.checkpoint.every_steps=10``. The value is read as YAML (``3``,
``3e-4``, ``true``, ``[1, 2]``, ``Adam``) by the same safe loader as spec files, and all overrides together
stay within a spec file's bounds (its size, nesting depth and number of values). A problem with an
overridden value is located at the override (``--set train.epochs=0:1:14: ...``), not at the file's old value.
"""

from __future__ import annotations

from typing import Any

from compiler.common.suggest import did_you_mean
from compiler.errors import Problem, SpecError
from compiler.front.load import MAX_BYTES, MAX_DEPTH, MAX_NODES, Source, load_text

MAX_OVERRIDES = 1000
MAX_KEY_PARTS = 32


def apply_overrides(data: Any, overrides: list[str], source: Source | None = None) -> Any:
    """``data`` with every ``KEY.PATH=VALUE`` applied in order; SpecError naming each bad override. With
    ``source``, each overridden path is marked as coming from the command line (``Source.origins``)."""
    if not overrides:
        return data
    problems = _bounds(overrides)
    for override in overrides if not problems else ():
        problem = _apply(data, override)
        if problem:
            message, fix = problem
            problems.append(Problem(f"--set {override}", 1, 1, message, fix=fix))
        elif source is not None:
            key = override.partition("=")[0].strip()
            source.origins[tuple(_part(p) for p in key.split("."))] = (f"--set {override}", len(key) + 2)
    if not problems:
        problems = _size(data, overrides)
    if problems:
        raise SpecError(problems)
    return data


def _part(text: str) -> str | int:
    return int(text) if text.isdigit() else text


def _bounds(overrides: list[str]) -> list[Problem]:
    """The overrides themselves: how many, how long, how deep their keys."""
    where = f"--set {overrides[0]}"
    if len(overrides) > MAX_OVERRIDES:
        return [Problem(where, 1, 1, f"{len(overrides):,} overrides; at most {MAX_OVERRIDES:,}", fix="edit the file")]
    if sum(len(o.encode("utf-8", "surrogatepass")) for o in overrides) > MAX_BYTES:
        message = f"the overrides hold more than {MAX_BYTES // 1024} KiB, the most a spec may"
        return [Problem(where, 1, 1, message, fix="put the values in the file")]
    deep = [o for o in overrides if o.partition("=")[0].count(".") >= MAX_KEY_PARTS]
    if deep:
        return [Problem(f"--set {deep[0]}", 1, 1, f"a key of more than {MAX_KEY_PARTS} parts", fix="check the key")]
    return []


def _size(data: Any, overrides: list[str]) -> list[Problem]:
    """The spec with its overrides is still within a file's bounds: nesting depth and number of values."""
    nodes, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH or nodes > MAX_NODES:
            what = f"nesting deeper than {MAX_DEPTH} levels" if depth > MAX_DEPTH else f"more than {MAX_NODES:,} values"
            return [Problem(f"--set {overrides[-1]}", 1, 1, f"with the overrides, the spec has {what}", fix="")]
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return []


def _apply(data: Any, override: str) -> tuple[str, str] | None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip() or "" in key.strip().split("."):
        return "an override is KEY=VALUE, the key's parts joined by dots", "e.g. --set train.epochs=3"
    try:
        value, _ = load_text(text, f"--set {key}")
    except SpecError as err:
        return f"the value is not valid YAML: {err.problems[0].message}", "quote it, e.g. --set name='\"x\"'"
    if not isinstance(data, dict):
        return "the spec is not a mapping", ""
    path = key.strip().split(".")
    node = data
    for depth, part in enumerate(path[:-1]):
        node = _step(node, part, path[depth + 1])
        if isinstance(node, tuple):
            return _no_place(node[0], path[: depth + 1], part)
    last = path[-1]
    if isinstance(node, list) and (not last.isdigit() or int(last) >= len(node)):
        return f"{key!r}: index {last} is not in the list of {len(node)}", "use an index from 0"
    _assign(node, last, value)
    return None


def _step(node: Any, part: str, following: str) -> Any:
    """The child ``part`` of ``node`` to go on into, made where the file has none; ``(node,)`` where there is
    no place for it (a list index out of range, or a plain value on the way)."""
    child = _child(node, part)
    if isinstance(child, str) and child == following:
        child = {child: {}}  # `optimizer: SGD` + `optimizer.SGD.lr=...`: give the bare call its arguments
        _assign(node, part, child)
    elif child is None and isinstance(node, dict):
        child = {}  # `--set train.checkpoint.every_steps=10` where the file has no `checkpoint:` (or it is empty)
        _assign(node, part, child)
    return child if isinstance(child, (dict, list)) else (node,)


def _no_place(node: Any, path: list[str], part: str) -> tuple[str, str]:
    keys = list(node) if isinstance(node, dict) else [str(i) for i in range(len(node))]
    where = ".".join(path)
    fix = did_you_mean(part, [str(k) for k in keys], "") or (f"keys there: {', '.join(map(str, keys))}" if keys else "")
    return f"the spec has no {where!r} to set a value in", fix


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None


def _assign(node: Any, part: str, value: Any) -> None:
    if isinstance(node, list):
        node[int(part)] = value
    else:
        node[part] = value
