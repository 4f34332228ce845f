"""Stage 3: Spec -> ModelIR. Binds every argument, infers every shape, builds the module tree.

Shapes come from the arithmetic rules in ``shapes`` (no forward pass); parameter and buffer
counts and torch's constructor checks from those in ``param_rules``, so validation imports no
torch. A layer without rules (a plugin), or every layer on the live path (``torch_facts.live()``),
is constructed once on the ``meta`` device instead, which allocates no weights and draws no
random numbers, to let torch check its arguments and count its parameters and buffers exactly.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from compiler.common.paths import PathError, read_file
from compiler.errors import SpecError
from compiler.facts import param_rules, torch_facts
from compiler.facts.registry import REGISTRY, Entry
from compiler.facts.shapes import ShapeError, format_shape, merged_shape, output_shape, plugin_shape
from compiler.front.expand import MAX_USE_DEPTH, instantiate, note_use
from compiler.front.load import Path_
from compiler.front.names import RESERVED_NAMES, NameProblem, check_block_name
from compiler.front.problems import Problems
from compiler.front.spec import (
    MAX_INIT_MATCHES,
    MAX_MODULES,
    Block,
    Broken,
    Graph,
    Layer,
    Merge,
    Repeat,
    Spec,
    Use,
    parse_node,
)
from compiler.lower.bind import Binder, arg_path, parameters, where_of
from compiler.lower.blocks import plan_blocks
from compiler.lower.dataflow import input_dtypes, lower_graph
from compiler.lower.ir import (
    BlockIR,
    CallIR,
    InitRuleIR,
    LayerIR,
    LoadIR,
    MergeIR,
    ModelIR,
    Node,
    PartIR,
    UseIR,
    class_names,
)
from compiler.lower.loops import plan_loops

_META_BATCH = 2  # BatchNorm refuses a batch of one in training; 2 keeps every layer happy
# Validation's budget for checking layers: a unit is one layer, or one stacked layer of a recurrent one;
# identical layers are checked once. It bounds the live path (constructing on the meta device, about
# 0.1-0.3 ms a unit here) and applies to the arithmetic rules too (microseconds a unit), so both paths
# refuse exactly the same specs.
MAX_LAYER_COST = 2_000
MAX_CONSTRUCTION_COST = 4_000


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def memory_budget() -> int:
    """Bytes a model's parameters and buffers may take (``SPECC_MAX_MODEL_BYTES`` overrides)."""
    value = os.environ.get("SPECC_MAX_MODEL_BYTES")
    if value:
        try:
            return int(float(value))
        except ValueError:
            pass
    return physical_memory()


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def lower_model(spec: Spec, problems: Problems, max_bytes: int | None = None) -> ModelIR | None:
    """Lower ``spec.model`` (and ``spec.init``); problems go to ``problems``. None when the model is broken."""
    before = problems.count()
    lowerer = _Lowerer(spec, problems)
    first = _first_layer(spec.model)
    dtype = "int64" if first is not None and first.takes_indices else "float32"
    dtypes = None
    if isinstance(spec.model, Graph):
        names, shapes = _graph_inputs(spec, problems)
        dtypes = input_dtypes(spec.model, names, _first_layer)  # the first step reading each (a call's too)
        dtype = dtypes[names[0]] if len(names) == 1 else dtype
        root = lower_graph(lowerer, spec.model, "", "", shapes, dtype, names, dtypes)
    elif isinstance(spec.input, dict):
        problems.fail(
            ("input",),
            f"`input:` names {len(spec.input)} inputs, but the model is a stack, which takes one",
            "write the model as a graph node whose steps read the inputs by name (docs/spec-language.md §15), "
            "or give one shape: `input: [1, 28, 28]`",
        )
        return None
    else:
        root = BlockIR("", "", spec.model.named, yaml_path=("model",), in_shape=spec.input)
        root.out_shape = lowerer.sequence(root.children, "", spec.model, spec.input, dtype)
    lowerer.end_of_model()
    model = ModelIR(root, spec.input if not isinstance(spec.input, dict) else None, dtype, inputs=spec.input_shapes)
    model.input_dtypes = {name: dtype for name in model.inputs or {}} if dtypes is None or len(dtypes) == 1 else dtypes
    layers = list(model.layers())
    model.init = [rule for rule in (lowerer.init_rule(r, layers) for r in spec.init if not r.load) if rule is not None]
    model.load = next((_weights_file(r, problems) for r in spec.init if r.load), None)
    if problems.count() == before and spec.library.blocks:
        # the block functions' names avoid the script's own names, its variables and every child name (a
        # ``build_model`` local of that name would shadow the function it calls)
        children = {getattr(node, "name", "") for node in model.root.walk()}
        model.blocks = plan_blocks(model, spec.library, set(RESERVED_NAMES) | set(spec.vars) | children)
        functions = {c.function or c.class_name for c in model.blocks.values()}
        model.loops = plan_loops(model, spec.library, set(RESERVED_NAMES) | set(spec.vars) | children | functions)
    _check_class_names(model, spec, problems)
    budget = memory_budget() if max_bytes is None else max_bytes
    if problems.count() == before and model.nbytes > budget:
        problems.fail(
            ("model",),
            f"the model's parameters and buffers need {format_bytes(model.nbytes)} "
            f"({model.params:,} parameters), more than the {format_bytes(budget)} allowed",
            "make the layers smaller, or raise the limit (--max-memory, or SPECC_MAX_MODEL_BYTES)",
        )
    return model if problems.count() == before else None


