"""Runs of block uses as loops: ``{repeat: N, as: i, body: {Block: {stride: "2 if $i == 0 else 1"}}}`` in a list,
and under a name pattern (``"denselayer{i + 1}"``) in a named block, wherever each argument is an expression of
the index: one value, a different first value, or a progression that gives back every value exactly."""

from __future__ import annotations

import math
import re
from typing import Any

from compiler.interop.folding import with_children
from compiler.interop.nodes import Block, Loop, Repeat, Use
from compiler.interop.yaml_text import line_count

_NUMBERED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*?)(\d+)\Z")


def fold_loops(node: Any) -> Any:
    """``node`` with each run of two or more uses of one block, in a list or under numbered names, as a loop."""
    node = with_children(node, fold_loops)
    if isinstance(node, Block) and node.origin == "ModuleList":
        return node  # a list called member by member (`call: blocks.3`) lists each member
    if isinstance(node, Block) and not node.named:
        return Block(_list_runs(node.items), False, node.origin)
    if isinstance(node, Block):
        return Block(_named_runs(node.items), True, node.origin)
    return node


def _list_runs(items: tuple) -> tuple:
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(items):
        end, body = _run(items, i, lambda a, b: True)
        if end - i >= 2 and _shorter(Loop(end - i, "i", body), items[i:end]):
            plain = not any(isinstance(v, str) and "$i" in v for _, v in body.args)
            out.append((str(len(out)), Repeat(end - i, (body,)) if plain else Loop(end - i, "i", body)))
            i = end
        else:
            out.append(items[i])
            i += 1
    return tuple(out)


def _named_runs(items: tuple) -> tuple:
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(items):
        first = _NUMBERED.match(items[i][0])
        first = first if first and (first.group(2) == "0" or first.group(2)[0] != "0") else None  # not `layer01`
        end, body = _run(items, i, _next_name) if first else (i, None)
        if end - i >= 2 and _shorter(Loop(end - i, "i", body), items[i:end]):
            start = int(first.group(2))
            index = "{i}" if start == 0 else f"{{i + {start}}}"
            out.append((first.group(1) + index, Loop(end - i, "i", body, pattern=first.group(1) + index)))
            i = end
        else:
            out.append(items[i])
            i += 1
    return tuple(out)


def _shorter(loop: Loop, items: tuple) -> bool:
    return line_count(loop) <= sum(line_count(node) for _, node in items)


def _next_name(a: str, b: str) -> bool:
    """``denselayer2`` follows ``denselayer1`` (and ``layer10`` follows ``layer9``, no leading zeros)."""
    x, y = _NUMBERED.match(a), _NUMBERED.match(b)
    return bool(
        x and y and x.group(1) == y.group(1) and int(y.group(2)) == int(x.group(2)) + 1 and y.group(2)[0] != "0"
    )


def _run(items: tuple, i: int, follows: Any) -> tuple[int, Any]:
    """The longest run of uses of one block from ``i`` whose arguments the index can express: (its end, the loop
    body)."""
    first = items[i][1]
    if not isinstance(first, Use):
        return i, None
    best, end = first, i + 1
    while end < len(items):
        name, node = items[end]
        if not (isinstance(node, Use) and node.name == first.name and follows(items[end - 1][0], name)):
            break
        body = _body([n for _, n in items[i : end + 1]])
        if body is None:
            break
        best, end = body, end + 1
    return end, best


def _body(uses: list[Use]) -> Use | None:
    """The loop body for ``uses``; None where an argument is no expression of the index, or where every one
    changes with it (a loop of blocks that share nothing reads worse than the blocks)."""
    args = []
    for j, (key, _) in enumerate(uses[0].args):
        values = [u.args[j][1] if j < len(u.args) and u.args[j][0] == key else None for u in uses]
        text = _over_index(values)
        if text is None:
            return None
        args.append((key, text))
    if args and all(isinstance(v, str) and "$i" in v for _, v in args):
        return None
    return Use(uses[0].name, tuple(args))


def _over_index(values: list[Any]) -> Any:
    """One value, or an expression of ``$i`` that gives each value at its position exactly; None if none does."""
    first, rest = values[0], values[1:]
    if all(_same(v, first) for v in rest):
        return first
    if all(_same(v, rest[0]) for v in rest) and _literal(first) and _literal(rest[0]):
        if isinstance(first, bool):
            return "$i == 0" if first else "$i > 0"
        return f"{_text(first)} if $i == 0 else {_text(rest[0])}"
    return _progression(values)


def _progression(values: list[Any]) -> str | None:
    """``a + b * $i`` where that evaluates to each value exactly (integers, or floats bit for bit)."""
    if len(values) < 3 or not all(_literal(v) and not isinstance(v, bool) for v in values):
        return None
    a, b = values[0], values[1] - values[0]
    if not all(_same(a + b * i, v) for i, v in enumerate(values)):
        return None
    if a == 0:
        return f"{_text(b)} * $i"
    return f"{_text(a)} + {_text(b)} * $i"


def _literal(value: Any) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str:
    return "true" if value is True else "false" if value is False else repr(value)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and repr(a) == repr(b)
