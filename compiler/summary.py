"""The layer table of ``specc summary``: computed from the lowered IR, no weights allocated."""

from __future__ import annotations

from typing import Callable

from .ir import LayerIR, ModelIR
from .lower import _shape, format_bytes


def summary_rows(model: ModelIR) -> list[tuple[str, str, str, str]]:
    rows = []
    for node in model.root.walk():
        depth = node.path.count(".")
        label = "  " * depth + (node.path.rsplit(".", 1)[-1] if depth else node.path)
        kind = node.type if isinstance(node, LayerIR) else ("Sequential[named]" if node.named else "Sequential")
        params = f"{node.params:,}" if isinstance(node, LayerIR) or node.params else "0"
        rows.append((label, kind, _shape(node.out_shape), params))
    return rows


def print_summary(model: ModelIR, title: str = "", print_fn: Callable[[str], None] = print) -> None:
    """Print the layer table and totals through ``print_fn`` (so it can be captured)."""
    header = ("Layer", "Type", "Output shape", "Params")
    rows = summary_rows(model)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = "-" * (sum(widths) + 6)

    def fmt(row: tuple[str, ...]) -> str:
        return f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]:>{widths[3]}}"

    if title:
        print_fn(title)
    print_fn(f"Input shape: {_shape(model.input_shape)} (one sample; batch dimension not shown)")
    print_fn(line)
    print_fn(fmt(header))
    print_fn(line)
    for row in rows:
        print_fn(fmt(row))
    print_fn(line)
    print_fn(f"Total params: {model.params:,}")
    print_fn(f"Parameter and buffer memory: {format_bytes(model.nbytes)}")
    print_fn(f"Output shape: {_shape(model.output_shape)}")

