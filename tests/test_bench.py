"""`python bench/run.py --quick` runs every benchmark row, so the bench scripts cannot rot unnoticed.

Timing is not asserted here (the suite runs on shared machines); bench/RESULTS.md records real runs.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

from conftest import ROOT


def _bench_rows() -> list[str]:
    spec = importlib.util.spec_from_file_location("specc_bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.BENCHMARKS)


def test_quick_bench_runs_every_row(tmp_path):
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: a row missed its target (timing is not tested)
    results = json.loads(out.read_text())
    rows = {r["name"]: r for r in results["results"]}
    assert {row["bench"] for row in rows.values()} == set(_bench_rows())
    for name, row in rows.items():
        assert row["quick"] is True
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, (name, row["ratio"])
        assert row["samples_baseline"] and len(row["samples_baseline"]) == len(row["samples_specc"]), name
    assert results["meta"]["torch"] and results["meta"]["cpu"]
    assert "| speed_auto_cpu " in proc.stdout
