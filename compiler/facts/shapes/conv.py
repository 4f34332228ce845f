"""Shape rules of convolutions, pooling and padding: torch's ``conv_output_size``, ``pooling_output_shape`` and
``F.pad`` arithmetic."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from compiler.facts.shapes.base import (
    _CHECK_INPUT,
    _LAYOUTS,
    Rule,
    Shape,
    ShapeError,
    _at_least,
    _channels,
    _channels_first,
    _fmt,
    _get,
    _ints,
    _is_int,
    _nonempty,
    _required,
    _sibling,
)


def _pad_dim(name: str, mode: str, size: int, left: int, right: int, axis: str) -> int:
    """One axis of ``F.pad`` in ``mode``: the padded size, or ShapeError where torch raises."""
    out = size + left + right
    where = f"axis {axis} of size {size}"
    if mode == "constant":
        if size + min(left, 0) + min(right, 0) < 0 or out < 0:
            raise ShapeError(
                f"{name}'s padding ({left}, {right}) would cut more than the whole {where}",
                "make the negative padding smaller, or check the layers before it",
            )
    elif mode == "reflect":
        if left >= size or right >= size:
            raise ShapeError(
                f"{name}: reflection padding must be smaller than the axis it pads, but it pads {where} "
                f"by ({left}, {right})",
                f"use padding below {size}, or zero/replication padding for a pad this large",
            )
    elif mode == "circular":
        if left > size or right > size:
            raise ShapeError(
                f"{name}: circular padding wraps around more than once: it pads {where} by ({left}, {right})",
                f"use padding of at most {size}, or {_CHECK_INPUT}",
            )
        if out >= 0 and not _circular_copies_fit(size, left, right):
            raise ShapeError(
                f"{name}'s padding ({left}, {right}) mixes cutting and wrapping more than {where} allows",
                "make the negative padding smaller, or avoid mixing negative and positive circular padding",
            )
    elif size < 1:  # replicate
        raise ShapeError(f"{name} cannot replicate-pad the empty {where}", _CHECK_INPUT)
    if out < (0 if mode in ("constant", "circular") else 1):
        raise ShapeError(
            f"{name}'s padding ({left}, {right}) leaves {where} with size {out}",
            "make the negative padding smaller",
        )
    return out


def _slice_len(n: int, start: int, end: int) -> int:
    """Length of ``at::slice(dim of size n, start, end)``: negative bounds wrap once, then clamp."""
    start, end = start + n if start < 0 else start, end + n if end < 0 else end
    start = min(max(start, 0), n)
    return min(max(end, start), n) - start


def _circular_copies_fit(size: int, left: int, right: int) -> bool:
    """ATen's ``_pad_circular`` copies slices (centre, then left and right wraps); with mixed-sign padding
    a source slice can come out longer or shorter than its destination, which ``copy_`` refuses
    unless the source has length 1 (it broadcasts)."""
    out = size + left + right
    copies = [
        (_slice_len(out, max(left, 0), out - max(right, 0)), _slice_len(size, max(-left, 0), size - max(-right, 0)))
    ]
    if left > 0:
        copies.append((_slice_len(out, 0, left), _slice_len(out, out - left - max(right, 0), out - max(right, 0))))
    if right > 0:
        copies.append((_slice_len(out, out - right, out), _slice_len(out, max(left, 0), max(left, 0) + right)))
    return all(src == dst or src == 1 for dst, src in copies)


class _ConvArgs(NamedTuple):
    in_ch: int
    out_ch: int
    kernel: Shape
    stride: Shape
    dilation: Shape
    padding: Any
    mode: str


def _conv(nd: int, transposed: bool) -> Rule:
    def rule(name: str, a: dict[str, Any], shape: Shape) -> Shape:
        _channels_first(name, shape, nd)
        c = _conv_args(name, a, nd)
        _channels(name, shape, "in_channels", c.in_ch)
        spatial = shape[1:]
        if transposed:
            return (
                c.out_ch,
                *_conv_transpose_sizes(name, a, spatial, c.kernel, c.stride, c.dilation, c.padding, c.mode),
            )
        return (c.out_ch, *_conv_sizes(name, shape, c, _conv_pads(name, c, nd)))

    return rule


def _conv_args(name: str, a: dict[str, Any], nd: int) -> _ConvArgs:
    """A convolution's arguments, checked as its constructor checks them."""
    in_ch = _required(name, a, "in_channels")
    out_ch = _required(name, a, "out_channels")
    groups = _get(a, "groups", 1)
    kernel = _ints(name, "kernel_size", _required(name, a, "kernel_size"), nd, one_ok=False)
    stride = _ints(name, "stride", _get(a, "stride", 1), nd)
    dilation = _ints(name, "dilation", _get(a, "dilation", 1), nd)
    padding = _get(a, "padding", 0)
    mode = _get(a, "padding_mode", "zeros")
    if not _is_int(groups) or groups < 1:
        raise ShapeError(f"{name}'s groups must be a positive integer, got {groups!r}", "give `groups:` >= 1")
    for arg, value in (("in_channels", in_ch), ("out_channels", out_ch)):
        if value % groups:
            raise ShapeError(
                f"{name}'s {arg}={value} is not divisible by groups={groups}",
                f"make {arg} a multiple of {groups}, or change `groups:`",
            )
    if mode not in ("zeros", "reflect", "replicate", "circular"):
        raise ShapeError(
            f"{name}'s padding_mode must be zeros, reflect, replicate or circular, got {mode!r}",
            "give `padding_mode:` one of zeros, reflect, replicate, circular",
        )
    _at_least(name, "kernel_size", kernel, 1)
    _at_least(name, "stride", stride, 1)
    _at_least(name, "dilation", dilation, 1)
    return _ConvArgs(in_ch, out_ch, kernel, stride, dilation, padding, mode)


