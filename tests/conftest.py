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
