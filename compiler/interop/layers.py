"""Registered layers back into layer calls: only the arguments that differ from their defaults, each call
rebuilt and compared with the module."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compiler.interop.nodes import DecompileError, Layer

# --------------------------------------------------------------------------- layers


def layer_classes() -> dict[type, Any]:
    from compiler.facts.registry import REGISTRY

    table = {}
    for entry in REGISTRY.entries("layer"):
        try:
            table.setdefault(entry.resolve(), entry)
        except (ImportError, AttributeError):
            continue
    return table


def _simplify(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        items = [_simplify(v) for v in value]
        return items
    return value


def _uniform(value: Any) -> Any:
    """``(3, 3)`` -> ``3`` (torch stores ints given for sizes as tuples)."""
    if (
        isinstance(value, list)
        and value
        and all(v == value[0] and type(v) is type(value[0]) for v in value)
        and isinstance(value[0], (int, float))
        and not isinstance(value[0], bool)
    ):
        return value[0]
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return (
        type(a) is type(b)
        and a == b
        or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b and not isinstance(a, bool))
    )


def _transformer_args(module: nn.Module) -> dict[str, Any]:
    act = module.activation
    name = {F.relu: "relu", F.gelu: "gelu"}.get(act) if not isinstance(act, nn.Module) else None
    if name is None:
        name = {nn.ReLU: "relu", nn.GELU: "gelu"}.get(type(act))
    return {
        "d_model": module.self_attn.embed_dim,
        "nhead": module.self_attn.num_heads,
        "dim_feedforward": module.linear1.out_features,
        "dropout": module.dropout.p,
        "activation": name,
        "layer_norm_eps": module.norm1.eps,
        "batch_first": module.self_attn.batch_first,
        "norm_first": module.norm_first,
        "bias": module.linear1.bias is not None,
    }


def _attention_args(module: nn.Module) -> dict[str, Any]:
    """MultiheadAttention keeps ``kdim``/``vdim`` (the embedding's size when not given) and no ``bias`` flag."""
    return {
        "kdim": None if module.kdim == module.embed_dim else module.kdim,
        "vdim": None if module.vdim == module.embed_dim else module.vdim,
        "bias": module.out_proj.bias is not None,
        "add_bias_kv": module.bias_k is not None,
    }


def _frozen_batch_norm_args(module: nn.Module) -> dict[str, Any]:
    """torchvision's FrozenBatchNorm2d keeps its size only as its buffers'."""
    return {"num_features": module.weight.shape[0], "eps": module.eps}


_SPECIAL = {
    "TransformerEncoderLayer": _transformer_args,
    "MultiheadAttention": _attention_args,
    "FrozenBatchNorm2d": _frozen_batch_norm_args,
}
_SKIP = {"device", "dtype", "self"}


def layer_call(module: nn.Module, entry: Any, path: str) -> Layer:
    """The layer call that rebuilds ``module``: only the arguments that differ from their defaults, checked by
    rebuilding it (``kernel_size: 3`` preferred over ``[3, 3]`` where the module reads the same)."""
    sig = entry.signature()
    args = _confirmed(module, entry, _differing_args(module, entry, path), path)
    if entry.infer and entry.infer in args and _inferable(entry, args[entry.infer]):
        del args[entry.infer]  # specc infers it from the input shape
    names = [n for n in sig.parameters if n in args]
    first = next((n for n in sig.parameters if n not in _SKIP), None)
    short = len(names) == 1 and names[0] == first and not isinstance(args[first], (list, dict, bool))
    return Layer(entry.name, tuple((n, args[n]) for n in names), short)


def _differing_args(module: nn.Module, entry: Any, path: str) -> dict[str, Any]:
    """The constructor arguments read back from ``module`` that differ from their defaults."""
    sig = entry.signature()
    special = _SPECIAL.get(entry.name) if entry.module in ("torch.nn", "torchvision.ops") else None
    values = special(module) if special else {}
    args: dict[str, Any] = {}
    for name, param in sig.parameters.items():
        if name in _SKIP or name.startswith("_") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in values:
            value = values[name]
        elif hasattr(module, name):
            value = getattr(module, name)
        elif param.default is not inspect.Parameter.empty:
            continue  # not kept by the module: the rebuild proves the default is right
        else:
            raise DecompileError(path, f"cannot read the argument {name!r} of {entry.name} from the module")
        if isinstance(param.default, bool) and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None  # bias=False leaves `module.bias` None
        if isinstance(value, torch.Tensor) or callable(value) and not isinstance(value, (int, float, str)):
            if param.default is inspect.Parameter.empty:
                raise DecompileError(path, f"cannot read the argument {name!r} of {entry.name} from the module")
            continue
        value = _simplify(value)
        if param.default is inspect.Parameter.empty or not _same(_uniform(value), _simplify(param.default)):
            args[name] = value
    return args


def _confirmed(module: nn.Module, entry: Any, args: dict[str, Any], path: str) -> dict[str, Any]:
    """``args`` (in their simplest form where that rebuilds the same module), proven by rebuilding it."""
    simple = {k: _uniform(v) for k, v in args.items()}
    rebuilt = None
    for candidate in (simple, args):
        rebuilt = _rebuild(entry, candidate)
        if rebuilt is not None and _same_module(rebuilt, module):
            return candidate
    raise DecompileError(
        path,
        f"cannot read the arguments of {entry.name} from the module: rebuilt from "
        f"{_describe_args(args)} it is {rebuilt!r}, not {module!r}",
    )


def _inferable(entry: Any, value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, list) and len(value) == 1)


def _describe_args(args: dict) -> str:
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in args.items()) + "}"


def _rebuild(entry: Any, args: dict) -> nn.Module | None:
    cls = entry.resolve()
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    try:
        if "device" in inspect.signature(cls).parameters:
            return cls(**kwargs, device="meta")
        with torch.device("meta"):
            return cls(**kwargs)
    except Exception:
        return None


def _same_module(a: nn.Module, b: nn.Module) -> bool:
    if type(a) is not type(b) or repr(a) != repr(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype for k in sa)


# --------------------------------------------------------------------------- other libraries' classes


def _equivalents() -> dict[type, tuple[str, Any]]:
    """Classes of other libraries that compute what a registered layer computes: (its type, its arguments)."""
    table: dict[type, tuple[str, Any]] = {}
    try:
        from torchvision.ops.misc import Permute
    except ImportError:  # an older torchvision
        return table
    table[Permute] = ("Permute", lambda m: {"dims": list(m.dims)})  # torch.permute(x, dims)
    return table


def equivalent_layer(module: nn.Module, path: str) -> Layer | None:
    """The registered layer ``module`` is an instance of under another class (torchvision's ``Permute``), or None."""
    found = _equivalents().get(type(module))
    if found is None:
        return None
    from compiler.facts.registry import REGISTRY

    kind, read = found
    entry = REGISTRY.get("layer", kind)
    args = read(module)
    try:
        twin = entry.resolve()(**args)
    except Exception as err:
        raise DecompileError(path, f"cannot make a {kind} of {type(module).__name__} ({err})") from None
    return layer_call(twin, entry, path)
