"""Training models of several inputs or outputs (§4, §5, §15): `pairs: true` for a two-input Siamese network,
a loss per output with `loss_weights:`, a CSV of several target columns. Both backends equal at every §8 level;
`specc train`, `eval` and `predict` report each output; each mistake is a located error.
"""

from __future__ import annotations

import json

import pytest
import torch

import compiler
from compiler.errors import SpecError
from compiler.runtime import helpers as runtime
from compiler.workflow.check import compare

SIAMESE = "specs/siamese_digits.yaml"
MULTITASK = "specs/iris_multitask.yaml"


@pytest.mark.parametrize("path", [SIAMESE, MULTITASK])
def test_both_backends_match_at_every_level(path):
    checks = compare(compiler.load_spec(path), steps=2)
    assert len(checks) == 6 and all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]


def test_pairs_are_seeded_half_alike_and_from_the_dataset():
    base = torch.utils.data.TensorDataset(torch.arange(200.0).unsqueeze(1), torch.arange(200) % 4)
    pairs = runtime.PairDataset(base, seed=3)
    again = runtime.PairDataset(base, seed=3)
    assert pairs.partners == again.partners and len(pairs) == 200
    (a, b), same = pairs[7]
    assert a.item() == 7 and b.item() == pairs.partners[7] and same == int(7 % 4 == pairs.partners[7] % 4)
    assert 0.4 < sum(pairs.targets) / len(pairs) < 0.6  # about half of the pairs are of one class


def test_a_loss_per_output_weighted_and_summed():
    losses = runtime.OutputLosses([torch.nn.CrossEntropyLoss(), torch.nn.MSELoss()], [1.0, 0.5], ["c", "v"], ["c"])
    logits, values = torch.randn(4, 3), torch.randn(4, 1)
    labels, targets = torch.tensor([0, 1, 2, 1]), torch.randn(4, 1)
    expected = torch.nn.functional.cross_entropy(logits, labels) + 0.5 * torch.nn.functional.mse_loss(values, targets)
    assert torch.equal(losses((logits, values), (labels, targets)), expected)
    assert torch.equal(losses({"c": logits, "v": values}, (labels, targets)), expected)
    shared = runtime.OutputLosses([torch.nn.CrossEntropyLoss()] * 2, [1.0, 0.3], ["main", "aux"], ["main"])
    both = torch.nn.functional.cross_entropy(logits, labels) * 1.3
    assert torch.allclose(shared((logits, logits), labels), both)  # one target for every output (deep supervision)
    assert list(shared.parts(logits, labels, training=False)) == ["main"]  # eval mode returns the main output


