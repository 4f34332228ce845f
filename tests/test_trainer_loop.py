"""The loop options of `train:` (issue 24) and the learning rate in metrics (issue 23): each changes training as
torch's own code would, the compiled objects and the generated script agree (docs/spec-language.md §8), and a
resumed run continues bit for bit."""

from __future__ import annotations

import copy
import csv
import math

import pytest
import torch

import compiler
from compiler.runtime import helpers as runtime
from compiler.workflow.check import _states_equal, compare, import_script

SPEC = """\
name: loop
seed: 3
input: [6]
model:
  - Linear: {{out_features: 8}}
  - ReLU
  - Linear: {{out_features: 3}}
data:
  dataset: {{Synthetic: {{size: {size}, inputs: [6], classes: 3}}}}
  batch_size: {batch}
loss: CrossEntropyLoss
optimizer: {{SGD: {{lr: {lr}, momentum: 0.9}}}}
{scheduler}
train: {{epochs: {epochs}, device: cpu, log_every: 1{train}}}
"""


def _spec(train: str = "", size: int = 40, batch: int = 8, lr: float = 0.5, epochs: int = 2, scheduler: str = ""):
    text = SPEC.format(train=train, size=size, batch=batch, lr=lr, epochs=epochs, scheduler=scheduler)
    return compiler.parse_spec(text, "loop.yaml")


def _script(spec, folder):
    return import_script(compiler.render_script(spec), "loop", str(folder))


def _run(script, objects, run):
    script.train(objects, torch.device("cpu"), run, log=lambda *a: None)
    return run


def _hand_loop(training, steps_per_update=1, clip=None):
    """The compiled objects in a loop a user would write with torch's own calls, one epoch."""
    model, loss_fn, optimizer, scheduler, loader, _ = training
    batches = list(loader)
    for start in range(0, len(batches), steps_per_update):
        group = batches[start : start + steps_per_update]
        for x, y in group:
            (loss_fn(model(x), y) / steps_per_update).backward()
        if clip:
            clip(model.parameters())
        optimizer.step()
        optimizer.zero_grad()
        if training.ema is not None:
            training.ema.update_parameters(model)
        if training.scheduler_steps == "batch":
            scheduler.step()
    return model


def _assert_checks(spec, steps=4):
    checks = compare(spec, steps=steps)
    assert all(c.ok for c in checks), [f"{c.name}: {c.detail}" for c in checks if not c.ok]


# --------------------------------------------------------------------------- gradient clipping


def test_clip_by_norm_bounds_the_total_norm_as_clip_grad_norm_does(tmp_path):
    spec = _spec(", clip_grad: {norm: 0.05}", epochs=1)
    script = _script(spec, tmp_path)
    objects = script.build_all()
    norms = []

    def total_norm(opt, args, kwargs):
        grads = [p.grad for group in opt.param_groups for p in group["params"]]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    objects[2].register_step_pre_hook(total_norm)
    _run(script, objects, script.Run(1))
    assert len(norms) == 5 and norms == pytest.approx([0.05] * 5, rel=1e-5)  # every update clipped to the bound
    hand = _hand_loop(compiler.build_training(spec, "cpu"), clip=lambda p: torch.nn.utils.clip_grad_norm_(p, 0.05))
    assert _states_equal(hand, objects[0])[0]  # the script's loop is torch's clip_grad_norm_, bit for bit
    _assert_checks(spec)


def test_clip_by_value_bounds_every_gradient_as_clip_grad_value_does(tmp_path):
    spec = _spec(", clip_grad: {value: 0.01}", epochs=1)
    script = _script(spec, tmp_path)
    objects = script.build_all()
    largest = []
    objects[2].register_step_pre_hook(
        lambda opt, a, k: largest.append(max(p.grad.abs().max().item() for p in opt.param_groups[0]["params"]))
    )
    _run(script, objects, script.Run(1))
    assert largest == pytest.approx([0.01] * 5)  # the largest gradient is at the bound: clipped, not scaled
    hand = _hand_loop(compiler.build_training(spec, "cpu"), clip=lambda p: torch.nn.utils.clip_grad_value_(p, 0.01))
    assert _states_equal(hand, objects[0])[0]
    assert "clip_grad_value_(model.parameters(), CLIP_GRAD_VALUE)" in compiler.render_script(spec)
    assert "clip_grad" not in compiler.render_script(_spec())  # only a script whose spec clips carries it


