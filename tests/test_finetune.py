"""Fine-tuning (issue 24): `init: - {from: PATH, strict: ...}` and `train.freeze:`, in both backends.

Loaded weights equal the source (a specc checkpoint, a plain state dict, a torchvision-style weights file), strictly
or for the matching tensors with a report of the rest; files specc will not read are refused with a reason; frozen
parameters stay as they were through training steps and are not given to the optimizer; a frozen module's
BatchNorm keeps its running statistics (Keras's rule); compiled and generated agree (docs/spec-language.md §8).
"""

from __future__ import annotations

import io
import itertools
import os
import zipfile

import pytest
import torch
from conftest import ROOT

import compiler
from compiler.errors import SpecError
from compiler.runtime import helpers as runtime
from compiler.workflow.check import compare, import_script

SPEC = """
name: finetune_probe
input: [4]
model:
  feat:
    - Linear: {{out_features: 8}}
    - BatchNorm1d
    - ReLU
  head: {{Linear: {{out_features: 3}}}}
{init}
data:
  dataset: {{Synthetic: {{size: 64, inputs: [4], classes: 3}}}}
  batch_size: 16
loss: CrossEntropyLoss
optimizer: {{SGD: {{lr: 0.1, momentum: 0.9}}}}
train:
  epochs: 1
  device: cpu
{train}
"""


def _spec(init: str = "", train: str = "", seed: int = 0) -> compiler.Spec:
    text = SPEC.format(init=init, train=train).replace("name: finetune_probe", f"name: finetune_probe\nseed: {seed}")
    return compiler.parse_spec(text, "finetune.yaml")


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Weights paths are relative to the folder specc runs in: run in a fresh one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _built(spec: compiler.Spec) -> dict:
    """The model's state dict, built under its seed (as both builders build it)."""
    torch.manual_seed(spec.seed)
    return compiler.build_model(spec).state_dict()


def _source_weights() -> dict:
    """Weights unlike a fresh model's: the model of another seed."""
    return _built(_spec(seed=7))


def _same(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_strict_load_from_a_specc_checkpoint_equals_the_source(here):
    source = _source_weights()
    runtime.save_checkpoint("run/checkpoint.pt", {"model": source, "epoch": 1})
    spec = _spec("init:\n  - {from: run/checkpoint.pt}")
    model = _built(spec)
    assert model.keys() == source.keys() and _same(model, source, source)
    assert all(c.ok for c in compare(spec)), [c for c in compare(spec) if not c.ok]  # the script loads the same


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "ddp", "legacy"])
def test_plain_and_torchvision_style_files_load(here, wrap):
    source = _source_weights()
    saved = {
        "plain": source,
        "state_dict": {"state_dict": source, "epoch": 3},
        "model": {"model": source},
        "ddp": {f"module.{k}": v for k, v in source.items()},
        "legacy": source,
    }[wrap]
    torch.save(saved, "w.pth", _use_new_zipfile_serialization=wrap != "legacy")
    model = _built(_spec("init:\n  - {from: w.pth}"))
    assert _same(model, source, source)


def test_partial_load_takes_what_fits_and_reports_the_rest(here, capsys):
    source = _source_weights()
    partial = {k: v for k, v in source.items() if k.startswith("feat.")}
    partial["head.weight"] = torch.zeros(5, 8)  # another shape: kept as initialised
    partial["extra.weight"] = torch.ones(2)  # not in the model: ignored
    torch.save(partial, "part.pth")
    spec = _spec("init:\n  - {from: part.pth, strict: false}")
    model = _built(spec)
    fresh = _built(_spec())  # the same seed, nothing loaded
    assert _same(model, source, [k for k in source if k.startswith("feat.")])
    assert _same(model, fresh, ["head.weight", "head.bias"])
    report = capsys.readouterr().out
    assert "loaded 7 of the model's 9 tensors from part.pth" in report
    assert "missing from the file (kept as initialised): head.bias" in report
    assert "not in the model (ignored): extra.weight" in report
    assert "of another shape (kept as initialised): head.weight (5, 8) in the file, (3, 8) here" in report
    assert all(c.ok for c in compare(spec))


def test_strict_load_refuses_a_file_that_does_not_fit(here):
    source = {k: v for k, v in _source_weights().items() if k != "head.bias"}
    torch.save(source, "part.pth")
    with pytest.raises(ValueError, match=r"part.pth does not fit the model: missing from the file .*head.bias.*strict"):
        compiler.build_model(_spec("init:\n  - {from: part.pth}"))


def test_the_script_says_why_in_one_line(here):
    torch.save({"head.weight": torch.zeros(3, 8)}, "part.pth")
    torch.save(_source_weights(), "w.pth")
    spec = _spec("init:\n  - {from: w.pth}")
    (here / "probe.py").write_text(compiler.render_script(spec))
    torch.save({"head.weight": torch.zeros(3, 8)}, "w.pth")  # the file changed after validation
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "probe.py"], capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "w.pth does not fit the model: missing from the file" in proc.stderr


