"""param_rules against torch: for every registered layer, many argument combinations (valid and invalid),
the arithmetic verdict (refused or not), parameter count, bytes and parameter slots must be what constructing
the layer on the meta device gives -- and the refusal message torch's, where torch's message is deterministic."""

from __future__ import annotations

import random
import warnings
import zlib

import pytest
import torch

from compiler.facts import param_rules, torch_facts
from compiler.facts.registry import REGISTRY
from compiler.lower.bind import _adapter

SIZES = [-2, 0, 1, 3, 4, 6, 2**31]
BOOLS = [True, False]
POOLS: dict[str, list] = {
    "in_channels": [-2, 0, 1, 2, 3, 4, 6],
    "out_channels": [-2, 0, 1, 2, 3, 4, 6, 2**31],
    "kernel_size": [-1, 0, 1, 3, (1, 2), (2, 2, 2), 2**31],
    "stride": [1, 2, (1, 1), (1, 2)],
    "padding": [0, 1, "same", "valid", "full"],
    "output_padding": [0, 1],
    "dilation": [1, 2],
    "groups": [-1, 0, 1, 2, 3],
    "bias": BOOLS,
    "padding_mode": ["zeros", "reflect", "replicate", "circular", "mirror"],
    "num_features": [-1, 0, 1, 5, 2**61],
    "affine": BOOLS,
    "track_running_stats": BOOLS,
    "num_groups": [-1, 0, 1, 2, 3],
    "num_channels": [-2, 0, 1, 4, 6],
    "normalized_shape": [0, 3, (2, 3), (-1, 2), 2**62],
    "elementwise_affine": BOOLS,
    "in_features": SIZES,
    "out_features": SIZES,
    "in1_features": [-1, 0, 2, 3],
    "in2_features": [0, 2, 2**31],
    "num_embeddings": [-1, 0, 1, 5, 2**62],
    "embedding_dim": [-1, 0, 3],
    "padding_idx": [None, -6, -5, -1, 0, 1, 4, 5],
    "_freeze": BOOLS,
    "mode": ["sum", "mean", "max", "row", "batch"],
    "input_size": [-1, 0, 1, 4, 2**40],
    "hidden_size": [-1, 0, 1, 5, 2**20],
    "num_layers": [-1, 0, 1, 2, 3],
    "dropout": [-0.5, 0.0, 0.3, 1.0, 1.5],
    "bidirectional": BOOLS,
    "proj_size": [-1, 0, 2, 5],
    "nonlinearity": ["tanh", "relu", "sigmoid"],
    "batch_first": BOOLS,
    "d_model": [-4, 0, 4, 6, 8],
    "nhead": [-1, 0, 1, 2, 3],
    "dim_feedforward": [-1, 0, 8],
    "activation": ["relu", "gelu", "tanh"],
    "num_parameters": [-1, 0, 1, 3],
    "embed_dim": [-4, 0, 4, 6, 8],
    "num_heads": [-1, 0, 1, 2, 3],
    "kdim": [None, 3, 8],
    "vdim": [None, 5, 8],
    "add_bias_kv": BOOLS,
    "add_zero_attn": BOOLS,
    "min_val": [-1.0, 0.0, 1.0, 2.0],
    "max_val": [-1.0, 0.0, 1.0, 2.0],
    "min_value": [None, -2.0, 3.0],
    "max_value": [None, -2.0, 3.0],
    "p": [-0.1, 0.0, 0.5, 1.0, 1.1],
    "norm_type": [0, 1, 2.0, -1.0],
    # required arguments of layers without parameters
    "dim": [0, 1],
    "index": [0, 1],
    "dims": [(0, 1), (1, 0)],
    "dim0": [0],
    "dim1": [1],
    "shape": [(2, -1)],
    "unflattened_size": [(2, 2), (4,)],
    "upscale_factor": [1, 2],
    "downscale_factor": [1, 2],
    "output_size": [1, (2, 2)],
    "size": [4],
    "value": [0.0],
    "threshold": [0.5],
}
# the first combination: a valid value for each required argument
VALID = {
    "in_channels": 4, "out_channels": 4, "kernel_size": 3, "num_features": 5, "num_groups": 2, "num_channels": 4,
    "normalized_shape": 3, "in_features": 3, "out_features": 4, "in1_features": 2, "in2_features": 2,
    "num_embeddings": 5, "embedding_dim": 3, "input_size": 4, "hidden_size": 5, "d_model": 8, "nhead": 2,
    "norm_type": 2.0, "embed_dim": 8, "num_heads": 2, "p": 0.5, "mode": "row",
}  # fmt: skip
_LOSS_POOLS = {"p": [1, 2, 3, 1.0, 0], "delta": [1.0, 2, 0.5], "margin": [1.0]}
COMBOS = 60


