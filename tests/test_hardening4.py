"""Hardening, fourth pass (issue 22 and issue 23, what the third round left open): the standalone script's own
environment and run-folder checks, `init:` path globs at scale, plugin layers a script cannot import, datasets
absent on disk, and `specc check`'s memory and time bounds. One test per class, with variants of its own."""

from __future__ import annotations

import fnmatch
import os
import random
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from conftest import ROOT, assert_within
from torch import nn

import compiler
from compiler.cli.commands import main
from compiler.front.spec import MAX_INIT_MATCHES, MAX_INIT_PATTERNS
from compiler.runtime import helpers as runtime

SPEC = """
name: s4
input: [6]
model:
  - Linear: {out_features: 3}
data:
  dataset: {Synthetic: {size: 16, inputs: [6], classes: 3}}
  batch_size: 8
loss: CrossEntropyLoss
optimizer: {SGD: {lr: 0.1}}
train: {epochs: 1, device: cpu}
"""
TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _script(folder: Path) -> Path:
    script = folder / "s4.py"
    script.write_text(compiler.render_script(compiler.parse_spec(SPEC, "s4.yaml")))
    return script


def _run(script: Path, *args: str, env: dict | None = None, cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in TORCHRUN}
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


# --------------------------------------------------------------------------- 1. the script's environment


@pytest.mark.parametrize(
    "env, names",
    [
        ({"RANK": "1", "WORLD_SIZE": "2"}, "LOCAL_RANK, MASTER_ADDR, MASTER_PORT"),  # the reproducer
        ({"RANK": "0"}, "WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT"),
        ({"RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "localhost"}, "LOCAL_RANK, MASTER_PORT"),
        ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_PORT": "29500"}, "MASTER_ADDR"),
    ],
)
def test_torchrun_environment_without_its_rendezvous_is_refused_before_any_wait(monkeypatch, env, names):
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"without {names}, which torchrun sets"):
        runtime.torchrun_environment()


@pytest.mark.parametrize(
    "rank, size, local, port, timeout",
    [("2", "2", "0", "1", "300"), ("x", "2", "0", "1", "300"), ("0", "2", "0", "http", "300"),
     ("0", "2", "²", "1", "300"), ("0", "2", "0", "1", "0"), ("0", "2", "0", "1", "1e400"), ("-1", "2", "0", "1", "5")],
)  # fmt: skip
def test_torchrun_numbers_are_checked_like_spec_values(monkeypatch, rank, size, local, port, timeout):
    for name, value in zip(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "SPECC_DIST_TIMEOUT"), (rank, size, local, port, timeout)):  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    with pytest.raises(ValueError, match="whole numbers, RANK below WORLD_SIZE"):
        runtime.torchrun_environment()


def test_the_script_refuses_a_stray_rank_in_one_line_at_once(tmp_path):
    """Every rank prints the refusal (rank 1 used to exit 1 silently: its output went to /dev/null), escaped."""
    script = _script(tmp_path)
    for env in ({"RANK": "1", "WORLD_SIZE": "2"}, {"RANK": "0", "WORLD_SIZE": "8", "MASTER_ADDR": "\x1b[2Jhost"}):
        started = time.perf_counter()
        proc = _run(script, "--out", "run", env={**env, "SPECC_DIST_TIMEOUT": "300"}, cwd=tmp_path)
        assert_within(started, 20, "a refused torchrun environment")
        assert proc.returncode == 1, proc.stderr
        line = _one_line(proc.stderr)
        assert "which torchrun sets with them" in line and "\x1b" not in line
        assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- 2. the script's --out


