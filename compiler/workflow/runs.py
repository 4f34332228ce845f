"""``specc train``, ``specc eval``, ``specc predict`` and their Python API (``compiler.evaluate``, ``compiler.predict``).

``specc train`` renders the script into a new run folder and runs it there (the one training loop), then plots its
loss curve. Exit codes, the same as the script's: 0 ok, 1 invalid spec or bad input, 2 internal error, 3 the run
failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compiler.front.spec import Spec
from compiler.runtime import helpers as runtime
from compiler.workflow.plot import plot_history


def runs_root(spec: Spec) -> str:
    """Where a spec's runs go: ``train.checkpoint.dir``, else ``runs/<name>``; each run in a new numbered folder."""
    checkpoint = spec.train.checkpoint if spec.train else None
    return checkpoint.dir if checkpoint and checkpoint.dir else f"runs/{spec.name}"


def _die_with_parent() -> None:  # runs in the child before exec: SIGTERM it when specc dies (Linux)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass


# Runs the script as ``python SCRIPT ARGS`` would (``sys.argv``, ``__main__``); the script's own main() handles a
# Ctrl-C once it runs, and this handles one that comes earlier, during its imports.
_QUIET_START = (
    "import os, runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))\n"
    "try:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "except KeyboardInterrupt:\n"
    "    print('error: interrupted before training started', file=sys.stderr)\n"
    "    sys.exit(130)\n"
)


def _nproc_problem(spec: Spec, nproc: int) -> str | None:
    """Why ``--nproc`` cannot run this spec (None: it can): each process takes an equal part of every batch."""
    if nproc < 1:
        return f"--nproc {nproc}: give 1 or more processes"
    mode, size = spec.train.mode, spec.data.batch_size if spec.data else 0
    if nproc > 1 and mode == "online":
        return "online mode trains on one sample per update: run it in one process (leave out --nproc)"
    if mode == "minibatch" and size % nproc:
        divisors = [n for n in range(2, size + 1) if size % n == 0][:4]
        return (
            f"batch_size {size} (the global batch, split across the processes) does not divide among {nproc} "
            f"processes: use --nproc {' or '.join(map(str, divisors))}, or --set data.batch_size={size - size % nproc or nproc}"
        )
    return None


def train_from_spec(spec: Spec, args: argparse.Namespace) -> int:
    from compiler.pipeline import render_script

    try:
        if args.out:
            folder = args.out
        elif args.resume:
            folder = os.path.dirname(runtime.find_checkpoint(args.resume))
        else:
            folder = runtime.new_run_folder(runs_root(spec))
        os.makedirs(folder, exist_ok=True)
        script = Path(folder) / f"{spec.name}.py"
        runtime.write_atomic(str(script), render_script(spec).encode())
    except OSError as err:
        print(f"specc train: cannot write the run folder: {err.filename}: {err.strerror}", file=sys.stderr)
        return 3
    command = [sys.executable, str(script), "--out", folder]
    nproc = getattr(args, "nproc", None)
    if nproc is not None:  # torchrun on this machine; spec-language §6 has the command for several machines
        problem = _nproc_problem(spec, nproc)
        if problem:
            print(f"specc train: {problem}", file=sys.stderr)
            return 1
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default for several processes, without its banner
        launch = [
            sys.executable,
            str(Path(__file__).with_name("launch.py")),
            "--standalone",
            f"--nproc-per-node={nproc}",
        ]
        command = launch + command[1:]
    for flag, value in (
        ("--epochs", args.epochs),
        ("--device", args.device),
        ("--resume", args.resume),
        ("--max-steps", getattr(args, "max_steps", None)),
    ):
        if value is not None:
            command += [flag, str(value)]
    if getattr(args, "debug", False):
        command.append("--debug")
    print(f"running {' '.join(command)}", flush=True)
    linux = sys.platform.startswith("linux")
    # its own session: a Ctrl-C reaches the script once, through the forwarding below; run through _QUIET_START
    # so that one arriving while the script still imports torch ends it with a line, not an import traceback
    quiet = [sys.executable, "-c", _QUIET_START, *command[1:]]
    child = subprocess.Popen(quiet, preexec_fn=_die_with_parent if linux else None, start_new_session=True)  # noqa: PLW1509
    forward = lambda signum, frame: child.send_signal(signum)
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code != 0:
        return code if code in (1, 3, 130) else 3  # the script has printed why
    metrics = Path(folder) / "metrics.json"
    png = Path(folder) / "loss.png"
    plot_history(json.loads(metrics.read_text())["history"], png, title=spec.name)
    print(f"run folder: {folder}\n  checkpoint.pt, metrics.json, metrics.csv, loss.png")
    return 0


