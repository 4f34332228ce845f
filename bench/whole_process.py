"""The fixed costs of a run: the generated script as a whole process against a careful hand-written loop.

    python bench/whole_process.py [--pairs 3] [--steps 30]

Both sides train the seed CNN (specs/mnist_cnn.yaml's model, Adam, batch 64) for ``--steps`` steps over
synthetic data (``randn`` images, integer labels: no download, no decoding) in a fresh process, from the
interpreter's start to its exit. The hand-written side (``hand_loop.py`` below, written as a careful
person would) saves model and optimizer state once at the end; the specc side is the full generated
script, run as ``python script.py --epochs 1 --device cpu --out DIR``. Interleaved hand, specc, ... ;
medians. It also counts the bytes each side leaves on disk: everything in the specc run folder against
the hand-written side's one ``torch.save({"model", "optimizer"})``. bench/run.py's ``whole_process``
and ``bytes_per_run`` rows call ``measure()``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64

HAND_LOOP = f"""\
import sys
from collections import OrderedDict

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

steps, out = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
model = nn.Sequential(OrderedDict(
    conv1=nn.Sequential(
        nn.Conv2d(1, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 128, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2)
    ),
    flatten=nn.Flatten(),
    dense=nn.Sequential(nn.Linear(25088, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 10)),
))
generator = torch.Generator().manual_seed(0)
x = torch.randn(steps * {BATCH}, 1, 28, 28, generator=generator)
y = torch.randint(0, 10, (steps * {BATCH},), generator=generator)
loader = DataLoader(TensorDataset(x, y), batch_size={BATCH}, shuffle=True)
loss_fn = nn.CrossEntropyLoss()
optimizer = optim.Adam(model.parameters(), lr=0.001)
model.train()
for step, (xb, yb) in enumerate(loader, 1):
    loss = loss_fn(model(xb), yb)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 20 == 0:
        print(f"step {{step}}: loss {{loss.item():.6f}}")
torch.save({{"model": model.state_dict(), "optimizer": optimizer.state_dict()}}, out + "/final.pt")
"""


def synthetic_spec(steps: int) -> str:
    """specs/mnist_cnn.yaml with its data replaced by ``steps`` batches of synthetic images, no validation."""
    text = (ROOT / "specs" / "mnist_cnn.yaml").read_text()
    head, rest = text.split("\ndata:\n", 1)
    tail = rest[rest.index("\nloss:") :]
    data = f"\ndata:\n  dataset: {{Synthetic: {{size: {steps * BATCH}, inputs: [1, 28, 28], classes: 10}}}}\n"
    return head + data + f"  batch_size: {BATCH}\n  shuffle: true" + tail


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _timed(cmd: list[str], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (rc {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return elapsed


def measure(pairs: int, steps: int) -> dict:
    """{"hand": [s...], "specc": [s...], "hand_bytes": n, "specc_bytes": n, "files": [...]} over ``pairs``."""
    sys.path.insert(0, str(ROOT))
    import compiler

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "spec.yaml").write_text(synthetic_spec(steps))
        (folder / "script.py").write_text(compiler.render_script(compiler.load_spec(str(folder / "spec.yaml"))))
        (folder / "hand_loop.py").write_text(HAND_LOOP)
        hand = [sys.executable, str(folder / "hand_loop.py"), str(steps)]
        specc = [sys.executable, str(folder / "script.py"), "--epochs", "1", "--device", "cpu", "--out"]
        times = {"hand": [], "specc": []}
        for i in range(pairs + 1):  # the first pair warms the page cache and is not counted
            hand_out, specc_out = folder / f"hand{i}", folder / f"specc{i}"
            t_hand = _timed([*hand, str(hand_out)], hand_out)
            t_specc = _timed([*specc, str(specc_out)], specc_out)
            if i:
                times["hand"].append(t_hand)
                times["specc"].append(t_specc)
        files = sorted(str(p.relative_to(specc_out)) for p in specc_out.rglob("*") if p.is_file())
        return {**times, "hand_bytes": _folder_bytes(hand_out), "specc_bytes": _folder_bytes(specc_out), "files": files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    result = measure(args.pairs, args.steps)
    for hand, specc in zip(result["hand"], result["specc"]):
        print(f"hand {hand:.2f} s  specc {specc:.2f} s  ratio {specc / hand:.3f}")
    ratios = [s / h for h, s in zip(result["hand"], result["specc"])]
    print(f"median ratio {statistics.median(ratios):.3f}")
    print(f"bytes: hand {result['hand_bytes']:,}  specc {result['specc_bytes']:,}  {result['files']}")
    print(f"bytes ratio {result['specc_bytes'] / result['hand_bytes']:.3f}")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
