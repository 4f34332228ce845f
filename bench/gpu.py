"""GPU throughput of the tutorial CNN: hand-written loops vs the generated script, option by option.

Prepared to run in one go on a CUDA machine, from the repository root:

    python bench/gpu.py --out bench/gpu-results      # writes results-gpu.json and RESULTS-gpu.md there

Data: the shipped 4,000-digit MNIST sample tiled to 60,000 images (MNIST's training size) in
torchvision's raw layout under a temporary folder, so every loop reads the real MNIST loader.
Each figure is images/s in steady state: (steps(N) - steps(W)) / (time(N) - time(W)), so start-up,
compilation and graph capture cancel out. Hand-written and generated rows run in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import compiler
from compiler.workflow.check import import_script

ROOT = Path(__file__).resolve().parent.parent

SPEC = """
name: bench_{tag}
input: [1, 28, 28]
model:
  conv1:
    - Conv2d: {{out_channels: 64, kernel_size: 3, stride: 1, padding: 1}}
    - ReLU
    - Conv2d: {{out_channels: 128, kernel_size: 3, stride: 1, padding: 1}}
    - ReLU
    - MaxPool2d: {{stride: 2, kernel_size: 2}}
  flatten: Flatten
  dense:
    - Linear: {{out_features: 1024}}
    - ReLU
    - Dropout: {{p: 0.5}}
    - Linear: {{out_features: 10}}
data:
  dataset: {{MNIST: {{root: {root}}}}}
  transforms: [ToTensor, {{Normalize: {{mean: [0.5], std: [0.5]}}}}]
  batch_size: {batch}
  num_workers: {workers}
