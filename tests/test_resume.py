"""Exact resume on the CPU: N steps straight == k steps, stop or SIGKILL, resume in a new process, N-k steps.

Bitwise in weights and losses, mid-epoch and at an epoch boundary, with 0 and 2 loader workers.
The spec shuffles, holds out a validation split, flips images at random and uses dropout, so
every random number generator a run touches has to be saved and restored exactly.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import compiler
from compiler.runtime.helpers import load_checkpoint

SPEC = """
name: resume_probe
input: [1, 12, 12]
model:
  - Conv2d: {{out_channels: 4, kernel_size: 3}}
  - ReLU
  - Flatten
  - Dropout: 0.3
  - Linear: {{out_features: 4}}
data:
  dataset: {{FakeData: {{size: 128, image_size: [1, 12, 12], num_classes: 4}}}}
  transforms: [RandomHorizontalFlip, ToTensor]
  val_split: 0.25
  batch_size: 16
  num_workers: {workers}
loss: CrossEntropyLoss
optimizer: {{Adam: {{lr: 0.01}}}}
scheduler: {{StepLR: {{step_size: 1, gamma: 0.9}}}}
train:
  epochs: {epochs}
  log_every: 1000
  metrics: [accuracy]
  device: cpu
  checkpoint: {{dir: unused, every: 1, every_steps: {every_steps}}}
"""


def _script(tmp_path, workers, epochs=3, every_steps=1000):
    spec = compiler.parse_spec(SPEC.format(workers=workers, epochs=epochs, every_steps=every_steps), "resume.yaml")
    path = tmp_path / f"resume_{workers}_{epochs}_{every_steps}.py"
    path.write_text(compiler.render_script(spec))
    return path


def _run(script, out, *args):
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(out), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _result(out):
    losses = [r.get("loss", r.get("val_loss")) for r in json.loads((out / "metrics.json").read_text())["history"]]
    return losses, load_checkpoint(str(out / "checkpoint.pt"))["model"]


def _assert_same(a, b):
    losses_a, weights_a = a
    losses_b, weights_b = b
    assert losses_a == losses_b
    assert list(weights_a) == list(weights_b)
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_and_at_epoch_boundary_is_bitwise_exact(tmp_path, workers):
    script = _script(tmp_path, workers)  # 6 batches an epoch, 18 steps in all
    _run(script, tmp_path / "straight")
    straight = _result(tmp_path / "straight")
    assert len([v for v in straight[0] if v is not None]) == 18 + 3

    _run(script, tmp_path / "mid", "--max-steps", "8")  # stops in epoch 2, after its 2nd batch
    assert load_checkpoint(str(tmp_path / "mid" / "checkpoint.pt"))["batch"] == 2
    _run(script, tmp_path / "mid", "--resume", str(tmp_path / "mid" / "checkpoint.pt"))
    _assert_same(straight, _result(tmp_path / "mid"))

    _run(script, tmp_path / "edge", "--epochs", "2")  # the epoch-end checkpoint
    _run(script, tmp_path / "edge", "--resume", str(tmp_path / "edge" / "checkpoint.pt"))
    _assert_same(straight, _result(tmp_path / "edge"))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_sigkill_is_bitwise_exact(tmp_path, workers):
    """Checkpoint every step; SIGKILL the run at a random moment; resume from whatever is on disk."""
    script = _script(tmp_path, workers, epochs=12, every_steps=1)
    _run(script, tmp_path / "straight")
    straight = _result(tmp_path / "straight")
    out = tmp_path / "killed"
    rng = random.Random(workers)
    proc = subprocess.Popen(
        [sys.executable, str(script), "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = out / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.05, 0.6))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(str(checkpoint))
    assert 0 < state["step"] < 12 * 6, "the kill should land mid-run"
    _run(script, out, "--resume", str(checkpoint))
    _assert_same(straight, _result(out))
