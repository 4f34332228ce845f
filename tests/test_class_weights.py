"""`data.class_weights`: `balanced` (scikit-learn's n_samples / (n_classes * count) on the training split) or one
weight per class, passed to the loss's `weight` in both backends; refused, located, where it cannot apply."""

from __future__ import annotations

import csv

import pytest
import torch

import compiler
from compiler.errors import SpecError
from compiler.runtime import helpers as runtime
from compiler.workflow.check import compare, import_script

SPEC = """\
name: weighted
input: [2]
model: [{Linear: {out_features: 8}}, ReLU, {Linear: {out_features: 3}}]
data:
  dataset: {CSV: {path: rows.csv, target: label}}
  batch_size: 16
  val_split: 0.2
  class_weights: balanced
loss: CrossEntropyLoss
optimizer: {SGD: {lr: 0.1}}
train: {epochs: 1}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """rows.csv: 100 rows, 70 of class 0, 20 of class 1, 10 of class 2; a spec reading them."""
    monkeypatch.chdir(tmp_path)
    generator = torch.Generator().manual_seed(0)
    with open(tmp_path / "rows.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["a", "b", "label"])
        for i in range(100):
            label = 0 if i < 70 else 1 if i < 90 else 2
            a, b = (torch.randn(2, generator=generator) + label).tolist()
            writer.writerow([f"{a:.4f}", f"{b:.4f}", label])
    (tmp_path / "weighted.yaml").write_text(SPEC)
    return tmp_path


def test_balanced_is_scikit_learns_formula_on_the_training_split(project):
    spec = compiler.load_spec(project / "weighted.yaml")
    training = compiler.build_training(spec, "cpu")
    labels = training.train_loader.dataset.tensors[1]  # the 80 training rows only
    counts = torch.bincount(labels, minlength=3).double()
    expected = (len(labels) / (3 * counts)).float()
    assert len(labels) == 80 and torch.equal(training.loss_fn.weight, expected)


def test_balanced_equals_scikit_learn_where_installed(project):
    sklearn = pytest.importorskip("sklearn.utils.class_weight")
    training = compiler.build_training(compiler.load_spec(project / "weighted.yaml"), "cpu")
    labels = training.train_loader.dataset.tensors[1]
    theirs = sklearn.compute_class_weight("balanced", classes=[0, 1, 2], y=labels.numpy())
    assert torch.allclose(training.loss_fn.weight.double(), torch.tensor(theirs))


def test_given_weights_reach_the_loss_and_change_it_as_torchs_own_weight(project):
    spec = compiler.load_spec(project / "weighted.yaml", overrides=["data.class_weights=[1, 2.5, 4]"])
    training = compiler.build_training(spec, "cpu")
    assert training.loss_fn.weight.tolist() == [1.0, 2.5, 4.0]
    x, y = next(iter(training.train_loader))
    output = training.model(x)
    by_hand = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.5, 4.0]))(output, y)
    assert torch.equal(training.loss_fn(output, y), by_hand)
    assert not torch.equal(torch.nn.CrossEntropyLoss()(output, y), by_hand)


@pytest.mark.parametrize("weights", ["balanced", "[1, 2.5, 4]"])
def test_compiled_and_generated_agree_at_every_level(project, weights):
    spec = compiler.load_spec(project / "weighted.yaml", overrides=[f"data.class_weights={weights}"])
    checks = compare(spec, steps=3)
    assert all(c.ok for c in checks), [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    script = import_script(compiler.render_script(spec), "weighted", str(project))
    objects = script.build_all()
    assert torch.equal(objects[1].weight, compiler.build_training(spec, "cpu").loss_fn.weight)
    lean = import_script(compiler.render_script(spec, lean=True), "weighted_lean", str(project))
    lean.DEVICE = "cpu"
    assert torch.equal(lean.build_all()[1].weight, objects[1].weight)


def test_nll_loss_takes_them_too(project):
    overrides = ["loss=NLLLoss", "model=[{Linear: {out_features: 3}}, {LogSoftmax: {dim: 1}}]"]
    spec = compiler.load_spec(project / "weighted.yaml", overrides=overrides)
    assert compiler.build_training(spec, "cpu").loss_fn.weight.shape == (3,)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.class_weights=[1, 2]", "class_weights gives 2 weights, but the data has 3 classes"),
        ("loss=MultiLabelSoftMarginLoss", "MultiLabelSoftMarginLoss takes no per-class weight"),
        ("data.class_weights=[0, 0, 0]", "class_weights must be finite, not negative, not all 0"),
    ],
)
def test_refused_where_it_cannot_apply(project, override, message):
    with pytest.raises(SpecError, match=message) as caught:
        compiler.load_spec(project / "weighted.yaml", overrides=[override])
    assert "weighted.yaml:8:3" in str(caught.value) or "class_weights" in str(caught.value)


def test_a_class_missing_from_the_training_split_gets_weight_zero():
    dataset = torch.utils.data.TensorDataset(torch.zeros(4, 1), torch.tensor([0, 0, 2, 2]))
    assert runtime.class_weights(dataset, "balanced", 3).tolist() == pytest.approx([4 / 6, 0.0, 4 / 6])
    subset = torch.utils.data.Subset(dataset, [0, 1, 2])  # labels 0, 0, 2
    assert runtime.class_weights(subset, "balanced", 3).tolist() == pytest.approx([0.5, 0.0, 1.0])
