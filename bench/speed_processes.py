"""`speed: auto` vs the tutorial settings with each run in its own process (the cross-check of bench/run.py's
`speed_auto_cpu` row, whose two runs take turns in one process).

    python bench/speed_processes.py [--pairs 6] [--set train.data_on_device=true ...]

Each process renders the generated script of specs/mnist_cnn.yaml (with `--set` overrides on the `auto` side),
runs its own `build_all()` and `train()`, and times steps 10->50 (startup and the first steps left out). The two
settings alternate, tutorial then auto, `--pairs` times; it prints each pair and the median of the pair ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, STOP = 10, 50


def one_run(overrides: list[str]) -> float:
    """In this process: seconds per step over steps START->STOP of the generated script."""
    sys.path.insert(0, str(ROOT))
    import compiler

    spec = compiler.load_spec("specs/mnist_cnn.yaml", overrides=overrides)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench_script.py"
        path.write_text(compiler.render_script(spec))
        loader = importlib.util.spec_from_file_location("bench_script", path)
        script = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(script)
    objects = script.build_all("cpu")
    run, fetched = script.Run(1, max_steps=STOP + 1), {}
    batches = run.batches

    def timed(train_loader):
        for i, batch in enumerate(batches(train_loader)):
            fetched[i] = time.perf_counter()  # batch i is fetched when step i has ended (the CPU runs in order)
            yield batch

    run.batches = timed
    script.train(objects, script.torch.device("cpu"), run, log=lambda *_: None)
    return (fetched[STOP] - fetched[START]) / (STOP - START)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--set", action="append", default=[], help="more overrides for the auto side")
    parser.add_argument("--one", nargs="*", help=argparse.SUPPRESS)  # a child: time one run
    args = parser.parse_args()
    if args.one is not None:
        print(one_run(args.one))
        return
    os.chdir(ROOT)  # the MNIST root `data` is relative

    def child(overrides: list[str]) -> float:
        command = [sys.executable, __file__, "--one", *overrides]
        return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])

    ratios = []
    for pair in range(args.pairs):
        tutorial, auto = child([]), child(["train.speed=auto", *args.set])
        ratios.append(tutorial / auto)
        print(
            f"pair {pair + 1}: tutorial {64 / tutorial:.1f} img/s, auto {64 / auto:.1f} img/s, ratio {ratios[-1]:.3f}"
        )
    print(f"median ratio {statistics.median(ratios):.3f} over {len(ratios)} pairs")


if __name__ == "__main__":
    main()
