"""A forward that is not a tree, read into a graph node (docs/spec-language.md §15).

When a module's traced ``forward`` is no chain with one merge (``graph.py``), it is read again as named values
flowing through steps: each child call a step (several tensors ``from: [q, k, v]``, keyword arguments ``with:``,
a returned tuple unpacked ``as: [out, _]``), ``get_attr`` of the module's own parameters and buffers its
``params:``/``buffers:``, ``+ - * / @``, ``torch.cat``/``stack`` and ``expand(x.shape[0], -1, ...)`` operations,
every other call a parameter-free layer. Sizes read from tensors (``x.shape[0]``, ``x.size()``, their
arithmetic, ``torch._assert`` on them) are no values: the batch size stays symbolic, every other size is the
concrete number a forward pass of the model on the spec's input gives (``Probe``: a copy of the model on the meta
device, so no arithmetic is done), which is what a spec with that ``input:`` computes. A view that only merges or
splits dimensions is a ``Flatten``/``Unflatten`` (any size), else a ``Reshape`` with those numbers.

What a graph node cannot say is a ``DecompileError`` naming the module path and the operation.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import keyword
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from compiler.interop.graph import (
    _BASE_NAMES,
    _arg,
    _describe_node,
    _function_name,
    _functional,
    _functional_layer,
    _Tracer,
    join_path,
)
from compiler.interop.nodes import Block, Dataflow, DecompileError, GraphStep, Layer, TensorDecl, shape_text

PROBE_BATCH = 2  # the probe's batch size (symbolic in the spec: never written)
_OPS = ("add", "sub", "mul", "div", "matmul", "cat", "stack", "expand_batch", "interpolate")
_RESERVED = {"x", "graph", "from", "as", "with", "dim", "_", *_OPS}
_DTYPES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.bool: "bool",
}
_BINARY = {
    "add": ({operator.add, operator.iadd, torch.add}, {"add", "add_", "__add__", "__iadd__"}),
    "sub": ({operator.sub, operator.isub, torch.sub}, {"sub", "sub_", "__sub__", "__isub__"}),
    "mul": ({operator.mul, operator.imul, torch.mul}, {"mul", "mul_", "__mul__", "__imul__"}),
    "div": ({operator.truediv, operator.itruediv, torch.div, torch.true_divide}, {"div", "div_", "__truediv__"}),
    "matmul": ({operator.matmul, torch.matmul}, {"matmul", "__matmul__"}),
}
_CAT = {torch.cat, torch.concat, getattr(torch, "concatenate", torch.cat)}
_SIZE_OPS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.floordiv,
    operator.truediv,
    operator.mod,
    operator.pow,
    operator.neg,
    operator.eq,
    operator.ne,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
    operator.not_,
    operator.and_,
    operator.or_,
    math.ceil,
    math.floor,
    math.sqrt,
    int,
    float,
}
_VALUE_NAMES = {"add": "summed", "sub": "difference", "mul": "product", "div": "quotient", "matmul": "matmul_out"}
_VALUE_NAMES |= {"cat": "joined", "stack": "stacked", "interpolate": "resized"}
_INTERPOLATE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "linear", "trilinear", "area")


# --------------------------------------------------------------------------- the probe: concrete sizes


class Probe:
    """Each module's inputs in one forward pass of a copy of the model (on the meta device where torch can;
    else a real copy on the CPU) at batch ``PROBE_BATCH``, in training mode as the forwards are traced: from them a
    traced forward is run again node by node, giving every size it computes."""

    def __init__(self, root: nn.Module, shape: tuple[int, ...] | dict[str, tuple[int, ...]]):
        self.root, self.shape = root, shape  # one sample's shape, or several inputs' by name (the forward's order)
        self.shapes = list(shape.values()) if isinstance(shape, dict) else [shape]
        self.copy: nn.Module | None = None
        self.calls: dict[str, tuple[tuple, dict]] = {}
        self.failure: str | None = None  # why no forward pass ran (None: not tried yet)

    def values(self, path: str, graph: fx.Graph, what: str) -> dict[fx.Node, Any]:
        """Every node's value when ``graph`` (the forward of the module at ``path``) runs on its recorded inputs."""
        if self.failure is None:
            self.failure = ""
            for device in ("meta", "cpu"):
                try:
                    self._record(device)
                    break
                except Exception as err:  # an op without a meta kernel, a model that does not take the input
                    self.failure = self.failure or _one_line(err)
                    self.copy, self.calls = None, {}
        if self.copy is None:
            raise DecompileError(
                path,
                f"{what}: the input shape {shape_text(self.shape)} does not fit the model: its forward pass fails "
                f"({self.failure})",
            )
        if path not in self.calls:
            raise DecompileError(path, f"{what}: the model's forward pass never calls this module")
        args, kwargs = self.calls[path]
        module = self.copy.get_submodule(path)
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        given = []
        for i, node in enumerate(placeholders):
            if i < len(args):
                given.append(args[i])
            elif node.target in kwargs:
                given.append(kwargs[node.target])
            else:
                given.append(node.args[0] if node.args else None)
        runner = fx.Interpreter(fx.GraphModule(module, graph), garbage_collect_values=False)
        try:
            with torch.no_grad():
                runner.run(*given)
        except Exception as err:
            raise DecompileError(path, f"{what}: its traced forward does not run again ({_one_line(err)})") from None
        return dict(runner.env)

    def _record(self, device: str) -> None:
        clone = _copy(self.root, device)
        clone.train()  # as the forwards are traced (F.dropout(training=self.training), training-only branches)
        names: dict[int, list[str]] = {}
        for name, module in clone.named_modules(remove_duplicate=False):
            names.setdefault(id(module), []).append(name)
        handles = []

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            for name in names.get(id(module), ()):
                self.calls.setdefault(name, (args, kwargs))

        for module in {id(m): m for m in clone.modules()}.values():
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        try:
            with torch.no_grad():
                try:
                    clone(*(torch.randn(PROBE_BATCH, *s, device=device) for s in self.shapes))
                except Exception as err:
                    self.calls = {}
                    try:  # (indices)
                        clone(*(torch.zeros(PROBE_BATCH, *s, dtype=torch.int64, device=device) for s in self.shapes))
                    except Exception:
                        raise err from None
        finally:
            for handle in handles:
                handle.remove()
        self.copy = clone


