"""Python literals for generated code: ``repr``-exact, double-quoted like ruff's formatter."""

from __future__ import annotations

import math
from typing import Any


def literal(value: Any) -> str:
    """Source text that evaluates to ``value``; spec text can never escape it."""
    if isinstance(value, str):
        text = repr(value)  # escapes quotes, backslashes, newlines, NUL, bidi and other controls
        if text.startswith("'") and '"' not in value:
            text = '"' + text[1:-1] + '"'
        return text
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else 'float("-inf")'
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no literal for {type(value).__name__}")
