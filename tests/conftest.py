import ast
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    """Specs name data paths relative to the repository root, as the README's commands run."""
    monkeypatch.chdir(ROOT)


def pytest_configure(config):
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.path.insert(0, str(ROOT))


def assert_import_runs_nothing(tree: ast.Module) -> None:
    """A generated script's top level: a docstring, imports, constants, defs, and the main guard last."""
    for i, node in enumerate(tree.body):
        if isinstance(node, ast.Expr):
            assert i == 0 and isinstance(node.value, ast.Constant), ast.unparse(node)
        elif isinstance(node, ast.If):
            assert ast.unparse(node.test) == "__name__ == '__main__'" and node is tree.body[-1]
        else:
            assert isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.FunctionDef, ast.ClassDef)), (
                ast.unparse(node)
            )
