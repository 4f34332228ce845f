"""Where the GPU loops spend their time: torch.profiler over steady-state steps (CUDA machine).

    python bench/gpu_profile.py --out bench/gpu-results

Profiles the hand-written best loop and specc's fast loop at batch 512, and specc's CUDA-graph
loop at batch 64; also checks compiled vs generated equivalence on the GPU with deterministic
algorithms (bitwise expected) and without (a stated tolerance), and the fast spec's accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu

import compiler
from compiler.workflow.check import import_script


def profile(run, steps: int, label: str, lines: list[str]) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    run(10)
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        run(steps)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    averages = prof.key_averages()
    gpu_total = sum(e.self_device_time_total for e in averages) / 1e3
    lines.append(
        f"## {label}: {steps} steps, wall {wall * 1e3:.1f} ms, GPU busy {gpu_total:.1f} ms "
        f"({gpu_total / (wall * 1e3):.0%})"
    )
    lines.append("```")
    lines.append(averages.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))
    lines.append(averages.table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=60))
    lines.append("```")


def equivalence(root: str, folder: str, deterministic: bool) -> dict:
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return gpu.gpu_equivalence(root, folder)
    finally:
        torch.use_deterministic_algorithms(False)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/gpu-results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp()
    root = os.path.join(folder, "mnist60k")
    gpu.tile_mnist(Path(root))
    lines = [f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}", ""]
    options, adam, workers = gpu.VARIANTS["bf16, channels_last, data on device, fused Adam"]
    profile(gpu.hand_best(root, 512), 60, "hand-written best, batch 512", lines)
    run, _, _ = gpu.generated(root, 512, options, adam, workers, folder, "p512")
    profile(run, 60, "specc bf16/channels_last/data on device/fused Adam, batch 512", lines)
    options_g, adam_g, _ = gpu.VARIANTS["+ CUDA graph (whole step)"]
    run, _, _ = gpu.generated(root, 64, options_g, adam_g, workers, folder, "p64g")
    profile(run, 300, "specc CUDA graph, batch 64", lines)
    run, _, _ = gpu.generated(root, 64, options_g, ", fused: true", workers, folder, "p64gf")
    rate = gpu.steady_rate(run, 64, 10, 1500)
    lines.append(f"specc CUDA graph with fused Adam, batch 64: {rate:,.0f} img/s")
    results = {
        "equivalence_deterministic": equivalence(root, folder, True),
        "equivalence_default": equivalence(root, folder, False),
    }
    spec = compiler.load_spec(gpu.ROOT / "specs" / "mnist_cnn_fast.yaml")
    script = import_script(compiler.render_script(spec), spec.name, folder)
    start = time.perf_counter()
    run = script.Run(1)
    script.train(script.build_all("cuda"), torch.device("cuda"), run, log=lambda *a: None)
    history = run.history
    torch.cuda.synchronize()
    results["accuracy_mnist_cnn_fast_5_epochs"] = {
        "val_accuracy": [r["val_accuracy"] for r in history if "val_accuracy" in r][-1],
        "seconds": time.perf_counter() - start,
    }
    lines.append("```json\n" + json.dumps(results, indent=1) + "\n```")
    (out / "PROFILE-gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
