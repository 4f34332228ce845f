"""CPU benchmarks for specc, each measured as a ratio against a hand-written baseline.

    python bench/run.py [--quick] [--only NAME]

Every row times specc and its hand-written baseline in the same process (or, for `validate`,
the same parent process), interleaved A B A B ..., so that noise from shared cores hits both
sides alike. baseline and specc are medians; `ratio` is the median over the back-to-back pairs
of specc / baseline (for builds and validate: time, lower is better; for train_cpu: images/s,
higher is better). Exit status 1 when a row misses its target.
Writes bench/results-cpu.json (with --only, the other rows already in the file are kept).
See bench/README.md for what each row means and why the targets are what they are.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.util
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn, optim

import compiler

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CNN_SPEC = "specs/mnist_cnn.yaml"
DEEP_SPEC = "bench/deep400.yaml"
RESULTS_JSON = BENCH / "results-cpu.json"
THREADS = 2


# -----------------------------------------------------------------------------
# helpers


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def interleave(baseline, specc, reps: int) -> tuple[list[float], list[float]]:
    """Run baseline(), specc(), baseline(), specc(), ... ``reps`` times each; each returns a figure."""
    b, s = [], []
    for _ in range(reps):
        b.append(baseline())
        s.append(specc())
    return b, s


def timed(fn) -> float:
    """Seconds for one call of ``fn`` (garbage collected before, collector off during)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t0
    finally:
        gc.enable()
    del result
    return elapsed


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def row(name, unit, higher_is_better, target, base_samples, specc_samples, note="") -> dict:
    """``ratio`` is the median over pairs of specc / baseline: each pair ran back to back, so a
    slow phase of the shared machine lands on both halves of a pair and cancels in its ratio."""
    base, spec = _median(base_samples), _median(specc_samples)
    ratio = _median([s / b for b, s in zip(base_samples, specc_samples)])
    ok = ratio >= target if higher_is_better else ratio <= target
    return {
        "name": name,
        "unit": unit,
        "baseline": base,
        "specc": spec,
        "ratio": ratio,
        "ratio_of_medians": spec / base,
        "target": target,
        "target_op": ">=" if higher_is_better else "<=",
        "ok": ok,
        "samples_baseline": base_samples,
        "samples_specc": specc_samples,
        "note": note,
        "measured_at": _dt.datetime.now().isoformat(timespec="seconds"),
    }


# -----------------------------------------------------------------------------
# hand-written baselines


