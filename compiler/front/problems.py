"""The one problem collector every check of every stage writes to; raised once, at the end."""

from __future__ import annotations

from compiler.errors import MAX_PROBLEMS, Problem, SpecError
from compiler.front.load import Path_, Source


class Problems:
    """Errors and warnings found while checking one spec, each located in its source."""

    def __init__(self, source: Source):
        self.source = source
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def fail(self, path: Path_, message: str, fix: str = "") -> None:
        self.errors.append(self.source.problem(path, message, fix))
        if len(self.errors) >= MAX_PROBLEMS:  # a broken or hostile spec: report the first ones, fast
            stop = self.source.problem(path, f"stopping after {MAX_PROBLEMS} problems", "fix these first")
            raise SpecError([*self.errors, stop], self.source.text, self.source.texts)

    def warn(self, path: Path_, message: str, fix: str = "") -> None:
        self.warnings.append(self.source.problem(path, message, fix, severity="warning"))

    def count(self) -> int:
        return len(self.errors)

    def raise_if_any(self) -> None:
        """Raise the errors, with the warnings beside them (a warning often names the cause of an error)."""
        if self.errors:
            raise SpecError(self.errors + self.warnings, self.source.text, self.source.texts)
