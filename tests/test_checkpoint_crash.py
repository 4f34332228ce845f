"""Checkpoints under crashes, full disks, read-only folders, truncation and bit flips.

``compiler.runtime.helpers.save_checkpoint`` writes a temporary file, fsyncs it, renames it over the
checkpoint and fsyncs the folder; ``load_checkpoint`` checks the SHA-256 trailer in the zip's closing comment before unpickling
with ``weights_only=True``. These tests check the promise that follows: whenever a run dies, the
checkpoint on disk is a complete earlier state, and a damaged file is refused, never misread.

The SIGKILL trials: a helper process imports torch once and forks a worker per trial; the worker
saves checkpoints to one path in a loop (2-8 MB of tensors, a new counter value each time) until the
test kills it with SIGKILL after a seeded random delay. The checkpoint must then load and hold one
complete state. ``SPECC_CRASH_TRIALS`` sets the number of trials (default 40); to run many and print
the figures::

    python tests/test_checkpoint_crash.py --trials 500 --seed 0
"""

from __future__ import annotations

import argparse
import errno
import inspect
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from compiler.runtime import helpers as runtime

ROOT = Path(__file__).resolve().parent.parent
TRIALS = int(os.environ.get("SPECC_CRASH_TRIALS", "40"))


def make_state(counter: int) -> dict:
    """The state of save number ``counter``: every part derives from the counter, so a state that mixes
    two saves (or holds a torn tensor) is detected. 0.5M-2M float32 values: 2-8 MB."""
    n = 512 * 1024 + (counter * 7919) % (1536 * 1024)
    return {
        "counter": counter,
        "weights": torch.full((n,), float(counter)),
        "steps": torch.arange(1000, dtype=torch.int64) + counter,
        "meta": {"n": n, "name": "save-" + str(counter), "lr": 1.0 / (counter + 1)},
    }


# Imports torch once, then forks one saving worker per "go" command; "wait" reaps a worker and reports
# how it ended. Forking from here keeps a trial at milliseconds instead of a 2 s torch import.
HELPER = (
    textwrap.dedent(
        """
    import json, os, sys, time
    import torch
    from compiler.runtime.helpers import save_checkpoint
    """
    )
    + inspect.getsource(make_state)
    + textwrap.dedent(
        """
    def work(path, counter):
        deadline = time.monotonic() + 20  # never outlive a test that died
        while time.monotonic() < deadline:
            save_checkpoint(path, make_state(counter))
            counter += 1

    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "go":
            pid = os.fork()
            if pid == 0:
                try:
                    work(command["path"], command["counter"])
                finally:
                    os._exit(0)
            print(json.dumps({"pid": pid}), flush=True)
        elif command["op"] == "wait":
            _, status = os.waitpid(command["pid"], 0)
            print(json.dumps({"status": status}), flush=True)
    """
    )
)


def check_state(state: dict) -> int:
    """Assert ``state`` is exactly ``make_state(counter)`` for its own counter; return the counter."""
    counter = state["counter"]
    expected = make_state(counter)
    assert set(state) == set(expected)
    assert state["meta"] == expected["meta"]
    assert state["weights"].shape == expected["weights"].shape
    assert torch.equal(state["weights"], expected["weights"])
    assert torch.equal(state["steps"], expected["steps"])
    return counter


@dataclass
class KillReport:
    trials: int = 0
    unloadable: int = 0  # load_checkpoint raised
    inconsistent: int = 0  # it loaded, but not as one complete save (or the counter went back)
    not_killed: int = 0  # the worker had already exited when the signal came (the trial proves nothing)
    saves: int = 0  # completed saves observed across all trials (counter progress)
    trials_with_progress: int = 0  # trials in which at least one new save completed
    leftover_tmp_files: int = 0  # .tmp-* files left by kills (at the end; harmless, never read)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.trials} SIGKILL trials in {self.seconds:.1f} s: unloadable {self.unloadable}, "
            f"inconsistent {self.inconsistent}, not killed {self.not_killed}; {self.saves} saves completed, "
            f"{self.trials_with_progress} trials advanced the checkpoint; "
            f"{self.leftover_tmp_files} leftover .tmp-* files"
        )


