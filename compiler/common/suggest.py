"""'Did you mean' suggestions for misspelt names.

The search is bounded, so a spec with tens of thousands of names and many misspellings is still
refused in well under a second: names longer than ``MAX_NAME`` get no suggestion, at most ``MAX_SCAN``
choices are looked at, and at most ``MAX_CANDIDATES`` of them (those whose length could reach difflib's
0.6 cutoff at all, those with the same first letter first) are compared, fewer for long names (``MAX_WORK``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Names people write from other libraries or from memory, and the torch name they mean.
SYNONYMS = {"learning_rate": "lr", "lr_rate": "lr", "dropout": "p", "drop_prob": "p", "kernel": "kernel_size"}

MAX_NAME = 64  # characters; difflib's cost grows with the product of the two lengths
MAX_SCAN = 10_000  # choices looked at per suggestion
MAX_CANDIDATES = 100  # choices compared with difflib per suggestion
MAX_WORK = 20_000  # per suggestion, the sum of len(name) * len(choice) over the choices compared


def closest(name: str, choices: Iterable[str]) -> str | None:
    if not isinstance(name, str) or len(name) > MAX_NAME:
        return None
    synonym = SYNONYMS.get(name)
    size, low = len(name), name.lower()
    same_start: list[str] = []  # a slip rarely changes the first letter: compare these first
    others: list[str] = []
    found_synonym = False
    for scanned, choice in enumerate(choices):
        if scanned >= MAX_SCAN or len(same_start) >= MAX_CANDIDATES:
            break
        if not isinstance(choice, str):
            continue
        if choice == synonym:  # `learning_rate` for `lr`: too far apart for difflib
            found_synonym = True
        other = len(choice)
        # difflib's ratio is at most 2 * min / (len + len): skip what cannot reach the 0.6 cutoff
        if other <= MAX_NAME and 10 * min(size, other) >= 3 * (size + other):
            if choice[:1].lower() == low[:1]:
                same_start.append(choice)
            elif len(others) < MAX_CANDIDATES:
                others.append(choice)
    if found_synonym:
        return synonym
    lowered: dict[str, str] = {}
    work = 0
    for choice in (same_start + others)[:MAX_CANDIDATES]:
        work += size * len(choice)  # difflib's cost grows with the product of the lengths
        if work > MAX_WORK:
            break
        lowered.setdefault(choice.lower(), choice)
    if low in lowered:  # a case slip: `relu` for `ReLU`
        return lowered[low]
    match = difflib.get_close_matches(low, list(lowered), n=1, cutoff=0.6)  # case does not count against a match
    return lowered[match[0]] if match else None


def did_you_mean(name: str, choices: Iterable[str], otherwise: str = "") -> str:
    match = closest(name, choices)
    if match is not None:
        return f"did you mean {match!r}?"
    return otherwise