def hand_cnn() -> nn.Sequential:
    """The tutorial's CNN, written by hand."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Sequential(
                nn.Conv2d(1, 64, 3, 1, 1),
                nn.ReLU(),
                nn.Conv2d(64, 128, 3, 1, 1),
                nn.ReLU(),
                nn.MaxPool2d(2, 2),
            ),
            flatten=nn.Flatten(),
            dense=nn.Sequential(
                nn.Linear(25088, 1024),
                nn.ReLU(),
                nn.Dropout(0.5),
                nn.Linear(1024, 10),
            ),
        )
    )


def hand_deep400() -> nn.Sequential:
    layers = []
    for _ in range(200):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    return nn.Sequential(*layers)


def assert_same_weights(spec, hand, what: str) -> None:
    torch.manual_seed(0)
    a = compiler.build_model(spec).state_dict()
    torch.manual_seed(0)
    b = hand().state_dict()
    assert list(a) == list(b), f"{what}: state_dict keys differ: {list(a)[:4]} vs {list(b)[:4]}"
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, f"{what}: {key} differs in dtype/shape"
        assert torch.equal(a[key], b[key]), f"{what}: {key} is not bitwise equal under the same seed"


# -----------------------------------------------------------------------------
# benchmarks


def bench_build_cnn(quick: bool) -> dict:
    spec = compiler.load_spec(CNN_SPEC)
    assert_same_weights(spec, hand_cnn, "build_cnn")
    reps = 3 if quick else 21
    timed(hand_cnn), timed(lambda: compiler.build_model(spec))  # warm-up
    b, s = interleave(lambda: timed(hand_cnn), lambda: timed(lambda: compiler.build_model(spec)), reps)
    return row(
        "build_cnn",
        "ms",
        False,
        1.10,
        [x * 1e3 for x in b],
        [x * 1e3 for x in s],
        "build_model(spec) vs the CNN written by hand; state dicts bitwise equal under one seed",
    )


def bench_build_400(quick: bool) -> dict:
    spec = compiler.load_spec(DEEP_SPEC)
    assert_same_weights(spec, hand_deep400, "build_400")
    reps, number = (3, 3) if quick else (31, 3)
    timed(hand_deep400), timed(lambda: compiler.build_model(spec))

    def hand() -> list:
        return [hand_deep400() for _ in range(number)]

    def specc() -> list:
        return [compiler.build_model(spec) for _ in range(number)]

    b, s = interleave(lambda: timed(hand), lambda: timed(specc), reps)
    return row(
        "build_400",
        "ms",
        False,
        1.50,
        [x * 1e3 / number for x in b],
        [x * 1e3 / number for x in s],
        f"build_model(spec) for 200 x (Linear(64,64), ReLU) vs the nn.Sequential written by hand; "
        f"each sample is the mean of {number} builds",
    )


def _specc_cmd() -> list[str]:
    """The `specc` command of THIS checkout: the console script when it runs this checkout's `compiler` (an
    editable install of it), else `python -m compiler.cli` from the repository root (same entry point)."""
    exe = Path(sys.executable).parent / "specc"
    if not exe.exists():
        exe = Path(shutil.which("specc") or "")
    if exe.is_file():
        probe = subprocess.run(
            [sys.executable, "-c", "import compiler; print(compiler.__file__)"],
            cwd="/",
            capture_output=True,
            text=True,
            check=False,
        )
        if Path(probe.stdout.strip()).resolve().parent == ROOT / "compiler":
            return [str(exe)]
    return [sys.executable, "-m", "compiler.cli"]


# Python as users run it: it caches compiled modules (a pip install compiles torch's and specc's at install time).
# A shell with PYTHONDONTWRITEBYTECODE=1 (this project's sandbox sets it) would make every run compile specc's
# source again (~0.1 s) while torch's shipped caches are read: the ratios would measure that setting.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _run_process(cmd: list[str], expect: str | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=_ENV)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or (expect and expect not in proc.stdout):
        raise SystemExit(f"{' '.join(cmd)} failed (rc {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return elapsed


def bench_validate(quick: bool) -> dict:
    reps = 2 if quick else 9
    specc_cmd = [*_specc_cmd(), "validate", CNN_SPEC]
    base_cmd = [sys.executable, "-c", "import torch"]
    _run_process(base_cmd), _run_process(specc_cmd, "OK")  # warm the page cache
    b, s = interleave(lambda: _run_process(base_cmd), lambda: _run_process(specc_cmd, "OK"), reps)
    return row(
        "validate",
        "s",
        False,
        0.25,
        b,
        s,
        "wall time of `specc validate specs/mnist_cnn.yaml` vs `python -c 'import torch'`",
    )


def bench_validate_all(quick: bool) -> dict:
    """Every shipped spec in one `specc validate` (the editor / pre-commit use) vs importing torch."""
    reps = 7 if quick else 9
    specs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.yaml"))
    specc_cmd = [*_specc_cmd(), "validate", *specs]
    base_cmd = [sys.executable, "-c", "import torch"]
    _run_process(base_cmd), _run_process(specc_cmd, "OK")
    b, s = interleave(lambda: _run_process(base_cmd), lambda: _run_process(specc_cmd, "OK"), reps)
    return row(
        "validate_all",
        "s",
        False,
        0.35,
        b,
        s,
        f"wall time of `specc validate specs/*.yaml` ({len(specs)} specs) vs `python -c 'import torch'`",
    )


def _load_generated(tmp: str):
    spec = compiler.load_spec(CNN_SPEC)
    path = Path(tmp) / "specc_bench_mnist_cnn.py"
    path.write_text(compiler.render_script(spec), encoding="utf-8")
    mod_spec = importlib.util.spec_from_file_location("specc_bench_mnist_cnn", path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_spec.name] = module
    mod_spec.loader.exec_module(module)
    params = inspect.signature(module.train).parameters
    for needed in ("objects", "device", "run", "log"):
        assert needed in params, f"the generated train() has no {needed!r} parameter: {list(params)}"
    return module


def bench_train_cpu(quick: bool) -> dict:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    # Short segments, many pairs: on a shared 2-core machine throughput swings 3x within seconds,
    # so the two halves of a pair must run close together for the swing to cancel in their ratio.
    steps, warmup, reps = (1, 1, 2) if quick else (2, 3, 40)
    device = torch.device("cpu")

    def noop(*args, **kwargs) -> None:
        pass

    # -- specc: the generated script's own build_all() and train()
    tmp = tempfile.TemporaryDirectory(prefix="specc-bench-")
    gen = _load_generated(tmp.name)
    g_model, g_loss, g_opt, g_sched, g_train, _g_val = gen.build_all()
    g_model.to(device)
    assert steps < len(g_train), "max_steps must stay inside one epoch"

    def specc_run(n: int) -> None:
        gen.train((g_model, g_loss, g_opt, g_sched, g_train, None), device, gen.Run(1, max_steps=n), log=noop)

    # -- hand-written: the tutorial's loop
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    train_set = datasets.MNIST(root="data", train=True, download=True, transform=transform)
    loader = DataLoader(train_set, batch_size=64, shuffle=True)
    torch.manual_seed(0)
    model = hand_cnn().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)

    def hand_run(n: int) -> None:
        model.train()
        running_loss = 0.0
        for i, (images, labels) in enumerate(loader):
            images, labels = images.to(device), labels.to(device)
            outputs = model(images)
            loss = criterion(outputs, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            if i + 1 >= n:
                break

    batch = 64
    hand_run(warmup), specc_run(warmup)
    b, s = interleave(
        lambda: steps * batch / timed(lambda: hand_run(steps)),
        lambda: steps * batch / timed(lambda: specc_run(steps)),
        reps,
    )
    tmp.cleanup()
    return row(
        "train_cpu",
        "img/s",
        True,
        0.97,
        b,
        s,
        f"{steps} steps x batch {batch} after {warmup} warm-up steps, {THREADS} threads; "
        "generated script's train() vs the tutorial's loop",
    )


RESNET50_SPEC = "specs/resnet50.yaml"
RESNET18_SPEC = "specs/resnet18.yaml"


def bench_build_resnet50(quick: bool) -> dict:
    from torchvision import models

    spec = compiler.load_spec(RESNET50_SPEC)
    assert_same_weights(spec, lambda: models.resnet50(weights=None), "build_resnet50")
    reps = 2 if quick else 15
    b, s = interleave(
        lambda: timed(lambda: models.resnet50(weights=None)), lambda: timed(lambda: compiler.build_model(spec)), reps
    )
    return row(
        "build_resnet50",
        "ms",
        False,
        1.10,
        [x * 1e3 for x in b],
        [x * 1e3 for x in s],
        "build_model(resnet50 spec) vs torchvision.models.resnet50(); same init, weights bitwise equal",
    )


def _load_script(spec, tmp: str, name: str):
    path = Path(tmp) / f"{name}.py"
    path.write_text(compiler.render_script(spec), encoding="utf-8")
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def bench_step_resnet18(quick: bool) -> dict:
    """One training step (forward, backward, SGD update) of three resnet18s, interleaved."""
    from torchvision import models

    spec = compiler.load_spec(RESNET18_SPEC)
    with tempfile.TemporaryDirectory(prefix="specc-bench-") as tmp:
        script = _load_script(spec, tmp, "specc_bench_resnet18")
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 1000, (8,))
    models_ = {
        "torchvision": models.resnet18(weights=None),
        "compiled": compiler.build_model(spec),
        "generated": script.build_model(),
    }
    steppers = {}
    for name, model in models_.items():
        opt = optim.SGD(model.parameters(), lr=0.01)

        def step(model=model, opt=opt) -> None:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        steppers[name] = step
    reps = 2 if quick else 30
    for step in steppers.values():
        step()
    tv, comp, gen = [], [], []
    for _ in range(reps):
        tv.append(timed(steppers["torchvision"]))
        comp.append(timed(steppers["compiled"]))
        gen.append(timed(steppers["generated"]))
    compiled = row(
        "step_resnet18_compiled",
        "ms",
        False,
        1.03,
        [t * 1e3 for t in tv],
        [t * 1e3 for t in comp],
        "a training step (batch 8, 3x64x64, SGD) of build_model(resnet18 spec) vs torchvision's resnet18",
    )
    generated = row(
        "step_resnet18_generated",
        "ms",
        False,
        1.03,
        [t * 1e3 for t in tv],
        [t * 1e3 for t in gen],
        "the same for the generated script's build_model()",
    )
    compiled["extra_rows"] = [generated]
    return compiled


def bench_validate_resnet50(quick: bool) -> dict:
    reps = 2 if quick else 9
    specc_cmd = [*_specc_cmd(), "validate", RESNET50_SPEC]
    base_cmd = [sys.executable, "-c", "import torch"]
    _run_process(base_cmd), _run_process(specc_cmd, "OK")
    b, s = interleave(lambda: _run_process(base_cmd), lambda: _run_process(specc_cmd, "OK"), reps)
    return row(
        "validate_resnet50",
        "s",
        False,
        0.25,
        b,
        s,
        "wall time of `specc validate specs/resnet50.yaml` vs `python -c 'import torch'`",
    )


FAMILY_SPEC = "specs/resnet.yaml"  # torchvision's ResNet family in one spec (blocks and loops)


def bench_build_resnet152(quick: bool) -> dict:
    """The family spec's deepest member built (and its same-seed weights checked) against torchvision's."""
    from torchvision import models

    spec = compiler.load_spec(FAMILY_SPEC, overrides=["vars.depth=152"])
    assert_same_weights(spec, lambda: models.resnet152(weights=None), "build_resnet152")
    reps = 2 if quick else 7
    b, s = interleave(
        lambda: timed(lambda: models.resnet152(weights=None)), lambda: timed(lambda: compiler.build_model(spec)), reps
    )
    return row(
        "build_resnet152",
        "ms",
        False,
        1.10,
        [x * 1e3 for x in b],
        [x * 1e3 for x in s],
        "build_model(specs/resnet.yaml --set vars.depth=152) vs torchvision.models.resnet152(); weights bitwise equal",
    )


def bench_validate_resnet152(quick: bool) -> dict:
    """Validation expands 50 Bottleneck uses through their bodies, with shapes: still far below `import torch`."""
    reps = 2 if quick else 9
    specc_cmd = [*_specc_cmd(), "validate", FAMILY_SPEC, "--set", "vars.depth=152"]
    base_cmd = [sys.executable, "-c", "import torch"]
    _run_process(base_cmd), _run_process(specc_cmd, "OK")
    b, s = interleave(lambda: _run_process(base_cmd), lambda: _run_process(specc_cmd, "OK"), reps)
    return row(
        "validate_resnet152",
        "s",
        False,
        0.25,
        b,
        s,
        "wall time of `specc validate specs/resnet.yaml --set vars.depth=152` vs `python -c 'import torch'`",
    )


def bench_import(quick: bool) -> dict:
    """`import compiler` in a fresh process vs an empty one: export, decompile and schema stay unloaded."""
    reps = 3 if quick else 15
    probe = (
        "import sys, compiler; "
        "assert not {'compiler.interop.exporting', 'compiler.interop.decompile', 'compiler.cli.schema', 'onnx', 'torch'} & set(sys.modules)"
    )
    base_cmd, specc_cmd = [sys.executable, "-c", "pass"], [sys.executable, "-c", probe]
    _run_process(base_cmd), _run_process(specc_cmd)
    b, s = interleave(lambda: _run_process(base_cmd), lambda: _run_process(specc_cmd), reps)
    return row(
        "import_compiler",
        "s",
        False,
        3.0,
        b,
        s,
        "`python -c 'import compiler'` (asserting that neither torch nor the export, decompile and schema "
        "modules are loaded) vs `python -c pass`",
    )


def bench_speed_auto_cpu(quick: bool) -> dict:
    """Issue 14, item 2: `speed: auto` against the tutorial settings, the tutorial CNN (batch 64) on the CPU,
    each run in its own process through the script's main (reuse_memory is process-wide: bench/speed_processes.py)."""
    import speed_processes

    count, (start, stop) = (1, (2, 4)) if quick else (6, (10, 50))
    tutorial, auto = speed_processes.pairs(count, start, stop, [])
    return row(
        "speed_auto_cpu",
        "img/s",
        True,
        1.8,
        tutorial,
        auto,
        f"generated scripts of {CNN_SPEC} run by their main(): `speed: auto` vs the tutorial settings, "
        f"steps {start}->{stop} (batch {speed_processes.BATCH}), {count} pairs of processes, tutorial then auto",
    )


