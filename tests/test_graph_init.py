"""A graph node's own `init:` and its `keep: false` steps (§15): torchvision's order of construction.

torchvision's classes end ``__init__`` with a loop over ``self.modules()``, and ``IntermediateLayerGetter`` keeps a
built model's stages but not its head, so a parent's random draws come after a child's whole construction and
initialisation, the dropped head's draws included. These tests hold both backends to a hand-written model built
in that order under one seed, and check what the generated class says.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import compiler
from compiler.workflow.check import import_script

STAGED = """name: staged
input: [3, 16, 16]
model:
  graph:
    - body:
        graph:
          - conv: {Conv2d: {out_channels: 8, kernel_size: 3}}
          - {pool: {AdaptiveAvgPool2d: 1}, keep: false}
          - {flatten: Flatten, keep: false}
          - {fc: {Linear: {out_features: 10}}, keep: false}
        init:
          - {type: Conv2d, weight: {kaiming_normal_: {mode: fan_out}}}
          - {path: fc, weight: {normal_: {std: 0.01}}, bias: zeros_}
    - head: {Conv2d: {out_channels: 4, kernel_size: 1}}
init:
  - {path: head, weight: {uniform_: {a: -0.1, b: 0.1}}}
"""


def _reference_state() -> dict:
    """The same model by hand, in torchvision's order: the body whole (its fc too), its loop, then the head."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3)
    fc = nn.Linear(8, 10)  # (the pool and flatten before it draw nothing)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    nn.init.normal_(fc.weight, std=0.01), nn.init.zeros_(fc.bias)
    head = nn.Conv2d(8, 4, 1)
    nn.init.uniform_(head.weight, a=-0.1, b=0.1)
    return {
        "body.conv.weight": conv.weight,
        "body.conv.bias": conv.bias,
        "head.weight": head.weight,
        "head.bias": head.bias,
    }


def _both(text: str, tmp_path, name: str) -> tuple:
    spec = compiler.parse_spec(text, f"{name}.yaml")
    script = import_script(compiler.render_script(spec), f"{name}_gen", str(tmp_path))
    models = []
    for make in (lambda: compiler.build_model(spec), script.build_model):
        torch.manual_seed(0)
        models.append(make())
    return spec, models


def test_a_graph_nodes_init_runs_when_it_is_built_and_dropped_modules_draw(tmp_path):
    expected = _reference_state()
    _, models = _both(STAGED, tmp_path, "staged")
    compiled, generated = models
    assert str(compiled) == str(generated)
    for model in models:
        state = model.state_dict()
        assert list(state) == list(expected)  # the dropped pool, flatten and fc are gone
        assert all(torch.equal(state[k], v) for k, v in expected.items())
        assert not hasattr(model.body, "fc")
        x = torch.randn(2, 3, 16, 16)
        assert model(x).shape == (2, 4, 14, 14)  # the body returns its last kept value: conv
    torch.fx.symbolic_trace(compiled)  # the dropped steps are not in the forward


def test_the_generated_class_ends_its_init_as_torchvision_does():
    text = compiler.render_script(compiler.parse_spec(STAGED, "staged.yaml"))
    assert "    def __init__(self, conv, pool, flatten, fc):\n" in text
    assert (
        "        self.fc = fc\n"
        "        for name, module in self.named_modules():  # the node's `init:` rules\n"
        "            if isinstance(module, nn.Conv2d):\n"
        '                nn.init.kaiming_normal_(module.weight, mode="fan_out")\n'
        '            elif fnmatch.fnmatchcase(name, "fc"):\n'
    ) in text
    assert (
        "        del self.pool, self.flatten, self.fc  # built and initialised, then dropped (`keep: false`)\n" in text
    )
    assert "fc=nn.Linear(in_features=8, out_features=10),  # -> (10,), in_features inferred" in text
    assert "import fnmatch\n" in text and "init_weights(model)" in text  # the top-level rule stays a function


def test_summary_and_counts_leave_dropped_modules_out():
    model = compiler.lower_spec(compiler.parse_spec(STAGED, "staged.yaml")).model
    assert model.params == 3 * 8 * 9 + 8 + 8 * 4 + 4
    assert [layer.path for layer in model.layers()] == ["body.conv", "head"]


BLOCK = """name: stages
input: [3, 8, 8]
blocks:
  Stage:
    params: {width: int}
    body:
      graph:
        - conv: {Conv2d: {out_channels: $width, kernel_size: 3, padding: 1}}
        - probe: {Conv2d: {out_channels: 2, kernel_size: 1}}
          keep: false
      init:
        - {type: Conv2d, weight: kaiming_normal_, bias: zeros_}
model:
  - {Stage: {width: 4}}
  - {Stage: {width: 6}}
"""


def test_a_block_whose_graph_body_has_init_is_one_class(tmp_path):
    text = compiler.render_script(compiler.parse_spec(BLOCK, "stages.yaml"))
    assert text.count("class Stage(nn.Module):") == 1
    assert "self.probe = nn.Conv2d(" in text and "del self.probe" in text
    _, (compiled, generated) = _both(BLOCK, tmp_path, "stages")
    assert str(compiled) == str(generated)
    first, second = compiled.state_dict(), generated.state_dict()
    assert list(first) == ["0.conv.weight", "0.conv.bias", "1.conv.weight", "1.conv.bias"]
    assert all(torch.equal(first[k], second[k]) for k in first)
    # by hand: each stage's conv, its probe, their loop (the probe's draws too), then the probe dropped
    torch.manual_seed(0)
    for k, (c_in, width) in enumerate([(3, 4), (4, 6)]):
        conv, probe = nn.Conv2d(c_in, width, 3, padding=1), nn.Conv2d(width, 2, 1)
        for m in (conv, probe):
            nn.init.kaiming_normal_(m.weight), nn.init.zeros_(m.bias)
        assert torch.equal(first[f"{k}.conv.weight"], conv.weight) and not first[f"{k}.conv.bias"].any()


def test_a_step_named_keep_is_still_a_step():
    """`keep:` is an option only beside a child: alone it names the step, as it did before the option existed."""
    spec = compiler.parse_spec(
        "name: k\ninput: [4]\nmodel:\n  graph:\n    - keep: {Linear: {out_features: 2}}\n", "k.yaml"
    )
    assert list(compiler.build_model(spec).state_dict()) == ["keep.weight", "keep.bias"]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("    - {call: enc, keep: false}\n", "`keep: false` drops a step's own child"),
        ("    - {head: {Linear: 2}, keep: false, when: training}\n", "a step with `keep: false` never runs"),
    ],
)
def test_keep_mistakes_are_located(steps, message):
    text = "name: k\ninput: [4]\nmodel:\n  modules: {enc: {Linear: 4}}\n  graph:\n" + steps
    with pytest.raises(compiler.SpecError) as err:
        compiler.parse_spec(text, "k.yaml")
    assert "k.yaml:6:" in str(err.value) and message in str(err.value) and "Fix:" in str(err.value)


def test_a_value_only_dropped_steps_read_is_unused():
    text = (
        "name: t\ninput: [4]\nmodel:\n  graph:\n    - a: {Linear: {out_features: 3}}\n"
        "    - b: {Linear: {out_features: 2}}\n      from: x\n    - {d: Flatten, from: a, keep: false}\n  output: b\n"
    )
    with pytest.raises(compiler.SpecError, match=r"t.yaml:5:7: .*value 'a' is never used"):
        compiler.parse_spec(text, "t.yaml")
