"""Parameters, buffers and constructor checks of torch.nn layers by arithmetic alone (no torch import).

``construct(type_name, arguments)`` answers what constructing the layer on the meta device would:
the trainable parameter count, the bytes of parameters and buffers, the module's own parameter
slots (``module._parameters``, what ``init:`` rules match) and those set to None -- or raises
``Refused`` with the message torch's constructor raises for those arguments (a group count that
does not divide the channels, a dropout probability outside [0, 1], a negative size, a tensor too
large to address, ...). The rules follow torch's ``__init__`` methods in their order of checks and
tensor creation, so the first refusal is the one torch reports. ``tests/test_param_rules.py``
compares every rule with torch constructing the layer, over many valid and invalid arguments.

Next to the shape rules (``shapes._RULES``): a layer with a shape rule has a parameter rule here
(``tests/test_registry.py`` checks both tables against the registry). A layer without one (a
plugin registered from Python) is constructed on the meta device, which imports torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Made", "Refused", "check_loss", "construct", "known_layers"]

_INT64_MAX = 2**63 - 1


class Refused(Exception):
    """Torch's constructor would raise: ``message`` is its message (``kind`` its exception type's name)."""

    def __init__(self, message: str, kind: str = "ValueError"):
        super().__init__(message)
        self.message, self.kind = message, kind


@dataclass
class Made:
    """What a constructed module holds: counted as torch creates the tensors, in torch's order."""

    params: int = 0  # trainable parameters
    nbytes: int = 0  # parameters and buffers
    slots: list[str] = field(default_factory=list)  # module._parameters, in order
    none: list[str] = field(default_factory=list)  # slots registered as None
    shapes: dict[str, tuple] = field(default_factory=dict)  # the others' shapes

    def tensor(self, shape: tuple, itemsize: int = 4) -> int:
        """torch.empty(shape): refused as ATen refuses it -- a negative dimension, a byte size or a stride past
        int64 (c10's ``computeStorageNbytesContiguous`` and ``empty_tensor_restride``)."""
        dims = [int(d) for d in shape]
        for d in dims:
            if d < 0:
                raise Refused(f"Trying to create tensor with negative dimension {d}: {dims}", "RuntimeError")
        numel, overflowed = 1, False
        for d in dims:  # an unsigned 64-bit product, overflow remembered even if a later 0 clears it
            numel *= d
            overflowed |= numel >= 2**64
            numel %= 2**64
        nbytes = numel * itemsize
        if overflowed or nbytes > _INT64_MAX:
            raise Refused(f"Storage size calculation overflowed with sizes={dims}", "RuntimeError")
        stride = 1
        for d in reversed(dims[1:]):
            stride *= max(d, 1)
            if stride > _INT64_MAX:
                raise Refused("Stride calculation overflowed", "RuntimeError")
        return numel

    def param(self, slot: str | None, shape: tuple, trainable: bool = True) -> None:
        """A parameter; ``slot`` None for one of a submodule (counted, not the module's own)."""
        numel = self.tensor(shape)
        self.params += numel if trainable else 0
        self.nbytes += numel * 4
        if slot is not None:
            self.slots.append(slot)
            self.shapes[slot] = tuple(int(d) for d in shape)

    def no_param(self, slot: str) -> None:
        self.slots.append(slot)
        self.none.append(slot)

    def buffer(self, shape: tuple, itemsize: int = 4) -> None:
        self.nbytes += self.tensor(shape, itemsize) * itemsize


Rule = Callable[[str, dict[str, Any], Made], None]


def construct(type_name: str, arguments: dict[str, Any]) -> Made | None:
    """What constructing ``type_name(**arguments)`` makes, or None when there is no rule (construct it live).
    Raises ``Refused`` where torch's constructor raises."""
    rule = _RULES.get(type_name)
    if rule is None:
        return None
    made = Made()
    try:
        rule(type_name, arguments, made)
    except ZeroDivisionError as err:  # torch computes the same Python expression (e.g. channels % groups)
        raise Refused(str(err), "ZeroDivisionError") from None
    return made


def known_layers() -> frozenset[str]:
    return frozenset(_RULES)


