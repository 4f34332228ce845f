"""``specc train``, ``specc eval``, ``specc predict`` and their Python API (``compiler.evaluate``, ``compiler.predict``).

``specc train`` renders the script into a new run folder and runs it there (the one training loop), then plots its
loss curve. Exit codes, the same as the script's: 0 ok, 1 invalid spec or bad input, 2 internal error, 3 the run
failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from compiler.errors import visible
from compiler.front.spec import Spec
from compiler.pipeline import chosen_checkpoint, runs_root
from compiler.runtime import helpers as runtime
from compiler.workflow.plot import plot_history


def _die_with_parent() -> None:  # runs in the child before exec: SIGTERM it when specc dies (Linux)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass


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


class RunRefused(Exception):
    """Why ``specc train`` starts no run; raised before it writes anything. The message is one line."""


# Runs the script as ``python SCRIPT ARGS`` would (``sys.argv``, ``__main__``), from a private copy and with no
# folder of others' files on the import path: ``-P`` (Python 3.11+) keeps the current folder off it, and on 3.10
# the first entry ``-c`` put there is removed. Tracebacks and ``sys.argv[0]`` name the recorded copy in the run
# folder. The script's own main() handles a Ctrl-C once it runs; this handles one that comes during its imports.
_START = (
    "import os, sys\n"
    "if not sys.flags.safe_path and sys.path and sys.path[0] in ('', os.getcwd()):\n"
    "    del sys.path[0]\n"
    "__file__, sys.argv = sys.argv[1], sys.argv[2:]\n"
    "try:\n"
    "    with open(__file__, encoding='utf-8') as _source:\n"
    "        _code = compile(_source.read(), sys.argv[0], 'exec')\n"
    "    del _source\n"
    "    exec(_code)\n"
    "except KeyboardInterrupt:\n"
    "    print('error: interrupted before training started', file=sys.stderr)\n"
    "    sys.exit(130)\n"
)
_DISTRIBUTED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_RUN_FILES = ("checkpoint.pt", "best.pt", "model.pt", "metrics.json")


def _python() -> list[str]:
    """The interpreter, with safe-path semantics where it has them (``-P``, Python 3.11+)."""
    return [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]


def _stray_distributed() -> None:
    found = [f"{name}={os.environ[name]}" for name in _DISTRIBUTED if name in os.environ]
    if found:
        raise RunRefused(
            f"{visible(' '.join(found))} in the environment, as under torchrun, but specc train starts its own "
            "processes: unset them, or use --nproc N (spec-language §6 has the command for several machines)"
        )


def _resumed(spec: Spec, args: argparse.Namespace) -> str | None:
    """The checkpoint ``--resume`` names, read and checked, and not already at the end of its run."""
    if not args.resume:
        return None
    try:
        path = runtime.find_checkpoint(args.resume)
        state = runtime.load_checkpoint(path)
        runtime.check_state(state, path)
    except ValueError as err:
        raise RunRefused(f"--resume: {visible(str(err))}") from None
    epochs = args.epochs or spec.train.epochs
    if state["epoch"] >= epochs:
        raise RunRefused(
            f"--resume {visible(path)}: this run has already trained {state['epoch']} epochs, all that train.epochs "
            f"({epochs}) asks for, so there is nothing left to train; to train longer, give more: "
            f"--epochs {state['epoch'] + 1}"
        )
    _stopped_early(spec, state, path)
    if args.max_steps is not None and state["step"] >= args.max_steps:
        raise RunRefused(
            f"--resume {visible(path)}: this run has already taken {state['step']} steps, --max-steps "
            f"{args.max_steps}; give more, e.g. --max-steps {state['step'] + args.max_steps}"
        )
    return path


def _stopped_early(spec: Spec, state: dict, path: str) -> None:
    """Refuse to resume a run that early stopping ended: it would stop again at once."""
    stop = spec.train.early_stop
    if stop and runtime.early_stopped(state["history"], stop.monitor, stop.patience, stop.min_delta, stop.direction):
        raise RunRefused(
            f"--resume {visible(path)}: this run stopped early after epoch {state['epoch']} ({stop.monitor} had not "
            f"improved for {stop.patience} epochs), so it would stop again at once; to train on, give more patience: "
            f"--set train.early_stop.patience={stop.patience + 5}"
        )


def _claim_folder(spec: Spec, args: argparse.Namespace, checkpoint: str | None) -> tuple[str, bool]:
    """(the run folder, whether this run made it): ``--out`` (never over another run), the resumed run's
    folder, or a new ``runs/<name>/N``."""
    if not args.out:
        if checkpoint:
            return os.path.dirname(checkpoint) or ".", False
        return runtime.new_run_folder(runs_root(spec)), True
    out = Path(args.out)
    try:  # the script's own rule: never over a finished run, unless continuing it
        runtime.check_out_folder(args.out, checkpoint)
    except ValueError as err:
        raise RunRefused(str(err)) from None
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    return args.out, made


def _stamp(path: Path) -> tuple | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def _command(args: argparse.Namespace, script: Path, shown: Path, folder: str, checkpoint: str | None) -> list[str]:
    """The child's command line: the script through ``_START``, under torchrun for ``--nproc``."""
    command = [*_python(), "-c", _START, str(script), str(shown), "--out", folder]
    if args.nproc is not None:  # torchrun on this machine; spec-language §6 has the command for several machines
        launch = [*_python(), str(Path(__file__).with_name("launch.py")), "--standalone"]
        command = [*launch, f"--nproc-per-node={args.nproc}", "--no-python", *command]
    for flag, value in (
        ("--epochs", args.epochs),
        ("--device", args.device),
        ("--resume", checkpoint),
        ("--max-steps", args.max_steps),
    ):
        if value is not None:
            command += [flag, str(value)]
    return [*command, "--debug"] if args.debug else command