def bench_whole_process(quick: bool) -> dict:
    """Issue 19, item 6: the full generated script as a whole process vs a careful hand-written loop that saves
    model and optimizer state once (bench/whole_process.py); also the bytes each run leaves on disk."""
    import whole_process

    pairs, steps = (1, 2) if quick else (3, 30)
    result = whole_process.measure(pairs, steps)
    timing = row(
        "whole_process",
        "s",
        False,
        1.10,
        result["hand"],
        result["specc"],
        f"`python script.py --epochs 1` of the seed CNN over synthetic data ({steps} steps, batch "
        f"{whole_process.BATCH}), whole process, vs a hand-written loop with one torch.save at the end",
    )
    size = row(
        "bytes_per_run",
        "MB",
        False,
        1.10,
        [result["hand_bytes"] / 1e6],
        [result["specc_bytes"] / 1e6],
        f"bytes a run leaves ({', '.join(result['files'])}) vs torch.save of model + optimizer state",
    )
    return {**timing, "extra_rows": [size]}


BENCHMARKS = OrderedDict(
    build_cnn=bench_build_cnn,
    build_400=bench_build_400,
    validate=bench_validate,
    validate_all=bench_validate_all,
    train_cpu=bench_train_cpu,
    build_resnet50=bench_build_resnet50,
    step_resnet18=bench_step_resnet18,
    validate_resnet50=bench_validate_resnet50,
    build_resnet152=bench_build_resnet152,
    validate_resnet152=bench_validate_resnet152,
    import_compiler=bench_import,
    speed_auto_cpu=bench_speed_auto_cpu,
    whole_process=bench_whole_process,
)


