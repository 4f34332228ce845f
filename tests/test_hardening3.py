"""Hardening, third round (issue 22, and issue 23's run folders and errors after validation): every command after
validation is as strict as validation. One test per class, each with variants beyond the issue's reproducers."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from torch import nn

from compiler.cli.commands import USAGE_ERROR, main
from compiler.runtime import helpers as runtime

SPEC = """
name: {name}
input: [4]
model:
  - Linear: {{out_features: 3}}
data:
  dataset: {{CSV: {{path: data.csv, target: label}}}}
  batch_size: 4
loss: CrossEntropyLoss
optimizer: {{Adam: {{lr: 0.01}}}}
train: {{epochs: 1, device: cpu}}
"""
IMAGE_SPEC = """
name: img
input: [1, 8, 8]
model:
  - Flatten
  - Linear: {out_features: 3}
data:
  dataset: {FakeData: {size: 16, image_size: [1, 8, 8], num_classes: 3}}
  transforms: [ToTensor]
  batch_size: 8
loss: CrossEntropyLoss
optimizer: {SGD: {lr: 0.1}}
train: {epochs: 1, device: cpu}
"""


def _specc(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-P", "-m", "compiler.cli", *args],  # -P: specc itself, too, from its own folder
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder with a CSV spec trained once by `specc train` (runs/t/1), and an image spec trained once."""
    folder = tmp_path_factory.mktemp("project")
    _project(folder)
    (folder / "img.yaml").write_text(IMAGE_SPEC)
    for spec in ("t.yaml", "img.yaml"):
        proc = _specc("train", spec, cwd=folder)
        assert proc.returncode == 0, proc.stderr
    return folder


def _project(folder: Path, name: str = "t") -> Path:
    rows = ["a,b,c,d,label"] + [f"{i % 3},{i % 5},{i % 7},{i % 2},{i % 3}" for i in range(24)]
    (folder / "data.csv").write_text("\n".join(rows) + "\n")
    (folder / f"{name}.yaml").write_text(SPEC.format(name=name))
    return folder / f"{name}.yaml"


def _code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:  # argparse
        return exit.code


