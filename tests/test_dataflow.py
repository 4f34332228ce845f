"""Graph nodes (§15): named values, steps, operations, parameters and buffers outside modules.

The grammar, the shape of every edge, the state-dict keys of parameters and buffers, and both backends:
the compiled module and the generated script's class are equal (`str`, same-seed weights bitwise,
outputs). Located errors are in the invalid corpus (tests/invalid/graph_*.yaml); a few more are here.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import compiler
from compiler.errors import SpecError

EVERY_OP = """
name: every_op
input: [4, 6]
model:
  pre: {Linear: [6, 6]}
  mix:
    class: Mix
    params:
      scale: {shape: [1, 1, 6], init: ones_}
      token: {shape: [1, 1, 6], init: {normal_: {std: 0.5}}}
    buffers:
      offset: {shape: [6], init: {constant_: {val: 0.25}}}
      counts: {shape: [2], dtype: int64}
    graph:
      - a: {Linear: [6, 6]}
      - b: {Linear: [6, 6]}
        from: x
      - {mul: [a, scale], as: scaled}
      - {sub: [scaled, b], as: diff}
      - {div: [diff, scale], as: ratio}
      - {add: [ratio, offset, x], as: total}
      - t: {Transpose: [1, 2]}
        from: b
      - {matmul: [total, t], as: attention}
      - {expand_batch: token, as: tokens}
      - {cat: [tokens, total], dim: 1, as: joined}
      - {stack: [a, b], dim: 3, as: both}
      - flat_both: {Flatten: {start_dim: 2}}
        from: both
      - project: {Linear: [12, 6]}
      - {add: [joined, joined], as: doubled}
      - pool: {Mean: {dim: 1}}
        from: doubled
      - pool_project: {Mean: {dim: 1}}
        from: project
      - pool_attention: {Mean: {dim: 2}}
        from: attention
      - fit: {Linear: [4, 6]}
      - {mul: [pool, pool_project]}
    output: fit
"""


def _script(spec, tmp_path, name="graph_script"):
    path = tmp_path / f"{name}.py"
    path.write_text(compiler.render_script(spec))
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        compiler.lower_spec(compiler.parse_spec(text, "g.yaml"))
    return [str(p) for p in info.value.problems]


def _both(text: str, tmp_path, x: torch.Tensor):
    """The compiled and generated models under seed 0, checked equal; the compiled one is returned."""
    spec = compiler.parse_spec(text, "g.yaml")
    torch.manual_seed(0)
    compiled = compiler.build_model(spec)
    torch.manual_seed(0)
    generated = _script(spec, tmp_path).build_model()
    assert str(compiled) == str(generated)
    assert list(compiled.state_dict()) == list(generated.state_dict())
    for (key, a), b in zip(compiled.state_dict().items(), generated.state_dict().values()):
        assert torch.equal(a, b), key
    compiled.eval(), generated.eval()
    with torch.no_grad():
        assert torch.equal(compiled(x), generated(x))
    return compiled


def test_a_value_no_step_reads_is_an_error():
    problems = _problems(EVERY_OP)
    assert len(problems) == 1 and "the value of the mul step (line 39) is never used" in problems[0], problems


def test_every_operation_shapes_and_backends(tmp_path):
    text = EVERY_OP.replace(
        "      - {mul: [pool, pool_project]}\n    output: fit\n",
        "      - {mul: [pool, pool_project], as: product}\n      - {add: [fit, product]}\n",
    )
    program = compiler.lower_spec(compiler.parse_spec(text, "g.yaml"))
    mix = next(program.model.graphs())
    shapes = {out: step.shapes[0] for step in mix.steps for out in step.outputs}
    assert shapes["total"] == ("N", 4, 6) and shapes["attention"] == ("N", 4, 4)
    assert shapes["joined"] == ("N", 5, 6) and shapes["both"] == ("N", 4, 6, 2)
    assert shapes["project"] == ("N", 4, 6) and mix.out_shape == (6,)
    model = _both(text, tmp_path, torch.randn(3, 4, 6))
    keys = list(model.state_dict())
    assert {"mix.scale", "mix.token", "mix.offset", "mix.counts", "mix.a.weight", "mix.project.bias"} <= set(keys)
    assert [name for name, _ in model.mix.named_parameters(recurse=False)] == ["scale", "token"]
    assert [name for name, _ in model.mix.named_buffers(recurse=False)] == ["offset", "counts"]
    assert model.mix.counts.dtype == torch.int64 and torch.equal(model.mix.offset, torch.full((6,), 0.25))
    assert [name for name, _ in model.mix.named_children()][:3] == ["a", "b", "t"]  # step order
    assert program.model.params == sum(p.numel() for p in model.parameters())


RESIDUAL = """
name: res
input: [8]
model:
  graph:
    - fc1: {Linear: [8, 8]}
    - act: ReLU
    - fc2: {Linear: [8, 8]}
    - {add: [x, fc2]}
    - head: {Linear: [8, 2]}
