"""A plugin layer's own shape rule (issue 23): ``register_layer(cls, shape=fn)``."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import compiler
from compiler.facts.registry import REGISTRY


class Crop(nn.Module):
    """Scales each channel, then keeps the first ``width`` positions of the last axis."""

    def __init__(self, in_channels: int, width: int = 2):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(in_channels, 1))
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.scale)[..., : self.width]


def crop_shape(in_shape: tuple[int, ...], arguments: dict) -> tuple[int, ...]:
    if len(in_shape) != 2:
        raise compiler.ShapeError(f"Crop expects (C, L), got {in_shape}", "put it after a 1-d convolution")
    if in_shape[1] < arguments["width"]:
        raise ValueError(f"the input has {in_shape[1]} positions, fewer than width={arguments['width']}")
    return (in_shape[0], arguments["width"])


_SPEC = """\
name: t
input: [{input}]
model:
  - Crop: {{width: {width}}}
  - Flatten
  - Linear: {{out_features: 3}}
"""


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch):
    """Registrations in a test are undone after it."""
    monkeypatch.setitem(REGISTRY._by_kind, "layer", dict(REGISTRY._by_kind["layer"]))


def _lower(width: int = 2, input: str = "4, 5") -> tuple[compiler.Spec, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = compiler.parse_spec(_SPEC.format(width=width, input=input), "t.yaml")
    return spec, [str(w.message) for w in caught if issubclass(w.category, compiler.SpecWarning)]


def _problems(width: int = 2, input: str = "4, 5") -> list[compiler.Problem]:
    with pytest.raises(compiler.SpecError) as info:
        _lower(width, input)
    return info.value.problems


def test_without_a_rule_the_shape_comes_from_the_meta_device_with_a_warning(registry) -> None:
    compiler.register_layer(Crop, infer="in_channels")
    spec, warned = _lower()
    assert [layer.out_shape for layer in compiler.lower_spec(spec).model.layers()] == [(4, 2), (8,), (3,)]
    assert len(warned) == 1 and "Crop has no shape rule" in warned[0]
    assert "register_layer(Crop, shape=...)" in warned[0]


def test_with_a_rule_there_is_no_warning_and_its_shape_is_used(registry) -> None:
    calls = []

    def rule(in_shape, arguments):
        calls.append((in_shape, arguments["width"], arguments["in_channels"]))
        return crop_shape(in_shape, arguments)

    compiler.register_layer(Crop, infer="in_channels", shape=rule)
    spec, warned = _lower(width=3)
    assert warned == []
    assert calls == [((4, 5), 3, 4)]
    program = compiler.lower_spec(spec)
    assert [layer.out_shape for layer in program.model.layers()] == [(4, 3), (12,), (3,)]
    assert next(program.model.layers()).params == 4  # counted by constructing it on the meta device
    model = compiler.build_model(spec)
    assert model(torch.zeros(2, 4, 5)).shape == (2, 3)


def test_the_rules_refusals_are_located_problems(registry) -> None:
    compiler.register_layer(Crop, infer="in_channels", shape=crop_shape)
    (problem,) = _problems(input="4, 5, 6")
    assert (problem.line, problem.col) == (4, 5)
    assert problem.message == "Crop expects (C, L), got (4, 5, 6)" and problem.fix == "put it after a 1-d convolution"
    (problem,) = _problems(width=9)
    assert problem.message == "Crop cannot take an input of shape (4, 5): the input has 5 positions, fewer than width=9"
    assert problem.fix


@pytest.mark.parametrize(
    ("rule", "wanted"),
    [
        (lambda in_shape, arguments: in_shape[7], "Crop's shape rule failed on input (4, 5): IndexError"),
        (lambda in_shape, arguments: "wide", "Crop's shape rule returned 'wide', not a shape"),
        (lambda in_shape, arguments: (4, -1), "Crop's shape rule returned (4, -1), not a shape"),
    ],
)
def test_a_broken_rule_is_reported_not_raised(registry, rule, wanted: str) -> None:
    compiler.register_layer(Crop, infer="in_channels", shape=rule)
    (problem,) = _problems()
    assert problem.message.startswith(wanted), problem.message
    assert "register_layer" in problem.fix


def test_shape_must_be_a_function(registry) -> None:
    with pytest.raises(TypeError, match="shape must be a function"):
        compiler.register_layer(Crop, shape=(4, 2))


def test_the_documented_filter_silences_the_warning(registry) -> None:
    compiler.register_layer(Crop, infer="in_channels")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", ".*Crop has no shape rule", compiler.SpecWarning)
        compiler.parse_spec(_SPEC.format(width=2, input="4, 5"), "t.yaml")
    assert [str(w.message) for w in caught if issubclass(w.category, compiler.SpecWarning)] == []
