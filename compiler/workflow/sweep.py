"""``specc sweep``: train a spec over a grid of overrides (``--set a=1,2,3``) or N trials sampled by Optuna.

Every trial is an ordinary ``specc train`` run in its own folder under the sweep's folder, so each can be evaluated,
resumed or predicted with like any other run. All trials are validated before the first one trains: a value that
makes the model invalid (a width the next layer cannot take) is reported, located, before any time is spent.
The sweep writes ``results.csv`` (sorted by the metric) and ``results.png`` (the metric against each swept value).

Optuna (an optional dependency) samples ``--search N`` trials and prunes weak ones: each trial's script refreshes
``metrics.json`` at every epoch's checkpoint; the sweep reports that epoch's metric to the trial and stops the run
(SIGTERM, which the script answers by exiting cleanly) when the pruner says so.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_TRIALS = 1000  # a grid larger than this is almost surely a typo (--set a=1,...,1000 --set b=...)
_POLL_S = 0.1  # how often a running trial's metrics.json is read (a few hundred bytes per epoch)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"{_NUMBER}:{_NUMBER}(?::log)?")  # LOW:HIGH[:log]; "cuda:0" is a value, not a range


class SweepError(ValueError):
    """A bad ``--set`` axis, metric or trial count: one line, exit 1."""


@dataclass
class Axis:
    key: str
    values: list[str]  # the YAML texts a --set would take
    low: float | None = None  # --search ranges: key=LOW:HIGH[:log]
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None


@dataclass
class Trial:
    number: int
    overrides: list[str]  # "key=value", in the order of the axes
    folder: str
    status: str = "pending"  # ok, pruned, failed
    metric: float | None = None
    history: list[dict] = field(default_factory=list)
    pruned_at: int | None = None  # the epoch whose metric the pruner judged; the run stops soon after


# --------------------------------------------------------------------------------------------- axes


def split_values(text: str) -> list[str]:
    """``1,2,[3,4]`` -> ``["1", "2", "[3,4]"]``: commas inside brackets, braces or quotes do not split."""
    values, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    if any(not v for v in values):
        raise SweepError(f"--set {text!r}: an empty value between commas; give values as a,b,c")
    return values


def _number(text: str, setting: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SweepError(f"--set {setting}: {text!r} is not a number; a range is LOW:HIGH or LOW:HIGH:log") from None
    if not math.isfinite(value):
        raise SweepError(f"--set {setting}: {text!r} is not a finite number")
    return value


def _range(key: str, text: str, setting: str) -> Axis:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        raise SweepError(f"--set {setting}: a range is LOW:HIGH or LOW:HIGH:log")
    low, high = (_number(p, setting) for p in parts[:2])
    log = len(parts) == 3
    if not low < high or (log and low <= 0):
        raise SweepError(f"--set {setting}: need LOW < HIGH" + (" and LOW > 0 on a log scale" if log else ""))
    integer = all(p.strip().lstrip("-").isdigit() for p in parts[:2])
    return Axis(key, [], low, high, log, integer)


def parse_axis(setting: str, ranges: bool) -> Axis:
    """``key=v1,v2`` (choices) or, with ``ranges`` (``--search``), also ``key=LOW:HIGH[:log]``."""
    key, sep, text = setting.partition("=")
    if not sep or not key.strip():
        raise SweepError(f"--set {setting!r}: write KEY=VALUE[,VALUE...], e.g. --set optimizer.Adam.lr=1e-3,3e-4")
    key = key.strip()
    if ranges and _RANGE.fullmatch(text.strip()):
        return _range(key, text.strip(), setting)
    return Axis(key, split_values(text))


def grid(axes: list[Axis]) -> list[list[str]]:
    """Every combination of the axes' values, as ``--set`` lists, first axis slowest."""
    count = math.prod(len(a.values) for a in axes)
    if count > MAX_TRIALS:
        raise SweepError(f"the grid has {count:,} trials, over the {MAX_TRIALS:,} a sweep runs; sweep fewer values")
    return [[f"{a.key}={v}" for a, v in zip(axes, combo)] for combo in itertools.product(*(a.values for a in axes))]


# --------------------------------------------------------------------------------------------- metrics


def metric_values(history: list[dict], metric: str) -> list[float]:
    """The metric's value at each epoch's end (for ``loss``, the last logged training loss of the epoch)."""
    by_epoch: dict[int, float] = {}
    for record in history:
        value = record.get(metric)
        if isinstance(value, (int, float)) and record.get("epoch") is not None:
            by_epoch[int(record["epoch"])] = float(value)
    return [by_epoch[e] for e in sorted(by_epoch)]