def _graph_inputs(spec: Spec, problems: Problems) -> tuple[list[str], list | tuple | None]:
    """The top-level graph's input names and shapes: `input:` names them (or gives the one's shape)."""
    graph = spec.model
    assert isinstance(graph, Graph)
    if not isinstance(spec.input, dict):
        if len(graph.inputs) > 1:
            example = ", ".join(f"{name}: [...]" for name in graph.inputs)
            problems.fail(
                ("input",) if spec.input is not None else ("model", "inputs"),
                f"the model takes {len(graph.inputs)} inputs ({', '.join(graph.inputs)}); `input:` gives each "
                "one's shape by name",
                f"write `input: {{{example}}}`",
            )
            return list(graph.inputs), [None] * len(graph.inputs)
        return list(graph.inputs), spec.input
    names = list(spec.input)
    if "inputs" in graph.model_fields_set and list(graph.inputs) != names:
        problems.fail(
            ("model", "inputs"),
            f"the model's `inputs:` ({', '.join(graph.inputs)}) differ from the names `input:` gives "
            f"({', '.join(names)})",
            "remove `inputs:` at the top level: `input:` names the model's inputs",
        )
        return list(graph.inputs), [None] * len(graph.inputs)
    return names, list(spec.input.values())


def _check_class_names(model: ModelIR, spec: Spec, problems: Problems) -> None:
    """The generated script defines a class per merge-block shape: its name must not be one the script uses."""
    names = class_names(model.classes(), model.blocks)
    for merge in model.classes():
        name = names[merge.shape_key]
        if name in RESERVED_NAMES or name in spec.vars:
            problems.fail(
                merge.yaml_path + ("class",),
                f"class {name!r} is a name the generated script already uses (a variable, setting, import or helper)",
                f"call it e.g. {name + 'Block'!r}",
            )
            return


def _first_layer(node: Any) -> Entry | None:
    """The registry entry of the model's first layer (it decides the input's dtype)."""
    if isinstance(node, Layer):
        return REGISTRY.get("layer", node.type)
    if isinstance(node, Use):
        return None
    if isinstance(node, Repeat):
        return _first_layer(node.body)
    if isinstance(node, Merge):
        return _first_layer(node.before if node.before is not None else node.branches[0][1])
    if isinstance(node, Broken):
        return None
    if isinstance(node, Graph):
        first = node.steps[0]
        return _first_layer(first.node) if first.node is not None and first.inputs is None else None
    for _, child in node.children:
        found = _first_layer(child)
        if found:
            return found
    return None


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


