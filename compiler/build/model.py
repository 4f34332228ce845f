"""Backend 1: ModelIR -> live torch modules, constructed in spec order, then ``init:`` applied.

Construction order is the order a person writes the model by hand, so under the same
``torch.manual_seed`` the weights are bitwise-equal to the hand-written model. A merge block
becomes an instance of a class named as the generated script names it (so ``str(model)`` is
the same in both backends) whose ``forward`` runs the block's parts and merges them.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from compiler.lower.ir import class_names, InitRuleIR, LayerIR, MergeIR, ModelIR, Node
from compiler.runtime.layers import merge


def build_model(model: ModelIR) -> nn.Module:
    names = class_names(list(model.merges()), model.blocks)
    sequential = {name: code.class_name for name, code in model.blocks.items() if code.sequential}
    module = _build(model.root, names, sequential)
    if model.init:
        apply_init(module, model.init)
    if model.load is not None:  # after the init rules: the file's tensors win (strict: false keeps the rest)
        from compiler.runtime.helpers import load_weights  # (imports torchvision: only when needed)

        load_weights(module, model.load.path, model.load.strict)
    return module


def _build(node: Node, names: dict[tuple, str], sequential: dict[str, str]) -> nn.Module:
    """``sequential``: the blocks whose script class is an ``nn.Sequential`` subclass, and its name."""
    if isinstance(node, LayerIR):
        args, kwargs = node.call.values()
        return node.entry.resolve()(*args, **kwargs)
    children = [(child.name, _build(child, names, sequential)) for child in node.children]
    if isinstance(node, MergeIR):
        return _merge_class(names[node.shape_key])(children, node)
    own = sequential.get(node.use.block) if node.use is not None else None
    cls = _named_class(own, nn.Sequential) if own else nn.Sequential
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


_CLASSES: dict[str, type] = {}


def _merge_class(name: str) -> type:
    """A GraphBlock subclass named as the generated script names the block's class (``str(model)`` prints it)."""
    return _named_class(name, GraphBlock)


def _named_class(name: str, base: type) -> type:
    """A subclass of ``base`` named as the script's class: a GraphBlock (a merge) or an nn.Sequential (a block
    whose body is a list of modules)."""
    key = f"{base.__name__}.{name}"
    if key not in _CLASSES:
        _CLASSES[key] = type(name, (base,), {"__module__": __name__})
    return _CLASSES[key]


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
