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

The rules live by concern: ``base`` (``ShapeError``, ``format_shape``, argument helpers), ``conv``
(convolutions, pooling, padding), ``dense`` (normalisation, dense, recurrent, attention, element-wise),
``reshape`` (reshaping, resampling, specc's functional layers, merge blocks); the table ``_RULES`` below names
each layer's rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compiler.facts.shapes.base import _CHECK_INPUT, Rule, Shape, ShapeError, _is_int, format_shape
from compiler.facts.shapes.conv import _adaptive, _conv, _pad, _pool
from compiler.facts.shapes.dense import (
    _batch_norm,
    _bilinear,
    _dropout1d,
    _embedding,
    _embedding_bag,
    _frozen_batch_norm,
    _glu,
    _group_norm,
    _instance_norm,
    _layer_norm,
    _layer_norm_2d,
    _linear,
    _local_response_norm,
    _prelu,
    _rnn,
    _same,
    _softmax,
    _softmax2d,
    _transformer_encoder_layer,
)
from compiler.facts.shapes.reshape import (
    _channel_shuffle,
    _flatten,
    _permute,
    _pixel_shuffle,
    _reduce,
    _reshape,
    _select,
    _slice,
    _transpose,
    _unflatten,
    _unfold,
    _upsample,
    merged_shape,
)

__all__ = ["ShapeError", "format_shape", "known_layers", "merged_shape", "output_shape", "plugin_shape"]


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
    """The torch.nn class names ``output_shape`` has a rule for, and those of several inputs (``dataflow``)."""
    from compiler.facts.shapes.dataflow import MULTI_INPUT_RULES

    return frozenset(_RULES) | frozenset(MULTI_INPUT_RULES)


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
    "LayerNorm2d": _layer_norm_2d,
    "FrozenBatchNorm2d": _frozen_batch_norm,
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
