"""Several inputs and outputs (§15): `input:` by name, `output:` as a tuple or a dict, `when: training` with
`eval_output:`, declared `modules:` run by `call:` (shared weights, a list's members as an nn.ModuleList),
a child graph of several inputs, and `interpolate`. Both backends equal in train and eval mode; errors located.
"""

from __future__ import annotations

import re

import pytest
import torch

import compiler
from compiler.errors import SpecError
from compiler.workflow.check import import_script

PYRAMID = """
name: pyramid
input: [4, 8, 8]
model:
  modules:
    inner: [{Conv2d: {out_channels: 6, kernel_size: 1}}, {Conv2d: {out_channels: 6, kernel_size: 1}}]
  graph:
    - {call: inner.0, as: a}
    - down: {MaxPool2d: 2}
      from: x
    - {call: inner.1, from: down, as: b}
    - {interpolate: [b, a], as: up}
    - {add: [a, up], as: total}
    - aux: {Conv2d: [6, 2, 1]}
      when: training
    - drop: {Dropout: 0.5}
      from: aux
      when: training
  output: {"0": total, aux: drop}
  eval_output: total
"""

SIAMESE = """
name: siamese
input: {left: [1, 8, 8], right: [1, 8, 8]}
model:
  modules: {encoder: [Flatten, {Linear: {out_features: 5}}, ReLU]}
  graph:
    - {call: encoder, from: left, as: a}
    - {call: encoder, from: right, as: b}
    - {sub: [a, b], as: d}
    - head: {Linear: {out_features: 2}}
"""

CHILD = """
name: child
input: [3, 8]
model:
  graph:
    - split:
        graph:
          - a: {Linear: [8, 4]}
          - b: {Linear: [8, 2]}
            from: x
        output: [a, b]
      as: [p, q]
    - join:
        inputs: [u, v]
        graph:
          - {interpolate: [u, u], as: same}
          - w: {Linear: [2, 4]}
            from: v
          - {mul: [same, w]}
      from: [p, q]
  output: [join, q]
"""


def _both(text: str, tmp_path, *inputs: torch.Tensor):
    spec = compiler.parse_spec(text, "m.yaml")
    torch.manual_seed(0)
    compiled = compiler.build_model(spec)
    torch.manual_seed(0)
    generated = import_script(compiler.render_script(spec), spec.name, str(tmp_path)).build_model()
    assert str(compiled) == str(generated)
    assert list(compiled.state_dict()) == list(generated.state_dict())
    for (key, a), b in zip(compiled.state_dict().items(), generated.state_dict().values()):
        assert torch.equal(a, b), key
    outs = []
    for training in (True, False):
        compiled.train(training), generated.train(training)
        torch.manual_seed(3)
        a = compiled(*inputs)
        torch.manual_seed(3)
        b = generated(*inputs)
        assert type(a) is type(b)
        if isinstance(a, dict):
            assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        elif isinstance(a, tuple):
            assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
        else:
            assert torch.equal(a, b)
        outs.append(a)
    torch.fx.symbolic_trace(compiled.eval())
    return compiled, outs


def test_declared_list_members_interpolate_and_training_only_outputs(tmp_path):
    model, (train_out, eval_out) = _both(PYRAMID, tmp_path, torch.randn(2, 4, 8, 8))
    assert type(model.inner).__name__ == "ModuleList" and [m.in_channels for m in model.inner] == [4, 4]
    assert list(model.state_dict())[:4] == ["inner.0.weight", "inner.0.bias", "inner.1.weight", "inner.1.bias"]
    assert list(train_out) == ["0", "aux"] and train_out["0"].shape == (2, 6, 8, 8)
    assert train_out["aux"].shape == (2, 2, 8, 8)
    assert isinstance(eval_out, torch.Tensor) and eval_out.shape == (2, 6, 8, 8)
    a = model.inner[0](torch.ones(1, 4, 8, 8))
    up = torch.nn.functional.interpolate(model.inner[1](torch.nn.functional.max_pool2d(torch.ones(1, 4, 8, 8), 2)), 8)
    assert torch.equal(model.eval()(torch.ones(1, 4, 8, 8)), a + up)


