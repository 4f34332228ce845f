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
    interpolate,
    matmul,
)
from compiler.front.load import Path_
from compiler.front.spec import Block, Graph, Layer, Merge, Step, Use
from compiler.lower.ir import Arg, BlockIR, GraphIR, LayerIR, StepIR, TensorIR

INPUT = "x"  # the graph node's input value unless `inputs:` names them


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def class_name_of(name: str) -> str:
    """``encoder_layer`` -> ``EncoderLayer``: a graph node's class unless it says `class:`."""
    words = [w for w in name.replace("-", "_").split("_") if w]
    text = "".join(w[:1].upper() + w[1:] for w in words if w.isidentifier() or w.isalnum())
    return text if text[:1].isalpha() and text.isascii() else "Graph"


class _Values:
    """The values a graph has defined so far: shape (None: unknown), where defined, and whether used."""

    def __init__(self, graph: Graph, problems: Any, inputs: list[str]):
        self.problems = problems
        self.shapes: dict[str, Any] = {}
        self.where: dict[str, Path_] = {}
        self.tuples: dict[str, int] = {}  # a value that is a whole tuple (LSTM's without `as:`): its length
        self.used: set[str] = set()
        self.buffers = {t.name for t in graph.tensors if t.buffer}
        self.inputs = set(inputs)
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


class _Declared:
    """The graph node's `modules:`: each lowered at its first `call:` (a declared list member by member), its
    input shape remembered so that every later call is checked against it."""

    def __init__(self, lowerer: Any, graph: Graph, path: str):
        self.lowerer = lowerer
        self.path = path
        self.nodes = dict(graph.modules)
        self.lowered: dict[str, Any] = {}  # name -> IR node, or {member: IR node} for a list called by member
        self.calls: dict[str, tuple] = {}  # name (or "name.K") -> (input shape, output shape, where first called)
        self.members: dict[str, list] = {}  # a declared list called by member -> its members

    def call(self, target: tuple[str, int | None], shape: tuple | None, where: Path_, dtype: str) -> Any:
        """Lower (first call) or check (later calls) a call; (found, output shape)."""
        problems = self.lowerer.problems
        name, member = target
        node = self.nodes.get(name)
        if node is None:
            known = list(self.nodes)
            problems.fail(
                where,
                f"{name!r} is not a module of this graph node's `modules:`",
                did_you_mean(name, known, f"declare it under `modules:` (here: {', '.join(known) or 'none'})"),
            )
            return False, None
        if member is not None:
            node = self.member(name, node, member, where)
            if node is None:
                return False, None
        elif isinstance(self.lowered.get(name), dict):
            return self.mixed(name, where)
        key = f"{name}.{member}" if member is not None else name
        if key in self.calls:
            return True, self.again(key, shape, where)
        nodes: list = []
        if member is None:
            out = self.lowerer.add(nodes, self.path, name, node, shape, dtype)
            if nodes:
                self.lowered[name] = nodes[0]
        else:
            out = self.lowerer.add(nodes, _join(self.path, name), str(member), node, shape, dtype)
            if nodes:
                self.lowered.setdefault(name, {})[member] = nodes[0]
        self.calls[key] = (shape, out, where)
        return bool(nodes), out

    def member(self, name: str, node: Any, member: int, where: Path_) -> Any:
        problems = self.lowerer.problems
        if not (isinstance(node, Block) and not node.named):
            problems.fail(
                where,
                f"`call: {name}.{member}` takes a member of a list, but {name!r} is not a list of modules",
                f"declare {name} as a list (`{name}: [..., ...]`), or call it whole: `call: {name}`",
            )
            return None
        if name in self.lowered and not isinstance(self.lowered[name], dict):
            self.mixed(name, where)
            return None
        items = self.members.get(name)
        if items is None:  # checked once per list: a list of N members may be called N times
            items = [child for _, child in node.children]
            if any(not isinstance(child, (Layer, Block, Merge, Graph, Use)) for child in items):
                problems.fail(
                    where,
                    f"{name!r} holds a repeat: a list whose members are called one by one lists each member",
                    "write the members out (or call the list whole)",
                )
                return None
            self.members[name] = items
        if member >= len(items):
            problems.fail(
                where,
                f"{name!r} has {len(items)} members (0 to {len(items) - 1}), not {member}",
                f"call one of {name}.0 .. {name}.{len(items) - 1}",
            )
            return None
        return items[member]

    def mixed(self, name: str, where: Path_) -> tuple[bool, None]:
        self.lowerer.problems.fail(
            where,
            f"{name!r} is called both whole and by member",
            f"call its members (`call: {name}.0`, ...) or the whole list (`call: {name}`), not both",
        )
        return False, None

    def again(self, key: str, shape: tuple | None, where: Path_) -> Any:
        first, out, at = self.calls[key]
        if shape is not None and first is not None and shape != first:
            line = self.lowerer.problems.source.locate(at)[0]
            self.lowerer.problems.fail(
                where,
                f"{key} takes {format_value((BATCH, *shape))} here, but {format_value((BATCH, *first))} at its "
                f"first call (line {line}): one module's layers have one input size",
                "give each input the same shape, or declare another module for this one",
            )
            return None
        return out

    def finish(self, ir: GraphIR, graph: Graph) -> None:
        """The declared modules in their order (a list called by member becomes an nn.ModuleList); each must run."""
        problems = self.lowerer.problems
        for name, node in graph.modules:
            lowered = self.lowered.get(name)
            if lowered is None:
                if not any(key == name or key.startswith(name + ".") for key in self.calls):
                    problems.fail(
                        node.yaml_path,
                        f"module {name!r} is never called",
                        f"call it in a step (`- {{call: {name}, from: x}}`), or remove it",
                    )
                continue
            if not isinstance(lowered, dict):
                ir.modules.append(lowered)
                continue
            count = len(node.children)
            missing = [k for k in range(count) if k not in lowered]
            if missing:
                problems.fail(
                    node.yaml_path,
                    f"member {missing[0]} of {name!r} is never called",
                    f"call it (`- {{call: {name}.{missing[0]}, from: ...}}`), or remove it",
                )
                continue
            children = [lowered[k] for k in range(count)]
            ir.modules.append(BlockIR(name, _join(self.path, name), False, children, node.yaml_path, module_list=True))


