"""Verification: a decompiled (or exported) model is reported equal only when it is.

``specc import`` says "verified" only when the spec's model takes the module's state dict with ``strict=True``,
with every tensor of the same shape and dtype, no parameter is shared by two layers (tied weights) or frozen
(``requires_grad=False``) -- a spec can say neither, so its model would train them differently -- and the eval
outputs on a sample input are ``torch.equal`` and finite (NaN is never equal).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from compiler.interop.nodes import DecompileError, shape_text


def expressible(module: nn.Module) -> None:
    """Refuse a module whose parameters a spec cannot reproduce: tied, frozen, or not float32."""
    owners: dict[int, str] = {}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        first = owners.setdefault(id(parameter), name)
        if first != name:
            raise DecompileError(
                "",
                f"{first} and {name} are one tensor (tied weights), which a spec cannot express: its model "
                "would hold two and train them apart",
            )
        if not parameter.requires_grad:
            raise DecompileError(
                "",
                f"{name} is frozen (requires_grad=False), which a spec cannot express: its model would train "
                "it; unfreeze it, or decompile the model before freezing",
            )
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and tensor.dtype != torch.float32 or tensor.is_complex():
            raise DecompileError(
                "",
                f"{name} is {str(tensor.dtype).removeprefix('torch.')}, but a spec builds float32 models: "
                "convert the model first (model.float())",
            )


Shape = tuple[int, ...] | dict[str, tuple[int, ...]]  # one input's sample shape, or several inputs' by name


def verify(module: nn.Module, text: str, shape: Shape) -> None:
    """Refuse unless the spec's model loads ``module``'s state dict strictly and its eval outputs are equal."""
    expressible(module)
    spec, dtype = _parse(text, shape)
    rebuilt = _rebuilt(spec, module.state_dict(), shape)
    expected, got = _outputs(module, rebuilt, shape, dtype)
    if not _finite(expected):
        raise DecompileError(
            "",
            "the module's own outputs hold NaN or infinity on a sample input (its weights?), so "
            "nothing can be verified; refusing to write a spec",
        )
    if not _equal(expected, got):
        raise DecompileError(
            "",
            "the spec's model gives different outputs from the module's on a sample input; "
            "refusing to write a wrong spec (the forward likely does something the spec leaves out)",
        )


def _parse(text: str, shape: Shape) -> tuple[Any, torch.dtype]:
    from compiler.pipeline import SpecError, lower_spec, parse_spec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            spec = parse_spec(text, "<decompiled>")
        except SpecError as err:
            first = err.problems[0].message if getattr(err, "problems", None) else str(err)
            raise DecompileError(
                "",
                f"the input shape {shape_text(shape)} does not fit the model, or the written spec is invalid: {first}",
            ) from None
        dtype = torch.int64 if lower_spec(spec).model.input_dtype == "int64" else torch.float32
    return spec, dtype


def _rebuilt(spec: Any, state: dict, shape: Shape) -> nn.Module:
    """The spec's model holding ``state`` (built on the meta device first: no second copy of the weights)."""
    from compiler.pipeline import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            rebuilt = build_model(spec)
    problem = state_dict_mismatch(rebuilt, state)
    if problem:
        raise DecompileError(
            "",
            f"the spec's model does not take the module's state dict ({problem}); is the input "
            f"shape {shape_text(shape)} the one the module was made for?",
        )
    rebuilt.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in [*rebuilt.parameters(), *rebuilt.buffers()]):  # non-persistent buffers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rebuilt = build_model(spec)
        rebuilt.load_state_dict(state, strict=True)
    return rebuilt


def _outputs(module: nn.Module, rebuilt: nn.Module, shape: Shape, dtype: torch.dtype) -> tuple:
    """Both models' eval outputs on one sample (one tensor per input): an image model's on a small crop where it
    takes one (every op still runs), else on ``shape``. The module's training flags are restored after."""
    shapes = list(shape.values()) if isinstance(shape, dict) else [shape]
    small = [(s[0], *(min(n, 32) for n in s[1:])) if len(s) >= 3 else s for s in shapes]
    was = {m: m.training for m in module.modules()}
    try:
        module.eval()
        rebuilt.eval()
        with torch.no_grad():
            for sample in dict.fromkeys([tuple(small), tuple(shapes)]):
                xs = [_sample(s, dtype, i) for i, s in enumerate(sample)]
                try:
                    return module(*(x.clone() for x in xs)), rebuilt(*(x.clone() for x in xs))
                except Exception as err:
                    if list(sample) != shapes:
                        continue
                    raise DecompileError(
                        "",
                        f"the input shape {shape_text(shape)} does not fit the module: "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                    ) from None
    finally:
        for m, mode in was.items():
            m.training = mode
    raise AssertionError("unreachable: the last sample returns or raises")


def _sample(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    if dtype != torch.float32:
        return torch.zeros(1, *shape, dtype=dtype)
    return torch.randn(1, *shape, generator=torch.Generator().manual_seed(seed))  # each input its own values


def state_dict_mismatch(model: nn.Module, state: dict) -> str:
    """Why ``state`` would not load into ``model`` as it is -- strict keys, same shapes, same dtypes -- in one line
    ("" if it would). ``load_state_dict`` itself would cast a float64, complex or bool tensor silently."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    shared = [k for k in ours if k in state and isinstance(state[k], torch.Tensor)]
    shapes = [k for k in shared if ours[k].shape != state[k].shape]
    dtypes = [k for k in shared if ours[k].dtype != state[k].dtype]
    others = [k for k in ours if k in state and not isinstance(state[k], torch.Tensor)]
    parts = [_keys(len(keys), what, keys) for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if others:
        parts.append(_keys(len(others), "not a tensor", others))
    for what, keys, show in (("shape", shapes, lambda t: list(t.shape)), ("dtype", dtypes, lambda t: t.dtype)):
        if keys:
            k = keys[0]
            parts.append(
                f"{len(keys)} of another {what} ({k}: {show(state[k])}, the model's {show(ours[k])}"
                f"{', ...' if len(keys) > 1 else ''})"
            )
    return "; ".join(parts)


def _keys(n: int, what: str, keys: list[str]) -> str:
    return f"{n} {what} key{'s' if n > 1 else ''} ({', '.join(keys[:3])}{', ...' if n > 3 else ''})"


def _finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return _finite(list(value.values()))
    return isinstance(value, (tuple, list)) and all(_finite(v) for v in value)


def _equal(a: Any, b: Any) -> bool:
    """Equal tensors (shape, dtype, values; NaN never equals), or equal sequences or mappings of them."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):  # a model's several outputs by name, in order
        return list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    return False