class _Lowerer:
    def __init__(self, spec: Spec, problems: Problems):
        self.spec = spec
        self.problems = problems
        self.binder = Binder(problems, spec.symbols, spec.unparsed)
        self.count = 0
        self.tuple_from: LayerIR | None = None  # a layer whose tuple output the next layer gets
        self.constructed: dict[str, tuple] = {}  # (params, nbytes, slots, None slots) by layer call
        self.layer_cache: dict[tuple, tuple] = {}  # a repeated layer (same spec node, same input): its results
        self.cost = 0
        self.uses = 0  # blocks being instantiated inside one another
        self.bodies: list[Any] = []  # instantiated bodies, kept alive: ``layer_cache`` is keyed by node id
        self.multi_input = False  # lowering a graph step that gives a layer several tensors (its shapes: dataflow)
        self.graph_step = False  # lowering a graph step's child: a graph node there may return a tuple (`as:`)
        self.init_matches = 0  # graph nodes' `init:` path patterns times the layers each is tried on

    # tree ---------------------------------------------------------------------------

    def sequence(self, out: list[Node], path: str, block: Block, shape: tuple | None, dtype: str) -> tuple | None:
        """Lower ``block``'s children into ``out`` (module path ``path``); return the output shape."""
        for name, child in block.children:
            if isinstance(child, Repeat) and not block.named:  # in a list, the copies are spliced in
                shape = self.splice(out, path, child, shape, dtype)
            else:  # a named repeat, like a merge part that repeats, is its own Sequential of the copies (add)
                shape = self.add(out, path, name or str(len(out)), child, shape, dtype)
            dtype = "float32"
        return shape

    def splice(self, out: list[Node], path: str, repeat: Repeat, shape: tuple | None, dtype: str) -> tuple | None:
        for _ in range(repeat.count):
            if repeat.body.named:
                shape = self.add(out, path, str(len(out)), repeat.body, shape, dtype)
            else:
                shape = self.sequence(out, path, repeat.body, shape, dtype)
            if self.count > MAX_MODULES:
                break
        return shape

    def add(self, out: list[Node], parent: str, name: str, node: Any, shape: tuple | None, dtype: str):
        """Lower one node named ``name`` into ``out``; return its output shape."""
        if isinstance(node, Use):
            return self.use(out, parent, name, node, shape, dtype)
        direct, self.graph_step = self.graph_step, False  # (a block use passes it on to its body)
        path = _join(parent, name)
        self.count += 1
        if self.count == MAX_MODULES + 1:
            self.problems.fail(node.yaml_path, f"the model has more than {MAX_MODULES} modules", "use fewer repeats")
        if self.count > MAX_MODULES or isinstance(node, Broken):  # after a refused node, shapes are unknown
            return None
        if isinstance(node, Merge):
            merge = self.merge(node, name, path, shape, dtype)
            out.append(merge)
            return merge.out_shape
        if isinstance(node, Graph):
            self.check_tuple(node.yaml_path, "graph node")
            graph = lower_graph(self, node, name, path, shape, dtype)
            out.append(graph)
            if graph.outputs is not None and not direct:
                self.problems.fail(
                    node.yaml_path + ("output",),
                    "this graph node returns a tuple, which only a graph step can take (its `as: [a, b]` unpacks it); "
                    "here the next module, the merge or the caller would get the tuple",
                    "return one value (`output: name`), or make the node a step of a graph node "
                    "(`- name: {graph: ...}` with `as: [...]`) or the model itself",
                )
                return None
            return graph.out_shape
        if isinstance(node, Block):
            sub = BlockIR(name, path, node.named, yaml_path=node.yaml_path, in_shape=shape)
            out.append(sub)
            sub.out_shape = self.sequence(sub.children, path, node, shape, dtype)
            return sub.out_shape
        if isinstance(node, Repeat):  # named, or a merge part: a Sequential of the copies
            sub = BlockIR(name, path, False, yaml_path=node.yaml_path, in_shape=shape)
            out.append(sub)
            sub.out_shape = self.splice(sub.children, path, node, shape, dtype)
            return sub.out_shape
        layer = self.layer(node, name, path, shape, dtype)
        if layer is None:
            return None
        out.append(layer)
        return layer.out_shape

    def use(self, out: list[Node], parent: str, name: str, node: Use, shape: tuple | None, dtype: str):
        """A block use: its body instantiated for this input shape, then lowered in its place."""
        before = self.problems.count()
        body = self.instantiate(node, shape)
        self.uses += 1
        try:
            if body is None:
                return None
            count = len(out)
            shape = self.add(out, parent, name, body, shape, dtype)
            if len(out) == count + 1:
                out[-1].use = self.use_ir(node)
            return shape
        finally:
            self.uses -= 1
            note_use(self.problems, before, node.block, node.yaml_path)

    def use_ir(self, node: Use) -> UseIR:
        root = node.yaml_path + (f"<{node.block}>",)
        return UseIR(node.block, self.spec.library.envs.get(root, {}), root)

    def instantiate(self, node: Use, shape: tuple | None) -> Any:
        """The parsed body of a block use (front/expand.py's ``instantiate``); None after a problem."""
        if self.uses >= MAX_USE_DEPTH:
            fix = "use fewer levels of blocks inside blocks"
            self.problems.fail(node.yaml_path, f"blocks nest more than {MAX_USE_DEPTH} deep here", fix)
            return None
        if shape is None and self.spec.input is not None:
            return None  # an error before this block left its input unknown: reported there
        root = node.yaml_path + (f"<{node.block}>",)
        before = self.problems.count()
        data = instantiate(self.spec.library, node.block, node.args, shape, root, self.problems)
        body = parse_node(data, root, self.problems, self.spec.library) if self.problems.count() == before else None
        if body is not None:
            self.bodies.append(body)
        return body

    # merge blocks -----------------------------------------------------------------

    def merge(self, node: Merge, name: str, path: str, shape: tuple | None, dtype: str) -> MergeIR:
        self.check_tuple(node.yaml_path, "merge block")
        class_name = node.class_name or f"{node.op.capitalize()}Block"

        ir = MergeIR(name, path, node.op, node.dim, class_name, None, [], None, node.yaml_path, shape)
        names: dict[str, Path_] = {}
        if node.before is not None:
            ir.before = self.part("before", node.before, path, shape, dtype, names)
            shape, dtype = ir.before.out_shape, "float32"
        for branch_name, branch in node.branches:
            ir.branches.append(self.part(branch_name, branch, path, shape, dtype, names))
            if self.tuple_from is not None:
                self.check_tuple(branch.yaml_path, f"{node.op} of the branches")
        shapes = [b.out_shape for b in ir.branches]
        merged = None
        if all(s is not None for s in shapes):
            try:
                merged = merged_shape(node.op, node.dim, shapes, [b.name for b in ir.branches])  # type: ignore[arg-type]
            except ShapeError as err:
                self.problems.fail(node.yaml_path + ("merge",), err.message, err.fix)
        if node.then is not None:
            ir.then = self.part("then", node.then, path, merged, "float32", names)
            merged = ir.then.out_shape
        ir.out_shape = merged
        return ir

    def part(self, name: str, node: Any, path: str, shape, dtype: str, names: dict[str, Path_]) -> PartIR:
        """A merge part: a named block spreads its children into the merge module, others are one child."""
        if isinstance(node, Use):  # placed as its body is: a shortcut that is the input adds no module
            before = self.problems.count()
            body = self.instantiate(node, shape)
            self.uses += 1
            try:
                if body is None:
                    return PartIR(name, [], False)
                part = self.part(name, body, path, shape, dtype, names)
                part.use = self.use_ir(node)
                if not part.spread and len(part.nodes) == 1:
                    part.nodes[0].use = part.use
                return part
            finally:
                self.uses -= 1
                note_use(self.problems, before, node.block, node.yaml_path)
        if isinstance(node, Layer) and node.type == "Identity" and not node.args and not node.kwargs:
            return PartIR(name, [], False, node.yaml_path, shape)
        nodes: list[Node] = []
        if isinstance(node, Block) and node.named:
            out = self.sequence(nodes, path, node, shape, dtype)
            part = PartIR(name, nodes, True, node.yaml_path, out)
        else:
            out = self.add(nodes, path, name, node, shape, dtype)
            part = PartIR(name, nodes, False, node.yaml_path, out)
        for child in nodes:
            where = child.yaml_path
            if part.spread and not child.name.isidentifier():  # `self.<name>` in the merge class (§2, child keys)
                try:
                    check_block_name(child.name, attribute=True)
                except NameProblem as err:
                    self.problems.fail(where, err.message, err.fix)
            if child.name in names:
                self.problems.fail(
                    where,
                    f"{child.name!r} is already a module of this merge block "
                    f"(its branches, before and then share one namespace)",
                    f"rename one, e.g. {child.name + '_2'!r}",
                )
            names[child.name] = where
        return part

    # one layer -------------------------------------------------------------------------

    def check_tuple(self, where: Path_, what: str) -> None:
        """A tuple output (LSTM's ``(output, state)``) may only meet TupleItem."""
        if self.tuple_from is not None:
            prev = self.tuple_from
            self.problems.fail(
                where,
                f"{prev.type} at {prev.path!r} returns a tuple (output, state); this {what} would get the whole tuple",
                f"put `TupleItem: 0` after {prev.type} to take its output",
            )
            self.tuple_from = None

    def end_of_model(self) -> None:
        self.tuple_from = None  # a model may return a tuple (its last layer's)

    def layer(self, node: Layer, name: str, path: str, shape: tuple | None, dtype: str) -> LayerIR | None:
        key = (id(node), shape, dtype, self.tuple_from is not None)
        if key in self.layer_cache:  # the copies a `repeat` makes: bound and checked once
            call, out_shape, counts = self.layer_cache[key]
            ir = LayerIR(name, path, call, shape, out_shape, *counts, inferred=_inferred(node, call.entry))
            if out_shape is not None and call.entry.returns_tuple:
                self.tuple_from = ir
            return ir
        before = self.problems.count()
        ir = self.new_layer(node, name, path, shape, dtype)
        if ir is not None and self.problems.count() == before:
            self.layer_cache[key] = (ir.call, ir.out_shape, _counts(ir))
        return ir

    def new_layer(self, node: Layer, name: str, path: str, shape: tuple | None, dtype: str) -> LayerIR | None:
        entry = REGISTRY.get("layer", node.type)
        assert entry is not None  # the parser only accepts registered names
        tuple_item = self.tuple_from is not None and entry.takes_tuple
        if entry.arity > 1 and not self.multi_input:
            self.problems.fail(
                where_of(node),
                f"{entry.name} takes {entry.arity} tensors ({', '.join(entry.inputs_named)}), but a stack gives one",
                f"make it a step of a graph node with `from: [{', '.join(entry.inputs_named)}]` "
                "(docs/spec-language.md §15)",
            )
            return None
        if not entry.takes_tuple:
            self.check_tuple(node.yaml_path, entry.name)
        elif self.tuple_from is None and shape is not None:
            self.problems.fail(
                where_of(node),
                "TupleItem picks an item of a tuple, but its input is one tensor",
                "remove it (only layers such as LSTM and GRU return tuples)",
            )
            return None
        if (
            entry.infer
            and entry.infer not in node.kwargs
            and len(node.args) <= _infer_index(entry)
            and self.spec.input is None
        ):
            self.problems.fail(
                where_of(node),
                f"cannot infer {entry.name}.{entry.infer}: the spec has no `input:` shape",
                f"add `input: [...]` (one sample's shape) or give `{entry.infer}:`",
            )
            return None
        call = self.binder.bind(node, entry, shape)
        if call is None:
            return None
        ir = LayerIR(name, path, call, shape, inferred=_inferred(node, entry))
        if tuple_item:
            self.tuple_item(ir)
        else:
            self.infer_shape(ir, dtype)
        if ir.out_shape is not None and entry.returns_tuple:
            self.tuple_from = ir
        return ir

    def tuple_item(self, ir: LayerIR) -> None:
        prev, index = self.tuple_from, ir.call.value("index", 0)
        self.tuple_from = None
        assert prev is not None
        if not isinstance(index, int) or not -2 <= index <= 1:
            self.problems.fail(
                where_of_ir(ir),
                f"TupleItem index {index!r} is out of range: {prev.type} returns 2 items, (output, state)",
                "use `TupleItem: 0` for the output",
            )
            return
        if index not in (0, -2):
            self.problems.fail(
                where_of_ir(ir),
                f"{prev.type}'s item {index} is its state, whose batch axis is not "
                "first (torch gives h_n as (layers, N, hidden))",
                "take item 0, the output, then e.g. `Select: {dim: 1, index: -1}` for the last step",
            )
            return
        ir.out_shape = prev.out_shape

    def infer_shape(self, ir: LayerIR, dtype: str) -> None:
        where = where_of_ir(ir)
        module = self.construct(ir)
        if module is None:
            return
        if ir.in_shape is None or ir.entry.arity > 1:  # several inputs: the graph node checks their shapes
            return
        try:
            if ir.entry.shape_rule is not None:
                out_shape = plugin_shape(ir.type, ir.entry.shape_rule, ir.call.arguments, ir.in_shape)
            else:
                out_shape = output_shape(ir.type, ir.call.arguments, ir.in_shape)
        except ShapeError as err:
            self.problems.fail(where, err.message, err.fix)
            return
        if out_shape is not None:
            ir.out_shape = tuple(out_shape)
            return
        if module is True:  # checked without a module: construct it live for the forward pass
            module = self.construct(ir, cached=False, live=True)
            if module is None:
                return
        ir.out_shape = self.meta_forward(ir, module, dtype)

    def construct(self, ir: LayerIR, cached: bool = True, live: bool = False) -> Any:
        """Check the arguments as torch's constructor would and count the parameters and buffers: by the
        arithmetic rules of ``param_rules`` (no torch import; returns True), or, for a layer without one or on
        the live path, by constructing it on the meta device (no weights, no RNG; returns the module).
        Identical layers (a `repeat`) are checked once."""
        key = f"{ir.entry.name}{_call_text(ir)}"
        if cached and key in self.constructed:
            ir.params, ir.nbytes, ir.param_slots, ir.none_params, ir.param_shapes = self.constructed[key]
            return True
        cost = _construction_cost(ir)
        self.cost += cost
        if cost > MAX_LAYER_COST or self.cost > MAX_CONSTRUCTION_COST:
            what = f"this {ir.type} alone" if cost > MAX_LAYER_COST else "the model's distinct layers"
            self.problems.fail(
                where_of_ir(ir),
                f"{what} exceed{'s' if cost > MAX_LAYER_COST else ''} what "
                f"validation checks in bounded time ({cost:,} units here; at most "
                f"{MAX_LAYER_COST:,} a layer and {MAX_CONSTRUCTION_COST:,} in all)",
                "use fewer stacked layers (e.g. num_layers), or repeat identical layers",
            )
            self.cost = MAX_CONSTRUCTION_COST + 1  # report once, construct nothing more
            return None
        if not live and ir.entry.cls_object is None and not torch_facts.live():
            try:
                made = param_rules.construct(ir.entry.name, ir.call.arguments)
            except param_rules.Refused as err:
                self.refused(ir, err)
                return None
            except (TypeError, ValueError, ArithmeticError, LookupError):
                made = None  # arguments of a kind the rule does not know: torch judges them
            if made is not None:
                counts = (made.params, made.nbytes, tuple(made.slots), tuple(made.none), tuple(made.shapes.items()))
                ir.params, ir.nbytes, ir.param_slots, ir.none_params, ir.param_shapes = counts
                self.constructed[key] = counts
                return True
        return self.construct_live(ir, key)

    def refused(self, ir: LayerIR, err: BaseException) -> None:
        self.problems.fail(
            where_of_ir(ir),
            f"{ir.type}{_call_text(ir)} is refused by torch: {_first_line(err)}",
            "check the arguments against the torch documentation",
        )

    def construct_live(self, ir: LayerIR, key: str) -> Any:
        import torch

        args, kwargs = ir.call.values()
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = ir.entry.resolve()(*args, **kwargs)
        except Exception as err:  # torch's own argument checks
            self.refused(ir, err)
            return None
        ir.params = sum(p.numel() for p in module.parameters() if p.requires_grad)
        ir.nbytes = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
        ir.param_slots = tuple(module._parameters)
        ir.none_params = tuple(name for name, p in module._parameters.items() if p is None)
        ir.param_shapes = tuple((name, tuple(p.shape)) for name, p in module._parameters.items() if p is not None)
        self.constructed[key] = _counts(ir)
        return module

    def meta_forward(self, ir: LayerIR, module: Any, dtype: str) -> tuple | None:
        """No arithmetic rule (a layer registered from Python): run it once on the meta device."""
        import torch

        assert ir.in_shape is not None
        x = torch.empty(
            (_META_BATCH, *ir.in_shape), device="meta", dtype=torch.long if dtype == "int64" else torch.float32
        )
        try:
            module.eval()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = module(x)
        except Exception as err:
            self.problems.fail(
                where_of_ir(ir),
                f"{ir.type} cannot take an input of shape "
                f"{format_shape(ir.in_shape)}: {_first_line(err)} (torch's shapes include a batch "
                f"dimension of {_META_BATCH})",
                "check the layers before it, or the `input:` shape",
            )
            return None
        if isinstance(out, tuple):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.dim() < 1:
            self.problems.fail(
                where_of_ir(ir), f"{ir.type} does not return a batch of tensors", "use a different layer"
            )
            return None
        self.warn_no_rule(ir, tuple(out.shape[1:]))
        return tuple(out.shape[1:])

    def warn_no_rule(self, ir: LayerIR, shape: tuple) -> None:
        """Once per layer type: a shape from a forward pass is unchecked (give the layer its rule to check it)."""
        warned = self.__dict__.setdefault("_meta_warned", set())
        if ir.type in warned:
            return
        warned.add(ir.type)
        self.problems.warn(
            where_of_ir(ir),
            f"{ir.type} has no shape rule: its output shape {format_shape(shape)} comes from one forward pass on "
            "the meta device (no data, no memory)",
            f"check that shape; give the layer its shape rule to check it without a forward pass and silence "
            f"this (`register_layer({ir.type}, shape=...)`, see docs/spec-language.md §9)",
        )

    # init rules ---------------------------------------------------------------------

    def init_rule(self, rule: Any, layers: list[LayerIR], scope: str | None = None) -> InitRuleIR | None:
        """An `init:` rule over ``layers``: the model's (``scope`` None), or a graph node's at module path ``scope``
        ("" for the model's own graph)."""
        types = tuple(REGISTRY.get("layer", t) for t in rule.types)
        ir = InitRuleIR(types, rule.paths, {}, rule.yaml_path, scope or "")  # type: ignore[arg-type]
        if scope is not None:  # a graph node's rule (the spec's own are bounded when parsed: init_work)
            self.init_matches += len(rule.paths) * len(layers)
            if self.init_matches > MAX_INIT_MATCHES:
                self.problems.fail(
                    rule.yaml_path + ("path",),
                    f"the graph nodes' init rules try more than {MAX_INIT_MATCHES:,} module paths against patterns",
                    "match by `type:`, or use fewer patterns (one with wildcards matches many modules)",
                )
                return None
        layers = [layer for layer in layers if ir.matches(layer)]
        for pname, call in rule.calls:
            entry = REGISTRY.get("init", call.type)
            assert entry is not None
            bound = self.binder.bind(call, entry)
            if bound is None:
                continue
            slots = {slot for layer in layers for slot in layer.param_slots}
            if layers and pname not in slots:
                self.problems.fail(
                    call.yaml_path,
                    f"no module this rule matches has a parameter {pname!r}",
                    f"their parameters are: {', '.join(sorted(slots)) or 'none'}",
                )
                continue
            if self.init_refused(call, bound, pname, layers):
                continue
            ir.calls[pname] = bound
        if rule.paths and not layers:
            self.problems.warn(
                rule.yaml_path,
                f"init rule path {', '.join(rule.paths[:5])}{' ...' if len(rule.paths) > 5 else ''} matches no layer",
                "check the module paths with `specc summary`",
            )
        return ir

    def init_refused(self, call: Any, bound: CallIR, pname: str, layers: list[LayerIR]) -> bool:
        """Report what torch.nn.init would refuse on each distinct parameter the rule meets (param_rules)."""
        shapes = {dict(layer.param_shapes)[pname] for layer in layers if pname in dict(layer.param_shapes)}
        found = {
            problem
            for shape in sorted(shapes)
            for problem in param_rules.check_init(bound.entry.name, bound.arguments, shape, pname)
        }
        for argument, problem, fix in sorted(found, key=str):
            where = arg_path(call, argument, list(parameters(bound.entry))) if argument else call.yaml_path
            self.problems.fail(where, problem, fix)
        return bool(found)


