"""Every shipped spec validates, builds, renders; its checked-in script is byte-identical to a fresh render."""

import ast
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SPECS, assert_import_runs_nothing

import compiler
from compiler.workflow.check import compare

IDS = [p.stem for p in SPECS]


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_spec_validates_builds_and_renders(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # shipped specs carry no warnings
        spec = compiler.load_spec(path)
    model = compiler.build_model(spec)
    root = compiler.lower_spec(spec).model.root
    # a model-level graph node (§15, specs/vit.yaml) is its own class; every other model an nn.Sequential
    expected = torch.nn.Sequential if not hasattr(root, "steps") else torch.nn.Module
    assert isinstance(model, expected) and (expected is torch.nn.Module) != isinstance(model, torch.nn.Sequential)
    assert spec.name == path.stem
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("#"), "each spec opens with a comment saying what it builds"
    assert "specc " in path.read_text().split("name:")[0], "each spec's header gives a command to try"


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_generated_script_is_checked_in_and_current(path):
    spec = compiler.load_spec(path)
    fresh = compiler.render_script(spec)
    checked_in = ROOT / "generated" / f"{spec.name}.py"
    assert checked_in.exists(), f"run: specc generate {path.relative_to(ROOT)}"
    assert checked_in.read_text() == fresh, f"generated/{spec.name}.py is stale; run: specc generate specs/{path.name}"


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_generated_script_imports_only_torch_torchvision_stdlib(path):
    tree = ast.parse((ROOT / "generated" / f"{path.stem}.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    import sys

    allowed = {"torch", "torchvision"} | set(sys.stdlib_module_names)
    assert roots <= allowed, roots - allowed
    assert "compiler" not in roots
    assert_import_runs_nothing(tree)


def _ruff() -> str | None:
    beside = Path(sys.executable).parent / "ruff"  # the venv's, also when it is not on PATH
    return str(beside) if beside.exists() else shutil.which("ruff")


@pytest.mark.skipif(_ruff() is None, reason="ruff is in the dev extra")
@pytest.mark.parametrize("where", ["generated", "."], ids=["generated scripts", "whole project"])
def test_lint_clean_and_formatted(where):
    """`ruff check` and `ruff format --check` hold over the generated scripts and over the whole project."""
    target = str(ROOT / where)
    check = subprocess.run([_ruff(), "check", target], capture_output=True, text=True, check=False, cwd=ROOT)
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run([_ruff(), "format", "--check", target], capture_output=True, text=True, check=False, cwd=ROOT)
    assert fmt.returncode == 0, fmt.stdout


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_compiled_and_generated_match(path):
    """spec-language.md §8, every level, for every spec."""
    spec = compiler.load_spec(path)
    failed = [f"{c.name}: {c.detail}" for c in compare(spec, steps=2) if not c.ok]
    assert not failed, failed