def _conv_pads(name: str, c: _ConvArgs, nd: int) -> list[tuple[int, int]]:
    """(left, right) padding per spatial axis: from a number, a tuple, 'same' or 'valid'."""
    if not isinstance(c.padding, str):
        pad = _ints(name, "padding", c.padding, nd, one_ok=c.mode == "zeros")
        _at_least(name, "padding", pad, 0)
        return [(p, p) for p in pad]
    if c.padding not in ("same", "valid"):
        raise ShapeError(
            f"{name}'s padding must be an int, a tuple, 'same' or 'valid', got {c.padding!r}",
            "write `padding: same`, `padding: valid` or a number",
        )
    if c.padding == "same" and any(s != 1 for s in c.stride):
        raise ShapeError(
            f"{name}: padding='same' is not supported for strided convolutions "
            f"(stride={c.stride if nd > 1 else c.stride[0]})",
            "use stride 1 with padding 'same', or give the padding as a number",
        )
    totals = [d * (k - 1) if c.padding == "same" else 0 for k, d in zip(c.kernel, c.dilation)]
    return [(t // 2, t - t // 2) for t in totals]


def _conv_sizes(name: str, shape: Shape, c: _ConvArgs, pads: list[tuple[int, int]]) -> list[int]:
    """The output's spatial sizes: torch's ``conv_output_size`` over the padded input."""
    sizes = []
    for i, (size, (left, right)) in enumerate(zip(shape[1:], pads)):
        if c.mode != "zeros":
            sizes.append(_pad_dim(name, c.mode, size, left, right, str(i + 1)))
        else:
            sizes.append(size + left + right)
    reach = [d * (k - 1) + 1 for k, d in zip(c.kernel, c.dilation)]
    if any(p < r for p, r in zip(sizes, reach)):
        dilated = f" (dilated to {_fmt(tuple(reach))})" if any(d != 1 for d in c.dilation) else ""
        raise ShapeError(
            f"{name}'s kernel {_fmt(c.kernel)}{dilated} is larger than its padded input: the input "
            f"{_fmt(shape)} is {_fmt(tuple(sizes))} per channel after padding",
            f"use a smaller kernel_size or dilation, add padding, or {_CHECK_INPUT} (the input may have been "
            f"shrunk too much already)",
        )
    return [(p - r) // s + 1 for p, r, s in zip(sizes, reach, c.stride)]


def _conv_transpose_sizes(
    name: str, a: dict[str, Any], spatial: Shape, kernel: Shape, stride: Shape, dilation: Shape, padding: Any, mode: str
) -> list[int]:
    nd = len(spatial)
    if isinstance(padding, str):
        raise ShapeError(
            f"{name} does not accept padding={padding!r} (only Conv layers take 'same'/'valid')",
            "give the padding as a number",
        )
    if mode != "zeros":
        raise ShapeError(f"{name} only supports padding_mode 'zeros', got {mode!r}", "remove `padding_mode:`")
    pad = _ints(name, "padding", padding, nd)
    _at_least(name, "padding", pad, 0)
    extra = _ints(name, "output_padding", _get(a, "output_padding", 0), nd)
    _at_least(name, "output_padding", extra, 0)
    for e, s, d in zip(extra, stride, dilation):
        if e >= s and e >= d:
            raise ShapeError(
                f"{name}'s output_padding must be smaller than either its stride or its dilation, but got "
                f"output_padding={e}, stride={s}, dilation={d}",
                f"use output_padding below {max(s, d)}",
            )
    sizes = [
        (n - 1) * s - 2 * p + d * (k - 1) + e + 1
        for n, k, s, p, d, e in zip(spatial, kernel, stride, pad, dilation, extra)
    ]
    if any(o < 1 for o in sizes):
        raise ShapeError(
            f"{name}'s output would be {_fmt(tuple(sizes))} per channel for an input of {_fmt(spatial)}: "
            f"output size is too small",
            f"use less padding, or {_CHECK_INPUT}",
        )
    return sizes


def _pool_len(size: int, kernel: int, pad: int, stride: int, dilation: int, ceil: bool) -> int:
    """ATen's ``pooling_output_shape``: in ceil mode the last window must start inside the input or left pad."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_ints(name: str, arg: str, value: Any, nd: int) -> Shape:
    return _ints(name, arg, value, nd, one_ok=True)


def _pool(nd: int, kind: str) -> Rule:
    def rule(name: str, a: dict[str, Any], shape: Shape) -> Shape:
        _channels_first(name, shape, nd)
        kernel, stride, pad, dilation = _pool_args(name, a, nd, kind)
        _pool_fits(name, a, nd, kind, shape, kernel)
        ceil = bool(_get(a, "ceil_mode", False))
        sizes = tuple(_pool_len(*args, ceil) for args in zip(shape[1:], kernel, pad, stride, dilation))
        if any(o < 1 for o in sizes):
            raise ShapeError(
                f"{name} with kernel_size={kernel if nd > 1 else kernel[0]} cannot pool an input of {_fmt(shape)}: "
                f"the output would be {_fmt((shape[0], *sizes))}, output size is too small",
                f"use a smaller kernel_size (or padding / ceil_mode), or {_CHECK_INPUT} (it may already be too small)",
            )
        return (shape[0], *sizes)

    return rule


def _pool_args(name: str, a: dict[str, Any], nd: int, kind: str) -> tuple[Shape, Shape, Shape, Shape]:
    """(kernel, stride, padding, dilation) of a max, average or power-average pooling, checked as torch does."""
    raw_kernel = _required(name, a, "kernel_size")
    if kind == "lp":
        if _get(a, "norm_type") == 0:
            raise ShapeError(f"{name}'s norm_type must be non-zero", "give `norm_type:` e.g. 2")
        if nd == 1 and not _is_int(raw_kernel):
            raise ShapeError(f"{name}'s kernel_size must be one int, got {raw_kernel!r}", "give `kernel_size:` one int")
    kernel = _pool_ints(name, "kernel_size", raw_kernel, nd)
    raw_stride = _get(a, "stride")
    if raw_stride is None or (isinstance(raw_stride, (tuple, list)) and not raw_stride):
        stride = kernel  # the module's default, and ATen's for an empty stride
    else:
        stride = _pool_ints(name, "stride", raw_stride, nd)
    pad = (0,) * nd if kind == "lp" else _pool_ints(name, "padding", _get(a, "padding", 0), nd)
    dilation = _pool_ints(name, "dilation", _get(a, "dilation", 1), nd) if kind == "max" else (1,) * nd
    _at_least(name, "kernel_size", kernel, 1)
    _at_least(name, "stride", stride, 1)
    _at_least(name, "dilation", dilation, 1)
    _at_least(name, "padding", pad, 0)
    if any(p > k // 2 for p, k in zip(pad, kernel)):
        raise ShapeError(
            f"{name}'s padding must be at most half its kernel_size, but got padding="
            f"{pad if nd > 1 else pad[0]} with kernel_size={kernel if nd > 1 else kernel[0]}",
            f"use padding <= kernel_size // 2 = {tuple(k // 2 for k in kernel) if nd > 1 else kernel[0] // 2}",
        )
    return kernel, stride, pad, dilation


def _pool_fits(name: str, a: dict[str, Any], nd: int, kind: str, shape: Shape, kernel: Shape) -> None:
    """What ATen checks of the input beyond the output size (3-d average pooling's kernel, a zero divisor)."""
    if (
        nd == 3
        and (kind == "avg" or (kind == "lp" and abs(_get(a, "norm_type", 2)) != math.inf))
        and any(n < k for n, k in zip(shape[1:], kernel))
    ):
        # avg_pool3d (LPPool3d too) wants the input at least as large as the kernel, padding or not
        raise ShapeError(
            f"{name}'s kernel_size={kernel} is larger than its input {_fmt(shape)} "
            f"(avg_pool3d does not count padding or ceil_mode here)",
            f"use a kernel_size of at most {_fmt(shape[1:])}, or {_CHECK_INPUT}",
        )
    if kind == "avg" and _get(a, "divisor_override") == 0:
        raise ShapeError(f"{name}'s divisor_override must not be zero", "remove `divisor_override:` or give it >= 1")
    _nonempty(name, shape)


def _adaptive(nd: int) -> Rule:
    def rule(name: str, a: dict[str, Any], shape: Shape) -> Shape:
        _channels_first(name, shape, nd)
        size = _get(a, "output_size")
        many = "one int" if nd == 1 else f"one int or a list of {nd} ints (None keeps that axis)"
        if _is_int(size):
            sizes = (int(size),) * nd
        elif (
            isinstance(size, (tuple, list))
            and len(size) == nd
            and all(_is_int(s) or (s is None and nd > 1) for s in size)
        ):
            sizes = tuple(shape[1 + i] if s is None else int(s) for i, s in enumerate(size))
        else:
            raise ShapeError(f"{name}'s output_size must be {many}, got {size!r}", f"give `output_size:` {many}")
        _at_least(name, "output_size", sizes, 0)
        _nonempty(name, shape)
        return (shape[0], *sizes)

    return rule


def _pad(nd: int, mode: str) -> Rule:
    def rule(name: str, a: dict[str, Any], shape: Shape) -> Shape:
        raw = _required(name, a, "padding")
        if _is_int(raw):
            pads = (int(raw),) * (2 * nd)
        elif isinstance(raw, (tuple, list)) and all(_is_int(p) for p in raw) and raw and len(raw) % 2 == 0:
            pads = tuple(int(p) for p in raw)
        else:
            raise ShapeError(
                f"{name}'s padding must be an int or a list (left, right, top, bottom, front, back) of "
                f"{2 * nd} ints, got {raw!r}",
                f"give `padding:` one int or {2 * nd} ints",
            )
        axes = len(pads) // 2
        batched = len(shape) + 1
        if mode == "constant":
            if axes > len(shape):
                other = _sibling(name, len(shape))
                raise ShapeError(
                    f"{name} pads the last {axes} axes, but each sample {_fmt(shape)} has only {len(shape)}, so it "
                    f"would pad the batch dimension",
                    f"use {other}, or {_CHECK_INPUT}" if other else _CHECK_INPUT,
                )
        else:
            fits = 1 <= axes <= 3 and batched in (axes + 1, axes + 2)
            if mode == "circular":  # CircularPadNd also checks the input's dims itself
                fits = fits and batched in (nd + 1, nd + 2)
            if not fits:
                raise ShapeError(
                    f"{name} pads the last {axes} axes of samples shaped {_LAYOUTS.get(axes, '(C, *spatial)')}, but "
                    f"its input is {_fmt(shape)}",
                    f"give `padding:` {2 * nd} values, or {_CHECK_INPUT}" if axes != nd else _CHECK_INPUT,
                )
        out = list(shape)
        for i in range(axes):
            axis = len(shape) - 1 - i
            out[axis] = _pad_dim(name, mode, shape[axis], pads[2 * i], pads[2 * i + 1], str(axis + 1))
        return tuple(out)

    return rule
