"""Output shapes of torch.nn layers by arithmetic alone, so validation never runs torch.

``output_shape(type_name, arguments, in_shape)`` gives the shape of one sample (no batch
dimension) that a layer produces in ``nn.Sequential``, where it always receives batches
``(N, *in_shape)``. The rules follow torch's own shape checks and formulas (ATen's
``pooling_output_shape``, ``conv_output_size``, ``F.interpolate``, ``F.pad``, ...), and raise
``ShapeError`` wherever torch would raise on that input. Where torch would *accept* an input
only by reading the batch dimension as something else (a channel, a sequence, a padded axis)
the rules raise too, because in ``nn.Sequential`` that is always a bug.

This module imports nothing from torch: importing torch's meta-tensor machinery costs more
than the whole validation may.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

Shape = tuple[int, ...]
Rule = Callable[[str, dict[str, Any], Shape], Shape]

__all__ = ["ShapeError", "format_shape", "known_layers", "merged_shape", "output_shape", "plugin_shape"]

_CHECK_INPUT = "check the layers before it, or the `input:` shape"


class ShapeError(Exception):
    """A layer cannot take its input; ``message`` says why, ``fix`` what to change."""

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message = message
        self.fix = fix


def output_shape(type_name: str, arguments: dict[str, Any], in_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Output shape of ONE sample (no batch dim) for layer `type_name` (a torch.nn class name) built with
    `arguments` (every constructor argument by name, defaults already filled in, size lists given as tuples
    or ints exactly as torch accepts them) when fed a batch of samples of shape in_shape (no batch dim).
    Returns None when there is no rule for type_name (caller falls back). Raises ShapeError with a message a
    PyTorch user understands (say what the layer expects and what it got, shapes written like (128, 14, 14))
    and a fix, whenever torch would raise on that input."""
    rule = _RULES.get(type_name)
    if rule is None:
        return None
    try:
        return tuple(rule(type_name, arguments, tuple(in_shape)))
    except (TypeError, ValueError, ArithmeticError, LookupError):
        return None  # arguments of a kind the rule does not know (torch checks them): let the caller fall back


def plugin_shape(name: str, rule: Callable, arguments: dict[str, Any], in_shape: Shape) -> Shape:
    """Output shape of a plugin layer by its own rule (``register_layer(..., shape=rule)``).

    The rule's ``ShapeError`` or ``ValueError`` is the layer's refusal of its input; anything else it raises,
    or a result that is not a shape, is a bug in the rule, reported as one.
    """
    try:
        out = rule(tuple(in_shape), dict(arguments))
    except ShapeError:
        raise
    except ValueError as err:
        raise ShapeError(f"{name} cannot take an input of shape {format_shape(in_shape)}: {err}", _CHECK_INPUT) from err
    except Exception as err:
        raise ShapeError(
            f"{name}'s shape rule failed on input {format_shape(in_shape)}: {type(err).__name__}: {err}",
            f"fix the `shape=` function given to register_layer for {name}",
        ) from err
    if not isinstance(out, (tuple, list)) or not all(_is_int(v) and v >= 0 for v in out):
        raise ShapeError(
            f"{name}'s shape rule returned {out!r}, not a shape (a tuple of sizes, no batch dimension)",
            f"make the `shape=` function given to register_layer for {name} return e.g. (64, 8, 8)",
        )
    return tuple(out)


def known_layers() -> frozenset[str]:
    """The torch.nn class names ``output_shape`` has a rule for."""
    return frozenset(_RULES)


def format_shape(shape: tuple) -> str:
    """``(128, 14, 14)``; a one-axis shape keeps its comma, ``(10,)``, as in Python."""
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


_fmt = format_shape


# ---------------------------------------------------------------------------------------------
# argument helpers


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


# ---------------------------------------------------------------------------------------------
# convolutions


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


