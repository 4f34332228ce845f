"""A user's workflow: plain-torch checkpoints, provenance, run folders, eval and predict, one-line errors."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT

import compiler
from compiler.cli.commands import main
from compiler.runtime import helpers as runtime

SPEC = """
name: wf
input: [1, 8, 8]
model:
  - Flatten
  - Linear: {{out_features: 3}}
data:
  dataset: {{FakeData: {{size: 48, image_size: [1, 8, 8], num_classes: 3}}}}
  transforms: [ToTensor]
  val_split: 0.25
  batch_size: 8
loss: CrossEntropyLoss
optimizer: {{{optimizer}: {{lr: {lr}}}}}
train: {{epochs: 2, log_every: 1000, metrics: [accuracy], device: cpu, checkpoint: {{dir: {root}}}}}
"""


def _spec(tmp_path, name="wf", optimizer="SGD", lr=0.1, hidden=None):
    text = SPEC.format(optimizer=optimizer, lr=lr, root=tmp_path / "runs")
    if hidden:
        text = text.replace("  - Linear:", f"  - Linear: {{out_features: {hidden}}}\n  - Linear:")
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _script(tmp_path, spec_path):
    script = tmp_path / (spec_path.stem + ".py")
    script.write_text(compiler.render_script(compiler.load_spec(spec_path)))
    return script


def _run(script, *args, cwd=None):
    return subprocess.run(
        [sys.executable, str(script), *args], check=False, capture_output=True, text=True, timeout=300, cwd=cwd
    )


# --------------------------------------------------------------------------- 1. checkpoints


def test_checkpoint_is_plain_torch_and_refuses_a_decompression_bomb(tmp_path):
    path = tmp_path / "c.pt"
    runtime.save_checkpoint(str(path), {"w": torch.arange(4.0)})
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(4.0))
    # a compressed entry, with a valid trailer: refused before torch.load sees it
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * 10_000_000)
    import hashlib

    data = buffer.getvalue()[:-2] + (77).to_bytes(2, "little")
    path.write_bytes(data + b"specc-sha256:" + hashlib.sha256(data).hexdigest().encode())
    with pytest.raises(ValueError, match="decompression bomb") as info:
        runtime.load_checkpoint(str(path))
    assert str(path) in str(info.value)


def test_load_checkpoint_reads_only_regular_files(tmp_path):
    with pytest.raises(ValueError, match="not a checkpoint file"):
        runtime.load_checkpoint(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a checkpoint file"):
        runtime.load_checkpoint(str(fifo))  # never blocks
    with pytest.raises(ValueError, match="No such file"):
        runtime.load_checkpoint(str(tmp_path / "missing.pt"))


# --------------------------------------------------------------------------- 2, 3, 5, 6: through the script


def test_runs_provenance_eval_predict_and_errors(tmp_path):
    spec = _spec(tmp_path)
    script = _script(tmp_path, spec)
    runs = tmp_path / "runs"
    for n in (1, 2):  # runs are never overwritten
        proc = _run(script, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert (runs / str(n) / "checkpoint.pt").is_file() and not (runs / str(n) / "model.pt").exists()
        assert (runs / "latest").read_text().strip() == str(n)
    assert not (runs / "latest").is_symlink()
    rows = (runs / "1" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss") and len(rows) == 1 + 2 * 5 + 2  # 5 steps an epoch, 2 epochs
    weights = torch.load(runs / "1" / "checkpoint.pt", weights_only=True)["model"]  # model.pt: on demand
    model = compiler.build_model(compiler.load_spec(spec))
    model.load_state_dict(weights)

    # --resume a run folder: continues in that folder, epochs may change
    proc = _run(script, "--resume", str(runs / "1"), "--epochs", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert runtime.load_checkpoint(str(runs / "1" / "checkpoint.pt"))["epoch"] == 3
    assert not (runs / "3").exists()

    # eval and predict, in the script and through the API and the CLI
    proc = _run(script, "--eval", cwd=tmp_path)
    assert proc.returncode == 0 and "accuracy" in proc.stdout, proc.stderr
    result = compiler.evaluate(spec, runs / "1")
    assert set(result) == {"loss", "accuracy"}
    assert f"{result['loss']:.6f}" in _run(script, "--eval", "--resume", str(runs / "1"), cwd=tmp_path).stdout
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (8, 8), (i * 100, 50, 20)).save(images / f"{i}.png")
    predictions = compiler.predict(spec, runs / "1", [str(images)])
    assert [name for name, _ in predictions] == [str(images / "0.png"), str(images / "1.png")]
    assert all(p in {"0", "1", "2"} for _, p in predictions)
    proc = _run(script, "--predict", str(images), "--resume", str(runs / "1"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{n}: {p}" for n, p in predictions]

    # another spec's checkpoint is refused, naming what differs
    for kwargs, expected in (
        ({"optimizer": "Adam", "lr": 0.1}, "optimizer: SGD in the checkpoint, Adam here"),
        ({"lr": 0.5}, "lr: 0.1 in the checkpoint, 0.5 here"),
        ({"hidden": 5}, "model: layer 1.weight: (3, 64) in the checkpoint, (5, 64) here"),
    ):
        other = _script(tmp_path, _spec(tmp_path, name="other", **kwargs))
        proc = _run(other, "--resume", str(runs / "1"), cwd=tmp_path)
        assert proc.returncode == 1 and expected in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr

    # evaluating and predicting need the model to match, not the optimizer: lr changed since training
    other = _script(tmp_path, _spec(tmp_path, name="relearnt", lr=0.5))
    proc = _run(other, "--eval", "--resume", str(runs / "1"), cwd=tmp_path)
    assert proc.returncode == 0 and f"{result['loss']:.6f}" in proc.stdout, proc.stderr
    proc = _run(other, "--predict", str(images), "--resume", str(runs / "1"), cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.splitlines() == [f"{n}: {p}" for n, p in predictions], proc.stderr
    assert compiler.evaluate(tmp_path / "relearnt.yaml", runs / "1") == result

    # bad --resume: one line, exit 1, no traceback
    good = (runs / "1" / "checkpoint.pt").read_bytes()
    bad = tmp_path / "bad.pt"
    for content in (b"", good[: len(good) // 2], good[:100] + bytes([good[100] ^ 1]) + good[101:]):
        bad.write_bytes(content)
        proc = _run(script, "--resume", str(bad), cwd=tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and str(bad) in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    for path in (tmp_path / "missing.pt", images):
        proc = _run(script, "--resume", str(path), cwd=tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    proc = _run(script, "--resume", str(bad), "--debug", cwd=tmp_path)
    assert "Traceback" in proc.stderr


def test_cuda_without_cuda_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _run(_script(tmp_path, _spec(tmp_path)), "--device", "cuda", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: CUDA is not available on this machine; use --device cpu"


def test_offline_download_is_one_line(tmp_path):
    text = (ROOT / "specs" / "mnist_cnn.yaml").read_text().replace("root: data", f"root: {tmp_path / 'nodata'}")
    spec = tmp_path / "offline.yaml"
    spec.write_text(text)
    script = _script(tmp_path, spec)
    env = dict(os.environ, http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    proc = subprocess.run(
        [sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert proc.returncode == 3, proc.stderr
    assert "could not download MNIST: no network; put the files under" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_run_folder_is_one_line(tmp_path):
    script = _script(tmp_path, _spec(tmp_path))
    (tmp_path / "ro").mkdir(mode=0o500)
    proc = _run(script, "--out", str(tmp_path / "ro"), cwd=tmp_path)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr


def test_disk_full_is_one_line(tmp_path):
    """ENOSPC while saving: the script's error path, driven in-process."""
    from compiler.workflow.check import import_script

    script = import_script(compiler.render_script(compiler.load_spec(_spec(tmp_path))), "wf_full", str(tmp_path))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "checkpoint.pt")

    script.write_atomic = full
    assert script.main(["--out", str(tmp_path / "run")]) == 3