# --------------------------------------------------------------------------- evaluate, predict


def _restored(spec: Spec, checkpoint: str | os.PathLike | None, device: Any, with_data: bool) -> tuple:
    """(script module, objects, run): the compiled objects with the checkpoint's weights, its identity checked."""
    from compiler.build.training import _construct
    from compiler.pipeline import build_training, lower_spec, render_script
    from compiler.workflow.check import import_script

    path = runtime.find_checkpoint(str(checkpoint) if checkpoint else runs_root(spec))
    state = runtime.load_checkpoint(path)
    device = runtime.pick_device(str(device))
    with tempfile.TemporaryDirectory() as folder:
        script = import_script(render_script(spec), spec.name, folder)
    if with_data:
        objects = tuple(build_training(spec, device))
    else:  # prediction: no dataset to build
        from compiler.build.model import build_model

        training = lower_spec(spec).training
        model = build_model(lower_spec(spec).model).to(device)
        optimizer = _construct(training.optimizer, model.parameters())
        scheduler = _construct(training.scheduler, optimizer) if training.scheduler else None
        objects = (model, None, optimizer, scheduler, None, None)
    run = runtime.Run(1)
    run.resume(state, objects[0], objects[2], objects[3], path, model_only=True)  # evaluating, predicting
    return script, objects, run, device


def _as_spec(spec: Spec | str | os.PathLike) -> Spec:
    from compiler.pipeline import load_spec

    return spec if isinstance(spec, Spec) else load_spec(spec)


def evaluate(
    spec: Spec | str | os.PathLike, checkpoint: str | os.PathLike | None = None, split: str = "val", device: Any = "cpu"
) -> dict:
    """``{"loss": ..., "accuracy": ...}`` of a checkpoint (default: the latest run's) on the ``val`` or ``train`` split."""
    spec = _as_spec(spec)
    script, (model, loss_fn, _, _, train_loader, val_loader), _, device = _restored(spec, checkpoint, device, True)
    loader = val_loader if split == "val" else train_loader
    if loader is None:
        raise ValueError("this spec holds out no validation data; use the training split (--split train)")
    loss, accuracy = script.evaluate(model, loss_fn, loader, device)
    return {"loss": loss, **({"accuracy": accuracy} if accuracy is not None else {})}


def predict(
    spec: Spec | str | os.PathLike, checkpoint: str | os.PathLike | None, inputs: Sequence, device: Any = "cpu"
) -> list:
    """``[(input, prediction), ...]`` for image files, folders of images or CSV files: class names, or values."""
    spec = _as_spec(spec)
    inputs = [str(i) for i in inputs]
    from compiler.build.training import _compose
    from compiler.pipeline import lower_spec

    _, (model, *_), run, device = _restored(spec, checkpoint, device, False)
    data = lower_spec(spec).training.data
    transform = _compose(data.eval_transforms) if data.dataset.name not in ("CSV", "Synthetic") else None
    missing = [path for path in inputs if not os.path.exists(path)]
    if missing:
        raise ValueError(f"{missing[0]}: no such file or folder")
    return runtime.predict(model, inputs, run.data, transform or (lambda x: x), device)
