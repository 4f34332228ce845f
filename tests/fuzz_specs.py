"""A mutation fuzzer for the whole spec pipeline: text -> parse_spec -> build_model -> render_script -> ast.parse.

Seeds are every ``specs/*.yaml`` and ``tests/invalid/*.yaml`` (files over 64 KiB are skipped). Each input is one
seed with one to four mutations stacked on it: byte flips, inserts and deletes; duplicated, deleted or swapped
lines; lines spliced in from another seed; YAML-special tokens (flow brackets, anchors, aliases, tags, merge
keys, tabs, huge powers, ``$refs``, big repeats, very long strings); and structure-aware replacements (the seed
is read with ``yaml.safe_load``, one value is swapped for a huge or negative int, nan/inf, a bool, null, a deep
list or a hostile string, and the result is written back with ``yaml.safe_dump``).

The contract under test: ``SpecError`` is the only exception that may leave the pipeline, its message is
located (``fuzz.yaml:LINE:COL: ...``), every input finishes within a time bound, and every script rendered
from a valid spec parses as Python. Anything else -- including ``MemoryError`` and ``RecursionError`` -- is an
*escape*, recorded with its input and traceback.

Run from the repository root::

    python tests/fuzz_specs.py --seconds 600 --seed 1    # ten minutes
    python tests/fuzz_specs.py --inputs 5000             # a fixed number of inputs

Escapes are written to ``fuzz-escapes/`` (``escape-SEED-INDEX.yaml`` is the input, ``.txt`` the traceback);
the exit status is 1 when there are any. Input ``i`` of seed ``K`` depends only on ``(K, i)``, so
``--seed K --start i --inputs 1`` reproduces it. ``run_fuzz`` is the same thing as a function.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import random
import resource
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MAX_SEED_BYTES = 64 << 10  # seeds larger than this are skipped
MAX_INPUT_CHARS = 3 << 20  # mutations that would grow an input past this are dropped (the loader refuses > 1 MiB)
MODEL_BYTES = 64 << 20  # the memory budget given to parse_spec; build_model only runs under it
BOUND_SECONDS = 2.0  # an input slower than this is an escape ("slow"; issue 10's bound)
HARD_SECONDS = 60.0  # an input still running after this is interrupted and recorded ("timeout")

TOKENS = [
    "[",
    "]",
    "{",
    "}",
    "[[",
    "{{",
    "&a ",
    "*a",
    "&a [1, 2]",
    "*a\n",
    "!!python/object:os.system ",
    "!!python/object/apply:os.system [ls]",
    "!!binary ",
    "!!str ",
    "!!int ",
    "!!float ",
    "!!map ",
    "!!seq ",
    "!!set ",
    "!!bool ",
    "!!null ",
    "!!timestamp ",
    "!!omap ",
    "!<tag:yaml.org,2002:str> ",
    "!local ",
    "<<: *a",
    "<<: {a: 1}",
    '"\\u2028"',
    "\u2028",
    "\t",
    "\\t",
    "2**99",
    "$x",
    "$$",
    "$hidden * 2",
    "10**400",
    "- repeat: 9999",
    "- repeat: 9999\n  body: [ReLU]",
    "{repeat: 9999, body: [{Linear: [8, 8]}]}",
    ": ",
    ":",
    "- ",
    "-",
    ",",
    "#",
    "? ",
    "|",
    ">",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "~",
    "null",
    ".nan",
    ".inf",
    "-.inf",
    "0x7fffffffffffffff",
    "0o777",
    "1e309",
    "-0",
    "true",
    "yes",
    "'",
    '"',
    "'''",
    '"""',
    "\\",
    "\n",
    "\r\n",
    "\r",
    "\ufeff",
    "\u202e",
    "\x85",
    "\x00",
    "\x1b",
    "__import__('os')",
    "{{ 7*7 }}",
    "{% raw %}",
]