class _Graph:
    """Lowering one graph node: its inputs and tensors, then each step in order, then its outputs."""

    def __init__(self, lowerer: Any, node: Graph, name: str, path: str, shapes: list, dtype: str, inputs: list):
        self.lowerer, self.node, self.dtype = lowerer, node, dtype
        self.problems = lowerer.problems
        class_name = node.class_name or class_name_of(name or "model")
        self.ir = GraphIR(name, path, class_name, [], [], inputs[0], node.yaml_path, shapes[0] if shapes else None)
        self.ir.inputs, self.ir.in_shapes = inputs, list(shapes)
        self.values = _Values(node, self.problems, inputs)
        self.declared = _Declared(lowerer, node, path)
        self.dtypes = {inputs[0]: dtype} if len(inputs) == 1 else {n: "float32" for n in inputs}  # what steps get
        self.training: set[str] = set()  # values that exist only in training mode
        self.dropped: set[str] = set()  # values of `keep: false` steps: shapes only, never computed

    def lower(self) -> GraphIR:
        ir, values = self.ir, self.values
        for i, name in enumerate(ir.inputs):
            shape = ir.in_shapes[i] if i < len(ir.in_shapes) else None
            values.define(name, (BATCH, *shape) if shape is not None else None, self.input_where(i))
        for tensor in self.node.tensors:
            ir.tensors.append(_tensor(self.lowerer, tensor))
            values.define(tensor.name, tensor.shape, tensor.yaml_path)
        previous: str | None = ir.inputs[0] if len(ir.inputs) == 1 else None
        last = previous  # the last kept step's value: the output unless `output:` names one
        for i, step in enumerate(self.node.steps):
            outputs = self.step(i, step, previous)
            if outputs is None:
                return ir
            previous = outputs[0]
            last = previous if step.keep else last
        self.declared.finish(ir, self.node)
        if self.outputs(last):
            _unused(self.problems, values, self.dropped)
        layers = [n for node in ir.built for n in (node, *node.walk()) if isinstance(n, LayerIR)]
        rules = (self.lowerer.init_rule(rule, layers, ir.path) for rule in self.node.init)
        ir.init = [rule for rule in rules if rule is not None]
        return ir

    def input_where(self, i: int) -> Path_:
        if "inputs" in self.node.model_fields_set and len(self.node.inputs) > 1:
            return self.node.yaml_path + ("inputs", i)
        return self.node.yaml_path

    def step(self, i: int, step: Step, previous: str | None) -> list | None:
        """Lower one step; its output names (None: reported, stop)."""
        problems, values = self.problems, self.values
        key = step.op if step.op else "from"
        if step.inputs is None and previous is None:
            several = len(self.ir.inputs) > 1 and i == 0
            problems.fail(
                step.yaml_path,
                "this step takes the previous step's value, but "
                + ("the node has several inputs" if several else "`as:` dropped it (`_`)"),
                "name the value it takes: `from: name`",
            )
            return None
        names = list(step.inputs) if step.inputs is not None else [previous]
        unread = {n for n in names if n not in values.used}
        found = [values.get(n, _at(step, key, j)) for j, n in enumerate(names)]
        if not step.keep:  # a dropped step never runs: what only it reads is computed for nothing (never used)
            values.used -= unread
        if not all(ok for ok, _ in found) or not self.tensors_only(step, key, names):
            return None
        if not step.training and step.keep:
            self.training_values_ok(step, key, names)
        if not self.kept_order_ok(step, key, names):
            return None
        shapes = [shape for _, shape in found]
        sir = StepIR(None, step.op, step.dim, names, [], False, yaml_path=step.yaml_path, training=step.training)
        sir.mode = step.mode
        if step.op:
            sir.shapes = [_op_shape(problems, step, shapes, names)]
            outputs = [step.outputs[0] if step.outputs else f"#{i}"]
        elif step.call is not None:
            outputs = self.call(sir, step, shapes, names, i)
        else:
            dtype = self.dtypes.get(names[0], "float32") if len(names) == 1 else "float32"
            outputs = _child(self.lowerer, self.ir, sir, step, shapes, names, dtype)
        if outputs is None:
            return None
        sir.outputs = outputs
        for j, out_name in enumerate(outputs):
            where = _at(step, "as", j) if step.outputs else step.yaml_path + (step.op or step.name or "call",)
            values.define(out_name, sir.shapes[j] if j < len(sir.shapes) else None, where)
            values.items[out_name] = sir.unpack
            if step.training and out_name is not None:
                self.training.add(out_name)
            if not step.keep and out_name is not None:
                self.dropped.add(out_name)
        one_tuple = isinstance(sir.node, GraphIR) and sir.node.outputs is not None  # a child's `output: [a]`
        if not sir.unpack and (sir.node is not None or sir.call is not None) and (len(sir.shapes) > 1 or one_tuple):
            values.tuples[outputs[0]] = len(sir.shapes)
        if step.keep:
            self.ir.steps.append(sir)
        elif sir.node is not None:
            self.ir.dropped.append(sir.node)
        return outputs

    def kept_order_ok(self, step: Step, key: str, names: list[str]) -> bool:
        """The dropped steps (`keep: false`) come last and only they read each other's values: they are built
        after the node's other children, and never run."""
        if not step.keep:
            return True
        if self.ir.dropped:
            first = self.ir.dropped[0]
            line = self.problems.source.locate(first.yaml_path)[0]
            self.problems.fail(
                step.yaml_path,
                f"this step comes after {first.name!r} (line {line}), which `keep: false` drops: the dropped "
                "modules are built after every kept one",
                f"move {first.name!r} (and the other `keep: false` steps) after this one",
            )
            return False
        return True

    def tensors_only(self, step: Step, key: str, names: list[str]) -> bool:
        for j, n in enumerate(names):
            if n in self.values.tuples:
                self.problems.fail(
                    _at(step, key, j),
                    f"value {n!r} is a tuple of {_items(self.values.tuples[n])}, not a tensor",
                    f"unpack it where it is made: `as: [{n}, _]`",
                )
                return False
        return True

    def training_values_ok(self, step: Step, key: str, names: list[str]) -> None:
        """A value made only in training mode (`when: training`) exists only for steps that run then too."""
        for j, n in enumerate(names):
            if n in self.training:
                self.problems.fail(
                    _at(step, key, j) if step.inputs is not None or step.op else step.yaml_path,
                    f"value {n!r} is made only in training mode (`when: training`), but this step runs in eval too",
                    "give this step `when: training` as well, or read a value eval mode makes",
                )

    def call(self, sir: StepIR, step: Step, shapes: list, names: list[str], i: int) -> list | None:
        """`call: module` (or `module.K`): a declared module on the step's value(s)."""
        name, _, member = (step.call or "").partition(".")
        sir.call = (name, int(member) if member else None)
        where = step.yaml_path + ("call",)
        if len(names) != 1:
            self.problems.fail(
                step.yaml_path + ("from",),
                f"`call: {step.call}` runs a module on one value, got {len(names)}",
                "write `from: name`",
            )
            return None
        first = shapes[0]
        if first is not None and first[:1] != (BATCH,):
            self.problems.fail(
                _at(step, "from", 0),
                f"a module takes a batch, but {names[0]!r} is {format_value(first)} (no batch axis N)",
                f"repeat it over the batch first: `{{expand_batch: {names[0]}, as: ...}}`",
            )
            return None
        sample = first[1:] if first is not None else None
        ok, out = self.declared.call(sir.call, sample, where, self.dtypes.get(names[0], "float32"))
        if not ok:
            return None
        sir.shapes = [(BATCH, *out) if out is not None else None]
        if step.outputs is None:
            return [f"#{i}"]
        if step.unpack:
            self.problems.fail(step.yaml_path + ("as",), "a called module returns one tensor here", "write `as: name`")
            return None
        return [step.outputs[0]]

    def outputs(self, previous: str | None) -> bool:
        """Check `output:` and `eval_output:`, and record what the node returns; False when reported."""
        node, ir, values = self.node, self.ir, self.values
        where = node.yaml_path + ("output",)
        if ir.path and (node.output_keys is not None or node.eval_outputs is not None):
            key = "output" if node.output_keys is not None else "eval_output"
            self.problems.fail(
                node.yaml_path + (key,),
                f"{'a mapping `output:`' if key == 'output' else '`eval_output:`'} is the model's, at its top level; "
                "a child graph node returns one value or a tuple",
                "return a list (a tuple) and unpack it where the node is used: `as: [a, b]`"
                if key == "output"
                else "move the training-only steps to the model's top-level graph",
            )
            return False
        if node.outputs is not None:
            if not self.read_all(node.outputs, where, node.output_keys is not None):
                return False
            ir.outputs, ir.output = list(node.outputs), node.outputs[0]
            ir.output_keys = list(node.output_keys) if node.output_keys is not None else None
        else:
            ir.output = node.output or previous or ir.inputs[0]
            if node.output is not None and not self.read_all((node.output,), where, False):
                return False
            values.used.add(ir.output)
        if node.eval_outputs is not None:
            at = node.yaml_path + ("eval_output",)
            if not self.read_all(node.eval_outputs, at, False, eval_mode=True):
                return False
            ir.eval_outputs, ir.eval_tuple = list(node.eval_outputs), node.eval_tuple
        else:
            made = [n for n in ir.returned if n in self.training]
            if made:
                self.problems.fail(
                    where if node.output is not None or node.outputs is not None else node.yaml_path,
                    f"the output reads {made[0]!r}, which is made only in training mode (`when: training`)",
                    "say what eval mode returns: `eval_output: <a value eval mode makes>`",
                )
                return False
        return self.batches(ir.returned, where)

    def read_all(self, names: tuple, where: Path_, keyed: bool, eval_mode: bool = False) -> bool:
        ok = True
        for j, name in enumerate(names):
            at = where + ((self.node.output_keys[j],) if keyed else (j,) if len(names) > 1 else ())
            found, _ = self.values.get(name, at)
            if found and name in self.dropped:
                self.problems.fail(
                    at,
                    f"{name!r} is the value of a step that `keep: false` drops: it is never computed",
                    "return a value a kept step makes",
                )
                found = False
            elif found and eval_mode and name in self.training:
                self.problems.fail(
                    at,
                    f"eval mode cannot return {name!r}: it is made only in training mode (`when: training`)",
                    "return a value every mode makes",
                )
                found = False
            ok = ok and found
        return ok

    def batches(self, names: list[str], where: Path_) -> bool:
        """Every output is a batch (a tensor with the batch axis first); record their sample shapes."""
        values, ir = self.values, self.ir
        shapes = []
        for name in names:
            out = values.shapes.get(name)
            if out is not None and (out[:1] != (BATCH,) or name in values.tuples):
                self.problems.fail(
                    where if (self.node.output or self.node.outputs) else self.node.yaml_path,
                    f"a graph node returns a batch, but its output {_display(name)} is "
                    + ("a tuple" if name in values.tuples else f"{format_value(out)}"),
                    "end with a value made from the input (`expand_batch:` repeats a parameter over the batch)",
                )
                return False
            shapes.append(tuple(out[1:]) if out is not None else None)
        ir.out_shapes = shapes if ir.outputs is not None else []
        ir.out_shape = shapes[0] if ir.outputs is None else None
        return True


