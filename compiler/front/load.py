"""Stage 1: YAML text -> plain data plus the source position of every value.

Safe by construction: only YAML's core tags are accepted, the nesting depth is checked
*before* the YAML parser sees the text (deep flow nesting crashes libyaml), and aliases
are refused when they would expand past a bound ("billion laughs").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from compiler.common.paths import PathError, read_file
from compiler.errors import Problem, SpecError
from compiler.front.expr import needs_evaluation

Path_ = tuple  # a path into the data: keys and list indices

MAX_BYTES = 1 << 20  # 1 MiB: a spec is a page of YAML, not a data file
MAX_DEPTH = 64  # nesting of mappings and lists
MAX_NODES = 200_000  # values after alias expansion
MAX_ALIASES = 100


@dataclass
class Source:
    """The text a spec came from and where each of its values sits in it.

    A spec that extends another (``base:``, see compiler/front/compose.py) holds values from several
    files: ``origins`` names the file of each value that came from a base, ``extended_by`` which spec
    extends each base, and ``texts`` every file's text (for the excerpt under a problem).
    """

    filename: str
    text: str
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    origins: dict[Path_, tuple[str, int]] = field(default_factory=dict)  # values `--set` gave: (override, column)
    files: dict[Path_, str] = field(default_factory=dict)  # values a `base:` spec gave: its file
    extended_by: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def locate(self, path: Path_) -> tuple[int, int]:
        """Line and column of ``path``, or of its nearest ancestor that has one."""
        return self.positions.get(self._located(path), (1, 1))

    def _located(self, path: Path_) -> Path_:
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        return path

    def problem(self, path: Path_, message: str, fix: str = "", severity: str = "error") -> Problem:
        path = tuple(path)  # a value an override gave, inside one, or (a layer's argument) below it:
        given = [p for p in self.origins if path[: len(p)] == p or len(path) >= 2 and p[: len(path)] == path]
        if given:
            override, col = self.origins[given[-1]]
            return Problem(override, 1, col, message, dotted(path), fix, severity)
        line, col = self.locate(path)
        filename = self.files.get(self._located(path), self.filename)
        if filename != self.filename:
            message += f" (in the base spec {filename}, which {self.extended_by.get(filename, self.filename)} extends)"
        return Problem(filename, line, col, message, dotted(path), fix, severity)


def dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


# YAML 1.2 core-schema scalars: `1e-4` is a float, `yes`/`on` are strings, dates stay strings.
_CORE_RESOLVERS = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (
        "tag:yaml.org,2002:int",
        r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$",
        "-+0123456789",
    ),
    (
        "tag:yaml.org,2002:float",
        (
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
]
_CORE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
}

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _CoreLoader(_Base):  # type: ignore[misc,valid-type]
    """A safe loader whose implicit scalars follow the YAML 1.2 core schema."""

    yaml_implicit_resolvers: ClassVar[dict] = {}


for _tag, _regex, _first in _CORE_RESOLVERS:
    _CoreLoader.add_implicit_resolver(_tag, re.compile(_regex), list(_first))


MAX_INT = 2**63 - 1  # integers are int64, torch's widest: |n| <= 2**63 - 1, checked before any conversion
MAX_EXPRESSIONS = 10_000  # `$references` and arithmetic strings after alias expansion (each one is parsed)
_MAX_DIGITS = {10: len(str(MAX_INT)), 16: len(f"{MAX_INT:x}"), 8: len(f"{MAX_INT:o}")}
_INT_FIX = f"use a smaller number: a spec's integers fit in 64 bits (at most {MAX_INT} in size)"
_FINITE_FIX = "use a finite number: no argument a spec can set takes NaN or infinity"


class _OutOfRange(Exception):
    """A number the loader will not build: too many digits, or not finite."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.message, self.fix = message, fix


