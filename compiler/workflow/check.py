"""``specc check``: prove the compiled objects and the generated script agree (spec-language.md §8).

The script is rendered to a temporary file and imported; each level of "match" is then
compared between ``compiler.build_model``/``build_training`` and the script's own builders.
Training steps run the script's ``train`` loop (with a fresh ``Run``) twice: once with the compiled objects and
once with the script's own, each after the same seeding.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compiler.front.spec import Spec
from compiler.lower.ir import LayerIR, MergeIR, ModelIR


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


def step_bytes(program: Any, spec: Spec) -> tuple[int, int]:
    """(batch, bytes): an estimate of one training step's activations in ``specc check``: every layer's and merge's
    output for the largest batch it runs (its sample of 4, the spec's batch, in ``mode: batch`` the dataset's
    ``size``), kept for the backward pass and given a gradient there, 4 bytes a value."""
    batch = 4
    if program.training is not None:
        data, mode = program.training.data, spec.train.mode
        size = data.dataset.value("size") if mode == "batch" else None
        batch = max(batch, size if isinstance(size, int) else 1 if mode == "online" else data.batch_size)
    nodes = [node for node in program.model.root.walk() if isinstance(node, (LayerIR, MergeIR))]
    shapes = [node.out_shape for node in nodes if node.out_shape and all(isinstance(d, int) for d in node.out_shape)]
    return batch, sum(math.prod(shape) for shape in shapes) * batch * 4 * 2


def import_script(text: str, name: str, folder: str) -> Any:
    """Import a rendered script as a module (importing it runs nothing)."""
    path = Path(folder) / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    module_spec = importlib.util.spec_from_file_location(f"specc_generated_{name}", path)
    assert module_spec and module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> tuple[bool, str]:
    sa, sb = a.state_dict(), b.state_dict()
    if list(sa) != list(sb):
        return False, f"keys differ: {sorted(set(sa) ^ set(sb))[:3]}"
    for key in sa:
        x, y = sa[key], sb[key]
        if x.shape != y.shape or x.dtype != y.dtype:
            return False, f"{key}: {tuple(x.shape)} {x.dtype} vs {tuple(y.shape)} {y.dtype}"
        if not torch.equal(x, y):
            return False, f"{key}: values differ (max |diff| {(x.double() - y.double()).abs().max().item():.3g})"
    return True, f"{len(sa)} tensors bitwise equal"


def _sample_inputs(model: ModelIR, batch: int = 4) -> tuple[torch.Tensor, ...]:
    """One batch per model input, in the inputs' order."""
    generator = torch.Generator().manual_seed(1234)
    out = []
    for name, shape in (model.inputs or {"x": ()}).items():
        size = (batch, *shape)
        if model.input_dtypes.get(name, model.input_dtype) == "int64":
            out.append(torch.randint(0, 2, size, generator=generator))
        else:
            out.append(torch.randn(size, generator=generator))
    return tuple(out)


def _hyper(obj: Any) -> dict:
    """Hyperparameters of a loss, optimizer or scheduler, comparable across instances."""
    if obj is None:
        return {}
    if isinstance(obj, torch.optim.Optimizer):
        return {
            "defaults": obj.defaults,
            "groups": [{k: v for k, v in g.items() if k != "params"} for g in obj.param_groups],
        }
    return {
        k: v
        for k, v in vars(obj).items()
        if isinstance(v, (int, float, str, bool, tuple, list, type(None)))
        and not k.startswith("_")
        and k not in ("optimizer",)
    }


def compare(spec: Spec, steps: int = 3) -> list[Check]:
    from compiler.pipeline import lower_spec, render_script

    program = lower_spec(spec)
    with tempfile.TemporaryDirectory() as folder:
        script = import_script(render_script(spec), spec.name, folder)
        checks = _model_checks(spec, program.model, script)
        if program.training is not None:
            checks += _training_checks(spec, script, steps)
    return checks