# --------------------------------------------------------------------------- gradient accumulation


def test_an_accumulated_update_equals_one_large_batch(tmp_path):
    """4 batches of 4 accumulated make the update one batch of 16 makes (the same samples: seeded shuffle)."""
    large = compiler.build_training(_spec(size=32, batch=16, epochs=1), "cpu")
    _hand_loop(large)
    spec = _spec(", accumulate: 4", size=32, batch=4, epochs=1)
    script = _script(spec, tmp_path)
    objects = script.build_all()
    run = _run(script, objects, script.Run(1))
    assert run.step == 2 and run.batch == 0  # 8 batches, 2 updates; the epoch ended
    for (name, a), b in zip(large.model.state_dict().items(), objects[0].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    assert _states_equal(_hand_loop(compiler.build_training(spec, "cpu"), 4), objects[0])[0]
    _assert_checks(spec, steps=2)


def test_the_epochs_last_partial_group_updates_with_its_loss_scaled_as_lightning_does(tmp_path):
    """5 batches with accumulate 2: updates after batches 2, 4 and 5; batch 5's loss is divided by 2 all the same."""
    spec = _spec(", accumulate: 2", size=40, batch=8, epochs=1)
    script = _script(spec, tmp_path)
    objects = script.build_all()
    run = _run(script, objects, script.Run(1))
    assert [r["step"] for r in run.history if "loss" in r] == [1, 2, 3]
    hand = _hand_loop(compiler.build_training(spec, "cpu"), 2)  # groups [1, 2], [3, 4], [5], each loss / 2
    assert _states_equal(hand, objects[0])[0]


# --------------------------------------------------------------------------- the weights' moving average


def test_ema_weights_equal_a_hand_computed_average_and_are_what_eval_uses(tmp_path):
    decay = 0.8
    spec = _spec(f", ema: {decay}", epochs=1)
    script = _script(spec, tmp_path)
    objects = script.build_all()
    seen = []
    objects[2].register_step_post_hook(lambda opt, a, k: seen.append(copy.deepcopy(objects[0].state_dict())))
    run = script.Run(1, checkpoint=str(tmp_path / "checkpoint.pt"))
    _run(script, objects, run)
    average = seen[0]  # AveragedModel's first update copies the weights
    for weights in seen[1:]:
        average = {k: decay * average[k] + (1 - decay) * weights[k] for k in weights}
    state = runtime.load_checkpoint(run.checkpoint)
    saved = runtime.ema_weights(state)
    for key in average:
        torch.testing.assert_close(saved[key], average[key], rtol=1e-6, atol=1e-7)
    assert state["ema"]["n_averaged"].item() == len(seen) == 5
    assert not torch.equal(saved["0.weight"], state["model"]["0.weight"])  # the average is not the weights
    folder = tmp_path
    result = compiler.evaluate(spec, folder / "checkpoint.pt", split="train")
    model = compiler.build_model(spec)
    model.load_state_dict(saved)
    loader = compiler.build_training(spec, "cpu").train_loader  # in the order compiler.evaluate reads it
    expected = script.evaluate(model, torch.nn.CrossEntropyLoss(), loader, torch.device("cpu"))[0]
    assert result["loss"] == expected  # evaluating a checkpoint evaluates its moving average
    hand = compiler.build_training(spec, "cpu")
    _hand_loop(hand)
    assert _states_equal(hand.ema.module, _average_module(spec, saved))[0]  # the compiled backend's EMA is the same


def _average_module(spec, weights):
    model = compiler.build_model(spec)
    model.load_state_dict(weights)
    return model


def test_validation_evaluates_the_moving_average(tmp_path):
    spec = compiler.parse_spec(
        SPEC.format(train=", ema: 0.5", size=40, batch=8, lr=0.5, epochs=1, scheduler="").replace(
            "batch_size: 8", "batch_size: 8\n  val_split: 0.25"
        ),
        "loop.yaml",
    )
    script = _script(spec, tmp_path)
    objects = script.build_all()
    run = _run(script, objects, script.Run(1, checkpoint=str(tmp_path / "c.pt")))
    model = _average_module(spec, runtime.ema_weights(runtime.load_checkpoint(run.checkpoint)))
    loss, _ = script.evaluate(model, objects[1], objects[5], torch.device("cpu"))
    assert run.history[-1]["val_loss"] == loss


# --------------------------------------------------------------------------- warm-up and the learning rate logged


def test_warmup_rates_are_linearlrs_then_the_schedule_follows_and_metrics_hold_them(tmp_path):
    scheduler = "scheduler: {CosineAnnealingLR: {T_max: 6, eta_min: 0.01}, interval: step}"
    spec = _spec(", warmup: {steps: 3, start_factor: 0.1}", lr=0.1, epochs=2, scheduler=scheduler)
    script = _script(spec, tmp_path)
    run = _run(script, script.build_all(), script.Run(2, checkpoint=str(tmp_path / "checkpoint.pt")))
    rates = [r["lr"] for r in run.history if "lr" in r]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6, eta_min=0.01)
    sequence = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[3])
    expected = []
    for _ in range(10):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sequence.step()
    assert rates == expected
    assert rates[:3] == pytest.approx([0.1 * (0.1 + 0.9 * t / 3) for t in range(3)])  # LinearLR's ramp
    assert rates[3] == pytest.approx(0.1)  # then the cosine from its start
    with open(tmp_path / "metrics.csv", newline="") as file:
        rows = [r for r in csv.DictReader(file) if r["loss"]]
    assert [float(r["lr"]) for r in rows] == rates  # metrics.csv has the rate of every update
    _assert_checks(spec)