def _ctrl_c_reaches_it() -> None:
    """A child's SIGINT as a terminal gives it: a suite started in the background by a non-interactive shell has
    SIGINT ignored, and a child inherits that (its Ctrl-C would do nothing)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_prints_the_resume_command(tmp_path):
    spec = _spec(tmp_path).read_text().replace("size: 48", "size: 4000").replace("epochs: 2", "epochs: 50")
    spec = spec.replace("checkpoint: {dir:", "checkpoint: {every_steps: 5, dir:")
    (tmp_path / "slow.yaml").write_text(spec)
    script = _script(tmp_path, tmp_path / "slow.yaml")
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        preexec_fn=_ctrl_c_reaches_it,  # noqa: PLW1509
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "runs" / "1" / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert f"resume with: python {script} --resume {tmp_path / 'runs' / '1'}" in err, err


def test_specc_train_ctrl_c_while_the_script_imports_torch_prints_one_line(tmp_path):
    """Ctrl-C reaches `specc train` while its script is still importing torch: one line, exit 130, no traceback."""
    spec = _spec(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "compiler.cli", "train", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(compiler.__file__).parent.parent)},
        preexec_fn=_ctrl_c_reaches_it,  # noqa: PLW1509
    )
    assert proc.stdout.readline().startswith("running ")  # the script has just been started
    time.sleep(0.3)  # inside `import torch` (about 2 s here)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err, err


# --------------------------------------------------------------------------- specc train, eval, predict


def test_specc_train_eval_predict(tmp_path, capsys):
    spec = _spec(tmp_path)
    assert main(["train", str(spec)]) == 0
    assert main(["train", str(spec), "--epochs", "1"]) == 0
    runs = tmp_path / "runs"
    assert (runs / "latest").read_text().strip() == "2"
    for name in ("checkpoint.pt", "metrics.json", "metrics.csv", "loss.png", "wf.py"):
        assert (runs / "1" / name).is_file(), name
    assert len(json.loads((runs / "2" / "metrics.json").read_text())["history"]) == 5 + 1
    capsys.readouterr()
    assert main(["eval", str(spec), "--checkpoint", str(runs / "1")]) == 0
    assert "val loss" in capsys.readouterr().out
    assert main(["eval", str(spec), "--checkpoint", str(tmp_path / "nothing.pt")]) == 1
    assert "nothing.pt" in capsys.readouterr().err
    from PIL import Image

    Image.new("L", (8, 8), 128).save(tmp_path / "x.png")
    assert main(["predict", str(spec), str(tmp_path / "x.png"), "-o", str(tmp_path / "out.csv")]) == 0
    assert (tmp_path / "out.csv").read_text().startswith("input,prediction,probability\n")
    bad = _spec(tmp_path, name="bad", lr=0.5)
    assert main(["train", str(bad), "--resume", str(runs / "1")]) == 1  # the script printed why (tested above)


def test_csv_prediction_uses_the_training_statistics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # CSV paths stay inside the folder specc runs in
    rows = ["a,b,label"] + [f"{i},{100 + 3 * i},{i % 2}" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "new.csv").write_text("a,b\n1,103\n2,106\n")
    spec = tmp_path / "c.yaml"
    spec.write_text(f"""