# Layers that check their arguments when they run, not when they are made: the rules refuse what running refuses.
CHECKED_WHEN_RUN = {"StochasticDepth"}


def _live(cls, kwargs: dict):
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = cls(**kwargs)
            if cls.__name__ in CHECKED_WHEN_RUN:
                module(torch.empty(2, 3))
    except Exception as err:
        return ("refused", str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
    return (
        "ok",
        sum(p.numel() for p in module.parameters() if p.requires_grad),
        sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())),
        tuple(module._parameters),
        tuple(n for n, p in module._parameters.items() if p is None),
        {n: tuple(p.shape) for n, p in module._parameters.items() if p is not None},  # what init rules check
    )


def _fast(name: str, arguments: dict):
    try:
        made = param_rules.construct(name, arguments)
    except param_rules.Refused as err:
        return ("refused", err.message)
    except (TypeError, ValueError, ArithmeticError, LookupError):
        return ("fallback",)  # lowering constructs these live
    assert made is not None
    return ("ok", made.params, made.nbytes, tuple(made.slots), tuple(made.none), made.shapes)


def _combos(entry, seed: int) -> list[dict]:
    """The layer's required arguments and a random draw of its pooled ones; the first combo is all defaults."""
    rng = random.Random(seed)
    sig = entry.signature()
    params = [p for p in sig.parameters.values() if p.name not in ("device", "dtype", "_weight")]
    params = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    combos = []
    for i in range(COMBOS):
        kwargs = {}
        for p in params:
            pool = POOLS.get(p.name)
            if p.default is p.empty:
                assert pool, f"{entry.name}.{p.name} is required but has no pool of values"
                kwargs[p.name] = VALID.get(p.name, pool[0]) if i == 0 else rng.choice(_typed(p, pool))
            elif pool and i > 0 and rng.random() < 0.6:
                kwargs[p.name] = rng.choice(_typed(p, pool) or [p.default])
        combos.append(kwargs)
    return combos


def _typed(param, pool: list) -> list:
    """The values of ``pool`` that bind lets through to the rules (those of the argument's annotation)."""
    adapter = _adapter(param.annotation)
    if adapter is None:
        return pool
    return [v for v in pool if _accepts(adapter, v) or (isinstance(v, tuple) and _accepts(adapter, list(v)))]


def _accepts(adapter, value) -> bool:
    try:
        adapter.validate_python(value)
    except Exception:
        return False
    return True


def _defaults(entry) -> dict:
    sig = entry.signature()
    return {p.name: (None if p.default is p.empty else p.default) for p in sig.parameters.values()}


@pytest.fixture(autouse=True)
def _table():
    torch_facts.set_live(False)
    yield
    torch_facts.set_live(None)


LAYERS = [e for e in REGISTRY.entries("layer") if e.cls_object is None]


@pytest.mark.parametrize("entry", LAYERS, ids=[e.name for e in LAYERS])
def test_rules_agree_with_torch_constructing_on_meta(entry) -> None:
    cls, defaults = entry.resolve(), _defaults(entry)
    outcomes = []
    for seed, kwargs in enumerate(_combos(entry, seed=zlib.crc32(entry.name.encode()))):
        fast, live = _fast(entry.name, defaults | kwargs), _live(cls, kwargs)
        outcomes.append(fast[0])
        if fast[0] == "fallback":
            continue
        assert fast[0] == live[0], f"{entry.name}({kwargs}): rules say {fast}, torch {live} (combo {seed})"
        if fast[0] == "ok":
            assert fast == live, f"{entry.name}({kwargs}): rules count {fast[1:]}, torch {live[1:]}"
        elif "{" not in live[1]:  # torch writes some messages with a set's repr, whose order varies
            assert fast[1] == live[1], f"{entry.name}({kwargs})"
    assert outcomes.count("fallback") <= len(outcomes) // 10, f"{entry.name}: the rules gave up too often"
    assert outcomes[0] == "ok", f"{entry.name} with its defaults must be accepted"


