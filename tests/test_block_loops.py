"""Generated code that reads like torchvision's (issue 20, item 6): a spec loop over a table stays a Python ``for``
in ``build_model`` (torchvision's ``_make_layer``), and every block definition whose body is always modules is one
class (an ``nn.Sequential`` subclass for a list body, torchvision's ``Conv2dNormActivation``) in both backends."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

import compiler

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def _text(name: str, overrides: list[str] | None = None) -> str:
    return compiler.render_script(compiler.load_spec(SPECS / f"{name}.yaml", overrides=overrides or []))


def _function(text: str, name: str) -> ast.FunctionDef:
    tree = ast.parse(text)
    return next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name)


def _assigned(function: ast.FunctionDef) -> set[str]:
    return {
        t.id for node in ast.walk(function) if isinstance(node, ast.Assign) for t in node.targets if hasattr(t, "id")
    }


def _load(text: str, folder: Path, name: str):
    path = folder / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    module_spec = importlib.util.spec_from_file_location(f"block_loops_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_resnet_stages_are_built_in_a_loop(depth) -> None:
    build = _function(_text("resnet", [f"vars.depth={depth}"]), "build_model")
    loops = [node for node in ast.walk(build) if isinstance(node, ast.For)]
    assert len(loops) == 2, "the stages' loop and, inside it, the blocks' loop"
    assert ast.unparse(loops[0].iter) == "enumerate(layers)" and ast.unparse(loops[1].iter) == "range(n)"
    assert not {"layer1", "layer2", "layer3", "layer4"} & _assigned(build), "no stage written out"
    source = ast.unparse(build)
    block = "BasicBlock" if depth < 50 else "Bottleneck"
    assert f"blocks.append({block}(in_channels, 64 * 2 ** k, stride=2 if i == 0 and k > 0 else 1))" in source
    assert f"in_channels = 64 * 2 ** k{' * 4' if depth >= 50 else ''}" in source, "torchvision's inplanes"


@pytest.mark.parametrize(("name", "overrides"), [("mobilenet_v2", ["vars.width_mult=0.75"]), ("efficientnet", [])])
def test_feature_tables_are_loops(name, overrides) -> None:
    text = _text(name, overrides)
    build = _function(text, "build_model")
    loops = [node for node in ast.walk(build) if isinstance(node, ast.For)]
    assert len(loops) == 2
    assert ast.unparse(loops[0].iter) in ("settings", "enumerate(stages)")
    assert "features = nn.Sequential(*features)" in text


@pytest.mark.parametrize("depth", [18, 50])
def test_generated_resnet_is_torchvisions(depth, tmp_path) -> None:
    """The looped script's model against torchvision's: strict keys, same-seed weights, equal eval outputs."""
    text = _text("resnet", [f"vars.depth={depth}"])
    assert "for k, n in enumerate(layers):" in text
    torch.manual_seed(0)
    reference = getattr(models, f"resnet{depth}")(weights=None).eval()
    torch.manual_seed(0)
    model = _load(text, tmp_path, f"resnet{depth}").build_model().eval()
    theirs, ours = reference.state_dict(), model.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs), "same seed, same initial weights"
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
        model.load_state_dict(reference.state_dict(), strict=True)
        x = torch.randn(2, 3, 64, 64, generator=generator)
        assert torch.equal(model(x), reference(x))


def _classes(text: str) -> dict[str, str]:
    """Each class of the script and its base's text."""
    tree = ast.parse(text)
    return {node.name: ast.unparse(node.bases[0]) for node in tree.body if isinstance(node, ast.ClassDef)}


