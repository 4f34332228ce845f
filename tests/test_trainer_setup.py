"""The run options (issue 24) in both backends: early stopping, the best checkpoint, optimizer parameter groups.

Each is held to what torch's (or Keras's) own code does: early stopping stops at the epoch Keras's EarlyStopping
would on a constructed metric sequence, best.pt holds the best epoch's weights, the optimizer's param_groups
hold the parameters and settings a hand-written grouping gives; the compiled objects and the generated scripts
(full and lean) stay equal at the docs/spec-language.md §8 levels, and resume stays bitwise.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import compiler
from compiler.pipeline import chosen_checkpoint
from compiler.runtime import helpers as runtime
from compiler.workflow.check import _states_equal, compare, import_script

SPEC = """
name: run_options
input: [4]
model:
  feat:
    - Linear: {{out_features: 8}}
    - BatchNorm1d
    - ReLU
  head: {{Linear: {{out_features: 3}}}}
data:
  dataset: {{Synthetic: {{size: 64, inputs: [4], classes: 3}}}}
  batch_size: 16
  val_split: 0.25
loss: CrossEntropyLoss
optimizer: {{AdamW: {{lr: 0.01, weight_decay: 0.1}}}}
train:
  epochs: {epochs}
  log_every: 1000
  metrics: [accuracy]
  device: cpu
{options}
"""


def _spec(options: str = "", epochs: int = 6) -> compiler.Spec:
    return compiler.parse_spec(SPEC.format(options=options, epochs=epochs), "run_options.yaml")


def _script(spec: compiler.Spec, folder, lean: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{'lean_' if lean else ''}{spec.name}_{abs(hash(str(folder))) % 10**8}"
    return import_script(compiler.render_script(spec, lean=lean), name, str(folder))


# --------------------------------------------------------------------------- early stopping


def _keras_stop_epoch(values, patience, min_delta=0.0, mode="min"):
    """The epoch (from 1) after which Keras's EarlyStopping stops, written out from its documented rule."""
    best, wait = None, 0
    for epoch, value in enumerate(values, 1):
        better = best is None or (value < best - min_delta if mode == "min" else value > best + min_delta)
        best, wait = (value, 0) if better else (best, wait + 1)
        if wait >= patience:
            return epoch
    return None


@pytest.mark.parametrize(
    ("values", "patience", "min_delta", "mode"),
    [
        ([1.0, 0.9, 0.95, 0.91, 0.92, 0.5], 3, 0.0, "min"),
        ([1.0, 0.9, 0.8, 0.7], 1, 0.0, "min"),
        ([1.0, 0.95, 0.93, 0.92, 0.5], 2, 0.1, "min"),
        ([0.5, 0.6, 0.6, 0.55, 0.7], 2, 0.0, "max"),
        ([0.5, 0.5, 0.5], 2, 0.0, "max"),
    ],
)
def test_early_stopped_stops_where_keras_does(values, patience, min_delta, mode):
    history = []
    stopped = None
    for epoch, value in enumerate(values, 1):
        history += [{"step": epoch, "epoch": epoch, "loss": 9.0}, {"epoch": epoch, "step": epoch, "val_loss": value}]
        if stopped is None and runtime.early_stopped(history, "val_loss", patience, min_delta, mode):
            stopped = epoch
    assert stopped == _keras_stop_epoch(values, patience, min_delta, mode)


def _constant_metrics(script, values):
    """Make the script's evaluate return ``values`` epoch after epoch (loss and accuracy)."""
    sequence = iter(values)
    script.evaluate = lambda *args, **kwargs: next(sequence)


VAL = [(1.0, 0.3), (0.8, 0.5), (0.9, 0.7), (0.85, 0.4), (0.95, 0.6), (0.7, 0.8)]


def test_the_full_script_stops_at_the_right_epoch_and_saves_there(tmp_path):
    spec = _spec("  early_stop: {monitor: val_loss, patience: 3}")
    script = _script(spec, tmp_path)
    _constant_metrics(script, VAL)
    run = script.Run(script.EPOCHS, checkpoint=str(tmp_path / "run" / "checkpoint.pt"))
    logged = []
    script.train(script.build_all("cpu"), torch.device("cpu"), run, log=logged.append)
    expected = _keras_stop_epoch([v for v, _ in VAL], 3)
    assert expected == 5 and run.epoch == expected
    assert "early stop after epoch 5: val_loss has not improved for 3 epochs" in logged
    assert runtime.load_checkpoint(run.checkpoint)["epoch"] == 5  # saved where it stopped


def test_the_lean_script_stops_at_the_same_epoch(tmp_path):
    spec = _spec("  early_stop: {monitor: val_accuracy, patience: 2}")
    lean = _script(spec, tmp_path, lean=True)
    lean.DEVICE, lean.CHECKPOINT = "cpu", str(tmp_path / "lean.pt")
    _constant_metrics(lean, VAL)
    lean.train()
    expected = _keras_stop_epoch([a for _, a in VAL], 2, mode="max")
    assert expected == 5 and torch.load(lean.CHECKPOINT, weights_only=True)["epoch"] == expected


