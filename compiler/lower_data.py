"""Stage 3b: checks of the training sections against the model and the data (placeholder until issue 3)."""

from __future__ import annotations

from .spec import Spec


def check_sections(spec: Spec) -> None:
    return None