def _functions(text: str) -> set[str]:
    return {node.name for node in ast.parse(text).body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize(
    ("name", "classes", "functions"),
    [
        # Shortcut may be None (the input passes through): a function, as torchvision's downsample
        ("resnet", {"BasicBlock": "nn.Module"}, {"shortcut"}),
        # InvertedResidual's `if:` adds the input or not: one class with use_res_connect, as torchvision's
        (
            "mobilenet_v2",
            {"ConvBNReLU": "nn.Sequential", "Residual": "nn.Sequential", "InvertedResidual": "nn.Module"},
            set(),
        ),
        ("densenet121", {"DenseLayer": "nn.Module", "Transition": "nn.Sequential"}, set()),
        (
            "efficientnet",
            {
                "ConvBNAct": "nn.Sequential",
                "MBBlock": "nn.Sequential",
                "SqueezeExcitation": "nn.Module",
                "MBConv": "nn.Module",
            },
            set(),
        ),
    ],
)
def test_a_class_per_block_definition(name, classes, functions) -> None:
    text = _text(name)
    assert _classes(text) == classes
    assert _functions(text) - {"build_model", "init_weights", "make_divisible"} == functions


def test_compiled_blocks_have_the_scripts_class_names(tmp_path) -> None:
    spec = compiler.load_spec(SPECS / "mobilenet_v2.yaml", overrides=["vars.width_mult=0.5"])
    torch.manual_seed(0)
    compiled = compiler.build_model(spec)
    torch.manual_seed(0)
    generated = _load(compiler.render_script(spec), tmp_path, "mobilenet_half").build_model()
    assert type(compiled.features[0]).__name__ == "ConvBNReLU" and isinstance(compiled.features[0], nn.Sequential)
    assert type(compiled.features[2].conv).__name__ == "Residual"
    assert str(compiled) == str(generated)
    theirs = generated.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in compiled.state_dict().items())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(compiled.eval()(x), generated.eval()(x))


SMALL = """
name: small
vars: {widths: [8, 16], num_classes: 3}
input: [3, 16, 16]
blocks:
  ConvBN:
    params: {out: int, stride: 1}
    body:
      - Conv2d: {out_channels: $out, kernel_size: 3, stride: $stride, padding: 1, bias: false}
      - BatchNorm2d
      - ReLU
model:
  stem: {ConvBN: {out: 8}}
  features:
    - for: w
      in: $widths
      as: k
      body:
        - repeat: 2
          as: i
          body: {ConvBN: {out: $w, stride: "2 if $i == 0 and $k > 0 else 1"}}
  pool: {AdaptiveAvgPool2d: 1}
  flatten: Flatten
  fc: {Linear: {out_features: $num_classes}}
"""


def _same(spec, folder: Path, name: str) -> str:
    text = compiler.render_script(spec)
    torch.manual_seed(0)
    compiled = compiler.build_model(spec)
    torch.manual_seed(0)
    generated = _load(text, folder, name).build_model()
    assert str(compiled) == str(generated)
    theirs = generated.state_dict()
    assert list(compiled.state_dict()) == list(theirs)
    assert all(torch.equal(v, theirs[k]) for k, v in compiled.state_dict().items())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(compiled.eval()(x), generated.eval()(x))
    return text


def test_a_small_table_loop_is_a_loop_in_both_backends(tmp_path) -> None:
    text = _same(compiler.parse_spec(SMALL), tmp_path, "small")
    assert "    for k, w in enumerate(widths):" in text
    assert "            features.append(ConvBN(in_channels, w, stride=2 if i == 0 and k > 0 else 1))" in text
    assert "class ConvBN(nn.Sequential):" in text


def test_a_loop_whose_copies_differ_is_written_out(tmp_path) -> None:
    """An `if:` item in the body: the copies are not one code, so they are written out as before."""
    spec = compiler.parse_spec(
        SMALL.replace(
            'body: {ConvBN: {out: $w, stride: "2 if $i == 0 and $k > 0 else 1"}}',
            'body: {if: $i == 0, then: {ConvBN: {out: $w, stride: "2 if $k > 0 else 1"}}, else: {Conv2d: [$w, $w, 1]}}',
        )
    )
    text = _same(spec, tmp_path, "small_if")
    assert not any(isinstance(node, ast.For) for node in ast.walk(_function(text, "build_model")))
    assert "ConvBN(8, 16, stride=2)" in text


def test_named_children_of_a_loop_are_a_dict_in_the_loop(tmp_path) -> None:
    text = SMALL.replace(
        "  features:\n", '  "block{i + 1}": {repeat: 3, as: i, body: {ConvBN: {out: "8 * ($i + 1)"}}}\n  features:\n'
    )
    text = _same(compiler.parse_spec(text), tmp_path, "small_named")
    assert "    for i in range(3):" in text
    assert '        stages[f"block{i + 1}"] = ConvBN(in_channels, 8 * (i + 1))' in text
    assert "block1 = " not in text and "block2=" not in text and "**stages" in text


def test_a_loop_variable_that_would_hide_a_variable_is_written_out(tmp_path) -> None:
    """`k` is also one of the spec's variables: a Python loop over `k` would hide it, so the copies are written."""
    spec = compiler.parse_spec(SMALL.replace("num_classes: 3}", "num_classes: 3, k: 0}"))
    text = _same(spec, tmp_path, "small_hidden")
    assert not any(isinstance(node, ast.For) for node in ast.walk(_function(text, "build_model")))