"""


def test_a_model_level_graph_is_the_root_module(tmp_path):
    model = _both(RESIDUAL, tmp_path, torch.randn(5, 8))
    assert type(model).__name__ == "Model" and [n for n, _ in model.named_children()] == ["fc1", "act", "fc2", "head"]
    x = torch.randn(5, 8)
    assert torch.equal(model(x), model.head(x + model.fc2(model.act(model.fc1(x)))))
    text = compiler.render_script(compiler.parse_spec(RESIDUAL, "g.yaml"))
    assert "        add = x + fc2\n        return self.head(add)" in text


LSTM = """
name: seq
input: [7, 4]
model:
  graph:
    - lstm: {LSTM: {input_size: 4, hidden_size: 6, batch_first: true}}
      as: [out, _]
    - last: {Select: {dim: 1, index: -1}}
    - fc: {Linear: [6, 3]}
"""


def test_a_tuple_output_unpacked_by_name(tmp_path):
    _both(LSTM, tmp_path, torch.randn(2, 7, 4))
    problems = _problems(LSTM.replace("      as: [out, _]\n", ""))
    assert "'lstm' is a tuple of 2 items, not a tensor" in problems[0]


BLOCK = """
name: blk
input: [6, 8]
blocks:
  PreNorm:
    params: {heads: int}
    body:
      params: {gamma: {shape: [8], init: {normal_: {std: 0.1}}}}
      graph:
        - norm: {LayerNorm: 8}
        - attn: {MultiheadAttention: {embed_dim: 8, num_heads: $heads, batch_first: true}}
          from: [norm, norm, norm]
          as: [y, _]
        - {mul: [y, gamma], as: scaled}
        - {add: [x, scaled]}
model:
  - {PreNorm: {heads: 2}}
  - {PreNorm: {heads: 4}}
  - {Mean: {dim: 1}}
"""


def test_a_block_whose_body_is_a_graph(tmp_path):
    model = _both(BLOCK, tmp_path, torch.randn(3, 6, 8))
    assert type(model[0]).__name__ == "PreNorm" and model[1].attn.num_heads == 4
    text = compiler.render_script(compiler.parse_spec(BLOCK, "g.yaml"))
    assert text.count("class PreNorm(nn.Module):") == 1  # written once, from its parameters
    assert "    def __init__(self, in_channels, heads):" in text and "num_heads=heads" in text
    assert "nn.init.normal_(self.gamma, std=0.1)" in text and "PreNorm(6, 4)" in text
    assert not torch.equal(model[0].gamma, model[1].gamma)  # each use draws its own


def test_a_graph_in_a_merge_branch_and_a_graph_inside_a_graph(tmp_path):
    text = """
name: nest
input: [8]
model:
  - merge: add
    branches:
      main: {graph: [{inner: {graph: [{fc: {Linear: [8, 8]}}, {mul: [x, fc]}]}}, {sub: [inner, x]}]}
      skip: Identity
