"""Shape rules of a graph node's operations (§15) and of layers that take several tensors.

Unlike the layer rules, a value here is a WHOLE shape: a graph holds parameters that have no batch
axis (ViT's ``class_token`` is ``(1, 1, 768)``) beside batches of samples, and broadcasting between
them is torch's. The batch axis is written ``N``; it broadcasts with 1 and must stay first.
"""

from __future__ import annotations

from typing import Any

from compiler.facts.shapes.base import ShapeError

BATCH = "N"
SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@"}


def format_value(shape: tuple) -> str:
    """``(N, 197, 768)``."""
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _listing(names: list[str], shapes: list[tuple]) -> str:
    return ", ".join(f"{name} {format_value(shape)}" for name, shape in zip(names, shapes))


def _batch_first(op: str, shape: tuple, names: list[str], shapes: list[tuple]) -> tuple:
    if BATCH in shape[1:]:
        raise ShapeError(
            f"{op} of {_listing(names, shapes)} would move the batch axis N from the front",
            "give the parameter as many axes as the batched value, with size 1 first (e.g. [1, 197, 768])",
        )
    return shape


def broadcast(op: str, shapes: list[tuple], names: list[str]) -> tuple:
    """add, sub, mul, div: torch's broadcasting (sizes equal, or 1, aligned from the last axis)."""
    ndim = max(len(s) for s in shapes)
    out: list[Any] = []
    for axis in range(ndim):
        sizes = {s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0} - {1}
        if len(sizes) > 1:
            raise ShapeError(
                f"{op} needs shapes that broadcast (equal sizes or 1 on each axis, from the last): "
                f"{_listing(names, shapes)} differ on axis {axis - ndim}",
                "check the steps that make these values (a Linear's out_features, a parameter's shape)",
            )
        out.append(sizes.pop() if sizes else 1)
    return _batch_first(op, tuple(out), names, shapes)


def matmul(shapes: list[tuple], names: list[str]) -> tuple:
    """``a @ b`` for a and b of 2 or more axes: (..., n, k) @ (..., k, m) -> (..., n, m)."""
    if len(shapes) != 2:
        raise ShapeError(f"matmul takes two values, got {len(shapes)}", "write `matmul: [a, b]`")
    a, b = shapes
    if len(a) < 2 or len(b) < 2:
        raise ShapeError(f"matmul needs values of 2 or more axes: {_listing(names, shapes)}", "reshape the value first")
    if BATCH in (a[-1], b[-2]):
        raise ShapeError(
            f"matmul of {_listing(names, shapes)} would contract the batch axis N (a @ b sums over a's last axis "
            "and b's second-to-last)",
            "transpose the batched value's last two axes first (a `Transpose: [1, 2]` step), or swap the operands",
        )
    if a[-1] != b[-2]:
        raise ShapeError(
            f"matmul of {_listing(names, shapes)}: {names[0]}'s last size {a[-1]} must equal "
            f"{names[1]}'s second-to-last size {b[-2]}",
            "transpose one of them (a `Transpose` step) or check their sizes",
        )
    lead = broadcast("matmul", [a[:-2], b[:-2]], names) if a[:-2] or b[:-2] else ()
    return _batch_first("matmul", (*lead, a[-2], b[-1]), names, shapes)


def concatenate(op: str, dim: int, shapes: list[tuple], names: list[str]) -> tuple:
    """cat: sizes summed along ``dim``, the other axes equal; stack: equal shapes, a new axis at ``dim``."""
    ndim = len(shapes[0])
    if any(len(s) != ndim for s in shapes):
        raise ShapeError(f"{op} needs values with the same number of axes: {_listing(names, shapes)}", "")
    top = ndim + (1 if op == "stack" else 0)
    if not -top <= dim < top:
        raise ShapeError(f"{op} dim {dim} is out of range for {ndim}-axis values", f"use 1 to {top - 1}")
    axis = dim % top
    if axis == 0:
        raise ShapeError(f"{op} along dim 0 would join the batch axis", "use dim 1 or later (the batch is dim 0)")
    if op == "stack":
        if len(set(shapes)) > 1:
            raise ShapeError(f"stack needs equal shapes: {_listing(names, shapes)}", "check the values' sizes")
        return (*shapes[0][:axis], len(shapes), *shapes[0][axis:])
    for i in range(ndim):
        if i != axis and len({s[i] for s in shapes}) > 1:
            raise ShapeError(
                f"cat along dim {dim} needs the other axes equal: {_listing(names, shapes)} differ on axis {i}",
                "expand a parameter to the batch first (`expand_batch:`), or check the sizes",
            )
    if any(s[axis] == BATCH for s in shapes):
        raise ShapeError("cat along the batch axis", "use another dim")
    return (*shapes[0][:axis], sum(s[axis] for s in shapes), *shapes[0][axis + 1 :])


