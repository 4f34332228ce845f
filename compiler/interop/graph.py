"""Reading one ``forward``: traced with ``torch.fx`` (children kept as leaves), simplified, and read as a chain
of steps -- child calls, functional calls (parameter-free layers) and at most one merge of branches."""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from compiler.interop.layers import layer_call, layer_classes
from compiler.interop.nodes import DecompileError, Layer

# --------------------------------------------------------------------------- the graph of one forward


@dataclass(eq=False)
class G:
    kind: str  # input | module | layer | merge
    ins: list[G] = field(default_factory=list)
    target: str = ""  # module: its path below the traced module
    layer: Layer | None = None  # layer: a functional call as a layer
    base: str = ""  # layer: the name it is given
    op: str = ""  # merge: add | cat | mul
    dim: int = 1
    what: str = ""  # the call, for error messages


_ADD = {operator.add, operator.iadd, torch.add}
_MUL = {operator.mul, operator.imul, torch.mul}
_CAT = {torch.cat, torch.concat, getattr(torch, "concatenate", torch.cat)}
_IDENTITY_METHODS = {"contiguous", "clone"}


def _describe_node(node: fx.Node) -> str:
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", repr(target))
    if node.op == "call_method":
        return f"the method .{name}()"
    if node.op == "call_function":
        module = getattr(target, "__module__", "") or ""
        prefix = {"torch.nn.functional": "F.", "_operator": "operator."}.get(
            module, "torch." if "torch" in module else ""
        )
        return f"{prefix}{name}()"
    if node.op == "get_attr":
        return f"the attribute self.{target}"
    return f"{node.op} {name}"


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _function_name(node: fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", "")


_ACTIVATIONS = {
    "relu": "ReLU",
    "relu_": "ReLU",
    "relu6": "ReLU6",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "silu": "SiLU",
    "gelu": "GELU",
    "hardswish": "Hardswish",
    "hardsigmoid": "Hardsigmoid",
    "mish": "Mish",
    "elu": "ELU",
    "leaky_relu": "LeakyReLU",
    "softplus": "Softplus",
    "selu": "SELU",
}
_POOLS = {
    "adaptive_avg_pool1d": "AdaptiveAvgPool1d",
    "adaptive_avg_pool2d": "AdaptiveAvgPool2d",
    "adaptive_avg_pool3d": "AdaptiveAvgPool3d",
    "adaptive_max_pool1d": "AdaptiveMaxPool1d",
    "adaptive_max_pool2d": "AdaptiveMaxPool2d",
    "max_pool1d": "MaxPool1d",
    "max_pool2d": "MaxPool2d",
    "max_pool3d": "MaxPool3d",
    "avg_pool1d": "AvgPool1d",
    "avg_pool2d": "AvgPool2d",
    "avg_pool3d": "AvgPool3d",
}
_POOL_ARGS = {
    "Adaptive": ["output_size"],
    "Max": ["kernel_size", "stride", "padding", "dilation", "ceil_mode"],
    "Avg": ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"],
}


def _functional(node: fx.Node, path: str, batch_of: dict) -> tuple[str, dict[str, Any]] | str | None:
    """A unary functional call as ``(layer type, arguments)``; ``"skip"`` for an identity; None if unknown."""
    name = _function_name(node)
    method = node.op == "call_method"
    if not method and node.op != "call_function":
        return None
    if name in _IDENTITY_METHODS and method:
        return "skip"
    if name in _ACTIVATIONS:
        return _activation(node, name)
    if name in ("softmax", "log_softmax"):
        return {"softmax": "Softmax", "log_softmax": "LogSoftmax"}[name], {"dim": _arg(node, 1, "dim")}
    if name == "flatten" or name in ("view", "reshape") and method or name == "reshape" and not method:
        return _reshape(node, name, path, batch_of)
    if name in _POOLS:
        return _pool(node, name)
    if name in ("mean", "sum", "amax"):
        return _reduction(node, name, path)
    return _rearrangement(node, name, method)


def _activation(node: fx.Node, name: str) -> tuple[str, dict[str, Any]] | None:
    kwargs = {k: v for k, v in node.kwargs.items() if k != "input"}
    extra = list(node.args[1:])
    if name == "relu_":
        kwargs["inplace"] = True
    if extra and name in ("relu", "relu6", "silu", "hardswish", "hardsigmoid", "mish", "selu"):
        kwargs["inplace"] = extra.pop(0)
    return None if extra else (_ACTIVATIONS[name], kwargs)


def _reshape(node: fx.Node, name: str, path: str, batch_of: dict) -> tuple[str, dict[str, Any]] | None:
    """``flatten(x, 1)``, ``x.view(x.size(0), -1)``, ``x.reshape(x.shape[0], ...)``: the batch kept."""
    if name == "flatten":
        start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
        if start == 0:
            raise DecompileError(
                path,
                f"{_describe_node(node)} flattens the batch dimension too (start_dim=0); "
                "a spec's Flatten keeps the batch: write flatten(x, 1)",
            )
        return "Flatten", {"start_dim": start, "end_dim": end}
    sizes = list(node.args[1:])
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = list(sizes[0])
    if sizes and isinstance(sizes[0], fx.Node) and batch_of.get(sizes[0]) is node.args[0]:
        rest = sizes[1:]
        if all(isinstance(s, int) for s in rest):
            return ("Flatten", {}) if rest == [-1] else ("Reshape", {"shape": rest})
    return None


def _pool(node: fx.Node, name: str) -> tuple[str, dict[str, Any]] | None:
    layer = _POOLS[name]
    kind = next(k for k in _POOL_ARGS if layer.startswith(k))
    args = {}
    for i, arg_name in enumerate(_POOL_ARGS[kind]):
        value = _arg(node, i + 1, arg_name, inspect.Parameter.empty)
        if value is not inspect.Parameter.empty:
            args[arg_name] = value
    return None if _arg(node, 99, "return_indices", False) else (layer, args)


def _reduction(node: fx.Node, name: str, path: str) -> tuple[str, dict[str, Any]]:
    dim = _arg(node, 1, "dim")
    if dim is None:
        raise DecompileError(
            path,
            f"{_describe_node(node)} reduces over every dimension, the batch too; "
            "a spec reduces over given dims (Mean: {dim: ...})",
        )
    dims = list(dim) if isinstance(dim, (list, tuple)) else dim
    return name.capitalize(), {"dim": dims, "keepdim": _arg(node, 2, "keepdim", False)}


def _rearrangement(node: fx.Node, name: str, method: bool) -> tuple[str, dict[str, Any]] | str | None:
    """permute, transpose, select, dropout (skipped when not training) and tuple items."""
    if name == "permute" and method:
        dims = node.args[1:]
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = dims[0]
        return "Permute", {"dims": list(dims)}
    if name == "permute":
        return "Permute", {"dims": list(_arg(node, 1, "dims"))}
    if name == "transpose":
        return "Transpose", {"dim0": _arg(node, 1, "dim0"), "dim1": _arg(node, 2, "dim1")}
    if name == "select":
        return "Select", {"dim": _arg(node, 1, "dim"), "index": _arg(node, 2, "index")}
    if name == "dropout":
        if not _arg(node, 2, "training", True):
            return "skip"
        return "Dropout", {"p": _arg(node, 1, "p", 0.5), "inplace": _arg(node, 3, "inplace", False)}
    if name == "getitem" and isinstance(node.args[1], int):
        return "TupleItem", {"index": node.args[1]}
    return None


_BASE_NAMES = {
    "Flatten": "flatten",
    "Reshape": "reshape",
    "TupleItem": "item",
    "AdaptiveAvgPool2d": "avgpool",
    "Dropout": "dropout",
}


class _Tracer(fx.Tracer):
    def __init__(self, inline: set[str]):
        super().__init__()
        self.inline = inline

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname not in self.inline


def _trace(module: nn.Module, path: str) -> tuple[fx.Graph, set[str]]:
    """The forward's graph with children as leaves (those called with anything but one tensor are inlined)."""
    inline: set[str] = set()
    known = layer_classes()
    for _ in range(8):
        try:
            graph = _Tracer(inline).trace(module)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise DecompileError(
                path, f"cannot trace {type(module).__name__}.forward with torch.fx: {type(err).__name__}: {first}"
            ) from None
        more = set()
        for node in graph.nodes:
            if node.op == "call_module":
                if len(node.args) == 1 and not node.kwargs and isinstance(node.args[0], fx.Node):
                    continue
                sub = module.get_submodule(node.target)
                if type(sub) in known or isinstance(sub, nn.Sequential):
                    raise DecompileError(
                        join_path(path, node.target),
                        f"{type(module).__name__}.forward calls it with "
                        f"{len(node.args)} arguments and {len(node.kwargs)} keywords; a spec's layers "
                        "take one tensor",
                    )
                more.add(node.target)
        if not more:
            return graph, inline
        inline |= more
    raise DecompileError(path, "forward nests calls too deeply to trace")


def join_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path and name else path or name


def _merge_op(node: fx.Node) -> str:
    """``add``, ``mul`` or ``cat`` for a node that merges tensors, else ``""``."""
    name, method = _function_name(node), node.op == "call_method"
    if node.target in _ADD or name in ("add", "add_", "__add__", "__iadd__") and method:
        return "add"
    if node.target in _MUL or name in ("mul", "mul_", "__mul__", "__imul__") and method:
        return "mul"
    return "cat" if node.target in _CAT else ""


class _GraphReader:
    """Reads a traced forward node by node into G nodes (``made``), noting ``x.size(0)`` / ``x.shape[0]``."""

    def __init__(self, module: nn.Module, path: str):
        self.module, self.path = module, path
        self.made: dict[fx.Node, Any] = {}
        self.batch_of: dict[fx.Node, fx.Node] = {}  # x.size(0) / x.shape[0] -> x
        self.shape_of: dict[fx.Node, fx.Node] = {}
        self.source: G | None = None
        self.out: Any = None

    def need(self, value: Any, node: fx.Node) -> G:
        if isinstance(value, fx.Node) and isinstance(self.made.get(value), G):
            return self.made[value]
        raise DecompileError(self.path, f"{_describe_node(node)} takes {value!r}, which is not a tensor of the forward")

    def read(self, node: fx.Node) -> None:
        if node.op in ("placeholder", "output", "get_attr", "call_module"):
            self._structural(node)
        elif not self._batch_size(node):
            op = _merge_op(node)
            if op == "cat":
                self._cat(node)
            elif op:
                self._binary(node, op)
            else:
                self._function(node)

    def _structural(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            if self.source is not None:
                raise DecompileError(
                    self.path,
                    f"{type(self.module).__name__}.forward takes more than one input; a spec's model takes one tensor",
                )
            self.source = self.made[node] = G("input", what="the input")
        elif node.op == "output":
            self.out = node.args[0]
        elif node.op == "get_attr":
            self.made[node] = None
        else:
            self.made[node] = G(
                "module", [self.need(node.args[0], node)], target=node.target, what=f"self.{node.target}"
            )

    def _batch_size(self, node: fx.Node) -> bool:
        """Note ``x.size(0)``, ``x.shape`` and ``x.shape[0]`` (a reshape's batch size); True if ``node`` is one."""
        if node.op == "call_method" and _function_name(node) == "size" and _arg(node, 1, "dim") == 0:
            self.batch_of[node] = node.args[0]
        elif node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
            self.shape_of[node] = node.args[0]
        elif (
            node.op == "call_function"
            and node.target is operator.getitem
            and node.args[0] in self.shape_of
            and node.args[1] == 0
        ):
            self.batch_of[node] = self.shape_of[node.args[0]]
        else:
            return False
        return True

    def _cat(self, node: fx.Node) -> None:
        what = _describe_node(node)
        tensors, dim = _arg(node, 0, "tensors"), _arg(node, 1, "dim", 0)
        if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
            raise DecompileError(self.path, f"{what} of something other than a list of tensors")
        if dim == 0:
            raise DecompileError(self.path, f"{what} along dim 0 joins batches; a merge concatenates along dim >= 1")
        ins = [self.need(t, node) for t in tensors]
        self.made[node] = ins[0] if len(ins) == 1 else G("merge", ins, op="cat", dim=dim, what=what)

    def _binary(self, node: fx.Node, op: str) -> None:
        what = _describe_node(node)
        if len(node.args) != 2 or node.kwargs:
            raise DecompileError(
                self.path,
                f"{what} with {len(node.args)} arguments and keywords {sorted(node.kwargs)}; a merge {op}s tensors",
            )
        ins = []
        for value in node.args:
            if not (isinstance(value, fx.Node) and isinstance(self.made.get(value), G)):
                raise DecompileError(
                    self.path, f"{what} with {value!r}: a merge {op}s tensors of the forward, not constants"
                )
            ins.append(self.made[value])
        self.made[node] = G("merge", ins, op=op, what=what)

    def _function(self, node: fx.Node) -> None:
        what = _describe_node(node)
        tensor = node.args[0] if node.args else node.kwargs.get("input")
        if not (isinstance(tensor, fx.Node) and isinstance(self.made.get(tensor), G)):
            raise DecompileError(self.path, f"{what} cannot be expressed in a spec")
        layer = _functional(node, self.path, self.batch_of)
        if layer is None:
            raise DecompileError(self.path, f"{what} cannot be expressed in a spec (no layer does it)")
        if layer == "skip":
            self.made[node] = self.made[tensor]
            return
        base = _BASE_NAMES.get(layer[0], _function_name(node).strip("_"))
        layer_ir = _functional_layer(*layer, self.path, what)
        self.made[node] = G("layer", [self.made[tensor]], layer=layer_ir, base=base, what=what)


def read_graph(module: nn.Module, path: str) -> tuple[G, G, set[str]]:
    """The forward as G nodes: (input, output, inlined children)."""
    graph, inline = _trace(module, path)
    reader = _GraphReader(module, path)
    for node in graph.nodes:
        reader.read(node)
    if reader.source is None:
        raise DecompileError(path, "forward takes no input")
    if not (isinstance(reader.out, fx.Node) and isinstance(reader.made.get(reader.out), G)):
        raise DecompileError(path, f"{type(module).__name__}.forward returns {reader.out!r}, not one tensor")
    return reader.source, reader.made[reader.out], inline


def _functional_layer(type_name: str, kwargs: dict, path: str, what: str) -> Layer:
    from compiler.facts.registry import REGISTRY

    entry = REGISTRY.get("layer", type_name)
    try:
        module = entry.resolve()(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
    except Exception as err:
        raise DecompileError(path, f"{what}: cannot make a {type_name} of it ({err})") from None
    return layer_call(module, entry, path)


def simplify_graph(output: G) -> None:
    """Same cats once; ``cat([a, b, c])`` after ``cat([a, b])`` as ``cat([cat([a, b]), c])``; ``(a+b)+c`` as one add."""
    order = topological(output)
    users: dict[int, int] = {}
    for node in order:
        for i in node.ins:
            users[id(i)] = users.get(id(i), 0) + 1
    users[id(output)] = users.get(id(output), 0) + 1
    cats: dict[tuple, G] = {}
    for node in order:
        if node.kind != "merge":
            continue
        if node.op == "cat":
            key = (node.dim, *map(id, node.ins))
            for cut in range(len(node.ins) - 1, 1, -1):
                prefix = cats.get((node.dim, *map(id, node.ins[:cut])))
                if prefix is not None:
                    node.ins = [prefix, *node.ins[cut:]]
                    users[id(prefix)] = users.get(id(prefix), 0) + 1
                    break
            cats.setdefault(key, node)
        first = node.ins[0]
        if (
            first.kind == "merge"
            and first.op == node.op
            and first.dim == node.dim
            and users.get(id(first)) == 1
            and node.op != "cat"
        ):
            node.ins = [*first.ins, *node.ins[1:]]


def topological(output: G) -> list[G]:
    seen: set[int] = set()
    order: list[G] = []
    stack = [(output, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((i, False) for i in reversed(node.ins))
    return order


class Steps:
    """The graph read as steps from the input: unary calls, and merges of branches from a fork."""

    def __init__(self, path: str):
        self.path = path
        self.forks: dict[int, G] = {}

    def back(self, node: G) -> G | None:
        if node.kind == "input":
            return None
        return self.fork(node) if node.kind == "merge" else node.ins[0]

    def spine(self, node: G | None) -> list[G]:
        out = []
        while node is not None:
            out.append(node)
            node = self.back(node)
        return out

    def fork(self, merge: G) -> G:
        if id(merge) not in self.forks:
            spines = [self.spine(i) for i in merge.ins]
            rest = [set(map(id, s)) for s in spines[1:]]
            common = next((n for n in spines[0] if all(id(n) in r for r in rest)), None)
            if common is None:
                raise DecompileError(self.path, f"{merge.what}: its inputs share no earlier value")
            self.forks[id(merge)] = common
        return self.forks[id(merge)]

    def seq(self, target: G, base: G) -> list[G]:
        out: list[G] = []
        node = target
        while node is not base:
            if node.kind == "input":
                raise DecompileError(self.path, f"{target.what}: reads a value from outside its branch")
            out.append(node)
            node = self.back(node)
        return out[::-1]

    def branches(self, merge: G) -> list[list[G]]:
        fork = self.fork(merge)
        return [self.seq(i, fork) for i in merge.ins]


def all_steps(steps: list[G], reader: Steps) -> list[G]:
    out = []
    for step in steps:
        out.append(step)
        if step.kind == "merge":
            for branch in reader.branches(step):
                out.extend(all_steps(branch, reader))
    return out