def lower_graph(
    lowerer: Any,
    node: Graph,
    name: str,
    path: str,
    shape: Any,
    dtype: str,
    inputs: list[str] | None = None,
    dtypes: dict[str, str] | None = None,
) -> GraphIR:
    """Lower a graph node. ``shape``: its one input's sample shape, or a list of every input's; ``inputs``: the
    names of the model's inputs (`input:` names them at the top level); ``dtypes``: each one's dtype (default: one
    input of ``dtype``, several of float32)."""
    names = inputs or list(node.inputs)
    shapes = list(shape) if isinstance(shape, list) else [shape] * len(names)
    graph = _Graph(lowerer, node, name, path, shapes, dtype, names)
    if dtypes is not None:
        graph.dtypes = dtypes
    return graph.lower()


def input_dtypes(node: Graph, names: list[str], first_layer: Any) -> dict[str, str]:
    """Each input's dtype: int64 when the first child (or declared module) that reads it takes indices (an
    Embedding), else float32. ``first_layer``: a node's first layer's registry entry (lower/model.py)."""
    modules = dict(node.modules)
    dtypes = {}
    for name in names:
        reader = next(
            (s for i, s in enumerate(node.steps) if s.inputs == (name,) or (i == 0 and s.inputs is None)), None
        )
        target = None
        if reader is not None and reader.node is not None:
            target = reader.node
        elif reader is not None and reader.call is not None:
            target = modules.get(reader.call.partition(".")[0])
        entry = first_layer(target) if target is not None else None
        dtypes[name] = "int64" if entry is not None and entry.takes_indices else "float32"
    return dtypes


