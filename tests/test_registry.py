"""The registry is the one table: every layer has a shape rule, every rule a layer, every trait a user."""

from __future__ import annotations

import inspect

import pytest

from compiler.facts import param_rules
from compiler.facts.registry import REGISTRY
from compiler.facts.shapes import known_layers
from compiler.runtime import layers


def test_every_registered_layer_has_a_shape_rule_and_every_rule_a_layer():
    builtin = {e.name for e in REGISTRY.entries("layer") if e.cls_object is None}
    assert builtin - known_layers() == set(), "registered layers without a shape rule"
    assert known_layers() - builtin == set(), "shape rules for layers that are not registered"


def test_every_registered_layer_has_a_parameter_rule_and_every_rule_a_layer():
    builtin = {e.name for e in REGISTRY.entries("layer") if e.cls_object is None}
    assert builtin - param_rules.known_layers() == set(), "registered layers without a parameter rule"
    assert param_rules.known_layers() - builtin == set(), "parameter rules for layers that are not registered"


def test_specc_layers_are_all_registered():
    own = {name for name, obj in vars(layers).items() if inspect.isclass(obj) and obj.__module__ == layers.__name__}
    registered = {e.name for e in REGISTRY.entries("layer") if e.module == "compiler.runtime.layers"}
    assert own == registered


@pytest.mark.parametrize("kind", ["layer", "loss", "optimizer", "scheduler", "init"])
def test_every_entry_resolves_to_a_callable(kind):
    for entry in REGISTRY.entries(kind):
        assert callable(entry.resolve()), entry.name


def test_traits_are_where_other_modules_read_them():
    assert {e.name for e in REGISTRY.entries("optimizer") if e.fusable} == {"Adam", "AdamW"}
    assert {e.name for e in REGISTRY.entries("scheduler") if e.steps != "epoch"} == {
        "OneCycleLR",
        "CyclicLR",
        "ReduceLROnPlateau",
    }
    assert {e.name: e.flip_axis for e in REGISTRY.entries("transform") if e.flip_axis is not None} == {
        "RandomHorizontalFlip": -1,
        "RandomVerticalFlip": -2,
    }


def test_reference_docs_are_generated_from_the_registry():
    from conftest import ROOT

    from compiler.cli.reference import markdown

    assert (ROOT / "docs" / "reference.md").read_text() == markdown(), (
        "run: python -m compiler.cli.reference > docs/reference.md"
    )


def test_specc_list_prints_every_kind(capsys):
    from compiler.cli.commands import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("Conv2d", "CrossEntropyLoss", "Adam", "OneCycleLR", "MNIST", "RandomCrop", "kaiming_normal_"):
        assert name in out


def test_the_shipped_schema_is_current():
    """`specc schema` prints compiler/cli/specc.schema.json when its key matches (no torch import: well under 1 s)."""
    import json

    from conftest import ROOT

    from compiler.cli import schema

    key = (ROOT / "compiler" / "cli" / "specc.schema.key").read_text().strip()
    assert key == schema._cache_key(), "run: python -m compiler.cli.schema"
    assert json.loads((ROOT / "compiler" / "cli" / schema.SHIPPED).read_text()) == schema.schema()
