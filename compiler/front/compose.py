"""``base: other.yaml``: a spec that extends another, merged the way ``--set`` merges.

The base is read like the spec itself (a regular file, bounded, the same safe loader), from a path
relative to the extending spec's folder that must stay inside the project: the folder specc runs in,
or the folder of the spec it was asked to load. Mappings merge key by key, the extending spec
winning; any other value (a list, a scalar) replaces the base's. Chains are allowed up to
``MAX_BASE_DEPTH``; a cycle is an error. Every merged value keeps the file, line and column it came
from, so a problem in a value inherited from a base is reported in the base file, naming the spec
that extends it.
"""

from __future__ import annotations

import os
from typing import Any

from compiler.common.paths import inside
from compiler.errors import SpecError
from compiler.front.load import Path_, Source, load_file

MAX_BASE_DEPTH = 8  # a base of a base of ...: real families of experiments are two or three deep


def compose(data: Any, source: Source, root: str | None = None) -> tuple[Any, Source]:
    """``data`` merged over its ``base:`` chain (if it names one), with a Source that locates every value."""
    top = os.path.dirname(os.path.abspath(source.filename)) if root is None else root
    return _compose(data, source, top, [os.path.realpath(source.filename)])


def _compose(data: Any, source: Source, root: str, chain: list[str]) -> tuple[Any, Source]:
    if not isinstance(data, dict) or "base" not in data:
        return data, source
    target = _base_path(data["base"], source, root, chain)
    base_data, base_source = load_file(target)
    base_data, base_source = _compose(base_data, base_source, root, [*chain, os.path.realpath(target)])
    if not isinstance(base_data, dict):
        raise _error(source, ("base",), f"the base spec {data['base']!r} is not a mapping", "extend a spec file")
    child = {k: v for k, v in data.items() if k != "base"}
    merged = merge(base_data, child)
    return merged, _merged_source(merged, base_source, source)


def _base_path(value: Any, source: Source, root: str, chain: list[str]) -> str:
    """The file ``base:`` names, checked: text, relative, inside the project, no cycle, not too deep."""
    if not isinstance(value, str) or not value.strip():
        raise _error(source, ("base",), "`base` must be the path of another spec file", "e.g. base: mnist_cnn.yaml")
    if not value.isprintable():  # a NUL byte cannot be in a path; other control characters hide what is named
        raise _error(source, ("base",), f"the base {value!r} holds control characters", _RELATIVE)
    if os.path.isabs(value):
        raise _error(source, ("base",), f"the base {value!r} is an absolute path", _RELATIVE)
    target = os.path.normpath(os.path.join(os.path.dirname(source.filename), value))
    if not (inside(target) or inside(target, root)):
        raise _error(source, ("base",), f"the base {value!r} leaves the project", _RELATIVE)
    real = os.path.realpath(target)
    if real in chain:
        cycle = " -> ".join(os.path.basename(p) for p in [*chain[chain.index(real) :], real])
        raise _error(source, ("base",), f"`base` makes a cycle: {cycle}", "remove `base` from one of these specs")
    if len(chain) > MAX_BASE_DEPTH:
        message = f"`base` chains more than {MAX_BASE_DEPTH} specs deep"
        raise _error(source, ("base",), message, "flatten the chain: copy shared values into fewer bases")
    if not os.path.exists(real):
        raise _error(
            source, ("base",), f"the base spec {value!r} was not found (looked for {target})", "check the path"
        )
    return target


_RELATIVE = "name a spec file by a path relative to this spec's folder, inside the project"


def _error(source: Source, path: Path_, message: str, fix: str) -> SpecError:
    return SpecError([source.problem(path, message, fix)], source.text, source.texts)


def merge(base: Any, child: Any) -> Any:
    """``child`` over ``base``: mappings merge key by key (recursively); anything else replaces."""
    if not (isinstance(base, dict) and isinstance(child, dict)):
        return child
    merged = dict(base)
    for key, value in child.items():
        merged[key] = merge(base[key], value) if key in base else value
    return merged


def _merged_source(merged: Any, base: Source, child: Source) -> Source:
    """The child's Source, extended with the base's positions for every value the base supplied."""
    result = Source(child.filename, child.text)
    result.texts = {**base.texts, **child.texts, base.filename: base.text, child.filename: child.text}
    result.extended_by = {**base.extended_by, **child.extended_by, base.filename: child.filename}
    result.positions[()] = child.positions.get((), (1, 1))
    if ("base",) in child.positions:
        result.positions[("base",)] = child.positions[("base",)]
    for path in _paths(merged, ()):
        if path in child.positions:
            result.positions[path] = child.positions[path]
            if path in child.files:
                result.files[path] = child.files[path]
        elif path in base.positions:
            result.positions[path] = base.positions[path]
            result.files[path] = base.files.get(path, base.filename)
    return result


def _paths(data: Any, path: Path_):
    """Every path into ``data`` (mapping keys and list indices), depth first."""
    yield path
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield from _paths(value, (*path, key))


__all__ = ["MAX_BASE_DEPTH", "compose", "merge"]
