"""Generated code for `blocks:` (issue 20, item 6): one class or function per block definition, written from its
parameters, called once per use; compiled and generated stay the same model (str, state dict, outputs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

import compiler
from compiler.cli.commands import main as cli_main

ROOT = Path(__file__).resolve().parent.parent


def _script(spec, folder: Path, name: str):
    path = folder / f"{name}.py"
    path.write_text(compiler.render_script(spec), encoding="utf-8")
    module_spec = importlib.util.spec_from_file_location(f"block_code_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _same_model(spec, tmp_path: Path, name: str, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    compiled = compiler.build_model(spec)
    torch.manual_seed(0)
    generated = _script(spec, tmp_path, name).build_model()
    assert str(compiled) == str(generated)
    theirs = generated.state_dict()
    assert list(compiled.state_dict()) == list(theirs)
    assert all(torch.equal(v, theirs[k]) for k, v in compiled.state_dict().items())
    with torch.no_grad():
        assert torch.equal(compiled.eval()(x), generated.eval()(x))


def test_resnet_blocks_are_one_class_and_one_function():
    text = compiler.render_script(compiler.load_spec(ROOT / "specs" / "resnet.yaml"))
    assert "class BasicBlock(nn.Module):" in text and "BasicBlock_1" not in text
    assert "    def __init__(self, in_channels, width, stride=1):" in text
    assert "def shortcut(in_channels, out, stride):" in text
    assert "    if stride != 1 or in_channels != out:" in text
    assert "        self.downsample = shortcut(in_channels, width, stride)" in text
    assert "        if self.downsample is not None:" in text
    assert "            blocks.append(BasicBlock(in_channels, 64 * 2**k, stride=2 if i == 0 and k > 0 else 1))" in text
    assert "# -> (64, 56, 56)" not in text.split("def build_model")[0], "a class shows no one use's shapes"


def test_resnet50_and_efficientnet_generated_equals_compiled(tmp_path):
    spec = compiler.load_spec(ROOT / "specs" / "resnet.yaml", overrides=["vars.depth=50"])
    text = compiler.render_script(spec)
    assert "class Bottleneck(nn.Module):" in text and "class BasicBlock" not in text
    _same_model(spec, tmp_path, "resnet50", torch.randn(2, 3, 64, 64))
    spec = compiler.load_spec(ROOT / "specs" / "efficientnet.yaml")
    text = compiler.render_script(spec)
    assert "def make_divisible(value" in text and "    hidden = make_divisible(in_channels * t, 8)" in text
    assert "def mb_conv(" not in text and "class MBConv(nn.Module):" in text  # one class: use_res_connect
    _same_model(spec, tmp_path, "efficientnet", torch.randn(2, 3, 64, 64))


LOOPED = """
name: looped
input: [4, 8, 8]
blocks:
  Stack:      # a loop whose length is a parameter: no one function fits uses of different lengths
    params: {n: int}
    body:
      - repeat: $n
        as: i
        body: {Conv2d: {out_channels: 4, kernel_size: 3, padding: 1}}
  Res:
    params: {out: int}
    body:
      merge: add
      branches:
        main: {conv: {Conv2d: {out_channels: $out, kernel_size: 3, padding: 1}}, bn: BatchNorm2d}
        skip:
          if: $in_channels != $out
          then: {Conv2d: {out_channels: $out, kernel_size: 1}}
          else: Identity
model:
  - {Stack: {n: 1}}
  - {Stack: {n: 2}}
  - {Res: {out: 4}}
  - {Res: {out: 6}}
"""


def test_a_block_that_no_one_code_fits_is_written_out_and_says_so(tmp_path):
    spec = compiler.parse_spec(LOOPED, "looped.yaml")
    text = compiler.render_script(spec)
    assert "def stack(" not in text and "no one class fits every use): block Stack." in text
    assert "class Res(nn.Module):" in text and "        self.skip = None" in text
    assert "        if in_channels != out:" in text
    _same_model(spec, tmp_path, "looped", torch.randn(2, 4, 8, 8))


DEFAULTS_FIRST = """
name: defaults_first
input: [4, 8, 8]
blocks:
  Unit:       # a parameter with a default listed before the required ones (the hostile-strings test's vit)
    params: {p: 0.0, out: int, kernel: int}
    body:
      merge: add
      branches:
        identity: Identity
        conv: [{Conv2d: {out_channels: $out, kernel_size: $kernel, padding: $kernel // 2}}, {Dropout: {p: $p}}]
  Plain:
    params: {p: 0.5, out: int}
    body: [{Conv2d: {out_channels: $out, kernel_size: 1}}, {Dropout: {p: $p}}]
model:
  - {Unit: {out: 4, kernel: 3}}
  - {Unit: {out: 4, kernel: 1, p: 0.1}}
  - {Plain: {out: 6}}
"""


def test_required_parameters_come_first_in_the_signature_whatever_the_spec_order(tmp_path):
    spec = compiler.parse_spec(DEFAULTS_FIRST, "defaults_first.yaml")
    text = compiler.render_script(spec)
    assert "def __init__(self, in_channels, out, kernel, p=0.0):" in text
    assert "def __init__(self, in_channels, out, p=0.5):" in text
    assert "Unit(4, 4, 1, p=0.1)" in text
    _same_model(spec, tmp_path, "defaults_first", torch.randn(2, 4, 8, 8))


def test_summary_names_the_block_of_every_instance(capsys):
    assert cli_main(["summary", str(ROOT / "specs" / "efficientnet.yaml")]) == 0
    out = capsys.readouterr().out
    assert "ConvBNAct: Sequential" in out and "MBBlock: Sequential" in out and "MBConv: Sequential[named]" in out
    assert "SqueezeExcitation (mul)" in out
    assert cli_main(["summary", str(ROOT / "specs" / "resnet.yaml")]) == 0
    assert "identity (Shortcut)" in capsys.readouterr().out


def test_a_short_form_argument_is_the_blocks_parameter_in_its_class():
    """`{Dropout: $p}` (the one argument, written without its name) is the class's parameter, as `{Dropout: {p: $p}}`
    is: the class is written once and each use passes its own (before, the uses were written out one by one, and
    a single use wrote the constant: ViT's `nn.Dropout(0.0)` in place of `dropout`)."""
    text = """name: short
input: [8]
blocks:
  Mlp:
    params: {width: int, p: 0.1}
    body: [{Linear: {out_features: $width}}, ReLU, {Dropout: $p}]
model:
  - {Mlp: {width: 16, p: 0.2}}
  - {Mlp: {width: 4, p: 0.3}}
"""
    script = compiler.render_script(compiler.parse_spec(text, "short.yaml"))
    assert "class Mlp(nn.Sequential):" in script and "            nn.Dropout(p),\n" in script
    assert "Mlp(8, 16, p=0.2)," in script and "Mlp(16, 4, p=0.3)," in script
    vit = compiler.render_script(compiler.load_spec("specs/vit.yaml"))
    assert "self.dropout = nn.Dropout(dropout)" in vit and "nn.Dropout(0.0)" not in vit
