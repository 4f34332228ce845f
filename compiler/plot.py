"""The loss-curve PNG of ``specc train``: matplotlib when installed, else a plain raster via torchvision."""

from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict], path: Path, title: str = "") -> None:
    steps = [r["step"] for r in history if "loss" in r]
    losses = [r["loss"] for r in history if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _raster(steps, losses, val, path)
        return
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, lw=1, label="training loss (per step)")
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", label="validation loss (per epoch)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if losses and min(losses) > 0 and max(losses) / min(losses) > 50:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _raster(steps, losses, val, path: Path, width: int = 640, height: int = 360) -> None:
    import torch
    from torchvision.io import write_png

    image = torch.full((3, height, width), 255, dtype=torch.uint8)
    margin = 30
    image[:, height - margin, margin : width - margin] = 0
    image[:, margin : height - margin, margin] = 0
    if not losses:
        write_png(image, str(path))
        return
    low, high = min(losses + [v for _, v in val]), max(losses + [v for _, v in val])
    span_y = (high - low) or 1.0
    last = max(steps[-1], 1)

    def point(step, value):
        x = margin + int((width - 2 * margin - 1) * step / last)
        y = height - margin - 1 - int((height - 2 * margin - 1) * (value - low) / span_y)
        return x, y

    for (s0, v0), (s1, v1) in zip(zip(steps, losses), zip(steps[1:], losses[1:])):
        (x0, y0), (x1, y1) = point(s0, v0), point(s1, v1)
        for t in range(max(abs(x1 - x0), abs(y1 - y0), 1) + 1):
            f = t / max(abs(x1 - x0), abs(y1 - y0), 1)
            image[:, round(y0 + f * (y1 - y0)), round(x0 + f * (x1 - x0))] = torch.tensor(
                [31, 119, 180], dtype=torch.uint8
            )
    for s, v in val:
        x, y = point(s, v)
        image[:, max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3] = torch.tensor([255, 127, 14], dtype=torch.uint8)[
            :, None, None
        ]
    write_png(image, str(path))
