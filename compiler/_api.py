"""The public functions: each runs the stages in order (load -> validate -> lower -> build/render)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Problem, SpecError
from .load import load_file, load_text
from .spec import Spec, validate

if TYPE_CHECKING:
    import torch.nn as nn


class SpecWarning(UserWarning):
    """Something legal in a spec that is usually a mistake (e.g. Linear over a feature map)."""


def _finish(spec: Spec, max_bytes: int | None) -> Spec:
    """Lower the model and the training sections, reporting both stages' problems together."""
    from .lower import lower_model
    from .lower_data import check_sections

    problems: list[Problem] = []
    try:
        spec._ir = lower_model(spec, max_bytes=max_bytes)
    except SpecError as err:  # the data checks still run (those needing the model's shapes skip)
        problems += err.problems
    try:
        check_sections(spec)
    except SpecError as err:
        problems += err.problems
    if problems:
        raise SpecError(problems, spec.source.text)
    for problem in spec.warnings:
        warnings.warn(str(problem), SpecWarning, stacklevel=3)
    return spec


def load_spec(path: str | Path, *, max_bytes: int | None = None) -> Spec:
    """Load, validate and lower a spec file; raise SpecError listing every problem."""
    data, source = load_file(path)
    return _finish(validate(data, source), max_bytes)


def parse_spec(text: str, filename: str = "<string>", *, max_bytes: int | None = None) -> Spec:
    """The same as ``load_spec`` for YAML text."""
    data, source = load_text(text, filename)
    return _finish(validate(data, source), max_bytes)


def _as_spec(spec: Spec | str | Path) -> Spec:
    return spec if isinstance(spec, Spec) else load_spec(spec)


def build_model(spec: Spec | str | Path) -> nn.Sequential:
    """The model as live torch modules. Never reseeds: draws from torch's global RNG."""
    from .build import build_module

    return build_module(_as_spec(spec)._ir)


def build_training(spec: Spec | str | Path, device: Any = None) -> Any:
    """Seed with ``spec.seed``, then build model, loss, optimizer, scheduler and loaders on ``device``."""
    from .training import build_training as _build

    return _build(_as_spec(spec), device)


def render_script(spec: Spec | str | Path) -> str:
    """The standalone script for ``spec`` (imports only torch, torchvision and the stdlib)."""
    from .render import render

    return render(_as_spec(spec))


__all__ = ["Problem", "SpecWarning", "build_model", "build_training", "load_spec", "parse_spec", "render_script"]
