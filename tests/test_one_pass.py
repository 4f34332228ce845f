"""Validation reports every independent mistake in one pass (issue 23), and nothing twice."""

from __future__ import annotations

from pathlib import Path

import pytest

import compiler

CORPUS = Path(__file__).resolve().parent / "invalid"


def _problems(text: str) -> list[compiler.Problem]:
    with pytest.raises(compiler.SpecError) as info:
        compiler.parse_spec(text, "spec.yaml")
    return info.value.problems


def test_seven_mistakes_in_one_pass() -> None:
    with pytest.raises(compiler.SpecError) as info:
        compiler.load_spec(CORPUS / "seven_mistakes.yaml")
    got = [(p.line, p.col) for p in info.value.problems]
    assert got == [(16, 5), (17, 14), (19, 5), (20, 5), (24, 3), (25, 1), (26, 20)], str(info.value)


def test_layers_after_an_unknown_type_are_checked_without_inventing_shape_problems() -> None:
    text = """\
name: s
input: [1, 28, 28]
model:
  - Conv2dd: {out_channels: 8, kernel_size: 3}
  - Flatten
  - Linear: {out_features: 10, biass: false}
  - Linear: {out_features: 10}
"""
    problems = _problems(text)
    assert [(p.line, p.col, p.message) for p in problems] == [
        (4, 5, "unknown layer type 'Conv2dd'"),
        (6, 32, "Linear has no argument 'biass'"),
    ]


def test_a_layer_after_a_shape_failure_gets_its_own_checks() -> None:
    text = """\
name: s
input: [4]
model:
  - Conv1d: {out_channels: 8, kernel_size: 3}
  - BatchNorm1d: {eps: fast}
  - Linear: {out_features: 0.5}
  - Dropout: {p: 2}
"""
    problems = _problems(text)
    assert [p.line for p in problems] == [4, 5, 6, 7], "\n".join(map(str, problems))
    assert "BatchNorm1d.eps expects float" in problems[1].message
    assert "Linear.out_features expects int" in problems[2].message


def test_unknown_section_types_and_refused_variables_are_reported_once() -> None:
    text = """\
name: s
vars: {big: 2**999}
input: [4]
model:
  - Linear: {out_features: $big}
  - ReLU
  - Linear: {out_features: 2, bias: maybe}
data: {dataset: {Synthetc: {size: 8, shape: [4]}}, batch_size: 4}
loss: MSELos
optimizer: {SGD: {lr: 0.1, momentum: -1}}
train: {epochs: 1}
"""
    messages = [p.message for p in _problems(text)]
    assert len(messages) == 5, messages
    assert "exponent 999 is too large" in messages[0]
    assert "Linear.bias expects bool" in messages[1]
    assert "unknown dataset type 'Synthetc'" in messages[2]
    assert "unknown loss type 'MSELos'" in messages[3]
    assert "momentum" in messages[4]
    assert not any("missing" in m for m in messages)


def test_a_broken_merge_branch_leaves_the_other_branches_checked() -> None:
    text = """\
name: s
input: [4]
model:
  - merge: add
    branches:
      a: [Linearr]
      b: {Linear: {out_features: 4, bias: 3}}
"""
    messages = [p.message for p in _problems(text)]
    assert len(messages) == 2, messages
    assert "unknown layer type 'Linearr'" in messages[0] and "Linear.bias expects bool" in messages[1]
