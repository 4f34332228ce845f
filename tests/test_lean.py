"""The lean flavour (`specc generate --lean`, `render_script(spec, lean=True)`): checked in, ruff-clean, runnable,
resumable, and the same model, initialisation, data and first-steps losses as the compiled objects
(docs/spec-language.md §8) for every shipped spec. Kept cheap: batch 8 where the spec takes minibatches, 2 steps."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SPECS

import compiler
from compiler.workflow.check import _first_batches, _hyper, _same_type, _states_equal, import_script

IDS = [p.stem for p in SPECS]
PROGRAMS = {p: compiler.lower_spec(compiler.load_spec(p)) for p in SPECS}
# a model of several inputs or outputs trains in the full script only (the lean one refuses it: below)
SEVERAL = [
    p
    for p, program in PROGRAMS.items()
    if program.training and program.training.outputs or program.model.several_inputs
]
TRAINING = [p for p, program in PROGRAMS.items() if program.training is not None and p not in SEVERAL]
STEPS = 2


@pytest.mark.parametrize(
    "path", [p for p in SPECS if p not in SEVERAL], ids=[p.stem for p in SPECS if p not in SEVERAL]
)
def test_lean_script_is_checked_in_and_current(path):
    """Training specs have a lean script in generated/lean/; a model-only spec's lean script is its model file
    (generated/<name>.py), so it is not checked in twice."""
    spec = compiler.load_spec(path)
    lean = compiler.render_script(spec, lean=True)
    if path in TRAINING:
        assert lean == (ROOT / "generated" / "lean" / f"{path.stem}.py").read_text()
    else:
        assert lean == compiler.render_script(spec)
        assert not (ROOT / "generated" / "lean" / f"{path.stem}.py").exists()


@pytest.mark.parametrize("path", SEVERAL, ids=[p.stem for p in SEVERAL])
def test_a_model_of_several_inputs_or_outputs_has_no_lean_script(path):
    with pytest.raises(compiler.SpecError, match="the lean script trains a model of one input and one output"):
        compiler.render_script(compiler.load_spec(path), lean=True)
    assert not (ROOT / "generated" / "lean" / f"{path.stem}.py").exists()


def test_lean_tutorial_cnn_is_at_most_120_lines_and_names_what_it_leaves_out():
    assert len((ROOT / "generated" / "lean" / "mnist_cnn.py").read_text().splitlines()) <= 120
    fast = (ROOT / "generated" / "lean" / "mnist_cnn_fast.py").read_text()
    assert "Left to the full flavour (specc generate without --lean): the speed options" in fast
    for absent in ("torchrun", "distribute", "new_run_folder", "predict", "identity", "argparse"):
        assert absent not in (ROOT / "generated" / "lean" / "mnist_cnn.py").read_text(), absent


def _ruff() -> str | None:
    beside = Path(sys.executable).parent / "ruff"
    return str(beside) if beside.exists() else shutil.which("ruff")


@pytest.mark.skipif(_ruff() is None, reason="ruff is in the dev extra")
def test_lean_scripts_are_ruff_clean():
    """generated/ is outside the project's ruff run: check the lean scripts on their own, at the project's width."""
    folder = str(ROOT / "generated" / "lean")
    for command in (["check", "--isolated"], ["format", "--check", "--isolated"]):
        proc = subprocess.run(
            [_ruff(), *command, "--line-length", "120", folder], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def _small(path: Path):
    """The spec with batch 8 (cheap steps); batch and online mode keep their own batch."""
    spec = compiler.load_spec(path)
    if spec.train.mode == "minibatch":
        spec = compiler.load_spec(path, overrides=["data.batch_size=8"])
    return spec


def _plain_steps(training, steps: int, schedule: str | None) -> list[float]:
    """The compiled objects trained by the tutorial's loop in fp32 (what the lean loop is), epoch after epoch, with
    the spec's loop options (accumulation, clipping: `training.loop`) applied by torch's own calls."""
    model, loss_fn, optimizer, scheduler, loader, _ = training
    model.to(memory_format=torch.contiguous_format)  # `speed: auto` lays convolutions out NHWC on a CPU
    model.train()
    losses, group, every = [], [], training.loop.accumulate
    while len(losses) < steps:
        for batch, (x, y) in enumerate(loader, 1):
            group.append(loss_fn(model(x), y))
            (group[-1] / every).backward()
            if batch % every and batch < len(loader):
                continue
            loss = torch.stack(group).mean()
            group.clear()
            if training.loop.clip == "norm":
                torch.nn.utils.clip_grad_norm_(model.parameters(), training.loop.clip_at, training.loop.norm_type)
            optimizer.step()
            optimizer.zero_grad()
            if schedule == "batch":  # a schedule that steps every batch (OneCycleLR)
                scheduler.step()
            losses.append(loss.item())
            if len(losses) == steps:
                return losses
        if schedule == "epoch":
            scheduler.step()
    return losses


@pytest.mark.parametrize("path", TRAINING, ids=[p.stem for p in TRAINING])
def test_lean_matches_the_compiled_objects(path, tmp_path):
    spec = _small(path)
    lean = import_script(compiler.render_script(spec, lean=True), f"lean_{spec.name}", str(tmp_path))
    lean.DEVICE, lean.CHECKPOINT = "cpu", str(tmp_path / "none.pt")
    torch.manual_seed(spec.seed)
    compiled = compiler.build_model(spec)
    torch.manual_seed(spec.seed)
    model = lean.build_model()
    assert str(compiled) == str(model)  # §8.1
    assert _states_equal(compiled, model)[0]  # §8.2, at initialisation
    a, b = compiler.build_training(spec, "cpu"), lean.build_all()
    assert _states_equal(a.model, b[0])[0]  # built in the same order: the same draws
    for p, q in zip((a.loss_fn, a.optimizer, a.scheduler), b[1:4]):  # §8.4
        assert _same_type(p, q) and _hyper(p) == _hyper(q), (p, q)
    assert _first_batches(a.train_loader, b[4]).ok  # §8.5
    schedule = compiler.lower_spec(spec).training.scheduler_steps  # `interval:` and a warm-up included
    assert schedule != "loss"  # (no shipped spec steps on the validation loss: the reference loop has none)
    expected = _plain_steps(compiler.build_training(spec, "cpu"), STEPS, schedule)
    trained, losses = lean.train(max_steps=STEPS)  # §8.6
    assert losses == expected
    reference = compiler.build_training(spec, "cpu")
    _plain_steps(reference, STEPS, schedule)
    ok, detail = _states_equal(reference.model, trained)
    assert ok, detail


def test_lean_resume_continues_as_a_straight_run(tmp_path):
    spec = compiler.load_spec(ROOT / "specs" / "lstm_classifier.yaml", overrides=["data.batch_size=128"])
    lean = import_script(compiler.render_script(spec, lean=True), "lean_resume", str(tmp_path))
    lean.DEVICE, lean.LOG_EVERY = "cpu", 10**6
    lean.CHECKPOINT = str(tmp_path / "straight.pt")
    straight, straight_losses = lean.train(epochs=2)
    lean.CHECKPOINT = str(tmp_path / "resumed.pt")
    _, first = lean.train(epochs=1)
    resumed, second = lean.train(epochs=2)  # starts from resumed.pt, after epoch 1
    assert first + second == straight_losses
    assert _states_equal(straight, resumed)[0]
    state = torch.load(lean.CHECKPOINT, weights_only=True)  # a plain torch.save: plain torch.load reads it
    assert state["epoch"] == 2 and set(state) >= {"model", "optimizer"}


def test_lean_script_runs_as_it_stands_and_resumes(tmp_path):
    script = tmp_path / "mlp_adam.py"
    shutil.copy(ROOT / "generated" / "lean" / "mlp_adam.py", script)
    run = lambda: subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    first = run()
    assert first.returncode == 0, first.stderr
    assert "epoch 20 step 20: loss" in first.stdout and (tmp_path / "mlp_adam.pt").is_file()
    again = run()
    assert again.returncode == 0 and "resumed from mlp_adam.pt after epoch 20" in again.stdout
    assert "step" not in again.stdout.replace("resumed", "")  # nothing left to train


def test_specc_generate_lean_writes_generated_lean(tmp_path, monkeypatch, capsys):
    from compiler.cli.commands import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "generated").mkdir()
    assert main(["generate", str(ROOT / "specs" / "mlp_adam.yaml"), "--lean"]) == 0
    assert "wrote generated/lean/mlp_adam.py (" in capsys.readouterr().out
    assert "(--lean)" in (tmp_path / "generated" / "lean" / "mlp_adam.py").read_text()