# -----------------------------------------------------------------------------
# output


def _fmt(value: float, unit: str) -> str:
    if unit == "img/s":
        return f"{value:,.1f} img/s"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:.2f} {unit}"


def table(rows: list[dict]) -> str:
    header = ["benchmark", "baseline", "specc", "ratio", "target", "ok"]
    body = [
        [
            r["name"],
            _fmt(r["baseline"], r["unit"]),
            _fmt(r["specc"], r["unit"]),
            f"{r['ratio']:.3f}",
            f"{r['target_op']} {r['target']:.2f}",
            "yes" if r["ok"] else "NO",
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), sep, *(fmt(line) for line in body)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2-3 repeats, a few steps: a smoke run that every row still runs"
    )
    parser.add_argument("--only", metavar="NAME", choices=list(BENCHMARKS), help="run one benchmark")
    parser.add_argument("--json", metavar="PATH", type=Path, default=RESULTS_JSON, help="where to write the results")
    args = parser.parse_args(argv)

    os.chdir(ROOT)  # the specs and the MNIST root `data` are relative to the repository
    torch.set_num_threads(THREADS)
    names = [args.only] if args.only else list(BENCHMARKS)
    rows, started = [], time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = BENCHMARKS[name](args.quick)
        for r in [result, *result.pop("extra_rows", [])]:
            r["bench"], r["quick"] = name, args.quick
            r["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(r)
            print(f"  {r['name']}: ratio {r['ratio']:.3f} ({r['seconds']} s)", file=sys.stderr, flush=True)

    print(table(rows))
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)

    meta = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": THREADS,
        "quick": args.quick,
    }
    previous = {}
    if args.only and args.json.exists():
        try:
            previous = {r["name"]: r for r in json.loads(args.json.read_text())["results"]}
        except (ValueError, KeyError):
            previous = {}
    merged = {**previous, **{r["name"]: r for r in rows}}
    ordered = list(merged.values())
    args.json.write_text(json.dumps({"meta": meta, "results": ordered}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}", file=sys.stderr)
    status = 0 if all(r["ok"] for r in rows) else 1
    if torch.cuda.is_available() and not args.only:  # the GPU part, every option at batch 64 and 512
        import subprocess

        gpu = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "gpu.py"), "--out", "bench/gpu-results"]
            + (["--quick"] if args.quick else []),
            check=False,
        )
        status = status or gpu.returncode
    else:
        print("no CUDA GPU here: the GPU part is `python bench/gpu.py` on a CUDA machine", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