def _items(count: int) -> str:
    return f"{count} item{'s' if count != 1 else ''}"


def _display(name: str) -> str:
    return "of the last step" if name.startswith("#") else repr(name)


def _at(step: Step, key: str, j: int) -> Path_:
    """Where a step's j-th name is written (an index only when the YAML wrote a list)."""
    return step.yaml_path + (key, j)


def _unused(problems: Any, values: _Values, dropped: set[str]) -> None:
    """Every value a step made, the input and each parameter must be read (a buffer is state kept for itself, a
    dropped step's value is never computed)."""
    for name, where in values.where.items():
        if name in values.used or name in values.buffers or name in dropped:
            continue
        if name in values.inputs:
            what, fix = f"the graph node's input `{name}`", f"read it in a step (`from: {name}`, or an operation)"
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
        if step.op == "interpolate":
            return interpolate(shapes, shown, step.mode or "nearest")
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
    arity = entry.arity if entry is not None else len(step.node.inputs) if isinstance(step.node, Graph) else 1
    if len(names) != arity:
        named = entry.inputs_named if entry is not None else getattr(step.node, "inputs", ("x",))
        takes = f"{arity} values ({', '.join(named)})" if arity > 1 else "one value"
        problems.fail(
            step.yaml_path + (("from",) if step.inputs is not None else (step.name,)),
            f"{step.name} takes {takes}, got {len(names)}",
            f"write `from: [{', '.join(named)}]`" if arity > 1 else "write `from: name`",
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
        if not isinstance(value, bool):  # every forward option the registry lists is a flag (torch: "must be bool")
            problems.fail(
                step.yaml_path + ("with", keyword),
                f"`{keyword}:` is true or false, got {value!r}",
                f"write `{keyword}: true` or `{keyword}: false`",
            )
            return None
    attention = entry is not None and entry.name == "MultiheadAttention"
    if attention and step.keywords.get("is_causal"):  # torch: "Need attn_mask if specifying the is_causal hint"
        problems.fail(
            step.yaml_path + ("with", "is_causal"),
            "`is_causal` says that MultiheadAttention's attention mask is causal, but a graph step passes no mask: "
            "torch refuses it",
            "remove `is_causal`",
        )
        return None
    sir.keywords = {k: Arg(v, literal(v)) for k, v in step.keywords.items()}
    nodes: list = []
    lowerer.tuple_from = None
    lowerer.multi_input = arity > 1
    lowerer.graph_step = True  # the child may be a graph node returning a tuple, which `as:` unpacks
    given: Any = first[1:] if first is not None else None
    if isinstance(step.node, Graph) and arity > 1:  # a graph node of several inputs takes each one's shape
        given = [s[1:] if s is not None else None for s in shapes]
    try:
        out = lowerer.add(nodes, ir.path, step.name, step.node, given, dtype)
    finally:
        lowerer.multi_input = lowerer.graph_step = False
    tuple_from, lowerer.tuple_from = lowerer.tuple_from, None
    if not nodes:
        return None
    sir.node = nodes[0]
    if isinstance(sir.node, GraphIR) and sir.node.outputs is not None:  # a child graph returning a tuple
        sir.shapes = [(BATCH, *s) if s is not None else None for s in sir.node.out_shapes]
    elif isinstance(sir.node, GraphIR) and arity > 1:
        sir.shapes = [(BATCH, *out) if out is not None else None]
    elif arity > 1:
        if any(s is None for s in shapes):
            sir.shapes = [None] * 2
        else:
            try:
                options = {**sir.node.call.arguments, **step.keywords}  # the forward's options change what it returns
                sir.shapes = MULTI_INPUT_RULES[entry.name](options, shapes, names)
            except ShapeError as err:
                problems.fail(step.yaml_path + (step.name,), err.message, err.fix)
                return None
        sir.node.out_shape = tuple(sir.shapes[0][1:]) if sir.shapes[0] is not None else None  # unknown: later checks
    elif tuple_from is not None or (entry is not None and entry.returns_tuple and out is None):
        # LSTM: (output, state); the state's shape has no batch first (both unknown after an error before)
        sir.shapes = [(BATCH, *out) if out is not None else None, None]
    else:
        sir.shapes = [(BATCH, *out) if out is not None else None]
    count = len(sir.shapes)
    if step.outputs is None:
        return [step.name]
    if not step.unpack:
        return [step.outputs[0]]
    one_tuple = isinstance(sir.node, GraphIR) and sir.node.outputs is not None  # a child's `output: [a]`
    if count == 1 and not one_tuple:  # `as: [h]` would unpack the tensor along its batch axis
        problems.fail(
            step.yaml_path + ("as",),
            f"{step.name} returns one tensor: `as:` names it, a list unpacks a tuple",
            f"write `as: {step.outputs[0]}`",
        )
        return None
    if len(step.outputs) != count:
        what = f"returns a tuple of {count}" if count > 1 else "returns one tensor"
        problems.fail(
            step.yaml_path + ("as",),
            f"{step.name} {what}, but `as:` unpacks {len(step.outputs)}",
            f"write `as: [{', '.join(['out', *['_'] * (count - 1)])}]`" if count > 1 else "write `as: name`",
        )
        return None
    if attention and not step.keywords.get("need_weights", True) and step.outputs[1] != "_":
        problems.fail(
            _at(step, "as", 1),
            "with `need_weights: false`, MultiheadAttention returns None for the weights",
            "drop them: `as: [out, _]`, or remove `need_weights`",
        )
        return None
    sir.unpack = True
    return [n if n != "_" else None for n in step.outputs]
