"""The loss plot of ``specc train`` (matplotlib, a dependency): loss per step, validation metrics per epoch."""

from __future__ import annotations

import os
from pathlib import Path


def plot_history(history: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history if "loss" in r]
    losses = [r["loss"] for r in history if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
    accuracy = [(r["step"], 100 * r["val_accuracy"]) for r in history if r.get("val_accuracy") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    lines = ax.plot(steps, losses, lw=1, label="training loss (per step)")
    if val:
        lines += ax.plot([s for s, _ in val], [v for _, v in val], "o-", label="validation loss (per epoch)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if losses and min(losses) > 0 and max(losses) / min(losses) > 50:
        ax.set_yscale("log")
    if accuracy:  # a second axis: accuracy in percent, per epoch
        right = ax.twinx()
        lines += right.plot(
            [s for s, _ in accuracy],
            [a for _, a in accuracy],
            "s--",
            color="tab:green",
            label="validation accuracy (per epoch)",
        )
        right.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(lines, [line.get_label() for line in lines], loc="upper right")
    fig.tight_layout()
    path = Path(path)
    temporary = path.with_name(f".tmp-{path.name}")  # written whole, then renamed over: never half a PNG
    fig.savefig(temporary, format="png")
    plt.close(fig)
    os.replace(temporary, path)
