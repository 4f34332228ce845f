"""Backend 1: ModelIR -> live torch modules, constructed in spec order, then ``init:`` applied.

Construction order is the order a person writes the model by hand, so under the same
``torch.manual_seed`` the weights are bitwise-equal to the hand-written model. A merge block
becomes an instance of a class named as the generated script names it (so ``str(model)`` is
the same in both backends) whose ``forward`` runs the block's parts and merges them.
"""

from __future__ import annotations

import functools
import operator
from collections import OrderedDict

import torch
from torch import nn

from compiler.lower.ir import class_names, FLAG, GraphIR, InitRuleIR, LayerIR, MergeIR, ModelIR, Node, TensorIR
from compiler.runtime.layers import merge


def build_model(model: ModelIR) -> nn.Module:
    names = class_names(model.classes(), model.blocks)
    own = {name: (code.class_name, nn.Sequential) for name, code in model.blocks.items() if code.sequential}
    own.update({name: (code.class_name, FlagBlock) for name, code in model.blocks.items() if code.flag is not None})
    module = _build(model.root, names, own)
    if model.init:
        apply_init(module, model.init)
    if model.load is not None:  # after the init rules: the file's tensors win (strict: false keeps the rest)
        from compiler.runtime.helpers import load_weights  # (imports torchvision: only when needed)

        load_weights(module, model.load.path, model.load.strict)
    return module


def _build(node: Node, names: dict[tuple, str], own: dict[str, tuple[str, type]]) -> nn.Module:
    """``own``: the blocks whose script class is an ``nn.Sequential`` subclass or a flag class (FlagBlock), by
    block: the class's name and base."""
    if isinstance(node, LayerIR):
        args, kwargs = node.call.values()
        return node.entry.resolve()(*args, **kwargs)
    built = node.built if isinstance(node, GraphIR) else node.children  # a graph node's dropped ones too
    children = [(child.name, _build(child, names, own)) for child in built]
    name, base = own.get(node.use.block, (None, None)) if node.use is not None else (None, None)
    if base is FlagBlock:  # both sides of the `if:` are one class: the add's (a merge) sets the flag
        return _named_class(name, FlagBlock)(children, node if isinstance(node, MergeIR) else None)
    if isinstance(node, MergeIR):
        return _named_class(names[node.shape_key], GraphBlock)(children, node)
    if isinstance(node, GraphIR):
        return _graph_class(names[node.shape_key], len(node.inputs))(children, node)
    if node.module_list:  # a graph node's declared list whose members its steps call one by one
        return nn.ModuleList(module for _, module in children)
    cls = _named_class(name, nn.Sequential) if name else nn.Sequential
    if node.named:
        return cls(OrderedDict(children))
    return cls(*(module for _, module in children))


class GraphBlock(nn.Module):
    """A merge block: ``before``, then every branch on its output, merged by ``op``, then ``then``."""

    def __init__(self, children: list[tuple[str, nn.Module]], ir: MergeIR):
        super().__init__()
        for name, module in children:
            self.add_module(name, module)
        modules = dict(children)
        self._op, self._dim = ir.op, ir.dim
        self._before = [modules[n.name] for n in ir.before.nodes] if ir.before else []
        self._branches = [[modules[n.name] for n in branch.nodes] for branch in ir.branches]
        self._then = [modules[n.name] for n in ir.then.nodes] if ir.then else []

    def forward(self, x):
        for module in self._before:
            x = module(x)
        values = []
        for branch in self._branches:
            value = x
            for module in branch:
                value = module(value)
            values.append(value)
        out = merge(self._op, self._dim, values)
        for module in self._then:
            out = module(out)
        return out


class FlagBlock(GraphBlock):
    """A block whose `if:` chooses between a residual add and the same modules alone, as the generated script
    writes it (torchvision's ``InvertedResidual``): ``use_res_connect`` (FLAG) is whether the add's side was
    taken (``merge``: its IR; None: the other side, whose children run in a chain)."""

    def __init__(self, children: list[tuple[str, nn.Module]], merge: MergeIR | None):
        if merge is not None:
            super().__init__(children, merge)  # no `before` part: the flag's shape has none
        else:
            nn.Module.__init__(self)
            for name, module in children:
                self.add_module(name, module)
            self._before = [module for _, module in children]
        # setattr: an attribute written `self.name` here would be a block name refused in every spec
        # (front/names.py reads them), and a flag block's children already avoid this one (lower/blocks.py)
        setattr(self, FLAG, merge is not None)

    def forward(self, x):
        if getattr(self, FLAG):
            return super().forward(x)
        for module in self._before:
            x = module(x)
        return x


_OPERATORS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}


def make_tensor(tensor: TensorIR) -> torch.Tensor:
    """A graph node's parameter or buffer, made as the generated script makes it: zeros, ones, or empty and
    then its init function (so the random draws are the same, in the same order)."""
    dtype = getattr(torch, tensor.dtype)
    init = tensor.init.name if tensor.init is not None else "zeros_"
    if init in ("zeros_", "ones_"):
        return (torch.zeros if init == "zeros_" else torch.ones)(tensor.shape, dtype=dtype)
    value = torch.empty(tensor.shape, dtype=dtype)
    assert tensor.init is not None
    args, kwargs = tensor.init.values()
    tensor.init.entry.resolve()(value, *args, **kwargs)
    return value