def default_metric(history: list[dict]) -> str:
    keys = {key for record in history for key in record}
    return next((m for m in ("val_accuracy", "val_loss") if m in keys), "loss")


def maximize(metric: str) -> bool:
    return "accuracy" in metric


def _read_history(folder: str) -> list[dict]:
    try:
        return json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))["history"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # not written yet, or being replaced (it is written atomically: the next poll reads it whole)


# --------------------------------------------------------------------------------------------- running


def train_command(spec_path: str, trial: Trial, passthrough: list[str]) -> list[str]:
    """``specc train`` for the trial: the sweep's fixed ``--set`` values are in ``passthrough``, the trial's after."""
    sets = [arg for override in trial.overrides for arg in ("--set", override)]
    return [sys.executable, "-m", "compiler.cli", "train", spec_path, *passthrough, *sets, "--out", trial.folder]


def run_trial(spec_path: str, trial: Trial, passthrough: list[str], metric: str, on_epoch=None) -> Trial:
    """Train one trial in a child ``specc train``; ``on_epoch(epoch, value)`` returning True stops it (pruned)."""
    log = open(f"{trial.folder}.log", "wb")  # noqa: SIM115 - open for the child's whole life, closed below
    try:
        child = subprocess.Popen(
            train_command(spec_path, trial, passthrough), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        trial.pruned_at = _follow(child, trial, metric, on_epoch)
        pruned = trial.pruned_at is not None
    finally:
        log.close()
    trial.history = _read_history(trial.folder)
    values = metric_values(trial.history, metric)
    trial.metric = values[-1] if values else None
    finished = child.returncode == 0 and bool(values)  # a run can end before the signal to stop reaches it
    trial.status = "ok" if finished else ("pruned" if pruned else "failed")
    return trial


def _follow(child: subprocess.Popen, trial: Trial, metric: str, on_epoch) -> int | None:
    """Wait for the child, feeding each new epoch's metric to ``on_epoch``; the epoch at which it asked to stop."""
    seen, pruned = 0, None
    while True:
        done = child.poll() is not None
        values = metric_values(_read_history(trial.folder), metric)
        for epoch in range(seen, len(values)):
            if on_epoch is not None and pruned is None and on_epoch(epoch + 1, values[epoch]):
                pruned = epoch + 1
                child.send_signal(signal.SIGTERM)  # specc train forwards it; the script exits at once
        seen = len(values)
        if done:
            return pruned
        time.sleep(_POLL_S)


# --------------------------------------------------------------------------------------------- results


def ranked(trials: list[Trial], metric: str) -> list[Trial]:
    """Finished trials best first, then pruned ones (ranked by the metric they stopped at), then failed ones."""
    sign = -1 if maximize(metric) else 1
    order = {"ok": 0, "pruned": 1}
    return sorted(trials, key=lambda t: (order.get(t.status, 2), t.metric is None, sign * (t.metric or 0.0), t.number))


def results_table(trials: list[Trial], axes: list[Axis], metric: str) -> str:
    """``results.csv``'s text: trial, each swept key, the metric, status, folder; best first."""
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["trial", *(a.key for a in axes), metric, "status", "folder"])
    for t in ranked(trials, metric):
        values = [o.partition("=")[2] for o in t.overrides]
        status = f"pruned at epoch {t.pruned_at}" if t.status == "pruned" else t.status
        writer.writerow([t.number, *values, "" if t.metric is None else f"{t.metric:.6g}", status, t.folder])
    return table.getvalue()


def print_table(text: str) -> None:
    rows = list(csv.reader(io.StringIO(text)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def plot_results(trials: list[Trial], axes: list[Axis], metric: str, path: Path) -> None:
    """The metric against each swept value, one panel per key (categories in the order given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t.metric is not None]
    fig, panels = plt.subplots(1, len(axes), figsize=(4 * len(axes), 3.2), squeeze=False)
    for i, (axis, panel) in enumerate(zip(axes, panels[0])):
        values = [t.overrides[i].partition("=")[2] for t in done]
        numeric = all(_is_number(v) for v in values)
        xs = [float(v) for v in values] if numeric else [_position(axis, values, v) for v in values]
        panel.scatter(xs, [t.metric for t in done], c=["tab:red" if t.status == "pruned" else "tab:blue" for t in done])
        if numeric and _spans_decades(xs, axis):
            panel.set_xscale("log")
        if not numeric:
            labels = list(dict.fromkeys(values))
            panel.set_xticks(range(len(labels)), labels, rotation=20)
        panel.set_xlabel(axis.key)
        panel.set_ylabel(metric)
    fig.suptitle(
        f"{metric} per trial (red: pruned)" if any(t.status == "pruned" for t in done) else f"{metric} per trial"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _spans_decades(xs: list[float], axis: Axis) -> bool:
    """A log axis for ranges sampled on one, and for positive values two or more decades apart (learning rates)."""
    return axis.log or (bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 100)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _position(axis: Axis, values: list[str], value: str) -> int:
    order = axis.values or list(dict.fromkeys(values))
    return order.index(value) if value in order else len(order)


def write_results(folder: Path, trials: list[Trial], axes: list[Axis], metric: str) -> str:
    text = results_table(trials, axes, metric)
    (folder / "results.csv").write_text(text, encoding="utf-8")
    if any(t.metric is not None for t in trials):
        plot_results(trials, axes, metric, folder / "results.png")
    return text


def sweep_folder(root: str) -> Path:
    """``<runs root>-sweeps/N``: a new numbered folder, like a run's."""
    base = Path(f"{root}-sweeps")
    base.mkdir(parents=True, exist_ok=True)
    number = max([int(p.name) for p in base.iterdir() if p.name.isdigit()], default=0) + 1
    while True:
        try:
            (base / str(number)).mkdir()
            return base / str(number)
        except FileExistsError:
            number += 1


# --------------------------------------------------------------------------------------------- the sweep


def spec_metric(program) -> str:
    """The metric a spec's runs record: validation accuracy, else validation loss, else the training loss."""
    data = program.training.data if program.training is not None else None
    if data is not None and data.validation and data.num_classes:
        return "val_accuracy"
    return "val_loss" if data is not None and data.validation else "loss"


def validate_trials(spec_path: str, fixed: list[str], trials: list[list[str]]) -> None:
    """Load every trial's spec before any trains; the first invalid one raises its SpecError (which names
    the trial's --set values as the problem's source)."""
    from compiler.errors import SpecError
    from compiler.pipeline import load_spec

    for number, overrides in enumerate(trials, 1):
        try:
            load_spec(spec_path, overrides=[*fixed, *overrides])
        except SpecError:
            print(
                f"specc sweep: trial {number} ({' '.join(overrides)}) is invalid; nothing was trained:", file=sys.stderr
            )
            raise


def run_grid(spec_path: str, axes: list[Axis], passthrough: list[str], metric: str, folder: Path) -> list[Trial]:
    trials = [Trial(i + 1, overrides, str(folder / str(i + 1))) for i, overrides in enumerate(grid(axes))]
    for trial in trials:
        _report(run_trial(spec_path, trial, passthrough, metric), len(trials), metric)
    return trials


def _report(trial: Trial, count: int, metric: str) -> None:
    """One line per trial; a failed one's last log line says why (the whole log is beside its folder)."""
    result = f"{metric} {trial.metric:.6g}" if trial.metric is not None else "no metric"
    status = f"pruned at epoch {trial.pruned_at}" if trial.status == "pruned" else trial.status
    print(f"trial {trial.number}/{count}: {' '.join(trial.overrides)} -> {result} ({status})", flush=True)
    if trial.status == "failed":
        lines = Path(f"{trial.folder}.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
        print(f"  {lines[-1] if lines else 'no output'} (log: {trial.folder}.log)", file=sys.stderr)


def _suggest(optuna_trial, axis: Axis) -> str:
    """One sampled value as the text a --set takes."""
    if not axis.is_range:
        return optuna_trial.suggest_categorical(axis.key, axis.values)
    if axis.integer:
        return str(optuna_trial.suggest_int(axis.key, int(axis.low), int(axis.high), log=axis.log))
    return f"{optuna_trial.suggest_float(axis.key, axis.low, axis.high, log=axis.log):.4g}"  # readable; 4 digits


def _import_optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError("--search needs Optuna, an optional dependency: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def run_search(spec_path: str, axes: list[Axis], passthrough: list[str], metric: str, folder: Path, count: int, spec):
    """``count`` trials sampled by Optuna's TPE sampler (seeded), weak ones pruned by the median rule."""
    optuna, epochs = _import_optuna(), _epochs(spec, passthrough)
    study = optuna.create_study(
        direction="maximize" if maximize(metric) else "minimize",
        sampler=optuna.samplers.TPESampler(seed=spec.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    trials = []
    for number in range(1, count + 1):
        asked = study.ask()
        trial = Trial(number, [f"{a.key}={_suggest(asked, a)}" for a in axes], str(folder / str(number)))
        problem = _invalid(spec_path, passthrough, trial.overrides)
        if problem:  # a sampled value the spec cannot take: the trial fails, the search goes on
            print(f"trial {number}/{count}: {' '.join(trial.overrides)} is invalid: {problem}", file=sys.stderr)
            trial.status = "invalid"
        else:
            _report(run_trial(spec_path, trial, passthrough, metric, on_epoch=_pruning(asked, epochs)), count, metric)
        trials.append(trial)
        _tell(study, asked, trial, optuna)
    return trials


def _pruning(asked, epochs: int):
    def on_epoch(epoch: int, value: float) -> bool:
        asked.report(value, epoch)
        return epoch < epochs and asked.should_prune()  # the last epoch's run is already finishing

    return on_epoch


def _epochs(spec, passthrough: list[str]) -> int:
    """The epochs each trial runs: --epochs, else the spec's."""
    if "--epochs" in passthrough:
        return int(passthrough[passthrough.index("--epochs") + 1])
    return spec.train.epochs if spec.train else 1


def _tell(study, asked, trial: Trial, optuna) -> None:
    states = optuna.trial.TrialState
    if trial.status == "ok":
        study.tell(asked, trial.metric)
    else:
        study.tell(asked, state=states.PRUNED if trial.status == "pruned" else states.FAIL)


def _invalid(spec_path: str, passthrough: list[str], overrides: list[str]) -> str | None:
    from compiler.errors import SpecError
    from compiler.pipeline import load_spec

    fixed = [passthrough[i + 1] for i, arg in enumerate(passthrough) if arg == "--set"]
    try:
        load_spec(spec_path, overrides=[*fixed, *overrides])
    except SpecError as err:
        return str(err).splitlines()[0]
    return None


# --------------------------------------------------------------------------------------------- the command


def _split_settings(settings: list[str], search: bool) -> tuple[list[Axis], list[str]]:
    """Swept axes (several values, or a range under --search) and fixed ``--set`` arguments."""
    axes, fixed = [], []
    for setting in settings:
        if not search and _RANGE.fullmatch(setting.partition("=")[2].strip()):
            raise SweepError(f"--set {setting}: a range LOW:HIGH is sampled by --search N; a grid takes values A,B,C")
        axis = parse_axis(setting, ranges=search)
        if axis.is_range or len(axis.values) > 1 or (search and axis.values and "," in setting):
            axes.append(axis)
        else:
            fixed += ["--set", setting]
    if not axes:
        raise SweepError("nothing to sweep: give a key several values (--set optimizer.Adam.lr=1e-3,3e-4)")
    return axes, fixed


def _passthrough(args) -> list[str]:
    extra = []
    for flag, value in (("--epochs", args.epochs), ("--max-steps", args.max_steps), ("--device", args.device)):
        if value is not None:
            extra += [flag, str(value)]
    return extra


def sweep(spec_path: str, args) -> int:
    """Run the sweep ``args`` describe (``specc sweep``); print the table; 0 when a trial finished."""
    from compiler.pipeline import load_spec, lower_spec, runs_root

    if args.search is not None and not 1 <= args.search <= MAX_TRIALS:
        raise SweepError(f"--search {args.search}: give 1 to {MAX_TRIALS} trials")
    axes, fixed = _split_settings(args.set or [], args.search is not None)
    spec = load_spec(spec_path, overrides=[fixed[i + 1] for i in range(0, len(fixed), 2)])
    metric = args.metric or spec_metric(lower_spec(spec))
    passthrough = fixed + _passthrough(args)
    if args.search is None:
        validate_trials(spec_path, fixed[1::2], grid(axes))  # every trial valid before any trains
    else:
        _import_optuna()  # its absence is one line before any folder exists
    folder = sweep_folder(runs_root(spec))
    print(f"sweep: {folder}; metric {metric} ({'higher' if maximize(metric) else 'lower'} is better)", flush=True)
    if args.search is None:
        trials = run_grid(spec_path, axes, passthrough, metric, folder)
    else:
        trials = run_search(spec_path, axes, passthrough, metric, folder, args.search, spec)
    print_table(write_results(folder, trials, axes, metric))
    print(
        f"results: {folder / 'results.csv'}"
        + (f", {folder / 'results.png'}" if (folder / "results.png").exists() else "")
    )
    return 0 if any(t.status == "ok" for t in trials) else 3
