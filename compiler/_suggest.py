"""'Did you mean' suggestions for misspelt names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Names people write from other libraries or from memory, and the torch name they mean.
SYNONYMS = {"learning_rate": "lr", "lr_rate": "lr", "dropout": "p", "drop_prob": "p", "kernel": "kernel_size"}


def closest(name: str, choices: Iterable[str]) -> str | None:
    choices = list(choices)
    if SYNONYMS.get(name) in choices:  # `learning_rate` for `lr`: too far apart for difflib
        return SYNONYMS[name]
    lowered = {c.lower(): c for c in choices}
    if name.lower() in lowered:  # a case slip: `relu` for `ReLU`
        return lowered[name.lower()]
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if not match:
        match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
        match = [lowered[m] for m in match]
    return match[0] if match else None


def did_you_mean(name: str, choices: Iterable[str], otherwise: str = "") -> str:
    match = closest(name, choices)
    if match is not None:
        return f"did you mean {match!r}?"
    return otherwise
