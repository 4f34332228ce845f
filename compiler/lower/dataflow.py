"""Lowering of a graph node (§15): named values, steps on them, parameters and buffers outside modules.

Every value's whole shape is tracked (the batch written ``N``, see ``facts/shapes/dataflow.py``), so
each edge is checked: a child gets one sample's shape as in a stack, an operation the whole shapes. The
names are checked here too (unknown, used before defined, defined twice, never used), each error located
at the step that names it.
"""

from __future__ import annotations

from typing import Any

from compiler.common.literal import literal
from compiler.common.suggest import did_you_mean
from compiler.facts import param_rules
from compiler.facts.registry import REGISTRY
from compiler.facts.shapes import ShapeError
from compiler.facts.shapes.dataflow import (
    BATCH,
    MULTI_INPUT_RULES,
    broadcast,
    concatenate,
    expand_batch,
    format_value,
    matmul,
)
from compiler.front.load import Path_
from compiler.front.spec import Graph, Step
from compiler.lower.ir import Arg, GraphIR, StepIR, TensorIR

INPUT = "x"  # the graph node's input value


def class_name_of(name: str) -> str:
    """``encoder_layer`` -> ``EncoderLayer``: a graph node's class unless it says `class:`."""
    words = [w for w in name.replace("-", "_").split("_") if w]
    text = "".join(w[:1].upper() + w[1:] for w in words if w.isidentifier() or w.isalnum())
    return text if text[:1].isalpha() and text.isascii() else "Graph"


class _Values:
    """The values a graph has defined so far: shape (None: unknown), where defined, and whether used."""

    def __init__(self, graph: Graph, problems: Any):
        self.problems = problems
        self.shapes: dict[str, Any] = {}
        self.where: dict[str, Path_] = {}
        self.tuples: dict[str, int] = {}  # a value that is a whole tuple (LSTM's without `as:`): its length
        self.used: set[str] = set()
        self.buffers = {t.name for t in graph.tensors if t.buffer}
        self.items: dict[str | None, bool] = {}  # whether a value is an item unpacked from a tuple
        self.later = {name: step for step in graph.steps for name in _defined(step)}

    def define(self, name: str | None, shape: Any, where: Path_) -> None:
        if name is None:
            return
        if name in self.where:
            line = self.problems.source.locate(self.where[name])[0]
            self.problems.fail(
                where,
                f"value {name!r} is already defined (line {line}): each value has one name",
                f"give this value another name, e.g. {name + '_2'!r}",
            )
            return
        self.shapes[name] = shape
        self.where[name] = where

    def get(self, name: str, where: Path_) -> tuple[bool, Any]:
        """(found, shape) of a value a step reads; reports an unknown or a not-yet-defined name."""
        if name in self.shapes:
            self.used.add(name)
            return True, self.shapes[name]
        if name in self.later:
            line = self.problems.source.locate(self.later[name].yaml_path)[0]
            self.problems.fail(
                where,
                f"value {name!r} is used before it is defined (by the step at line {line})",
                "move this step after that one: steps run in order",
            )
        else:
            known = [n for n in self.shapes if not n.startswith("#")]
            self.problems.fail(
                where, f"unknown value {name!r}", did_you_mean(name, known, f"the values here: {', '.join(known)}")
            )
        return False, None


def _defined(step: Step) -> list[str]:
    if step.outputs is not None:
        return [n for n in step.outputs if n != "_"]
    return [step.name] if step.node is not None else []