def test_a_resumed_run_that_stopped_early_stays_stopped(tmp_path):
    spec = _spec("  early_stop: {monitor: val_loss, patience: 1}")
    script = _script(spec, tmp_path)
    _constant_metrics(script, [(1.0, 0.5), (1.0, 0.5)])
    run = script.Run(script.EPOCHS, checkpoint=str(tmp_path / "checkpoint.pt"))
    script.train(script.build_all("cpu"), torch.device("cpu"), run, log=lambda *a: None)
    assert run.epoch == 2
    objects = script.build_all("cpu")
    again = script.Run(script.EPOCHS)
    again.resume(runtime.load_checkpoint(run.checkpoint), objects[0], objects[2], objects[3])
    script.train(objects, torch.device("cpu"), again, log=lambda *a: None)  # evaluate would raise: none left
    assert again.epoch == 2


# --------------------------------------------------------------------------- the best checkpoint


def test_best_pt_holds_the_best_epochs_weights(tmp_path):
    spec = _spec("  checkpoint: {best: val_accuracy}", epochs=6)
    script = _script(spec, tmp_path)
    _constant_metrics(script, VAL)  # best accuracy at epoch 6, then at 3 among the first 5
    folder = tmp_path / "long"
    run = script.Run(5, checkpoint=str(folder / "checkpoint.pt"))
    script.train(script.build_all("cpu"), torch.device("cpu"), run, log=lambda *a: None)
    best = runtime.load_checkpoint(str(folder / "best.pt"))
    assert best["epoch"] == 3  # the epoch of the highest val_accuracy (0.7)
    short = _script(spec, tmp_path / "short")  # a straight run of 3 epochs: its last weights are epoch 3's
    _constant_metrics(short, VAL)
    run3 = short.Run(3, checkpoint=str(tmp_path / "short_run" / "checkpoint.pt"))
    short.train(short.build_all("cpu"), torch.device("cpu"), run3, log=lambda *a: None)
    last3 = runtime.load_checkpoint(run3.checkpoint)["model"]
    assert best["model"].keys() == last3.keys()
    assert all(torch.equal(best["model"][k], last3[k]) for k in last3)
    final = runtime.load_checkpoint(run.checkpoint)["model"]
    assert not all(torch.equal(final[k], last3[k]) for k in last3)  # the last checkpoint moved on


def test_eval_and_predict_pick_best_pt_by_default(tmp_path):
    spec = _spec("  checkpoint: {best: val_loss}")
    for name in ("checkpoint.pt", "best.pt"):
        runtime.save_checkpoint(str(tmp_path / "runs" / "1" / name), {"model": {}})
    assert chosen_checkpoint(spec, tmp_path / "runs") == str(tmp_path / "runs" / "1" / "best.pt")
    assert chosen_checkpoint(spec, tmp_path / "runs" / "1") == str(tmp_path / "runs" / "1" / "best.pt")
    named = str(tmp_path / "runs" / "1" / "checkpoint.pt")
    assert chosen_checkpoint(spec, named) == named  # a file is taken as named
    assert chosen_checkpoint(_spec(), tmp_path / "runs" / "1") == named  # a spec that keeps no best


def test_export_of_a_run_folder_takes_best_pt_as_eval_does(tmp_path):
    from compiler.interop.exporting import _model

    spec = _spec("  checkpoint: {best: val_loss}")
    states = {}
    for seed, name in enumerate(("checkpoint.pt", "best.pt")):
        torch.manual_seed(seed)
        states[name] = compiler.build_model(spec).state_dict()
        runtime.save_checkpoint(str(tmp_path / "runs" / "1" / name), {"model": states[name]})
    for given in (tmp_path / "runs", tmp_path / "runs" / "1"):
        model, _ = _model(spec, given)
        assert all(torch.equal(v, states["best.pt"][k]) for k, v in model.state_dict().items())
    model, _ = _model(spec, tmp_path / "runs" / "1" / "checkpoint.pt")  # a file is taken as named
    assert all(torch.equal(v, states["checkpoint.pt"][k]) for k, v in model.state_dict().items())


def test_the_lean_script_keeps_its_best_state(tmp_path):
    spec = _spec("  checkpoint: {best: val_loss}", epochs=4)
    lean = _script(spec, tmp_path, lean=True)
    lean.DEVICE, lean.CHECKPOINT, lean.BEST_CHECKPOINT = "cpu", str(tmp_path / "l.pt"), str(tmp_path / "lb.pt")
    _constant_metrics(lean, VAL)
    lean.train()
    assert torch.load(lean.BEST_CHECKPOINT, weights_only=True)["epoch"] == 2  # lowest val_loss of the first 4


# --------------------------------------------------------------------------- parameter groups


GROUPS = """  no_decay: [norm, bias]
  param_groups:
    - {params: head, lr: 0.001}"""


