"""The spec's nodes a decompiled module becomes: layer calls, blocks, repeats and merges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