def run_kill_trials(folder: Path, trials: int, seed: int = 0, max_delay: float = 0.15) -> KillReport:
    """Kill a saving worker ``trials`` times at seeded random moments; check the checkpoint after each."""
    rng = random.Random(seed)
    path = folder / "checkpoint.pt"
    runtime.save_checkpoint(str(path), make_state(0))
    report = KillReport()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )

    def ask(command: dict) -> dict:
        assert helper.stdin is not None and helper.stdout is not None
        helper.stdin.write(json.dumps(command) + "\n")
        helper.stdin.flush()
        line = helper.stdout.readline()
        if not line:
            raise RuntimeError("the checkpoint helper process died")
        return json.loads(line)

    began = time.perf_counter()
    try:
        assert helper.stdout is not None
        assert "ready" in json.loads(helper.stdout.readline() or "{}")
        last = 0
        for trial in range(trials):
            pid = ask({"op": "go", "path": str(path), "counter": last + 1})["pid"]
            time.sleep(rng.uniform(0.0, max_delay))
            os.kill(pid, signal.SIGKILL)
            status = ask({"op": "wait", "pid": pid})["status"]
            report.trials += 1
            if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                report.not_killed += 1
            try:
                state = runtime.load_checkpoint(str(path))
            except Exception as err:
                report.unloadable += 1
                report.failures.append(f"trial {trial}: unloadable: {type(err).__name__}: {err}")
                runtime.save_checkpoint(str(path), make_state(last))  # start the next trial from a good file
                continue
            try:
                counter = check_state(state)
                assert counter >= last, f"the counter went back from {last} to {counter}"
            except AssertionError as err:
                report.inconsistent += 1
                report.failures.append(f"trial {trial}: inconsistent state: {err}")
                runtime.save_checkpoint(str(path), make_state(last))
                continue
            report.saves += counter - last
            report.trials_with_progress += counter > last
            last = counter
    finally:
        if helper.stdin is not None:
            helper.stdin.close()
        try:
            helper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        if helper.stdout is not None:
            helper.stdout.close()
    report.seconds = time.perf_counter() - began
    leftovers = sorted(p.name for p in folder.iterdir() if p.name != path.name)
    assert all(name.startswith(".tmp-") and name.endswith(".pt") for name in leftovers), leftovers
    report.leftover_tmp_files = len(leftovers)
    return report


# --------------------------------------------------------------------------- SIGKILL


def test_sigkill_during_saves_always_leaves_a_loadable_complete_checkpoint(tmp_path):
    report = run_kill_trials(tmp_path, TRIALS, seed=0)
    print(report.summary())
    assert report.trials == TRIALS
    assert report.unloadable == 0 and report.inconsistent == 0, report.failures
    assert report.not_killed == 0
    assert report.trials_with_progress > 0  # the worker really was saving when the kills came
    # leftover temporary files are never read: the checkpoint still loads, and one more save works beside them
    runtime.save_checkpoint(str(tmp_path / "checkpoint.pt"), make_state(10**6))
    assert check_state(runtime.load_checkpoint(str(tmp_path / "checkpoint.pt"))) == 10**6


# --------------------------------------------------------------------------- full disk, read-only folder

SMALL = {"w": torch.arange(50, dtype=torch.float32), "epoch": 3, "name": "small"}


def _assert_same(state: dict, expected: dict) -> None:
    assert set(state) == set(expected)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(state[key], value)
        else:
            assert state[key] == value


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


@pytest.fixture
def previous(tmp_path):
    """A folder holding a good checkpoint; yields (path, its bytes)."""
    path = tmp_path / "ckpt.pt"
    runtime.save_checkpoint(str(path), SMALL)
    return path, path.read_bytes()


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_at_fsync_raises_and_keeps_the_previous_checkpoint(previous, monkeypatch):
    path, before = previous
    monkeypatch.setattr(runtime.os, "fsync", _enospc)
    with pytest.raises(OSError) as info:
        runtime.save_checkpoint(str(path), make_state(7))
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before
    _assert_same(runtime.load_checkpoint(str(path)), SMALL)
    assert _temp_files(path.parent) == []