def _copy(root: nn.Module, device: str) -> nn.Module:
    """A copy of ``root`` whose tensors are empty meta tensors (``device="meta"``), or a full copy."""
    if device != "meta":
        return copy.deepcopy(root)
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(root.parameters(), root.buffers()):
        if id(tensor) not in memo:
            empty = torch.empty_like(tensor, device="meta")
            memo[id(tensor)] = (
                nn.Parameter(empty, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
            )
    return copy.deepcopy(root, memo)


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------- what each fx node is


@dataclass(eq=False)
class _Value:
    """A tensor value of the graph node: ``vid`` indexes the reader's values."""

    vid: int
    batch: bool  # its first axis is the batch (a parameter's is not)


class _Batch:
    """The batch size: ``x.shape[0]``, ``x.size(0)``."""


BATCH = _Batch()


@dataclass(eq=False)
class _Const:
    """A size, a number or a flag the forward computes from shapes: its value for the spec's input."""

    value: Any


@dataclass(eq=False)
class _Shape:
    """``x.shape`` or ``x.size()`` of a batch value: item 0 is the batch, the others constants."""

    value: Any  # the concrete torch.Size
    of: Any = None  # the _Value it is the shape of


@dataclass(eq=False)
class _Spatial:
    """``x.shape[2:]``: a map's spatial size (``interpolate``'s ``size=``), and its numbers."""

    of: Any
    value: tuple


@dataclass(eq=False)
class _Derived:
    """A number computed from the batch size: a spec has no such value."""

    what: str


@dataclass(eq=False)
class _Items:
    """A tuple a child step returned: each item read becomes a name in the step's ``as:``."""

    step: _Step
    count: int
    result: Any = None  # what the probe's forward pass got: the items' values


@dataclass(eq=False)
class _Pieces:
    """``x.chunk(n, dim)``, ``x.split(sizes, dim)``, ``x.unbind(dim)``: each piece read becomes a Slice/Select."""

    source: _Value
    dim: int
    bounds: list[tuple[int, int]]  # (start, end); end - start == 0: unbind's index
    select: bool
    what: str


@dataclass(eq=False)
class _Packed:
    """A tuple, list or named tuple the forward builds (only a return value makes one)."""

    what: str
    items: list[Any]


@dataclass(eq=False)
class _Step:
    name: str  # a child's name; "" for an operation
    node: Any = None
    op: str = ""
    inputs: list[int] = field(default_factory=list)
    outs: list[int | None] = field(default_factory=list)  # value ids (None: a tuple item never read)
    tuple_count: int = 0  # a child that returns a tuple of this many items
    keywords: dict[str, Any] = field(default_factory=dict)
    dim: int | None = None
    mode: str | None = None  # interpolate
    module: nn.Module | None = None  # the child (for "weights" checks)
    path: str = ""
    hint: str = ""  # an operation's or a call's value: the base of its name
    target: str = ""  # the module called, below the graph node's (``layers.3`` for a member of a ModuleList)
    call: str = ""  # a `call:` step: a module of `modules:`, or ``list.K``
    member: tuple[str, int] | None = None  # (list, K): a member of a ModuleList child


class _Namer:
    """Fresh names for steps (module attributes) and values, none taken twice in one graph node."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken) | _RESERVED

    def fresh(self, base: str, attribute: bool) -> str:
        import re

        base = re.sub(r"\W", "_", base).strip("_") or "value"
        if not base[0].isalpha():
            base = "op_" + base
        name, i = base, 1
        while name in self.taken or not _legal(name, attribute):
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


def _legal(name: str, attribute: bool) -> bool:
    from compiler.front.names import BUILTINS, NameProblem, check_block_name

    if not name.isidentifier() or keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in BUILTINS:
        return False
    if not attribute:
        return True
    try:
        check_block_name(name, attribute=True)
    except NameProblem:
        return False
    return True


def _has_weights(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


# --------------------------------------------------------------------------- the reader


class DataflowReader:
    """One module's traced forward (children as leaves) read node by node into a graph node."""

    def __init__(self, decompiler: Any, module: nn.Module, path: str, graph: fx.Graph, values: dict):
        self.decompiler, self.module, self.path, self.graph, self.values = decompiler, module, path, graph, values
        self.owner = f"{type(module).__name__}.forward"
        self.env: dict[fx.Node, Any] = {}
        self.steps: list[_Step] = []
        self.fixed: dict[int, str] = {0: "x"}  # value id -> its name (x, parameters and buffers)
        self.tensors: dict[str, TensorDecl] = {}
        self.tensor_ids: dict[str, int] = {}
        self.called: dict[str, int] = {}
        self.children_used: set[str] = set()  # the direct children some step calls (or calls a member of)
        self.declared: dict[str, Any] = {}  # `modules:`
        self.input_ids: list[int] = [0]  # the forward's arguments as values (one: x)
        self.several_inputs = False
        self.input_names: list[str] = []  # the model's top level: the names `input:` gives (several inputs)
        self.unused_calls: set[str] = set()  # children called only for what nothing reads
        self.outputs: list[int] = []  # the values training mode returns (one: a tensor; else a tuple or a dict)
        self.output_keys: list[str] | None = None  # a dict's keys
        self.several = False  # a tuple or a dict, even of one value
        self.eval_graph: fx.Graph | None = None  # the forward traced in eval mode, where it may return other values
        self.eval_ids: list[int] = []  # what eval mode returns where it differs
        self.eval_several = False
        children = {name for name, _ in module.named_children()}
        own = {name for name, _ in module.named_parameters(recurse=False)}
        own |= {name for name, _ in module.named_buffers(recurse=False)}
        self.names = _Namer(children | own)
        self.next_id = 1

    # ----------------------------------------------------------------- helpers

    def fail(self, message: str, path: str | None = None) -> DecompileError:
        return DecompileError(self.path if path is None else path, message)

    def where(self, node: fx.Node) -> str:
        """``VisionTransformer.forward: operator.getitem()``: the forward and the operation, for messages."""
        what = f"self.{node.target}()" if node.op == "call_module" else _describe_node(node)
        return f"{self.owner}: {what}"

    def new_value(self, batch: bool) -> _Value:
        value = _Value(self.next_id, batch)
        self.next_id += 1
        return value

    def tensor(self, arg: Any, node: fx.Node, batch: bool = True) -> _Value:
        """``arg`` as a tensor value of the graph (a batch where ``batch``), else refused."""
        got = self.env.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(got, _Value):
            if batch and not got.batch:
                name = self.fixed.get(got.vid, "a value made from parameters")
                raise self.fail(
                    f"{self.where(node)} takes {name}, which has no batch axis: a spec's layers and children take "
                    "a batch (a parameter is repeated over the batch with `expand(x.shape[0], -1, ...)` first)"
                )
            return got
        if isinstance(got, (_Items, _Pieces, _Packed)):
            raise self.fail(f"{self.where(node)} takes a whole tuple; a spec reads a tuple's items one by one")
        raise self.fail(f"{self.where(node)} takes {_show(arg)}, which is not a tensor of the forward")

    def size(self, arg: Any, node: fx.Node) -> Any:
        """A size argument: BATCH, or an integer (a constant the shapes computed)."""
        if isinstance(arg, fx.Node):
            got = self.env.get(arg)
            if got is BATCH:
                return BATCH
            if isinstance(got, _Const) and isinstance(got.value, (int, bool)):
                return int(got.value)
            if isinstance(got, _Derived):
                raise self.fail(f"{self.where(node)} takes {got.what}, a number computed from the batch size")
            raise self.fail(f"{self.where(node)} takes {_show(arg)} as a size, which is not a number of the forward")
        if isinstance(arg, bool) or not isinstance(arg, int):
            raise self.fail(f"{self.where(node)} takes {arg!r} as a size")
        return arg

    def literal(self, arg: Any, node: fx.Node) -> Any:
        """A non-tensor argument with every size node replaced by its number (refused if it holds a tensor)."""
        if isinstance(arg, fx.Node):
            got = self.env.get(arg)
            if isinstance(got, (_Const, _Spatial)):
                return got.value
            if got is BATCH or isinstance(got, _Derived):
                raise self.fail(f"{self.where(node)} takes the batch size as an argument, which a spec's layers cannot")
            raise self.fail(
                f"{self.where(node)} takes {_show(arg)} as well as its input: a spec's layer takes one tensor"
            )
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.literal(a, node) for a in arg)
        if isinstance(arg, slice):
            return slice(self.literal(arg.start, node), self.literal(arg.stop, node), self.literal(arg.step, node))
        return arg

    def add_step(self, step: _Step, batch: bool) -> _Value:
        self.steps.append(step)
        value = self.new_value(batch)
        step.outs = [value.vid]
        return value

    def layer_step(self, layer: Layer, base: str, source: _Value) -> _Value:
        step = _Step(self.names.fresh(base, attribute=True), layer, inputs=[source.vid])
        return self.add_step(step, True)

    # ----------------------------------------------------------------- nodes

    def read(self) -> Dataflow:
        live = _live(self.graph)
        for node in self.graph.nodes:
            if node in live or node.op == "placeholder":
                self.node(node)
            elif node.op == "call_module":
                self.unused_calls.add(str(node.target))
            elif node.op in ("call_method", "call_function") and _in_place(node):  # x.mul_(2), result dropped
                raise self.fail(
                    f"{self.where(node)} changes a value in place and its result is never read: a spec's "
                    "steps make new values (write y = x.mul(2) and use y)"
                )
        return self.assemble()

    def node(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            if not self.several_inputs and not self.env:  # the first: x (others are unused defaults)
                self.env[node] = _Value(0, True)
            elif self.several_inputs and node.users:  # several inputs: `inputs: [a, b]`, named as forward's
                vid = self.next_id
                self.next_id += 1
                if self.input_names:  # the model's top level: named as `input:` names them
                    self.fixed[vid] = self.input_names[len(self.input_ids)]
                else:
                    self.fixed[vid] = self.names.fresh(str(node.target), attribute=False)
                self.input_ids.append(vid)
                self.env[node] = _Value(vid, True)
        elif node.op == "get_attr":
            self.get_attr(node)
        elif node.op == "call_module":
            self.call_module(node)
        elif node.op == "output":
            self.read_output(node)
        else:
            self.function(node)

    def get_attr(self, node: fx.Node) -> None:
        target = str(node.target)
        what = f"{self.owner} reads self.{target}"
        if "." in target:
            child = target.rsplit(".", 1)[0]
            raise self.fail(
                f"{what}, a tensor of its child {child}: a graph node's steps call its children and read only its own "
                "parameters and buffers",
                join_path(self.path, child),
            )
        params = dict(self.module.named_parameters(recurse=False))
        buffers = dict(self.module.named_buffers(recurse=False))
        if target not in params and target not in buffers:
            raise self.fail(f"{what}, a tensor made in forward (no parameter or buffer): a spec cannot hold it")
        if target in buffers and target in getattr(self.module, "_non_persistent_buffers_set", ()):
            raise self.fail(
                f"{what}, a buffer kept out of the state dict (persistent=False): a spec's buffers are saved"
            )
        tensor = params.get(target, buffers.get(target))
        self.declare(target, tensor, target in buffers)
        self.env[node] = _Value(self.tensor_ids[target], False)

    def declare(self, name: str, tensor: torch.Tensor, buffer: bool) -> None:
        if name in self.tensors:
            return
        what = f"{self.owner}: its {'buffer' if buffer else 'parameter'} {name}"
        if name in _RESERVED or not _legal(name, attribute=True):
            raise self.fail(f"{what}: a graph node's tensor is an attribute, and {name!r} cannot name one")
        if tensor.dim() == 0 or 0 in tensor.shape:
            raise self.fail(f"{what} has the shape {list(tensor.shape)}: a graph node's tensors have positive sizes")
        if tensor.dtype not in _DTYPES:
            raise self.fail(f"{what} is {tensor.dtype}, which a spec's tensors cannot be")
        self.tensors[name] = TensorDecl(name, tuple(tensor.shape), buffer, _DTYPES[tensor.dtype])
        vid = self.next_id
        self.next_id += 1
        self.tensor_ids[name], self.fixed[vid] = vid, name

    def call_module(self, node: fx.Node) -> None:
        """A child's call: a step named by the child; a member of a ModuleList child (``layers.3``), a child with
        weights called again (shared: `modules:`, `call:`) are sorted out once every call is read (``calls``)."""
        target = str(node.target)
        child = self.module.get_submodule(target)
        child_path = join_path(self.path, target)
        head, _, tail = target.partition(".")
        member = None
        if tail:
            if not (isinstance(self.module.get_submodule(head), nn.ModuleList) and tail.isdigit()):
                raise self.fail(f"{self.owner} calls its grandchild {target} directly", child_path)
            member = (head, int(tail))
        if head in _RESERVED or not _legal(head, attribute=True):
            raise self.fail(
                f"{self.owner} calls it, but a graph node's child is an attribute (self.{head}) and {head!r} cannot "
                "name one",
                join_path(self.path, head),
            )
        entry = self.decompiler.layer_classes.get(type(child))
        tensors, keywords = self.call_arguments(node, child, entry, child_path)
        shared = target in self.called and _has_weights(child)
        name = "" if member else target if target not in self.called else self.names.fresh(target, attribute=True)
        self.called[target] = self.called.get(target, 0) + 1
        self.children_used.add(head)
        if entry is not None and entry.name == "MultiheadAttention" and not child.batch_first:
            raise self.fail(
                "MultiheadAttention with batch_first=False: a graph node's values are batch-first (§15)", child_path
            )
        spec = self.decompiler.convert(
            child, child_path if member or shared or name == target else join_path(self.path, name)
        )
        takes = len(spec.inputs) if isinstance(spec, Dataflow) else entry.arity if entry is not None else 1
        if len(tensors) != takes:
            raise self.fail(f"{self.owner} calls it with {len(tensors)} tensors; it takes {takes}", child_path)
        step = _Step(
            name,
            spec,
            inputs=[t.vid for t in tensors],
            keywords=keywords,
            module=child,
            path=child_path,
            target=target,
            member=member,
            hint=f"{head}_{tail}" if member else f"{target}_out",
        )
        result = self.values.get(node)
        if isinstance(result, torch.Tensor):
            self.env[node] = self.add_step(step, True)
        elif isinstance(result, (tuple, list)) and result:
            step.tuple_count = len(result)
            step.outs = [None] * len(result)
            self.steps.append(step)
            self.env[node] = _Items(step, len(result), result)
        else:
            raise self.fail(
                f"{self.owner} calls it and gets {type(result).__name__}: a spec's children return a tensor or a tuple",
                child_path,
            )

    def call_arguments(
        self, node: fx.Node, child: nn.Module, entry: Any, child_path: str
    ) -> tuple[list[_Value], dict[str, Any]]:
        """The tensors a child is called with (``from:``: a layer's ``arity``, else its leading tensor arguments,
        the child's ``inputs:``) and its literal keyword arguments (``with:``)."""
        try:
            signature = inspect.signature(child.forward)
            bound = signature.bind(*node.args, **node.kwargs)
        except (TypeError, ValueError) as err:
            raise self.fail(f"{self.owner} calls it with arguments its forward does not take ({err})", child_path)
        parameters = signature.parameters
        options = entry.forward_options if entry is not None else ()
        tensors, keywords = [], {}
        leading = True
        for i, (name, value) in enumerate(bound.arguments.items()):
            if parameters[name].kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise self.fail(f"{self.owner} calls it with *args or **kwargs, which a step cannot give", child_path)
            is_tensor = isinstance(value, fx.Node) and isinstance(self.env.get(value), _Value)
            takes_tensor = i < entry.arity if entry is not None else leading and is_tensor
            if takes_tensor:
                if not is_tensor:
                    raise self.fail(f"{self.owner} calls it with {_show(value)} as {name!r}: a step gives tensors")
                tensors.append(self.tensor(value, node))
                continue
            leading = False
            if is_tensor:
                what = f"{entry.name} takes {entry.arity}" if entry is not None else "after other arguments"
                raise self.fail(f"{self.owner} calls it with a tensor as {name!r} too ({what})", child_path)
            value = self.literal(value, node)
            if value == parameters[name].default and type(value) is type(parameters[name].default):
                continue  # what the forward does without it
            if name not in options or not isinstance(value, (bool, int, float, str, type(None))):
                takes = f"its step's `with:` takes {', '.join(options)}" if options else "a step passes no arguments"
                raise self.fail(f"{self.owner} calls it with {name}={value!r}; {takes}", child_path)
            keywords[name] = value
        return tensors, keywords

    def read_output(self, node: fx.Node) -> None:
        """One tensor, or a tuple, list, named tuple (``output: [a, b]``) or, at the model's top level, a dict
        (``output: {key: a}``) of tensors."""
        self.outputs, self.output_keys, self.several = self.returned(node.args[0], self.env, self.graph)

    def returned(self, out: Any, env: dict, graph: fx.Graph) -> tuple[list[int], list[str] | None, bool]:
        """What a forward returns as value ids (``env`` maps that graph's nodes), its dict keys, several or not."""
        got = env.get(out) if isinstance(out, fx.Node) else None
        if isinstance(got, _Value):
            if not got.batch:
                raise self.fail(f"{self.owner} returns a value without a batch axis (a parameter): it returns a batch")
            return [got.vid], None, False
        keys = None
        if isinstance(got, _Packed):
            items = got.items
        elif isinstance(got, _Items):
            items = [("item", got, k) for k in range(got.count)]
        elif isinstance(out, dict):
            if self.path:
                raise self.fail(
                    f"{self.owner} returns a dict: a graph node returns one value or a tuple; a dict output is the "
                    "model's, at its top level"
                )
            keys, items = [str(k) for k in out], list(out.values())
            if len(set(keys)) != len(keys) or not all(isinstance(k, str) and k for k in out):
                raise self.fail(f"{self.owner} returns a dict whose keys are not distinct text: {list(out)!r}")
        elif isinstance(out, (tuple, list)) and out:
            items = list(out)
        else:
            raise self.fail(f"{self.owner} returns {_show(out)}, not a tensor")
        vids = []
        for item in items:
            if isinstance(item, tuple) and item and item[0] == "item":
                value = self.tuple_item(None, item[1], item[2])
            else:
                value = (env.get(item) if item in env else self.env.get(item)) if isinstance(item, fx.Node) else None
            if not isinstance(value, _Value) or not value.batch:
                raise self.fail(
                    f"{self.owner} returns {_show(item) if not isinstance(item, tuple) else 'a tuple'} among its "
                    "outputs: each output is a tensor with a batch axis (no nested tuples)"
                )
            vids.append(value.vid)
        return vids, keys, True

    def eval_outputs(self) -> list[int] | None:
        """The values eval mode returns where they are not training mode's (GoogLeNet: its logits without the
        auxiliary heads' outputs), as the training graph's values; None where they are the same."""
        if self.eval_graph is None:
            return None
        train = {}
        for node in self.graph.nodes:
            if node in self.env:
                train.setdefault(_key(node), []).append(node)
        mapped: dict[fx.Node, Any] = {}
        for node in self.eval_graph.nodes:
            found = train.get(_key(node), [])
            if len(found) == 1:
                mapped[node] = self.env[found[0]]
        out = next(n for n in reversed(self.eval_graph.nodes) if n.op == "output").args[0]
        try:
            vids, keys, several = self.returned(out, mapped, self.eval_graph)
        except DecompileError as err:
            raise self.fail(
                f"{self.owner} returns in eval mode what training mode does not make ({err.message}): a spec's eval "
                "mode runs the training mode's steps less the training-only ones"
            ) from None
        if (vids, keys, several) == (self.outputs, self.output_keys, self.several):
            return None
        if keys is not None or self.output_keys is not None and keys is None and several:
            raise self.fail(f"{self.owner} returns a dict in one mode only; a spec's eval_output is a value or a list")
        if self.path:
            raise self.fail(
                f"{self.owner} returns other values in eval mode than in training mode: only the model's top level "
                "says what eval mode returns (`eval_output:`)"
            )
        self.eval_several = several
        return vids

    # ----------------------------------------------------------------- functions and methods

    def function(self, node: fx.Node) -> None:
        name, method, target = _function_name(node), node.op == "call_method", node.target
        operands = [self.env.get(a) if isinstance(a, fx.Node) else a for a in node.args]
        tensors = any(isinstance(o, _Value) for o in operands)
        if target is getattr or method and name in ("size", "dim", "numel"):
            self.env[node] = self.shape_query(node, name)
        elif target is operator.getitem:
            self.getitem(node)
        elif not tensors and (target in _SIZE_OPS or target in (min, max)):
            self.env[node] = self.size_arithmetic(node, operands)
        elif isinstance(target, type) and issubclass(target, (tuple, list)):
            self.env[node] = _Packed(f"{target.__name__}(...)", list(node.args))
        elif self.binary(node, name, method):
            return
        elif target in _CAT or name in ("stack",) and not method:
            self.concatenate(node, "cat" if target in _CAT else "stack")
        elif method and name == "expand":
            self.expand(node)
        elif name == "interpolate" and not method and self.interpolate(node):
            return
        elif name in ("view", "reshape") and (method or target is torch.reshape):
            self.reshape(node)
        elif name in ("unsqueeze", "squeeze") and (method or getattr(torch, name) is target):
            self.squeeze(node, name)
        elif name in ("chunk", "split", "unbind") and (method or getattr(torch, name, None) is target):
            self.pieces(node, name)
        else:
            self.unary(node)

    def shape_query(self, node: fx.Node, name: str) -> Any:
        """``x.shape``, ``x.size()``, ``x.size(d)``, ``x.dim()``, ``x.ndim``: the batch or constants."""
        got = self.env.get(node.args[0])
        concrete = self.values.get(node)
        if not isinstance(got, _Value):
            raise self.fail(f"{self.where(node)} of {_show(node.args[0])}, which is not a tensor of the forward")
        attribute = node.args[1] if node.target is getattr else name
        if attribute in ("dim", "ndim", "dtype", "device", "is_cuda"):
            return _Const(concrete)
        if attribute == "numel":
            return _Derived(_describe_node(node)) if got.batch else _Const(concrete)
        if attribute == "shape" or attribute == "size" and _arg(node, 1, "dim") is None:
            return _Shape(tuple(concrete), got) if got.batch else _Const(tuple(concrete))
        if attribute == "size":
            dim = self.size(_arg(node, 1, "dim"), node)
            rank = self.values[node.args[0]].dim()
            return BATCH if got.batch and dim in (0, -rank) else _Const(concrete)
        raise self.fail(f"{self.where(node)}: the attribute {attribute!r} of a tensor is no value of a spec")

    def size_arithmetic(self, node: fx.Node, operands: list) -> Any:
        """Arithmetic and comparisons on sizes: a constant, or ``_Derived`` where the batch size enters."""
        for o in [*operands, *(self.env.get(v) for v in node.kwargs.values() if isinstance(v, fx.Node))]:
            if o is BATCH or isinstance(o, (_Derived, _Shape)):
                return _Derived(f"{_describe_node(node)} (of the batch size)")
            if o is not None and not isinstance(o, (_Const, int, float, bool, str, tuple)):
                raise self.fail(f"{self.where(node)} on {type(o).__name__}, which a spec cannot compute")
        value = self.values.get(node)
        return _Const(tuple(value) if isinstance(value, torch.Size) else value)

    def getitem(self, node: fx.Node) -> None:
        source, index = node.args
        got = self.env.get(source) if isinstance(source, fx.Node) else None
        if isinstance(got, _Shape):
            self.env[node] = self.shape_item(node, got, self.literal(index, node))
        elif isinstance(got, _Const):
            value = self.values.get(node)
            self.env[node] = _Const(tuple(value) if isinstance(value, torch.Size) else value)
        elif isinstance(got, _Items):
            self.env[node] = self.tuple_item(node, got, self.literal(index, node))
        elif isinstance(got, _Pieces):
            self.env[node] = self.piece(node, got, self.literal(index, node))
        elif isinstance(got, _Packed):
            self.env[node] = self.env.get(got.items[self.literal(index, node)])
        elif isinstance(got, _Value):
            self.env[node] = self.index_tensor(node, got, self.literal(index, node))
        else:
            raise self.fail(f"{self.where(node)} of {_show(source)}, which a spec cannot index")

    def shape_item(self, node: fx.Node, shape: _Shape, index: Any) -> Any:
        rank = len(shape.value)
        if isinstance(index, int):
            return BATCH if index in (0, -rank) else _Const(int(shape.value[index]))
        if isinstance(index, slice) and rank >= 3 and range(rank)[index] == range(2, rank) and shape.of is not None:
            return _Spatial(shape.of, tuple(shape.value[2:]))
        if isinstance(index, slice) and 0 not in range(rank)[index]:
            return _Const(tuple(shape.value[index]))
        return _Derived(f"{_describe_node(node)} (sizes with the batch size)")

    def tuple_item(self, node: fx.Node | None, items: _Items, index: Any) -> _Value:
        """Item ``index`` of a child's tuple (``node`` reads it; None: the forward returns the tuple whole)."""
        where = self.where(node) if node is not None else f"{self.owner} returns what {items.step.name} returns"
        if not isinstance(index, int) or not -items.count <= index < items.count:
            raise self.fail(f"{where}: item {index!r} of a tuple of {items.count}; a step unpacks items")
        index %= items.count
        step = items.step
        if step.outs[index] is None:
            concrete = items.result[index]
            if not isinstance(concrete, torch.Tensor):
                raise self.fail(
                    f"{where}: item {index} of what {step.name} returns is {type(concrete).__name__}, not "
                    "a tensor (a nested tuple, LSTM's (h, c), is read whole by no step)",
                    step.path,
                )
            step.outs[index] = self.new_value(True).vid
        return _Value(step.outs[index], True)

    def piece(self, node: fx.Node, pieces: _Pieces, index: Any) -> _Value:
        if not isinstance(index, int) or not -len(pieces.bounds) <= index < len(pieces.bounds):
            raise self.fail(f"{self.where(node)}: piece {index!r} of {len(pieces.bounds)}")
        start, end = pieces.bounds[index]
        if pieces.select:
            return self.layer_step(
                _functional_layer("Select", {"dim": pieces.dim, "index": start}, self.path, pieces.what),
                "select",
                pieces.source,
            )
        args = {"dim": pieces.dim, "start": start, "end": end}
        if start == 0:
            del args["start"]
        layer = _functional_layer("Slice", args, self.path, pieces.what)
        return self.layer_step(layer, "piece", pieces.source)

    def index_tensor(self, node: fx.Node, value: _Value, index: Any) -> _Value:
        """``x[:, 0]``, ``x[:, 1:3]``, ``x[..., ::2]``: the batch kept, each other index a Select or Slice layer."""
        what = self.where(node)
        rank = self.values[node.args[0]].dim()
        items = list(index) if isinstance(index, tuple) else [index]
        if items.count(Ellipsis) > 1 or any(i is None for i in items):
            raise self.fail(f"{what}: an index with new axes (None) or two ellipses; a spec has no layer for it")
        if Ellipsis in items:
            k = items.index(Ellipsis)
            items[k : k + 1] = [slice(None)] * (rank - len(items) + 1)
        if not value.batch or not items or items[0] != slice(None):
            raise self.fail(f"{what} indexes the batch axis; a spec's layers keep the batch (x[:, ...])")
        dim = 1
        for item in items[1:]:
            if item == slice(None):
                dim += 1
            elif isinstance(item, slice):
                args = {"dim": dim, "start": item.start, "end": item.stop, "step": item.step}
                args = {k: v for k, v in args.items() if v is not None and not (k == "step" and v == 1)}
                value = self.layer_step(_functional_layer("Slice", args, self.path, what), "sliced", value)
                dim += 1
            elif isinstance(item, int) and not isinstance(item, bool):
                layer = _functional_layer("Select", {"dim": dim, "index": item}, self.path, what)
                value = self.layer_step(layer, "select", value)
            else:
                raise self.fail(f"{what}: an index by {type(item).__name__}; a spec's layers index by numbers")
        return value

    def binary(self, node: fx.Node, name: str, method: bool) -> bool:
        """``a + b``, ``a - b``, ``a * b``, ``a / b``, ``a @ b`` of tensor values: an operation step."""
        op = next(
            (k for k, (fns, methods) in _BINARY.items() if node.target in fns or method and name in methods), None
        )
        if op is None:
            return False
        what = self.where(node)
        extra = {k: v for k, v in node.kwargs.items() if k not in ("input", "other")}
        args = [*node.args, *(node.kwargs[k] for k in ("input", "other") if k in node.kwargs)]
        if extra or len(args) != 2:
            raise self.fail(f"{what} with {sorted(extra) or len(args)} arguments: a graph node's {op} takes two values")
        values = []
        for arg in args:
            got = self.env.get(arg) if isinstance(arg, fx.Node) else None
            if not isinstance(got, _Value):
                shown = _show(arg) if not isinstance(got, _Const) else repr(got.value)
                raise self.fail(
                    f"{what} with the constant {shown}: a graph node's operations take values (tensors of the "
                    "forward, parameters, buffers), not numbers"
                )
            values.append(got)
        step = _Step("", op=op, inputs=[v.vid for v in values], hint=_VALUE_NAMES[op])
        self.env[node] = self.add_step(step, any(v.batch for v in values))
        return True

    def concatenate(self, node: fx.Node, op: str) -> None:
        what = self.where(node)
        tensors, dim = _arg(node, 0, "tensors"), self.size(_arg(node, 1, "dim", 0), node)
        if not isinstance(tensors, (list, tuple)) or not tensors:
            raise self.fail(f"{what} of something other than a list of tensors")
        values = [self.tensor(t, node, batch=False) for t in tensors]
        rank = self.values[node].dim()
        dim = dim + rank if dim < 0 else dim
        if dim == 0:
            raise self.fail(f"{what} along dim 0 joins batches; a graph node's {op} joins along dim >= 1")
        if not all(v.batch for v in values):
            name = next(self.fixed.get(v.vid, "a parameter's value") for v in values if not v.batch)
            raise self.fail(
                f"{what} joins {name}, which has no batch axis, to a batch: repeat it over the batch first "
                "(expand(x.shape[0], -1, ...), expand_batch)"
            )
        if len(values) == 1 and op == "cat":
            self.env[node] = values[0]
            return
        step = _Step("", op=op, inputs=[v.vid for v in values], dim=dim, hint=_VALUE_NAMES[op])
        self.env[node] = self.add_step(step, True)

    def expand(self, node: fx.Node) -> None:
        """``token.expand(x.shape[0], -1, -1)`` of a tensor whose first size is 1: ``expand_batch``."""
        what = self.where(node)
        source = self.tensor(node.args[0], node, batch=False)
        sizes = list(node.args[1:]) or list(node.kwargs.get("size", ()))
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = list(sizes[0])
        shape = tuple(self.values[node.args[0]].shape)
        sizes = [self.size(s, node) for s in sizes]
        if source.batch or len(sizes) != len(shape) or shape[0] != 1 or sizes[0] is not BATCH:
            raise self.fail(
                f"{what}: a graph node expands only a tensor without a batch axis, first size 1, over the batch "
                "(`t.expand(x.shape[0], -1, ...)`, expand_batch)"
            )
        if not all(s in (-1, n) for s, n in zip(sizes[1:], shape[1:])):
            raise self.fail(f"{what} changes sizes other than the batch's; expand_batch repeats over the batch only")
        base = self.fixed.get(source.vid, "value")
        step = _Step("", op="expand_batch", inputs=[source.vid], hint=f"batch_{base}")
        self.env[node] = self.add_step(step, True)

    def interpolate(self, node: fx.Node) -> bool:
        """``F.interpolate(a, size=b.shape[2:], mode=m)``: the `interpolate` operation (False: another call of it,
        read as a layer or refused)."""
        size = _arg(node, 1, "size")
        spatial = self.env.get(size) if isinstance(size, fx.Node) else None
        if not isinstance(spatial, _Spatial):
            return False
        options = {k: self.literal(v, node) for k, v in node.kwargs.items() if k not in ("input", "size")}
        options.update({k: self.literal(v, node) for k, v in zip(("scale_factor", "mode"), node.args[2:4])})
        mode = options.pop("mode", "nearest")
        extra = {k: v for k, v in options.items() if v not in (None, False)}
        if len(node.args) > 4 or extra or mode not in _INTERPOLATE_MODES:
            raise self.fail(
                f"{self.where(node)} with {extra or mode!r}: the interpolate operation takes a value, the one whose "
                f"size it takes and a mode ({', '.join(_INTERPOLATE_MODES)})"
            )
        source = self.tensor(node.args[0] if node.args else node.kwargs.get("input"), node)
        step = _Step("", op="interpolate", inputs=[source.vid, spatial.of.vid], hint=_VALUE_NAMES["interpolate"])
        step.mode = mode
        self.env[node] = self.add_step(step, True)
        return True

    def reshape(self, node: fx.Node) -> None:
        """``x.view(n, ...)``, ``x.reshape(x.size(0), ...)``: the batch kept first, the rest ``regroup``'s."""
        what = self.where(node)
        source = self.tensor(node.args[0], node)
        sizes = list(node.args[1:]) or [node.kwargs.get("shape", ())]
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = list(sizes[0])
        sizes = [self.size(s, node) for s in sizes]
        before = tuple(self.values[node.args[0]].shape[1:])
        rest_fixed = all(isinstance(s, int) and s >= 0 for s in sizes[1:])
        if not sizes or not (
            sizes[0] is BATCH or sizes[0] == -1 and rest_fixed and math.prod(sizes[1:]) == math.prod(before)
        ):
            raise self.fail(
                f"{what} does not keep the batch as its first size (x.size(0) or x.shape[0]); a spec's Reshape and "
                "Flatten keep it"
            )
        if BATCH in sizes[1:]:
            raise self.fail(f"{what} puts the batch size elsewhere than first; a spec's layers keep the batch first")
        self.regroup(node, source)

    def squeeze(self, node: fx.Node, name: str) -> None:
        """``x.unsqueeze(d)``, ``x.squeeze(d)`` (d >= 1): Unflatten, Flatten or Reshape as a view is."""
        what = self.where(node)
        source = self.tensor(node.args[0], node)
        dim = _arg(node, 1, "dim")
        if dim is None:
            raise self.fail(f"{what} without a dim would drop a batch of one too; a spec's layers keep the batch")
        dims = [self.size(d, node) for d in (dim if isinstance(dim, (list, tuple)) else [dim])]
        rank = self.values[node.args[0]].dim() + (name == "unsqueeze")
        if any(d in (0, -rank) for d in dims):
            raise self.fail(f"{what} along dim 0 changes the batch axis; a spec's layers keep it")
        self.regroup(node, source)

    def regroup(self, node: fx.Node, source: _Value) -> None:
        """The view ``node`` makes of ``source`` as a layer: Flatten or Unflatten where it only merges or splits
        axes, else a Reshape to the sizes of the spec's input."""
        what = self.where(node)
        before = tuple(self.values[node.args[0]].shape[1:])
        after = tuple(self.values[node].shape[1:])
        if before == after:
            self.env[node] = source
            return
        layer = _regrouping(before, after)
        kind, args = layer if layer else ("Reshape", {"shape": list(after)})
        base = {"Flatten": "flatten", "Unflatten": "unflatten"}.get(kind, "reshape")
        self.env[node] = self.layer_step(_functional_layer(kind, args, self.path, what), base, source)

    def pieces(self, node: fx.Node, name: str) -> None:
        what = self.where(node)
        source = self.tensor(node.args[0], node)
        dim = _arg(node, 2 if name != "unbind" else 1, "dim", 0)
        dim = self.size(dim, node)
        rank = self.values[node.args[0]].dim()
        dim = dim + rank if dim < 0 else dim
        if dim == 0:
            raise self.fail(f"{what} along dim 0 splits the batch; a spec's layers keep it")
        parts = self.values[node]
        bounds, start = [], 0
        for part in parts:
            width = 0 if name == "unbind" else part.shape[dim]
            bounds.append((start, start + width))
            start += width if name != "unbind" else 1
        self.env[node] = _Pieces(source, dim, bounds, name == "unbind", what)

    def unary(self, node: fx.Node) -> None:
        what = self.where(node)
        tensor = node.args[0] if node.args else node.kwargs.get("input")
        got = self.env.get(tensor) if isinstance(tensor, fx.Node) else None
        if not isinstance(got, _Value):
            raise self.fail(f"{what} cannot be expressed in a spec")
        source = self.tensor(tensor, node)
        resolved = _Resolved(
            node, (tensor, *(self.literal(a, node) for a in node.args[1:])), self.literal_kwargs(node, tensor)
        )
        layer = _functional(resolved, self.path, {})
        if layer is None:
            raise self.fail(f"{what} cannot be expressed in a spec (no layer does it)")
        if layer == "skip":
            self.env[node] = source
            return
        base = _BASE_NAMES.get(layer[0], _function_name(node).strip("_"))
        base = {"sum": "total", "max": "maximum", "min": "minimum", "abs": "magnitude"}.get(base, base)
        self.env[node] = self.layer_step(_functional_layer(*layer, self.path, what), base, source)

    def literal_kwargs(self, node: fx.Node, tensor: fx.Node) -> dict:
        return {k: v if v is tensor else self.literal(v, node) for k, v in node.kwargs.items()}

    # ----------------------------------------------------------------- the graph node

    def assemble(self) -> Dataflow:
        if not self.outputs:
            raise self.fail(f"{self.owner} returns nothing a spec can read")
        eval_ids = self.eval_outputs()
        self.eval_ids = eval_ids or []
        self.check_children()
        self.prune()
        self.calls()
        uses = self.uses()
        for vid in self.input_ids:
            if vid not in uses:
                raise self.fail(f"{self.owner} never reads its input {self.fixed[vid]}: a graph node reads each input")
        for name, tensor in self.module.named_parameters(recurse=False):
            if name not in self.tensors:
                raise self.fail(
                    f"{self.owner} never reads its parameter {name}: a spec would hold it only if a step read it"
                )
        for name, tensor in self.module.named_buffers(recurse=False):
            if name not in self.tensors and name not in getattr(self.module, "_non_persistent_buffers_set", ()):
                self.declare(name, tensor, True)  # kept for itself (saved, never read)
        training = self.training_only()
        names = self.name_values(uses)
        steps = []
        previous: int | None = self.input_ids[0] if len(self.input_ids) == 1 else None
        for step in self.steps:
            inputs = tuple(names.get(v, "") for v in step.inputs)
            outs = tuple(names.get(v, "_") if v is not None else "_" for v in step.outs)
            if step.call:
                implicit = step.inputs == [previous]
                outputs = outs if step.tuple_count else (outs[:1] if step.outs[0] in names else None)
                steps.append(
                    GraphStep(
                        call=step.call,
                        inputs=None if implicit else inputs,
                        outputs=outputs,
                        unpack=bool(step.tuple_count),
                        keywords=tuple(step.keywords.items()),
                        training=id(step) in training,
                    )
                )
            elif step.node is not None:
                implicit = step.inputs == [previous]
                steps.append(
                    GraphStep(
                        step.name,
                        step.node,
                        inputs=None if implicit else inputs,
                        outputs=outs if step.tuple_count else None,
                        unpack=bool(step.tuple_count),
                        keywords=tuple(step.keywords.items()),
                        training=id(step) in training,
                    )
                )
            else:
                named = step.outs[0] in names
                steps.append(
                    GraphStep(op=step.op, inputs=inputs, outputs=outs if named else None, dim=step.dim, mode=step.mode)
                )
            previous = step.outs[0]
        if not steps:
            raise self.fail(f"{self.owner} returns its input as it is: no step to write")
        output: Any = None  # the last step's value
        if self.several:
            output = tuple(names[v] for v in self.outputs)
        elif self.steps[-1].outs[0] != self.outputs[0] or eval_ids:
            output = names[self.outputs[0]]
        eval_output = None
        if eval_ids:
            eval_names = tuple(names[v] for v in eval_ids)
            eval_output = eval_names if len(eval_ids) > 1 or self.eval_several else eval_names[0]
        tensors = tuple(self.tensors[name] for name in self._tensor_order())
        keys = tuple(self.output_keys) if self.output_keys is not None else None
        class_name = self.decompiler.class_name(self.module)
        return Dataflow(
            tuple(steps),
            tensors,
            tuple(self.declared.items()),
            tuple(self.fixed[v] for v in self.input_ids),
            output,
            keys,
            eval_output,
            class_name,
            type(self.module).__name__,
        )

    def calls(self) -> None:
        """Members of a ModuleList child run once each, in order, each on the one before's value: one step of the
        list (an nn.Sequential: the same keys). Members run otherwise: the list in `modules:`, each call a
        `call: list.K` step. A child with weights called more than once: in `modules:`, each call a `call:` step."""
        uses = self.uses()
        for head in dict.fromkeys(s.member[0] for s in self.steps if s.member):
            run = [s for s in self.steps if s.member and s.member[0] == head]
            holder = self.module.get_submodule(head)
            at = self.steps.index(run[0])
            chained = all(
                not a.tuple_count and b.inputs == [a.outs[0]] and uses.get(a.outs[0]) == 1 and not b.keywords
                for a, b in itertools.pairwise(run)
            )
            if (
                [s.member[1] for s in run] == list(range(len(holder)))
                and self.steps[at : at + len(run)] == run
                and chained
                and not run[0].keywords
            ):
                items = tuple((str(k), s.node) for k, s in enumerate(run))
                last = run[-1]
                merged = _Step(
                    head,
                    Block(items, named=False, origin="Sequential"),
                    inputs=run[0].inputs,
                    outs=last.outs,
                    tuple_count=last.tuple_count,
                    module=holder,
                    path=join_path(self.path, head),
                    target=head,
                )
                self.steps[at : at + len(run)] = [merged]
                for other in self.env.values():  # a tuple returned by the last member: read from the merged step
                    if isinstance(other, _Items) and other.step is last:
                        other.step = merged
                continue
            missing = sorted(set(range(len(holder))) - {s.member[1] for s in run})
            if missing:
                raise self.fail(
                    f"{self.owner} runs members of {head} one by one but never member {missing[0]}: a spec runs every "
                    "member of a list it declares",
                    join_path(self.path, head),
                )
            members = tuple(
                (str(k), self.decompiler.convert(m, join_path(self.path, f"{head}.{k}"))) for k, m in enumerate(holder)
            )
            self.declared[head] = Block(members, named=False, origin="ModuleList")  # written member by member
            for step in run:
                step.call, step.name, step.node = step.target, "", None
        for target, count in self.called.items():
            if count > 1 and "." not in target and _has_weights(self.module.get_submodule(target)):
                calls = [s for s in self.steps if s.target == target]
                self.declared[target] = calls[0].node
                for step in calls:
                    step.call, step.name, step.node = target, "", None

    def training_only(self) -> set[int]:
        """The child steps (ids) that only what training mode alone returns needs: `when: training`. An operation
        always runs, so one that reads such a value is refused."""
        if not self.eval_ids:
            return set()
        needed, eval_steps = set(self.eval_ids), set()
        for step in reversed(self.steps):
            if any(v in needed for v in step.outs if v is not None):
                eval_steps.add(id(step))
                needed.update(step.inputs)
        training: set[int] = set()
        made_in_training: set[int] = set()
        for step in self.steps:
            if id(step) in eval_steps:
                continue
            if step.op and any(v in made_in_training for v in step.inputs):
                raise self.fail(
                    f"{self.owner} computes {step.op} of values only training mode makes: a graph node's operations "
                    "run in both modes (`when: training` is for children)"
                )
            if step.node is not None or step.call:
                training.add(id(step))
                made_in_training.update(v for v in step.outs if v is not None)
        return training

    def _tensor_order(self) -> list[str]:
        own = [n for n, _ in self.module.named_parameters(recurse=False)]
        own += [n for n, _ in self.module.named_buffers(recurse=False)]
        return [n for n in own if n in self.tensors]

    def check_children(self) -> None:
        """A child the forward never calls: left out with a note, or refused if it has weights."""
        for name, child in self.module.named_children():
            if name in self.children_used:
                continue
            if _has_weights(child):
                what = "calls it only for a result it never reads" if name in self.unused_calls else "never calls it"
                raise self.fail(
                    f"{self.owner} {what}, but it has weights a spec would lose", join_path(self.path, name)
                )
            self.decompiler.notes.append(
                (join_path(self.path, name), f"({type(child).__name__}) is never called by {self.owner}: left out")
            )

    def prune(self) -> None:
        """Steps whose values nothing reads (fx keeps a call whose result is dropped) go; with weights, refused."""
        while True:
            uses = self.uses()
            dead = [s for s in self.steps if not any(v in uses for v in s.outs if v is not None)]
            if not dead:
                return
            for step in dead:
                if step.module is not None and _has_weights(step.module):
                    raise self.fail(f"{self.owner} calls it but never uses what it returns", step.path)
            self.steps = [s for s in self.steps if s not in dead]

    def uses(self) -> dict[int, int]:
        count: dict[int, int] = {}
        for step in self.steps:
            for v in step.inputs:
                count[v] = count.get(v, 0) + 1
        for vid in self.outputs + self.eval_ids:
            count[vid] = count.get(vid, 0) + 1
        return count

    def name_values(self, uses: dict[int, int]) -> dict[int, str]:
        """A name for every value read, except an operation's that only the next step reads as its one input (or
        that is the output, made by the last step): a child's value is named by its step, a tuple's items
        ``step``, ``step_1``, ..., an operation's by what it does (``summed``, ``joined``, ``batch_class_token``)."""
        names = dict(self.fixed)
        for i, step in enumerate(self.steps):
            following = self.steps[i + 1] if i + 1 < len(self.steps) else None
            if step.node is not None and not step.tuple_count:
                names[step.outs[0]] = step.name
            elif step.call and step.tuple_count:
                for k, vid in enumerate(step.outs):
                    if vid is not None and vid in uses:
                        names[vid] = self.names.fresh(f"{step.hint}_{k}" if k else step.hint, attribute=False)
            elif step.node is not None:
                for k, vid in enumerate(step.outs):
                    if vid is not None and vid in uses:
                        names[vid] = step.name if k == 0 else self.names.fresh(f"{step.name}_{k}", attribute=False)
            else:
                vid = step.outs[0]
                read_next = (
                    following is not None
                    and (following.node is not None or following.call)
                    and following.inputs == [vid]
                )
                returned = following is None and self.outputs == [vid] and not self.several and not self.eval_ids
                if uses.get(vid) != 1 or not (read_next or returned):
                    names[vid] = self.names.fresh(step.hint or step.op, attribute=False)
        return names


class _Resolved:
    """An fx node seen with its size arguments replaced by their numbers (for ``graph._functional``)."""

    def __init__(self, node: fx.Node, args: tuple, kwargs: dict):
        self.op, self.target, self.name = node.op, node.target, node.name
        self.args, self.kwargs = args, kwargs


def _regrouping(before: tuple, after: tuple) -> tuple[str, dict] | None:
    """``Flatten`` where ``after`` merges a run of ``before``'s axes, ``Unflatten`` where it splits one (torch's
    dims: the batch is 0)."""
    for start in range(len(before)):
        for end in range(start + 1, len(before)):
            merged = (*before[:start], math.prod(before[start : end + 1]), *before[end + 1 :])
            if merged == after:
                args = {"start_dim": start + 1}
                if end != len(before) - 1:
                    args["end_dim"] = end + 1
                return "Flatten", args
    for dim in range(len(before)):
        for width in range(2, len(after) - len(before) + 2):
            sizes = after[dim : dim + width]
            if (
                after[:dim] == before[:dim]
                and after[dim + width :] == before[dim + 1 :]
                and math.prod(sizes) == before[dim]
                and len(after) == len(before) + width - 1
            ):
                return "Unflatten", {"dim": dim + 1, "unflattened_size": list(sizes)}
    return None


def _in_place(node: fx.Node) -> bool:
    """``x.mul_(2)``, ``F.relu_(x)``: a call that changes its input (not ``torch._assert``)."""
    return node.target is not torch._assert and _function_name(node).endswith("_")


def _live(graph: fx.Graph) -> set[fx.Node]:
    """The nodes the output depends on."""
    output = next(n for n in reversed(graph.nodes) if n.op == "output")
    live, stack = set(), [output]
    while stack:
        node = stack.pop()
        if node in live:
            continue
        live.add(node)
        stack.extend(node.all_input_nodes)
    return live


def _show(value: Any) -> str:
    if isinstance(value, fx.Node):
        return f"the result of {_describe_node(value)}" if value.op != "placeholder" else f"the input {value.target}"
    return repr(value)


def read_dataflow(decompiler: Any, module: nn.Module, path: str) -> Dataflow:
    """``module``'s forward as a graph node (traced in training mode, every child a leaf)."""
    owner = f"{type(module).__name__}.forward"
    was = {m: m.training for m in module.modules()}
    module.train()  # F.dropout(training=self.training) is traced as in training
    try:
        graph = _Tracer(set()).trace(module)
    except Exception as err:
        raise DecompileError(path, f"cannot trace {owner} with torch.fx: {_one_line(err)}") from None
    finally:
        for m, mode in was.items():
            m.training = mode
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    used = [n for n in inputs if n.users]
    named = list(decompiler.probe.shape) if not path and isinstance(decompiler.probe.shape, dict) else []
    if named:
        _top_inputs(module, owner, inputs, named)
    elif len(used) > 1 and not path:
        raise DecompileError(
            path,
            f"{owner} takes more than one input ({', '.join(str(n.target) for n in inputs)}): give each one's "
            "shape by name, in the forward's order (to_spec(model, {'a': (1, 28, 28), 'b': (8,)}); specc import "
            "--input a=1,28,28 --input b=8): the spec says `input: {a: [1, 28, 28], b: [8]}`",
        )
    if len(used) > 1 and used != inputs[: len(used)]:
        raise DecompileError(path, f"{owner} reads its inputs {[str(n.target) for n in used]} but not the ones before")
    values = decompiler.probe.values(path, graph, owner)
    reader = DataflowReader(decompiler, module, path, graph, values)
    if len(used) > 1 or named:
        reader.several_inputs, reader.input_ids = True, []  # filled as the placeholders are read: `inputs: [...]`
        reader.input_names = named
        reader.names.taken.update(named)
        del reader.fixed[0]
    reader.eval_graph = _eval_trace(module)
    return reader.read()


def _top_inputs(module: nn.Module, owner: str, placeholders: list[fx.Node], names: list[str]) -> None:
    """The model's several inputs, named by ``input:``: the forward's first arguments, each read, and each name one
    a graph node's value may take (no child's, parameter's or operation's)."""
    given = [str(n.target) for n in placeholders[: len(names)]]
    if len(placeholders) < len(names):
        raise DecompileError(
            "", f"{owner} takes {len(placeholders)} input(s) ({', '.join(given)}), but input names {len(names)}"
        )
    unread = [g for g, n in zip(given, placeholders) if not n.users]
    if unread:
        raise DecompileError(
            "",
            f"{owner} never reads its input {unread[0]}: a spec's model reads every input `input:` names (leave it "
            "out of input, or read it)",
        )
    later = [str(n.target) for n in placeholders[len(names) :] if n.users]
    if later:
        raise DecompileError(
            "", f"{owner} reads its input {later[0]} too: input names only {len(names)} ({', '.join(names)})"
        )
    own = {n for n, _ in module.named_children()} | {n for n, _ in module.named_parameters(recurse=False)}
    own |= {n for n, _ in module.named_buffers(recurse=False)}
    for name in names:
        if name in own:
            raise DecompileError(
                "",
                f"input names {name!r}, which is also {owner.split('.')[0]}'s attribute self.{name} (a step's name in "
                "the spec): name the input otherwise",
            )
        if (name in _RESERVED and name != "x") or not _legal(name, attribute=False):
            raise DecompileError("", f"input names {name!r}, which a spec's value cannot be called: name it otherwise")


def _eval_trace(module: nn.Module) -> fx.Graph | None:
    """The forward traced in eval mode (what eval mode returns may differ: GoogLeNet's auxiliary outputs), or
    None where it does not trace (then eval mode's outputs are checked by the verification alone)."""
    was = {m: m.training for m in module.modules()}
    module.eval()
    try:
        return _Tracer(set()).trace(module)
    except Exception:
        return None
    finally:
        for m, mode in was.items():
            m.training = mode


def _key(node: fx.Node) -> Any:
    """What a node is in both modes' traces: a child's call by its name, another node by fx's name for it."""
    if node.op == "call_module":
        return ("module", node.target)
    if node.op in ("placeholder", "get_attr"):
        return (node.op, node.target)
    if node.target is operator.getitem and isinstance(node.args[0], fx.Node):
        return ("item", _key(node.args[0]), repr(node.args[1]))
    return ("node", node.name)
