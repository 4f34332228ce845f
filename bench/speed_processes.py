"""`speed: auto` vs the tutorial settings, each run in its own process, through the generated script's `main`.

    python bench/speed_processes.py [--pairs 6] [--steps 10 50] [--set train.reuse_memory=false ...]

Each child renders the generated script of specs/mnist_cnn.yaml (with `--set` overrides on the `auto` side) and
runs its `main` on the CPU, as `python generated/mnist_cnn.py` would, so process-wide settings (`reuse_memory`)
apply as they do for a user. It times the steps between `--steps` (startup and the first steps, which set up
oneDNN's kernels, left out). The two settings alternate, tutorial then auto, `--pairs` times; it prints each
pair and the median of the pair ratios. bench/run.py's `speed_auto_cpu` row calls `pairs()`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = "specs/mnist_cnn.yaml"
BATCH = 64


def one_run(start: int, stop: int, overrides: list[str]) -> float:
    """In this process: seconds per step over steps start->stop of the generated script's main()."""
    sys.path.insert(0, str(ROOT))
    import compiler

    os.chdir(ROOT)  # the MNIST root `data` is relative
    spec = compiler.load_spec(SPEC, overrides=overrides)
    fetched = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench_script.py"
        path.write_text(compiler.render_script(spec))
        loader = importlib.util.spec_from_file_location("bench_script", path)
        script = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(script)
        batches = script.Run.batches

        def timed(run, train_loader):
            for i, batch in enumerate(batches(run, train_loader)):
                fetched[i] = time.perf_counter()  # batch i is fetched when step i has ended (the CPU runs in order)
                yield batch

        script.Run.batches = timed
        argv = ["--device", "cpu", "--max-steps", str(stop + 1), "--out", str(Path(folder) / "run")]
        with contextlib.redirect_stdout(io.StringIO()):
            code = script.main(argv)
        if code != 0:
            raise SystemExit(f"the script exited with {code}")
    return (fetched[stop] - fetched[start]) / (stop - start)


def child(start: int, stop: int, overrides: list[str]) -> float:
    """One run in a fresh process: seconds per step."""
    command = [sys.executable, __file__, "--steps", str(start), str(stop), "--one", *overrides]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.split()[-1])


def pairs(count: int, start: int, stop: int, auto_overrides: list[str], report=None) -> tuple[list, list]:
    """`count` pairs of processes, tutorial then auto: images per second of each."""
    tutorial, auto = [], []
    for pair in range(count):
        tutorial.append(BATCH / child(start, stop, []))
        auto.append(BATCH / child(start, stop, ["train.speed=auto", *auto_overrides]))
        if report:
            report(
                f"pair {pair + 1}: tutorial {tutorial[-1]:.1f} img/s, auto {auto[-1]:.1f} img/s, "
                f"ratio {auto[-1] / tutorial[-1]:.3f}"
            )
    return tutorial, auto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--steps", type=int, nargs=2, default=[10, 50], metavar=("START", "STOP"))
    parser.add_argument("--set", action="append", default=[], help="more overrides for the auto side")
    parser.add_argument("--one", nargs="*", help=argparse.SUPPRESS)  # a child: time one run
    args = parser.parse_args()
    if args.one is not None:
        print(one_run(*args.steps, args.one))
        return
    tutorial, auto = pairs(args.pairs, *args.steps, args.set, report=print)
    ratios = [a / t for t, a in zip(tutorial, auto)]
    print(f"median ratio {statistics.median(ratios):.3f} over {len(ratios)} pairs")


if __name__ == "__main__":
    main()
