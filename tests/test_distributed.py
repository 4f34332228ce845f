"""Training under torchrun (DDP, gloo on the CPU) equals one process, resumes exactly, and fails cleanly.

One torchrun job of 2 processes runs a driver that calls several generated scripts' ``main`` in turn (one process
group, started once: a torchrun start costs seconds on this 2-core machine); the one-process runs happen here.
Tolerance, stated: weights ``torch.allclose(rtol=1e-4, atol=1e-4)`` with a mean absolute difference below 1e-8,
losses and validation metrics ``rtol=1e-5``. 2 processes average two half-batch gradients (DDP's all-reduce), 1 process
takes the mean over the whole batch: the same numbers summed in another order, equal to float32 rounding, not
bitwise. Adam divides by the root of its second moment, so a weight whose gradient is ~0 can move differently by up
to lr per step: measured, 1 of the tutorial CNN's 25.7M weights differs by 1.2e-5 after 4 steps, every other by
at most 2e-7. Dropout is off where 1 and 2 processes are compared (each
rank draws its own masks); a 2-process run with dropout resumes bitwise in 2 processes.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import compiler
from compiler.runtime import helpers as runtime
from compiler.runtime.helpers import load_checkpoint
from compiler.workflow.check import import_script

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "compiler" / "workflow" / "launch.py"

MLP = """
name: ddp_mlp
input: [20]
model:
  - Linear: [20, 32]
  - ReLU
  - Dropout: {dropout}
  - Linear: [32, 4]
data:
  dataset: {{Synthetic: {{size: 320, inputs: [20], classes: 4}}}}
  batch_size: {batch}
  val_split: 0.2
loss: CrossEntropyLoss
optimizer: {{Adam: {{lr: 0.01}}}}
train: {{epochs: 3, log_every: 2, metrics: [accuracy], device: cpu, checkpoint: {{every_steps: 3}}}}
"""

DRIVER = """
import importlib.util, os, sys, time
import torch.distributed as dist