WEIGHTS_MAX_BYTES = 1 << 36  # as runtime.load_checkpoint


def _weights_file(rule: Any, problems: Problems) -> LoadIR:
    """`init: - {from: PATH}`: a regular file inside the folder specc runs in, of a bounded size (opened, not read:
    its tensors are checked against the model when it is built, which needs torch)."""
    where = rule.yaml_path + ("from",)
    try:
        read_file(rule.load, limit=0)
        size = os.stat(rule.load).st_size
    except PathError as err:
        fix = err.fix if err.kind != "missing" else "train the model first, or give the path of a .pt or .pth file"
        problems.fail(where, f"weights file {rule.load!r} {err.message}", fix)
    else:
        if size > WEIGHTS_MAX_BYTES:
            problems.fail(where, f"weights file {rule.load!r} is larger than 64 GiB", "give a state dict of the model")
    return LoadIR(rule.load, rule.strict, rule.yaml_path)


def _counts(ir: LayerIR) -> tuple:
    """What constructing a layer told: reused for identical layers (``LayerIR``'s fields, in order)."""
    return ir.params, ir.nbytes, ir.param_slots, ir.none_params, ir.param_shapes


def _construction_cost(ir: LayerIR) -> int:
    """Work units to construct a layer: its stacked layers for recurrent ones, else one."""
    if ir.entry.returns_tuple:  # RNN, LSTM, GRU: parameters per stacked layer and direction
        layers, bidirectional = ir.call.value("num_layers", 1), ir.call.value("bidirectional", False)
        if isinstance(layers, int) and not isinstance(layers, bool):
            return max(1, layers) * (2 if bidirectional is True else 1)
    return 1


def _infer_index(entry: Entry) -> int:
    names = [p.name for p in parameters(entry)]
    return names.index(entry.infer) if entry.infer in names else 0


def _inferred(node: Layer, entry: Entry) -> str | None:
    """The argument shape inference filled, if any (not given by position or keyword)."""
    if not entry.infer or entry.infer in node.kwargs or len(node.args) > _infer_index(entry):
        return None
    return entry.infer


def where_of_ir(ir: LayerIR) -> Path_:
    return ir.yaml_path + ((ir.type,) if ir.call.args or ir.call.kwargs else ())


def _call_text(ir: LayerIR) -> str:
    parts = [a.source for a in ir.call.args] + [f"{k}={a.source}" for k, a in ir.call.kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


__all__ = ["SpecError", "format_bytes", "lower_model", "memory_budget"]
