"""The speed options (docs/spec-language.md §10) on the CPU: both backends agree, resume stays exact.

GPU-only paths (CUDA graphs, bf16 throughput) are measured by bench/gpu.py on a CUDA machine.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import compiler
from compiler.runtime import helpers as runtime
from compiler.runtime.helpers import load_checkpoint
from compiler.workflow.check import compare, import_script

FAST = """
name: fast_probe
input: [1, 28, 28]
model:
  - Conv2d: {{out_channels: 8, kernel_size: 3, padding: 1}}
  - BatchNorm2d
  - ReLU
  - MaxPool2d: 2
  - Flatten
  - Dropout: 0.2
  - Linear: {{out_features: 10}}
data:
  dataset: {{MNIST: {{root: data}}}}
  transforms: [RandomHorizontalFlip, ToTensor, {{Normalize: {{mean: [0.5], std: [0.5]}}}}]
  batch_size: 64
  val_split: 0.05
loss: CrossEntropyLoss
optimizer: {{Adam: {{lr: 0.001}}}}
train:
  epochs: 2
  log_every: 1000
  device: cpu
{options}
"""


def _spec(options):
    return compiler.parse_spec(FAST.format(options=options), "fast.yaml")


@pytest.mark.parametrize(
    "options",
    [
        "  precision: bf16\n  channels_last: true\n  data_on_device: true",
        "  precision: fp16",
        "  speed: auto",
        "  speed: auto\n  precision: bf16",
        "  speed: auto\n  precision: fp32",
        "  data_on_device: true\n  cuda_graph: true\n  cudnn_benchmark: true",
    ],
    ids=[
        "bf16+channels_last+data_on_device",
        "fp16+scaler",
        "speed-auto",
        "speed-auto-bf16",
        "speed-auto-fp32",
        "cuda_graph-spec-on-cpu",
    ],
)
def test_fast_options_keep_compiled_and_generated_equal(options):
    failed = [f"{c.name}: {c.detail}" for c in compare(_spec(options), steps=3) if not c.ok]
    assert not failed, failed


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16-cpu", "no-bf16-cpu"])
def test_auto_on_the_cpu_follows_the_measured_rules(monkeypatch, bf16):
    """bf16 autocast only on a CPU with bf16 instructions; channels_last on every CPU; data stays in the DataLoader."""
    monkeypatch.setattr(runtime, "cpu_bf16", lambda: bf16)
    expected = ("bf16" if bf16 else "fp32", True, False, False)
    assert runtime.resolve_speed(torch.device("cpu"), "auto", "auto", "auto", "auto") == expected
    # what a spec sets itself is kept
    assert runtime.resolve_speed(torch.device("cpu"), "fp32", False, True, False) == ("fp32", False, True, False)


def test_cpu_bf16_reads_the_cpu_flags():
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo here")
    flags = Path("/proc/cpuinfo").read_text().split()
    assert runtime.cpu_bf16() == ("avx512_bf16" in flags or "amx_tile" in flags)


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16-cpu", "no-bf16-cpu"])
def test_speed_auto_on_the_cpu_trains_as_resolved(tmp_path, bf16):
    """The generated loop under `speed: auto`: the first convolution runs in bf16 exactly when the CPU has bf16 (the
    script's own cpu_bf16 decides), its output is channels_last, Adam is fused."""
    script = import_script(compiler.render_script(_spec("  speed: auto")), f"auto_{bf16}", str(tmp_path))
    script.cpu_bf16 = lambda: bf16
    objects = script.build_all()
    model, optimizer = objects[0], objects[2]
    seen = []
    model[0].register_forward_hook(lambda module, args, out: seen.append(out))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert optimizer.defaults["fused"] is True
    script.train(objects, torch.device("cpu"), script.Run(1, max_steps=2), log=lambda *a: None)
    assert seen[0].dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()


_GLIBC = sys.platform.startswith("linux") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
_FAULTS = """
import resource, sys, torch
from compiler.runtime import helpers as runtime
if sys.argv[1] == "reuse":
    assert runtime.reuse_freed_memory("auto", torch.device("cpu"))
for _ in range(2):
    torch.ones(16 << 20)  # 64 MB, over glibc's largest mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.ones(16 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not _GLIBC, reason="reuse_freed_memory acts on glibc only")
def test_reuse_freed_memory_stops_large_buffers_faulting_in_again():
    """Five 64 MB tensors, allocated and freed in turn: 16,384 page faults each by default (a fresh mmap every
    time), next to none once freed memory is kept. Each case in a fresh process: the setting is process-wide."""

    def faults(mode):
        command = [sys.executable, "-c", _FAULTS, mode]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        return int(subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout)

    assert faults("default") > 5 * 15_000  # every one of the five allocations, 16,384 pages each
    # kept: next to none, except where the kernel pages idle memory out on its own (this VM runs a DAMON
    # `pageout` scheme: 4 runs in 12 faulted one tensor back in), so the bound is two tensors of the five
    assert faults("reuse") < 2 * 16_384 + 1_000


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ("  speed: auto", "auto"),
        ("  reuse_memory: true", True),
        ("  speed: auto\n  reuse_memory: false", None),
        ("  precision: bf16", None),
        ("", None),
    ],
    ids=["auto", "true", "auto-but-false", "other-options", "tutorial"],
)
def test_the_script_main_passes_reuse_memory_on(tmp_path, monkeypatch, options, setting):
    """main() (not train(): the setting is process-wide) hands the spec's setting and the device to
    reuse_freed_memory; a script whose spec leaves it off carries neither the call nor the helper."""
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the MNIST root `data` is relative
    name = f"reuse_{abs(hash(options))}"
    script = import_script(compiler.render_script(_spec(options)), name, str(tmp_path))
    if setting is None:
        assert not hasattr(script, "reuse_freed_memory")
        return
    seen = []
    script.reuse_freed_memory = lambda *args: seen.append(args)  # the pytest process keeps glibc's defaults
    assert script.main(["--device", "cpu", "--max-steps", "1", "--out", str(tmp_path / "run")]) == 0
    assert seen == [(setting, torch.device("cpu"))]


@pytest.mark.parametrize(("setting", "device"), [("auto", "cuda"), ("auto", "mps"), (False, "cpu")])
def test_reuse_freed_memory_leaves_other_devices_and_false_alone(setting, device):
    """`auto` acts on a CPU only (the subprocess test above sees it act there); False never acts."""
    assert runtime.reuse_freed_memory(setting, torch.device(device)) is False


def test_a_speed_auto_run_resumes_and_evaluates_with_the_tutorial_settings(tmp_path, monkeypatch):
    """`speed: auto` makes Adam fused: a kernel choice, not another optimizer. Its checkpoint is evaluated and
    resumed by the same spec without `speed: auto` (and the reverse)."""
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the MNIST root `data` is relative
    auto = import_script(compiler.render_script(_spec("  speed: auto")), "resume_auto", str(tmp_path))
    auto.reuse_freed_memory = lambda *args: None  # the pytest process keeps glibc's defaults
    plain = import_script(compiler.render_script(_spec("")), "resume_plain", str(tmp_path))
    run = str(tmp_path / "run")
    assert auto.main(["--out", run, "--max-steps", "2"]) == 0
    assert plain.main(["--eval", "--resume", run]) == 0
    assert plain.main(["--resume", run, "--out", run, "--max-steps", "3"]) == 0
    assert auto.main(["--resume", run, "--out", run, "--max-steps", "4"]) == 0
    assert load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))["step"] == 4


def test_data_on_device_batches_match_the_loader_without_augmentation():
    """Preloaded batches are the per-sample pipeline's batches, in the same seeded order."""
    spec = compiler.parse_spec(FAST.format(options="  data_on_device: true").replace("RandomHorizontalFlip, ", ""))
    plain = compiler.parse_spec(FAST.format(options="").replace("RandomHorizontalFlip, ", ""))
    fast_loader = compiler.build_training(spec, "cpu").train_loader
    slow_loader = compiler.build_training(plain, "cpu").train_loader
    assert isinstance(fast_loader, runtime.DeviceLoader)
    for (xa, ya), (xb, yb), _ in zip(fast_loader, slow_loader, range(3)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_device_flips_flip_about_half_the_images():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3).repeat(500, 1, 1, 1)
    loader = runtime.DeviceLoader(
        x, torch.zeros(1000), 1000, False, torch.Generator().manual_seed(0), flips=[(-1, 0.5)]
    )
    ((batch, _),) = list(loader)
    flipped = (batch != x).flatten(1).any(dim=1).float().mean().item()
    assert 0.4 < flipped < 0.6
    assert torch.equal(torch.where((batch == x).flatten(1).all(1).view(-1, 1, 1, 1), batch, batch.flip(-1)), x)


@pytest.mark.parametrize(
    "options",
    ["  precision: bf16\n  data_on_device: true", "  speed: auto\n  precision: bf16"],
    ids=["bf16+data_on_device", "speed-auto-bf16-cpu"],
)
def test_resume_is_exact_with_fast_options(tmp_path, options):
    spec = _spec(options)
    script = import_script(compiler.render_script(spec), "fast_resume", str(tmp_path))
    device = torch.device("cpu")
    straight, full = script.build_all(), script.Run(script.EPOCHS)
    script.train(straight, device, full, log=lambda *a: None)
    first, stopped = script.build_all(), script.Run(script.EPOCHS, max_steps=40, checkpoint=str(tmp_path / "c.pt"))
    script.train(first, device, stopped, log=lambda *a: None)
    state = script.load_checkpoint(str(tmp_path / "c.pt"))
    again, resumed = script.build_all(), script.Run(script.EPOCHS)
    resumed.resume(state, again[0], again[2], again[3])
    script.train(again, device, resumed, log=lambda *a: None)
    assert [r.get("loss") for r in resumed.history] == [r.get("loss") for r in full.history]
    assert all(torch.equal(a, b) for a, b in zip(straight[0].state_dict().values(), again[0].state_dict().values()))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("  cuda_graph: true\n  data_on_device: true\n  compile: default", "compile"),
        ("  cuda_graph: true", "data that is not on the device"),
        ("  data_on_device: true\n  cuda_graph: true\n  precision: fp16", "fp16"),
    ],
)
def test_conflicting_options_are_located_errors(options, message):
    with pytest.raises(compiler.SpecError) as info:
        _spec(options)
    assert "cuda_graph cannot be combined with" in str(info.value) and message in str(info.value)
    assert "fast.yaml:" in str(info.value)