def test_warmup_without_a_scheduler_rises_then_stays(tmp_path):
    spec = _spec(", warmup: {epochs: 2, start_factor: 0.5}", lr=0.2, epochs=3)
    training = compiler.build_training(spec, "cpu")
    assert type(training.scheduler).__name__ == "LinearLR" and training.scheduler_steps == "epoch"
    script = _script(spec, tmp_path)
    run = _run(script, script.build_all(), script.Run(3))
    by_epoch = sorted({(r["epoch"], r["lr"]) for r in run.history if "lr" in r})
    assert by_epoch == [(1, pytest.approx(0.1)), (2, pytest.approx(0.15)), (3, pytest.approx(0.2))]


def test_lean_interval_step_steps_the_scheduler_every_update(tmp_path):
    """The lean flavour reads `interval: step` too (it used to step such a scheduler once per epoch)."""
    spec = _spec(scheduler="scheduler: {StepLR: {step_size: 1, gamma: 0.5}, interval: step}", epochs=1)
    lean = import_script(compiler.render_script(spec, lean=True), "lean_loop", str(tmp_path))
    lean.CHECKPOINT = str(tmp_path / "none.pt")
    rates = []
    objects = lean.build_all()
    optimizer = objects[2]
    lean.build_all = lambda: objects
    optimizer.register_step_pre_hook(lambda opt, a, k: rates.append(opt.param_groups[0]["lr"]))
    lean.train(epochs=1)
    assert rates == [0.5 * 0.5**t for t in range(5)]


# --------------------------------------------------------------------------- stopping on a non-finite loss


