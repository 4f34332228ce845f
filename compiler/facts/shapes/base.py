"""The shape rules' common ground: ``ShapeError``, ``format_shape`` and the argument and layout checks
every rule uses (a size list, a dimension index, channels-first samples)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Shape = tuple[int, ...]
Rule = Callable[[str, dict[str, Any], Shape], Shape]

_CHECK_INPUT = "check the layers before it, or the `input:` shape"


class ShapeError(Exception):
    """A layer cannot take its input; ``message`` says why, ``fix`` what to change."""

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message = message
        self.fix = fix


def format_shape(shape: tuple) -> str:
    """``(128, 14, 14)``; a one-axis shape keeps its comma, ``(10,)``, as in Python."""
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


_fmt = format_shape


def _is_int(value: Any) -> bool:
    return isinstance(value, int)  # bool is an int to torch too


def _ints(name: str, arg: str, value: Any, n: int, *, one_ok: bool = True) -> Shape:
    """An int or a tuple of ints as torch expands it to ``n`` values (a 1-tuple broadcasts when ``one_ok``)."""
    if _is_int(value):
        return (int(value),) * n
    if isinstance(value, (tuple, list)) and all(_is_int(v) for v in value):
        if len(value) == n:
            return tuple(int(v) for v in value)
        if one_ok and len(value) == 1:
            return (int(value[0]),) * n
    many = "one int" if n == 1 else f"one int or a list of {n} ints"
    raise ShapeError(f"{name}'s {arg} must be {many}, got {value!r}", f"give `{arg}:` {many}")


def _at_least(name: str, arg: str, values: Shape, low: int) -> None:
    if any(v < low for v in values):
        word = "positive" if low == 1 else "non-negative"
        shown = values[0] if len(set(values)) == 1 else values
        raise ShapeError(f"{name}'s {arg} must be {word}, got {shown}", f"give `{arg}:` values >= {low}")


def _get(arguments: dict[str, Any], key: str, default: Any = None) -> Any:
    return arguments.get(key, default)


def _required(name: str, arguments: dict[str, Any], key: str) -> Any:
    value = arguments.get(key)
    if value is None:
        raise ShapeError(f"{name} is missing its `{key}` argument", f"add `{key}:`")
    return value


def _batched_dim(name: str, arg: str, dim: Any, sample: Shape) -> int:
    """Normalise ``dim``, which counts the batch dimension as torch does (dim 0 is the batch)."""
    n = len(sample) + 1
    if not _is_int(dim):
        raise ShapeError(f"{name}'s {arg} must be an int, got {dim!r}", f"give `{arg}:` an int")
    if not -n <= dim < n:
        raise ShapeError(
            f"{name}'s {arg}={dim} is out of range: its input is a batch of {_fmt(sample)} samples, a {n}-D "
            f"tensor {_fmt(('N', *sample))}, so {arg} must be in [{-n}, {n - 1}]",
            f"dims count the batch: dim 1 is the first axis of a sample, dim -1 the last; "
            f"pick a dim in [{-n}, {n - 1}]",
        )
    return dim + n if dim < 0 else dim


_LAYOUTS = {1: "(C, L)", 2: "(C, H, W)", 3: "(C, D, H, W)"}


def _sibling(name: str, spatial: int) -> str | None:
    """``Conv2d`` -> ``Conv1d`` for one spatial dim, when such a class exists."""
    if 1 <= spatial <= 3 and re.search(r"[123]d$", name):
        return name[:-2] + f"{spatial}d"
    return None


def _channels_first(name: str, shape: Shape, nd: int) -> None:
    """The sample must be (C, *spatial) with exactly ``nd`` spatial dims."""
    if len(shape) == nd + 1:
        return
    layout = _LAYOUTS[nd]
    got = f"its input {_fmt(shape)} has {len(shape)} dim{'s' if len(shape) != 1 else ''}"
    message = f"{name} expects each sample to be {layout}, {nd + 1} dims (the batch not counted), but {got}"
    if len(shape) == nd and shape:
        with_channel = (1, *shape)
        fix = (
            f"give it a channel axis: `input: {list(with_channel)}`, or insert "
            f"`Unflatten: {{dim: 1, unflattened_size: {[1, shape[0]]}}}` before it to make {_fmt(with_channel)}"
        )
        other = _sibling(name, len(shape) - 1)
        if other:
            fix += f"; or use {other} if {_fmt(shape)} is already (C, *spatial)"
    else:
        other = _sibling(name, len(shape) - 1)
        fix = f"use {other} for {_LAYOUTS[len(shape) - 1]} samples, or {_CHECK_INPUT}" if other else _CHECK_INPUT
        if len(shape) < nd:
            fix = f"remove a Flatten before it (or add an Unflatten); {fix}"
    raise ShapeError(message, fix)


def _nonempty(name: str, shape: Shape) -> None:
    if any(s < 1 for s in shape):
        raise ShapeError(f"{name} cannot take an input with an empty axis: {_fmt(shape)}", _CHECK_INPUT)


def _channels(name: str, shape: Shape, arg: str, expected: int, fix: str = "") -> None:
    got = shape[0] if shape else 1
    if got != expected:
        raise ShapeError(
            f"{name} was built for {expected} input channels ({arg}={expected}), but its input {_fmt(shape)} "
            + (f"has {got} channels (dim 0 of a sample)" if shape else "has no channel axis"),
            fix or f"leave `{arg}` out so it is inferred from the input, or set `{arg}: {got}`",
        )
