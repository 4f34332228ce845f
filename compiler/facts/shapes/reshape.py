"""Shape rules of reshaping and resampling layers (Flatten, Reshape, Select, Upsample, PixelShuffle, ...), specc's
functional layers, and of merge blocks (``merged_shape``)."""

from __future__ import annotations

import math
from typing import Any

from compiler.facts.shapes.base import (
    _CHECK_INPUT,
    _LAYOUTS,
    Shape,
    ShapeError,
    _at_least,
    _batched_dim,
    _fmt,
    _get,
    _ints,
    _is_int,
    _nonempty,
    _required,
)


def _flatten(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    start = _batched_dim(name, "start_dim", _get(a, "start_dim", 1), shape)
    end = _batched_dim(name, "end_dim", _get(a, "end_dim", -1), shape)
    if start > end:
        raise ShapeError(
            f"{name}'s start_dim={_get(a, 'start_dim', 1)} comes after its end_dim={_get(a, 'end_dim', -1)} "
            f"(axes {start} and {end} of the batched input)",
            "swap them, or use start_dim <= end_dim",
        )
    if start == 0 and end > 0:
        raise ShapeError(
            f"{name} with start_dim=0 would flatten the batch dimension into the features, so the model's outputs "
            f"would lose their batch axis",
            "use `start_dim: 1` (the default) to keep the batch",
        )
    if start == end:
        return shape
    i, j = start - 1, end  # sample axes i..j-1 are merged
    return (*shape[:i], math.prod(shape[i:j]), *shape[j:])


def _unflatten(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    raw_dim = _required(name, a, "dim")
    dim = _batched_dim(name, "dim", raw_dim, shape)
    if dim == 0:
        raise ShapeError(f"{name} with dim=0 would split the batch dimension", "use `dim: 1` or later")
    sizes = _get(a, "unflattened_size")
    if not isinstance(sizes, (tuple, list)) or not all(_is_int(s) for s in sizes) or not sizes:
        raise ShapeError(
            f"{name}'s unflattened_size must be a non-empty list of ints, got {sizes!r}",
            "give `unflattened_size:` a list such as [16, 7, 7]",
        )
    sizes = tuple(int(s) for s in sizes)
    size = shape[dim - 1]
    known = math.prod(s for s in sizes if s != -1)
    if (
        sizes.count(-1) > 1
        or any(s < -1 for s in sizes)
        or (-1 in sizes and (known == 0 or size % known))
        or (-1 not in sizes and known != size)
    ):
        raise ShapeError(
            f"{name}'s unflattened_size={list(sizes)} does not multiply up to {size}, the size of axis {dim} of its "
            f"input {_fmt(shape)}",
            f"give sizes whose product is {size} (one of them may be -1 to infer it)",
        )
    if -1 in sizes:
        sizes = tuple(size // known if s == -1 else s for s in sizes)
    return (*shape[: dim - 1], *sizes, *shape[dim:])


def _sample_dim(name: str, arg: str, dim: Any, shape: Shape) -> int:
    """A ``dim`` that must name an axis of the sample (not the batch): its index into ``shape``."""
    d = _batched_dim(name, arg, dim, shape)
    if d == 0:
        raise ShapeError(
            f"{name}'s {arg}={dim} is the batch dimension", f"use `{arg}: 1` or later (dims count the batch)"
        )
    return d - 1


def _select(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    d = _sample_dim(name, "dim", _required(name, a, "dim"), shape)
    index, size = _required(name, a, "index"), shape[d]
    if not _is_int(index) or not -size <= index < size:
        raise ShapeError(
            f"{name}'s index={index!r} is out of range for axis {d + 1} of size {size} in {_fmt(shape)}",
            f"use an index in [{-size}, {size - 1}]",
        )
    return (*shape[:d], *shape[d + 1 :])


def _slice(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    d = _sample_dim(name, "dim", _required(name, a, "dim"), shape)
    start, end, step = _get(a, "start"), _get(a, "end"), _get(a, "step", 1)
    if any(v is not None and not _is_int(v) for v in (start, end, step)) or step is None or step < 1:
        raise ShapeError(
            f"{name} needs int start/end and a step >= 1, got {start!r}, {end!r}, {step!r}",
            "e.g. `Slice: {dim: 1, start: 0, end: 4}`",
        )
    length = len(range(*slice(start, end, step).indices(shape[d])))
    if length == 0:
        raise ShapeError(
            f"{name} keeps nothing of axis {d + 1} (size {shape[d]}) of {_fmt(shape)}", "check start and end"
        )
    return (*shape[:d], length, *shape[d + 1 :])


def _permute(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    dims = _required(name, a, "dims")
    n = len(shape) + 1
    if not isinstance(dims, (tuple, list)) or not all(_is_int(d) for d in dims):
        raise ShapeError(f"{name}'s dims must be a list of ints, got {dims!r}", "e.g. `dims: [0, 2, 1]`")
    normal = [d + n if d < 0 else d for d in dims]
    if sorted(normal) != list(range(n)):
        raise ShapeError(
            f"{name}'s dims={list(dims)} must name each of the {n} dims of {_fmt(('N', *shape))} once",
            f"give a permutation of 0..{n - 1}",
        )
    if normal[0] != 0:
        raise ShapeError(f"{name}'s dims={list(dims)} move the batch dimension", "keep 0 first")
    full = (0, *shape)
    return tuple(full[d] for d in normal[1:])


def _transpose(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    d0 = _sample_dim(name, "dim0", _required(name, a, "dim0"), shape)
    d1 = _sample_dim(name, "dim1", _required(name, a, "dim1"), shape)
    out = list(shape)
    out[d0], out[d1] = out[d1], out[d0]
    return tuple(out)


def _reduce(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    raw = _required(name, a, "dim")
    dims = [_sample_dim(name, "dim", d, shape) for d in (raw if isinstance(raw, (tuple, list)) else (raw,))]
    if len(set(dims)) != len(dims):
        raise ShapeError(f"{name} names a dim twice in {list(raw)}", "name each dim once")
    if _get(a, "keepdim", False):
        return tuple(1 if i in dims else s for i, s in enumerate(shape))
    out = tuple(s for i, s in enumerate(shape) if i not in dims)
    return out


def _reshape(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    sizes = _required(name, a, "shape")
    if not isinstance(sizes, (tuple, list)) or not sizes or not all(_is_int(s) and (s >= 1 or s == -1) for s in sizes):
        raise ShapeError(
            f"{name}'s shape must be a non-empty list of positive ints (one may be -1), got {sizes!r}",
            "e.g. `shape: [16, 49]` (one sample's shape; the batch is kept)",
        )
    total, known = math.prod(shape), math.prod(s for s in sizes if s != -1)
    if list(sizes).count(-1) > 1 or (-1 in sizes and total % known) or (-1 not in sizes and known != total):
        raise ShapeError(
            f"{name} cannot reshape {_fmt(shape)} ({total} values) into {_fmt(tuple(sizes))}",
            f"give sizes whose product is {total} (one of them may be -1)",
        )
    return tuple(total // known if s == -1 else s for s in sizes)


def merged_shape(op: str, dim: int, shapes: list[Shape], names: list[str]) -> Shape:
    """The output of a merge block: ``cat`` along ``dim`` (torch's numbering), ``add``/``mul`` broadcast."""
    listing = ", ".join(f"{n} {_fmt(s)}" for n, s in zip(names, shapes))
    if op == "cat":
        first = shapes[0]
        if any(len(s) != len(first) for s in shapes):
            raise ShapeError(
                f"cat needs branches with the same number of axes, got {listing}",
                "make every branch end in the same layout",
            )
        d = _sample_dim("cat", "dim", dim, first)
        for s in shapes:
            if s[:d] + s[d + 1 :] != first[:d] + first[d + 1 :]:
                raise ShapeError(
                    f"cat along dim {dim} needs the other axes to match, got {listing}",
                    "give the branches the same sizes except along the cat dim (check strides/padding)",
                )
        return (*first[:d], sum(s[d] for s in shapes), *first[d + 1 :])
    out: list[int] = []
    for axis in range(max(len(s) for s in shapes)):
        sizes = {s[len(s) - 1 - axis] for s in shapes if axis < len(s)}
        if len(sizes - {1}) > 1:
            raise ShapeError(
                f"{op} needs branch shapes that match or broadcast, got {listing}",
                "make the branches produce the same shape (e.g. a strided 1x1 conv on the shortcut)",
            )
        out.insert(0, max(sizes))
    return tuple(out)


_UPSAMPLE_MODES = {
    "nearest": (1, 2, 3),
    "nearest-exact": (1, 2, 3),
    "area": (1, 2, 3),
    "linear": (1,),
    "bilinear": (2,),
    "bicubic": (2,),
    "trilinear": (3,),
}


def _upsample(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    if name == "Upsample":
        mode, align = _get(a, "mode", "nearest"), _get(a, "align_corners")
    else:
        mode, align = ("nearest", None) if name == "UpsamplingNearest2d" else ("bilinear", True)
    size, scale = _get(a, "size"), _get(a, "scale_factor")
    if not isinstance(scale, (tuple, list)) and not scale:
        scale = None  # Upsample stores a zero scale_factor as None
    _upsample_mode(name, mode, align, shape)
    if size is not None and scale is not None:
        raise ShapeError(f"{name} takes either size or scale_factor, not both", "remove one of them")
    if size is None and scale is None:
        raise ShapeError(f"{name} needs a size or a scale_factor", "add `scale_factor:` (e.g. 2) or `size:`")
    if size is not None and _get(a, "recompute_scale_factor"):
        raise ShapeError(
            f"{name}: recompute_scale_factor is not meaningful with an explicit size",
            "remove `recompute_scale_factor:`",
        )
    nd = len(shape) - 1
    if size is not None:
        sizes = _ints(name, "size", size, nd, one_ok=False)
    else:
        sizes = tuple(int(n * s) for n, s in zip(shape[1:], _upsample_scales(name, scale, shape)))
    _nonempty(name, shape)
    if any(s < (0 if mode == "area" else 1) for s in sizes):
        raise ShapeError(
            f"{name} would resize {_fmt(shape)} to {_fmt((shape[0], *sizes))}: output sizes must be greater than 0",
            "use a larger size or scale_factor",
        )
    return (shape[0], *sizes)


def _upsample_mode(name: str, mode: Any, align: Any, shape: Shape) -> None:
    """The interpolation mode exists, takes align_corners if given, and fits the sample's spatial axes."""
    if mode not in _UPSAMPLE_MODES:
        raise ShapeError(
            f"{name} cannot use mode={mode!r}"
            + (" (it needs antialias, which Upsample cannot set)" if mode == "lanczos" else ""),
            "use mode nearest, nearest-exact, area, linear, bilinear, bicubic or trilinear",
        )
    if mode in ("nearest", "nearest-exact", "area") and align is not None:
        raise ShapeError(
            f"{name}'s align_corners only applies to the modes linear, bilinear, bicubic and trilinear, not {mode!r}",
            "remove `align_corners:`",
        )
    if not 2 <= len(shape) <= 4 or len(shape) - 1 not in _UPSAMPLE_MODES[mode]:
        layouts = " or ".join(_LAYOUTS[n] for n in _UPSAMPLE_MODES[mode])
        fits = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(len(shape) - 1)
        fix = (
            f"use mode {fits!r} (or 'nearest') for {_LAYOUTS[len(shape) - 1]} samples"
            if fits and (name == "Upsample")
            else _CHECK_INPUT
        )
        raise ShapeError(
            f"{name} in mode {mode!r} expects each sample to be {layouts}, but its input is {_fmt(shape)}", fix
        )


def _upsample_scales(name: str, scale: Any, shape: Shape) -> tuple[float, ...]:
    """One scale factor per spatial axis."""
    nd = len(shape) - 1
    if not isinstance(scale, (tuple, list)):
        return (float(scale),) * nd
    if len(scale) != nd:
        raise ShapeError(
            f"{name}'s scale_factor {tuple(scale)} needs one value per spatial axis of its input {_fmt(shape)} ({nd})",
            f"give `scale_factor:` one number or {nd}",
        )
    return tuple(float(s) for s in scale)


def _pixel_shuffle(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    down = name == "PixelUnshuffle"
    arg = "downscale_factor" if down else "upscale_factor"
    r = _required(name, a, arg)
    if len(shape) < 3:
        raise ShapeError(f"{name} expects each sample to be (C, H, W), but its input is {_fmt(shape)}", _CHECK_INPUT)
    if r < 1:
        raise ShapeError(f"{name}'s {arg} must be positive, got {r}", f"give `{arg}:` >= 1")
    *lead, c, h, w = shape
    if down:
        if h % r or w % r:
            raise ShapeError(
                f"{name} needs height and width divisible by {arg}={r}, but its input is {_fmt(shape)}", _CHECK_INPUT
            )
        return (*lead, c * r * r, h // r, w // r)
    if c % (r * r):
        raise ShapeError(
            f"{name} needs channels divisible by {arg}**2 = {r * r}, but its input {_fmt(shape)} has {c} channels",
            f"give the layer before it a multiple of {r * r} channels",
        )
    return (*lead, c // (r * r), h * r, w * r)


def _unfold(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    """Sliding blocks (im2col): (C, H, W) -> (C * kh * kw, L), L blocks in all."""
    if len(shape) != 3:
        raise ShapeError(f"{name} expects each sample to be (C, H, W), but its input is {_fmt(shape)}", _CHECK_INPUT)
    kernel = _ints(name, "kernel_size", _required(name, a, "kernel_size"), 2)
    dilation, padding, stride = (
        _ints(name, k, _get(a, k, d), 2) for k, d in (("dilation", 1), ("padding", 0), ("stride", 1))
    )
    _at_least(name, "kernel_size", kernel, 1)
    _at_least(name, "dilation", dilation, 1)
    _at_least(name, "padding", padding, 0)
    _at_least(name, "stride", stride, 1)
    blocks = [
        (n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, d, p, s in zip(shape[1:], kernel, dilation, padding, stride)
    ]
    if min(blocks) < 1:
        raise ShapeError(
            f"{name}'s kernel_size {kernel} (dilation {dilation}) does not fit its input {_fmt(shape)}", _CHECK_INPUT
        )
    return (shape[0] * kernel[0] * kernel[1], blocks[0] * blocks[1])


def _channel_shuffle(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    groups = _required(name, a, "groups")
    if len(shape) < 2:
        raise ShapeError(
            f"{name} expects each sample to be (C, *spatial) with at least one spatial axis, but its "
            f"input is {_fmt(shape)}",
            _CHECK_INPUT,
        )
    if groups < 1:
        raise ShapeError(f"{name}'s groups must be positive, got {groups}", "give `groups:` >= 1")
    if shape[0] % groups:
        raise ShapeError(
            f"{name} needs channels divisible by groups={groups}, but its input {_fmt(shape)} has {shape[0]} channels",
            "pick groups that divides the number of channels",
        )
    return shape