def lower_graph(lowerer: Any, node: Graph, name: str, path: str, shape: tuple | None, dtype: str) -> GraphIR:
    """Lower a graph node: its tensors, then each step in order (a child through the lowerer's ``add``)."""
    problems = lowerer.problems
    ir = GraphIR(name, path, node.class_name or class_name_of(name or "model"), [], [], INPUT, node.yaml_path, shape)
    values = _Values(node, problems)
    values.define(INPUT, (BATCH, *shape) if shape is not None else None, node.yaml_path)
    for tensor in node.tensors:
        ir.tensors.append(_tensor(lowerer, tensor))
        values.define(tensor.name, tensor.shape, tensor.yaml_path)
    previous: str | None = INPUT
    for i, step in enumerate(node.steps):
        key = step.op if step.op else "from"
        names = list(step.inputs) if step.inputs is not None else [previous]
        if previous is None and step.inputs is None:
            problems.fail(
                step.yaml_path,
                "this step takes the previous step's value, which `as:` dropped (`_`)",
                "name the value it takes: `from: name`",
            )
            return ir
        found = [values.get(n, _at(step, key, j)) if n is not None else (False, None) for j, n in enumerate(names)]
        if not all(ok for ok, _ in found):
            return ir
        for j, n in enumerate(names):
            if n in values.tuples:
                problems.fail(
                    _at(step, key, j),
                    f"value {n!r} is a tuple of {values.tuples[n]} items, not a tensor",
                    f"unpack it where it is made: `as: [{n}, _]`",
                )
                return ir
        shapes = [shape for _, shape in found]
        sir = StepIR(None, step.op, step.dim, names, [], False, yaml_path=step.yaml_path)
        if step.op:
            out = _op_shape(problems, step, shapes, names)
            outputs = [step.outputs[0] if step.outputs else f"#{i}"]
            sir.shapes = [out]
        else:
            outputs = _child(lowerer, ir, sir, step, shapes, names, dtype if names == [INPUT] else "float32")
            if outputs is None:
                return ir
        sir.outputs = outputs
        for j, out_name in enumerate(outputs):
            where = _at(step, "as", j) if step.outputs else step.yaml_path + (step.op or step.name,)
            values.define(out_name, sir.shapes[j] if j < len(sir.shapes) else None, where)
            values.items[out_name] = sir.unpack
        if not sir.unpack and sir.node is not None and len(sir.shapes) > 1:
            values.tuples[outputs[0]] = len(sir.shapes)  # type: ignore[index]
        ir.steps.append(sir)
        previous = outputs[0]
    output = node.output or previous
    if node.output is not None and not values.get(node.output, node.yaml_path + ("output",))[0]:
        return ir
    ir.output = output or INPUT
    values.used.add(ir.output)
    _unused(problems, values)
    out = values.shapes.get(ir.output)
    if out is not None and (out[:1] != (BATCH,) or ir.output in values.tuples):
        problems.fail(
            node.yaml_path + (("output",) if node.output else ()),
            f"a graph node returns a batch, but its output {_display(ir.output)} is "
            + ("a tuple" if ir.output in values.tuples else f"{format_value(out)}"),
            "end with a value made from the input (`expand_batch:` repeats a parameter over the batch)",
        )
        return ir
    ir.out_shape = tuple(out[1:]) if out is not None else None
    return ir


def _display(name: str) -> str:
    return "of the last step" if name.startswith("#") else repr(name)


def _at(step: Step, key: str, j: int) -> Path_:
    """Where a step's j-th name is written (an index only when the YAML wrote a list)."""
    return step.yaml_path + (key, j)


def _unused(problems: Any, values: _Values) -> None:
    """Every value a step made, the input and each parameter must be read (a buffer is state kept for itself)."""
    for name, where in values.where.items():
        if name in values.used or name in values.buffers:
            continue
        if name == INPUT:
            what, fix = "the graph node's input `x`", "read it in a step (`from: x`, or an operation)"
        elif name.startswith("#"):  # an operation's value without `as:`: where[-1] is the operation
            what = f"the value of the {where[-1]} step (line {problems.source.locate(where)[0]})"
            fix = "give it a name with `as:` and use it, or remove the step"
        elif values.items.get(name):
            what, fix = f"value {name!r}", "use it in a later step, or drop it: `_` in `as:` (`as: [out, _]`)"
        else:
            what, fix = f"value {name!r}", "use it in a later step (`from:` or an operation), or remove it"
        problems.fail(where, f"{what} is never used", fix)


def _tensor(lowerer: Any, tensor: Any) -> TensorIR:
    if not tensor.buffer and not tensor.dtype.startswith(("float", "bfloat")):
        lowerer.problems.fail(
            tensor.yaml_path + ("dtype",),
            f"parameter {tensor.name!r} is {tensor.dtype}: only floating-point tensors can be trained",
            "use a float dtype, or declare it under `buffers:`",
        )
    init = None
    if tensor.init is not None:
        entry = REGISTRY.get("init", tensor.init.type)
        init = lowerer.binder.bind(tensor.init, entry) if entry is not None else None
        if init is not None:
            for argument, problem, fix in param_rules.check_init(
                init.entry.name, init.arguments, tensor.shape, tensor.name
            ):
                where = tensor.init.yaml_path + ((argument,) if argument else ())
                lowerer.problems.fail(where, problem, fix)
    return TensorIR(tensor.name, tuple(tensor.shape), tensor.dtype, init, tensor.buffer, tensor.yaml_path)


