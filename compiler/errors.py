"""Located problems and the one exception every bad spec raises."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PROBLEMS = 100  # per spec; past this, validation stops (an alias bomb of typos stays fast)


def visible(text: str) -> str:
    """``text`` safe to print on a terminal: every character that is not printable becomes a visible escape.

    ESC and CSI (terminal escape sequences), BEL, carriage returns, other C0/C1 controls, bidi overrides
    and isolates (U+202A-202E, U+2066-2069), zero-width and other format characters, line and paragraph
    separators: a message or an excerpt can neither clear the screen, set the title, fake an "OK", nor
    reorder what the reader sees. A space stays a space.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


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
        where = f"{visible(self.file)}:{self.line}:{self.col}: " if self.line > 0 else f"{visible(self.file)}: "
        kind = "warning: " if self.severity == "warning" else ""
        path = f"{visible(self.path)}: " if self.path else ""
        fix = f" Fix: {visible(self.fix)}" if self.fix else ""
        return f"{where}{kind}{path}{visible(self.message)}{fix}"


class SpecError(Exception):
    """Raised for every bad spec; ``str(err)`` lists each problem as ``file:line:col: message``."""

    def __init__(self, problems: list[Problem], source_text: str | None = None, texts: dict[str, str] | None = None):
        self.problems = sorted(set(problems))
        self.source_text = source_text
        self.texts = texts or {}  # file -> text, when a spec extends others (`base:`): each problem's own file
        self._lines = source_text.splitlines() if source_text else []  # split once, not once per excerpt
        super().__init__("\n".join(str(p) for p in self.problems))

    def excerpt(self, problem: Problem) -> str:
        """The source line of a problem with a caret under its column (for the CLI)."""
        if self.texts:
            text = self.texts.get(problem.file)
            return _excerpt(text.splitlines(), problem) if text else ""
        if not self.source_text or problem.line < 1:
            return ""
        return _excerpt(self._lines, problem)


def _excerpt(lines: list[str], problem: Problem) -> str:
    if not 0 < problem.line <= len(lines):
        return ""
    text = lines[problem.line - 1]
    if len(text) > 160:
        return ""
    caret = len(visible(text[: max(problem.col - 1, 0)]))  # escapes widen the line: keep the caret under it
    return f"  {problem.line:>4} | {visible(text)}\n       | {' ' * caret}^"


class RenderError(ValueError):
    """A valid model the generated script cannot express (a plugin layer it cannot import); one line."""
