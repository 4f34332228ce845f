"""`scheduler: {..., interval: step}`: an epoch scheduler stepped after every update (issue 23)."""

from __future__ import annotations

import math
import tempfile

import pytest
import torch

import compiler
from compiler.workflow.check import compare, import_script

SPEC = """\
name: interval
seed: 3
input: [6]
model:
  - Linear: {{out_features: 8}}
  - ReLU
  - Linear: {{out_features: 3}}
data:
  dataset: {{Synthetic: {{size: 40, inputs: [6], classes: 3}}}}
  batch_size: 8
loss: CrossEntropyLoss
optimizer: {{SGD: {{lr: 0.1}}}}
scheduler: {scheduler}
train: {{epochs: 1, device: cpu}}
"""
COSINE = "{CosineAnnealingLR: {T_max: 4, eta_min: 0.01}, interval: step}"


def _spec(scheduler: str) -> compiler.Spec:
    return compiler.parse_spec(SPEC.format(scheduler=scheduler), "interval.yaml")


def _hand_written_loop(spec: compiler.Spec) -> list[float]:
    """The compiled objects in a plain loop that steps the scheduler when ``Training.scheduler_steps`` says."""
    training = compiler.build_training(spec, "cpu")
    rates = []
    for x, y in training.train_loader:
        rates.append(training.optimizer.param_groups[0]["lr"])
        training.optimizer.zero_grad()
        training.loss_fn(training.model(x), y).backward()
        training.optimizer.step()
        if training.scheduler_steps == "batch":
            training.scheduler.step()
    if training.scheduler_steps == "epoch":
        training.scheduler.step()
    return rates


def _generated_script(spec: compiler.Spec) -> list[float]:
    """The generated script's own objects and training loop: the rate of every update it makes."""
    with tempfile.TemporaryDirectory() as folder:
        script = import_script(compiler.render_script(spec), spec.name, folder)
        objects = script.build_all()
        optimizer = objects[2]
        rates: list[float] = []
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: rates.append(opt.param_groups[0]["lr"]))
        script.train(objects, torch.device("cpu"), script.Run(script.EPOCHS), log=lambda *a: None)
    return rates


def test_a_one_epoch_cosine_run_changes_the_rate_every_update_in_both_backends() -> None:
    spec = _spec(COSINE)
    cosine = [0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)]
    built, generated = _hand_written_loop(spec), _generated_script(spec)
    assert built == generated
    assert built == pytest.approx(cosine, rel=1e-12)
    assert len(set(built)) == 5  # a new rate for every update of the one epoch
    checks = compare(spec, steps=5)
    assert all(c.ok for c in checks), [f"{c.name}: {c.detail}" for c in checks if not c.ok]


def test_without_interval_an_epoch_scheduler_keeps_the_rate_through_the_epoch() -> None:
    spec = _spec("{CosineAnnealingLR: {T_max: 4, eta_min: 0.01}}")
    assert _hand_written_loop(spec) == _generated_script(spec) == [0.1] * 5
    assert compiler.build_training(spec, "cpu").scheduler_steps == "epoch"


@pytest.mark.parametrize(
    ("scheduler", "where", "wanted"),
    [
        ("{ReduceLROnPlateau, interval: step}", (13, 32), "ReduceLROnPlateau steps on the validation loss"),
        (
            "{OneCycleLR: {max_lr: 0.1, total_steps: 5}, interval: epoch}",
            (13, 56),
            "OneCycleLR steps after every update",
        ),
        ("{StepLR: {step_size: 2}, interval: batch}", (13, 37), "interval must be step or epoch"),
        ("{StepLR: {step_size: 2}, intervall: step}", (13, 37), "unexpected key 'intervall' beside"),
    ],
)
def test_intervals_a_scheduler_cannot_take_are_refused(scheduler: str, where: tuple, wanted: str) -> None:
    with pytest.raises(compiler.SpecError) as info:
        _spec(scheduler)
    (problem,) = info.value.problems
    assert (problem.line, problem.col) == where and wanted in problem.message, str(problem)
    assert problem.fix


@pytest.mark.parametrize(
    "scheduler", ["{CyclicLR: {base_lr: 0.01, max_lr: 0.1, step_size_up: 2}, interval: step}", "ReduceLROnPlateau"]
)
def test_a_scheduler_s_own_interval_may_be_written_or_left_out(scheduler: str) -> None:
    expected = "loss" if scheduler == "ReduceLROnPlateau" else "batch"
    assert compiler.lower_spec(_spec(scheduler)).training.scheduler_steps == expected