HOSTILE = [
    'a"b',
    "a'b",
    '"""',
    "'''",
    '"""; import os; os.system("x"); """',
    "'''; __import__('os').system('x'); '''",
    "back\\slash\\",
    "\\",
    "\\N{BULLET}",
    "\\x00",
    "new\nline",
    "cr\rlf",
    "\u2028line",
    "\u2029para",
    "nul\x00byte",
    "bidi \u202eevil\u202c",
    "\u2066isolate\u2069",
    "\u200bzero width",
    "\x1b[31mred",
    "{{ 7*7 }}",
    "{{",
    "}}",
    "{% raw %}",
    "{% endraw %}",
    "{# #}",
    "$x",
    "$$",
    "$$x",
    "$name",
    "${x}",
    "#comment",
    "os.system",
    "__import__",
    "__class__",
    "torch.nn.Linear",
    "ＡＢ",
    "\ufb01",
    "𝕏",
    "",
    " ",
    "\t",
    "-",
    "x" * 10_000,
    "é" * 3000,
]

# Issue 10's families: paths that leave the project or are not regular files (the symlinks are made by
# run_fuzz inside the project), names that normalise onto or shadow the script's, and small width x depth bombs.
PATHS = [
    "/dev/zero",
    "/proc/self/environ",
    "/etc/passwd",
    "../../etc/passwd",
    "data/../../outside.csv",
    "fuzz-links/environ.csv",
    "fuzz-links/zero.csv",
    "fuzz-links/fifo.csv",
    "fuzz-links/dir.csv",
    "data",
]
NAMES = [
    "ｎn",
    "ｔorch",
    "SEED",
    "EPOCHS",
    "io",
    "len",
    "main",
    "forward",
    "_modules",
    "state_dict",
    "training",
    "self",
]
BOMBS = [
    {"LSTM": {"hidden_size": 1, "num_layers": 100000, "batch_first": True}},
    {"repeat": 10000, "body": [{"TransformerEncoderLayer": {"d_model": 8, "nhead": 1, "dim_feedforward": 8}}]},
    {"repeat": 10000, "body": [{"repeat": 10000, "body": ["ReLU"]}]},
    {"GRU": {"hidden_size": 4, "num_layers": 5000, "bidirectional": True, "batch_first": True}},
]

HUGE_INTS = [2**99, 10**30, 2**63, 2**63 - 1, 2**53 + 1, 2**31, 2**24 + 1, 10**9, 9999, 10_001, 100_001]
NEGATIVES = [-1, -2, -(2**63), -(10**9), -9999, 0]
FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 1e-400, 0.5, -0.0, 2.5]


@dataclass
class Escape:
    """One input that broke the contract."""

    index: int
    kind: str  # exception (escaped error) | slow | timeout | unlocated (a SpecError without file:line:col)
    seed_file: str
    mutations: list[str]
    text: str
    error: str
    traceback: str
    seconds: float

    @property
    def signature(self) -> str:
        """The error type and the innermost frame: escapes with the same signature are one bug."""
        frames = [line.strip() for line in self.traceback.splitlines() if line.strip().startswith("File ")]
        return f"{self.kind}: {self.error.split(':')[0]} at {frames[-1] if frames else '?'}"