def test_generated_forward_reads_as_python(tmp_path):
    text = compiler.render_script(compiler.parse_spec(PYRAMID))
    assert "        a = self.inner[0](x)\n" in text
    assert '        up = nn.functional.interpolate(b, size=a.shape[2:], mode="nearest")\n' in text
    assert (
        "        if self.training:\n            aux = self.aux(total)\n            drop = self.drop(aux)\n"
        '            return {"0": total, "aux": drop}\n        return total\n'
    ) in text
    assert "inner=nn.ModuleList(" in text
    siamese = compiler.render_script(compiler.parse_spec(SIAMESE))
    assert (
        "    def forward(self, left, right):\n        a = self.encoder(left)\n        b = self.encoder(right)\n"
        in siamese
    )
    assert "input left (1, 8, 8), right (1, 8, 8) -> output (2,)" in siamese


def test_a_shared_module_is_one_set_of_weights(tmp_path):
    model, _ = _both(SIAMESE, tmp_path, torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8))
    assert list(model.state_dict()) == ["encoder.1.weight", "encoder.1.bias", "head.weight", "head.bias"]
    same = torch.randn(2, 1, 8, 8)
    assert torch.equal(model(same, same), model.head(torch.zeros(2, 5)))  # one encoder: equal inputs cancel


def test_a_child_of_several_inputs_and_a_tuple_output(tmp_path):
    _, (out, _) = _both(CHILD, tmp_path, torch.randn(2, 3, 8))
    assert isinstance(out, tuple) and [tuple(t.shape) for t in out] == [(2, 3, 4), (2, 3, 2)]
    program = compiler.lower_spec(compiler.parse_spec(CHILD))
    assert program.model.outputs == {"join": (3, 4), "q": (3, 2)}


def test_summary_lists_inputs_outputs_and_a_module_list(capsys):
    from compiler.cli.summary import print_summary

    print_summary(compiler.lower_spec(compiler.parse_spec(PYRAMID)).model)
    text = capsys.readouterr().out
    assert "Outputs (training mode): 0 (6, 8, 8), aux (2, 8, 8)\nEval mode returns: total" in text and re.search(
        r"inner +ModuleList", text
    )
    print_summary(compiler.lower_spec(compiler.parse_spec(CHILD)).model)
    assert re.search(r"split +Split \(graph\) +\(3, 4\), \(3, 2\)", capsys.readouterr().out)  # a child's tuple
    print_summary(compiler.lower_spec(compiler.parse_spec(SIAMESE)).model)
    assert "Inputs: left (1, 8, 8), right (1, 8, 8)" in capsys.readouterr().out


