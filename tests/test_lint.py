"""Lint warnings (issue 23): legal specs that are usually mistakes warn, located, with a fix."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import compiler

ROOT = Path(__file__).resolve().parent.parent

_SPEC = """\
name: s
input: [4]
model:
  - Linear: {{out_features: 3}}
  - {last}
data: {{dataset: {{Synthetic: {{size: 8, inputs: [4], {targets}}}}}}}
loss: {loss}
optimizer: SGD
train: {{epochs: 1}}
"""


def _warnings(last: str, loss: str, targets: str = "classes: 3") -> list[str]:
    text = _SPEC.format(last=last, loss=loss, targets=targets)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiler.parse_spec(text, "spec.yaml")
    return [str(w.message) for w in caught if issubclass(w.category, compiler.SpecWarning)]


@pytest.mark.parametrize(
    ("last", "loss", "wanted"),
    [
        ("Softmax: {dim: 1}", "CrossEntropyLoss", "Softmax before CrossEntropyLoss"),
        ("LogSoftmax: {dim: 1}", "CrossEntropyLoss", "or keep it and use NLLLoss"),
        ("Softmax: {dim: 1}", "NLLLoss", "use `LogSoftmax: {dim: 1}` instead of Softmax"),
        ("ReLU", "NLLLoss", "NLLLoss expects log-probabilities, but the model ends with ReLU"),
    ],
)
def test_the_final_layer_against_the_loss(last: str, loss: str, wanted: str) -> None:
    got = _warnings(last, loss)
    assert len(got) == 1, got
    assert got[0].startswith("spec.yaml:5:5: warning: model.1: ") and wanted in got[0], got
    assert "Fix: " in got[0]


@pytest.mark.parametrize(
    ("last", "loss", "targets"),
    [
        ("ReLU", "CrossEntropyLoss", "classes: 3"),
        ("LogSoftmax: {dim: 1}", "NLLLoss", "classes: 3"),
        ("Sigmoid", "BCELoss", "targets: [3]"),
        ("ReLU", "MSELoss", "targets: [3]"),
    ],
)
def test_matching_final_layers_do_not_warn(last: str, loss: str, targets: str) -> None:
    assert _warnings(last, loss, targets) == []


def test_sigmoid_before_bce_with_logits_warns() -> None:
    (got,) = _warnings("Sigmoid", "BCEWithLogitsLoss", "targets: [3]")
    assert "applies its own sigmoid" in got


def test_the_lint_reads_registry_traits() -> None:
    """The losses and layers the lint knows are the registry's `expects` and `produces` traits."""
    from compiler.facts.registry import REGISTRY

    assert REGISTRY.get("loss", "CrossEntropyLoss").expects == "logits"
    assert REGISTRY.get("loss", "NLLLoss").expects == "log_probabilities"
    assert {e.name for e in REGISTRY.entries("layer") if e.produces == "log_probabilities"} == {"LogSoftmax"}


def test_mse_on_integer_class_column_suggests_a_classification_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    text = (ROOT / "specs" / "iris_mlp.yaml").read_text(encoding="utf-8")
    text = text.replace("loss: CrossEntropyLoss", "loss: MSELoss").replace("metrics: [accuracy]", "metrics: []")
    with pytest.raises(compiler.SpecError) as info:
        compiler.parse_spec(text, "iris.yaml")
    (problem,) = info.value.problems
    assert "the model outputs (3,) per sample but the targets are (1,)" in problem.message
    assert "to classify them, use CrossEntropyLoss (a classification loss)" in problem.fix


def test_shipped_specs_do_not_warn() -> None:
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compiler.load_spec(path)
        assert not [w for w in caught if issubclass(w.category, compiler.SpecWarning)], path.name
