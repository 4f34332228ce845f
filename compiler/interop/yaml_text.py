"""The spec nodes written as YAML text: plain scalars where YAML reads them back the same, flow style for
short lists, repeats compressed."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from compiler.interop.nodes import Block, Cond, Dataflow, Folded, GraphStep, Layer, Loop, Merge, Repeat, TensorDecl, Use

# --------------------------------------------------------------------------- YAML text

_PLAIN = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_.\-]*\Z")  # a name, or a `$parameter`
_RESERVED_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        if math.isnan(value):
            return ".nan"
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED_WORDS:
            return value
        return json.dumps(value)
    raise TypeError(f"cannot write {value!r} in a spec")


def _mapping(args: Any) -> str:
    return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in args) + "}"


def _key(name: str) -> str:
    """A child's name as a mapping key (a loop's name pattern, ``"layer{i + 1}"``, quoted)."""
    return name if _PLAIN.match(name) and name.lower() not in _RESERVED_WORDS else json.dumps(name)


def _flow(node: Any) -> str | None:
    """One-line text for a node, or None where it needs lines."""
    if isinstance(node, Layer):
        if not node.args:
            return node.type
        if node.short:
            return f"{{{node.type}: {_scalar(node.args[0][1])}}}"
        return f"{{{node.type}: {_mapping(node.args)}}}"
    if isinstance(node, Use):
        return f"{{{node.name}: {_mapping(node.args)}}}" if node.args else node.name
    if isinstance(node, Block) and node.named and all(isinstance(n, (Layer, Use)) for _, n in node.items):
        return "{" + ", ".join(f"{_key(k)}: {_flow(n)}" for k, n in node.items) + "}"
    if (
        isinstance(node, Block)
        and not node.named
        and all(isinstance(n, (Layer, Use, Loop, Repeat)) for _, n in node.items)
    ):
        parts = [_flow(n) for _, n in node.items]
        return "[" + ", ".join(parts) + "]" if all(parts) else None
    if isinstance(node, Repeat) and all(isinstance(n, (Layer, Use)) for n in node.body):
        return f"{{repeat: {node.times}, body: [{', '.join(_flow(n) for n in node.body)}]}}"
    if isinstance(node, Loop) and isinstance(node.body, (Layer, Use)):
        return f"{{repeat: {node.times}, as: {node.index}, body: {_flow(node.body)}}}"
    return None


def _compress(items: list[Any]) -> list[Any]:
    """Consecutive equal entries of a list as ``repeat``."""
    out: list[Any] = []
    i, n = 0, len(items)
    while i < n:
        best = (1, 1)  # (period, count)
        for period in range(1, (n - i) // 2 + 1):
            count = 1
            while (
                i + (count + 1) * period <= n
                and items[i + count * period : i + (count + 1) * period] == items[i : i + period]
            ):
                count += 1
            if count > 1 and period * count > best[0] * best[1]:
                best = (period, count)
        period, count = best
        if count > 1:
            out.append(Repeat(count, tuple(items[i : i + period])))
        else:
            out.append(items[i])
        i += period * count
    return out


class _Writer:
    def __init__(self):
        self.lines: list[str] = []

    def entry(self, indent: int, key: str, node: Any) -> None:
        """``key: node`` at ``indent``."""
        flow = _flow(node)
        pad = " " * indent
        key = _key(key)
        if flow is not None and len(pad) + len(key) + 2 + len(flow) <= 120:
            self.lines.append(f"{pad}{key}: {flow}")
            return
        self.lines.append(f"{pad}{key}:")
        self.body(indent + 2, node)

    def item(self, indent: int, node: Any) -> None:
        """``- node`` at ``indent``."""
        flow = _flow(node)
        pad = " " * indent
        if flow is not None and len(pad) + 2 + len(flow) <= 120:
            self.lines.append(f"{pad}- {flow}")
            return
        start = len(self.lines)
        self.body(indent + 2, node)
        first = self.lines[start]
        self.lines[start] = pad + "- " + first[indent + 2 :]

    def body(self, indent: int, node: Any) -> None:
        pad = " " * indent
        if isinstance(node, (Layer, Use)):
            name = node.type if isinstance(node, Layer) else node.name
            if not node.args:
                self.lines.append(pad + name)
                return
            self.lines.append(f"{pad}{name}:")
            for k, v in node.args:
                self.lines.append(f"{pad}  {k}: {_scalar(v)}")
        elif isinstance(node, (Loop, Cond)):
            self.control(indent, node)
        elif isinstance(node, Dataflow):
            self.dataflow(indent, node)
        elif isinstance(node, Block) and node.named:
            for name, child in node.items:
                self.entry(indent, name, child)
        elif isinstance(node, Block):
            items = [child for _, child in node.items]
            for child in items if node.origin == "ModuleList" else _compress(items):  # a list called by member
                self.item(indent, child)
        elif isinstance(node, Repeat):
            self.lines.append(f"{pad}repeat: {node.times}")
            self.lines.append(f"{pad}body:")
            for child in node.body:
                self.item(indent + 2, child)
        elif isinstance(node, Merge):
            self.lines.append(f"{pad}merge: {node.op}")
            if node.op == "cat" and node.dim != 1:
                self.lines.append(f"{pad}dim: {node.dim}")
            if node.class_name:
                self.lines.append(f"{pad}class: {node.class_name}")
            if node.before:
                self.entry(indent, "before", Block(node.before, named=True))
            self.lines.append(f"{pad}branches:")
            for name, part in node.branches:
                self.entry(indent + 2, name, Layer("Identity") if part is None else part)
            if node.then:
                self.entry(indent, "then", Block(node.then, named=True))
        else:
            raise TypeError(node)

    def dataflow(self, indent: int, node: Dataflow) -> None:
        """A graph node (§15): ``class:``, ``params:``, ``buffers:``, its steps under ``graph:``, ``output:``."""
        pad = " " * indent
        if node.class_name:
            self.lines.append(f"{pad}class: {node.class_name}")
        for key, buffer in (("params", False), ("buffers", True)):
            tensors = [t for t in node.tensors if t.buffer == buffer]
            if tensors:
                self.lines.append(f"{pad}{key}:")
                self.lines += [f"{pad}  {_key(t.name)}: {_tensor(t)}" for t in tensors]
        if node.inputs != ("x",):
            self.lines.append(f"{pad}inputs: {_scalar(list(node.inputs))}")
        if node.modules:
            self.lines.append(f"{pad}modules:")
            for name, module in node.modules:
                self.entry(indent + 2, name, module)
        self.lines.append(f"{pad}graph:")
        for step in node.steps:
            self.step(indent + 2, step)
        if node.output_keys is not None:
            pairs = ", ".join(f"{json.dumps(k)}: {v}" for k, v in zip(node.output_keys, node.output))
            self.lines.append(f"{pad}output: {{{pairs}}}")
        elif node.output is not None:
            self.lines.append(
                f"{pad}output: {_scalar(list(node.output) if isinstance(node.output, tuple) else node.output)}"
            )
        if node.eval_output is not None:
            value = list(node.eval_output) if isinstance(node.eval_output, tuple) else node.eval_output
            self.lines.append(f"{pad}eval_output: {_scalar(value)}")

    def step(self, indent: int, step: GraphStep) -> None:
        """``- name: node`` with ``from:``, ``with:``, ``as:`` beside it, or ``- {op: [a, b], dim: D, as: v}``."""
        pad = " " * indent
        if step.call:
            parts = [f"call: {step.call}"]
            if step.inputs is not None:
                parts.append(f"from: {_scalar(step.inputs[0] if len(step.inputs) == 1 else list(step.inputs))}")
            if step.keywords:
                parts.append(f"with: {_mapping(step.keywords)}")
            if step.outputs is not None:
                parts.append(f"as: {_scalar(list(step.outputs) if step.unpack else step.outputs[0])}")
            if step.training:
                parts.append("when: training")
            self.lines.append(f"{pad}- {{{', '.join(parts)}}}")
            return
        if step.op:
            operands = step.inputs[0] if step.op == "expand_batch" else list(step.inputs)
            parts = [f"{step.op}: {_scalar(operands)}"]
            if step.op in ("cat", "stack"):
                parts.append(f"dim: {step.dim}")
            if step.op == "interpolate":
                parts.append(f"mode: {_scalar(step.mode)}")
            if step.outputs:
                parts.append(f"as: {step.outputs[0]}")
            self.lines.append(f"{pad}- {{{', '.join(parts)}}}")
            return
        start = len(self.lines)
        self.entry(indent + 2, step.name, step.node)
        self.lines[start] = pad + "- " + self.lines[start][indent + 2 :]
        extra = []
        if step.inputs is not None:
            extra.append(("from", _scalar(step.inputs[0] if len(step.inputs) == 1 else list(step.inputs))))
        if step.keywords:
            extra.append(("with", _mapping(step.keywords)))
        if step.outputs is not None:
            extra.append(("as", _scalar(list(step.outputs) if step.unpack else step.outputs[0])))
        if step.training:
            extra.append(("when", "training"))
        self.lines += [f"{pad}  {k}: {v}" for k, v in extra]

    def control(self, indent: int, node: Loop | Cond) -> None:
        """A loop (``repeat: N`` with ``as:``) or an ``if:`` part."""
        pad = " " * indent
        if isinstance(node, Loop):
            self.lines += [f"{pad}repeat: {node.times}", f"{pad}as: {node.index}"]
            self.entry(indent, "body", node.body)
            return
        self.lines.append(f"{pad}if: {_scalar(node.cond)}")
        self.entry(indent, "then", node.then)
        if node.otherwise is not None:
            self.entry(indent, "else", node.otherwise)

    def folded(self, folded: Folded) -> None:
        """``defaults:`` and ``blocks:``, before ``model:``."""
        if folded.defaults:
            self.lines.append("defaults:")
            self.lines += [f"  {kind}: {_mapping(args)}" for kind, args in folded.defaults]
        if folded.blocks:
            self.lines.append("blocks:")
        for block in folded.blocks:
            self.lines.append(f"  {block.name}:")
            if block.params:
                given = dict(block.defaults)
                params = [f"{k}: {_scalar(given[k]) if k in given else t}" for k, t in block.params]
                self.lines.append(f"    params: {{{', '.join(params)}}}")
            self.entry(4, "body", block.body)


def _tensor(tensor: TensorDecl) -> str:
    """``{shape: [1, 1, 768]}`` (zeros: the state dict holds the values), with ``dtype:`` where not float32."""
    parts = [f"shape: {_scalar(list(tensor.shape))}"]
    if tensor.dtype != "float32":
        parts.append(f"dtype: {tensor.dtype}")
    return "{" + ", ".join(parts) + "}"


def render_yaml(
    name: str,
    input_shape: tuple[int, ...] | dict[str, tuple[int, ...]],
    root: Any,
    header: list[str],
    folded: Folded | None = None,
) -> str:
    """The spec's text; ``folded`` (the block form) gives its ``defaults:``, ``blocks:`` and model. Several inputs
    (``{name: shape}``) are written as ``input:``'s mapping, which names the top-level graph's values."""
    writer = _Writer()
    writer.lines += [f"# {line}" if line else "#" for line in header]
    writer.lines.append(f"name: {name}")
    if isinstance(input_shape, dict):
        shapes = ", ".join(f"{_key(k)}: {_scalar(list(v))}" for k, v in input_shape.items())
        writer.lines.append(f"input: {{{shapes}}}")
    else:
        writer.lines.append(f"input: {_scalar(list(input_shape))}")
    if folded is not None:
        writer.folded(folded)
        root = folded.root
    if isinstance(input_shape, dict) and isinstance(root, Dataflow):
        if root.inputs != tuple(input_shape):
            raise AssertionError(f"the model's inputs {root.inputs} are not input's {tuple(input_shape)}")
        root = dataclasses.replace(root, inputs=("x",))  # `input:` names them: no `inputs:` at the top level
    if isinstance(root, Layer):
        root = Block((("0", root),), named=False)
    writer.entry(0, "model", root)
    return "\n".join(writer.lines) + "\n"


def line_count(node: Any) -> int:
    """How many lines ``node`` takes written under a key."""
    writer = _Writer()
    writer.entry(0, "x", node)
    return len(writer.lines)