def test_specc_check_passes_every_level(tmp_path):
    from compiler.workflow.check import compare

    for text in (PYRAMID, SIAMESE, CHILD):
        checks = compare(compiler.parse_spec(text, "m.yaml"))
        assert checks and all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        compiler.lower_spec(compiler.parse_spec(text, "m.yaml"))
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("call: inner.1,", "call: outer.1,", "m.yaml:11:8: model.graph.2.call: 'outer' is not a module"),
        ("call: inner.1,", "call: inner.2,", "'inner' has 2 members (0 to 1), not 2"),
        ("call: inner.1,", "call: inner,", "'inner' is called both whole and by member"),
        ("{call: inner.1, from: down, as: b}", "{call: inner.0, from: down, as: b}", "member 1 of 'inner' is never"),
        ("call: inner.1, from: down", "call: inner.0, from: down", "inner.0 takes (N, 4, 4, 4) here, but (N, 4, 8, 8)"),
        ("  eval_output: total\n", "", "the output reads 'drop', which is made only in training mode"),
        ("eval_output: total", "eval_output: drop", "eval mode cannot return 'drop'"),
        ("      from: aux\n      when: training", "      from: aux", "value 'aux' is made only in training mode"),
        ("when: training\n    - drop", "when: eval\n    - drop", "`when:` takes `training`, got a string ('eval')"),
        ('output: {"0": total, aux: drop}', "output: {}", "`output:` is empty"),
        ("{interpolate: [b, a]", "{interpolate: [b]", "interpolate takes two values"),
        ("mode: nearest", "mode: nearst", "did you mean 'nearest'?"),
    ],
)
def test_located_errors(old, new, expected):
    text = PYRAMID.replace("{interpolate: [b, a], as: up}", "{interpolate: [b, a], as: up, mode: nearest}")
    assert old in text
    problems = _problems(text.replace(old, new))
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("m.yaml:") for p in problems)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "name: t\ninput: {a: [4], b: [4]}\nmodel: [{Linear: {out_features: 2}}]\n",
            "`input:` names 2 inputs, but the model is a stack, which takes one",
        ),
        (
            "name: t\ninput: [4]\nmodel:\n  inputs: [a, b]\n  graph: [{add: [a, b]}]\n",
            "the model takes 2 inputs (a, b); `input:` gives each one's shape by name",
        ),
        (
            "name: t\ninput: {a: [4]}\nmodel:\n  modules: {m: {Linear: {out_features: 2}}}\n  graph: [{fc: {Linear: {out_features: 2}}, from: a}]\n",
            "module 'm' is never called",
        ),
        (
            (
                "name: t\ninput: [4]\nmodel:\n  graph:\n    - c:\n        graph: [{fc: {Linear: {out_features: 2}}}]\n"
                "        output: {a: fc}\n"
            ),
            "a mapping `output:` is the model's, at its top level",
        ),
        (
            "name: t\ninput: [4]\nmodel:\n  modules: {m: {Linear: {out_features: 2}}}\n  graph: [{call: m.0}]\n",
            "`call: m.0` takes a member of a list, but 'm' is not a list of modules",
        ),
        (
            "name: t\ninput: [4]\nmodel:\n  graph: [{fc: {Linear: {out_features: 2}}}]\n  eval_output: fc\n",
            "`eval_output:` is what eval mode returns instead of `output:`, which is missing",
        ),
    ],
)
def test_more_located_errors(text, expected):
    problems = _problems(text)
    assert any(expected in p for p in problems), problems


TOKENS_AND_IMAGE = """name: emb
input: {tokens: [12], image: [1, 8, 8]}
model:
  modules: {cnn: [Flatten, {Linear: {out_features: 8}}]}
  graph:
    - embed: {Embedding: {num_embeddings: 50, embedding_dim: 8}}
      from: tokens
    - pooled: {Mean: {dim: 1}}
    - {call: cnn, from: image, as: picture}
    - {add: [pooled, picture], as: joint}
    - head: {Linear: {out_features: 2}}
"""


def test_each_input_has_its_dtype_int64_where_an_embedding_reads_it():
    """An input that an Embedding reads first takes indices: `specc check` and export feed it int64, the others
    float32 (before, one dtype for every input: the Embedding got floats and torch refused them)."""
    from compiler.workflow.check import compare

    spec = compiler.parse_spec(TOKENS_AND_IMAGE, "emb.yaml")
    model = compiler.lower_spec(spec).model
    assert model.input_dtypes == {"tokens": "int64", "image": "float32"}
    checks = compare(spec)
    assert all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]
    lines = []
    from compiler.cli.summary import print_summary

    print_summary(model, print_fn=lines.append)
    assert lines[0] == "Inputs: tokens (12,) int64, image (1, 8, 8) (one sample each; batch dimension not shown)"
    swapped = TOKENS_AND_IMAGE.replace("from: image, as: picture", "from: tokens, as: picture")
    swapped = swapped.replace("from: tokens\n", "from: image\n").replace("[12], image: [1, 8, 8]", "[8], image: [8]")
    assert compiler.lower_spec(compiler.parse_spec(swapped, "s.yaml")).model.input_dtypes == {
        "tokens": "float32",
        "image": "int64",
    }
    # one input, its first reader a declared Embedding run by `call:` (check fed it floats too)
    one = "name: e\ninput: [12]\nmodel:\n  modules: {emb: {Embedding: [50, 8]}}\n  graph:\n"
    one += "    - {call: emb, from: x, as: e}\n    - pooled: {Mean: {dim: 1}}\n"
    spec = compiler.parse_spec(one, "e.yaml")
    assert compiler.lower_spec(spec).model.input_dtype == "int64"
    assert all(c.ok for c in compare(spec))
