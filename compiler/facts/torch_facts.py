"""What validation needs from torch, read from a checked-in table instead of importing torch.

Importing torch costs seconds; validating a spec needs only the constructor signatures of the
registered classes (names, kinds, defaults, annotations). ``torch_facts.json`` beside this file
holds them for every registry entry that lives in torch or in specc's own torch modules, with
the torch and torchvision versions it was generated from. ``signature(entry)`` rebuilds an
``inspect.Signature`` from it when the installed torch is that version (read from the package
metadata, without importing torch); otherwise validation reads torch live -- correct, just
slower -- and says so once on stderr.

Regenerate after upgrading torch (``tests/test_torch_facts.py`` fails until you do)::

    python -m compiler.facts.make_table

``SPECC_LIVE_TORCH=1`` (or ``set_live(True)``) forces the live path: signatures from torch and
every layer constructed on the meta device, as validation did before the table existed.
"""

from __future__ import annotations

import ast
import collections.abc
import functools
import inspect
import json
import math
import os
import sys
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TABLE = Path(__file__).with_name("torch_facts.json")
_KINDS = ("layer", "loss", "optimizer", "scheduler", "init")
_TABLE: dict | None = None
_FORCED: bool | None = None  # set_live(); None: the environment decides
_WARNED = False
_SIGNATURES: dict[Any, inspect.Signature] = {}
_DEPENDENT_CACHES: list = []


# stand-ins for the torch types annotations name (only their names and isinstance matter: a spec's values are
# never tensors, so a stand-in refuses exactly what torch's class refuses)
def _standin(name: str, base: type = object) -> type:
    return type(name, (base,), {"__module__": "torch", "__qualname__": name})


_TORCH = SimpleNamespace(Tensor=_standin("Tensor"), Size=_standin("Size", tuple), dtype=_standin("dtype"))
_NAMESPACE = {
    "typing": typing,
    "collections": collections,
    "torch": _TORCH,
    "NoneType": type(None),
    "Any": typing.Any,
    **{t.__name__: t for t in (int, float, bool, str, tuple, list, dict, bytes, type(None))},
}


def _function(name: str) -> Any:
    """A default that is a function (``F.relu``): a stand-in of the same name that cannot be called."""

    def standin(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name} stands in for torch's default function; construct the layer with torch")

    standin.__name__ = standin.__qualname__ = name
    return standin


# --------------------------------------------------------------------------------------------- mode


def set_live(flag: bool | None) -> None:
    """Force (True) or forbid (False) the live path; None: back to ``SPECC_LIVE_TORCH`` and the version check."""
    global _FORCED
    _FORCED = flag
    _clear_caches()


def _clear_caches() -> None:
    _LIVE.clear()
    _SIGNATURES.clear()
    for clear in _DEPENDENT_CACHES:
        clear()


def on_mode_change(clear: Any) -> None:
    """Register a cache built from signatures (``bind``'s), cleared whenever ``set_live`` changes the source."""
    _DEPENDENT_CACHES.append(clear)


@functools.cache
def installed_versions() -> dict[str, str]:
    """The installed torch's and torchvision's versions, from their package metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "torchvision"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = ""
    return found


def _table() -> dict | None:
    global _TABLE
    if _TABLE is None:
        try:
            _TABLE = json.loads(TABLE.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            _TABLE = {}
    return _TABLE or None


def live() -> bool:
    """True when validation must read torch itself: forced, or the table is missing or for another torch."""
    global _WARNED
    if _FORCED is not None:
        return _FORCED
    if os.environ.get("SPECC_LIVE_TORCH", "") not in ("", "0"):
        return True
    table = _table()
    have = installed_versions()["torch"]
    if table is not None and table.get("versions", {}).get("torch") == have:
        return False
    if not _WARNED:
        _WARNED = True
        made = (table or {}).get("versions", {}).get("torch", "none")
        print(
            f"specc: compiler/facts/torch_facts.json was generated for torch {made}, but torch {have or 'none'} is "
            "installed: validation reads torch itself (correct, just slower); regenerate it with "
            "`python -m compiler.facts.make_table`",
            file=sys.stderr,
        )
    return True


# --------------------------------------------------------------------------------------------- reading


def signature(entry: Any) -> inspect.Signature | None:
    """The entry's signature from the table, or None (live path, or an entry the table does not hold)."""
    if live():
        return None
    table = _table()
    assert table is not None
    if entry not in _SIGNATURES:
        row = table["entries"].get(f"{entry.kind}:{entry.name}")
        if row is None or row["class"] != f"{entry.module}.{entry.class_name}":
            return None
        _SIGNATURES[entry] = inspect.Signature([_parameter(p) for p in row["parameters"]])
    return _SIGNATURES[entry]