loss: CrossEntropyLoss
optimizer: {{Adam: {{lr: 0.001{adam}}}}}
train:
  epochs: 1000
  log_every: 1000000
  device: cuda
{options}
"""

VARIANTS = {
    "tutorial settings": ("", "", 0),
    "tutorial settings, 8 workers": ("", "", 8),
    "bf16, channels_last, data on device, fused Adam": (
        "  precision: bf16\n  channels_last: true\n  data_on_device: true",
        ", fused: true",
        8,
    ),
    "+ CUDA graph (whole step)": (
        "  precision: bf16\n  channels_last: true\n  data_on_device: true\n  cuda_graph: true",
        ", fused: true",
        8,
    ),
    "+ torch.compile (default)": (
        "  precision: bf16\n  channels_last: true\n  data_on_device: true\n  compile: default",
        ", fused: true",
        8,
    ),
    "speed: auto": ("  speed: auto", "", 8),
    "speed: auto, compile max-autotune-no-cudagraphs": ("  speed: auto\n  compile: max-autotune-no-cudagraphs", "", 8),
}


def tile_mnist(folder: Path, copies: int = 15) -> None:
    """Write MNIST raw files holding the shipped sample `copies` times (60,000 training images)."""
    raw_in, raw_out = ROOT / "data" / "MNIST" / "raw", folder / "MNIST" / "raw"
    raw_out.mkdir(parents=True, exist_ok=True)
    for kind, header in (("train-images-idx3-ubyte", 16), ("train-labels-idx1-ubyte", 8)):
        blob = (raw_in / kind).read_bytes()
        count = int.from_bytes(blob[4:8], "big")
        head = blob[:4] + (count * copies).to_bytes(4, "big") + blob[8:header]
        (raw_out / kind).write_bytes(head + blob[header:] * copies)
    for kind in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw_out / kind).write_bytes((raw_in / kind).read_bytes())


def tutorial_cnn() -> nn.Module:
    conv1 = nn.Sequential(
        nn.Conv2d(1, 64, 3, 1, 1),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, 1, 1),
        nn.ReLU(),
        nn.MaxPool2d(stride=2, kernel_size=2),
    )
    dense = nn.Sequential(nn.Linear(14 * 14 * 128, 1024), nn.ReLU(), nn.Dropout(p=0.5), nn.Linear(1024, 10))
    return nn.Sequential(OrderedDict([("conv1", conv1), ("flatten", nn.Flatten()), ("dense", dense)]))


def steady_rate(run, batch: int, warm: int, steps: int) -> float:
    """images/s from the difference of two timed runs, so fixed start-up costs cancel."""
    run(warm)  # compile, capture, caches
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    run(warm)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    run(steps)
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return (steps - warm) * batch / ((t2 - t1) - (t1 - t0))


def hand_tutorial(root: str, batch: int, workers: int):
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=[0.5], std=[0.5])])
    data = datasets.MNIST(root=root, transform=tf, train=True)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers)
    model = tutorial_cnn().cuda()
    cost = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters())

    def run(steps):
        done = 0
        while done < steps:
            for x, y in loader:
                x, y = x.cuda(), y.cuda()
                outputs = model(x)
                loss = cost(outputs, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss.item()
                done += 1
                if done >= steps:
                    return

    return run


def hand_best(root: str, batch: int):
    """Preloaded, normalised once, bf16 autocast, channels_last, fused Adam, no per-step sync."""
    from torchvision import datasets

    data = datasets.MNIST(root=root, train=True)
    x_all = ((data.data.float() / 255 - 0.5) / 0.5).unsqueeze(1).cuda().contiguous(memory_format=torch.channels_last)
    y_all = data.targets.cuda()
    model = tutorial_cnn().cuda().to(memory_format=torch.channels_last)
    cost = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), fused=True)

    def run(steps):
        done = 0
        while done < steps:
            order = torch.randperm(len(x_all), device="cuda")
            for i in range(0, len(x_all) - batch + 1, batch):
                index = order[i : i + batch]
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = cost(model(x_all[index]), y_all[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                done += 1
                if done >= steps:
                    return

    return run


def generated(root: str, batch: int, options: str, adam: str, workers: int, folder: str, tag: str):
    text = SPEC.format(tag=tag, root=json.dumps(root), batch=batch, options=options, adam=adam, workers=workers)
    spec = compiler.parse_spec(text, f"{tag}.yaml")
    script = import_script(compiler.render_script(spec), spec.name, folder)
    objects = script.build_all("cuda")

    def run(steps):  # training throughput: no validation passes (the hand-written loops have none)
        script.train((*objects[:5], None), torch.device("cuda"), script.Run(1, max_steps=steps), log=lambda *a: None)

    return run, spec, script


def gpu_equivalence(root: str, folder: str) -> dict:
    """On the GPU: compiled objects vs the script's own, 20 steps of the bf16 graph-free fast path."""
    options, adam, _ = VARIANTS["bf16, channels_last, data on device, fused Adam"]
    text = SPEC.format(tag="equiv", root=json.dumps(root), batch=64, options=options, adam=adam, workers=0)
    spec = compiler.parse_spec(text, "equiv.yaml")
    script = import_script(compiler.render_script(spec), spec.name, folder)
    results = {}
    builders = (("compiled", lambda: tuple(compiler.build_training(spec, "cuda"))), ("generated", script.build_all))
    for name, build in builders:  # build, then train, one after the other: each builder seeds itself
        objects = build() if name == "compiled" else build("cuda")
        run = script.Run(1, max_steps=20)
        script.train(objects, torch.device("cuda"), run, log=lambda *a: None)
        results[name] = ([r["loss"] for r in run.history if "loss" in r], objects[0].state_dict())
    la, wa = results["compiled"]
    lb, wb = results["generated"]
    return {
        "steps": 20,
        "max_abs_loss_diff": max(abs(a - b) for a, b in zip(la, lb)),
        "max_abs_weight_diff": max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa),
        "bitwise_equal_weights": all(torch.equal(wa[k], wb[k]) for k in wa),
    }