def test_a_diverging_run_stops_with_one_line_and_exit_code_3(tmp_path, capsys):
    spec = _spec(", stop_on_nan: true", size=400, lr=1e30, epochs=1)
    code = _script(spec, tmp_path).main(["--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 3 and len(err.splitlines()) == 1, err
    assert err.startswith("error: the loss is ") and " at epoch 1 step " in err and "train.stop_on_nan" in err
    assert "check_finite" not in compiler.render_script(_spec())  # off unless the spec asks


def test_a_nan_loss_stops_before_anything_is_saved_so_the_checkpoint_stays_the_last_good_one(tmp_path):
    spec = _spec(", stop_on_nan: true, checkpoint: {every_steps: 2}", epochs=1)
    script = _script(spec, tmp_path)
    objects = list(script.build_all())
    base, calls = objects[1], []

    def poisoned(output, target):  # the fifth batch's loss is NaN
        calls.append(1)
        return base(output, target) * (float("nan") if len(calls) == 5 else 1.0)

    objects[1] = poisoned
    run = script.Run(1, checkpoint=str(tmp_path / "checkpoint.pt"))
    with pytest.raises(FloatingPointError) as stopped:
        _run(script, tuple(objects), run)
    message, code = script.failure(stopped.value, run)
    assert code == 3 and message.startswith("the loss is nan at epoch 1 step 5:") and "checkpoint is kept" in message
    state = runtime.load_checkpoint(run.checkpoint)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_the_fast_loop_checks_at_its_synchronisation_points(tmp_path):
    spec = _spec(", stop_on_nan: true, channels_last: true", lr=1e30, size=400, epochs=1)
    script = _script(spec, tmp_path)
    with pytest.raises(FloatingPointError, match=r"the loss is (nan|inf|-inf) at epoch 1 step \d+"):
        _run(script, script.build_all(), script.Run(1))


# --------------------------------------------------------------------------- OneCycleLR's length


def test_onecycle_too_short_for_more_epochs_is_refused_before_the_first_update(tmp_path, capsys):
    scheduler = "scheduler: {OneCycleLR: {max_lr: 0.1, epochs: 1, steps_per_epoch: 5}}"
    spec = _spec(epochs=1, scheduler=scheduler)  # valid as it stands: one epoch of 5 updates
    script = _script(spec, tmp_path)
    code = script.main(["--epochs", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "its schedule is 5 updates long" in err and "this run makes 10" in err and "total_steps: 10" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    with pytest.raises(compiler.SpecError, match="OneCycleLR's schedule is 5 updates long"):  # known size: now
        _spec(epochs=2, scheduler=scheduler)


def test_the_compiled_backend_checks_the_schedule_before_a_loop_starts(tmp_path, monkeypatch):
    """A CSV's size is known once it is read: build_training refuses the schedule then, as the script does."""
    rows = "\n".join(f"{i % 5},{i % 3},{i % 7},{i % 2},{i % 4},{i % 6},{i % 3}" for i in range(40))
    monkeypatch.chdir(tmp_path)  # a CSV path stays inside the folder specc runs in
    (tmp_path / "rows.csv").write_text("a,b,c,d,e,f,label\n" + rows + "\n")
    text = SPEC.format(train="", size=0, batch=8, lr=0.1, epochs=2, scheduler="").replace(
        "{Synthetic: {size: 0, inputs: [6], classes: 3}}", "{CSV: {path: rows.csv, target: label}}"
    )
    text += "scheduler: {OneCycleLR: {max_lr: 0.1, total_steps: 9}}\n"
    with pytest.raises(ValueError, match="its schedule is 9 updates long .* this run makes 10"):
        compiler.build_training(compiler.parse_spec(text, "loop.yaml"), "cpu")


def test_onecycle_that_fits_accumulated_updates_validates():
    scheduler = "scheduler: {OneCycleLR: {max_lr: 0.1, epochs: 2, steps_per_epoch: 3}}"
    spec = _spec(", accumulate: 2", epochs=2, scheduler=scheduler)  # 5 batches, 3 updates an epoch
    _assert_checks(spec, steps=5)


# --------------------------------------------------------------------------- all at once: §8 and resume


ALL = ", clip_grad: {norm: 0.5}, accumulate: 2, ema: 0.9, warmup: 3, stop_on_nan: true"
COSINE = "scheduler: {CosineAnnealingLR: {T_max: 8}, interval: step}"


@pytest.mark.parametrize("fast", ["", ", channels_last: true"], ids=["tutorial", "fast"])
def test_every_option_together_matches_at_every_level(fast):
    _assert_checks(_spec(ALL + fast, scheduler=COSINE), steps=5)


@pytest.mark.parametrize("stop", [2, 4], ids=["mid_epoch", "epoch_end"])
def test_a_resumed_run_with_every_option_continues_bit_for_bit(tmp_path, stop):
    spec = _spec(ALL, size=44, scheduler=COSINE)
    script = _script(spec, tmp_path)
    straight = _run(script, objects := script.build_all(), script.Run(2, checkpoint=str(tmp_path / "a.pt")))
    first = script.Run(2, max_steps=stop, checkpoint=str(tmp_path / "b.pt"))
    _run(script, script.build_all(), first)
    resumed = script.Run(2, checkpoint=str(tmp_path / "b.pt"))
    again = script.build_all()
    resumed.resume(runtime.load_checkpoint(str(tmp_path / "b.pt")), again[0], again[2], again[3])
    _run(script, again, resumed)
    assert _states_equal(objects[0], again[0])[0]
    a, b = (runtime.load_checkpoint(str(tmp_path / n)) for n in ("a.pt", "b.pt"))
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert [r.get("loss") for r in straight.history] == [r.get("loss") for r in resumed.history]
    assert [r.get("lr") for r in straight.history] == [r.get("lr") for r in resumed.history]
    losses = [r["loss"] for r in straight.history if "loss" in r]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)  # 2 epochs of 6 batches, 3 updates each
