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

import dataclasses
import re
from typing import Any

from torch import nn

from compiler.interop.folding import fold_blocks, layer_defaults, param_defaults, walk
from compiler.interop.loops import fold_loops
from compiler.interop.mapping import Decompiler
from compiler.interop.nodes import DecompileError, Folded
from compiler.interop.verify import expressible, state_dict_mismatch, verify
from compiler.interop.yaml_text import line_count, render_yaml

__all__ = ["DecompileError", "load_factory", "state_dict_mismatch", "to_spec", "verify"]

Shape = tuple[int, ...] | dict[str, tuple[int, ...]]  # one input's sample shape, or several inputs' by name


# --------------------------------------------------------------------------- the public function


def to_spec(
    module: nn.Module,
    input: tuple[int, ...] | list[int] | dict[str, Any] = (3, 224, 224),
    name: str | None = None,
    *,
    source: str | None = None,
    flat: bool = False,
) -> str:
    """The spec (YAML text) of ``module``: built, loaded with its state dict and compared before it is returned.

    ``input`` is one sample's shape (no batch), or for a model whose forward takes several tensors a mapping of
    them, in the forward's argument order, to their shapes (``{"left": (1, 28, 28), "right": (1, 28, 28)}``): the
    spec's ``input:`` is then that mapping and its model a graph node reading the inputs by those names. Repeated structure is written as parameterised blocks, loops and
    layer defaults, unless ``flat`` (or unless that form does not verify: then the flat one is written, with a
    note). Raises ``DecompileError`` naming the module path and the operation when a spec cannot express the
    module, or when the rebuilt model would differ.
    """
    if not isinstance(module, nn.Module):
        raise DecompileError("", f"expected an nn.Module, got {type(module).__name__}")
    shape = input_shapes(module, input)
    name = name or re.sub(r"\W", "_", type(module).__name__).lower()
    if not name.isidentifier():
        name = "model_" + name
    expressible(module)  # tied, frozen or float64 weights: refused before the tree is read
    decompiler = Decompiler(module, shape)
    root = decompiler.convert(module, "")
    header = [
        f"Decompiled by specc from {source or type(module).__name__} (compiler.to_spec): its state dict loads",
        "with strict=True and the eval-mode outputs are equal (checked on one sample input).",
    ]
    header += [f"note: {note}" for note in decompiler.note_lines()]
    if not flat:
        text, why = _block_form(module, shape, name, root, header)
        if text:
            return text
        if why:  # never a wrong model: the flat form, verified too
            header.append(f"note: written without blocks: {why}")
    text = render_yaml(name, shape, root, header)
    verify(module, text, shape)
    return text


def input_shapes(module: nn.Module, input: Any) -> Shape:
    """``input`` as one shape (a tuple), or as ``{name: shape}`` where it names two or more inputs, checked against
    ``module.forward``'s arguments."""
    if isinstance(input, dict):
        if not input:
            raise DecompileError("", "input names no inputs: give each one's shape, e.g. {'left': (1, 28, 28)}")
        shapes = {}
        for key, value in input.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise DecompileError("", f"an input's name is a Python identifier, got {key!r}")
            shapes[key] = _one_shape(value, key)
        if len(shapes) == 1:  # one input: its name is the forward's business, the spec's is `x`
            return next(iter(shapes.values()))
        _check_arguments(module, list(shapes))
        return shapes
    return _one_shape(input, "")


def _one_shape(value: Any, key: str) -> tuple[int, ...]:
    what = f"input {key}" if key else "input"
    try:
        shape = tuple(int(s) for s in value) if not isinstance(value, (str, bytes)) else ()
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise DecompileError("", f"{what} {value!r} is not a shape (positive sizes, no batch dimension)")
    return shape


