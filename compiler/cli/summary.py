"""The layer table of ``specc summary``: computed from the lowered IR, no weights allocated."""

from __future__ import annotations

from collections.abc import Callable

from compiler.facts.shapes import format_shape
from compiler.lower.ir import BlockIR, GraphIR, LayerIR, MergeIR, ModelIR, Node
from compiler.lower.model import format_bytes


def _shape(shape: tuple | None) -> str:
    return "(?)" if shape is None else format_shape(shape)


def summary_rows(model: ModelIR) -> list[tuple[str, str, str, str]]:
    """One row per module; a merge block lists its parts, each with its output shape and parameters."""
    rows: list[tuple[str, str, str, str]] = []
    if isinstance(model.root, GraphIR):  # the model is a graph node's class: one row for it, its parts below
        _rows(model.root, 0, rows)
        out = "(several)" if model.outputs is not None else rows[0][2]  # listed under "Outputs:" below
        rows[0] = ("(model)", rows[0][1], out, rows[0][3])
        return rows
    for child in model.root.children:
        _rows(child, 0, rows)
    return rows


def _kind(node: Node, kind: str) -> str:
    """A block instance's type names its `blocks:` definition: ``ConvBNAct: Sequential``."""
    if node.use is None or kind.startswith(node.use.block):
        return kind
    return f"{node.use.block}: {kind}"


def _rows(node: Node, depth: int, rows: list) -> None:
    label = "  " * depth + node.name
    if isinstance(node, LayerIR):
        rows.append((label, _kind(node, node.type), _shape(node.out_shape), f"{node.params:,}"))
        return
    if isinstance(node, BlockIR):
        if node.module_list:  # its members run one by one: each has its own output shape
            rows.append((label, "ModuleList", "-", f"{node.params:,}"))
            for child in node.children:
                _rows(child, depth + 1, rows)
            return
        kind = _kind(node, "Sequential[named]" if node.named else "Sequential")
        rows.append((label, kind, _shape(node.out_shape), f"{node.params:,}"))
        for child in node.children:
            _rows(child, depth + 1, rows)
        return
    if isinstance(node, GraphIR):
        out = _shape(node.out_shape) if node.outputs is None else ", ".join(_shape(s) for s in node.out_shapes)
        rows.append((label, _kind(node, f"{node.class_name} (graph)"), out, f"{node.params:,}"))
        for tensor in node.tensors:
            kind = "buffer" if tensor.buffer else "Parameter"
            count = 0 if tensor.buffer else tensor.numel
            rows.append(("  " * (depth + 1) + tensor.name, kind, format_shape(tensor.shape), f"{count:,}"))
        for child in node.children:
            _rows(child, depth + 1, rows)
        return
    assert isinstance(node, MergeIR)
    rows.append((label, _kind(node, f"{node.class_name} ({node.op})"), _shape(node.out_shape), f"{node.params:,}"))
    for part in node.parts:
        role = "before" if part is node.before else "then" if part is node.then else "branch"
        params = sum(n.params for n in part.nodes)
        rows.append(
            (
                "  " * (depth + 1) + f"[{part.name}]",
                (role if part.nodes else "identity") + (f" ({part.use.block})" if part.use is not None else ""),
                _shape(part.out_shape),
                f"{params:,}",
            )
        )
        for child in part.nodes:
            _rows(child, depth + 2, rows)


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
    if model.several_inputs:
        dtypes = model.input_dtypes
        shapes = ", ".join(
            f"{name} {_shape(shape)}{' int64' if dtypes.get(name) == 'int64' else ''}"  # indices, for an Embedding
            for name, shape in (model.inputs or {}).items()
        )
        print_fn(f"Inputs: {shapes} (one sample each; batch dimension not shown)")
    else:
        print_fn(f"Input shape: {_shape(model.input_shape)} (one sample; batch dimension not shown)")
    print_fn(line)
    print_fn(fmt(header))
    print_fn(line)
    for row in rows:
        print_fn(fmt(row))
    print_fn(line)
    print_fn(f"Total params: {model.params:,}")
    print_fn(f"Parameter and buffer memory: {format_bytes(model.nbytes)}")
    evaluated = getattr(model.root, "eval_outputs", None)
    if model.outputs is not None:
        mode = " (training mode)" if evaluated is not None else ""
        print_fn(f"Outputs{mode}: " + ", ".join(f"{name} {_shape(shape)}" for name, shape in model.outputs.items()))
    if evaluated is not None:
        print_fn(f"Eval mode returns: {', '.join(evaluated)}")
    if model.outputs is None:
        print_fn(f"Output shape: {_shape(model.output_shape)}")
