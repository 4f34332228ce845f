"""The full generated script (issue 19, item 4): the spec's own part first and short; below one marked line, the
runtime helpers it uses and no others, each once; imports only what is used (no torchvision without torchvision
data). The declared helper table (compiler/runtime/needs.py) is held to each helper's source."""

import ast
import builtins
import inspect

import pytest
from conftest import ROOT, SPECS

import compiler
from compiler.render.script import HELPERS_LINE, _names
from compiler.runtime import helpers as runtime
from compiler.runtime.needs import NEEDS

OWN = {name: obj for name, obj in vars(runtime).items() if getattr(obj, "__module__", None) == runtime.__name__}
SCRIPTS = [p for p in SPECS if HELPERS_LINE in (ROOT / "generated" / f"{p.stem}.py").read_text()]


@pytest.mark.parametrize("name", list(OWN))
def test_the_declared_needs_are_what_each_helper_reads(name):
    read = _names(inspect.getsource(OWN[name])) - set(dir(builtins))
    assert set(NEEDS[name].helpers) == read & set(OWN), name
    assert set(NEEDS[name].imports) == read - set(OWN), name


def test_every_helper_is_declared():
    assert set(NEEDS) == set(OWN)


def _parts(stem: str) -> tuple[str, str]:
    own, helpers = (ROOT / "generated" / f"{stem}.py").read_text().split(HELPERS_LINE)
    return own, helpers


def test_the_tutorial_cnn_reads_its_own_part_in_230_lines():
    own, _ = _parts("mnist_cnn")
    assert len(own.splitlines()) <= 230
    assert "def main(" in own and "def train(" in own and "def build_model(" in own


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_helpers_are_exactly_those_the_own_part_calls_each_once(path):
    own, helpers = _parts(path.stem)
    defined = [n.name for n in ast.parse(helpers).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert len(defined) == len(set(defined))
    wanted, todo = set(), [n for n in _names(own) if n in OWN]
    while todo:  # the helpers the own part reads, and theirs, found from the text alone
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += [n for n in _names(inspect.getsource(OWN[name])) if n in OWN]
    layers = {n for n in defined if n not in OWN}
    assert set(defined) - layers == wanted, path.stem
    assert not layers  # specc's own layers sit in the model section, not below the line


def test_no_csv_scaling_scheduler_or_torchvision_where_unused():
    own, helpers = _parts("mnist_cnn")
    assert "def apply_scaling" not in helpers and "def csv_inputs" not in helpers and "scheduler = " not in own
    text = (ROOT / "generated" / "mlp_adam.py").read_text()  # Synthetic data
    assert "torchvision" not in text and "--predict" not in text
    for stem in ("lstm_classifier", "transformer_classifier"):  # Text: token ids
        text = (ROOT / "generated" / f"{stem}.py").read_text()
        assert "torchvision" not in text and "def image_inputs" not in text and "def text_inputs" in text, stem
    iris = (ROOT / "generated" / "iris_mlp.py").read_text()
    assert "def csv_inputs" in iris and "def image_inputs" not in iris and "torchvision" not in iris


def test_a_run_writes_its_weights_once(tmp_path):
    """checkpoint.pt holds the weights; model.pt is written on demand (--weights), not by every run."""
    import subprocess
    import sys

    import torch

    script = tmp_path / "mlp_adam.py"
    script.write_text(compiler.render_script(ROOT / "specs" / "mlp_adam.yaml"))
    run = lambda *a: subprocess.run(
        [sys.executable, str(script), *a], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    proc = run("--epochs", "2", "--out", "run")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "metrics.csv", "metrics.json"]
    proc = run("--resume", "run", "--weights", "model.pt")
    assert proc.returncode == 0 and "model state dict written to model.pt" in proc.stdout, proc.stderr
    weights = torch.load(tmp_path / "model.pt", weights_only=True)
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert weights.keys() == checkpoint["model"].keys()
    assert all(torch.equal(weights[k], checkpoint["model"][k]) for k in weights)