def _int(text: str) -> int:
    text = text.replace("_", "")
    base, digits = 10, text
    if text.startswith("0o"):
        base, digits = 8, text[2:]
    elif text.startswith("0x"):
        base, digits = 16, text[2:]
    # count digits first: converting thousands of them is slow, and printing them raises ValueError
    if len(digits.lstrip("+-").lstrip("0")) > _MAX_DIGITS[base]:
        raise _OutOfRange(_too_large(text), _INT_FIX)
    value = int(digits, base)
    if abs(value) > MAX_INT:
        raise _OutOfRange(_too_large(text), _INT_FIX)
    return value


def _too_large(text: str) -> str:
    shown = text if len(text) <= 24 else f"{text[:12]}...{text[-4:]} ({len(text)} characters)"
    return f"integer too large: {shown} (the limit is 2**63 - 1)"


def _float(text: str) -> float:
    low = text.lower()
    if low.endswith(".inf"):
        raise _OutOfRange(f"{text!r} is infinity, not a finite number", _FINITE_FIX)
    if low.lstrip("+-") == ".nan":
        raise _OutOfRange(f"{text!r} is NaN (not a number)", _FINITE_FIX)
    value = float(text)
    if not math.isfinite(value):  # `1e999`, `nan` or `inf` under an explicit `!!float` tag
        shown = text if len(text) <= 24 else f"{text[:12]}... ({len(text)} characters)"
        raise _OutOfRange(f"{shown!r} is not a finite number (as a float it is {value})", _FINITE_FIX)
    return value


_SCALARS = {
    "tag:yaml.org,2002:str": str,
    "tag:yaml.org,2002:int": _int,
    "tag:yaml.org,2002:float": _float,
    "tag:yaml.org,2002:bool": lambda t: t.lower() == "true",
    "tag:yaml.org,2002:null": lambda t: None,
}


def load_text(text: str, filename: str = "<string>") -> tuple[Any, Source]:
    """Parse YAML text into plain data (dict/list/str/int/float/bool/None) and its positions."""
    source = Source(filename, text)
    _check_text(text, source)
    depth_problem = _check_flow_depth(text, source)
    if depth_problem:
        raise SpecError([depth_problem], text)
    root = _compose(text, filename)
    if root is None:
        raise SpecError([Problem(filename, 1, 1, "the spec is empty", fix="write at least `name:` and `model:`")], text)
    _Converter(source).check_graph(root)
    data = _Converter(source).convert(root, ())
    if data is None:  # `---` or `~` alone
        raise SpecError([Problem(filename, 1, 1, "the spec is empty", fix="write at least `name:` and `model:`")], text)
    return data, source