def test_data_on_device_refuses_augmentations_it_cannot_apply():
    text = FAST.format(options="  data_on_device: true").replace(
        "RandomHorizontalFlip", "{RandomCrop: {size: 28, padding: 2}}"
    )
    with pytest.raises(
        compiler.SpecError, match="data_on_device applies random flips on the device, but not RandomCrop"
    ):
        compiler.parse_spec(text, "fast.yaml")


def test_compile_runs_on_the_cpu(tmp_path):
    """torch.compile's default mode through the generated loop: the eager losses, within fp32 rounding."""

    def plain(options):  # no dropout: inductor draws its own random numbers, so masks would differ from eager
        text = FAST.format(options=options).replace("  - Dropout: 0.2\n", "")
        return compiler.parse_spec(text, "compile.yaml")

    spec = plain("  compile: default")
    script = import_script(compiler.render_script(spec), "compiled_probe", str(tmp_path))
    started = time.perf_counter()
    history = script.Run(script.EPOCHS, max_steps=3)
    script.train(script.build_all(), torch.device("cpu"), history, log=lambda *a: None)
    eager = import_script(compiler.render_script(plain("")), "eager_probe", str(tmp_path))
    eager_history = eager.Run(eager.EPOCHS, max_steps=3)
    eager.train(eager.build_all(), torch.device("cpu"), eager_history, log=lambda *a: None)
    losses = [r["loss"] for r in history.history if "loss" in r]
    eager_losses = [r["loss"] for r in eager_history.history if "loss" in r]
    assert losses == pytest.approx(eager_losses, rel=1e-3)
    assert time.perf_counter() - started < 600


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SPECC_ACCURACY"), reason="about 3-8 minutes: set SPECC_ACCURACY=1")
def test_speed_auto_keeps_the_readme_accuracy(tmp_path):
    """The README's main job (`specc train specs/mnist_cnn.yaml --epochs 2`) with `speed: auto`: held-out
    accuracy within 0.5 points of the tutorial settings' fp32 run (1,000 digits: 5 of them)."""

    def accuracy(*sets):
        out = tmp_path / str(len(sets))
        command = [sys.executable, "-m", "compiler.cli", "train", "specs/mnist_cnn.yaml", "--epochs", "2"]
        proc = subprocess.run(
            [*command, "--device", "cpu", "--out", str(out), *sets],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        history = json.loads((out / "metrics.json").read_text())["history"]
        return [r["val_accuracy"] for r in history if "val_accuracy" in r][-1]

    fp32, auto = accuracy(), accuracy("--set", "train.speed=auto")
    assert abs(auto - fp32) <= 0.005, (fp32, auto)
