"""``specc sweep``: grids of ``--set`` values and Optuna searches, each trial a real ``specc train`` run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from compiler.cli import main
from compiler.workflow.sweep import (
    SweepError,
    Trial,
    grid,
    metric_values,
    parse_axis,
    ranked,
    results_table,
    split_values,
)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the iris spec and its table: trials write their run folders here."""
    (tmp_path / "specs").mkdir()
    shutil.copy(ROOT / "specs" / "iris_mlp.yaml", tmp_path / "specs")
    shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("MNIST*"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_values_split_on_top_level_commas_only():
    assert split_values("1e-3,3e-4") == ["1e-3", "3e-4"]
    assert split_values("[1,2],[3,4]") == ["[1,2]", "[3,4]"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]
    with pytest.raises(SweepError, match="empty value"):
        split_values("1,,2")


def test_ranges_are_for_search_and_values_with_colons_stay_values():
    assert parse_axis("train.device=cpu,cuda:0", ranges=True).values == ["cpu", "cuda:0"]
    lr = parse_axis("optimizer.Adam.lr=1e-4:1e-1:log", ranges=True)
    assert (lr.low, lr.high, lr.log, lr.integer) == (1e-4, 1e-1, True, False)
    assert parse_axis("vars.hidden=4:64", ranges=True).integer
    with pytest.raises(SweepError, match="LOW < HIGH"):
        parse_axis("a=2:1", ranges=True)
    with pytest.raises(SweepError, match="LOW > 0"):
        parse_axis("a=0:1:log", ranges=True)
    with pytest.raises(SweepError, match="KEY=VALUE"):
        parse_axis("novalue", ranges=False)


def test_the_grid_is_every_combination_first_axis_slowest_and_bounded():
    axes = [parse_axis("a=1,2", False), parse_axis("b=x,y,z", False)]
    assert grid(axes) == [["a=1", f"b={b}"] for b in "xyz"] + [["a=2", f"b={b}"] for b in "xyz"]
    with pytest.raises(SweepError, match="2,000 trials"):
        grid([parse_axis("a=" + ",".join(map(str, range(1000))), False), parse_axis("b=1,2", False)])


def test_metric_values_are_per_epoch_and_trials_rank_finished_first():
    history = [
        {"step": 1, "epoch": 1, "loss": 2.0},
        {"step": 2, "epoch": 1, "loss": 1.5},
        {"epoch": 1, "step": 2, "val_loss": 1.4, "val_accuracy": 0.5},
        {"step": 3, "epoch": 2, "loss": 1.0},
        {"epoch": 2, "step": 3, "val_loss": 0.9, "val_accuracy": None},
    ]
    assert metric_values(history, "loss") == [1.5, 1.0]
    assert metric_values(history, "val_accuracy") == [0.5]  # None is no value
    trials = [Trial(1, ["a=1"], "f1", "ok", 0.7), Trial(2, ["a=2"], "f2", "pruned", 0.9, pruned_at=2)]
    trials += [Trial(3, ["a=3"], "f3", "ok", 0.8), Trial(4, ["a=4"], "f4", "failed", None)]
    assert [t.number for t in ranked(trials, "val_accuracy")] == [3, 1, 2, 4]
    assert [t.number for t in ranked(trials, "val_loss")] == [1, 3, 2, 4]
    rows = list(csv.reader(results_table(trials, [parse_axis("a=1,2", False)], "val_accuracy").splitlines()))
    assert rows[0] == ["trial", "a", "val_accuracy", "status", "folder"] and rows[1][:4] == ["3", "3", "0.8", "ok"]


def test_every_trial_is_validated_before_any_trains(project, capsys):
    assert main(["sweep", "specs/iris_mlp.yaml", "--set", "vars.hidden=4,-3", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "trial 2 (vars.hidden=-3) is invalid; nothing was trained" in err
    assert "specs/iris_mlp.yaml:" in err and "negative dimension" in err
    assert not (project / "runs").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "vars.hidden=4"], "nothing to sweep"),
        (["--set", "optimizer.SGD.lr=0.1:1"], "is sampled by --search N"),
    ],
)
def test_bad_sweeps_are_one_line(project, capsys, argv, message):
    assert main(["sweep", "specs/iris_mlp.yaml", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_grid_of_three_learning_rates_trains_three_runs_and_ranks_them(project, capsys):
    argv = ["sweep", "specs/iris_mlp.yaml", "--set", "optimizer.SGD.lr=0.3,0.05,0.0001", "--epochs", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    folder = project / "runs" / "iris_mlp-sweeps" / "1"
    rows = list(csv.DictReader((folder / "results.csv").read_text().splitlines()))
    assert sorted(r["optimizer.SGD.lr"] for r in rows) == ["0.0001", "0.05", "0.3"]
    accuracies = [float(r["val_accuracy"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True) and all(r["status"] == "ok" for r in rows)
    for row in rows:  # each trial is a whole run folder, its metric the one its own metrics.json holds
        history = json.loads((Path(row["folder"]) / "metrics.json").read_text())["history"]
        assert metric_values(history, "val_accuracy")[-1] == pytest.approx(float(row["val_accuracy"]), rel=1e-5)
        assert (Path(row["folder"]) / "checkpoint.pt").is_file()
    assert rows[-1]["optimizer.SGD.lr"] == "0.0001"  # 3 epochs at 1e-4 learn nearly nothing
    assert (folder / "results.png").stat().st_size > 5000 and "results.csv" in out


# The shipped digits with a small MLP: a slow learning rate lags the others at every epoch, so the median rule
# prunes it; epochs of about half a second at batch 4, so a trial told to stop is still running when the signal
# comes (an iris epoch would end first).
_DIGITS = """
name: digits_mlp
input: [1, 28, 28]
model: [Flatten, {Linear: {out_features: 32}}, ReLU, {Linear: {out_features: 10}}]
data: {dataset: {MNIST: {root: data}}, transforms: [ToTensor], batch_size: 4}
loss: CrossEntropyLoss
optimizer: {SGD: {lr: 0.01}}
train: {epochs: 4, metrics: [accuracy], log_every: 100000, device: cpu}
"""


@pytest.mark.slow
def test_an_optuna_search_samples_prunes_and_records_six_trials(project, capsys):
    pytest.importorskip("optuna")
    (project / "specs" / "digits_mlp.yaml").write_text(_DIGITS)
    shutil.copytree(ROOT / "data" / "MNIST", project / "data" / "MNIST", ignore=shutil.ignore_patterns("processed"))
    argv = ["sweep", "specs/digits_mlp.yaml", "--search", "6", "--set", "optimizer.SGD.lr=0.0001:0.3:log"]
    assert main([*argv, "--set", "optimizer.SGD.momentum=0.0,0.9", "--metric", "val_loss"]) == 0
    rows = list(csv.DictReader((project / "runs/digits_mlp-sweeps/1/results.csv").read_text().splitlines()))
    assert len(rows) == 6 and {r["optimizer.SGD.momentum"] for r in rows} <= {"0.0", "0.9"}
    assert all(1e-4 <= float(r["optimizer.SGD.lr"]) <= 0.3 for r in rows)
    for row in rows:
        epochs = metric_values(json.loads((Path(row["folder"]) / "metrics.json").read_text())["history"], "val_loss")
        assert float(row["val_loss"]) == pytest.approx(epochs[-1], rel=1e-5)
        # a finished trial ran its 4 epochs; a pruned one was judged at an earlier epoch and stopped after it
        if row["status"] == "ok":
            assert len(epochs) == 4
        else:
            judged = int(row["status"].removeprefix("pruned at epoch "))
            assert 1 <= judged < 4 and judged <= len(epochs), (row, epochs)
    assert [r["status"] for r in rows].count("ok") >= 2  # the median pruner starts after two trials
    assert any(r["status"].startswith("pruned") for r in rows)  # the same seeds give the same trials on every machine


def test_search_without_optuna_says_how_to_install_it(project, capsys, monkeypatch):
    import builtins

    real = builtins.__import__
    monkeypatch.setattr(
        builtins,
        "__import__",
        lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name)) if name == "optuna" else real(name, *a, **k),
    )
    assert main(["sweep", "specs/iris_mlp.yaml", "--search", "2", "--set", "optimizer.SGD.lr=0.01:1"]) == 1
    assert "pip install optuna" in capsys.readouterr().err