def _run_child(command: list[str]) -> int:
    """Run ``command`` in its own session (a Ctrl-C reaches it once, forwarded) and die with specc (Linux)."""
    linux = sys.platform.startswith("linux")
    env = {**os.environ, "PYTHONSAFEPATH": "1"}  # its own Python children (workers, compilers) too
    child = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent if linux else None, start_new_session=True)  # noqa: PLW1509
    forward = lambda signum, frame: child.send_signal(signum)
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _prepare(spec: Spec, args: argparse.Namespace) -> tuple[str, bool, str | None]:
    """Every check that can refuse the run, then the run folder: nothing is written before they pass."""
    for name in ("nproc", "max_steps", "debug"):
        setattr(args, name, getattr(args, name, None))
    if args.nproc is None:
        _stray_distributed()
    else:
        problem = _nproc_problem(spec, args.nproc)
        if problem:
            raise RunRefused(problem)
    checkpoint = _resumed(spec, args)
    folder, made = _claim_folder(spec, args, checkpoint)
    return folder, made, checkpoint


def train_from_spec(spec: Spec, args: argparse.Namespace) -> int:
    """Render the script into a private folder and run it; the run folder gets the script (and ``latest`` names
    the run) only once the run has saved a checkpoint, and a new folder whose run never started is removed."""
    from compiler.pipeline import render_script

    try:
        folder, made, checkpoint = _prepare(spec, args)
    except (RunRefused, OSError) as err:
        reason = f"cannot make the run folder: {err.strerror}" if isinstance(err, OSError) else str(err)
        print(f"specc train: {reason}", file=sys.stderr)
        return 1
    text, shown = render_script(spec), Path(folder) / f"{spec.name}.py"
    before = _stamp(Path(folder) / "checkpoint.pt")
    with tempfile.TemporaryDirectory(prefix="specc-train-") as private:
        script = Path(private) / shown.name
        script.write_text(text, encoding="utf-8")
        if args.nproc:  # torchrun's default for several processes, without its banner
            os.environ.setdefault("OMP_NUM_THREADS", "1")
        launcher = f" (torchrun --standalone --nproc-per-node={args.nproc})" if args.nproc else ""
        print(f"running {visible(str(shown))} --out {visible(folder)}{launcher}", flush=True)
        code = _run_child(_command(args, script, shown, folder, checkpoint))
    return _finish(spec, folder, made, before, text, code)


def _finish(spec: Spec, folder: str, made: bool, before: tuple | None, text: str, code: int) -> int:
    started = _stamp(Path(folder) / "checkpoint.pt") not in (None, before)
    if started:
        runtime.write_atomic(str(Path(folder) / f"{spec.name}.py"), text.encode())
    elif made:
        shutil.rmtree(folder, ignore_errors=True)  # a run that never started leaves no folder
    if code != 0:
        return code if code in (1, 3, 130) else 3  # the script has printed why
    metrics = json.loads(runtime.read_regular(str(Path(folder) / "metrics.json"), 1 << 30, "metrics file"))
    plot_history(metrics["history"], Path(folder) / "loss.png", title=spec.name)
    best = ", best.pt" if (Path(folder) / "best.pt").is_file() else ""
    print(f"run folder: {visible(folder)}\n  {spec.name}.py, checkpoint.pt{best}, metrics.json, metrics.csv, loss.png")
    return 0


# --------------------------------------------------------------------------- evaluate, predict


def _restored(spec: Spec, checkpoint: str | os.PathLike | None, device: Any, with_data: bool) -> tuple:
    """(script module, objects, run): the compiled objects with the checkpoint's weights, its identity checked."""
    from compiler.build.training import _construct
    from compiler.pipeline import build_training, lower_spec, render_script
    from compiler.workflow.check import import_script

    path = chosen_checkpoint(spec, checkpoint)
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


class DataMissing(ValueError):
    """A dataset's files are not on disk; the message is one line and says how to get them."""


