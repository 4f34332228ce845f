"""Located problems and the one exception every bad spec raises."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PROBLEMS = 100  # per spec; past this, validation stops (an alias bomb of typos stays fast)


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a spec, with where it is and how to fix it."""

    file: str
    line: int
    col: int
    message: str
    path: str = ""
    fix: str = ""
    severity: str = field(default="error", compare=False)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}: "
        kind = "warning: " if self.severity == "warning" else ""
        path = f"{self.path}: " if self.path else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{where}{kind}{path}{self.message}{fix}"


class SpecError(Exception):
    """Raised for every bad spec; ``str(err)`` lists each problem as ``file:line:col: message``."""

    def __init__(self, problems: list[Problem], source_text: str | None = None):
        self.problems = sorted(set(problems))
        self.source_text = source_text
        super().__init__("\n".join(str(p) for p in self.problems))

    def excerpt(self, problem: Problem) -> str:
        """The source line of a problem with a caret under its column (for the CLI)."""
        if not self.source_text or problem.line < 1:
            return ""
        lines = self.source_text.splitlines()
        if problem.line > len(lines):
            return ""
        text = lines[problem.line - 1]
        if len(text) > 160:
            return ""
        return f"  {problem.line:>4} | {text}\n       | {' ' * max(problem.col - 1, 0)}^"