class _FullDiskFile:
    """A file object that writes half of what it is given, then fails as a full disk does."""

    def __init__(self, file):
        self._file = file

    def write(self, data):
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()
        return False


def test_disk_full_during_write_raises_and_keeps_the_previous_checkpoint(previous, monkeypatch):
    path, before = previous
    real_fdopen = os.fdopen
    monkeypatch.setattr(runtime.os, "fdopen", lambda *a, **k: _FullDiskFile(real_fdopen(*a, **k)))
    with pytest.raises(OSError) as info:
        runtime.save_checkpoint(str(path), make_state(7))
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before
    _assert_same(runtime.load_checkpoint(str(path)), SMALL)
    assert _temp_files(path.parent) == []


def test_rename_refused_raises_and_keeps_the_previous_checkpoint(previous, monkeypatch):
    path, before = previous

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))

    monkeypatch.setattr(runtime.os, "replace", refuse)
    with pytest.raises(PermissionError):
        runtime.save_checkpoint(str(path), make_state(7))
    monkeypatch.undo()
    assert path.read_bytes() == before
    _assert_same(runtime.load_checkpoint(str(path)), SMALL)
    assert _temp_files(path.parent) == []


def test_failed_folder_fsync_after_the_rename_leaves_a_complete_checkpoint(previous, monkeypatch):
    """The folder fsync comes after the rename: if it fails, save raises, and the file is the new state, whole."""
    path, _ = previous
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the first call syncs the file, the second the folder
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(runtime.os, "fsync", fsync)
    with pytest.raises(OSError):
        runtime.save_checkpoint(str(path), make_state(7))
    monkeypatch.undo()
    assert check_state(runtime.load_checkpoint(str(path))) == 7
    assert _temp_files(path.parent) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_folder_raises_and_keeps_the_previous_checkpoint(previous):
    path, before = previous
    folder = path.parent
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            runtime.save_checkpoint(str(path), make_state(7))
    finally:
        folder.chmod(0o700)
    assert path.read_bytes() == before
    _assert_same(runtime.load_checkpoint(str(path)), SMALL)
    assert _temp_files(folder) == []


# --------------------------------------------------------------------------- truncation, bit flips


def test_every_truncation_is_refused_with_the_path(previous, tmp_path):
    _, blob = previous
    damaged = tmp_path / "truncated.pt"
    lengths = sorted({*range(0, len(blob), 97), *range(90), len(blob) - 1})  # every 97th byte, and the header
    for length in lengths:
        damaged.write_bytes(blob[:length])
        with pytest.raises(ValueError) as info:
            runtime.load_checkpoint(str(damaged))
        assert str(damaged) in str(info.value), length
    assert len(lengths) > 10


def test_every_single_bit_flip_is_refused(previous, tmp_path):
    """Each bit of the file, flipped alone (the zip, its closing comment, the SHA-256 trailer), makes
    load_checkpoint raise ValueError naming the path."""
    _, blob = previous
    damaged = tmp_path / "flipped.pt"
    for position in range(len(blob)):
        for bit in range(8):
            altered = bytearray(blob)
            altered[position] ^= 1 << bit
            damaged.write_bytes(bytes(altered))
            with pytest.raises(ValueError) as info:
                runtime.load_checkpoint(str(damaged))
            assert str(damaged) in str(info.value), (position, bit)


def test_plain_torch_load_reads_a_checkpoint(previous):
    path, _ = previous
    _assert_same(torch.load(path, weights_only=True), SMALL)


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description="SIGKILL checkpoint trials")
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=0.15, help="longest wait before each kill (seconds)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        report = run_kill_trials(Path(folder), args.trials, args.seed, args.max_delay)
    print(report.summary())
    for failure in report.failures:
        print("  " + failure)
    return 1 if report.unloadable or report.inconsistent else 0


if __name__ == "__main__":
    sys.exit(main())