@contextlib.contextmanager
def data_present(spec: Spec, command: str) -> Iterator[None]:
    """A torchvision dataset whose files are not on disk (``Dataset not found``) as a ValueError of one line
    that names the dataset, its root and how to get the files; not an internal error."""
    try:
        yield
    except RuntimeError as err:
        if not str(err).startswith(("Dataset not found", "Dataset metadata file not found")):
            raise
        dataset = spec.data.dataset
        root = visible(str(dataset.kwargs.get("root", ".")))
        how = (
            "specc check downloads nothing: fetch the files first (specc train with `download: true`)"
            if command == "check"
            else f"set `download: true` (--set data.dataset.{dataset.type}.download=true) to fetch them"
        )
        raise DataMissing(f"{dataset.type}: its files are not under {root}; {how}, or put them there") from None


def _as_spec(spec: Spec | str | os.PathLike) -> Spec:
    from compiler.pipeline import load_spec

    return spec if isinstance(spec, Spec) else load_spec(spec)


def evaluate(
    spec: Spec | str | os.PathLike, checkpoint: str | os.PathLike | None = None, split: str = "val", device: Any = "cpu"
) -> dict:
    """``{"loss": ..., "accuracy": ...}`` of a checkpoint (default: the latest run's) on the ``val`` or ``train`` split;
    for a model of several outputs also each one's (``"species_loss"``, ``"species_accuracy"``, ...)."""
    spec = _as_spec(spec)
    with data_present(spec, "eval"):
        script, (model, loss_fn, _, _, train_loader, val_loader), _, device = _restored(spec, checkpoint, device, True)
    loader = val_loader if split == "val" else train_loader
    if loader is None:
        raise ValueError("this spec holds out no validation data; use the training split (--split train)")
    loss, accuracy = script.evaluate(model, loss_fn, loader, device)
    result = {"loss": loss, **({"accuracy": accuracy} if accuracy is not None else {})}
    if hasattr(script, "evaluate_outputs"):  # a model of several outputs: each one's loss (and accuracy) too
        result.update(script.evaluate_outputs(model, loss_fn, loader, device, script.ACCURACY_OUTPUTS))
    return result


def _predictor(spec: Spec | str | os.PathLike, checkpoint: str | os.PathLike | None, device: Any) -> tuple:
    """(model, what the checkpoint says of its data, the evaluation transform, device) for prediction."""
    from compiler.build.training import _compose
    from compiler.pipeline import lower_spec

    spec = _as_spec(spec)
    program = lower_spec(spec)
    data = program.training.data if program.training is not None else None
    if program.model.several_inputs and (data is None or data.image is None):  # a CSV's image rows: both inputs
        names = ", ".join(program.model.inputs or {})
        raise ValueError(
            f"prediction reads one input a sample, but this model takes {len(program.model.inputs or {})} ({names}); "
            "call compiler.build_model's module (with the checkpoint's weights) on them"
        )
    _, (model, *_), run, device = _restored(spec, checkpoint, device, False)
    data = program.training.data
    transform = _compose(data.eval_transforms) if data.images else None
    if run.data is None:
        raise ValueError("the checkpoint does not say what data the model was trained on; train it with specc")
    return model, run.data, transform or (lambda x: x), device


def predict(
    spec: Spec | str | os.PathLike,
    checkpoint: str | os.PathLike | None,
    inputs: Sequence,
    device: Any = "cpu",
    top_k: int = 1,
) -> list:
    """``[(input, prediction), ...]`` for image files, folders of images or CSV files: class names (with the
    probabilities of the ``top_k`` best when ``top_k`` > 1), or values; as text safe to print."""
    model, info, transform, device = _predictor(spec, checkpoint, device)
    return runtime.predict(model, [str(i) for i in inputs], info, transform, device, top_k)


def predict_table(
    spec: Spec | str | os.PathLike,
    checkpoint: str | os.PathLike | None,
    inputs: Sequence,
    device: Any = "cpu",
    top_k: int = 1,
) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the predictions: ``input, prediction, probability`` (and ``prediction_K,
    probability_K`` for the K-th best), or ``input, prediction`` holding a regression's values."""
    model, info, transform, device = _predictor(spec, checkpoint, device)
    rows = runtime.predict_rows(model, [str(i) for i in inputs], info, transform, device, top_k)
    if info.get("outputs"):  # several outputs: a column each
        keys = list(info["outputs"])
        return ["input", *keys], [[name, *(each[k] for k in keys)] for name, each in rows]
    if info["task"] != "classes":
        return ["input", "prediction"], [[name, " ".join(f"{v:.6g}" for v in values)] for name, values in rows]
    k = max(len(best) for _, best in rows)
    header = ["input"] + [f"{n}{f'_{i + 1}' if i else ''}" for i in range(k) for n in ("prediction", "probability")]
    return header, [[name] + [t for c, p in best for t in (c, f"{p:.6f}")] for name, best in rows]