def _op_shape(problems: Any, step: Step, shapes: list, names: list[str]) -> Any:
    if any(s is None for s in shapes):
        return None  # a problem before left a shape unknown: reported there
    shown = [n if not n.startswith("#") else "the previous value" for n in names]
    try:
        if step.op == "expand_batch":
            return expand_batch(shapes[0], shown[0])
        if step.op == "matmul":
            return matmul(shapes, shown)
        if step.op in ("cat", "stack"):
            return concatenate(step.op, step.dim if step.dim is not None else 1, shapes, shown)
        return broadcast(step.op, shapes, shown)
    except ShapeError as err:
        problems.fail(step.yaml_path + (step.op,), err.message, err.fix)
        return None


def _child(lowerer: Any, ir: GraphIR, sir: StepIR, step: Step, shapes: list, names: list[str], dtype: str):
    """Lower a step's child on its inputs; its output names (None: reported, stop)."""
    problems = lowerer.problems
    first = shapes[0]
    if first is not None and first[:1] != (BATCH,):
        problems.fail(
            _at(step, "from", 0),
            f"a module takes a batch, but {names[0]!r} is {format_value(first)} (no batch axis N)",
            f"repeat it over the batch first: `{{expand_batch: {names[0]}, as: ...}}`",
        )
        return None
    entry = REGISTRY.get("layer", getattr(step.node, "type", "")) if getattr(step.node, "kind", "") == "layer" else None
    arity = entry.arity if entry is not None else 1
    if len(names) != arity:
        takes = f"{arity} values ({', '.join(entry.inputs_named)})" if entry is not None and arity > 1 else "one value"
        problems.fail(
            step.yaml_path + (("from",) if step.inputs is not None else (step.name,)),
            f"{step.name} takes {takes}, got {len(names)}",
            f"write `from: [{', '.join(entry.inputs_named)}]`" if arity > 1 and entry else "write `from: name`",
        )
        return None
    options = entry.forward_options if entry is not None else ()
    for keyword, value in step.keywords.items():
        if keyword not in options or not isinstance(value, (bool, int, float, str, type(None))):
            what = f"{entry.name}'s forward" if entry is not None else "a block's forward"
            problems.fail(
                step.yaml_path + ("with", keyword),
                f"`with: {{{keyword}: ...}}` is not an option {what} takes here"
                + ("" if keyword in options else f" (it takes {', '.join(options) or 'none'})"),
                did_you_mean(keyword, options, "remove it") if keyword not in options else "give a literal value",
            )
            return None
    sir.keywords = {k: Arg(v, literal(v)) for k, v in step.keywords.items()}
    nodes: list = []
    lowerer.tuple_from = None
    lowerer.multi_input = arity > 1
    try:
        out = lowerer.add(nodes, ir.path, step.name, step.node, first[1:] if first is not None else None, dtype)
    finally:
        lowerer.multi_input = False
    tuple_from, lowerer.tuple_from = lowerer.tuple_from, None
    if not nodes:
        return None
    sir.node = nodes[0]
    if arity > 1:
        if any(s is None for s in shapes):
            sir.shapes = [None] * 2
        else:
            try:
                sir.shapes = MULTI_INPUT_RULES[entry.name](sir.node.call.arguments, shapes, names)
            except ShapeError as err:
                problems.fail(step.yaml_path + (step.name,), err.message, err.fix)
                return None
        sir.node.out_shape = tuple(sir.shapes[0][1:]) if sir.shapes[0] is not None else None  # unknown: later checks
    elif tuple_from is not None:  # LSTM: (output, state); the state's shape has no batch first
        sir.shapes = [(BATCH, *out) if out is not None else None, None]
    else:
        sir.shapes = [(BATCH, *out) if out is not None else None]
    count = len(sir.shapes)
    if step.outputs is None:
        return [step.name]
    if not step.unpack:
        return [step.outputs[0]]
    if len(step.outputs) != count:
        what = f"returns a tuple of {count}" if count > 1 else "returns one tensor"
        problems.fail(
            step.yaml_path + ("as",),
            f"{step.name} {what}, but `as:` unpacks {len(step.outputs)}",
            f"write `as: [{', '.join(['out', *['_'] * (count - 1)])}]`" if count > 1 else "write `as: name`",
        )
        return None
    sir.unpack = True
    return [n if n != "_" else None for n in step.outputs]