def script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(sys.argv[1], name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

out = sys.argv[1]
runs = [
    ("mlp", ["--out", out + "/mlp_two"]),  # 12 steps: 3 epochs of 4 batches, with validation
    ("mlp", ["--out", out + "/mlp_part", "--max-steps", "6"]),  # mid-epoch 2; resumed in 1 process by the test
    ("dropout", ["--out", out + "/dropout_two"]),
    ("dropout", ["--out", out + "/dropout_resumed", "--max-steps", "5"]),
    ("dropout", ["--out", out + "/dropout_resumed", "--resume", out + "/dropout_resumed"]),
    ("cnn", ["--out", out + "/cnn_two", "--max-steps", "4"]),
    ("on_device", ["--out", out + "/on_device_two"]),  # data_on_device: a DeviceLoader split across the ranks
    ("odd_batch", ["--out", out + "/odd_batch"]),
    ("odd_whole", ["--out", out + "/odd_whole"]),  # mode: batch, 257 training samples
]
codes = [script(name).main(argv) for name, argv in runs]


def fetch():  # a download: the leader's takes a second; the follower must find its file
    marker = os.path.join(out, "fetched")
    if os.environ["LOCAL_RANK"] == "0":
        time.sleep(1.0)
        open(marker, "w").close()
    return os.path.exists(marker)


found = [None, None]
dist.all_gather_object(found, script("cnn").leader_first(fetch))
if dist.get_rank() == 0:
    print("codes", codes)
    print("fetched", found)
if dist.is_initialized():  # a group left to interpreter exit can abort in gloo threads (seen once: signal 6)
    dist.destroy_process_group()
"""


def _render(folder: Path, name: str, text: str, *overrides: str) -> None:
    spec = compiler.parse_spec(text, f"{name}.yaml", overrides=list(overrides)) if text else None
    if spec is None:
        spec = compiler.load_spec(ROOT / "specs" / "mnist_cnn.yaml", overrides=list(overrides))
    (folder / f"{name}.py").write_text(compiler.render_script(spec))


def _import(folder: Path, name: str):
    return import_script((folder / f"{name}.py").read_text(), f"{name}_{folder.name}", str(folder))


def _result(folder: Path):
    state = load_checkpoint(str(folder / "checkpoint.pt"))
    return state, [(r["step"], r.get("loss"), r.get("val_loss"), r.get("val_accuracy")) for r in state["history"]]


def _assert_close(one: Path, two: Path) -> None:
    (a, history_a), (b, history_b) = _result(one), _result(two)
    assert (a["epoch"], a["batch"], a["step"]) == (b["epoch"], b["batch"], b["step"])
    assert list(a["model"]) == list(b["model"])
    for key in a["model"]:
        assert torch.allclose(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-4), key
        assert (a["model"][key] - b["model"][key]).abs().mean() < 1e-8, key
    assert [h[0] for h in history_a] == [h[0] for h in history_b]
    values = [(x, y) for ha, hb in zip(history_a, history_b) for x, y in zip(ha[1:], hb[1:]) if x is not None]
    assert values and all(y is not None and abs(x - y) <= 1e-5 * abs(x) + 1e-7 for x, y in values), values


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """The driver's runs, 2 processes under torchrun (one job)."""
    folder = tmp_path_factory.mktemp("ddp")
    _render(folder, "mlp", MLP.format(dropout=0.0, batch=64))
    _render(folder, "dropout", MLP.format(dropout=0.3, batch=64))
    _render(folder, "odd_batch", MLP.format(dropout=0.0, batch=63))
    _render(
        folder, "odd_whole", MLP.format(dropout=0.0, batch=64).replace("size: 320", "size: 321"), "train.mode=batch"
    )
    _render(folder, "cnn", "", "model.dense.2.Dropout.p=0.0")
    _render(folder, "on_device", MLP.format(dropout=0.0, batch=64), "train.data_on_device=true")
    (folder / "driver.py").write_text(DRIVER)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(LAUNCH), "--standalone", "--nproc-per-node=2", str(folder / "driver.py"), str(folder)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder, proc, time.monotonic() - started


def test_a_download_runs_on_the_first_process_first(two_process_runs):
    """`download: true` under torchrun: LOCAL_RANK 0 builds the datasets while the others wait (leader_first), so
    each machine downloads once and no process reads a half-written file."""
    _, proc, _ = two_process_runs
    assert "fetched [True, True]" in proc.stdout, proc.stdout
    assert "leader_first(build_datasets)" in (ROOT / "generated" / "mnist_cnn.py").read_text()


def test_two_processes_train_the_mlp_as_one_does(two_process_runs):
    folder, proc, _ = two_process_runs
    assert _import(folder, "mlp").main(["--out", str(folder / "mlp_one")]) == 0
    _assert_close(folder / "mlp_one", folder / "mlp_two")
    # logged once, by rank 0; the metrics files come from rank 0 alone
    assert proc.stdout.count(f"into {folder / 'mlp_two'}\n") == 1
    assert (folder / "mlp_two" / "checkpoint.pt").exists() and not list(folder.glob("runs"))


def test_two_processes_train_the_tutorial_cnn_as_one_does(two_process_runs):
    folder, _, _ = two_process_runs
    assert _import(folder, "cnn").main(["--out", str(folder / "cnn_one"), "--max-steps", "4"]) == 0
    _assert_close(folder / "cnn_one", folder / "cnn_two")


def test_two_processes_with_the_data_on_the_device_train_as_one_does(two_process_runs):
    folder, _, _ = two_process_runs
    assert _import(folder, "on_device").main(["--out", str(folder / "on_device_one")]) == 0
    _assert_close(folder / "on_device_one", folder / "on_device_two")


def test_build_training_in_a_process_group_gives_the_scripts_objects(tmp_path):
    """compiler.build_training inside an initialised process group (1 process here) = the script's build_all."""
    spec = compiler.parse_spec(MLP.format(dropout=0.0, batch=64), "mlp.yaml")
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        training = compiler.build_training(spec, "cpu")
        script = import_script(compiler.render_script(spec), "ddp_objects", str(tmp_path))
        objects = script.build_all(torch.device("cpu"))
        for compiled, generated in zip(training, objects):
            assert type(compiled) is type(generated)
        assert isinstance(training.model, torch.nn.parallel.DistributedDataParallel)
        assert isinstance(training.train_loader.batch_sampler, runtime.RankBatches)
        assert all(
            torch.equal(a, b) for a, b in zip(training.model.state_dict().values(), objects[0].state_dict().values())
        )
        for (xa, ya), (xb, yb) in zip(training.train_loader, objects[4]):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        bn = compiler.parse_spec(MLP.format(dropout=0.0, batch=64), "mlp.yaml", overrides=["train.sync_batchnorm=true"])
        with pytest.raises(ValueError, match="sync_batchnorm needs GPUs"):
            compiler.build_training(bn, "cpu")
    finally:
        torch.distributed.destroy_process_group()


def test_a_two_process_checkpoint_resumes_in_two_processes_bitwise(two_process_runs):
    folder, _, _ = two_process_runs
    (straight, history_a), (resumed, history_b) = _result(folder / "dropout_two"), _result(folder / "dropout_resumed")
    assert len(straight["ranks"]) == 2 and history_a == history_b
    assert all(torch.equal(straight["model"][k], resumed["model"][k]) for k in straight["model"])


def test_a_two_process_checkpoint_resumes_in_one_process(two_process_runs):
    folder, _, _ = two_process_runs
    part = folder / "mlp_part"
    assert load_checkpoint(str(part / "checkpoint.pt"))["step"] == 6
    shutil.copytree(part, folder / "mlp_continued")
    mlp = _import(folder, "mlp")
    assert mlp.main(["--out", str(folder / "mlp_continued"), "--resume", str(folder / "mlp_continued")]) == 0
    if not (folder / "mlp_one").exists():
        assert mlp.main(["--out", str(folder / "mlp_one")]) == 0
    _assert_close(folder / "mlp_one", folder / "mlp_continued")


def test_a_batch_that_does_not_divide_is_one_error_from_rank_0(two_process_runs):
    _, proc, _ = two_process_runs
    assert "codes [0, 0, 0, 0, 0, 0, 0, 1, 1]" in proc.stdout
    assert proc.stderr.count("batch_size 63 does not divide among 2 processes") == 1
    # mode: batch: the one batch is the training set, which is what must divide
    assert proc.stderr.count("the training set (mode: batch) 257 does not divide among 2 processes") == 1
    assert "Traceback" not in proc.stderr


def test_specc_train_refuses_nproc_that_does_not_divide_the_batch(tmp_path, capsys):
    from compiler.cli.commands import main

    spec = tmp_path / "mlp.yaml"
    spec.write_text(MLP.format(dropout=0.0, batch=64))
    assert main(["train", str(spec), "--nproc", "3", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "batch_size 64 (the global batch, split across the processes) does not divide among 3 processes" in err
    assert "--nproc 2 or 4" in err


def test_a_missing_rendezvous_is_one_line(tmp_path):
    _render(tmp_path, "mlp", MLP.format(dropout=0.0, batch=64))
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "mlp.py"), "--out", str(tmp_path / "run")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"},
    )
    assert proc.returncode == 1
    # refused before any wait: the variables torchrun sets together are named, with both ways out
    assert proc.stderr.startswith("error: RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 in the environment without MASTER_ADDR")
    assert "unset them" in proc.stderr and "torchrun" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _rank_pid(token: str, rank: int) -> int | None:
    """The process of ``rank`` among those started with ``SPECC_TEST_RUN=token`` (Linux: read from /proc)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SPECC_TEST_RUN={token}".encode() in environ and f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


def test_specc_train_nproc_trains_in_one_run_folder(tmp_path):
    spec = tmp_path / "mlp.yaml"
    spec.write_text(MLP.format(dropout=0.0, batch=64))
    proc = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "train", str(spec), "--nproc", "2", "--max-steps", "2"]
        + ["--out", str(tmp_path / "run")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "--nproc-per-node=2" in proc.stdout and proc.stdout.count("training 804 parameters") == 1
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"checkpoint.pt", "metrics.json", "loss.png"}
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank's process in /proc")
def test_killing_a_rank_stops_the_run_quickly_with_one_clear_line(tmp_path):
    spec = tmp_path / "mlp.yaml"
    spec.write_text(MLP.format(dropout=0.0, batch=64))
    launcher = subprocess.Popen(
        [sys.executable, "-m", "compiler.cli", "train", str(spec), "--nproc", "2", "--epochs", "100000"]
        + ["--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SPECC_TEST_RUN": str(tmp_path)},
    )
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.05)
    pid = _rank_pid(str(tmp_path), 1)
    assert pid is not None, launcher.communicate(timeout=60)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = launcher.communicate(timeout=60)
    assert time.monotonic() - killed < 30
    assert launcher.returncode == 3
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert any(line.startswith("error: process 1 of the run was killed by signal 9") for line in lines), stderr
    assert len(lines) <= 2, stderr  # rank 0's line (it lost the other process) and the launcher's
    assert load_checkpoint(str(checkpoint))["step"] >= 3