name: c
input: [2]
model: [{{Linear: {{out_features: 2}}}}]
data: {{dataset: {{CSV: {{path: t.csv, target: label}}}}, normalize: standardize, batch_size: 8}}
loss: CrossEntropyLoss
optimizer: {{SGD: {{lr: 0.1}}}}
train: {{epochs: 1, device: cpu, checkpoint: {{dir: {tmp_path / "runs"}}}}}
""")
    script = _script(tmp_path, spec)
    assert _run(script, cwd=tmp_path).returncode == 0
    state = runtime.load_checkpoint(str(tmp_path / "runs" / "1" / "checkpoint.pt"))
    assert state["data"]["csv"]["columns"] == ["a", "b"]
    assert state["data"]["csv"]["scaling"]["method"] == "standardize"
    predictions = compiler.predict(spec, None, [str(tmp_path / "new.csv")])
    assert [n for n, _ in predictions] == [f"{tmp_path / 'new.csv'}:2", f"{tmp_path / 'new.csv'}:3"]
    proc = _run(script, "--predict", str(tmp_path / "new.csv"), cwd=tmp_path)
    assert proc.stdout.splitlines() == [f"{n}: {p}" for n, p in predictions]


# --------------------------------------------------------------------------- 7. multi-line Compose


@pytest.mark.skipif(
    shutil.which("ruff") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "ruff")),
    reason="ruff is in the dev extra",
)
def test_long_transform_lists_render_ruff_clean(tmp_path):
    transforms = "RandomHorizontalFlip, RandomVerticalFlip, {RandomRotation: {degrees: 10}}, {Pad: {padding: 2}}, {CenterCrop: {size: 8}}, ToTensor, {Normalize: {mean: [0.5], std: [0.5]}}"
    for speed in ("tutorial", "auto"):
        text = SPEC.format(optimizer="SGD", lr=0.1, root="runs/x").replace("[ToTensor]", f"[{transforms}]")
        text = text.replace("device: cpu", f"device: cpu, speed: {speed}")
        script = tmp_path / f"many_{speed}.py"
        script.write_text(compiler.render_script(compiler.parse_spec(text, "many.yaml")))
        assert "transforms.Compose(\n        [\n            transforms.RandomHorizontalFlip()" in script.read_text()
        ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
        for command in (["check"], ["format", "--check"]):
            proc = subprocess.run(
                [ruff, *command, "--line-length", "120", str(script)], check=False, capture_output=True, text=True
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr


def test_killing_specc_train_ends_its_training_script(tmp_path):
    """The script runs as specc train's child: SIGKILL the parent and the child goes too (PR_SET_PDEATHSIG)."""
    import signal
    import time

    out = tmp_path / "run"
    parent = subprocess.Popen(
        [sys.executable, "-m", "compiler.cli", "train", "specs/mlp_gd.yaml", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def children() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if str(out).encode() in cmdline and int(entry) != parent.pid:
                    found.append(int(entry))
        return found

    deadline = time.monotonic() + 60
    while not children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert children(), "the training script never started"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not children(), "the training script outlived specc train"