def test_the_generated_combinations_reach_both_verdicts() -> None:
    """Not vacuous: across the layers, torch refuses many combinations and accepts many, with parameters."""
    refused = accepted = with_params = 0
    for entry in LAYERS:
        cls = entry.resolve()
        for kwargs in _combos(entry, seed=zlib.crc32(entry.name.encode()))[:15]:
            live = _live(cls, kwargs)
            refused += live[0] == "refused"
            accepted += live[0] == "ok"
            with_params += live[0] == "ok" and live[1] > 0
    assert refused >= 100 and accepted >= 500 and with_params >= 50, (refused, accepted, with_params)


LOSSES = REGISTRY.entries("loss")


@pytest.mark.parametrize("entry", LOSSES, ids=[e.name for e in LOSSES])
def test_loss_checks_agree_with_torch(entry) -> None:
    cls, defaults = entry.resolve(), _defaults(entry)
    names = [n for n in defaults if n in _LOSS_POOLS]
    for value_index in range(5):
        kwargs = {n: _LOSS_POOLS[n][value_index % len(_LOSS_POOLS[n])] for n in names}
        try:
            cls(**kwargs)
            live = "ok"
        except Exception:
            live = "refused"
        try:
            param_rules.check_loss(entry.name, defaults | kwargs)
            fast = "ok"
        except param_rules.Refused:
            fast = "refused"
        assert fast == live, f"{entry.name}({kwargs})"


# --------------------------------------------------------------------------- init rules

_INIT_SPEC = """
name: ini
input: [4, 6, 6]
model: [{{Conv2d: {{out_channels: 6, kernel_size: 3}}}}, Flatten, {{Linear: {{out_features: 3}}}}]
init:
  - {{type: {layer}, {param}: {rule}}}
"""
_INIT_CASES = [
    (layer, param, rule)
    for layer in ("Linear", "Conv2d")
    for param in ("weight", "bias")
    for rule in (
        "eye_",
        "dirac_",
        "{dirac_: {groups: 4}}",
        "orthogonal_",
        "sparse_",
        "{sparse_: {sparsity: 0.5, std: -1}}",
        "kaiming_normal_",
        "{kaiming_uniform_: {a: 0.1, mode: fan_out}}",
        "xavier_uniform_",
        "{xavier_normal_: {gain: -1}}",
        "{normal_: {std: -1}}",
        "{normal_: {mean: 1.0e+300}}",
        "{uniform_: {a: 5, b: 1}}",
        "{uniform_: {a: -1, b: 1}}",
        "{trunc_normal_: {std: 0}}",
        "{trunc_normal_: {a: 3, b: -3}}",
        "{constant_: 1.0e+300}",
        "{constant_: 0.5}",
        "{constant_: .inf}",
        "zeros_",
    )
]
_INIT_STRICTER = ("{normal_: {mean: 1.0e+300}}", "{constant_: .inf}")  # torch fills inf; specc refuses


@pytest.mark.parametrize(("layer", "param", "rule"), _INIT_CASES, ids=[" ".join(c) for c in _INIT_CASES])
def test_init_rules_are_refused_exactly_where_torch_refuses_them(layer, param, rule) -> None:
    """Validation (no torch) refuses an init rule, at its line, exactly when torch's nn.init raises while the
    model is built: parameter dimensions, negative std or gain, a > b, values past float32."""
    import compiler
    from compiler.errors import SpecError

    text = _INIT_SPEC.format(layer=layer, param=param, rule=rule)
    try:
        spec = compiler.parse_spec(text, "ini.yaml")
    except SpecError as err:
        refused = str(err)
        assert "ini.yaml:6:" in refused, refused
    else:
        refused = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sparse_/dirac_ warnings are not failures
            compiler.build_model(spec) if refused is None else _torch_builds(layer, param, rule)
        torch_refuses = False
    except (RuntimeError, ValueError, TypeError, ZeroDivisionError, OverflowError):
        torch_refuses = True
    if rule in _INIT_STRICTER:
        assert refused is not None and not torch_refuses
    else:
        assert (refused is not None) == torch_refuses, refused


def _torch_builds(layer: str, param: str, rule: str) -> None:
    """Apply the rule with torch itself, on the parameter validation refused."""
    import yaml

    module = torch.nn.Linear(216, 3) if layer == "Linear" else torch.nn.Conv2d(4, 6, 3)
    parsed = yaml.safe_load(rule)
    name, kwargs = (parsed, {}) if isinstance(parsed, str) else next(iter(parsed.items()))
    kwargs = kwargs if isinstance(kwargs, dict) else {"val": kwargs}
    with torch.no_grad():
        getattr(torch.nn.init, name)(getattr(module, param), **kwargs)
