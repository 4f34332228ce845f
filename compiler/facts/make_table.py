"""Writes ``torch_facts.json`` from the installed torch and torchvision (imports both).

Run after upgrading torch (``tests/test_torch_facts.py`` fails until you do)::

    python -m compiler.facts.make_table
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from compiler.facts.registry import REGISTRY
from compiler.facts.torch_facts import (
    _KINDS,
    TABLE,
    _annotation_text,
    _encode,
    installed_versions,
    live_signature,
    rebuild_annotation,
)


def _entries() -> list:
    return [e for kind in _KINDS for e in REGISTRY.entries(kind) if e.params is None and e.cls_object is None]


def generate() -> dict:
    """The table for the installed torch and torchvision (imports both)."""
    entries = {}
    for entry in _entries():
        rows = []
        for p in live_signature(entry).parameters.values():
            row: dict[str, Any] = {"name": p.name, "kind": p.kind.name}
            if p.default is not p.empty:
                row["default"] = _encode(p.default)
            if isinstance(p.annotation, str):
                row["annotation_text"] = p.annotation
            elif p.annotation is not p.empty:
                text = _annotation_text(p.annotation)
                rebuilt = rebuild_annotation(text)
                if repr(rebuilt) != repr(p.annotation) and _annotation_text(rebuilt) != text:
                    raise ValueError(f"{entry.name}.{p.name}: annotation {text!r} does not survive the table")
                row["annotation"] = text
            rows.append(row)
        entries[f"{entry.kind}:{entry.name}"] = {"class": f"{entry.module}.{entry.class_name}", "parameters": rows}
    return {"versions": installed_versions(), "entries": entries, "torchvision": _torchvision()}


def _torchvision() -> dict:
    """torchvision's own signatures of the entries the registry spells statically (``Entry.params``, which
    validation reads: specc supplies ``transform``, ``train`` ...); tests check the static names against these."""
    found = {}
    for kind in ("layer", "transform", "dataset"):
        for entry in REGISTRY.entries(kind):
            if entry.params is None or not entry.module.startswith("torchvision"):
                continue
            rows = []
            for p in inspect.signature(entry.resolve()).parameters.values():
                row: dict[str, Any] = {"name": p.name, "kind": p.kind.name}
                if p.default is not p.empty:
                    row["default"] = _encode(p.default, strict=False)
                if p.annotation is not p.empty:
                    row["annotation_text"] = (
                        p.annotation if isinstance(p.annotation, str) else _annotation_text(p.annotation)
                    )
                rows.append(row)
            found[f"{entry.kind}:{entry.name}"] = {"class": f"{entry.module}.{entry.class_name}", "parameters": rows}
    return found


def table_text(table: dict) -> str:
    return json.dumps(table, indent=1, sort_keys=False) + "\n"


if __name__ == "__main__":  # python -m compiler.facts.make_table: rewrite the table for the installed torch
    TABLE.write_text(table_text(generate()), encoding="utf-8")
    print(f"wrote {TABLE}")
