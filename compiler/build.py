"""Backend 1: ModelIR -> live torch modules, constructed in spec order.

Construction order is the order a person writes the model by hand, so under the same
``torch.manual_seed`` the weights are bitwise-equal to the hand-written model.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from .ir import BlockIR, LayerIR, ModelIR


def build_module(model: ModelIR) -> nn.Sequential:
    return _build_block(model.root)


def _build_block(block: BlockIR) -> nn.Sequential:
    children = [(child.name, _build_node(child)) for child in block.children]
    if block.named:
        return nn.Sequential(OrderedDict(children))
    return nn.Sequential(*(module for _, module in children))


def _build_node(node: BlockIR | LayerIR) -> nn.Module:
    if isinstance(node, BlockIR):
        return _build_block(node)
    cls = node.entry.resolve()
    return cls(*(arg.value for arg in node.args), **{name: arg.value for name, arg in node.kwargs.items()})