def expand_batch(shape: tuple, name: str) -> tuple:
    """``value.expand(N, -1, ...)``: a parameter whose first size is 1, repeated over the batch."""
    if shape[:1] == (BATCH,):
        raise ShapeError(f"{name} {format_value(shape)} already has the batch axis", "use it as it is")
    if shape[:1] != (1,):
        raise ShapeError(
            f"expand_batch needs a first size of 1 to repeat over the batch, {name} is {format_value(shape)}",
            f"give {name} the shape [1, {', '.join(map(str, shape))}]",
        )
    return (BATCH, *shape[1:])


# the modes torch's interpolate has for one rank only (3: N, C, L; 4: N, C, H, W; 5: N, C, D, H, W)
MODE_RANKS = {"linear": 3, "bilinear": 4, "bicubic": 4, "trilinear": 5}


def interpolate(shapes: list[tuple], names: list[str], mode: str = "nearest") -> tuple:
    """``F.interpolate(a, size=b.shape[2:], mode=mode)``: a's batch and channels, b's spatial sizes (FPN's
    top-down path)."""
    a, b = shapes
    if a[:1] != (BATCH,) or b[:1] != (BATCH,):
        raise ShapeError(
            f"interpolate resizes batches: {_listing(names, shapes)}", "expand a parameter over the batch first"
        )
    if not 3 <= len(a) <= 5 or len(a) != len(b):
        raise ShapeError(
            f"interpolate needs two maps of the same rank, 3 to 5 axes (N, C, spatial...): {_listing(names, shapes)}",
            "resize a feature map to another map's size, e.g. `interpolate: [top, lateral]`",
        )
    rank = MODE_RANKS.get(mode)
    if rank is not None and len(a) != rank:
        axes = {3: "(N, C, L)", 4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}
        raise ShapeError(
            f"interpolate's mode {mode!r} resizes {rank}-axis maps {axes[rank]}, got {_listing(names, shapes)}",
            "use a mode for this rank (`nearest`, `nearest-exact` and `area` take any): "
            + ", ".join(f"{m} for {r} axes" for m, r in MODE_RANKS.items()),
        )
    return (*a[:2], *b[2:])


def multihead_attention(arguments: dict, shapes: list[tuple], names: list[str]) -> list[tuple]:
    """``MultiheadAttention(query, key, value)`` with ``batch_first=True`` -> (output, averaged weights); ``arguments``
    are its constructor's and its forward's options (``average_attn_weights: false``: the weights of each head)."""
    if len(shapes) != 3:
        raise ShapeError(
            f"MultiheadAttention takes (query, key, value), got {len(shapes)} value(s)",
            "write `from: [q, k, v]` (`[h, h, h]` for self-attention)",
        )
    if not arguments.get("batch_first"):
        raise ShapeError(
            "MultiheadAttention without batch_first takes (sequence, batch, features); specc's values are batch first",
            "add `batch_first: true`",
        )
    embed = arguments.get("embed_dim")
    kdim, vdim = arguments.get("kdim") or embed, arguments.get("vdim") or embed
    q, k, v = shapes
    for shape, size, role in ((q, embed, "query"), (k, kdim, "key"), (v, vdim, "value")):
        if len(shape) != 3 or shape[0] != BATCH or shape[-1] != size:
            raise ShapeError(
                f"MultiheadAttention's {role} must be (N, length, {size}), got {format_value(shape)}",
                "check embed_dim (and kdim, vdim) against the values' last size",
            )
    if k[1] != v[1]:
        raise ShapeError(
            f"MultiheadAttention's key and value must have the same length: {_listing(names[1:], [k, v])}", ""
        )
    extra = int(bool(arguments.get("add_bias_kv"))) + int(bool(arguments.get("add_zero_attn")))  # keys torch adds
    if not arguments.get("average_attn_weights", True):  # forward's option: one map per head
        return [q, (BATCH, arguments.get("num_heads"), q[1], k[1] + extra)]
    return [q, (BATCH, q[1], k[1] + extra)]


MULTI_INPUT_RULES = {"MultiheadAttention": multihead_attention}