def _tree(folder: Path) -> dict:
    """Every file and folder below ``folder``, with each file's modification time."""
    return {str(p.relative_to(folder)): p.is_file() and p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


# --------------------------------------------------------------------------- 1. code execution: the import path


def test_a_run_never_imports_planted_modules(trained):
    """Modules planted in the run folder or the current folder (shadowing a dependency torch imports, or the
    standard library) never run: the script runs from a private copy with safe-path semantics."""
    marker = trained / "PWNED"
    for name in ("typing_extensions", "sympy", "filelock", "numbers"):
        for where in (trained / "runs" / "t" / "1", trained):
            (where / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write('{name} ')\n")
    try:
        proc = _specc("train", "t.yaml", "--resume", "runs/t/1", "--epochs", "2", cwd=trained)
        assert proc.returncode == 0, proc.stderr
        assert not marker.exists(), marker.read_text()
        assert "--out runs/t/1" in proc.stdout
    finally:
        for name in ("typing_extensions", "sympy", "filelock", "numbers"):
            for where in (trained / "runs" / "t" / "1", trained):
                (where / f"{name}.py").unlink()


# --------------------------------------------------------------------------- 2. run folders


def test_run_folders_exist_only_for_runs_that_started_and_are_never_replaced(trained):
    runs = trained / "runs" / "t"
    before = _tree(trained)
    refused = [
        (["--out", "runs/t/1"], "holds another run"),  # onto a finished run
        (["--out", "runs/img/1"], "holds another run"),  # another spec's run
        (["--resume", "runs/missing"], "no such checkpoint"),  # a missing folder: nothing written in runs/
        (["--resume", "data.csv"], "not a specc checkpoint"),  # not a checkpoint: no t.py beside it
        (["--resume", "/etc/passwd"], "not a specc checkpoint"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "gpu"], ""),
        (["--resume", "runs/img/1", "--epochs", "5"], "another spec"),  # the identity check, in the script
    ]
    for args, message in refused:
        proc = _specc("train", "t.yaml", *args, cwd=trained)
        assert proc.returncode in (1, 3), (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert _tree(trained) == before, args  # no folder, no script, no `latest` change
    assert (runs / "latest").read_text() == "1\n"
    assert not Path("/etc/t.py").exists()
    # a run already at its epochs says so instead of "done in 0.0 s"
    done = runtime.load_checkpoint(str(runs / "1" / "checkpoint.pt"))["epoch"]
    proc = _specc("train", "t.yaml", "--resume", "runs/t/1", "--epochs", str(done), cwd=trained)
    assert proc.returncode == 1 and "nothing left to train" in proc.stderr and f"--epochs {done + 1}" in proc.stderr


def test_latest_names_only_runs_with_a_checkpoint_under_concurrency(tmp_path):
    root = tmp_path / "runs"
    folders = [runtime.new_run_folder(str(root)) for _ in range(12)]
    assert not (root / "latest").exists()  # made folders are not runs yet
    threads = [
        threading.Thread(target=runtime.save_checkpoint, args=(os.path.join(f, "checkpoint.pt"), {"n": i}))
        for i, f in enumerate(folders)
    ]
    for thread in reversed(threads):
        thread.start()
    for thread in threads:
        thread.join()
    assert (root / "latest").read_text() == "12\n"
    # a `latest` that names a path, or a run without a checkpoint, is not followed
    for text in ("/etc\n", "../../x\n", "13\n", "1; rm -rf /\n"):
        (root / "latest").write_text(text)
        assert runtime.find_checkpoint(str(root)) == os.path.join(str(root), "12", "checkpoint.pt")
    assert runtime.find_checkpoint(str(root / "latest")).endswith(os.path.join("12", "checkpoint.pt"))
    with pytest.raises(ValueError, match="no checkpoint here"):
        runtime.find_checkpoint(str(tmp_path))


# --------------------------------------------------------------------------- 3. injection: terminal and CSV


def _poisoned(trained: Path, classes: list) -> Path:
    """The trained run's checkpoint with other class names and a recomputed checksum."""
    state = runtime.load_checkpoint(str(trained / "runs" / "img" / "1" / "checkpoint.pt"))
    state["data"]["classes"] = classes
    path = trained / "poisoned" / "checkpoint.pt"
    runtime.save_checkpoint(str(path), state)
    return path


def test_predictions_are_escaped_on_the_terminal_and_in_csv(trained, capsys):
    from PIL import Image

    classes = ["\x1b]0;pwned\x07\x1b[2J", '=HYPERLINK("http://x")', 'a"\n=1+1']
    checkpoint = _poisoned(trained, classes)
    image = trained / "\x1b[31mred\u202e.png"
    Image.new("L", (8, 8), 200).save(image)
    out = trained / "out.csv"
    code = main(["predict", str(trained / "img.yaml"), str(image), "--checkpoint", str(checkpoint), "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "\x1b" not in printed and "\u202e" not in printed and "\x07" not in printed
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["input", "prediction", "probability"] and len(rows) == 2
    assert all("\x1b" not in cell and "\n" not in cell for cell in rows[1])
    assert rows[1][1][0] not in "=+-@" and rows[1][0][0] not in "=+-@"
    assert 0 <= float(rows[1][2]) <= 1
    # top-k with probabilities, summing to at most 1
    code = main(["predict", str(trained / "img.yaml"), str(image), "--checkpoint", str(checkpoint), "--top-k", "3"])
    printed = capsys.readouterr().out
    assert code == 0 and printed.count("(0.") + printed.count("(1.") == 3 and "\x1b" not in printed


# --------------------------------------------------------------------------- 4. inputs: bounded, never blocking


def test_predict_inputs_are_bounded_located_and_never_block(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)  # the spec's CSV path is relative
    from PIL import Image

    spec, img = str(trained / "t.yaml"), str(trained / "img.yaml")
    fifo = trained / "pipe.png"
    os.mkfifo(fifo)
    folder = trained / "folder"
    folder.mkdir()
    os.mkfifo(folder / "x.png")
    Image.new("L", (6000, 6000)).save(trained / "huge.png")  # 36 M pixels in a small file
    Image.new("L", (9, 7)).save(trained / "other.png")
    cases = {
        "a.csv": ("a,b,c\n1,2,3\n", ":1: no column 'd'"),
        "b.csv": ("a,b,c,d\n1,2\n", "b.csv:2:3: column 'c' holds nothing"),
        "c.csv": ("a,b,c,d\n", "a header and no data rows"),
        "d.csv": ("d,c,b,a\n1,2,nan,4\n", "d.csv:2:3: column 'b' holds 'nan'"),
        "e.csv": ("a,b,c,d\n1,2,3,\x1b[2Jx\n", "column 'd' holds '\\x1b[2Jx'"),
        "f.csv": ("a,b,c,d\n1,inf,3,4\n", "not a finite number"),
    }
    for name, (text, _) in cases.items():
        (trained / name).write_text(text)
    expected = [(spec, trained / n, m) for n, (_, m) in cases.items()] + [
        (spec, fifo, "not a CSV file" if str(fifo).endswith(".csv") else "this model reads CSV rows"),
        (img, fifo, "not an image file"),
        (img, folder, "not an image file"),
        (img, trained / "huge.png", "more than the 33,554,432"),
        (img, trained / "other.png", "a 9x7 image gives an input of shape (1, 7, 9)"),
        (img, trained / "a.csv", "trained on images, not CSV rows"),
        (img, trained / "missing.png", "No such file"),
    ]
    for spec_path, path, message in expected:
        code = main(["predict", spec_path, str(path)])
        err = capsys.readouterr().err
        assert code == 1 and message in err and err.count("\n") == 1, (path, err)
        assert "\x1b" not in err


# --------------------------------------------------------------------------- 5. checkpoints: every form, checked


def _with_checksum(payload: bytes) -> bytes:
    data = payload[:-2] + (77).to_bytes(2, "little")
    return data + b"specc-sha256:" + hashlib.sha256(data).hexdigest().encode()


def test_checkpoints_of_every_form_and_with_wrong_contents(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    spec = str(trained / "img.yaml")
    good = runtime.load_checkpoint(str(trained / "runs" / "img" / "1" / "checkpoint.pt"))
    payloads = {
        "tensor": torch.zeros(3),
        "no_identity": {k: v for k, v in good.items() if k != "identity"},
        "string_identity": {**good, "identity": "x"},
        "wrong_shape": {**good, "model": {k: torch.zeros(2, 2) for k in good["model"]}},
        "bad_data": {**good, "data": {"input": "x", "task": "classes"}},
    }
    for name, payload in payloads.items():
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        path = trained / f"{name}.pt"
        path.write_bytes(_with_checksum(buffer.getvalue()))
        for command in (["eval", spec, "--split", "train"], ["predict", spec, str(trained / "other.png")]):
            assert main([*command, "--checkpoint", str(path)]) == 1, name
            err = capsys.readouterr().err
            assert "not a specc checkpoint" in err or "does not fit" in err or "another spec" in err, (name, err)
    for form in ("runs/img/1", "runs/img", "runs/img/latest", "runs/img/1/checkpoint.pt"):
        assert main(["eval", spec, "--split", "train", "--checkpoint", str(trained / form)]) == 0, form
        capsys.readouterr()


def test_export_takes_every_checkpoint_form_and_reports_nothing_false(trained, capsys):
    spec = str(trained / "img.yaml")
    for form in ("runs/img/1", "runs/img/latest", "runs/img"):
        out = trained / "m.pt2"
        assert main(["export", spec, "--checkpoint", str(trained / form), "--format", "pt2", "-o", str(out)]) == 0
        assert "max |difference|" in capsys.readouterr().out
    good = runtime.load_checkpoint(str(trained / "runs" / "img" / "1" / "checkpoint.pt"))["model"]
    fifo = trained / "export.fifo"
    os.mkfifo(fifo)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * 5_000_000)
    cases = {
        "complex": {k: v.to(torch.complex64) for k, v in good.items()},
        "bool": {k: v.bool() for k, v in good.items()},
        "double": {k: v.double() for k, v in good.items()},
        "nan": {k: torch.full_like(v, float("nan")) for k, v in good.items()},
    }
    paths = {"fifo": fifo, "bomb": trained / "bomb.pt"}
    (trained / "bomb.pt").write_bytes(bomb.getvalue())
    for name, state in cases.items():
        torch.save(state, trained / f"{name}.pt")
        paths[name] = trained / f"{name}.pt"
    for name, path in paths.items():
        code = main(["export", spec, "--checkpoint", str(path), "--format", "pt2", "-o", str(trained / "x.pt2")])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1 and "difference 0" not in err, (name, err)
        assert ("dtype" in err) if name in ("complex", "bool", "double") else True, err
        assert ("NaN" in err) if name == "nan" else True, err


# --------------------------------------------------------------------------- 6. import: verified means equal


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(x))


def _frozen():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    return model


def _nan():
    model = nn.Sequential(nn.Linear(4, 2))
    with torch.no_grad():
        model[0].bias.fill_(float("nan"))
    return model


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (Tied, "one tensor (tied weights)"),
        (lambda: nn.Sequential(nn.Conv1d(2, 2, 1), nn.Conv1d(2, 2, 1)).apply(_tie_conv), "tied weights"),
        (_frozen, "frozen"),
        (lambda: nn.Sequential(nn.Linear(4, 2)).double(), "float64"),
        (lambda: nn.Sequential(nn.Linear(4, 2)).half(), "float16"),
        (_nan, "NaN"),
    ],
)
def test_import_never_verifies_what_a_spec_cannot_reproduce(make, message):
    import compiler
    from compiler.interop.decompile import DecompileError

    with pytest.raises(DecompileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compiler.to_spec(make(), (4,) if message != "tied weights" else (2, 3))


def _tie_conv(module):
    if isinstance(module, nn.Sequential):
        module[1].weight = module[0].weight


def test_import_factory_arguments_are_literals_only(tmp_path, monkeypatch, capsys):
    (tmp_path / "factories.py").write_text(
        "import torch.nn as nn\ndef make(num_classes=3, hidden=(5,)):\n"
        "    return nn.Sequential(nn.Linear(4, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "specs"
    out.mkdir()
    args = ["import", "factories:make", "--input", "4", "--arg", "num_classes=10", "--arg", "hidden=(7,)"]
    assert main([*args, "-o", f"{out}/"]) == 0
    text = (out / "make.yaml").read_text()
    assert "out_features: 10" in text and "out_features: 7" in text
    marker = tmp_path / "RAN"
    code = main(["import", "factories:make", "--input", "4", "--arg", f"num_classes=open({str(marker)!r},'w')"])
    assert code == 1 and not marker.exists()
    assert "factories:make() raised" in capsys.readouterr().err
    assert _code(["import", "factories:make", "--input", "4", "--arg", "1x=2"]) == USAGE_ERROR


# --------------------------------------------------------------------------- 7. numbers, names, paths from the command line


@pytest.mark.parametrize(
    ("argv", "env", "code", "message"),
    [
        (["train", "{spec}", "--epochs", "-1"], {}, USAGE_ERROR, "out of range"),
        (["train", "{spec}", "--max-steps", "0"], {}, USAGE_ERROR, "out of range"),
        (["train", "{spec}", "--nproc", "100000"], {}, USAGE_ERROR, "out of range"),
        (["--max-memory", "1e400", "validate", "{spec}"], {}, USAGE_ERROR, "not a size"),
        (["--max-memory=-5GiB", "validate", "{spec}"], {}, USAGE_ERROR, "not a size"),
        (["--max-memory", "nanMB", "validate", "{spec}"], {}, USAGE_ERROR, "not a size"),
        (["validate", "{spec}"], {"SPECC_MAX_MODEL_BYTES": "1e999"}, 1, "SPECC_MAX_MODEL_BYTES=1e999"),
        (["validate", "{spec}"], {"SPECC_DIST_TIMEOUT": "-3"}, 1, "SPECC_DIST_TIMEOUT=-3"),
        (["eval", "{spec}", "--device", "gpu"], {}, USAGE_ERROR, "unknown device 'gpu'"),
        (["predict", "{spec}", "x.png", "--device", "cuda:123"], {}, USAGE_ERROR, "unknown device"),
        (["predict", "{spec}", "x.png", "--top-k", "0"], {}, USAGE_ERROR, "out of range"),
        (["check", "{spec}", "--steps", "-2"], {}, USAGE_ERROR, "out of range"),
        (["train", "{spec}", "--device", "gpu"], {}, 1, "unknown device 'gpu'"),
        (["validate", "{spec}", "--set", "train.epochs=-1"], {}, 1, "--set train.epochs=-1:1:14"),
        (["frobnicate"], {}, USAGE_ERROR, "invalid choice"),
        (["validate", "{missing}"], {}, 1, "missing.yaml: no such file"),
    ],
)
def test_command_line_values_are_validated_like_spec_values(tmp_path, monkeypatch, capsys, argv, env, code, message):
    spec = _project(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    argv = [a.format(spec=spec, missing=tmp_path / "missing.yaml") for a in argv]
    got = _code(argv)
    err = capsys.readouterr().err
    assert got == code and message in err and "Traceback" not in err and ":0:0" not in err, err


def test_output_failures_and_debug(tmp_path):
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "compiler.cli", "schema"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
    assert proc.returncode == 1 and "No space left" in proc.stderr and "Traceback" not in proc.stderr
    spec = _project(tmp_path)
    proc = _specc("predict", str(spec), "nothing.png", "--checkpoint", str(tmp_path), "--debug", cwd=tmp_path)
    assert "Traceback" in proc.stderr and proc.returncode != 0
    os.umask(0o022)
    runtime.write_atomic(str(tmp_path / "f"), b"x")
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_stray_torchrun_environment_is_refused_at_once(tmp_path):
    spec = _project(tmp_path)
    proc = _specc("train", str(spec), cwd=tmp_path, env={"RANK": "1", "WORLD_SIZE": "2"})
    assert proc.returncode == 1 and "RANK=1 WORLD_SIZE=2 in the environment" in proc.stderr
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- 8. --set within a file's bounds


def test_overrides_create_keys_and_stay_within_the_file_bounds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _project(tmp_path)
    import compiler

    loaded = compiler.load_spec(spec, overrides=["train.checkpoint.every_steps=10", "train.log_every=5"])
    assert loaded.train.checkpoint.every_steps == 10
    with pytest.raises(compiler.SpecError) as info:
        compiler.load_spec(spec, overrides=["train.checkpoint.every_stepz=10"])
    assert str(info.value).startswith("--set train.checkpoint.every_stepz=10:1:")
    big = "[" + ",".join(["1"] * 100_000) + "]"
    for overrides, message in (
        ([f"x{i}={big}" for i in range(20)], "more than 1024 KiB"),
        (["a." * 40 + "b=1"], "a key of more than"),
        ([f"v{i}=1" for i in range(2000)], "at most 1,000"),
        (["x=" + "[" * 60 + "]" * 60, "x.0.0.0.0.0.0.0.0=" + "[" * 60 + "]" * 60], "nesting deeper"),
    ):
        with pytest.raises(compiler.SpecError, match=message):
            compiler.load_spec(spec, overrides=overrides)


# --------------------------------------------------------------------------- 9. names: one rule


@pytest.mark.parametrize("branch", ["super", "print", "len", "_op", "_branches", "_then", "add_module", "forward"])
def test_branch_names_the_blocks_use_are_refused(tmp_path, branch):
    import compiler

    text = (
        "name: m\ninput: [4]\nmodel:\n  - merge: add\n    branches:\n"
        f"      {branch}: {{Linear: {{out_features: 4}}}}\n      other: {{Linear: {{out_features: 4}}}}\n"
    )
    with pytest.raises(compiler.SpecError, match="taken by the generated script"):
        compiler.parse_spec(text, "m.yaml")


@pytest.mark.parametrize("name", ["_csv", "_pickle", "torchgen", "json", "yaml", "pydantic", "_thread", "sys"])
def test_spec_names_of_importable_modules_are_refused(name):
    import compiler

    with pytest.raises(compiler.SpecError, match="name of a Python module|a module or class it imports"):
        compiler.parse_spec(f"name: {name}\ninput: [4]\nmodel:\n  - Linear: {{out_features: 2}}\n", "m.yaml")


# --------------------------------------------------------------------------- 10. check: train's budget


def test_check_runs_under_the_model_and_data_budget(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    big = "name: b\ninput: [4096]\nmodel:\n  - Linear: {out_features: 4096}\n" + "\n".join(SPEC.splitlines()[5:])
    (tmp_path / "b.yaml").write_text(big.replace("{{", "{").replace("}}", "}"))
    assert main(["--max-memory", "100MB", "check", "b.yaml"]) == 1  # 64 MiB of weights, held four times
    assert "--max-memory" in capsys.readouterr().err
    fake = IMAGE_SPEC.replace("size: 16, image_size: [1, 8, 8]", "size: 100000, image_size: [3, 512, 512]")
    fake = fake.replace("input: [1, 8, 8]", "input: [3, 512, 512]")
    (tmp_path / "f.yaml").write_text(fake)
    assert main(["check", "f.yaml"]) == 1
    assert "FakeData dataset has" in capsys.readouterr().err
