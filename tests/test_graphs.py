"""Merge blocks, functional layers and init rules: shapes, both backends, the code a person reads."""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

import compiler

RESIDUAL = """
name: res
input: [4, 8, 8]
model:
  stem: {Conv2d: {out_channels: 8, kernel_size: 3, padding: 1}}
  block:
    merge: add
    class: BasicBlock
    branches:
      main: {conv1: {Conv2d: {out_channels: 16, kernel_size: 3, stride: 2, padding: 1}}, bn1: BatchNorm2d,
             relu: ReLU, conv2: {Conv2d: {out_channels: 16, kernel_size: 3, padding: 1}}}
      downsample: [{Conv2d: {out_channels: 16, kernel_size: 1, stride: 2}}]
    then: {relu_out: ReLU}
  fire:
    merge: cat
    before: {squeeze: {Conv2d: {out_channels: 4, kernel_size: 1}}}
    branches: {a: {a: {Conv2d: {out_channels: 3, kernel_size: 1}}}, b: {b: {Conv2d: {out_channels: 5, kernel_size: 1}}},
               skip: Identity}
  gate: {merge: mul, branches: {x: Identity, s: [{AdaptiveAvgPool2d: 1}, Sigmoid]}}
  pool: {Mean: {dim: [2, 3]}}
  fc: {Linear: {out_features: 3}}
init:
  - {path: "block.conv2", weight: zeros_}
  - {type: Conv2d, weight: {kaiming_normal_: {mode: fan_out, nonlinearity: relu}}, bias: zeros_}
"""


def _script(spec, tmp_path):
    path = tmp_path / f"{spec.name}.py"
    path.write_text(compiler.render_script(spec))
    module_spec = importlib.util.spec_from_file_location(spec.name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_merge_shapes_state_dict_keys_and_outputs(tmp_path):
    spec = compiler.parse_spec(RESIDUAL, "res.yaml")
    program = compiler.lower_spec(spec)
    merges = {m.name: m for m in program.model.merges()}
    assert merges["block"].out_shape == (16, 4, 4)
    assert merges["fire"].out_shape == (3 + 5 + 4, 4, 4)  # cat sums the channels; Identity is the squeezed input
    assert merges["gate"].out_shape == (12, 4, 4)  # (12, 1, 1) * (12, 4, 4) broadcasts
    torch.manual_seed(0)
    compiled = compiler.build_model(spec)
    keys = set(compiled.state_dict())
    assert {"block.conv1.weight", "block.downsample.0.weight", "fire.squeeze.weight", "fire.a.weight"} <= keys
    torch.manual_seed(0)
    generated = _script(spec, tmp_path).build_model()
    assert str(compiled) == str(generated)
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(compiled.eval()(x), generated.eval()(x))
    assert torch.count_nonzero(compiled.block.conv2.weight) == 0  # the path rule came first
    assert torch.count_nonzero(compiled.block.conv1.weight) > 0


def test_generated_merge_class_reads_like_torchvision():
    text = compiler.render_script(compiler.parse_spec(RESIDUAL, "res.yaml"))
    assert "class BasicBlock(nn.Module):" in text
    assert "    def __init__(self, conv1, bn1, relu, conv2, downsample, relu_out):" in text
    assert "        return self.relu_out(main + downsample)" in text
    assert "        return torch.cat([a, b, x], dim=1)" in text
    assert "def init_weights(model):" in text and 'fnmatch.fnmatchcase(name, "block.conv2")' in text


def test_a_stack_without_merges_is_exactly_sequential():
    spec = compiler.load_spec("specs/mnist_cnn.yaml")
    model = compiler.build_model(spec)
    assert type(model) is nn.Sequential and type(model.conv1) is nn.Sequential


def test_lstm_output_picked_and_last_step_selected(tmp_path):
    spec = compiler.parse_spec(
        "name: seq\ninput: [20, 8]\nmodel:\n  - LSTM: {hidden_size: 16, batch_first: true}\n"
        "  - TupleItem: 0\n  - Select: {dim: 1, index: -1}\n  - Linear: {out_features: 4}\n",
        "seq.yaml",
    )
    assert compiler.lower_spec(spec).model.output_shape == (4,)
    torch.manual_seed(0)
    model = compiler.build_model(spec)
    torch.manual_seed(0)
    script_model = _script(spec, tmp_path).build_model()
    for length in (20, 7):  # the model takes any sequence length
        x = torch.randn(3, length, 8)
        assert model(x).shape == (3, 4)
        assert torch.equal(model(x), script_model(x))


REPEATED_PARTS = """
name: rep
input: [8]
model:
  - Linear: {out_features: 16}
  - merge: add
    branches:
      main: {repeat: 2, body: [{Linear: {out_features: 16}}, ReLU]}
      skip: Identity
    then: {repeat: 2, body: [{Linear: {out_features: 16}}, Tanh]}
  - Linear: {out_features: 3}
"""


def test_a_repeat_as_a_merge_part_is_a_sequential_of_its_copies(tmp_path):
    """Found by the fuzzer: a `repeat:` as a branch (or before/then) was lowered as a layer and escaped as an
    AttributeError. It is a Sequential of the copies, the same in both backends."""
    spec = compiler.parse_spec(REPEATED_PARTS, "rep.yaml")
    torch.manual_seed(0)
    compiled = compiler.build_model(spec)
    assert [type(m).__name__ for m in compiled[1].main] == ["Linear", "ReLU", "Linear", "ReLU"]
    assert [type(m).__name__ for m in compiled[1].then] == ["Linear", "Tanh", "Linear", "Tanh"]
    torch.manual_seed(0)
    generated = _script(spec, tmp_path).build_model()
    assert str(compiled) == str(generated)
    x = torch.randn(5, 8)
    assert torch.equal(compiled(x), generated(x))
    assert torch.allclose(compiled(x), compiled[2](compiled[1].then(compiled[1].main(compiled[0](x)) + compiled[0](x))))


def test_an_init_path_rule_that_matches_a_container_skips_it_in_both_backends(tmp_path):
    """`path: "stem*"` matches the Sequential `stem` too, which has no weight: both backends skip it."""
    from compiler.workflow.check import compare

    text = (
        "name: r\ninput: [3, 8, 8]\nmodel:\n  stem: [{Conv2d: {out_channels: 4, kernel_size: 3}}]\n"
        'init:\n  - {path: "stem*", weight: zeros_}\n'
    )
    spec = compiler.parse_spec(text, "r.yaml")
    assert 'if getattr(module, "weight", None) is not None:' in compiler.render_script(spec)
    assert all(check.ok for check in compare(spec))
    assert not compiler.build_model(spec).stem[0].weight.any()