class DataflowBlock(nn.Module):
    """A graph node (§15): its steps run in order on named values; its own parameters and buffers are
    attributes under their names."""

    def __init__(self, children: list[tuple[str, nn.Module]], ir: GraphIR):
        super().__init__()
        for name, module in children:
            self.add_module(name, module)
        for tensor in ir.tensors:
            value = make_tensor(tensor)
            if tensor.buffer:
                self.register_buffer(tensor.name, value)
            else:
                setattr(self, tensor.name, nn.Parameter(value))
        if ir.init:  # as a torchvision class's __init__ ends: its loop over self.modules(), dropped ones too
            apply_init(self, ir.init)
        for node in ir.dropped:  # `keep: false`: built for its draws and initialised, then dropped
            delattr(self, node.name)
        modules = dict(children)
        self._tensors = [tensor.name for tensor in ir.tensors]
        self._inputs = ir.inputs
        self._steps = [
            (
                _step_module(modules, step),
                step.op,
                step.dim,
                step.mode,
                step.inputs,
                step.outputs,
                step.unpack,
                {k: a.value for k, a in step.keywords.items()},
                len(step.shapes[0]) if step.shapes and step.shapes[0] is not None else None,  # expand_batch's rank
                step.training,
            )
            for step in ir.steps
        ]
        self._returned = _returned(ir.returned, ir.output_keys, ir.outputs is not None)
        self._eval = _returned(ir.eval_outputs, None, ir.eval_tuple) if ir.eval_outputs is not None else None

    def forward(self, x):
        return self.run((x,))

    def run(self, args: tuple):
        values = {**dict(zip(self._inputs, args)), **{name: getattr(self, name) for name in self._tensors}}
        first = args[0]
        for module, op, dim, mode, inputs, outputs, unpack, keywords, rank, training in self._steps:
            if training and not self.training:
                continue
            given = [values[name] for name in inputs]
            out = module(*given, **keywords) if module is not None else _operate(op, dim, mode, given, first, rank)
            if unpack:
                values.update((name, out[i]) for i, name in enumerate(outputs) if name is not None)  # fx: no iter
            else:
                values[outputs[0]] = out
        names, keys, several = self._eval if self._eval is not None and not self.training else self._returned
        if keys is not None:
            return {key: values[name] for key, name in zip(keys, names)}
        return tuple(values[name] for name in names) if several else values[names[0]]


def _step_module(modules: dict[str, nn.Module], step) -> nn.Module | None:
    """The module a step runs: its own child, or a declared one (``call:``), or a declared list's member."""
    if step.node is not None:
        return modules[step.node.name]
    if step.call is None:
        return None
    name, member = step.call
    return modules[name][member] if member is not None else modules[name]


def _returned(names: list[str], keys: list[str] | None, several: bool) -> tuple:
    return (list(names), list(keys) if keys is not None else None, several)


def _operate(op: str, dim: int | None, mode: str | None, args: list, x, rank: int | None):
    """One operation of a graph step, as the generated script writes it (``a + b + c`` folds left)."""
    if op in _OPERATORS:
        return functools.reduce(_OPERATORS[op], args)
    if op == "matmul":
        return args[0] @ args[1]
    if op in ("cat", "stack"):
        return getattr(torch, op)(args, dim=dim)
    if op == "interpolate":
        return nn.functional.interpolate(args[0], size=args[1].shape[2:], mode=mode)
    assert op == "expand_batch"
    if rank is not None:  # as the generated script writes it: expand(n, -1, -1), which torch.fx can trace
        return args[0].expand(x.shape[0], *([-1] * (rank - 1)))
    return args[0].expand(x.shape[0], *args[0].shape[1:])


_CLASSES: dict[tuple[str, type], type] = {}

# ``forward`` of a graph node of several inputs: a real signature (torch.fx traces one placeholder per argument,
# and cannot trace ``*args``), its arguments passed on in order
_FORWARDS = {
    2: lambda self, a, b: self.run((a, b)),
    3: lambda self, a, b, c: self.run((a, b, c)),
    4: lambda self, a, b, c, d: self.run((a, b, c, d)),
    5: lambda self, a, b, c, d, e: self.run((a, b, c, d, e)),
    6: lambda self, a, b, c, d, e, f: self.run((a, b, c, d, e, f)),
    7: lambda self, a, b, c, d, e, f, g: self.run((a, b, c, d, e, f, g)),
    8: lambda self, a, b, c, d, e, f, g, h: self.run((a, b, c, d, e, f, g, h)),
}


def _graph_class(name: str, inputs: int) -> type:
    """The graph node's class, named as the generated script names it, with a forward of its inputs' arity."""
    cls = _named_class(name, DataflowBlock)
    if inputs == 1:
        return cls
    key = (f"{name}/{inputs}", DataflowBlock)
    if key not in _CLASSES:
        _CLASSES[key] = type(name, (cls,), {"__module__": __name__, "forward": _FORWARDS[inputs]})
    return _CLASSES[key]


def _named_class(name: str, base: type) -> type:
    """A subclass of ``base`` named as the generated script names the block's class (``str(model)`` prints it):
    a GraphBlock (a merge), a DataflowBlock (a graph node) or an nn.Sequential (a block whose body is modules)."""
    if (name, base) not in _CLASSES:
        _CLASSES[name, base] = type(name, (base,), {"__module__": __name__})
    return _CLASSES[name, base]


def apply_init(model: nn.Module, rules: list[InitRuleIR]) -> None:
    """Each module, in ``model.modules()`` order, takes the first rule that matches it (if/elif, as torchvision)."""
    classes = [tuple(entry.resolve() for entry in rule.types) for rule in rules]
    for path, module in model.named_modules():
        for rule, types in zip(rules, classes):
            if isinstance(module, types) or rule.path_matches(path):
                for name, call in rule.calls.items():
                    param = getattr(module, name, None)
                    if param is not None:
                        args, kwargs = call.values()
                        call.entry.resolve()(param, *args, **kwargs)
                break