def accuracy_run(folder: str) -> dict:
    """specs/mnist_cnn_fast.yaml (speed: auto, 5 epochs) on the real 4,000-digit sample: held-out accuracy."""
    spec = compiler.load_spec(ROOT / "specs" / "mnist_cnn_fast.yaml")
    script = import_script(compiler.render_script(spec), spec.name, folder)
    objects = script.build_all("cuda")
    start = time.perf_counter()
    run = script.Run(spec.train.epochs)
    script.train(objects, torch.device("cuda"), run, log=lambda *a: None)
    torch.cuda.synchronize()
    accuracy = [r["val_accuracy"] for r in run.history if "val_accuracy" in r][-1]
    return {"epochs": spec.train.epochs, "val_accuracy": accuracy, "seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/gpu-results")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variants", nargs="*", help="only these specc rows (names as in VARIANTS), and no extras")
    parser.add_argument("--batches", nargs="*", type=int, default=[64, 512])
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    assert torch.cuda.is_available(), "this benchmark needs a CUDA GPU"
    torch.backends.cudnn.benchmark = False
    meta = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    rows, extra = [], {}
    workdir = tempfile.mkdtemp()
    root = os.path.join(workdir, "mnist60k")
    tile_mnist(Path(root))

    def save():
        (out / "results-gpu.json").write_text(json.dumps({"meta": meta, "rows": rows, **extra}, indent=1))

    def measure(name, batch, make, steps, warm=10):
        try:
            torch.manual_seed(0)
            rate = steady_rate(make(), batch, warm, steps)
            rows.append({"loop": name, "batch": batch, "images_per_s": rate})
            print(f"{name:<55} batch {batch:>4}: {rate:>10,.0f} img/s", flush=True)
        except Exception as err:
            rows.append({"loop": name, "batch": batch, "error": f"{type(err).__name__}: {err}"})
            print(f"{name} batch {batch}: FAILED {type(err).__name__}: {err}", flush=True)
            traceback.print_exc()
        save()

    for batch in args.batches:
        slow = 60 if args.quick else 150
        fast = 200 if args.quick else (1500 if batch == 64 else 400)
        if not args.variants:
            measure("hand-written: tutorial's way (0 workers)", batch, lambda b=batch: hand_tutorial(root, b, 0), slow)
        measure(
            "hand-written: preloaded, bf16, channels_last, fused Adam", batch, lambda b=batch: hand_best(root, b), fast
        )
        for tag, (options, adam, workers) in VARIANTS.items():
            if args.variants and tag not in args.variants:
                continue
            n = slow if "tutorial" in tag else fast
            label = f"specc: {tag}"
            measure(
                label,
                batch,
                lambda b=batch, o=options, a=adam, w=workers: generated(root, b, o, a, w, workdir, f"b{b}_{len(rows)}")[
                    0
                ],
                n,
            )

    def deterministic_equivalence():
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            return gpu_equivalence(root, workdir)
        finally:
            torch.use_deterministic_algorithms(False)

    extras = (
        ()
        if args.variants
        else (
            ("gpu_equivalence", lambda: gpu_equivalence(root, workdir)),
            ("gpu_equivalence_deterministic", deterministic_equivalence),
            ("accuracy", lambda: accuracy_run(workdir)),
        )
    )
    for name, fn in extras:
        try:
            extra[name] = fn()
        except Exception as err:
            extra[name] = {"error": f"{type(err).__name__}: {err}"}
            traceback.print_exc()
        print(name, extra[name], flush=True)
        save()
    lines = [
        f"GPU: {meta['gpu']}, torch {meta['torch']}, {meta['date']}",
        "",
        "| loop | batch | images/s |",
        "| --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['loop']} | {r['batch']} | {r.get('images_per_s', 0):,.0f} |"
            if "images_per_s" in r
            else f"| {r['loop']} | {r['batch']} | failed: {r['error'][:80]} |"
        )
    (out / "RESULTS-gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
