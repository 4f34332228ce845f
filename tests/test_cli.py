"""The `specc` command as users run it: exit codes, located messages, never a traceback."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from compiler.cli.commands import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_validate_all_specs_ok(capsys):
    code, out, err = run(capsys, "validate", *(str(p) for p in sorted((ROOT / "specs").glob("*.yaml"))))
    assert code == 0, err
    assert out.startswith("OK: ")
    assert err == ""


def test_validate_reports_location_problem_and_fix(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ninput: [1, 28, 28]\nmodel:\n  - Conv2d: {out_channels: 8, kernel_size: 3}\n"
        "  - Linear: {in_features: 100, out_features: 10}\n"
    )
    code, _out, err = run(capsys, "validate", str(bad))
    assert code == 1
    assert f"{bad}:5:5: " in err
    assert "Flatten" in err and "5408" in err
    assert "Traceback" not in err


def test_missing_file_is_a_located_error(capsys):
    code, _, err = run(capsys, "validate", "no/such/spec.yaml")
    assert code == 1
    assert "no/such/spec.yaml" in err and "no such file" in err


def test_summary_table(capsys):
    code, out, _ = run(capsys, "summary", "specs/mnist_cnn.yaml")
    assert code == 0
    assert "Total params: 25,775,882" in out
    assert "(128, 14, 14)" in out and "(25088,)" in out
    assert "Parameter and buffer memory: 98.3 MiB" in out


def test_generate_writes_script(tmp_path, capsys):
    out_file = tmp_path / "s.py"
    code, _out, _ = run(capsys, "generate", "specs/mlp.yaml", "-o", str(out_file))
    assert code == 0 and out_file.exists()
    assert "def build_model():" in out_file.read_text()


def test_memory_budget_flag(tmp_path, capsys):
    code, _, err = run(capsys, "--max-memory", "10MB", "validate", "specs/mnist_cnn.yaml")
    assert code == 1
    assert "98.3 MiB" in err and "--max-memory" in err


def test_check_command(capsys):
    code, out, _ = run(capsys, "check", "specs/mlp_named.yaml")
    assert code == 0
    assert "3 passed, 0 failed" in out


def test_train_writes_checkpoint_metrics_and_plot(tmp_path, capsys):
    code, _out, _ = run(capsys, "train", "specs/mlp_adam.yaml", "--out", str(tmp_path), "--epochs", "3")
    assert code == 0
    for name in ("checkpoint.pt", "metrics.json", "loss.png", "mlp_adam.py"):
        assert (tmp_path / name).exists(), name
    losses = [r["loss"] for r in json.loads((tmp_path / "metrics.json").read_text())["history"] if "loss" in r]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_console_script_has_no_traceback_on_bad_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [ReLU\n")
    proc = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "validate", str(bad)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{bad}:" in proc.stderr and "YAML syntax error" in proc.stderr


def test_resume_continues_a_run(tmp_path):
    script = tmp_path / "mlp_adam.py"
    code = main(["generate", "specs/mlp_adam.yaml", "-o", str(script)])
    assert code == 0
    first = subprocess.run(
        [sys.executable, str(script), "--epochs", "2", "--out", str(tmp_path / "a")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    resumed = subprocess.run(
        [
            sys.executable,
            str(script),
            "--epochs",
            "4",
            "--out",
            str(tmp_path / "a"),
            "--resume",
            str(tmp_path / "a" / "checkpoint.pt"),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run(
        [sys.executable, str(script), "--epochs", "4", "--out", str(tmp_path / "b")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert straight.returncode == 0
    loss = lambda d: [
        r["loss"] for r in json.loads((tmp_path / d / "metrics.json").read_text())["history"] if "loss" in r
    ]
    assert loss("a") == loss("b")  # resumed history carries the first run's steps; bitwise-equal losses


@pytest.mark.slow
def test_readme_main_command_reaches_90_percent_on_real_digits(tmp_path):
    """The tutorial CNN on the shipped MNIST sample: >= 90% on the 1,000 held-out digits after one epoch."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "generated" / "mnist_cnn.py"),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    accuracy = [r["val_accuracy"] for r in history if "val_accuracy" in r][-1]
    assert accuracy >= 0.90, accuracy