def _check_text(text: str, source: Source) -> None:
    """Refuse text too large to read, or that is not valid Unicode."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise SpecError(
            [source.problem((), f"the spec is larger than {MAX_BYTES // 1024} KiB", "split it or remove data from it")],
            text,
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates from a str built in Python
        line = text.count("\n", 0, err.start) + 1
        message = "the text holds an invalid character (a lone surrogate)"
        raise SpecError([Problem(source.filename, line, 1, message, fix="pass valid Unicode text")]) from None


def _compose(text: str, filename: str) -> Any:
    """The YAML node tree (no Python objects made); every reader or parser error as one located problem."""
    try:
        loader = _CoreLoader(text)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        raise SpecError([_syntax_problem(err, text, filename)], text) from None
    except RecursionError:  # the pure-Python parser on deep block nesting (libyaml stops at 1000 levels)
        fix = "flatten the structure"
        raise SpecError([Problem(filename, 1, 1, f"nesting deeper than {MAX_DEPTH} levels", fix=fix)], text) from None
    except yaml.reader.ReaderError as err:  # a control character or other unreadable character
        raise SpecError([_reader_problem(err, text, filename)], text) from None
    except yaml.YAMLError as err:
        message = f"YAML error: {' '.join(str(err).split())}"
        raise SpecError([Problem(filename, 1, 1, message, fix="correct the YAML")], text) from None


def _reader_problem(err: yaml.reader.ReaderError, text: str, filename: str) -> Problem:
    before = text[: max(err.position, 0)]
    line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
    code = f"U+{err.character:04X}" if isinstance(err.character, int) else repr(err.character)
    return Problem(
        filename,
        line,
        col,
        f"the character {code} is not allowed in YAML ({err.reason})",
        fix='remove it or write it as an escape inside a double-quoted string, e.g. "\\x01"',
    )


def _syntax_problem(err: yaml.MarkedYAMLError, text: str, filename: str) -> Problem:
    """One located, one-line problem for a YAML syntax error, with what it means for a spec."""
    mark = err.problem_mark or err.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    what = err.problem or err.context or "invalid YAML"
    fix = "correct the YAML at this position"
    lines = text.splitlines()
    here = lines[line - 1][col - 1 : col] if 0 < line <= len(lines) else ""
    if here == "\t" or "tab character" in what:
        what, fix = "a tab character; YAML indents with spaces only", "replace the tab with spaces"
    elif "maximum nesting depth" in what:
        what, fix = f"nesting deeper than {MAX_DEPTH} levels", "flatten the structure"
    elif "another document" in what:
        what = "a second YAML document starts here; a spec file holds one"
        fix = "remove the `---` line and what follows, or put it in its own file"
    elif err.context and err.context_mark and err.problem_mark and err.context_mark.line != err.problem_mark.line:
        start = err.context_mark
        what += f" ({err.context} that starts at line {start.line + 1}, column {start.column + 1})"
    if what.startswith("nesting deeper"):
        return Problem(filename, line, col, what, fix=fix)
    return Problem(filename, line, col, f"YAML syntax error: {what}", fix=fix)


def load_file(path: str | Path) -> tuple[Any, Source]:
    """Read a spec file -- a regular file only, at most ``MAX_BYTES`` of it -- and load it.

    A device (`/dev/zero`), a FIFO or a directory is refused before it is read, and again on the open
    descriptor, so nothing blocks; the size bound applies to the bytes read, not to what `stat` reports.
    """
    name = str(path)
    try:
        raw, complete = read_file(path, limit=MAX_BYTES, confine=False)
    except PathError as err:
        if err.kind == "missing":
            message, fix = "no such file", "check the path"
        elif err.kind == "not_regular":
            message, fix = err.message.replace("not a regular file", "not a spec file"), "name a .yaml file"
        else:
            message, fix = err.message, err.fix
        raise SpecError([Problem(name, 0, 0, message, fix=fix)]) from None
    if not complete:
        fix = "split it or remove data from it"
        raise SpecError([Problem(name, 1, 1, f"the spec is larger than {MAX_BYTES // 1024} KiB", fix=fix)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise SpecError([Problem(name, line, 1, "the file is not UTF-8 text", fix="save it as UTF-8")]) from None
    return load_text(text, name)


def _check_flow_depth(text: str, source: Source) -> Problem | None:
    """Refuse deep bracket nesting before the parser sees it (libyaml recurses on flow collections).

    A light scan: brackets inside quoted scalars and comments are skipped; anything it
    over-counts only makes it stricter, and real specs nest a few levels.
    """
    depth, quote, prev = 0, "", "\n"
    line, col = 1, 0
    comment = False
    for ch in text:
        col += 1
        if ch == "\n":
            line, col, comment = line + 1, 0, False
            prev = ch
            continue
        if comment:
            continue
        if quote:
            if ch == quote and not (quote == '"' and prev == "\\"):
                quote = ""
            prev = ch if prev != "\\" else ""
            continue
        if ch in "\"'" and prev in " \t\n:,[{-":
            quote = ch
        elif ch == "#" and prev in " \t\n":
            comment = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                fix = "flatten the structure"
                return Problem(source.filename, line, col, f"nesting deeper than {MAX_DEPTH} levels", fix=fix)
        elif ch in "]}":
            depth = max(depth - 1, 0)
        prev = ch
    return None


class _Converter:
    """Turns composed YAML nodes into plain data, recording positions and refusing what is unsafe."""

    def __init__(self, source: Source):
        self.source = source
        self.expressions = 0  # strings that `$vars` and arithmetic will parse (see MAX_EXPRESSIONS)

    def _fail(self, node: yaml.Node, message: str, fix: str = "") -> SpecError:
        mark = node.start_mark
        return SpecError(
            [Problem(self.source.filename, mark.line + 1, mark.column + 1, message, fix=fix)], self.source.text
        )

    def check_graph(self, root: yaml.Node) -> None:
        """Bound depth, alias use and the size after alias expansion, before building anything."""
        sizes: dict[int, int] = {}
        seen_aliases = 0

        def size(node: yaml.Node, depth: int) -> int:
            nonlocal seen_aliases
            if depth > MAX_DEPTH:
                raise self._fail(node, f"nesting deeper than {MAX_DEPTH} levels", "flatten the structure")
            key = id(node)
            if key in sizes:
                seen_aliases += 1
                if seen_aliases > MAX_ALIASES:
                    raise self._fail(node, f"more than {MAX_ALIASES} alias uses", "write the values out or use `vars`")
                if sizes[key] < 0:
                    raise self._fail(
                        node, "an alias refers to its own ancestor (recursive structure)", "write the values out"
                    )
                return sizes[key]
            sizes[key] = -1
            total = 1
            if isinstance(node, yaml.SequenceNode):
                total += sum(size(child, depth + 1) for child in node.value)
            elif isinstance(node, yaml.MappingNode):
                total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
            sizes[key] = total
            if total > MAX_NODES:
                raise self._fail(
                    node, f"the spec expands to more than {MAX_NODES} values (alias expansion)", "remove the aliases"
                )
            return total

        size(root, 0)

    def convert(self, node: yaml.Node, path: Path_) -> Any:
        if node.tag not in _CORE_TAGS:
            tag = (
                "!!" + node.tag[len("tag:yaml.org,2002:") :] if node.tag.startswith("tag:yaml.org,2002:") else node.tag
            )
            raise self._fail(
                node,
                f"YAML tag {tag!r} is not allowed",
                "specs use plain YAML values only (strings, numbers, booleans, null, lists, mappings)",
            )
        if path not in self.source.positions:
            self.source.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(child, path + (i,)) for i, child in enumerate(node.value)]
        return self.mapping(node, path)

    def scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        if node.tag not in _SCALARS:  # `!!map x`: a collection tag on a plain value
            kind = node.tag.rsplit(":", 1)[-1]
            raise self._fail(node, f"the `!!{kind}` tag cannot apply to a plain value", f"remove the `!!{kind}` tag")
        try:
            value = _SCALARS[node.tag](node.value)
        except _OutOfRange as err:
            raise self._fail(node, err.message, err.fix) from None
        except ValueError:
            kind = node.tag.rsplit(":", 1)[-1]
            shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
            raise self._fail(node, f"{shown!r} is not a valid {kind}", f"remove the `!!{kind}` tag") from None
        if isinstance(value, str) and path[-1:] != ("<key>",) and needs_evaluation(value):
            self.expressions += 1
            if self.expressions > MAX_EXPRESSIONS:
                raise self._fail(
                    node,
                    f"more than {MAX_EXPRESSIONS:,} `$references` and arithmetic expressions (after alias expansion)",
                    "use fewer expressions: compute a value once in `vars:` and refer to it",
                )
        return value

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or (  # libyaml marks a plain scalar's style "", PyYAML None
                isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<" and not key_node.style
            ):
                raise self._fail(key_node, "YAML merge keys (`<<`) are not supported", "write the keys out")
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._fail(key_node, "mapping keys must be plain strings", "write the key as a plain name")
            key = self.convert(key_node, path + ("<key>",))
            if not isinstance(key, str):
                key = str(key) if not isinstance(key, bool) and key is not None else key_node.value
            line = key_node.start_mark.line + 1
            if key in result:
                raise self._fail(
                    key_node,
                    f"duplicate key {key!r} (first on line {first_line[key]})",
                    "remove one of the two",
                )
            first_line[key] = line
            self.source.positions[path + (key,)] = (line, key_node.start_mark.column + 1)
            result[key] = self.convert(value_node, path + (key,))
        self.source.positions.pop(path + ("<key>",), None)
        return result
