"""The spec's nodes a decompiled module becomes: layer calls, blocks, repeats, merges and graph nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class DecompileError(ValueError):
    """A module that a spec cannot express; ``str`` names the module path and the operation."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}" if path else message)


def shape_text(shape: tuple[int, ...] | dict[str, tuple[int, ...]]) -> str:
    """``[3, 64, 64]``, or several inputs' ``{left: [1, 28, 28], right: [1, 28, 28]}``."""
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{name}: {list(s)}" for name, s in shape.items()) + "}"
    return str(list(shape))


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
    origin: str = field(default="", compare=False)  # the module's class; "" for a merge's spread part


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
    origin: str = field(default="", compare=False)  # the module's class


@dataclass(frozen=True)
class TensorDecl:
    """A parameter or buffer of a graph node (§15): ``name: {shape: [...], dtype: ...}`` (zeros: the import
    copies no weights, the state dict does)."""

    name: str
    shape: tuple[Any, ...]  # sizes: integers, or a block's parameter expressions (``$out``)
    buffer: bool = False
    dtype: str = "float32"


@dataclass(frozen=True)
class GraphStep:
    """One step of a graph node: a named child (``name``, ``node``) or an operation (``op``) on named values."""

    name: str = ""  # the child's name, "" for an operation or a call
    node: Any = None
    call: str = ""  # `call: name` (a module of `modules:`) or `call: name.K` (a member of a declared list)
    op: str = ""  # add | sub | mul | div | matmul | cat | stack | expand_batch | interpolate
    inputs: tuple[str, ...] | None = None  # `from:` / the operands; None: the previous step's value
    outputs: tuple[str, ...] | None = None  # `as:` (``_`` drops a tuple's item)
    unpack: bool = False  # `as:` is a list: the child returns a tuple
    keywords: tuple[tuple[str, Any], ...] = ()  # `with:`
    dim: int | None = None  # cat and stack
    mode: str | None = None  # interpolate
    training: bool = False  # `when: training`: the child runs only in training mode


@dataclass(frozen=True)
class Dataflow:
    """A graph node (§15): ``{graph: [steps], params:, buffers:, output:, class:}``."""

    steps: tuple[GraphStep, ...]
    tensors: tuple[TensorDecl, ...] = ()
    modules: tuple[tuple[str, Any], ...] = ()  # `modules:`: declared first, run by `call:` steps (shared weights)
    inputs: tuple[str, ...] = ("x",)  # the forward's arguments (`inputs:` where not just x)
    output: str | tuple[str, ...] | None = None  # a value, several (a tuple), or None: the last step's
    output_keys: tuple[str, ...] | None = None  # the model's top level: `output:` is a dict with these keys
    eval_output: str | tuple[str, ...] | None = None  # what eval mode returns, where training mode's differs
    class_name: str | None = None
    origin: str = field(default="", compare=False)  # the module's class


# --------------------------------------------------------------------------- the block form (compiler/interop/folding.py)


@dataclass(frozen=True)
class Use:
    """A use of a block of ``blocks:``: ``{Name: {param: value}}`` (values may be expressions)."""

    name: str
    args: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Cond:
    """An ``if:`` part: ``then`` where ``cond`` holds, else ``otherwise`` (None: no part)."""

    cond: str
    then: Any
    otherwise: Any = None


@dataclass(frozen=True)
class Loop:
    """``{repeat: N, as: index, body: ...}`` under a name ``pattern`` ("" in a list)."""

    times: int
    index: str
    body: Any
    pattern: str = ""


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[tuple[str, str], ...]  # (name, type)
    body: Any
    defaults: tuple[tuple[str, Any], ...] = ()  # (name, value): the parameters that have one


@dataclass(frozen=True)
class Folded:
    """The spec's model in the block form: layer ``defaults``, block definitions and the model using them."""

    defaults: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    blocks: tuple[BlockDef, ...]
    root: Any