def test_no_decay_and_per_pattern_lr_group_the_parameters_as_by_hand():
    training = compiler.build_training(_spec(GROUPS), "cpu")
    model = training.model
    named = dict(model.named_parameters())
    by_hand = [  # the usual hand-written grouping: norms and biases without decay; the head at its own rate
        {"params": ["feat.0.weight"]},
        {"params": ["feat.0.bias", "feat.1.weight", "feat.1.bias"], "weight_decay": 0.0},
        {"params": ["head.weight"], "lr": 0.001},
        {"params": ["head.bias"], "weight_decay": 0.0, "lr": 0.001},
    ]
    groups = training.optimizer.param_groups
    assert len(groups) == len(by_hand)
    ids = {id(p): n for n, p in named.items()}
    for group, expected in zip(groups, by_hand):
        assert [ids[id(p)] for p in group["params"]] == expected["params"]
        assert group["weight_decay"] == expected.get("weight_decay", 0.1)
        assert group["lr"] == expected.get("lr", 0.01)


def test_parameter_groups_train_as_torchs_own_grouping():
    spec = _spec(GROUPS)
    training = compiler.build_training(spec, "cpu")
    torch.manual_seed(spec.seed)
    reference = compiler.build_training(_spec(), "cpu")
    named = dict(reference.model.named_parameters())
    groups = [
        {"params": [named["feat.0.weight"]]},
        {"params": [named[n] for n in ("feat.0.bias", "feat.1.weight", "feat.1.bias")], "weight_decay": 0.0},
        {"params": [named["head.weight"]], "lr": 0.001},
        {"params": [named["head.bias"]], "weight_decay": 0.0, "lr": 0.001},
    ]
    optimizer = torch.optim.AdamW(groups, lr=0.01, weight_decay=0.1)
    for model, opt, loader in (
        (training.model, training.optimizer, training.train_loader),
        (reference.model, optimizer, reference.train_loader),
    ):
        for x, y in itertools.islice(loader, 3):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert _states_equal(training.model, reference.model)[0]


@pytest.mark.parametrize(
    "options",
    [
        GROUPS,
        "  early_stop: {monitor: val_loss, patience: 2}\n  checkpoint: {best: val_accuracy}",
        "  freeze: [feat]",
        GROUPS + "\n  freeze: ['feat.0']",
    ],
    ids=["groups", "stop_and_best", "freeze", "groups_and_freeze"],
)
def test_compiled_and_generated_stay_equal(options, tmp_path):
    spec = _spec(options)
    failed = [c for c in compare(spec) if not c.ok]
    assert not failed, failed
    lean = _script(spec, tmp_path, lean=True)
    lean.DEVICE, lean.CHECKPOINT = "cpu", str(tmp_path / "none.pt")
    a, b = compiler.build_training(spec, "cpu"), lean.build_all()
    assert [{k: v for k, v in g.items() if k != "params"} for g in a.optimizer.param_groups] == [
        {k: v for k, v in g.items() if k != "params"} for g in b[2].param_groups
    ]
    assert [len(g["params"]) for g in a.optimizer.param_groups] == [len(g["params"]) for g in b[2].param_groups]


def test_a_spec_without_run_options_renders_as_before():
    text = compiler.render_script(_spec())
    for name in ("EARLY_STOP", "BEST", "FREEZE", "PARAM_GROUPS", "param_groups(", "early_stopped", "save_best"):
        assert name not in text
    assert "optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)" in text


# --------------------------------------------------------------------------- resume


def test_resume_with_run_options_is_bitwise(tmp_path):
    options = GROUPS + "\n  freeze: ['feat.0']\n  early_stop: {monitor: val_loss, patience: 5}\n"
    spec = _spec(options + "  checkpoint: {best: val_loss}", epochs=3)
    script = _script(spec, tmp_path)
    straight = script.Run(3, checkpoint=str(tmp_path / "a" / "checkpoint.pt"))
    script.train(script.build_all("cpu"), torch.device("cpu"), straight, log=lambda *a: None)
    first = script.Run(1, checkpoint=str(tmp_path / "b" / "checkpoint.pt"))
    script.train(script.build_all("cpu"), torch.device("cpu"), first, log=lambda *a: None)
    objects = script.build_all("cpu")
    second = script.Run(3, checkpoint=first.checkpoint)
    second.resume(runtime.load_checkpoint(first.checkpoint), objects[0], objects[2], objects[3])
    script.train(objects, torch.device("cpu"), second, log=lambda *a: None)
    assert [r.get("loss") for r in straight.history] == [r.get("loss") for r in second.history]
    a, b = (runtime.load_checkpoint(r.checkpoint)["model"] for r in (straight, second))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_specc_train_refuses_to_resume_a_run_that_stopped_early():
    from compiler.workflow.runs import RunRefused, _stopped_early

    spec = _spec("  early_stop: {monitor: val_loss, patience: 2}")
    history = [{"epoch": e, "step": e, "val_loss": v} for e, v in enumerate([1.0, 1.1, 1.2], 1)]
    with pytest.raises(RunRefused, match=r"stopped early after epoch 3 .*--set train.early_stop.patience=7"):
        _stopped_early(spec, {"history": history, "epoch": 3}, "runs/x/1/checkpoint.pt")
    _stopped_early(spec, {"history": history[:2], "epoch": 2}, "runs/x/1/checkpoint.pt")  # still going: no refusal
