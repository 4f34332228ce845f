"""Multi-process training (torchrun, DDP, gloo on the CPU) against the plain script, on the tutorial CNN.

    python bench/ddp.py [--steps 40] [--reps 3]
    python bench/ddp.py --per-step 60     # DDP's cost per step with one process, in one process (robust to load)

Three ways of running the same generated script for the same number of updates of the same global batch (64), run
interleaved (A B C A B C ...) so that noise from shared cores hits each alike:

  plain     python mnist_cnn.py                       (torch's threads: 2)
  ddp1      torchrun --nproc-per-node=1 mnist_cnn.py  (DDP with one process, OMP_NUM_THREADS=2 as plain)
  ddp2      torchrun --nproc-per-node=2 mnist_cnn.py  (two processes of 1 thread each: batch 32 each)

``pairs``: the median over repetitions of each run's time over the plain run's beside it. Each figure is the script's
own training time (``seconds`` in metrics.json: the loop and the final checkpoint,
without interpreter and launcher start-up) and the whole command's wall time. Medians; ratios against plain.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compiler
from compiler.runtime import helpers as runtime

LAUNCH = ROOT / "compiler" / "workflow" / "launch.py"


def run(kind: str, script: Path, out: Path, steps: int) -> tuple[float, float]:
    """(training seconds, wall seconds) of one run."""
    args = [str(script), "--out", str(out), "--max-steps", str(steps), "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    if kind == "plain":
        command = [sys.executable, *args]
    else:
        processes = int(kind[-1])
        env["OMP_NUM_THREADS"] = str(2 // processes)
        command = [sys.executable, str(LAUNCH), "--standalone", f"--nproc-per-node={processes}", *args]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    return json.loads((out / "metrics.json").read_text())["seconds"], wall


def step_overhead(steps: int) -> None:
    """DDP's cost per training step with one process, robust to load from others: one process (gloo, world 1)
    trains the plain model and a DDP-wrapped copy on the same batches, step by step alternately (A B A B ...)."""
    import copy

    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        spec = compiler.load_spec(ROOT / "specs" / "mnist_cnn.yaml")
        training = compiler.build_training(spec, "cpu")  # no process group yet: the plain objects
        torch.distributed.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        plain = training.model
        wrapped = runtime.distribute(copy.deepcopy(plain), training.train_loader, None, 0)[0]  # as scripts wrap
        optimizers = [torch.optim.Adam(m.parameters(), lr=0.001) for m in (plain, wrapped)]
        times: list[list[float]] = [[], []]
        batches = iter(training.train_loader)
        for i in range(steps + 3):
            x, y = next(batches)
            for j, (model, optimizer) in enumerate(zip((plain, wrapped), optimizers)):
                started = time.perf_counter()
                loss = training.loss_fn(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if i >= 3:  # warm-up left out
                    times[j].append(time.perf_counter() - started)
        torch.distributed.destroy_process_group()
    ratios = [b / a for a, b in zip(*times)]
    print(
        f"per step, {steps} alternating steps of batch 64 (medians): plain {statistics.median(times[0]):.4f} s, "
        f"DDP 1 process {statistics.median(times[1]):.4f} s; median of the pairs' ratios {statistics.median(ratios):.4f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--per-step", type=int, metavar="N", help="only DDP's per-step cost, N alternating steps")
    args = parser.parse_args()
    if args.per_step:
        step_overhead(args.per_step)
        return 0
    kinds = ("plain", "ddp1", "ddp2")
    figures: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # checkpoints written to memory: less disk noise
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        script = Path(tmp) / "mnist_cnn.py"
        script.write_text(compiler.render_script(compiler.load_spec(ROOT / "specs" / "mnist_cnn.yaml")))
        for rep in range(args.reps):
            for kind in kinds:
                figures[kind].append(run(kind, script, Path(tmp) / f"{kind}{rep}", args.steps))
    plain_train = statistics.median(t for t, _ in figures["plain"])
    plain_wall = statistics.median(w for _, w in figures["plain"])
    print(f"tutorial CNN, {args.steps} updates of batch 64, {args.reps} interleaved runs each (medians)")
    print(f"{'':6} {'train s':>8} {'img/s':>7} {'vs plain':>9} {'pairs':>7} {'wall s':>7} {'vs plain':>9}")
    for kind in kinds:
        train = statistics.median(t for t, _ in figures[kind])
        wall = statistics.median(w for _, w in figures[kind])
        pairs = statistics.median(t / p for (t, _), (p, _) in zip(figures[kind], figures["plain"]))
        print(
            f"{kind:6} {train:8.2f} {args.steps * 64 / train:7.0f} {train / plain_train:9.3f} {pairs:7.3f} "
            f"{wall:7.2f} {wall / plain_wall:9.3f}"
        )
    print(
        "raw (train s, wall s):",
        json.dumps({k: [[round(t, 3), round(w, 3)] for t, w in v] for k, v in figures.items()}),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
