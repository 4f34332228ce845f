"""Names made legal and unique as they are emitted, as torch.fx's ``_Namespace`` does."""

from __future__ import annotations

import builtins
import keyword


class Namespace:
    """Legal, unique Python names: no keywords or builtins, ``_1``, ``_2`` suffixes on clashes."""

    def __init__(self, taken: set[str] = frozenset()):  # type: ignore[assignment]
        self.taken = set(taken)

    def name(self, wanted: str) -> str:
        base = wanted if wanted.isidentifier() else "_" + "".join(c if c.isalnum() else "_" for c in wanted)
        if keyword.iskeyword(base) or hasattr(builtins, base):
            base += "_"
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name