def _parameter(row: dict) -> inspect.Parameter:
    default = inspect.Parameter.empty if "default" not in row else _decode(row["default"])
    annotation = inspect.Parameter.empty
    if "annotation" in row:
        annotation = rebuild_annotation(row["annotation"])
    elif "annotation_text" in row:
        annotation = row["annotation_text"]
    return inspect.Parameter(
        row["name"], getattr(inspect.Parameter, row["kind"]), default=default, annotation=annotation
    )


def rebuild_annotation(text: str) -> Any:
    """An annotation from its text (``typing.Union[int, tuple[int, int]]``, ``float | torch.Tensor``): a walk over
    names, attributes, subscripts, ``|`` and constants of the namespace above -- never ``eval``."""
    return _rebuild(ast.parse(text, mode="eval").body)


def _rebuild(node: ast.AST) -> Any:
    if isinstance(node, ast.Name) and node.id in _NAMESPACE:
        return _NAMESPACE[node.id]
    if isinstance(node, ast.Attribute) and not node.attr.startswith("_"):
        return getattr(_rebuild(node.value), node.attr)
    if isinstance(node, ast.Subscript):
        return _rebuild(node.value)[_rebuild(node.slice)]
    if isinstance(node, ast.Tuple):
        return tuple(_rebuild(e) for e in node.elts)
    if isinstance(node, ast.List):
        return [_rebuild(e) for e in node.elts]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _rebuild(node.left) | _rebuild(node.right)
    raise ValueError(f"an annotation the table cannot rebuild: {ast.unparse(node)}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "tuple" in value:
            return tuple(_decode(v) for v in value["tuple"])
        if "float" in value:
            return float(value["float"])
        if "repr" in value:
            return value["repr"]  # a default JSON cannot hold (torchvision's enums): its repr, for reading only
        return _function(value["function"])
    return value


# --------------------------------------------------------------------------------------------- generating


def _encode(value: Any, strict: bool = True) -> Any:
    """JSON for a default; a value JSON cannot hold is an error, or with ``strict=False`` marked ``{"repr": ...}``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, strict) for v in value]}
    if isinstance(value, list):
        return [_encode(v, strict) for v in value]
    if inspect.isfunction(value) or inspect.isbuiltin(value):
        return {"function": value.__name__}
    if not strict:
        return {"repr": repr(value)}
    raise ValueError(f"a default the table cannot hold: {value!r}")


def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, type) and annotation.__module__ == "builtins":
        return annotation.__qualname__
    if isinstance(annotation, type):
        return f"{annotation.__module__}.{annotation.__qualname__}"
    return repr(annotation)


# --------------------------------------------------------------------------------------------- live


_LIVE: dict[Any, inspect.Signature] = {}


def _recurrent_signature(entry: Any) -> inspect.Signature:
    """RNN/LSTM/GRU take ``(*args, **kwargs)`` and pass them to RNNBase: read its signature instead."""
    from torch import nn

    params = [
        p for name, p in inspect.signature(nn.RNNBase.__init__).parameters.items() if name not in ("self", "mode")
    ]
    if entry.name != "LSTM":
        params = [p for p in params if p.name != "proj_size"]
    if entry.name == "RNN":  # RNN(input_size, hidden_size, num_layers, nonlinearity, bias, ...)
        nonlinearity = inspect.Parameter(
            "nonlinearity", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="tanh", annotation=str
        )
        params.insert(3, nonlinearity)
    return inspect.Signature(params)


def live_signature(entry: Any) -> inspect.Signature:
    """The signature read from the class itself (imports it: torch for torch's classes)."""
    if entry not in _LIVE:
        sig = inspect.signature(entry.resolve())
        if entry.name in ("RNN", "LSTM", "GRU") and entry.module == "torch.nn":
            sig = _recurrent_signature(entry)
        supplied = {"optimizer": ("params",), "scheduler": ("optimizer",), "init": ("tensor", "generator")}.get(
            entry.kind, ()
        )
        params = [p for p in sig.parameters.values() if p.name not in ("self", *supplied)]
        _LIVE[entry] = sig.replace(parameters=params)
    return _LIVE[entry]
