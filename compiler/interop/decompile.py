"""Decompile: a live ``nn.Module`` back into a readable spec (``compiler.to_spec``, ``specc import``).

The module tree is walked top down. A registered layer becomes a layer call with only the
arguments that differ from their defaults (each call is rebuilt and compared with the module);
an ``nn.Sequential`` becomes a list (children ``0..n-1``) or a named block, consecutive equal
entries a ``repeat``. Any other module's ``forward`` is traced with ``torch.fx``, its children
kept as leaves, and the graph read as a chain of steps: child calls, functional calls (which
become parameter-free layers with a fresh name) and at most one add/cat/mul of branches, which
makes the module a merge block whose parts are spread into it (so the state-dict keys stay).

What cannot be expressed raises ``DecompileError`` naming the module path and the operation.
The result is always verified: the spec is parsed and built, the module's state dict loads with
``strict=True`` and the eval-mode outputs on a sample input are ``torch.equal``; else it is refused.
"""

from __future__ import annotations

import inspect
import json
import math
import operator
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn


class DecompileError(ValueError):
    """A module that a spec cannot express; ``str`` names the module path and the operation."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}" if path else message)


# --------------------------------------------------------------------------- spec nodes


@dataclass(frozen=True)
class Layer:
    type: str
    args: tuple[tuple[str, Any], ...] = ()  # keyword arguments, in signature order
    short: bool = False  # the one argument is the first positional one: {Dropout: 0.5}


@dataclass(frozen=True)
class Block:
    items: tuple[tuple[str, Any], ...]  # (name, node)
    named: bool


@dataclass(frozen=True)
class Repeat:
    times: int
    body: tuple[Any, ...]


@dataclass(frozen=True)
class Merge:
    op: str
    dim: int
    class_name: str | None
    before: tuple[tuple[str, Any], ...]
    branches: tuple[
        tuple[str, Any], ...
    ]  # (name, part): part is Layer/Block/Merge (one child), a spread Block, or None
    then: tuple[tuple[str, Any], ...]


# --------------------------------------------------------------------------- layers


def _layer_classes() -> dict[type, Any]:
    from compiler.facts.registry import REGISTRY

    table = {}
    for entry in REGISTRY.entries("layer"):
        try:
            table.setdefault(entry.resolve(), entry)
        except (ImportError, AttributeError):
            continue
    return table


def _simplify(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        items = [_simplify(v) for v in value]
        return items
    return value


def _uniform(value: Any) -> Any:
    """``(3, 3)`` -> ``3`` (torch stores ints given for sizes as tuples)."""
    if (
        isinstance(value, list)
        and value
        and all(v == value[0] and type(v) is type(value[0]) for v in value)
        and isinstance(value[0], (int, float))
        and not isinstance(value[0], bool)
    ):
        return value[0]
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return (
        type(a) is type(b)
        and a == b
        or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b and not isinstance(a, bool))
    )


def _transformer_args(module: nn.Module) -> dict[str, Any]:
    act = module.activation
    name = {F.relu: "relu", F.gelu: "gelu"}.get(act) if not isinstance(act, nn.Module) else None
    if name is None:
        name = {nn.ReLU: "relu", nn.GELU: "gelu"}.get(type(act))
    return {
        "d_model": module.self_attn.embed_dim,
        "nhead": module.self_attn.num_heads,
        "dim_feedforward": module.linear1.out_features,
        "dropout": module.dropout.p,
        "activation": name,
        "layer_norm_eps": module.norm1.eps,
        "batch_first": module.self_attn.batch_first,
        "norm_first": module.norm_first,
        "bias": module.linear1.bias is not None,
    }


_SPECIAL = {"TransformerEncoderLayer": _transformer_args}
_SKIP = {"device", "dtype", "self"}


def _layer(module: nn.Module, entry: Any, path: str) -> Layer:
    sig = entry.signature()
    special = _SPECIAL.get(entry.name) if entry.module == "torch.nn" else None
    values = special(module) if special else {}
    args: dict[str, Any] = {}
    full: dict[str, Any] = {}
    for name, param in sig.parameters.items():
        if name in _SKIP or name.startswith("_") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in values:
            value = values[name]
        elif hasattr(module, name):
            value = getattr(module, name)
        elif param.default is not inspect.Parameter.empty:
            continue  # not kept by the module: the rebuild below proves the default is right
        else:
            raise DecompileError(path, f"cannot read the argument {name!r} of {entry.name} from the module")
        if isinstance(param.default, bool) and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None  # bias=False leaves `module.bias` None
        if isinstance(value, torch.Tensor) or callable(value) and not isinstance(value, (int, float, str)):
            if param.default is inspect.Parameter.empty:
                raise DecompileError(path, f"cannot read the argument {name!r} of {entry.name} from the module")
            continue
        value = _simplify(value)
        full[name] = value
        if param.default is inspect.Parameter.empty or not _same(_uniform(value), _simplify(param.default)):
            args[name] = value
    # prefer `kernel_size: 3` over `[3, 3]` where the module reads the same
    simple = {k: _uniform(v) for k, v in args.items()}
    for candidate in (simple, args):
        rebuilt = _rebuild(entry, candidate)
        if rebuilt is not None and _same_module(rebuilt, module):
            args = candidate
            break
    else:
        raise DecompileError(
            path,
            f"cannot read the arguments of {entry.name} from the module: rebuilt from "
            f"{_describe_args(args)} it is {rebuilt!r}, not {module!r}",
        )
    if entry.infer and entry.infer in args and _inferable(entry, args[entry.infer]):
        del args[entry.infer]  # specc infers it from the input shape
    names = [n for n in sig.parameters if n in args]
    first = next((n for n in sig.parameters if n not in _SKIP), None)
    short = len(names) == 1 and names[0] == first and not isinstance(args[first], (list, dict, bool))
    return Layer(entry.name, tuple((n, args[n]) for n in names), short)


def _inferable(entry: Any, value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, list) and len(value) == 1)


def _describe_args(args: dict) -> str:
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in args.items()) + "}"


def _rebuild(entry: Any, args: dict) -> nn.Module | None:
    cls = entry.resolve()
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    try:
        if "device" in inspect.signature(cls).parameters:
            return cls(**kwargs, device="meta")
        with torch.device("meta"):
            return cls(**kwargs)
    except Exception:
        return None


def _same_module(a: nn.Module, b: nn.Module) -> bool:
    if type(a) is not type(b) or repr(a) != repr(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype for k in sa)


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
        kwargs = {k: v for k, v in node.kwargs.items() if k != "input"}
        extra = list(node.args[1:])
        if name == "relu_":
            kwargs["inplace"] = True
        if extra and name in ("relu", "relu6", "silu", "hardswish", "hardsigmoid", "mish", "selu"):
            kwargs["inplace"] = extra.pop(0)
        if extra:
            return None
        return _ACTIVATIONS[name], kwargs
    if name in ("softmax", "log_softmax"):
        dim = _arg(node, 1, "dim")
        return {"softmax": "Softmax", "log_softmax": "LogSoftmax"}[name], {"dim": dim}
    if name == "flatten":
        start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
        if start == 0:
            raise DecompileError(
                path,
                f"{_describe_node(node)} flattens the batch dimension too (start_dim=0); "
                "a spec's Flatten keeps the batch: write flatten(x, 1)",
            )
        return "Flatten", {"start_dim": start, "end_dim": end}
    if name in ("view", "reshape") and method or name == "reshape" and not method:
        sizes = list(node.args[1:])
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = list(sizes[0])
        if sizes and isinstance(sizes[0], fx.Node) and batch_of.get(sizes[0]) is node.args[0]:
            rest = sizes[1:]
            if all(isinstance(s, int) for s in rest):
                return ("Flatten", {}) if rest == [-1] else ("Reshape", {"shape": rest})
        return None
    if name in _POOLS:
        layer = _POOLS[name]
        kind = next(k for k in _POOL_ARGS if layer.startswith(k))
        args = {}
        for i, arg_name in enumerate(_POOL_ARGS[kind]):
            value = _arg(node, i + 1, arg_name, inspect.Parameter.empty)
            if value is not inspect.Parameter.empty:
                args[arg_name] = value
        if _arg(node, 99, "return_indices", False):
            return None
        return layer, args
    if name in ("mean", "sum", "amax"):
        dim = _arg(node, 1, "dim")
        if dim is None:
            raise DecompileError(
                path,
                f"{_describe_node(node)} reduces over every dimension, the batch too; "
                "a spec reduces over given dims (Mean: {dim: ...})",
            )
        return name.capitalize(), {
            "dim": list(dim) if isinstance(dim, (list, tuple)) else dim,
            "keepdim": _arg(node, 2, "keepdim", False),
        }
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
    layer_classes = _layer_classes()
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
                if type(sub) in layer_classes or isinstance(sub, nn.Sequential):
                    raise DecompileError(
                        _join(path, node.target),
                        f"{type(module).__name__}.forward calls it with "
                        f"{len(node.args)} arguments and {len(node.kwargs)} keywords; a spec's layers "
                        "take one tensor",
                    )
                more.add(node.target)
        if not more:
            return graph, inline
        inline |= more
    raise DecompileError(path, "forward nests calls too deeply to trace")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path and name else path or name


def _graph(module: nn.Module, path: str) -> tuple[G, G, set[str]]:
    """The forward as G nodes: (input, output, inlined children)."""
    graph, inline = _trace(module, path)
    made: dict[fx.Node, Any] = {}
    batch_of: dict[fx.Node, fx.Node] = {}  # x.size(0) / x.shape[0] -> x
    shape_of: dict[fx.Node, fx.Node] = {}
    source: G | None = None
    out: Any = None

    def need(value: Any, node: fx.Node) -> G:
        if isinstance(value, fx.Node) and isinstance(made.get(value), G):
            return made[value]
        raise DecompileError(path, f"{_describe_node(node)} takes {value!r}, which is not a tensor of the forward")

    for node in graph.nodes:
        what = _describe_node(node)
        if node.op == "placeholder":
            if source is not None:
                raise DecompileError(
                    path, f"{type(module).__name__}.forward takes more than one input; a spec's model takes one tensor"
                )
            source = made[node] = G("input", what="the input")
            continue
        if node.op == "output":
            out = node.args[0]
            continue
        if node.op == "get_attr":
            made[node] = None
            continue
        if node.op == "call_module":
            made[node] = G("module", [need(node.args[0], node)], target=node.target, what=f"self.{node.target}")
            continue
        name = _function_name(node)
        if node.op == "call_method" and name == "size" and _arg(node, 1, "dim") == 0:
            batch_of[node] = node.args[0]
            continue
        if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
            shape_of[node] = node.args[0]
            continue
        if (
            node.op == "call_function"
            and node.target is operator.getitem
            and node.args[0] in shape_of
            and node.args[1] == 0
        ):
            batch_of[node] = shape_of[node.args[0]]
            continue
        if node.target in _ADD or name in ("add", "add_", "__add__", "__iadd__") and node.op == "call_method":
            op = "add"
        elif node.target in _MUL or name in ("mul", "mul_", "__mul__", "__imul__") and node.op == "call_method":
            op = "mul"
        elif node.target in _CAT:
            op = "cat"
        else:
            op = ""
        if op == "cat":
            tensors = _arg(node, 0, "tensors")
            dim = _arg(node, 1, "dim", 0)
            if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
                raise DecompileError(path, f"{what} of something other than a list of tensors")
            if dim == 0:
                raise DecompileError(path, f"{what} along dim 0 joins batches; a merge concatenates along dim >= 1")
            ins = [need(t, node) for t in tensors]
            made[node] = ins[0] if len(ins) == 1 else G("merge", ins, op="cat", dim=dim, what=what)
            continue
        if op:
            if len(node.args) != 2 or node.kwargs:
                raise DecompileError(
                    path,
                    f"{what} with {len(node.args)} arguments and keywords {sorted(node.kwargs)}; a merge {op}s tensors",
                )
            ins = []
            for value in node.args:
                if not (isinstance(value, fx.Node) and isinstance(made.get(value), G)):
                    raise DecompileError(
                        path, f"{what} with {value!r}: a merge {op}s tensors of the forward, not constants"
                    )
                ins.append(made[value])
            made[node] = G("merge", ins, op=op, what=what)
            continue
        tensor = node.args[0] if node.args else node.kwargs.get("input")
        if not (isinstance(tensor, fx.Node) and isinstance(made.get(tensor), G)):
            raise DecompileError(path, f"{what} cannot be expressed in a spec")
        layer = _functional(node, path, batch_of)
        if layer is None:
            raise DecompileError(path, f"{what} cannot be expressed in a spec (no layer does it)")
        if layer == "skip":
            made[node] = made[tensor]
            continue
        made[node] = G(
            "layer",
            [made[tensor]],
            layer=_functional_layer(*layer, path, what),
            base=_BASE_NAMES.get(layer[0], name.strip("_")),
            what=what,
        )
    if source is None:
        raise DecompileError(path, "forward takes no input")
    if not (isinstance(out, fx.Node) and isinstance(made.get(out), G)):
        raise DecompileError(path, f"{type(module).__name__}.forward returns {out!r}, not one tensor")
    return source, made[out], inline


def _functional_layer(type_name: str, kwargs: dict, path: str, what: str) -> Layer:
    from compiler.facts.registry import REGISTRY

    entry = REGISTRY.get("layer", type_name)
    try:
        module = entry.resolve()(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
    except Exception as err:
        raise DecompileError(path, f"{what}: cannot make a {type_name} of it ({err})") from None
    return _layer(module, entry, path)


def _simplify_graph(output: G) -> None:
    """Same cats once; ``cat([a, b, c])`` after ``cat([a, b])`` as ``cat([cat([a, b]), c])``; ``(a+b)+c`` as one add."""
    order = _topological(output)
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


def _topological(output: G) -> list[G]:
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


class _Steps:
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


def _all_steps(steps: list[G], reader: _Steps) -> list[G]:
    out = []
    for step in steps:
        out.append(step)
        if step.kind == "merge":
            for branch in reader.branches(step):
                out.extend(_all_steps(branch, reader))
    return out


# --------------------------------------------------------------------------- modules to nodes


class _Names:
    def __init__(self, taken: set[str]):
        self.taken = set(taken)

    def fresh(self, base: str) -> str:
        base = re.sub(r"\W", "_", base) or "layer"
        if not base[0].isalpha():
            base = "op_" + base
        name, i = base, 1
        while name in self.taken or name in ("merge", "repeat", "body"):
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


class _Decompiler:
    def __init__(self):
        self.layer_classes = _layer_classes()
        self.notes: list[str] = []

    def convert(self, module: nn.Module, path: str) -> Any:
        entry = self.layer_classes.get(type(module))
        if entry is not None:
            return _layer(module, entry, path)
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            children = list(module.named_children())
            if not children:
                return Layer("Identity")
            items = tuple((name, self.convert(child, _join(path, name))) for name, child in children)
            return Block(items, named=[n for n, _ in items] != [str(i) for i in range(len(items))])
        return self.traced(module, path)

    def traced(self, module: nn.Module, path: str) -> Any:
        was = {m: m.training for m in module.modules()}
        module.train()  # F.dropout(training=self.training) is traced as in training
        try:
            source, output, inline = _graph(module, path)
        finally:
            for m, mode in was.items():
                m.training = mode
        _simplify_graph(output)
        reader = _Steps(path)
        steps = reader.seq(output, source)
        used = _all_steps(steps, reader)
        ids = [id(n) for n in used]
        needed = {id(n) for n in _topological(output) if n.kind != "input"}
        if len(ids) != len(set(ids)) or set(ids) != needed:
            raise DecompileError(
                path,
                f"{type(module).__name__}.forward reuses an intermediate value in a way "
                "merge blocks cannot express (a value feeds two places that are not branches of "
                "one merge)",
            )
        called = {n.target.split(".")[0] for n in used if n.kind == "module"}
        for name, child in module.named_children():
            if name not in called and name not in inline:
                if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
                    raise DecompileError(
                        _join(path, name),
                        f"{type(module).__name__}.forward never calls it, but it has weights a spec would lose",
                    )
                self.notes.append(
                    f"{_join(path, name)} ({type(child).__name__}) is never called by "
                    f"{type(module).__name__}.forward: left out"
                )
        return self.level(steps, 0, module, path, reader)

    def level(self, steps: list[G], depth: int, owner: nn.Module, path: str, reader: _Steps) -> Any:
        names = _Names({n for n, _ in owner.named_children()})
        items = self.items(steps, depth, owner, path, reader, names, set())
        return self.assemble(items, owner, path)

    def key(self, step: G, depth: int, reader: _Steps) -> str | None:
        """The child of the owner that a step belongs to, when it lies deeper (an inlined child)."""
        if step.kind == "module":
            parts = step.target.split(".")
            return parts[depth] if len(parts) > depth + 1 else None
        if step.kind == "merge":
            keys = {self.key(s, depth, reader) if s.kind != "layer" else "" for s in _all_steps([step], reader)[1:]}
            keys.discard("")
            return keys.pop() if len(keys) == 1 and None not in keys else None
        return None

    def items(
        self, steps: list[G], depth: int, owner: nn.Module, path: str, reader: _Steps, names: _Names, seen: set[str]
    ) -> list[tuple[str, Any, bool]]:
        out: list[tuple[str, Any, bool]] = []
        i = 0
        while i < len(steps):
            step = steps[i]
            key = self.key(step, depth, reader)
            if key is not None:
                j = i
                while j < len(steps) and self.key(steps[j], depth, reader) == key:
                    j += 1
                child = owner.get_submodule(key)
                out.append((key, self.level(steps[i:j], depth + 1, child, _join(path, key), reader), False))
                i = j
                continue
            i += 1
            if step.kind == "module":
                name = step.target.split(".")[depth]
                child = owner.get_submodule(name)
                if name in seen:
                    if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
                        raise DecompileError(
                            _join(path, name),
                            "called twice by the forward: a spec cannot share weights between two places",
                        )
                    name = names.fresh(name)
                seen.add(name)
                out.append((name, self.convert(child, _join(path, name)), False))
            elif step.kind == "layer":
                out.append((names.fresh(step.base), step.layer, False))
            else:
                branches = []
                for branch in reader.branches(step):
                    sub = self.items(branch, depth, owner, path, reader, names, seen)
                    if any(is_merge for _, _, is_merge in sub):
                        raise DecompileError(
                            path,
                            f"{type(owner).__name__}.forward nests {step.what} inside another "
                            "merge's branch; a spec's merge would add a module level and change the "
                            "state-dict keys",
                        )
                    branches.append(sub)
                out.append(("", (step, branches, names), True))
        return out

    def assemble(self, items: list[tuple[str, Any, bool]], owner: nn.Module, path: str) -> Any:
        merges = [i for i, item in enumerate(items) if item[2]]
        if not merges:
            if not items:
                return Layer("Identity")
            return Block(
                tuple((n, node) for n, node, _ in items),
                named=[n for n, _, _ in items] != [str(i) for i in range(len(items))],
            )
        if len(merges) > 1:
            whats = ", ".join(items[i][1][0].what for i in merges)
            raise DecompileError(
                path,
                f"{type(owner).__name__}.forward merges more than once ({whats}); a spec's "
                "merge block is one module, so this would change the state-dict keys",
            )
        at = merges[0]
        step, branches, names = items[at][1]
        parts = []
        for branch in branches:
            if not branch:
                parts.append((names.fresh("identity"), None))
            elif (
                len(branch) == 1
                and not (isinstance(branch[0][1], Block) and branch[0][1].named)
                and not (isinstance(branch[0][1], Layer) and branch[0][1].type == "Identity")
            ):
                parts.append((branch[0][0], branch[0][1]))
            else:
                parts.append(
                    (
                        names.fresh("main" if not parts else "branch"),
                        Block(tuple((n, node) for n, node, _ in branch), named=True),
                    )
                )
        cls = type(owner).__name__
        from compiler.build.model import GraphBlock

        if isinstance(owner, GraphBlock):
            cls = re.sub(r"_\d+$", "", cls)
        cls = cls.lstrip("_")
        cls = cls[:1].upper() + cls[1:] if cls.isidentifier() and cls.isascii() else None
        return Merge(
            step.op,
            step.dim,
            cls,
            tuple((n, node) for n, node, _ in items[:at]),
            tuple(parts),
            tuple((n, node) for n, node, _ in items[at + 1 :]),
        )


# --------------------------------------------------------------------------- YAML text

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
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


def _flow(node: Any) -> str | None:
    """One-line text for a node, or None where it needs lines."""
    if isinstance(node, Layer):
        if not node.args:
            return node.type
        if node.short:
            return f"{{{node.type}: {_scalar(node.args[0][1])}}}"
        return f"{{{node.type}: {{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in node.args) + "}}"
    if isinstance(node, Block) and not node.named and all(isinstance(n, Layer) for _, n in node.items):
        return "[" + ", ".join(_flow(n) for _, n in node.items) + "]"
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
        if isinstance(node, Layer):
            if not node.args:
                self.lines.append(pad + node.type)
                return
            self.lines.append(f"{pad}{node.type}:")
            for k, v in node.args:
                self.lines.append(f"{pad}  {k}: {_scalar(v)}")
        elif isinstance(node, Block) and node.named:
            for name, child in node.items:
                self.entry(indent, name, child)
        elif isinstance(node, Block):
            for child in _compress([child for _, child in node.items]):
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


def _render(name: str, input_shape: tuple[int, ...], root: Any, header: list[str]) -> str:
    writer = _Writer()
    writer.lines += [f"# {line}" if line else "#" for line in header]
    writer.lines.append(f"name: {name}")
    writer.lines.append(f"input: {_scalar(list(input_shape))}")
    if isinstance(root, Layer):
        root = Block((("0", root),), named=False)
    writer.entry(0, "model", root)
    return "\n".join(writer.lines) + "\n"


# --------------------------------------------------------------------------- the public function


def to_spec(
    module: nn.Module,
    input: tuple[int, ...] | list[int] = (3, 224, 224),
    name: str | None = None,
    *,
    source: str | None = None,
) -> str:
    """The spec (YAML text) of ``module``: built, loaded with its state dict and compared before it is returned.

    ``input`` is one sample's shape (no batch). Raises ``DecompileError`` naming the module path and the
    operation when a spec cannot express the module, or when the rebuilt model would differ.
    """
    if not isinstance(module, nn.Module):
        raise DecompileError("", f"expected an nn.Module, got {type(module).__name__}")
    shape = tuple(int(s) for s in input)
    if not shape or any(s <= 0 for s in shape):
        raise DecompileError("", f"input {list(input)} is not a shape (positive sizes, no batch dimension)")
    name = name or re.sub(r"\W", "_", type(module).__name__).lower()
    if not name.isidentifier():
        name = "model_" + name
    decompiler = _Decompiler()
    root = decompiler.convert(module, "")
    header = [
        f"Decompiled by specc from {source or type(module).__name__} (compiler.to_spec): its state dict loads",
        "with strict=True and the eval-mode outputs are equal (checked on one sample input).",
    ]
    header += [f"note: {note}" for note in decompiler.notes]
    text = _render(name, shape, root, header)
    verify(module, text, shape)
    return text


def verify(module: nn.Module, text: str, shape: tuple[int, ...]) -> None:
    """Refuse unless the spec's model loads ``module``'s state dict strictly and its eval outputs are equal."""
    from compiler.pipeline import SpecError, build_model, lower_spec, parse_spec

    state = module.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            spec = parse_spec(text, "<decompiled>")
        except SpecError as err:
            first = err.problems[0].message if getattr(err, "problems", None) else str(err)
            raise DecompileError(
                "", f"the input shape {list(shape)} does not fit the model, or the written spec is invalid: {first}"
            ) from None
        dtype = torch.int64 if lower_spec(spec).model.input_dtype == "int64" else torch.float32
        with torch.device("meta"):
            rebuilt = build_model(spec)
    problem = state_dict_mismatch(rebuilt, state)
    if problem:
        raise DecompileError(
            "",
            f"the spec's model does not take the module's state dict ({problem}); is the input "
            f"shape {list(shape)} the one the module was made for?",
        )
    rebuilt.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in [*rebuilt.parameters(), *rebuilt.buffers()]):  # non-persistent buffers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rebuilt = build_model(spec)
        rebuilt.load_state_dict(state, strict=True)
    # an image model is compared on a small sample where it takes one (every op still runs), else on `input`
    small = (shape[0], *(min(s, 32) for s in shape[1:])) if len(shape) >= 3 else shape
    was = {m: m.training for m in module.modules()}
    try:
        module.eval()
        rebuilt.eval()
        with torch.no_grad():
            for i, sample in enumerate(dict.fromkeys([small, shape])):
                generator = torch.Generator().manual_seed(0)
                x = (
                    torch.randn(1, *sample, generator=generator)
                    if dtype == torch.float32
                    else torch.zeros(1, *sample, dtype=dtype)
                )
                try:
                    expected = module(x.clone())
                    got = rebuilt(x.clone())
                    break
                except Exception as err:
                    if sample != shape:
                        continue
                    raise DecompileError(
                        "",
                        f"the input shape {list(shape)} does not fit the module: "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                    ) from None
    finally:
        for m, mode in was.items():
            m.training = mode
    if not _equal(expected, got):
        raise DecompileError(
            "",
            "the spec's model gives different outputs from the module's on a sample input; "
            "refusing to write a wrong spec (the forward likely does something the spec leaves out)",
        )


def state_dict_mismatch(model: nn.Module, state: dict) -> str:
    """Why ``state`` would not load into ``model`` with strict=True, in one line ("" if it would)."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    shapes = [k for k in ours if k in state and hasattr(state[k], "shape") and ours[k].shape != state[k].shape]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(
                f"{len(keys)} {what} key{'s' if len(keys) > 1 else ''} ({', '.join(keys[:3])}"
                f"{', ...' if len(keys) > 3 else ''})"
            )
    if shapes:
        k = shapes[0]
        parts.append(
            f"{len(shapes)} of another shape ({k}: {list(state[k].shape)}, the model's "
            f"{list(ours[k].shape)}{', ...' if len(shapes) > 1 else ''})"
        )
    return "; ".join(parts)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return False


def load_factory(text: str) -> nn.Module:
    """``package.module:factory`` (named on the command line by the user) called with no arguments."""
    import importlib

    if ":" not in text:
        raise DecompileError("", f"{text!r} is not MODULE:FACTORY (e.g. torchvision.models:resnet18)")
    module_name, attr = text.split(":", 1)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:
        raise DecompileError("", f"cannot import {module_name!r}: {type(err).__name__}: {err}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DecompileError("", f"{module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise DecompileError("", f"{text} is neither an nn.Module nor a function that makes one")
    try:
        made = obj()
    except Exception as err:
        raise DecompileError("", f"{text}() raised {type(err).__name__}: {err}") from None
    if not isinstance(made, nn.Module):
        raise DecompileError("", f"{text}() returned {type(made).__name__}, not an nn.Module")
    return made