def _check_arguments(module: nn.Module, names: list[str]) -> None:
    """Several inputs: the forward must take that many tensors, named ones in that order."""
    import inspect

    owner = f"{type(module).__name__}.forward"
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return  # no signature to read: the forward pass tells
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p.name for p in parameters if p.kind in kinds]
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return
    if len(positional) < len(names):
        raise DecompileError(
            "",
            f"{owner} takes {len(positional)} input{'s' if len(positional) != 1 else ''} "
            f"({', '.join(positional) or 'none'}), but input names {len(names)} ({', '.join(names)})",
        )
    first = positional[: len(names)]
    if set(first) == set(names) and first != names:
        raise DecompileError(
            "",
            f"input names {', '.join(names)}, but {owner} takes them as {', '.join(first)}: give them in the "
            "forward's argument order",
        )


def _block_form(module: nn.Module, shape: Shape, name: str, root: Any, header: list[str]) -> tuple[str, str]:
    """The spec in the block form, verified, or ``("", why not)`` (``why`` empty where it is no shorter)."""
    try:
        text = render_yaml(name, shape, root, header, fold(root, {name}))
    except Exception as err:  # a shape the folding does not handle: the flat form is still right
        return "", f"the block form could not be written ({type(err).__name__}: {err})"
    if spec_lines(text) > spec_lines(render_yaml(name, shape, root, header)):
        return "", ""  # nothing repeats enough to pay for blocks and defaults (AlexNet)
    try:
        verify(module, text, shape)
    except DecompileError as err:
        return "", f"the block form did not verify ({err})"
    return text, ""


def fold(root: Any, reserved: set[str] = frozenset()) -> Folded:
    """The block form of a decompiled tree: repeated subtrees as blocks, runs of uses as loops, then the keyword
    values every layer of a type says as ``defaults:``."""
    from compiler.facts.registry import REGISTRY
    from compiler.front.expand import RESERVED_BLOCKS
    from compiler.front.names import RESERVED_NAMES

    def signature(kind: str) -> Any:
        entry = REGISTRY.get("layer", kind)
        return entry.signature() if entry is not None else None

    taken = set(reserved) | set(RESERVED_NAMES) | set(RESERVED_BLOCKS) | _child_names(root)  # a use reads as one
    blocks, root = fold_blocks(root, line_count, signature, taken)
    bodies = [fold_loops(b.body) for b in blocks]
    defaults, (root, *bodies) = layer_defaults([fold_loops(root), *bodies], signature)
    blocks, (root, *bodies) = param_defaults(blocks, [root, *bodies])
    made = [dataclasses.replace(b, body=body) for b, body in zip(blocks, bodies)]
    return Folded(defaults, tuple(reversed(made)), root)


def spec_lines(text: str) -> int:
    """A spec's length: lines that are neither blank nor comments."""
    return sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def _child_names(root: Any) -> set[str]:
    names: set[str] = set()
    for node in walk(root):
        for field in ("items", "before", "branches", "then"):
            names.update(name for name, _ in getattr(node, field, ()))
        names.update(step.name for step in getattr(node, "steps", ()) if step.name)
        names.update(name for name, _ in getattr(node, "modules", ()))
    return names


def load_factory(text: str, kwargs: dict | None = None) -> nn.Module:
    """``package.module:factory`` (named on the command line by the user) called with ``kwargs`` (plain
    values: ``specc import --arg``), or ``package.module:MODEL`` (an ``nn.Module``, then no arguments)."""
    if ":" not in text:
        raise DecompileError("", f"{text!r} is not MODULE:FACTORY (e.g. torchvision.models:resnet18)")
    obj = _named(*text.split(":", 1))
    if isinstance(obj, nn.Module):
        if kwargs:
            raise DecompileError("", f"{text} is a model, not a function: it takes no --arg")
        return obj
    if not callable(obj):
        raise DecompileError("", f"{text} is neither an nn.Module nor a function that makes one")
    try:
        made = obj(**(kwargs or {}))
    except Exception as err:
        raise DecompileError("", f"{text}() raised {type(err).__name__}: {err}") from None
    if not isinstance(made, nn.Module):
        raise DecompileError("", f"{text}() returned {type(made).__name__}, not an nn.Module")
    return made


def _named(module_name: str, attr: str) -> Any:
    import importlib

    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:
        raise DecompileError("", f"cannot import {module_name!r}: {type(err).__name__}: {err}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DecompileError("", f"{module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj
