"""The public functions: each runs the stages in order, load -> parse -> lower -> build | render.

    text ──load──> data + Source ──parse──> Spec ──lower──> Program ──build──>  torch objects
                                                                    └──render──> script text

Each stage is a function of the previous stage's result. ``load_spec`` lowers the spec to
validate it; the lowered ``Program`` is remembered for that ``Spec`` object (a weak cache
here, nothing stored on the Spec) so that ``build_model(spec)`` does not lower it twice.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.errors import Problem, SpecError
from compiler.front.compose import compose
from compiler.front.expand import expand
from compiler.front.load import Source, load_file, load_text
from compiler.front.overrides import apply_overrides
from compiler.front.problems import Problems
from compiler.front.spec import Spec, parse
from compiler.lower.ir import Program

if TYPE_CHECKING:
    from torch import nn


class SpecWarning(UserWarning):
    """Something legal in a spec that is usually a mistake (e.g. Linear over a feature map)."""


# id(spec) -> (a weak reference to the spec, its Program without the spec): the cache must not keep the
# spec alive, or every spec ever loaded would stay in memory.
_PROGRAMS: dict[int, tuple[weakref.ref, Program]] = {}


def _lower(spec: Spec, problems: Problems, max_bytes: int | None = None) -> Program | None:
    """Stage 3: the model and the training sections, their problems collected together."""
    from compiler.lower.model import lower_model
    from compiler.lower.training import lower_training

    model = lower_model(spec, problems, max_bytes=max_bytes)
    training = lower_training(spec, model, problems)
    return Program(spec, model, training, problems.warnings) if model is not None else None


def _compile(data: Any, source: Source, max_bytes: int | None) -> Spec:
    """Parse and lower, every problem of both stages raised together as one SpecError."""
    problems = Problems(source)
    data = expand(data, source, problems)
    problems.raise_if_any()  # a broken loop or block leaves text the parser would misreport
    spec = parse(data, problems)
    program = _lower(spec, problems, max_bytes) if spec is not None else None
    problems.raise_if_any()
    assert spec is not None and program is not None
    key = id(spec)
    detached = dataclasses.replace(program, spec=None)
    _PROGRAMS[key] = (weakref.ref(spec, lambda _, cache=_PROGRAMS: cache.pop(key, None)), detached)
    for problem in program.warnings:
        warnings.warn(str(problem), SpecWarning, stacklevel=3)
    return spec


def lower_spec(spec: Spec | str | Path) -> Program:
    """The lowered spec (model IR, training IR, warnings): what every backend takes.

    Taken from the cache when ``load_spec``/``parse_spec`` made this Spec, else lowered now.
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    cached = _PROGRAMS.get(id(spec))
    if cached is not None and cached[0]() is spec:
        return dataclasses.replace(cached[1], spec=spec)
    problems = Problems(spec.source)
    program = _lower(spec, problems)
    problems.raise_if_any()
    assert program is not None
    return program


def load_spec(path: str | Path, *, max_bytes: int | None = None, overrides: Sequence[str] = ()) -> Spec:
    """Load, validate and lower a spec file; raise SpecError listing every problem.

    ``overrides`` are ``"train.epochs=3"``-style settings applied before validation (``specc --set``).
    """
    data, source = compose(*load_file(path))
    return _compile(apply_overrides(data, list(overrides), source), source, max_bytes)


def parse_spec(
    text: str, filename: str = "<string>", *, max_bytes: int | None = None, overrides: Sequence[str] = ()
) -> Spec:
    """The same as ``load_spec`` for YAML text."""
    data, source = compose(*load_text(text, filename), root=os.getcwd())
    return _compile(apply_overrides(data, list(overrides), source), source, max_bytes)


def expand_spec(spec: Spec) -> dict:
    """``spec`` written out in §2's grammar (``specc expand``): blocks, loops, `if:` parts, defaults and
    variables expanded, and every section's defaults filled in. It validates and builds the same model."""
    from compiler.front.expand import written_out

    lower_spec(spec)  # lowering instantiates every block use
    filled: dict[str, Any] = {"version": spec.version, "seed": spec.seed}
    if spec.train is not None:
        filled["train"] = spec.train.model_dump(mode="json")
    return written_out(spec.library, filled)


def build_model(spec: Spec | str | Path) -> nn.Module:
    """The model as live torch modules. Never reseeds: draws from torch's global RNG."""
    from compiler.build.model import build_model as build

    return build(lower_spec(spec).model)


def build_training(spec: Spec | str | Path, device: Any = None) -> Any:
    """Seed with ``spec.seed``, then build model, loss, optimizer, scheduler and loaders on ``device``."""
    from compiler.build.training import build_training as build

    return build(lower_spec(spec), device)


def render_script(spec: Spec | str | Path, lean: bool = False) -> str:
    """The standalone script for ``spec`` (imports only torch, torchvision and the stdlib); ``lean``: the
    nanoGPT-style flavour (one loop, a plain checkpoint with resume; no run folders, torchrun or prediction)."""
    if lean:
        from compiler.render.lean import render_lean

        return render_lean(lower_spec(spec))
    from compiler.render.script import render

    return render(lower_spec(spec))


# Where a spec's runs live: eval, predict, export and the training command all ask here.
def runs_root(spec: Spec) -> str:
    """Where a spec's runs go: ``train.checkpoint.dir``, else ``runs/<name>``; each run in a new numbered folder."""
    checkpoint = spec.train.checkpoint if spec.train else None
    return checkpoint.dir if checkpoint and checkpoint.dir else f"runs/{spec.name}"


def chosen_checkpoint(spec: Spec, checkpoint: str | os.PathLike | None) -> str:
    """The checkpoint eval, predict and export read: a file as given; for a run folder or a folder of runs (default
    the spec's), the run's ``best.pt`` when the spec keeps one (`checkpoint.best`) and it is there, else its last."""
    from compiler.runtime.helpers import find_checkpoint  # imports torch

    path = find_checkpoint(str(checkpoint) if checkpoint else runs_root(spec))
    keeps_best = spec.train is not None and spec.train.checkpoint is not None and spec.train.checkpoint.best
    named_file = checkpoint is not None and os.path.isfile(checkpoint) and os.path.basename(checkpoint) != "latest"
    best = os.path.join(os.path.dirname(path), "best.pt")
    return best if keeps_best and not named_file and os.path.isfile(best) else path


__all__ = [
    "Problem",
    "SpecError",
    "SpecWarning",
    "build_model",
    "build_training",
    "expand_spec",
    "load_spec",
    "lower_spec",
    "parse_spec",
    "render_script",
]