@dataclass
class Report:
    seed: int = 0
    inputs: int = 0
    valid: int = 0  # parsed, validated and lowered
    spec_errors: int = 0
    built: int = 0  # build_model ran
    build_skipped: int = 0  # valid, but over the memory budget for building
    rendered: int = 0  # script rendered and parsed with ast.parse
    escapes: list[Escape] = field(default_factory=list)
    max_seconds: float = 0.0
    slowest: str = ""  # "seed file + mutations" of the slowest input
    elapsed: float = 0.0
    peak_rss_mib: float = 0.0
    mutations: dict[str, int] = field(default_factory=dict)  # mutations applied, by mutator
    mutator_failures: int = 0  # mutations that raised inside the fuzzer itself (skipped)

    @property
    def inputs_per_second(self) -> float:
        return self.inputs / self.elapsed if self.elapsed else 0.0

    @property
    def signatures(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for escape in self.escapes:
            counts[escape.signature] = counts.get(escape.signature, 0) + 1
        return counts

    def summary(self) -> str:
        lines = [
            f"fuzz seed {self.seed}: {self.inputs} inputs in {self.elapsed:.1f} s ({self.inputs_per_second:.1f}/s)",
            (
                f"  valid specs {self.valid} (built {self.built}, over the build budget {self.build_skipped}, "
                f"rendered {self.rendered}), SpecErrors {self.spec_errors}"
            ),
            f"  escapes {len(self.escapes)} ({len(self.signatures)} distinct)",
            f"  max seconds per input {self.max_seconds:.3f} (bound {BOUND_SECONDS:g} s) -- {self.slowest}",
            f"  peak RSS {self.peak_rss_mib:.0f} MiB",
        ]
        if self.mutator_failures:
            lines.append(f"  fuzzer: {self.mutator_failures} mutations failed and were skipped")
        lines += [f"    {count} x {sig}" for sig, count in sorted(self.signatures.items(), key=lambda kv: -kv[1])]
        return "\n".join(lines)


# --------------------------------------------------------------------------- corpus


def load_corpus(root: Path = ROOT) -> list[tuple[str, bytes]]:
    """(relative path, bytes) of every seed, sorted, skipping files over 64 KiB."""
    files = sorted((root / "specs").glob("*.yaml")) + sorted((root / "tests" / "invalid").glob("*.yaml"))
    return [(str(p.relative_to(root)), p.read_bytes()) for p in files if p.stat().st_size <= MAX_SEED_BYTES]


# --------------------------------------------------------------------------- mutations


def _position(rng: random.Random, data: bytes) -> int:
    return rng.randint(0, len(data))


def _flip(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    if not data:
        return bytes([rng.randrange(256)]), "flip(empty)"
    buf = bytearray(data)
    pos = rng.randrange(len(buf))
    if rng.random() < 0.5:
        buf[pos] ^= 1 << rng.randrange(8)
        return bytes(buf), f"bitflip@{pos}"
    buf[pos] = rng.choice(b"[]{}:-,$*&!|>'\"#%@`?~\\ \t\n\r0123456789abcXYZ\x00\x7f\xff\xc3")
    return bytes(buf), f"byteset@{pos}"


def _insert_bytes(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    pos = _position(rng, data)
    chunk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return data[:pos] + chunk + data[pos:], f"insert{len(chunk)}@{pos}"


def _delete_bytes(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    if not data:
        return data, "delete(empty)"
    pos = rng.randrange(len(data))
    size = rng.choice([1, 1, 2, 4, 16, 64])
    return data[:pos] + data[pos + size :], f"delete{size}@{pos}"


def _duplicate_bytes(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    pos = _position(rng, data)
    start = max(0, pos - rng.randint(1, 40))
    return data[:pos] + data[start:pos] + data[pos:], f"dupbytes{pos - start}@{pos}"


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


def _duplicate_line(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    times = rng.choice([1, 1, 2, 8])
    line = lines[i] if lines[i].endswith(b"\n") else lines[i] + b"\n"
    lines[i:i] = [line] * times
    return b"".join(lines), f"dupline{i}x{times}"


def _delete_line(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    del lines[i]
    return b"".join(lines), f"delline{i}"


def _swap_lines(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    lines = _lines(data)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"".join(lines), f"swaplines{i},{j}"


def _splice(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    name, other = rng.choice(corpus)
    theirs = _lines(other)
    start = rng.randrange(len(theirs))
    chunk = theirs[start : start + rng.randint(1, 6)]
    lines = _lines(data)
    i = rng.randrange(len(lines) + 1)
    if rng.random() < 0.5:
        lines[i:i] = chunk
        how = "insert"
    else:
        lines[i : i + len(chunk)] = chunk
        how = "replace"
    return b"".join(lines), f"splice-{how}({name}:{start}+{len(chunk)})@{i}"


def _long_string(rng: random.Random) -> str:
    size = rng.choice([300, 5_000, 70_000, (1 << 20) + 1])
    return rng.choice(["x", "A", "é", "[", "{", "$x+", "9", "- ", " "]) * size


def _token(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    token = _long_string(rng) if rng.random() < 0.05 else rng.choice(TOKENS)
    encoded = token.encode("utf-8", "surrogatepass")
    where = rng.random()
    if where < 0.4:  # anywhere
        pos = _position(rng, data)
    else:  # just after a `key: ` or at a line start, where YAML gives tokens meaning
        lines = _lines(data)
        i = rng.randrange(len(lines))
        pos = sum(len(line) for line in lines[:i])
        colon = lines[i].find(b": ")
        if where < 0.8 and colon >= 0:
            pos += colon + 2
        else:
            pos += len(lines[i]) - len(lines[i].lstrip(b" "))
    label = repr(token) if len(token) < 40 else f"<{len(token)} x {token[:4]!r}>"
    return data[:pos] + encoded + data[pos:], f"token({label})@{pos}"


def _hostile_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10)
    if kind == 0:
        return rng.choice(HUGE_INTS) * rng.choice([1, 1, -1])
    if kind == 1:
        return rng.choice(NEGATIVES)
    if kind == 2:
        return rng.choice(FLOATS)
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:  # nested lists, sometimes deeper than the loader's limit
        value: Any = rng.choice([[], [1], ["ReLU"], [{"a": 1}]])
        for _ in range(rng.choice([1, 2, 5, 63, 70])):
            value = [value]
        return value
    if kind == 6 and depth < 2:
        return {rng.choice(HOSTILE + ["Linear", "repeat", "body", "x"]): _hostile_value(rng, depth + 1)}
    if kind == 7:
        return rng.choice(["ReLU", "Linear", "Conv2d", "Flatten", "$x", "2**99", "$$", "9999", "-1", "1e309"])
    if kind == 8:
        return rng.choice([*PATHS, *NAMES, *BOMBS])
    return rng.choice(HOSTILE)


def _walk(value: Any, limit: int = 5000) -> list[tuple]:
    """Paths into nested dicts and lists (keys and indices), at most ``limit`` of them.

    Each container is visited once: ``yaml.safe_load`` shares the object behind an alias, so a
    "billion laughs" seed is a small graph that a naive walk would expand to billions of paths.
    """
    paths: list[tuple] = []
    seen: set[int] = set()
    stack: list[tuple[tuple, Any]] = [((), value)]
    while stack and len(paths) < limit:
        path, node = stack.pop()
        paths.append(path)
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((path + (key,), child) for key, child in items)
    return paths


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: the same result, faster
_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _structured(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    """Parse, replace one value (or rename one key) with something hostile, dump again."""
    try:
        tree = yaml.load(data.decode("utf-8"), Loader=_SafeLoader)
    except Exception:
        return _token(rng, data, corpus)
    if not isinstance(tree, (dict, list)):
        return _token(rng, data, corpus)
    paths = [p for p in _walk(tree) if p]
    if not paths:
        return _token(rng, data, corpus)
    path = rng.choice(paths)
    parent = tree
    for part in path[:-1]:
        parent = parent[part]
    new = _hostile_value(rng)
    if isinstance(parent, dict) and rng.random() < 0.15:  # a hostile key instead of a hostile value
        key = rng.choice(HOSTILE + [1, True, None, 2.5])
        parent[key] = parent.pop(path[-1])
        what = f"key {path!r} -> {_short(key)}"
    else:
        parent[path[-1]] = new
        what = f"{path!r} = {_short(new)}"
    try:
        text = yaml.dump(
            tree,
            Dumper=_SafeDumper,
            allow_unicode=rng.random() < 0.5,
            default_flow_style=rng.choice([False, None, True]),
            sort_keys=False,
            width=rng.choice([80, 10**6]),
        )
    except Exception:
        return _token(rng, data, corpus)
    return text.encode("utf-8", "surrogatepass"), f"structured({what})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# blocks, loops, `if:` parts, defaults (issue 20): hostile values where expansion reads them
LOOP_HOSTILE = [
    10_000,
    10_001,
    -1,
    2**40,
    "$n * 10000",
    "1e9",
    [[1, 2]] * 50,
    "{i}" * 30,
    "{__import__('os')}",
    "layer{i}",
    "layer{1/0}",
    "{" * 40,
    None,
    True,
    [],
    {},
    "$missing",
    "$in_channels ** 64",
]


def _blocks_and_loops(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    """Rewrite a spec's model as a loop, a block or an `if:` part around a hostile value, or add hostile
    `blocks:`/`defaults:` entries: what the expansion stage (compiler/front/expand.py) must refuse quickly."""
    try:
        tree = yaml.load(data.decode("utf-8"), Loader=_SafeLoader)
    except Exception:
        return _token(rng, data, corpus)
    if not isinstance(tree, dict) or "model" not in tree:
        return _token(rng, data, corpus)
    model, value = tree["model"], rng.choice(LOOP_HOSTILE + [_hostile_value(rng)])
    kind = rng.choice(["repeat", "for", "name", "if", "block", "recursive", "defaults", "nested"])
    if kind == "repeat":
        tree["model"] = [{"repeat": value, "as": "i", "body": model}]
    elif kind == "for":
        tree["model"] = [{"for": rng.choice(["c", ["a", "b"], value]), "in": value, "body": model}]
    elif kind == "name":
        tree["model"] = {"stages": {"repeat": 3, "as": "i", "name": value, "body": model}}
    elif kind == "if":
        tree["model"] = [{"if": value, "then": model, "else": rng.choice([model, value])}]
    elif kind == "block":
        tree["blocks"] = {"B": {"params": {"w": rng.choice(["int", value])}, "body": model}}
        tree["model"] = [{"B": {"w": value}}, {"B": rng.choice([[value], {"x": 1}, None])}]
    elif kind == "recursive":
        tree["blocks"] = {"A": {"body": [{"$k": {}}, model]}}
        tree["vars"], tree["model"] = {"k": "A"}, ["A"]
    elif kind == "defaults":
        tree["defaults"] = {rng.choice(["ReLU", "Linear", "Conv2d", "BatchNorm2d", value]): {"inplace": value}}
    else:
        tree["model"] = [{"repeat": 100, "as": "i", "body": [{"repeat": 100, "as": "j", "body": [model] * 3}]}]
    try:
        text = yaml.dump(tree, Dumper=_SafeDumper, sort_keys=False, default_flow_style=rng.choice([False, None]))
    except Exception:
        return _token(rng, data, corpus)
    return text.encode("utf-8", "surrogatepass"), f"blocks_and_loops({kind}, {_short(value)})"


MUTATORS = {
    "flip": (_flip, 3),
    "insert": (_insert_bytes, 2),
    "delete": (_delete_bytes, 2),
    "dupbytes": (_duplicate_bytes, 1),
    "dupline": (_duplicate_line, 2),
    "delline": (_delete_line, 2),
    "swaplines": (_swap_lines, 1),
    "splice": (_splice, 2),
    "token": (_token, 5),
    "structured": (_structured, 5),
    "blocks": (_blocks_and_loops, 3),
}
_NAMES = list(MUTATORS)
_WEIGHTS = [MUTATORS[name][1] for name in _NAMES]


def make_input(seed: int, index: int, corpus: list[tuple[str, bytes]]) -> tuple[str, list[str], str]:
    """Input ``index`` of run ``seed``: (seed file, mutations applied, text). Depends only on (seed, index)."""
    rng = random.Random(f"specc-fuzz:{seed}:{index}")
    valid = [item for item in corpus if item[0].startswith("specs")]
    # Half the inputs start from a valid spec, so that mutants get past validation into lowering and rendering.
    name, data = rng.choice(valid if valid and rng.random() < 0.5 else corpus)
    applied = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
        mutator = rng.choices(_NAMES, _WEIGHTS)[0]
        try:
            new, label = MUTATORS[mutator][0](rng, data, corpus)
        except Exception as err:
            applied.append(f"{mutator}:failed({type(err).__name__})")
            continue
        if len(new) > MAX_INPUT_CHARS:
            continue
        data = new
        applied.append(f"{mutator}:{label}")
    # Invalid UTF-8 becomes U+FFFD, as for any decoded file (load_file itself refuses non-UTF-8 bytes).
    return name, applied, data.decode("utf-8", "replace")


# --------------------------------------------------------------------------- running


class _Timeout(BaseException):
    """Raised by the watchdog in the middle of an input that runs past HARD_SECONDS."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Timeout(f"still running after {HARD_SECONDS:g} s")


def check_input(text: str) -> str:
    """Run one input through the pipeline; return how far it got. Raises whatever the pipeline raises."""
    import compiler

    try:
        spec = compiler.parse_spec(text, "fuzz.yaml", max_bytes=MODEL_BYTES)
    except compiler.SpecError as err:
        message = str(err)
        if not message.startswith("fuzz.yaml:") or not err.problems:
            raise AssertionError(f"unlocated SpecError: {message[:300]!r}") from err
        return "spec_error"
    stage = "valid"
    if compiler.lower_spec(spec).model.nbytes <= MODEL_BYTES:
        compiler.build_model(spec)
        stage = "built"
    script = compiler.render_script(spec)
    ast.parse(script)
    return stage


def _make_links() -> Path:
    """fuzz-links/ in the folder specc runs in: symlinks out of the project, a FIFO and a folder named like CSVs."""
    import shutil

    folder = Path("fuzz-links")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "environ.csv").symlink_to("/proc/self/environ")
    (folder / "zero.csv").symlink_to("/dev/zero")
    os.mkfifo(folder / "fifo.csv")
    (folder / "dir.csv").mkdir()
    return folder


def run_fuzz(
    inputs: int | None = None,
    seed: int = 0,
    seconds: float | None = None,
    start: int = 0,
    corpus: list[tuple[str, bytes]] | None = None,
    progress: Any = None,
) -> Report:
    """Run ``inputs`` inputs (or as many as fit in ``seconds``); return a Report. Never raises for an input."""
    if inputs is None and seconds is None:
        inputs = 1000
    import torch

    import compiler

    # `import compiler` is lazy: parse, lower and render one spec first, so that no input is timed with
    # the package's own imports (pydantic, jinja2, the registry) inside it
    compiler.render_script(compiler.parse_spec("name: warm\ninput: [4]\nmodel: [{Linear: {out_features: 2}}]\n"))

    corpus = corpus if corpus is not None else load_corpus()
    if not corpus:
        raise RuntimeError("empty seed corpus")
    links = _make_links()
    report = Report(seed=seed)
    watchdog = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    previous = signal.signal(signal.SIGALRM, _on_alarm) if watchdog else None
    began = time.perf_counter()
    last_progress = began
    index = start
    try:
        while True:
            if inputs is not None and index - start >= inputs:
                break
            if seconds is not None and time.perf_counter() - began >= seconds:
                break
            seed_file, applied, text = make_input(seed, index, corpus)
            for label in applied:
                key = label.split(":", 1)[0]
                report.mutations[key] = report.mutations.get(key, 0) + 1
                report.mutator_failures += ":failed(" in label
            stage, error, trace = "", "", ""
            torch.manual_seed(0)
            started = time.perf_counter()
            try:
                if watchdog:
                    signal.setitimer(signal.ITIMER_REAL, HARD_SECONDS)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    stage = check_input(text)
            except AssertionError as err:
                stage, error, trace = "unlocated", str(err), traceback.format_exc()
            except _Timeout as err:
                stage, error, trace = "timeout", f"{type(err).__name__}: {err}", traceback.format_exc()
            except Exception as err:
                stage, error, trace = "exception", f"{type(err).__name__}: {err}"[:2000], traceback.format_exc()
            finally:
                if watchdog:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            took = time.perf_counter() - started
            report.inputs += 1
            if took > report.max_seconds:
                report.max_seconds = took
                report.slowest = f"input {index}: {seed_file} + {'; '.join(applied)}"[:300]
            if stage == "spec_error":
                report.spec_errors += 1
            elif stage in ("valid", "built"):
                report.valid += 1
                report.rendered += 1
                report.built += stage == "built"
                report.build_skipped += stage == "valid"
            if stage not in ("spec_error", "valid", "built"):
                report.escapes.append(Escape(index, stage, seed_file, applied, text, error, trace, took))
            elif took > BOUND_SECONDS:
                report.escapes.append(
                    Escape(
                        index,
                        "slow",
                        seed_file,
                        applied,
                        text,
                        f"took {took:.2f} s (bound {BOUND_SECONDS:g} s)",
                        "",
                        took,
                    )
                )
            index += 1
            now = time.perf_counter()
            if progress is not None and now - last_progress >= 30:
                last_progress = now
                progress(f"  ... {report.inputs} inputs, {len(report.escapes)} escapes, {now - began:.0f} s")
    finally:
        if watchdog:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        import shutil

        shutil.rmtree(links, ignore_errors=True)
    report.elapsed = time.perf_counter() - began
    report.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return report


def write_escapes(report: Report, folder: Path, per_signature: int = 5) -> list[Path]:
    """Write up to ``per_signature`` escapes of each distinct signature: input (.yaml) and traceback (.txt)."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    counts: dict[str, int] = {}
    for escape in report.escapes:
        counts[escape.signature] = counts.get(escape.signature, 0) + 1
        if counts[escape.signature] > per_signature:
            continue
        stem = folder / f"escape-{report.seed}-{escape.index}"
        with open(stem.with_suffix(".yaml"), "w", encoding="utf-8", errors="surrogatepass", newline="") as file:
            file.write(escape.text)
        details = [
            f"kind: {escape.kind}",
            (
                f"seed: {report.seed}  index: {escape.index}  "
                f"(reproduce: python tests/fuzz_specs.py --seed {report.seed} --start {escape.index} --inputs 1)"
            ),
            f"seed file: {escape.seed_file}",
            f"mutations: {'; '.join(escape.mutations)}",
            f"seconds: {escape.seconds:.3f}",
            f"error: {escape.error}",
            "",
            escape.traceback,
        ]
        stem.with_suffix(".txt").write_text("\n".join(details), encoding="utf-8", errors="backslashreplace")
        written.append(stem.with_suffix(".yaml"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--inputs", type=int, help="run this many inputs (default 1000)")
    budget.add_argument("--seconds", type=float, help="run for this long instead")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    parser.add_argument("--start", type=int, default=0, help="first input index (to reproduce one input)")
    parser.add_argument("--out", default="fuzz-escapes", help="folder for escapes (default fuzz-escapes/)")
    args = parser.parse_args(argv)
    report = run_fuzz(
        inputs=args.inputs,
        seed=args.seed,
        seconds=args.seconds,
        start=args.start,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(report.summary())
    if report.escapes:
        written = write_escapes(report, Path(args.out))
        print(f"wrote {len(written)} escaping inputs (and their tracebacks) to {os.path.join(args.out, '')}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
