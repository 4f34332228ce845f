"""`base: other.yaml`: a spec extends another; merged like --set; errors located in the right file."""

from __future__ import annotations

import os

import pytest

from compiler import SpecError, load_spec, parse_spec
from compiler.front.compose import MAX_BASE_DEPTH, merge

BASE = """\
name: base
input: [1, 2, 2]
model:
  trunk:
    - Flatten
    - Linear: {out_features: 8}
    - ReLU
  head: {Linear: {out_features: 3}}
loss: CrossEntropyLoss
optimizer: {SGD: {lr: 0.1}}
data:
  dataset: {FakeData: {size: 8, image_size: [1, 2, 2], num_classes: 3}}
  transforms: [ToTensor]
  batch_size: 4
train: {epochs: 3, metrics: [accuracy]}
"""


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fails(path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value


def test_merge_rules_are_those_of_set():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    assert merge(base, {"a": {"y": [3]}, "c": 2}) == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}
    assert merge(base, {"a": 5}) == {"a": 5, "b": 1}


def test_child_overrides_merge_key_by_key(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "base: base.yaml\nname: child\ntrain: {epochs: 1}\n")
    spec = load_spec(child)
    assert spec.name == "child"
    assert spec.train.epochs == 1
    assert spec.train.metrics == ["accuracy"]  # kept from the base: mappings merge


def test_shipped_example_is_the_base_with_smaller_widths():
    small, full = load_spec("specs/mnist_cnn_small.yaml"), load_spec("specs/mnist_cnn.yaml")
    assert small.train.epochs == 2 and full.train.epochs == 5
    assert small.data == full.data and small.loss == full.loss


def test_problem_in_an_inherited_value_points_at_the_base(tmp_path):
    write(tmp_path, "base.yaml", BASE.replace("out_features: 8", "out_feature: 8"))
    child = write(tmp_path, "child.yaml", "base: base.yaml\nname: child\n")
    err = fails(child)
    (problem,) = err.problems
    assert problem.file.endswith("base.yaml") and (problem.line, problem.col) == (6, 16)
    assert "child.yaml extends" in problem.message and "out_features" in problem.fix
    assert "out_feature: 8" in err.excerpt(problem)  # the excerpt is the base file's line


def test_problem_in_an_overridden_value_points_at_the_child(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "base: base.yaml\ntrain:\n  epochs: 0\n")
    (problem,) = fails(child).problems
    assert problem.file.endswith("child.yaml") and (problem.line, problem.col) == (3, 3)
    assert "extends" not in problem.message


def test_chain_locates_the_grandparent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the project: `../a.yaml` from sub/ stays inside it
    write(tmp_path, "a.yaml", BASE.replace("lr: 0.1", "lr: -1"))
    write(tmp_path, "sub/b.yaml", "base: ../a.yaml\nname: b\n")
    c = write(tmp_path, "sub/c.yaml", "base: b.yaml\nname: c\n")
    (problem,) = fails(c).problems
    assert problem.file.endswith("a.yaml") and problem.line == 10
    assert "b.yaml extends" in problem.message


def test_cycle_is_a_located_error(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\nname: a\n")
    b = write(tmp_path, "b.yaml", "base: a.yaml\nname: b\n")
    (problem,) = fails(b).problems
    assert "cycle" in problem.message and "a.yaml" in problem.message and problem.line == 1


def test_depth_is_bounded(tmp_path):
    for i in range(MAX_BASE_DEPTH + 2):
        write(tmp_path, f"s{i}.yaml", f"base: s{i + 1}.yaml\n")
    write(tmp_path, f"s{MAX_BASE_DEPTH + 2}.yaml", BASE)
    (problem,) = fails(tmp_path / "s0.yaml").problems
    assert f"more than {MAX_BASE_DEPTH}" in problem.message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("/etc/passwd", "absolute"),
        ("../../../../../../../../etc/passwd", "leaves the project"),
        ("missing.yaml", "not found"),
        ("[1, 2]", "must be the path"),
    ],
)
def test_bad_base_values(tmp_path, value, words):
    child = write(tmp_path, "child.yaml", f"base: {value}\nname: c\n")
    (problem,) = fails(child).problems
    assert words in problem.message and problem.file.endswith("child.yaml") and problem.line == 1


def test_symlink_out_of_the_project_is_refused(tmp_path, monkeypatch):
    project, outside = tmp_path / "project", tmp_path / "outside"
    write(outside, "base.yaml", BASE)
    project.mkdir()
    os.symlink(outside / "base.yaml", project / "base.yaml")
    child = write(project, "child.yaml", "base: base.yaml\n")
    monkeypatch.chdir(project)
    (problem,) = fails(child).problems
    assert "leaves the project" in problem.message


def test_base_that_is_a_directory_names_the_base(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    child = write(tmp_path, "child.yaml", "base: dir.yaml\n")
    (problem,) = fails(child).problems
    assert "dir.yaml" in problem.file and "not a spec file" in problem.message


def test_parse_spec_resolves_base_from_the_working_folder(tmp_path, monkeypatch):
    write(tmp_path, "base.yaml", BASE)
    monkeypatch.chdir(tmp_path)
    assert parse_spec("base: base.yaml\nname: t\n").name == "t"
