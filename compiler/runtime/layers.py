"""specc's own layers: what ``torch.nn`` has no module for, as small parameter-free modules.

Each is one tensor operation with torch's own argument names (``dim`` counts the batch as
dimension 0, as everywhere in torch). Generated scripts copy the classes they use from this
file, so a module prints (``str(model)``) the same in both backends.
"""

from __future__ import annotations

import torch
from torch import nn


class TupleItem(nn.Module):
    """``x[index]`` of a tuple output, e.g. the ``output`` of an LSTM's ``(output, (h, c))``."""

    def __init__(self, index=0):
        super().__init__()
        self.index = index

    def forward(self, x):
        return x[self.index]

    def extra_repr(self):
        return f"index={self.index}"


class Select(nn.Module):
    """``x.select(dim, index)``: one position along ``dim``, which is dropped (the last time step)."""

    def __init__(self, dim, index):
        super().__init__()
        self.dim, self.index = dim, index

    def forward(self, x):
        return x.select(self.dim, self.index)

    def extra_repr(self):
        return f"dim={self.dim}, index={self.index}"


class Slice(nn.Module):
    """``x[..., start:end:step, ...]`` along ``dim``."""

    def __init__(self, dim, start=None, end=None, step=1):
        super().__init__()
        self.dim, self.start, self.end, self.step = dim, start, end, step

    def forward(self, x):
        index = [slice(None)] * x.dim()
        index[self.dim] = slice(self.start, self.end, self.step)
        return x[tuple(index)]

    def extra_repr(self):
        return f"dim={self.dim}, start={self.start}, end={self.end}, step={self.step}"


class Permute(nn.Module):
    """``x.permute(*dims)``; ``dims`` names every dimension, the batch (0) included."""

    def __init__(self, dims):
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x):
        return x.permute(*self.dims)

    def extra_repr(self):
        return f"dims={self.dims}"


class Transpose(nn.Module):
    """``x.transpose(dim0, dim1)``."""

    def __init__(self, dim0, dim1):
        super().__init__()
        self.dim0, self.dim1 = dim0, dim1

    def forward(self, x):
        return x.transpose(self.dim0, self.dim1)

    def extra_repr(self):
        return f"dim0={self.dim0}, dim1={self.dim1}"


class Mean(nn.Module):
    """``x.mean(dim, keepdim)``: e.g. mean-pooling over time, for any sequence length."""

    def __init__(self, dim, keepdim=False):
        super().__init__()
        self.dim, self.keepdim = dim, keepdim

    def forward(self, x):
        return x.mean(self.dim, keepdim=self.keepdim)

    def extra_repr(self):
        return f"dim={self.dim}, keepdim={self.keepdim}"


class Sum(Mean):
    """``x.sum(dim, keepdim)``."""

    def forward(self, x):
        return x.sum(self.dim, keepdim=self.keepdim)


class Amax(Mean):
    """``x.amax(dim, keepdim)``: max-pooling over the given dims."""

    def forward(self, x):
        return x.amax(self.dim, keepdim=self.keepdim)


class Reshape(nn.Module):
    """``x.reshape(len(x), *shape)``: ``shape`` is one sample's new shape; the batch is kept."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self):
        return f"shape={self.shape}"


def merge(op: str, dim: int, values: list[torch.Tensor]) -> torch.Tensor:
    """How a merge block combines its branches (the compiled backend's reading of ``op``)."""
    if op == "cat":
        return torch.cat(values, dim)
    out = values[0]
    for value in values[1:]:
        out = out + value if op == "add" else out * value
    return out
