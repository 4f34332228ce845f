"""Blocks, loops, `if:` parts, layer defaults and `specc expand` (docs/spec-language.md §14).

The family specs (resnet, mobilenet_v2, efficientnet) are held to torchvision's constructors in both
backends: strict state dict, `torch.equal` eval outputs with randomised BatchNorm statistics, and the
same initial weights under the same seed. The language's own rules are checked on small specs.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torchvision import models

import compiler
from compiler.cli.commands import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

# (spec, --set overrides, torchvision constructor, its keyword arguments)
FAMILY = [
    ("resnet", ["vars.depth=18"], "resnet18", {}),
    ("resnet", ["vars.depth=34"], "resnet34", {}),
    ("resnet", ["vars.depth=50"], "resnet50", {}),
    pytest.param("resnet", ["vars.depth=101"], "resnet101", {}, marks=pytest.mark.slow),
    pytest.param("resnet", ["vars.depth=152"], "resnet152", {}, marks=pytest.mark.slow),
    ("mobilenet_v2", [], "mobilenet_v2", {}),
    ("mobilenet_v2", ["vars.width_mult=0.35"], "mobilenet_v2", {"width_mult": 0.35}),
    ("mobilenet_v2", ["vars.width_mult=1.4"], "mobilenet_v2", {"width_mult": 1.4}),
    ("efficientnet", [], "efficientnet_b0", {}),
    ("efficientnet", ["vars.variant=b1"], "efficientnet_b1", {}),
    *[
        pytest.param("efficientnet", [f"vars.variant=b{i}"], f"efficientnet_b{i}", {}, marks=pytest.mark.slow)
        for i in range(2, 8)
    ],
]


def _reference(name: str, kwargs: dict) -> tuple[nn.Module, dict, torch.Tensor]:
    """torchvision's model with BatchNorm statistics that matter, its state, and an input."""
    torch.manual_seed(0)
    reference = getattr(models, name)(weights=None, **kwargs)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    return reference.eval(), reference.state_dict(), torch.randn(2, 3, 64, 64, generator=generator)