"""
    model = _both(text, tmp_path, torch.randn(2, 8))
    assert "0.main.inner.fc.weight" in model.state_dict()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("{add: [x, fc2]}", "{add: [x, fc2], as: x}"), "value 'x' is already defined"),
        (("- act: ReLU", "- act: ReLU\n      from: [fc1, fc1]"), "act takes one value, got 2"),
        (("- head:", "- {matmul: [x, fc2]}\n    - head:"), "would contract the batch axis"),
        (("model:\n  graph:", "model:\n  params: {p: {shape: [2], dtype: int64}}\n  graph:"), "only floating-point"),
        (("{add: [x, fc2]}", "{cat: [x, fc2], dim: 0}"), "along dim 0 would join the batch axis"),
        (("{add: [x, fc2]}", "{add: [x, fc2], dim: 1}"), "`dim:` is for cat and stack, not add"),
        (("{add: [x, fc2]}", "{add: x}"), "add takes a list of two or more values"),
        (("- fc2: {Linear: [8, 8]}", "- fc2: {Linear: [8, 8]}\n      as: [a, b]"), "fc2 returns one tensor"),
        (("- act: ReLU", "- graph: ReLU"), "block name 'graph' is reserved for graph nodes"),
        (("model:\n  graph:", "model:\n  output: nothing\n  graph:"), "unknown value 'nothing'"),
        (("model:\n  graph:", "model:\n  param: {}\n  graph:"), "did you mean 'params'?"),
    ],
)
def test_located_errors(edit, expected):
    text = RESIDUAL.replace(*edit)
    assert text != RESIDUAL
    problems = _problems(text)
    assert any(expected in p for p in problems), problems
    assert all("g.yaml:" in p for p in problems)


def test_an_expand_of_a_batched_value_and_a_parameter_into_a_module_are_refused():
    text = RESIDUAL.replace("- {add: [x, fc2]}", "- {expand_batch: fc2}")
    assert any("already has the batch axis" in p for p in _problems(text))
    text = "name: p\ninput: [4]\nmodel:\n  params: {w: {shape: [1, 4]}}\n  graph:\n    - fc: {Linear: [4, 4]}\n      from: w\n"
    assert any("no batch axis N" in p and "expand_batch" in p for p in _problems(text))


def test_todays_trees_build_exactly_as_before():
    spec = compiler.load_spec("specs/mnist_cnn.yaml")
    model = compiler.build_model(spec)
    assert type(model) is nn.Sequential
    assert not list(compiler.lower_spec(spec).model.graphs())


TRAINED = """
name: tiny_attention
input: [6, 8]
model:
  class: TinyTransformer
  params: {pos: {shape: [1, 6, 8], init: {normal_: {std: 0.02}}}}
  graph:
    - {add: [x, pos]}
    - norm: {LayerNorm: 8}
    - attn: {MultiheadAttention: {embed_dim: 8, num_heads: 2, batch_first: true}}
      from: [norm, norm, norm]
      as: [y, _]
    - pool: {Mean: {dim: 1}}
    - head: {Linear: [8, 3]}
data:
  dataset: {Synthetic: {size: 64, inputs: [6, 8], classes: 3}}
  batch_size: 16
loss: CrossEntropyLoss
optimizer: {Adam: {lr: 0.01}}
train: {epochs: 1}
"""


def test_every_level_of_section_8_with_training_steps():
    """`specc check`: module trees, state dicts, outputs, loss and optimizer, data, and training steps bitwise."""
    from compiler.workflow.check import compare

    checks = compare(compiler.parse_spec(TRAINED, "tiny_attention.yaml"), steps=2)
    assert len(checks) >= 6 and all(c.ok for c in checks), [f"{c.name}: {c.detail}" for c in checks if not c.ok]


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("- fc: {Linear: [8, 8]}\n      with: {foo: 1}", "not an option Linear's forward takes"),
        ("- {addd: [x, x]}", "did you mean 'add'?"),
        ("- fc1: {Linear: [8, 8]}", "'fc1' already names an input, step"),
    ],
)
def test_more_located_errors(step, expected):
    text = RESIDUAL.replace("    - head: {Linear: [8, 2]}\n", f"    {step}\n    - head: {{Linear: [8, 2]}}\n")
    assert any(expected in p for p in _problems(text))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"embed_dim": 8, "num_heads": 2, "batch_first": True},
        {"embed_dim": 8, "num_heads": 4, "kdim": 3, "vdim": 5, "batch_first": True},
        {"embed_dim": 6, "num_heads": 3, "add_bias_kv": True, "add_zero_attn": True, "batch_first": True},
    ],
)
def test_the_attention_shape_rule_is_torchs(kwargs):
    from compiler.facts.shapes.dataflow import multihead_attention

    q = ("N", 5, kwargs["embed_dim"])
    k = ("N", 7, kwargs.get("kdim", kwargs["embed_dim"]))
    v = ("N", 7, kwargs.get("vdim", kwargs["embed_dim"]))
    defaults = {"kdim": None, "vdim": None, "add_bias_kv": False, "add_zero_attn": False}
    rule = multihead_attention(defaults | kwargs, [q, k, v], ["q", "k", "v"])
    out, weights = nn.MultiheadAttention(**kwargs)(*(torch.randn(2, *s[1:]) for s in (q, k, v)))
    assert rule == [("N", *out.shape[1:]), ("N", *weights.shape[1:])]