def _conv(nd: int, transposed: bool) -> Rule:
    def rule(name: str, a: dict[str, Any], shape: Shape) -> Shape:
        _channels_first(name, shape, nd)
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
        _channels(name, shape, "in_channels", in_ch)
        spatial = shape[1:]
        if transposed:
            return (out_ch, *_conv_transpose_sizes(name, a, spatial, kernel, stride, dilation, padding, mode))
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ShapeError(
                    f"{name}'s padding must be an int, a tuple, 'same' or 'valid', got {padding!r}",
                    "write `padding: same`, `padding: valid` or a number",
                )
            if padding == "same" and any(s != 1 for s in stride):
                raise ShapeError(
                    f"{name}: padding='same' is not supported for strided convolutions "
                    f"(stride={stride if nd > 1 else stride[0]})",
                    "use stride 1 with padding 'same', or give the padding as a number",
                )
            totals = [d * (k - 1) if padding == "same" else 0 for k, d in zip(kernel, dilation)]
            pads = [(t // 2, t - t // 2) for t in totals]
        else:
            pad = _ints(name, "padding", padding, nd, one_ok=mode == "zeros")
            _at_least(name, "padding", pad, 0)
            pads = [(p, p) for p in pad]
        sizes = []
        for i, (size, (left, right)) in enumerate(zip(spatial, pads)):
            if mode != "zeros":
                padded = _pad_dim(name, mode, size, left, right, str(i + 1))
            else:
                padded = size + left + right
            sizes.append(padded)
        reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        if any(p < r for p, r in zip(sizes, reach)):
            dilated = f" (dilated to {_fmt(tuple(reach))})" if any(d != 1 for d in dilation) else ""
            raise ShapeError(
                f"{name}'s kernel {_fmt(kernel)}{dilated} is larger than its padded input: the input "
                f"{_fmt(shape)} is {_fmt(tuple(sizes))} per channel after padding",
                f"use a smaller kernel_size or dilation, add padding, or {_CHECK_INPUT} (the input may have been "
                f"shrunk too much already)",
            )
        return (out_ch, *((p - r) // s + 1 for p, r, s in zip(sizes, reach, stride)))

    return rule


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


# ---------------------------------------------------------------------------------------------
# pooling


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
        raw_kernel = _required(name, a, "kernel_size")
        if kind == "lp":
            if _get(a, "norm_type") == 0:
                raise ShapeError(f"{name}'s norm_type must be non-zero", "give `norm_type:` e.g. 2")
            if nd == 1 and not _is_int(raw_kernel):
                raise ShapeError(
                    f"{name}'s kernel_size must be one int, got {raw_kernel!r}", "give `kernel_size:` one int"
                )
        kernel = _pool_ints(name, "kernel_size", raw_kernel, nd)
        raw_stride = _get(a, "stride")
        if raw_stride is None or (isinstance(raw_stride, (tuple, list)) and not raw_stride):
            stride = kernel  # the module's default, and ATen's for an empty stride
        else:
            stride = _pool_ints(name, "stride", raw_stride, nd)
        pad = (0,) * nd if kind == "lp" else _pool_ints(name, "padding", _get(a, "padding", 0), nd)
        dilation = _pool_ints(name, "dilation", _get(a, "dilation", 1), nd) if kind == "max" else (1,) * nd
        ceil = bool(_get(a, "ceil_mode", False))
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
            raise ShapeError(
                f"{name}'s divisor_override must not be zero", "remove `divisor_override:` or give it >= 1"
            )
        _nonempty(name, shape)
        sizes = tuple(_pool_len(*args, ceil) for args in zip(shape[1:], kernel, pad, stride, dilation))
        if any(o < 1 for o in sizes):
            raise ShapeError(
                f"{name} with kernel_size={kernel if nd > 1 else kernel[0]} cannot pool an input of {_fmt(shape)}: "
                f"the output would be {_fmt((shape[0], *sizes))}, output size is too small",
                f"use a smaller kernel_size (or padding / ceil_mode), or {_CHECK_INPUT} (it may already be too small)",
            )
        return (shape[0], *sizes)

    return rule


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


# ---------------------------------------------------------------------------------------------
# normalisation


def _batch_norm(nd: int) -> Rule:
    def rule(name: str, a: dict[str, Any], shape: Shape) -> Shape:
        if nd == 1:
            if len(shape) not in (1, 2):
                raise ShapeError(
                    f"{name} expects each sample to be (C,) or (C, L), but its input {_fmt(shape)} has "
                    f"{len(shape)} dims",
                    f"use {_sibling(name, len(shape) - 1)} for {_LAYOUTS[len(shape) - 1]} samples"
                    if 2 <= len(shape) - 1 <= 3
                    else _CHECK_INPUT,
                )
        else:
            _channels_first(name, shape, nd)
        if _get(a, "affine", True) or _get(a, "track_running_stats", True):
            _channels(name, shape, "num_features", _required(name, a, "num_features"))
        return shape

    return rule


def _instance_norm(nd: int) -> Rule:
    def rule(name: str, a: dict[str, Any], shape: Shape) -> Shape:
        _channels_first(name, shape, nd)
        if _get(a, "affine", False) or _get(a, "track_running_stats", False):
            _channels(name, shape, "num_features", _required(name, a, "num_features"))
        if math.prod(shape[1:]) == 1:
            raise ShapeError(
                f"{name} normalises each channel over its spatial positions, but its input {_fmt(shape)} has "
                f"only 1 per channel (torch: expected more than 1 spatial element when training)",
                f"use BatchNorm{nd}d or GroupNorm here, or {_CHECK_INPUT}",
            )
        return shape

    return rule


def _group_norm(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    groups = _required(name, a, "num_groups")
    if not shape:
        raise ShapeError(
            f"{name} expects each sample to be (C, *), with a channel axis, but its input is a scalar", _CHECK_INPUT
        )
    channels = _required(name, a, "num_channels")
    if groups < 1 or channels % groups:
        raise ShapeError(
            f"{name}'s num_channels={channels} is not divisible by num_groups={groups}",
            "pick num_groups that divides the number of channels",
        )
    if _get(a, "affine", True):
        _channels(name, shape, "num_channels", channels)
    elif shape[0] % groups:
        raise ShapeError(
            f"{name} splits channels into {groups} groups, but its input {_fmt(shape)} has "
            f"{shape[0]} channels, not a multiple of {groups}",
            "pick num_groups that divides the number of channels",
        )
    return shape


def _layer_norm(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    raw = _required(name, a, "normalized_shape")
    norm = (raw,) if _is_int(raw) else tuple(raw)
    if len(norm) > len(shape) or tuple(shape[len(shape) - len(norm) :]) != norm:
        trailing = (
            "the whole sample and the batch"
            if len(norm) > len(shape)
            else "the last axis"
            if len(norm) == 1
            else f"the last {len(norm)} axes"
        )
        tail = shape[len(shape) - len(norm) :] if len(norm) <= len(shape) else shape
        raise ShapeError(
            f"{name} was built with normalized_shape={list(norm)}, which must equal {trailing} of each sample, but "
            f"its input is {_fmt(shape)}",
            f"leave `normalized_shape` out so it is inferred (it becomes {shape[-1]})"
            + (f", or set `normalized_shape: {list(tail)}`" if tail else "")
            if shape
            else _CHECK_INPUT,
        )
    return shape


def _local_response_norm(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    if len(shape) < 2:
        raise ShapeError(
            f"{name} expects each sample to be (C, *spatial) with at least one spatial axis, but its "
            f"input is {_fmt(shape)}",
            _CHECK_INPUT,
        )
    return shape


# ---------------------------------------------------------------------------------------------
# dense, embeddings, recurrent


def _linear(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    n = _required(name, a, "in_features")
    if not shape:
        raise ShapeError(
            f"{name} expects samples with at least one axis (*, in_features={n}), but each sample is a scalar",
            _CHECK_INPUT,
        )
    if shape[-1] != n:
        flat = math.prod(shape)
        if len(shape) > 1:
            fix = f"insert `Flatten` before it: it turns {_fmt(shape)} into ({flat},)"
            fix += (
                f", which matches in_features={n}"
                if flat == n
                else f"; then leave `in_features` out so it is inferred ({flat}), or set `in_features: {flat}`"
            )
        else:
            fix = f"leave `in_features` out so it is inferred from the input, or set `in_features: {shape[-1]}`"
        raise ShapeError(
            f"{name} expects {n} features on the last axis of its input (in_features={n}), but its input "
            f"{_fmt(shape)} has {shape[-1]} there",
            fix,
        )
    return (*shape[:-1], _required(name, a, "out_features"))


def _bilinear(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    raise ShapeError(
        f"{name} takes two inputs (x1, x2), but a layer in nn.Sequential receives only one",
        "use Linear, or build the two-input model in Python",
    )


def _embedding(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    return (*shape, _required(name, a, "embedding_dim"))


def _embedding_bag(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    if len(shape) != 1 or shape[0] < 1:
        raise ShapeError(
            f"{name} expects each sample to be one bag of indices, (L,) with L >= 1, but its input is {_fmt(shape)}",
            "use Embedding for other index shapes" if len(shape) != 1 else _CHECK_INPUT,
        )
    return (_required(name, a, "embedding_dim"),)


def _batch_first(name: str, a: dict[str, Any], layout: str) -> None:
    if not _get(a, "batch_first", False):
        raise ShapeError(
            f"{name} has batch_first=False, so it would read its input as {layout.replace('N, L', 'L, N')}, but "
            f"nn.Sequential feeds it batches {layout} and the batch and sequence axes would be swapped",
            "set `batch_first: true`",
        )


def _rnn(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    _batch_first(name, a, "(N, L, H)")
    size = _required(name, a, "input_size")
    hidden = _required(name, a, "hidden_size")
    if len(shape) != 2:
        raise ShapeError(
            f"{name} expects each sample to be a sequence (L, input_size={size}), but its input is {_fmt(shape)}",
            f"insert `Unflatten: {{dim: 1, unflattened_size: [-1, {size}]}}` to make a sequence, or {_CHECK_INPUT}"
            if len(shape) == 1
            else f"insert `Flatten: {{start_dim: 2}}` before it, or {_CHECK_INPUT}",
        )
    if shape[0] < 1:
        raise ShapeError(f"{name} needs a sequence length of at least 1, but its input is {_fmt(shape)}", _CHECK_INPUT)
    _features(name, shape, "input_size", size)
    proj = _get(a, "proj_size", 0) or 0
    if proj and name != "LSTM":
        raise ShapeError(f"{name} does not take proj_size (only LSTM does)", "remove `proj_size:`")
    if proj < 0 or (proj and proj >= hidden):
        raise ShapeError(
            f"{name}'s proj_size={proj} must be between 0 and hidden_size={hidden} (exclusive)",
            "use a smaller proj_size",
        )
    directions = 2 if _get(a, "bidirectional", False) else 1
    return (shape[0], directions * (proj or hidden))


def _features(name: str, shape: Shape, arg: str, expected: int) -> None:
    if shape[-1] != expected:
        raise ShapeError(
            f"{name} was built for {expected} features per step ({arg}={expected}), but its input {_fmt(shape)} "
            f"has {shape[-1]} on the last axis",
            f"leave `{arg}` out so it is inferred from the input, or set `{arg}: {shape[-1]}`",
        )


def _transformer_encoder_layer(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    _batch_first(name, a, "(N, L, E)")
    d_model = _required(name, a, "d_model")
    heads = _required(name, a, "nhead")
    if heads < 1 or d_model % heads:
        raise ShapeError(
            f"{name}'s d_model={d_model} is not divisible by nhead={heads}", "pick nhead that divides d_model"
        )
    if len(shape) != 2:
        raise ShapeError(
            f"{name} expects each sample to be a sequence (L, d_model={d_model}), but its input is {_fmt(shape)}",
            _CHECK_INPUT,
        )
    _features(name, shape, "d_model", d_model)
    return shape


# ---------------------------------------------------------------------------------------------
# element-wise layers


def _same(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    return shape


def _dropout1d(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    if len(shape) not in (1, 2):
        raise ShapeError(
            f"{name} expects each sample to be (C, L), but its input is {_fmt(shape)}",
            "use Dropout2d for (C, H, W) samples or Dropout for features" if shape else "use Dropout",
        )
    return shape


def _prelu(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    n = _get(a, "num_parameters", 1)
    if n != 1:
        _channels(
            name,
            shape,
            "num_parameters",
            n,
            f"set `num_parameters: {shape[0]}` (one per channel) or 1 (shared)" if shape else "set `num_parameters: 1`",
        )
    return shape


def _softmax(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    dim = _get(a, "dim")
    if dim is not None:
        _batched_dim(name, "dim", dim, shape)
    return shape


def _softmax2d(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    if len(shape) != 3:
        raise ShapeError(
            f"{name} expects each sample to be (C, H, W), but its input is {_fmt(shape)}",
            f"use Softmax with `dim: 1` for the channel axis, or {_CHECK_INPUT}",
        )
    return shape


def _glu(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    dim = _batched_dim(name, "dim", _get(a, "dim", -1), shape)
    if dim == 0:
        raise ShapeError(
            f"{name} would split the batch dimension in half (dim=0 is the batch)",
            "use a dim >= 1 (dim -1, the default, is the last axis of a sample)",
        )
    size = shape[dim - 1]
    if size % 2:
        raise ShapeError(
            f"{name} halves axis {dim} (dim={_get(a, 'dim', -1)}), which must be even, but its input {_fmt(shape)} "
            f"has {size} there",
            "give the layer before it an even output size, or pick another dim",
        )
    return (*shape[: dim - 1], size // 2, *shape[dim:])


# ---------------------------------------------------------------------------------------------
# reshaping and resampling


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
    spatial = shape[1:]
    if size is not None:
        sizes = _ints(name, "size", size, nd, one_ok=False)
    else:
        if isinstance(scale, (tuple, list)):
            if len(scale) != nd:
                raise ShapeError(
                    f"{name}'s scale_factor {tuple(scale)} needs one value per spatial axis of its input "
                    f"{_fmt(shape)} ({nd})",
                    f"give `scale_factor:` one number or {nd}",
                )
            scales = tuple(float(s) for s in scale)
        else:
            scales = (float(scale),) * nd
        sizes = tuple(int(n * s) for n, s in zip(spatial, scales))
    _nonempty(name, shape)
    if any(s < (0 if mode == "area" else 1) for s in sizes):
        raise ShapeError(
            f"{name} would resize {_fmt(shape)} to {_fmt((shape[0], *sizes))}: output sizes must be greater than 0",
            "use a larger size or scale_factor",
        )
    return (shape[0], *sizes)


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


# ---------------------------------------------------------------------------------------------

_ACTIVATIONS = (
    "ReLU ReLU6 LeakyReLU RReLU ELU SELU CELU GELU SiLU Mish Tanh Sigmoid LogSigmoid Hardtanh Hardswish "
    "Hardsigmoid Hardshrink Softshrink Tanhshrink Softplus Softsign Threshold"
)
_UNCHANGED = "Identity Dropout Dropout2d Dropout3d AlphaDropout FeatureAlphaDropout"

_RULES: dict[str, Rule] = {
    **{n: _same for n in (_ACTIVATIONS + " " + _UNCHANGED).split()},
    "Dropout1d": _dropout1d,
    "PReLU": _prelu,
    "Softmax": _softmax,
    "Softmin": _softmax,
    "LogSoftmax": _softmax,
    "Softmax2d": _softmax2d,
    "GLU": _glu,
    "GroupNorm": _group_norm,
    "LayerNorm": _layer_norm,
    "RMSNorm": _layer_norm,
    "LocalResponseNorm": _local_response_norm,
    "Linear": _linear,
    "Bilinear": _bilinear,
    "Embedding": _embedding,
    "EmbeddingBag": _embedding_bag,
    "RNN": _rnn,
    "LSTM": _rnn,
    "GRU": _rnn,
    "TransformerEncoderLayer": _transformer_encoder_layer,
    "Flatten": _flatten,
    "Unflatten": _unflatten,
    "Upsample": _upsample,
    "UpsamplingNearest2d": _upsample,
    "UpsamplingBilinear2d": _upsample,
    "PixelShuffle": _pixel_shuffle,
    "PixelUnshuffle": _pixel_shuffle,
    "ChannelShuffle": _channel_shuffle,
    "Unfold": _unfold,
    # specc's own layers (compiler/runtime/layers.py) and torchvision.ops
    "TupleItem": _same,  # lowering hands it the tuple item it picks
    "Select": _select,
    "Slice": _slice,
    "Permute": _permute,
    "Transpose": _transpose,
    "Mean": _reduce,
    "Sum": _reduce,
    "Amax": _reduce,
    "Reshape": _reshape,
    "StochasticDepth": _same,
}
for _n in (1, 2, 3):
    _RULES[f"Conv{_n}d"] = _conv(_n, transposed=False)
    _RULES[f"ConvTranspose{_n}d"] = _conv(_n, transposed=True)
    _RULES[f"MaxPool{_n}d"] = _pool(_n, "max")
    _RULES[f"AvgPool{_n}d"] = _pool(_n, "avg")
    _RULES[f"LPPool{_n}d"] = _pool(_n, "lp")
    _RULES[f"AdaptiveMaxPool{_n}d"] = _adaptive(_n)
    _RULES[f"AdaptiveAvgPool{_n}d"] = _adaptive(_n)
    _RULES[f"BatchNorm{_n}d"] = _batch_norm(_n)
    _RULES[f"InstanceNorm{_n}d"] = _instance_norm(_n)
    _RULES[f"ZeroPad{_n}d"] = _pad(_n, "constant")
    _RULES[f"ConstantPad{_n}d"] = _pad(_n, "constant")
    _RULES[f"ReflectionPad{_n}d"] = _pad(_n, "reflect")
    _RULES[f"ReplicationPad{_n}d"] = _pad(_n, "replicate")
    _RULES[f"CircularPad{_n}d"] = _pad(_n, "circular")
del _n