def test_the_script_never_writes_over_a_finished_run(tmp_path):
    script = _script(tmp_path)
    assert _run(script, "--out", "a", "--max-steps", "1", cwd=tmp_path).returncode == 0
    checkpoint = tmp_path / "a" / "checkpoint.pt"
    stamp = checkpoint.stat().st_mtime_ns, checkpoint.read_bytes()
    (tmp_path / "link").symlink_to("a")
    (tmp_path / "file").write_text("x")
    for args, message in (
        (["--out", "a"], "--out a holds another run (checkpoint.pt)"),
        (["--out", "a/"], "holds another run"),
        (["--out", "link"], "holds another run"),  # the same folder through a link
        (["--out", "file"], "--out file: not a folder"),
    ):
        proc = _run(script, *args, cwd=tmp_path)
        assert proc.returncode == 1 and message in _one_line(proc.stderr), (args, proc.stderr)
    assert (checkpoint.stat().st_mtime_ns, checkpoint.read_bytes()) == stamp
    # continuing its own run into its own folder is no overwrite; another run's resume into it is
    proc = _run(script, "--out", "a", "--resume", "a", "--epochs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _run(script, "--out", "b", "--max-steps", "1", cwd=tmp_path).returncode == 0
    proc = _run(script, "--out", "a", "--resume", "b", "--epochs", "2", cwd=tmp_path)
    assert proc.returncode == 1 and "holds another run" in _one_line(proc.stderr)


@pytest.mark.parametrize("name", ["checkpoint.pt", "model.pt", "metrics.json"])
def test_any_file_of_a_run_marks_its_folder(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=f"holds another run \\({name}\\)"):
        runtime.check_out_folder(str(tmp_path))
    runtime.check_out_folder(str(tmp_path / "new"))  # a new or empty folder is fine
    if name == "checkpoint.pt":  # its own resume
        runtime.check_out_folder(str(tmp_path), str(tmp_path / name))


# --------------------------------------------------------------------------- 3. init: path globs at scale


def _glob_spec(patterns: list[str], repeat: int, outer: int = 1) -> str:
    listed = ", ".join(repr(p) for p in patterns)
    body = f"{{repeat: {repeat}, body: Identity}}"
    model = f"[{{repeat: {outer}, body: [{body}]}}]" if outer > 1 else f"[{body}]"
    return f"name: g\ninput: [4]\nmodel: {model}\ninit:\n  - {{type: Linear, weight: zeros_}}\n  - path: [{listed}]\n    weight: zeros_\n"


@pytest.mark.parametrize(
    "patterns, repeat, outer, message",
    [
        ([f"a?{i}" for i in range(12_000)], 10_000, 10, f"more than {MAX_INIT_PATTERNS:,} `path:` patterns"),
        ([f"*.{i}[!x]*" for i in range(1_001)], 1, 1, "more than 1,000"),
        ([f"b{i}*" for i in range(999)], 10_000, 1, f"9,990,000 matches, more than the {MAX_INIT_MATCHES:,}"),
        ([f"[a-z]{i}" for i in range(101)], 10_000, 1, "1,010,000 matches"),
    ],
)
def test_init_path_globs_are_bounded_before_any_match(patterns, repeat, outer, message):
    started = time.perf_counter()
    with pytest.raises(compiler.SpecError) as info:
        compiler.parse_spec(_glob_spec(patterns, repeat, outer), "g.yaml")
    assert_within(started, 3, "init globs refused")
    problem = next(p for p in info.value.problems if p.severity == "error")
    assert message in problem.message and problem.file == "g.yaml" and problem.line == 6, problem


def test_init_globs_at_the_bound_match_as_fnmatch_does():
    """10 patterns x 100,000 modules validate (quickly: one regex per rule), and the compiled regex answers as
    ``fnmatchcase`` on each pattern does, for every kind of glob."""
    started = time.perf_counter()
    compiler.parse_spec(_glob_spec([f"x{i}?" for i in range(10)], 10_000, 10), "g.yaml")
    assert_within(started, 6, "10 globs x 100,000 modules")
    from compiler.lower.ir import InitRuleIR

    rng = random.Random(4)
    parts = ["*", "?", "[!a]", "[a-c]", "[]]", "[", "a", "b", ".", "0", "1", "\\", "(", "|", "$", "^"]
    for _ in range(300):
        patterns = tuple("".join(rng.choice(parts) for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(1, 4)))
        rule = InitRuleIR((), patterns, {})
        for _ in range(20):
            path = "".join(rng.choice("ab.01]([|$\\\n") for _ in range(rng.randint(0, 6)))
            assert rule.path_matches(path) == any(fnmatch.fnmatchcase(path, p) for p in patterns), (patterns, path)


# --------------------------------------------------------------------------- 4. plugin layers a script cannot import


class Top(nn.Module):  # importable: tests/test_hardening4.py is a module on the path
    def forward(self, x):
        return x


def _local_class() -> type:
    class Local(nn.Module):
        def forward(self, x):
            return x

    return Local


def _memory_module_class() -> type:
    module = types.ModuleType("specc_made_in_memory")  # in sys.modules, but from no file: find_spec fails
    module.Made = type("Made", (nn.Module,), {"__module__": module.__name__, "forward": lambda self, x: x})
    sys.modules[module.__name__] = module
    return module.Made


def _main_class() -> type:
    return type("FromMain", (nn.Module,), {"__module__": "__main__", "forward": lambda self, x: x})


@pytest.mark.parametrize(
    "make, reason",
    [
        (_main_class, "defined in __main__"),
        (_local_class, "not at the top level of a module"),
        (_memory_module_class, "does not name its class in an importable module"),
    ],
)
def test_plugin_layers_a_script_cannot_import_are_refused_at_render_time(make, reason):
    cls = make()
    name = f"P{cls.__name__}{random.randrange(10**9)}"
    compiler.register_layer(cls, name, shape=lambda shape, arguments: shape)
    spec = compiler.parse_spec(f"name: p\ninput: [4]\nmodel: [{name}, {{Linear: {{out_features: 2}}}}]\n", "p.yaml")
    assert len(list(compiler.build_model(spec).children())) == 2  # in this process it builds as it is
    with pytest.raises(compiler.RenderError, match=reason) as info:
        compiler.render_script(spec)
    assert f"layer {name} (register_layer)" in str(info.value) and "\n" not in str(info.value)


def test_an_importable_plugin_still_renders_its_import():
    compiler.register_layer(Top, "Top4", shape=lambda shape, arguments: shape)
    spec = compiler.parse_spec("name: p\ninput: [4]\nmodel: [Top4]\n", "p.yaml")
    assert f"from {Top.__module__} import Top\n" in compiler.render_script(spec)


def test_the_cli_refuses_an_unimportable_plugin_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plug4.py").write_text(
        "import compiler, torch\n"
        "def make():\n"
        "    class Inner(torch.nn.Module):\n"
        "        def forward(self, x):\n"
        "            return x\n"
        "    return Inner\n"
        "compiler.register_layer(make(), 'Inner4', shape=lambda s, a: s)\n"
    )
    (tmp_path / "p.yaml").write_text("name: p\ninput: [4]\nmodel: [Inner4]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--plugin", "plug4", "generate", "p.yaml", "-o", "p.py"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("specc: layer Inner4 (register_layer)") and "internal error" not in err
    assert not (tmp_path / "p.py").exists()


# --------------------------------------------------------------------------- 5. data absent on disk


@pytest.mark.parametrize(
    "dataset, sample", [("MNIST", "[1, 28, 28]"), ("CIFAR10", "[3, 32, 32]"), ("KMNIST", "[1, 28, 28]")]
)
def test_check_with_absent_data_says_what_is_missing(tmp_path, monkeypatch, capsys, dataset, sample):
    monkeypatch.chdir(tmp_path)
    spec = (
        f"name: d\ninput: {sample}\nmodel: [Flatten, {{Linear: {{out_features: 10}}}}]\n"
        f"data: {{dataset: {{{dataset}: {{root: nothing_here, download: true}}}}, transforms: [ToTensor], batch_size: 4}}\n"
        "loss: CrossEntropyLoss\noptimizer: {SGD: {lr: 0.1}}\ntrain: {epochs: 1, device: cpu}\n"
    )
    (tmp_path / "d.yaml").write_text(spec)
    assert main(["check", "d.yaml"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "internal error" not in err, err
    assert f"{dataset}: its files are not under nothing_here" in err and "downloads nothing" in err
    assert not (tmp_path / "nothing_here" / dataset).exists() or not any((tmp_path / "nothing_here").rglob("*.gz"))


def test_eval_with_absent_data_says_what_is_missing(tmp_path, monkeypatch, capsys):
    """Trained on the repository's MNIST files; evaluated where they are not."""
    monkeypatch.chdir(tmp_path)
    spec = (
        f"name: e\ninput: [1, 28, 28]\nmodel: [Flatten, {{Linear: {{out_features: 10}}}}]\n"
        f"data: {{dataset: {{MNIST: {{root: {ROOT / 'data'}}}}}, transforms: [ToTensor], batch_size: 64, val_split: 0.5}}\n"
        "loss: CrossEntropyLoss\noptimizer: {SGD: {lr: 0.1}}\ntrain: {epochs: 1, device: cpu}\n"
    )
    (tmp_path / "e.yaml").write_text(spec)
    spec_object = compiler.load_spec("e.yaml")
    training = compiler.build_training(spec_object)
    run = runtime.Run(1, checkpoint=str(tmp_path / "runs" / "e" / "1" / "checkpoint.pt"))
    run.data = runtime.data_info(training.train_loader.dataset, (1, 28, 28), "classes")
    run.save(training.model, training.optimizer, training.scheduler)
    for root in ("gone", "runs"):  # no folder; a folder without the files
        assert main(["eval", "e.yaml", "--set", f"data.dataset.MNIST.root={root}"]) == 1
        err = capsys.readouterr().err.strip()
        assert err == (
            f"specc eval: MNIST: its files are not under {root}; set `download: true` "
            "(--set data.dataset.MNIST.download=true) to fetch them, or put them there"
        ), err
    with pytest.raises(ValueError, match="its files are not under gone"):  # the Python API: the same ValueError
        compiler.evaluate(compiler.load_spec("e.yaml", overrides=["data.dataset.MNIST.root=gone"]))


# --------------------------------------------------------------------------- 6. specc check's bounds


@pytest.mark.parametrize(
    "spec, batch",
    [
        ("name: a\ninput: [3, 4096, 4096]\nmodel: [{Conv2d: {out_channels: 64, kernel_size: 3}}]\n", "4"),
        (  # small weights, a large batch of wide activations
            (
                "name: a\ninput: [6]\nmodel: [{Linear: {out_features: 200000}}, ReLU, {Linear: {out_features: 3}}]\n"
                "data: {dataset: {Synthetic: {size: 100000, inputs: [6], classes: 3}}, batch_size: 100000}\n"
                "loss: CrossEntropyLoss\noptimizer: {SGD: {lr: 0.1}}\ntrain: {epochs: 1, device: cpu}\n"
            ),
            "100,000",
        ),
        (  # mode: batch: the whole dataset is the batch
            (
                "name: a\ninput: [6]\nmodel: [{Linear: {out_features: 100000}}, {Linear: {out_features: 3}}]\n"
                "data: {dataset: {Synthetic: {size: 1000000, inputs: [6], classes: 3}}, batch_size: 1}\n"
                "loss: CrossEntropyLoss\noptimizer: {SGD: {lr: 0.1}}\ntrain: {epochs: 1, device: cpu, mode: batch}\n"
            ),
            "1,000,000",
        ),
    ],
)
def test_check_refuses_before_allocating_what_exceeds_the_budget(tmp_path, monkeypatch, capsys, spec, batch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text(spec)
    started = time.perf_counter()
    assert main(["--max-memory", "8GiB", "check", "a.yaml"]) == 1
    assert_within(started, 10, "check refused")
    err = capsys.readouterr().err
    assert err.startswith("a.yaml:3:1: model: specc check would need about") and f"for a batch of {batch}" in err
    assert "more than the 8.0 GiB allowed" in err


def test_check_stops_at_its_time_bound_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(
        "name: m\ninput: [1, 4, 4]\nmodel:\n  - repeat: 3000\n    body: {Conv2d: [1, 1, 1]}\n"
    )
    assert main(["check", "m.yaml", "--max-seconds", "1"]) == 1
    assert capsys.readouterr().err == (
        "specc check: stopped after 1 s (--max-seconds): the spec takes longer to check\n"
    )
    import signal

    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


# --------------------------------------------------------------------------- 7. found by the checkpoint fuzzer


def test_a_checkpoint_without_its_data_evaluates_and_predict_says_why_not(tmp_path):
    """Seed 21's one escape: a checksum-valid checkpoint with its `data` key removed raised KeyError."""
    spec = compiler.parse_spec(SPEC, "s4.yaml")
    training = compiler.build_training(spec)
    run = runtime.Run(1, checkpoint=str(tmp_path / "run" / "checkpoint.pt"))
    run.save(training.model, training.optimizer, training.scheduler)
    state = runtime.load_checkpoint(run.checkpoint)
    del state["data"]
    runtime.save_checkpoint(run.checkpoint, state)
    assert "loss" in compiler.evaluate(spec, run.checkpoint, split="train")
    with pytest.raises(ValueError, match="does not say what data"):
        compiler.predict(spec, run.checkpoint, [str(tmp_path / "x.csv")])


def test_a_checkpoint_without_optimizer_state_is_refused_for_resume_in_one_line():
    """A checksum-valid checkpoint may lack what only a resumed run reads: a ValueError naming what is missing."""
    import torch

    from compiler.runtime.helpers import resume_optimizer

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    with pytest.raises(ValueError, match="cannot be resumed: it holds no optimizer, scheduler"):
        resume_optimizer({"torch_rng": 1, "python_rng": 1}, "x.pt", optimizer, scheduler)
    other = torch.optim.Adam(torch.nn.Linear(3, 3).parameters()).state_dict()
    other["param_groups"][0]["params"] = [0, 1, 2]
    state = {"optimizer": other, "scheduler": scheduler.state_dict(), "torch_rng": 1, "python_rng": 1}
    with pytest.raises(ValueError, match="does not fit"):
        resume_optimizer(state, "x.pt", optimizer, scheduler)
    good = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "torch_rng": 1, "python_rng": 1}
    resume_optimizer(good, "x.pt", optimizer, scheduler)


def _with_zip_version(path: Path, version: int) -> None:
    """The checkpoint at ``path`` with every central-directory entry needing zip ``version``, its checksum redone."""
    import hashlib

    body = bytearray(path.read_bytes()[:-77])
    at = body.find(b"PK\x01\x02")
    while at != -1:
        body[at + 6 : at + 8] = version.to_bytes(2, "little")
        at = body.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(body) + b"specc-sha256:" + hashlib.sha256(body).hexdigest().encode())


@pytest.mark.parametrize("version", [64, 93, 65535])
def test_a_checkpoint_of_an_unknown_zip_version_is_one_line_in_every_reader(tmp_path, version):
    """Fuzzer, checkpoint target seed 21: zipfile raises NotImplementedError for a version it cannot extract."""
    from compiler.interop.exporting import ExportError, _plain_state, _state_dict

    path = tmp_path / "checkpoint.pt"
    runtime.save_checkpoint(str(path), {"model": {}})
    _with_zip_version(path, version)
    for read in (runtime.load_checkpoint, runtime.read_weights):
        with pytest.raises(ValueError, match="no readable zip archive|not a specc checkpoint|not a state dict"):
            read(str(path))
    for read in (_state_dict, _plain_state):
        with pytest.raises(ExportError):
            read(str(path))
