"""Shape rules of normalisation, dense, embedding, recurrent and attention layers, and the element-wise ones."""

from __future__ import annotations

import math
from typing import Any

from compiler.facts.shapes.base import (
    _CHECK_INPUT,
    _LAYOUTS,
    Rule,
    Shape,
    ShapeError,
    _batched_dim,
    _channels,
    _channels_first,
    _fmt,
    _get,
    _is_int,
    _required,
    _sibling,
)


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


def _layer_norm_2d(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    """torchvision's ConvNeXt LayerNorm2d: (C, H, W) permuted to (H, W, C), normalised over C, permuted back."""
    if len(shape) != 3:
        raise ShapeError(
            f"{name} expects each sample to be (C, H, W), 3 dims (the batch not counted), but its input {_fmt(shape)} "
            f"has {len(shape)} dim{'s' if len(shape) != 1 else ''}",
            f"use LayerNorm for the last axis of other samples, or {_CHECK_INPUT}",
        )
    raw = _required(name, a, "normalized_shape")
    norm = (raw,) if _is_int(raw) else tuple(raw)
    if norm != shape[:1]:
        raise ShapeError(
            f"{name} normalises the channels of each sample, but it was built with normalized_shape={list(norm)} "
            f"and its input {_fmt(shape)} has {shape[0]} channels",
            f"leave `normalized_shape` out so it is inferred (it becomes {shape[0]}), or set "
            f"`normalized_shape: {shape[0]}`",
        )
    return shape


def _frozen_batch_norm(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    """torchvision's FrozenBatchNorm2d: ``x * scale + bias`` with its (C,) buffers reshaped to (1, C, 1, 1). torch
    broadcasts other inputs (a (1, H, W) sample to C channels, the batch against the channels of a 3-dim input);
    specc takes (C, H, W) with C = ``num_features`` alone, as BatchNorm2d does."""
    _channels_first(name, shape, 2)
    _channels(name, shape, "num_features", _required(name, a, "num_features"))
    return shape


def _local_response_norm(name: str, a: dict[str, Any], shape: Shape) -> Shape:
    if len(shape) < 2:
        raise ShapeError(
            f"{name} expects each sample to be (C, *spatial) with at least one spatial axis, but its "
            f"input is {_fmt(shape)}",
            _CHECK_INPUT,
        )
    return shape


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