def _script_model(spec, folder: Path) -> nn.Module:
    path = folder / f"{spec.name}.py"
    path.write_text(compiler.render_script(spec), encoding="utf-8")
    module_spec = importlib.util.spec_from_file_location(f"blocks_{spec.name}_{id(spec)}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    torch.manual_seed(0)
    return module.build_model()


@pytest.mark.parametrize(("spec_name", "overrides", "name", "kwargs"), FAMILY)
def test_family_member_is_torchvisions(spec_name, overrides, name, kwargs, tmp_path) -> None:
    spec = compiler.load_spec(SPECS / f"{spec_name}.yaml", overrides=overrides)
    torch.manual_seed(0)
    theirs = getattr(models, name)(weights=None, **kwargs).state_dict()
    reference, state, x = _reference(name, kwargs)
    with torch.no_grad():
        expected = reference(x)
    torch.manual_seed(0)
    for model in (compiler.build_model(spec), _script_model(spec, tmp_path)):
        ours = model.state_dict()
        assert list(ours) == list(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), "same seed, same initial weights"
        model.load_state_dict(state, strict=True)
        with torch.no_grad():
            assert torch.equal(model.eval()(x), expected)


SHIPPED = ["resnet18", "resnet50", "mobilenet_v2", "densenet121", "squeezenet1_0", "efficientnet_b0"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_graph_specs_are_short(name) -> None:
    lines = (SPECS / f"{name}.yaml").read_text().splitlines()
    code = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 45, f"{name}: {len(code)} lines"


# --------------------------------------------------------------------------- the language, on small specs


def _model(text: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return compiler.build_model(compiler.parse_spec(text, **kw))


def _problems(text: str) -> list[str]:
    with pytest.raises(compiler.SpecError) as info:
        compiler.parse_spec(text)
    return [str(p) for p in info.value.problems]


def test_loop_index_name_pattern_and_per_iteration_values() -> None:
    model = _model(
        """
name: t
input: [4]
model:
  "layer{k + 1}":
    repeat: 3
    as: k
    body: [{Linear: {out_features: 8 * 2**$k}}, {Dropout: "0.1 * $k"}]
"""
    )
    assert [name for name, _ in model.named_children()] == ["layer1", "layer2", "layer3"]
    assert [model.get_submodule(f"layer{k + 1}")[0].out_features for k in range(3)] == [8, 16, 32]
    assert model.layer3[1].p == pytest.approx(0.2)


def test_loop_over_table_rows_splices_into_a_list() -> None:
    model = _model(
        """
name: t
input: [3, 16, 16]
vars: {rows: [[8, 1, 1], [16, 2, 2]]}
model:
  - for: [c, n, s]
    in: $rows
    body:
      - repeat: $n
        as: i
        body: {Conv2d: {out_channels: $c, kernel_size: 3, padding: 1, stride: "$s if $i == 0 else 1"}}
"""
    )
    assert [(m.out_channels, m.stride) for m in model] == [(8, (1, 1)), (16, (2, 2)), (16, (1, 1))]


def test_pattern_keys_add_several_children_per_iteration_and_if_drops_one() -> None:
    model = _model(
        """
name: t
input: [4]
model:
  stages:
    for: w
    in: [8, 6, 4]
    as: k
    body:
      "dense{k}": {Linear: {out_features: $w}}
      "act{k}": {if: $k < 2, then: ReLU}
"""
    )
    assert [name for name, _ in model.named_children()] == ["dense0", "act0", "dense1", "act1", "dense2"]


def test_block_sees_its_input_shape_and_optional_parts() -> None:
    text = """
name: t
input: [4, 8, 8]
blocks:
  Res:
    params: {width: int, stride: 1}
    body:
      merge: add
      branches:
        main: {conv: {Conv2d: {out_channels: $width, kernel_size: 3, stride: $stride, padding: 1}}}
        short:
          if: $stride != 1 or $in_channels != $width
          then: {Conv2d: {out_channels: $width, kernel_size: 1, stride: $stride}}
          else: Identity
model: [{Res: {width: 4}}, {Res: {width: 8, stride: 2}}, {Res: [8]}]
"""
    model = _model(text)
    assert type(model[0]).__name__ == "Res" and not hasattr(model[0], "short")
    assert model[1].short.stride == (2, 2) and not hasattr(model[2], "short")
    assert model(torch.randn(1, 4, 8, 8)).shape == (1, 8, 4, 4)


def test_defaults_apply_in_scope_unless_the_layer_says_otherwise() -> None:
    model = _model(
        """
name: t
input: [4]
defaults: {ReLU: {inplace: true}, Linear: {bias: false}}
blocks:
  Head:
    defaults: {Linear: {bias: true}}
    body: [{Linear: [4, 2]}, ReLU]
model: [ReLU, {ReLU: {inplace: false}}, {Linear: [4, 4]}, Head]
"""
    )
    assert model[0].inplace and not model[1].inplace
    assert model[2].bias is None  # top-level default, positional arguments kept
    assert model[3][0].bias is not None and model[3][1].inplace  # the block's own default wins inside it


def test_block_kind_chosen_by_a_variable_and_nested_blocks() -> None:
    text = """
name: t
input: [4]
vars: {kind: Small}
blocks:
  Small: {params: {w: int}, body: [{Linear: {out_features: $w}}]}
  Big: {params: {w: int}, body: [{Small: {w: $w * 2}}, {Small: {w: $w}}]}
model: [{$kind: {w: 3}}]
"""
    assert _model(text)[0][0].out_features == 3
    big = _model(text, overrides=["vars.kind=Big"])
    assert [m[0].out_features for m in big[0]] == [6, 3]


def test_a_use_in_a_plain_repeat_sees_each_copys_input() -> None:
    model = _model(
        """
name: t
input: [4]
blocks:
  Grow: {body: [{Linear: {out_features: $in_channels + 1}}]}
model: [{repeat: 3, body: Grow}]
"""
    )
    assert [block[0].out_features for block in model] == [5, 6, 7]


def test_blocks_nest_within_a_bound(tmp_path) -> None:
    text = "name: t\ninput: [4]\nvars: {inner: B}\nblocks:\n  B: {body: [{$inner: {}}]}\nmodel: [B]\n"
    problems = _problems(text)
    assert any("blocks nest more than" in p for p in problems), problems


def test_recursion_is_found_before_expanding() -> None:
    problems = _problems("name: t\ninput: [4]\nblocks:\n  A: {body: [A]}\nmodel: [A]\n")
    assert any("block A uses itself (A -> A)" in p and ":4:" in p for p in problems), problems


def test_a_huge_loop_is_refused_quickly() -> None:
    text = """
name: t
input: [4]
model:
  - repeat: 10000
    as: i
    body: [{repeat: 10000, as: j, body: [ReLU, ReLU]}]
"""
    problems = _problems(text)
    assert any("expands to more than 20,000 values" in p for p in problems), problems


def test_existing_spec_keeps_its_data_untouched() -> None:
    from compiler.front.expand import expand
    from compiler.front.load import load_file
    from compiler.front.problems import Problems

    data, source = load_file(SPECS / "mnist_cnn.yaml")
    positions = dict(source.positions)
    out = expand(data, source, Problems(source))
    assert {k: v for k, v in out.items() if k != "blocks"} == data and source.positions == positions


@pytest.mark.parametrize(
    ("name", "overrides"), [("resnet", ["vars.depth=50"]), ("densenet121", []), ("efficientnet_b0", [])]
)
def test_expanded_spec_builds_the_same_model(name, overrides, tmp_path, capsys) -> None:
    assert cli_main(["expand", str(SPECS / f"{name}.yaml"), *[f"--set={o}" for o in overrides]]) == 0
    text = capsys.readouterr().out
    data = yaml.safe_load(text)
    assert "blocks" not in data and "defaults" not in data and "$" not in str(data["model"])
    written = tmp_path / f"{name}.yaml"
    written.write_text(text, encoding="utf-8")
    torch.manual_seed(0)
    expanded = compiler.build_model(compiler.load_spec(written)).state_dict()
    original = _model((SPECS / f"{name}.yaml").read_text(), overrides=overrides).state_dict()
    assert list(expanded) == list(original) and all(torch.equal(expanded[k], original[k]) for k in original)


def test_validate_does_not_import_torch_for_a_family_spec() -> None:
    code = (
        "import sys; from compiler.cli.commands import main; "
        "rc = main(['validate', 'specs/efficientnet.yaml', '--set', 'vars.variant=b7']); "
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
