"""``--set key.path=value``: command-line overrides of any spec value, validated exactly like the file.

An override replaces one value of the loaded data before validation. The value is read as YAML
(``3``, ``3e-4``, ``true``, ``[1, 2]``, ``Adam``), by the same safe loader as spec files.
"""

from __future__ import annotations

from typing import Any

from compiler.common.suggest import did_you_mean
from compiler.errors import Problem, SpecError
from compiler.front.load import load_text


def apply_overrides(data: Any, overrides: list[str]) -> Any:
    """``data`` with every ``KEY.PATH=VALUE`` applied in order; SpecError naming each bad override."""
    problems = []
    for override in overrides:
        problem = _apply(data, override)
        if problem:
            message, fix = problem
            problems.append(Problem(f"--set {override}", 1, 1, message, fix=fix))
    if problems:
        raise SpecError(problems)
    return data


def _apply(data: Any, override: str) -> tuple[str, str] | None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        return "an override is KEY=VALUE", "e.g. --set train.epochs=3"
    try:
        value, _ = load_text(text, f"--set {key}")
    except SpecError as err:
        return f"the value is not valid YAML: {err.problems[0].message}", "quote it, e.g. --set name='\"x\"'"
    path = key.strip().split(".")
    if not isinstance(data, dict):
        return "the spec is not a mapping", ""
    node = data
    for depth, part in enumerate(path[:-1]):
        child, following = _child(node, part), path[depth + 1]
        if isinstance(child, str) and child == following:
            child = {child: {}}  # `optimizer: SGD` + `optimizer.SGD.lr=...`: give the bare call its arguments
            _assign(node, part, child)
        elif isinstance(child, dict) and child.get(following, "") is None:
            child[following] = {}  # `- Linear:` with no arguments yet
        if not isinstance(child, (dict, list)):
            keys = list(node) if isinstance(node, dict) else [str(i) for i in range(len(node))]
            where = ".".join(path[: depth + 1])
            return f"the spec has no {where!r} to set a value in", did_you_mean(part, [str(k) for k in keys], "") or (
                f"keys there: {', '.join(map(str, keys))}" if keys else ""
            )
        node = child
    last = path[-1]
    if isinstance(node, list) and (not last.isdigit() or int(last) >= len(node)):
        return f"{key!r}: index {last} is not in the list of {len(node)}", "use an index from 0"
    _assign(node, last, value)
    return None


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