def _tuple(value: Any, n: int) -> tuple:
    """torch's ``_ntuple``: an iterable as it is, a scalar repeated."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


# --------------------------------------------------------------------------------------------- rules


def _none(name: str, a: dict[str, Any], made: Made) -> None:
    """No parameters, no buffers, no checks at construction."""


def _conv(nd: int, transposed: bool) -> Rule:
    def rule(name: str, a: dict[str, Any], made: Made) -> None:
        if transposed and a["padding_mode"] != "zeros":
            raise Refused(f'Only "zeros" padding mode is supported for {name}')
        cin, cout, groups, padding = a["in_channels"], a["out_channels"], a["groups"], a["padding"]
        kernel, stride = _tuple(a["kernel_size"], nd), _tuple(a["stride"], nd)
        if groups <= 0:
            raise Refused("groups must be a positive integer")
        if cin % groups != 0:
            raise Refused("in_channels must be divisible by groups")
        if cout % groups != 0:
            raise Refused("out_channels must be divisible by groups")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise Refused(f"Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and any(s != 1 for s in stride):
                raise Refused("padding='same' is not supported for strided convolutions")
        modes = ("zeros", "reflect", "replicate", "circular")
        if a["padding_mode"] not in modes:
            raise Refused(f"padding_mode must be one of {set(modes)}, but got padding_mode='{a['padding_mode']}'")
        shape = (cin, cout // groups, *kernel) if transposed else (cout, cin // groups, *kernel)
        made.param("weight", shape)
        if a["bias"]:
            made.param("bias", (cout,))
        else:
            made.no_param("bias")

    return rule


def _lp_pool(name: str, a: dict[str, Any], made: Made) -> None:
    if a["norm_type"] == 0:
        raise Refused(f"norm_type must be a non-zero value, but got {a['norm_type']}")


def _norm_base(name: str, a: dict[str, Any], made: Made) -> None:
    """BatchNorm and InstanceNorm (torch's _NormBase)."""
    n = a["num_features"]
    if a["affine"]:
        made.param("weight", (n,))
        if a.get("bias", True):
            made.param("bias", (n,))
        else:
            made.no_param("bias")
    else:
        made.no_param("weight")
        made.no_param("bias")
    if a["track_running_stats"]:
        made.buffer((n,))
        made.buffer((n,))
        made.buffer((), itemsize=8)  # num_batches_tracked, an int64 scalar


def _frozen_batch_norm(name: str, a: dict[str, Any], made: Made) -> None:
    """torchvision's FrozenBatchNorm2d: weight, bias, running_mean, running_var, all buffers of (C,)."""
    for _ in range(4):
        made.buffer((a["num_features"],))


def _group_norm(name: str, a: dict[str, Any], made: Made) -> None:
    groups, channels = a["num_groups"], a["num_channels"]
    if channels % groups != 0:
        raise Refused(f"num_channels ({channels}) must be divisible by num_groups ({groups})")
    if a["affine"]:
        made.param("weight", (channels,))
        if a.get("bias", True):
            made.param("bias", (channels,))
        else:
            made.no_param("bias")
    else:
        made.no_param("weight")
        made.no_param("bias")


def _layer_norm(name: str, a: dict[str, Any], made: Made) -> None:
    shape = a["normalized_shape"]
    shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
    if a["elementwise_affine"]:
        made.param("weight", shape)
        if "bias" in a:  # LayerNorm and LayerNorm2d (RMSNorm has none)
            if a["bias"]:
                made.param("bias", shape)
            else:
                made.no_param("bias")
    else:
        made.no_param("weight")
        if "bias" in a:
            made.no_param("bias")


def _linear(name: str, a: dict[str, Any], made: Made) -> None:
    made.param("weight", (a["out_features"], a["in_features"]))
    if a["bias"]:
        made.param("bias", (a["out_features"],))
    else:
        made.no_param("bias")


def _bilinear(name: str, a: dict[str, Any], made: Made) -> None:
    made.param("weight", (a["out_features"], a["in1_features"], a["in2_features"]))
    if a["bias"]:
        made.param("bias", (a["out_features"],))
    else:
        made.no_param("bias")
    if a["in1_features"] <= 0:  # reset_parameters
        raise Refused(f"in1_features must be > 0, but got (in1_features={a['in1_features']})")


def _embedding(name: str, a: dict[str, Any], made: Made) -> None:
    n, padding_idx = a["num_embeddings"], a["padding_idx"]
    if padding_idx is not None and (padding_idx >= n if padding_idx > 0 else padding_idx < 0 and padding_idx < -n):
        raise Refused(f"{'Padding_idx' if name == 'Embedding' else 'padding_idx'} must be within num_embeddings")
    if a["_weight"] is not None:
        raise Refused("Shape of weight does not match num_embeddings and embedding_dim")  # never: bind refuses it
    made.param("weight", (n, a["embedding_dim"]), trainable=not a.get("_freeze", False))
    if padding_idx is not None and n == 0:  # reset_parameters zeroes weight[padding_idx]
        raise Refused("index 0 is out of bounds for dimension 0 with size 0", "IndexError")


def _rnn(name: str, a: dict[str, Any], made: Made) -> None:
    if name == "RNN" and a["nonlinearity"] not in ("tanh", "relu"):
        raise Refused(f"Unknown nonlinearity '{a['nonlinearity']}'. Select from 'tanh' or 'relu'.")
    dropout, layers, hidden, proj = a["dropout"], a["num_layers"], a["hidden_size"], a.get("proj_size", 0)
    if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:  # type: ignore[operator]
        raise Refused(
            "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
        )
    for arg in ("bias", "batch_first"):
        if not isinstance(a[arg], bool):
            raise Refused(f"{arg} should be of type bool, got: {type(a[arg]).__name__}", "TypeError")
    for arg in ("input_size", "hidden_size"):
        if not isinstance(a[arg], int):
            raise Refused(f"{arg} should be of type int, got: {type(a[arg]).__name__}", "TypeError")
        if a[arg] <= 0:
            raise Refused(f"{arg} must be greater than zero")
    if layers <= 0:
        raise Refused("num_layers must be greater than zero")
    if proj < 0:
        raise Refused("proj_size should be a positive integer or zero to disable projections")
    if proj >= hidden:
        raise Refused("proj_size has to be smaller than hidden_size")
    gate = {"LSTM": 4, "GRU": 3}.get(name, 1) * hidden
    directions = 2 if a["bidirectional"] else 1
    real_hidden = proj if proj > 0 else hidden
    for layer in range(layers):
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            layer_input = a["input_size"] if layer == 0 else real_hidden * directions
            shapes = {"weight_ih": (gate, layer_input), "weight_hh": (gate, real_hidden)}
            for shape in ((gate,), (gate,)):  # torch creates both biases, registering them only with bias=True
                made.tensor(shape)
            if a["bias"]:
                shapes |= {"bias_ih": (gate,), "bias_hh": (gate,)}
            if proj > 0:
                shapes["weight_hr"] = (proj, hidden)
            for slot, shape in shapes.items():
                made.param(slot + suffix, shape)


def _dropout_check(p: Any) -> None:
    if p < 0 or p > 1:
        raise Refused(f"dropout probability has to be between 0 and 1, but got {p}")


def _dropout(name: str, a: dict[str, Any], made: Made) -> None:
    _dropout_check(a["p"])


def _stochastic_depth(name: str, a: dict[str, Any], made: Made) -> None:
    """torchvision checks these when the layer runs, not when it is made: a spec that validates must run."""
    if a["p"] < 0.0 or a["p"] > 1.0:
        raise Refused(f"drop probability has to be between 0 and 1, but got {a['p']}")
    if a["mode"] not in ("batch", "row"):
        raise Refused(f"mode has to be either 'batch' or 'row', but got {a['mode']}")


def _transformer_encoder_layer(name: str, a: dict[str, Any], made: Made) -> None:
    d, heads, ff, bias = a["d_model"], a["nhead"], a["dim_feedforward"], a["bias"]
    # self_attn = MultiheadAttention(d, heads, bias=bias)
    if d <= 0 or heads <= 0:
        raise Refused(
            f"embed_dim and num_heads must be greater than 0, got embed_dim={d} and num_heads={heads} instead"
        )
    if (d // heads) * heads != d:
        raise Refused("embed_dim must be divisible by num_heads", "AssertionError")
    made.param(None, (3 * d, d))
    if bias:
        made.param(None, (3 * d,))
    made.param(None, (d, d))  # out_proj
    if bias:
        made.param(None, (d,))
    made.param(None, (ff, d))  # linear1
    if bias:
        made.param(None, (ff,))
    _dropout_check(a["dropout"])
    made.param(None, (d, ff))  # linear2
    if bias:
        made.param(None, (d,))
    for _ in range(2):  # norm1, norm2
        made.param(None, (d,))
        if bias:
            made.param(None, (d,))
    activation = a["activation"]
    if isinstance(activation, str) and activation not in ("relu", "gelu"):
        raise Refused(f"activation should be relu/gelu, not {activation}", "RuntimeError")


def _multihead_attention(name: str, a: dict[str, Any], made: Made) -> None:
    """torch's MultiheadAttention.__init__: one packed in_proj_weight, or q/k/v weights when kdim or vdim differ."""
    d, heads = a["embed_dim"], a["num_heads"]
    if d <= 0 or heads <= 0:
        raise Refused(
            f"embed_dim and num_heads must be greater than 0, got embed_dim={d} and num_heads={heads} instead"
        )
    kdim = a["kdim"] if a["kdim"] is not None else d
    vdim = a["vdim"] if a["vdim"] is not None else d
    if (d // heads) * heads != d:
        raise Refused("embed_dim must be divisible by num_heads", "AssertionError")
    if kdim == d and vdim == d:
        made.param("in_proj_weight", (3 * d, d))
        for slot in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            made.no_param(slot)
    else:
        for slot, size in (("q_proj_weight", d), ("k_proj_weight", kdim), ("v_proj_weight", vdim)):
            made.param(slot, (d, size))
        made.no_param("in_proj_weight")
    if a["bias"]:
        made.param("in_proj_bias", (3 * d,))
    else:
        made.no_param("in_proj_bias")
    made.param(None, (d, d))  # out_proj
    if a["bias"]:
        made.param(None, (d,))
    if a["add_bias_kv"]:
        made.param("bias_k", (1, 1, d))
        made.param("bias_v", (1, 1, d))


def _prelu(name: str, a: dict[str, Any], made: Made) -> None:
    made.param("weight", (a["num_parameters"],))


def _hardtanh(name: str, a: dict[str, Any], made: Made) -> None:
    low = a["min_value"] if a["min_value"] is not None else a["min_val"]
    high = a["max_value"] if a["max_value"] is not None else a["max_val"]
    if high <= low:
        raise Refused(f"max_val ({high}) must be greater than min_val ({low})", "AssertionError")


_RULES: dict[str, Rule] = {
    "Bilinear": _bilinear,
    "Linear": _linear,
    "Embedding": _embedding,
    "EmbeddingBag": _embedding,
    "GroupNorm": _group_norm,
    "LayerNorm": _layer_norm,
    "LayerNorm2d": _layer_norm,
    "FrozenBatchNorm2d": _frozen_batch_norm,
    "RMSNorm": _layer_norm,
    "RNN": _rnn,
    "LSTM": _rnn,
    "GRU": _rnn,
    "TransformerEncoderLayer": _transformer_encoder_layer,
    "MultiheadAttention": _multihead_attention,
    "PReLU": _prelu,
    "Hardtanh": _hardtanh,
    **{n: _dropout for n in "Dropout Dropout1d Dropout2d Dropout3d AlphaDropout FeatureAlphaDropout".split()},
    "StochasticDepth": _stochastic_depth,
}
for _n in (1, 2, 3):
    _RULES[f"Conv{_n}d"] = _conv(_n, transposed=False)
    _RULES[f"ConvTranspose{_n}d"] = _conv(_n, transposed=True)
    _RULES[f"LPPool{_n}d"] = _lp_pool
    _RULES[f"BatchNorm{_n}d"] = _norm_base
    _RULES[f"InstanceNorm{_n}d"] = _norm_base
del _n
# every other registered layer: no parameters, no buffers, nothing torch's constructor checks
_NO_PARAMETERS = (
    "MaxPool1d MaxPool2d MaxPool3d AvgPool1d AvgPool2d AvgPool3d AdaptiveMaxPool1d AdaptiveMaxPool2d "
    "AdaptiveMaxPool3d AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d LocalResponseNorm "
    "Flatten Unflatten Identity Upsample UpsamplingNearest2d UpsamplingBilinear2d PixelShuffle PixelUnshuffle "
    "ChannelShuffle Unfold ZeroPad1d ZeroPad2d ZeroPad3d ConstantPad1d ConstantPad2d ConstantPad3d ReflectionPad1d "
    "ReflectionPad2d ReflectionPad3d ReplicationPad1d ReplicationPad2d ReplicationPad3d CircularPad1d CircularPad2d "
    "CircularPad3d ReLU ReLU6 LeakyReLU RReLU ELU SELU CELU GELU SiLU Mish Tanh Sigmoid LogSigmoid Hardswish "
    "Hardsigmoid Hardshrink Softshrink Tanhshrink Softplus Softsign Threshold GLU Softmax Softmin LogSoftmax Softmax2d "
    "Select Slice Permute Transpose Mean Sum Amax Reshape TupleItem"
)
_RULES.update(dict.fromkeys(_NO_PARAMETERS.split(), _none))


def _multi_margin(kwargs: dict[str, Any]) -> None:
    if kwargs.get("p", 1) not in (1, 2):
        raise Refused("only p == 1 and p == 2 supported")


def _huber(kwargs: dict[str, Any]) -> None:
    if "delta" in kwargs and not isinstance(kwargs["delta"], (float, int)):
        raise Refused(f"delta must be a float or int, got: {type(kwargs['delta'])}", "TypeError")


# the losses whose constructors check more than the reduction (checked before); the others check nothing else
_LOSS_RULES: dict[str, Callable[[dict[str, Any]], None]] = {"MultiMarginLoss": _multi_margin, "HuberLoss": _huber}


def check_loss(name: str, kwargs: dict[str, Any]) -> None:
    """What a loss's constructor refuses: raises ``Refused``."""
    rule = _LOSS_RULES.get(name)
    if rule is not None:
        rule(kwargs)


# --------------------------------------------------------------------------- init functions (torch.nn.init)

_FLOAT32_MAX = 3.4028234663852886e38
_INIT_DIMS = {  # the dimensions torch.nn.init accepts: (fewest, most, in words)
    "eye_": (2, 2, "2 dimensions"),
    "sparse_": (2, 2, "2 dimensions"),
    "dirac_": (3, 5, "3 to 5 dimensions"),
    **dict.fromkeys(
        ("orthogonal_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"),
        (2, 99, "2 or more dimensions"),  # the xavier and kaiming ones compute fan in and fan out
    ),
}


def check_init(name: str, a: dict[str, Any], shape: tuple[int, ...], param: str) -> list[tuple[str | None, str, str]]:
    """What ``torch.nn.init.<name>`` refuses on a float32 parameter of ``shape``, as (argument or None for the
    parameter itself, problem, fix); torch raises these only when the model is built."""
    problems: list[tuple[str | None, str, str]] = []
    for key, value in a.items():
        numbers = value if isinstance(value, (list, tuple)) else [value]
        # torch overflows on some (constant_, uniform_, kaiming's a) and fills inf or nan with others: all refused
        if any(isinstance(v, float) and not (math.isfinite(v) and abs(v) <= _FLOAT32_MAX) for v in numbers):
            problems.append((key, f"{name} {key}={value!r} does not fit a float32 parameter", "use a finite value"))
    dims = len(shape)
    std, gain, lo, hi = (a.get(k) for k in ("std", "gain", "a", "b"))
    if name in ("normal_", "trunc_normal_", "sparse_") and isinstance(std, (int, float)) and std < 0:
        problems.append(("std", f"{name} std must not be negative, got {std}", "e.g. std: 0.02"))
    if name == "trunc_normal_" and std == 0:
        problems.append(("std", "trunc_normal_ divides by std: it must be more than 0", "e.g. std: 0.02"))
    if name.startswith("xavier_") and isinstance(gain, (int, float)) and gain < 0:
        problems.append(("gain", f"{name} gain must not be negative, got {gain}", "e.g. gain: 1.0"))
    numeric = isinstance(lo, (int, float)) and isinstance(hi, (int, float))
    if name in ("uniform_", "trunc_normal_") and numeric and lo > hi:
        problems.append(("a", f"{name} needs a <= b, got a={lo}, b={hi}", f"swap them: a: {hi}, b: {lo}"))
    lowest, highest, words = _INIT_DIMS.get(name, (0, 99, ""))
    if not lowest <= dims <= highest:
        problems.append(
            (
                None,
                f"{name} needs a parameter of {words}, but {param} has shape {shape}",
                "use it on weights (biases are 1-D: zeros_ or constant_ suit them)",
            )
        )
    groups = a.get("groups", 1)
    if name == "dirac_" and 3 <= dims <= 5 and isinstance(groups, int) and groups > 0 and shape[0] % groups:
        problems.append(
            ("groups", f"dirac_ groups={groups} does not divide the {shape[0]} output channels", "e.g. groups: 1")
        )
    return problems