def test_unsafe_files_are_refused(here):
    with zipfile.ZipFile("bomb.pth", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.pkl", b"\0" * 1_000_000)
    with pytest.raises(ValueError, match="decompression bomb"):
        runtime.read_weights("bomb.pth")
    torch.save({"weight": torch.ones(1), "code": io.BytesIO}, "code.pth")  # a class: weights_only refuses it
    with pytest.raises(ValueError, match="not a weights file"):
        runtime.read_weights("code.pth")
    torch.save([1, 2], "list.pth")
    with pytest.raises(ValueError, match="not a state dict of tensors"):
        runtime.read_weights("list.pth")


def test_validation_refuses_a_fifo_and_a_link_outside(here, tmp_path_factory):
    os.mkfifo("pipe.pth")
    with pytest.raises(SpecError, match=r"init.0.from: weights file 'pipe.pth' is a FIFO"):
        compiler.load_spec(_write(here, "init:\n  - {from: pipe.pth}"))
    outside = tmp_path_factory.mktemp("elsewhere") / "w.pth"
    torch.save(_source_weights(), outside)
    os.symlink(outside, "link.pth")
    with pytest.raises(SpecError, match="leaves the folder specc runs in"):
        compiler.load_spec(_write(here, "init:\n  - {from: link.pth}"))


def _write(folder, init: str):
    path = folder / "spec.yaml"
    path.write_text(SPEC.format(init=init, train=""))
    return path


def test_init_rules_run_before_the_loaded_weights(here):
    partial = {k: v for k, v in _source_weights().items() if k.startswith("head.")}
    torch.save(partial, "head.pth")
    spec = _spec("init:\n  - {type: Linear, weight: zeros_}\n  - {from: head.pth, strict: false}")
    model = _built(spec)
    assert _same(model, partial, partial)  # the file wins where it has the tensor
    assert torch.count_nonzero(model["feat.0.weight"]) == 0  # the rule where it does not
    assert all(c.ok for c in compare(spec))


# --------------------------------------------------------------------------- freeze


def _train_steps(training, steps: int = 4) -> None:
    model, loss_fn, optimizer = training.model, training.loss_fn, training.optimizer
    model.train()
    for x, y in itertools.islice(itertools.cycle(training.train_loader), steps):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_frozen_weights_stay_and_the_rest_train(here):
    training = compiler.build_training(_spec(train="  freeze: [feat]"), "cpu")
    before = {k: v.clone() for k, v in training.model.state_dict().items()}
    in_optimizer = {id(p) for group in training.optimizer.param_groups for p in group["params"]}
    frozen = [n for n, p in training.model.named_parameters() if not p.requires_grad]
    assert frozen == ["feat.0.weight", "feat.0.bias", "feat.1.weight", "feat.1.bias"]
    assert not {id(p) for n, p in training.model.named_parameters() if n in frozen} & in_optimizer
    _train_steps(training)
    after = training.model.state_dict()
    feat = [k for k in before if k.startswith("feat.") and k != "feat.1.num_batches_tracked"]
    assert _same(after, before, feat)  # weights and the BatchNorm's running statistics (inference mode)
    assert not torch.equal(after["head.weight"], before["head.weight"])


def test_a_frozen_parameter_leaves_its_module_batchnorm_training(here):
    training = compiler.build_training(_spec(train="  freeze: ['feat.0.weight']"), "cpu")
    before = {k: v.clone() for k, v in training.model.state_dict().items()}
    _train_steps(training)
    after = training.model.state_dict()
    assert torch.equal(after["feat.0.weight"], before["feat.0.weight"])
    assert not torch.equal(after["feat.1.weight"], before["feat.1.weight"])
    assert not torch.equal(after["feat.1.running_mean"], before["feat.1.running_mean"])


def test_freeze_in_the_script_trains_as_the_compiled_objects(here):
    spec = _spec(train="  freeze: [feat]")
    assert all(c.ok for c in compare(spec)), [c for c in compare(spec) if not c.ok]


def test_the_shipped_finetune_spec_starts_from_the_pretrained_convolutions(monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = compiler.load_spec(ROOT / "specs" / "mnist_cnn_finetune.yaml")
    pretrained = torch.load(ROOT / "data" / "pretrained" / "mnist_cnn_small_conv.pth", weights_only=True)
    model = _built(spec)
    assert set(pretrained) == {"conv1.0.weight", "conv1.0.bias", "conv1.2.weight", "conv1.2.bias"}
    assert _same(model, pretrained, pretrained)
    training = compiler.build_training(spec, "cpu")
    trainable = [n for n, p in training.model.named_parameters() if p.requires_grad]
    assert trainable == ["dense.0.weight", "dense.0.bias", "dense.3.weight", "dense.3.bias"]


def test_a_model_only_script_loads_the_file_too(here):
    source = _source_weights()
    torch.save(source, "w.pth")
    text = SPEC.split("data:")[0].format(init="init:\n  - {from: w.pth}")
    spec = compiler.parse_spec(text, "model_only.yaml")
    script = compiler.render_script(spec)
    assert "def load_weights" in script and "def train" not in script
    module = import_script(script, "model_only_probe", str(here))
    model = module.build_model().state_dict()
    assert _same(model, source, source)
