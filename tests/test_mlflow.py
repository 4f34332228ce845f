"""`train.log: [mlflow]`: the expanded spec (flattened) as parameters, each epoch's numbers as metrics and the run
folder's files as artifacts in a local MLflow store; without mlflow, one line at the start of training."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import compiler
from compiler.render.script import tracking_params
from compiler.runtime import helpers as runtime
from compiler.workflow.check import import_script

SPEC = """\
name: tracked
vars: {width: 6}
input: [3]
model: [{Linear: {out_features: $width}}, ReLU, {Linear: {out_features: 2}}]
data:
  dataset: {Synthetic: {size: 64, inputs: [3], classes: 2}}
  batch_size: 16
  val_split: 0.25
loss: CrossEntropyLoss
optimizer: {Adam: {lr: 0.01}}
train: {epochs: 2, metrics: [accuracy], log: [csv, mlflow], log_every: 100}
"""


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tracked.yaml").write_text(SPEC)
    return compiler.load_spec(tmp_path / "tracked.yaml")


def test_the_parameters_are_the_expanded_spec_flattened(spec):
    params = tracking_params(spec)
    assert params["model.0.Linear.out_features"] == 6  # $width written out
    assert params["optimizer.Adam.lr"] == 0.01 and params["train.epochs"] == 2
    assert params["data.dataset.Synthetic.inputs.0"] == 3 and params["train.log.1"] == "mlflow"
    assert params["train.precision"] is None  # train's defaults filled in, as `specc expand` writes them


def test_without_mlflow_training_stops_at_once_in_one_line(spec, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(
        ValueError, match=r"^train.log names mlflow, which is not installed: pip install 'specc\[mlflow\]'"
    ):
        runtime.require_mlflow()
    script = import_script(compiler.render_script(spec), "tracked", str(tmp_path))
    assert script.main(["--device", "cpu", "--out", "run"]) == 1
    err = capsys.readouterr().err
    assert (
        err == "error: train.log names mlflow, which is not installed: pip install 'specc[mlflow]' (or mlflow-skinny)\n"
    )
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # refused before training, not after it


def test_validation_and_scripts_without_mlflow_do_not_touch_it(spec):
    code = "import sys, compiler; compiler.load_spec('tracked.yaml'); print('mlflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
    plain = compiler.load_spec("tracked.yaml", overrides=["train.log=[csv]"])
    assert "mlflow" not in compiler.render_script(plain).lower()
    lean = compiler.render_script(spec, lean=True)
    assert "Left to the full flavour" in lean and "MLflow tracking" in lean


def test_a_run_is_recorded_in_the_local_store(spec, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its local file store behind this switch
    script = import_script(compiler.render_script(spec), "tracked", str(tmp_path))
    assert script.main(["--device", "cpu", "--out", "run"]) == 0
    client = mlflow.MlflowClient(str(tmp_path / "run" / "mlruns"))
    experiment = client.get_experiment_by_name("tracked")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["model.0.Linear.out_features"] == "6" and run.data.params["optimizer.Adam.lr"] == "0.01"
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    epochs = [r for r in history if "val_loss" in r]
    logged = client.get_metric_history(run.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in logged] == [(r["epoch"], pytest.approx(r["val_loss"])) for r in epochs]
    losses = [r["loss"] for r in history if r.get("epoch") == 1 and "loss" in r]
    first = client.get_metric_history(run.info.run_id, "train_loss")[0]
    assert first.step == 1 and first.value == pytest.approx(sum(losses) / len(losses))
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoint.pt", "metrics.json", "metrics.csv", "tracked.py"} <= artifacts


def test_mlflow_uri_names_another_store(spec, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "store"
    spec = compiler.load_spec("tracked.yaml", overrides=[f"train.mlflow_uri={store}"])
    script = import_script(compiler.render_script(spec), "tracked", str(tmp_path))
    assert script.main(["--device", "cpu", "--out", "run", "--epochs", "1"]) == 0
    assert store.is_dir() and not (tmp_path / "run" / "mlruns").exists()