def _model_checks(spec: Spec, model: ModelIR, script: Any) -> list[Check]:
    """Levels 1-3: the module trees, the state dicts and the outputs on a sample input."""
    from compiler.pipeline import build_model

    torch.manual_seed(spec.seed)
    compiled = build_model(spec)
    torch.manual_seed(spec.seed)
    generated = script.build_model()
    checks = [Check("1. module trees print the same", str(compiled) == str(generated))]
    ok, detail = _states_equal(compiled, generated)
    checks.append(Check("2. state dicts: keys, shapes, dtypes, bitwise values", ok, detail))
    if spec.input is not None:
        x = _sample_inputs(model)
        compiled.eval(), generated.eval()
        with torch.no_grad():
            same_eval = _outputs_equal(compiled(*x), generated(*x))
        compiled.train(), generated.train()
        torch.manual_seed(7)
        out_a = compiled(*x)
        torch.manual_seed(7)
        out_b = generated(*x)
        same = same_eval and _outputs_equal(out_a, out_b)
        checks.append(
            Check(
                "3. outputs equal (eval mode, and train mode under one seed)",
                same,
                "input " + ", ".join(str(tuple(t.shape)) for t in x),
            )
        )
    return checks


def _training_checks(spec: Spec, script: Any, steps: int) -> list[Check]:
    """Levels 4-6: loss, optimizer and scheduler, the first batches, and training steps."""
    from compiler.pipeline import build_training

    a = build_training(spec, "cpu")
    b = script.build_all()
    same = all(
        _same_type(p, q) and _hyper(p) == _hyper(q) for p, q in zip((a.loss_fn, a.optimizer, a.scheduler), b[1:4])
    )
    names = ", ".join(type(o).__name__ for o in (a.loss_fn, a.optimizer, a.scheduler) if o is not None)
    return [
        Check("4. loss, optimizer, scheduler: types and hyperparameters", same, names),
        _first_batches(a.train_loader, b[4]),
        _training_steps(spec, script, steps),
    ]


def _same_type(a: Any, b: Any) -> bool:
    """The same class; the script's copy of a runtime helper (GradientDescent) counts as the same."""
    if type(a) is type(b):
        return True
    ours = type(a).__module__ == "compiler.runtime.helpers"
    return ours and type(a).__qualname__ == type(b).__qualname__


def _outputs_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_outputs_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):  # several outputs; a batch's several inputs or targets (a list when collated)
        return type(b) is type(a) and len(a) == len(b) and all(_outputs_equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


def _first_batches(loader_a, loader_b, n: int = 2) -> Check:
    """The first ``n`` batches of each, drawn under the same global RNG state (random transforms use it)."""
    rng = torch.get_rng_state()
    batches_a = _take(loader_a, n)
    torch.set_rng_state(rng)
    batches_b = _take(loader_b, n)
    for i, ((xa, ya), (xb, yb)) in enumerate(zip(batches_a, batches_b)):
        if not (_outputs_equal(xa, xb) and _outputs_equal(ya, yb)):
            return Check("5. first batches of data equal", False, f"batch {i} differs")
    x = batches_a[0][0]
    shapes = ", ".join(str(tuple(t.shape)) for t in x) if isinstance(x, (tuple, list)) else str(tuple(x.shape))
    return Check("5. first batches of data equal", True, f"{n} batches, inputs {shapes}")


def _take(loader, n: int) -> list:
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == n:
            break
    return batches


def _training_steps(spec: Spec, script: Any, steps: int) -> Check:
    from compiler.pipeline import build_training

    def train_steps(objects: tuple) -> tuple[list[float], torch.nn.Module]:
        run = script.Run(script.EPOCHS, max_steps=steps)  # no checkpoint file
        script.train(objects, torch.device("cpu"), run, log=lambda *a: None)
        return [r["loss"] for r in run.history if "loss" in r], objects[0]

    losses_a, model_a = train_steps(tuple(build_training(spec, "cpu")))  # each builder seeds itself first
    losses_b, model_b = train_steps(script.build_all())
    ok, detail = _states_equal(model_a, model_b)
    same_losses = losses_a == losses_b
    return Check(
        f"6. {steps} training steps: identical losses, bitwise weights (CPU)",
        same_losses and ok,
        f"losses {[f'{v:.6g}' for v in losses_a]}" + ("" if ok else f"; {detail}"),
    )


def run_checks(spec: Spec, steps: int = 3, print_fn: Callable[[str], None] = print) -> int:
    checks = compare(spec, steps)
    width = max(len(c.name) for c in checks)
    print_fn(f"specc check {spec.source.filename}: compiled objects vs generated script")
    for c in checks:
        print_fn(f"  {c.name:<{width}}  {'ok  ' if c.ok else 'FAIL'}  {c.detail}")
    failed = [c for c in checks if not c.ok]
    print_fn(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    sys.stdout.flush()
    return 1 if failed else 0
