"""A block whose `if:` adds the input or not is one class with ``use_res_connect`` (issue 20, item 6), as
torchvision writes MobileNetV2's ``InvertedResidual`` and EfficientNet's ``MBConv``; a body that does not fit
stays a class and a function. Compiled and generated stay the same model (§8's comparison)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

import compiler
from compiler.workflow.check import compare, import_script

ROOT = Path(__file__).resolve().parent.parent

FLAG_BLOCKS = [("mobilenet_v2", "InvertedResidual", "inverted_residual"), ("efficientnet", "MBConv", "mb_conv")]
FLAG_BLOCKS.append(("efficientnet_b0", "MBConv", "mb_conv"))

SMALL = """
name: flags
input: [8, 16, 16]
blocks:
  Res:
    params: {out: int, stride: int}
    body:
      if: $stride == 1 and $in_channels == $out
      then:
        merge: add
        branches:
          identity: Identity
          main:
            conv: {Conv2d: {out_channels: $out, kernel_size: 3, stride: $stride, padding: 1}}
            bn: BatchNorm2d
            act: ReLU
      else:
        conv: {Conv2d: {out_channels: $out, kernel_size: 3, stride: $stride, padding: 1}}
        bn: BatchNorm2d
        act: OTHER
model:
  - {Res: {out: 8, stride: 1}}
  - {Res: {out: 16, stride: 2}}
  - {Res: {out: 16, stride: 1}}
  - Flatten
  - {Linear: {out_features: 4}}
"""


def _defined(text: str) -> tuple[dict[str, ast.ClassDef], set[str]]:
    tree = ast.parse(text)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    return classes, {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def _script(text: str, folder: Path, name: str):
    return import_script(text, f"block_flags_{name}", str(folder))


def _assert_same(spec) -> None:
    checks = compare(spec, steps=2)
    assert checks and all(check.ok for check in checks), [(c.name, c.detail) for c in checks if not c.ok]


@pytest.mark.parametrize(("name", "cls", "function"), FLAG_BLOCKS)
def test_generated_script_writes_one_class_with_use_res_connect(name, cls, function) -> None:
    text = (ROOT / "generated" / f"{name}.py").read_text(encoding="utf-8")
    classes, functions = _defined(text)
    assert function not in functions and cls in classes
    source = ast.get_source_segment(text, classes[cls])
    assert source.count("self.use_res_connect = ") == 1 and "        if self.use_res_connect:\n" in source
    assert sum("use_res_connect" in ast.get_source_segment(text, c) for c in classes.values()) == 1
    assert text == compiler.render_script(compiler.load_spec(ROOT / "specs" / f"{name}.yaml"))


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0"])
def test_compiled_and_generated_match_at_64(name) -> None:
    """str(model), state dict (bitwise, same seed) and outputs in eval and train mode (stochastic depth)."""
    _assert_same(compiler.load_spec(ROOT / "specs" / f"{name}.yaml", overrides=["input=[3, 64, 64]"]))


def test_efficientnet_stochastic_depth_is_off_without_the_add() -> None:
    spec = compiler.load_spec(ROOT / "specs" / "efficientnet.yaml", overrides=["input=[3, 64, 64]"])
    assert 'ops.StochasticDepth(p=p if self.use_res_connect else 0.0, mode="row")' in compiler.render_script(spec)
    model = compiler.build_model(spec)
    blocks = [m for m in model.modules() if type(m).__name__ == "MBConv"]
    assert len(blocks) == 16 and sum(b.use_res_connect for b in blocks) == 9
    assert all((b.stochastic_depth.p > 0) == b.use_res_connect for b in blocks[1:])  # the first has p = 0


def test_mobilenet_v2_is_torchvisions_in_both_backends(tmp_path) -> None:
    spec = compiler.load_spec(ROOT / "specs" / "mobilenet_v2.yaml", overrides=["input=[3, 64, 64]"])
    torch.manual_seed(0)
    reference = models.mobilenet_v2(weights=None)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    x = torch.randn(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        expected = reference.eval()(x)
    generated = _script(compiler.render_script(spec), tmp_path, "mobilenet_v2").build_model()
    for model in (compiler.build_model(spec), generated):
        flags = [m.use_res_connect for m in model.features if type(m).__name__ == "InvertedResidual"]
        assert flags == [m.use_res_connect for m in reference.features[1:-1]]
        model.load_state_dict(reference.state_dict(), strict=True)
        with torch.no_grad():
            assert torch.equal(model.eval()(x), expected)


def test_a_chain_on_each_side_is_one_class() -> None:
    spec = compiler.parse_spec(SMALL.replace("OTHER", "ReLU"))
    text = compiler.render_script(spec)
    classes, functions = _defined(text)
    assert "res" not in functions and "use_res_connect" in ast.get_source_segment(text, classes["Res"])
    assert "self.bn = nn.BatchNorm2d(out)" in text, "one size for both sides: out equals in_channels with the add"
    assert "        x = self.act(x)\n        return x\n" in text
    model = compiler.build_model(spec)
    assert [type(m).__name__ for m in model[:3]] == ["Res"] * 3
    assert [m.use_res_connect for m in model[:3]] == [True, False, True]
    _assert_same(spec)


@pytest.mark.parametrize(
    "change",
    [
        ("act: OTHER", "act: ReLU6"),  # another layer on the other side
        ("act: OTHER", "activation: ReLU"),  # another name
        ("        act: OTHER\n", ""),  # a child fewer
        ("merge: add", "merge: mul"),  # not a residual add
        ("identity: Identity", "identity: {Conv2d: {out_channels: $out, kernel_size: 1}}"),  # no input added
        ("act: ", "use_res_connect: "),  # a child the flag's name
    ],
)
def test_a_body_that_does_not_fit_stays_a_class_and_a_function(change) -> None:
    spec = compiler.parse_spec(SMALL.replace(*change).replace("OTHER", "ReLU"))
    script = compiler.render_script(spec)
    classes, functions = _defined(script)
    assert "if self.use_res_connect:" not in script and "res" in functions and "Res" in classes
    _assert_same(spec)
