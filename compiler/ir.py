"""The lowered model: a tree with every argument resolved and every shape known.

Both backends read this and nothing else about the model: ``build`` instantiates it,
``render`` writes it out. Each node keeps its YAML path so late errors still have a line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from .registry import Entry


@dataclass(frozen=True)
class Arg:
    """One argument: its value, and the Python text the generated script writes for it."""

    value: Any
    source: str


@dataclass
class LayerIR:
    name: str  # child name in its parent ("0", "conv1")
    path: str  # module path from the root ("dense.0"), as in ``model.get_submodule``
    entry: Entry
    args: list[Arg]
    kwargs: dict[str, Arg]
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    params: int = 0  # trainable parameters
    nbytes: int = 0  # parameters and buffers
    inferred: str | None = None  # the argument filled by shape inference
    yaml_path: tuple = ()

    @property
    def type(self) -> str:
        return self.entry.name


@dataclass
class BlockIR:
    name: str
    path: str
    named: bool  # built from an OrderedDict of names
    children: list[Node] = field(default_factory=list)
    yaml_path: tuple = ()
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None

    @property
    def params(self) -> int:
        return sum(child.params for child in self.children)

    @property
    def nbytes(self) -> int:
        return sum(child.nbytes for child in self.children)

    def walk(self):
        """Every node below this one, depth first, in module order."""
        for child in self.children:
            yield child
            if isinstance(child, BlockIR):
                yield from child.walk()


Node = Union[LayerIR, BlockIR]


@dataclass
class ModelIR:
    root: BlockIR
    input_shape: tuple[int, ...] | None
    input_dtype: str = "float32"  # "int64" when the first layer takes indices (Embedding)

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        return self.root.out_shape

    @property
    def params(self) -> int:
        return self.root.params

    @property
    def nbytes(self) -> int:
        return self.root.nbytes