@pytest.mark.slow  # spawns the training script
def test_the_multitask_spec_trains_evaluates_and_predicts_each_output(tmp_path, monkeypatch, capfd):
    from compiler.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("data/iris.csv", MULTITASK):  # copies: a path through a link out of the project is refused
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes((compiler_root() / name).read_bytes())
    assert main(["train", MULTITASK, "--epochs", "30"]) == 0
    out = capfd.readouterr().out
    assert ", species_accuracy " in out and ", petal_width_loss " in out
    metrics = json.loads((tmp_path / "runs/iris_multitask/1/metrics.json").read_text())
    last = [row for row in metrics["history"] if "val_loss" in row][-1]
    assert last["val_species_accuracy"] >= 0.9 and last["val_petal_width_loss"] < 0.1  # it learned both tasks
    assert last["val_accuracy"] == last["val_species_accuracy"]
    assert main(["eval", MULTITASK]) == 0
    assert "species_accuracy" in capfd.readouterr().out
    assert main(["predict", MULTITASK, "data/iris.csv"]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[0].startswith("data/iris.csv:2: species 0, petal_width 0.")


def test_a_pair_model_refuses_prediction_of_one_input():
    with pytest.raises(ValueError, match=r"this model takes 2 \(left, right\)"):
        compiler.predict(SIAMESE, None, ["x.png"])


def compiler_root():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


MINI = """
name: mini
input: [3]
model:
  graph:
    - trunk: {Linear: {out_features: 8}}
    - a: {Linear: {out_features: 3}}
    - b: {Linear: {out_features: 1}}
      from: trunk
  output: [a, b]
data:
  dataset: {CSV: {path: data/iris.csv, target: [label, petal_width], features: [sepal_length, sepal_width, petal_length]}}
  val_split: 0.2
loss: {a: CrossEntropyLoss, b: MSELoss}
loss_weights: {a: 1.0, b: 0.5}
optimizer: {Adam: {lr: 0.01}}
train: {epochs: 1, metrics: [accuracy]}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        compiler.lower_spec(compiler.parse_spec(text, "m.yaml"))
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("loss: {a: CrossEntropyLoss, b: MSELoss}", "loss: {a: CrossEntropyLoss}", "gives no loss for output 'b'"),
        ("b: MSELoss}", "b: MSELoss, c: L1Loss}", "m.yaml:14:41: loss.c: the model has no output 'c'"),
        ("{a: 1.0, b: 0.5}", "{a: 1.0, bb: 0.5}", "loss_weights.bb: the model has no output 'bb'"),
        ("{a: 1.0, b: 0.5}", "{a: 1.0, b: -1}", "loss_weights.b must be finite and not negative"),
        ("loss: {a: CrossEntropyLoss, b: MSELoss}", "loss: CrossEntropyLoss", "`loss:` gives one loss per output"),
        ("target: [label, petal_width]", "target: [label]", "`target:` names 1 columns, but the model has 2"),
        (
            "b: MSELoss}",
            "b: CrossEntropyLoss}",
            "loss: CrossEntropyLoss needs class labels but the data has regression",
        ),
        ("  val_split: 0.2\n", "  val_split: 0.2\n  class_weights: balanced\n", "class_weights weight one loss's"),
        ("train: {epochs: 1,", "train: {epochs: 1, precision: bf16,", "trains in the tutorial's loop"),
        ("  output: [a, b]\n", "  output: [a, b]\n  eval_output: trunk\n", "eval mode returns 'trunk', which is"),
    ],
)
def test_located_errors(old, new, expected, monkeypatch):
    monkeypatch.chdir(compiler_root())
    assert old in MINI
    problems = _problems(MINI.replace(old, new))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "edit, expected",
    [
        (("  pairs: true\n", ""), "the model takes 2 inputs, but MNIST gives one a sample"),
        (
            ("input: {left: [1, 28, 28], right: [1, 28, 28]}", "input: {left: [1, 28, 28], right: [1, 14, 14]}"),
            "input 'right' is (1, 14, 14), but a pair holds two samples of shape (1, 28, 28)",
        ),
        (
            ("loss: CrossEntropyLoss ", "loss: {same: CrossEntropyLoss} "),
            "`loss:` names outputs, but the model has one",
        ),
    ],
)
def test_pair_errors(edit, expected, monkeypatch):
    monkeypatch.chdir(compiler_root())
    text = (compiler_root() / SIAMESE).read_text()
    assert edit[0] in text
    problems = _problems(text.replace(*edit))
    assert any(expected in p for p in problems), problems


def test_lean_refuses_several_outputs(monkeypatch):
    monkeypatch.chdir(compiler_root())
    with pytest.raises(SpecError, match="the lean script trains a model of one input and one output"):
        compiler.render_script(compiler.load_spec(MULTITASK), lean=True)


@pytest.mark.slow
def test_googlenet_learns_the_label_in_all_three_heads(monkeypatch):
    """One target, three outputs in training mode (fc, aux2, aux1; weights 1, 0.3, 0.3), fc alone in eval mode."""
    monkeypatch.chdir(compiler_root())
    overrides = [
        "input=[3, 64, 64]",
        "vars.num_classes=10",
        (
            "data={dataset: {FakeData: {size: 16, image_size: [3, 64, 64], num_classes: 10}}, transforms: [ToTensor], "
            "batch_size: 4, val_split: 0.25}"
        ),
        "loss={fc: CrossEntropyLoss, aux2: CrossEntropyLoss, aux1: CrossEntropyLoss}",
        "loss_weights={aux2: 0.3, aux1: 0.3}",
        "optimizer={SGD: {lr: 0.01}}",
        "train={epochs: 1, metrics: [accuracy]}",
    ]
    spec = compiler.load_spec("specs/googlenet.yaml", overrides=overrides)
    checks = compare(spec, steps=2)
    assert all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]
    training = compiler.build_training(spec, "cpu")
    metrics = runtime.evaluate_outputs(training.model, training.loss_fn, training.val_loader, "cpu", ["fc"])
    assert list(metrics) == ["loss", "fc_loss", "fc_accuracy"]  # eval mode returns fc alone
    assert metrics["loss"] == metrics["fc_loss"]
