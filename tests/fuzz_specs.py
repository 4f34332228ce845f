"""A mutation fuzzer for the whole spec pipeline: text -> parse_spec -> build_model -> render_script -> ast.parse.

Seeds are every ``specs/*.yaml`` and ``tests/invalid/*.yaml`` (files over 64 KiB are skipped). Each input is one
seed with one to four mutations stacked on it: byte flips, inserts and deletes; duplicated, deleted or swapped
lines; lines spliced in from another seed; YAML-special tokens (flow brackets, anchors, aliases, tags, merge
keys, tabs, huge powers, ``$refs``, big repeats, very long strings); and structure-aware replacements (the seed
is read with ``yaml.safe_load``, one value is swapped for a huge or negative int, nan/inf, a bool, null, a deep
list or a hostile string, and the result is written back with ``yaml.safe_dump``).

The graph family (``--family graph``; a third of a default, mixed run) covers graph nodes (docs/spec-language.md
§15): half its inputs are generated -- a random graph node valid by construction (the fuzzer tracks each value's
shape): named values, child steps with ``from``/``as``/``with``/``when``, every operation, parameters, several
inputs (``input:`` by name, ``inputs:``), tuple and dict outputs, ``eval_output:`` with ``when: training`` heads,
declared ``modules:`` run by ``call: name`` and ``call: name.K``, child graph nodes -- and half are the graph
seeds (``GRAPH_SEEDS``, small ViT and ConvNeXt, ``tests/invalid/graph_*``); each gets up to three §15-aware edits
(renamed values, dropped, duplicated and reordered steps, wrong arities and ``as:`` counts, training-only values
read in eval, bad call targets and member indices, odd YAML in every key, huge counts, ...).

The contract under test: ``SpecError`` is the only exception that may leave the pipeline, its message is
located (``fuzz.yaml:LINE:COL: ...``), every input finishes within a time bound, and every script rendered
from a valid spec parses as Python. A valid spec with a graph node, small enough, also runs: the compiled model
and the generated script's (imported) are built under one seed and run forward on a batch of 2 in eval and train
mode; their modules, state dicts and outputs must be equal, and the outputs' shapes those lowering computed
(``BackendMismatch`` otherwise). Anything else -- including ``MemoryError`` and ``RecursionError`` -- is an
*escape*, recorded with its input and traceback.

Run from the repository root::

    python tests/fuzz_specs.py --seconds 600 --seed 1    # ten minutes
    python tests/fuzz_specs.py --inputs 5000             # a fixed number of inputs
    python tests/fuzz_specs.py --seconds 300 --family graph   # graph nodes only

Escapes are written to ``fuzz-escapes/`` (``escape-SEED-INDEX.yaml`` is the input, ``.txt`` the traceback);
the exit status is 1 when there are any. Input ``i`` of seed ``K`` depends only on ``(K, i)`` (and the family),
so ``--seed K --start i --inputs 1 --family F`` reproduces it -- as long as the seed files and the mutators are
the same. ``run_fuzz`` is the same thing as a function.
"""

from __future__ import annotations

import argparse
import ast
import copy
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
    family: str = "mixed"
    inputs: int = 0
    valid: int = 0  # parsed, validated and lowered
    spec_errors: int = 0
    built: int = 0  # build_model ran
    build_skipped: int = 0  # valid, but over the memory budget for building
    rendered: int = 0  # script rendered and parsed with ast.parse
    ran: int = 0  # graph models also run forward in both backends and compared
    graph_inputs: int = 0  # inputs of the graph family (§15)
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
                f"rendered {self.rendered}, run forward in both backends {self.ran}), SpecErrors {self.spec_errors}"
            ),
            f"  graph-family inputs {self.graph_inputs}",
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


# --------------------------------------------------------------------------- graph nodes (§15)

# Small valid graph specs, one or more for each §15 feature: named values, `from`/`as`/`with`/`when`, every
# operation, params and buffers, several inputs (`input:` by name, `inputs:`), tuple and dict outputs,
# `eval_output:`, declared `modules:` run by `call: name` and `call: name.K`, a graph in a list, a merge branch,
# a block body and another graph. specs/vit.yaml and specs/convnext_tiny.yaml join them at a small size.
GRAPH_SEEDS: dict[str, str] = {
    "residual": """
name: res
input: [8]
model:
  graph:
    - fc1: {Linear: [8, 8]}
    - act: ReLU
    - fc2: {Linear: [8, 8]}
    - {add: [x, fc2]}
    - head: {Linear: [8, 2]}
""",
    "every_op": """
name: every_op
input: [4, 6]
model:
  pre: {Linear: [6, 6]}
  mix:
    class: Mix
    params:
      scale: {shape: [1, 1, 6], init: ones_}
      token: {shape: [1, 1, 6], init: {normal_: {std: 0.5}}}
    buffers:
      offset: {shape: [6], init: {constant_: {val: 0.25}}}
      counts: {shape: [2], dtype: int64}
    graph:
      - a: {Linear: [6, 6]}
      - b: {Linear: [6, 6]}
        from: x
      - {mul: [a, scale], as: scaled}
      - {sub: [scaled, b], as: diff}
      - {div: [diff, scale], as: ratio}
      - {add: [ratio, offset, x], as: total}
      - t: {Transpose: [1, 2]}
        from: b
      - {matmul: [total, t], as: attention}
      - {expand_batch: token, as: tokens}
      - {cat: [tokens, total], dim: 1, as: joined}
      - {stack: [a, b], dim: 3, as: both}
      - flat_both: {Flatten: {start_dim: 2}}
        from: both
      - project: {Linear: [12, 6]}
      - {add: [joined, joined], as: doubled}
      - pool: {Mean: {dim: 1}}
        from: doubled
      - pool_project: {Mean: {dim: 1}}
        from: project
      - pool_attention: {Mean: {dim: 2}}
        from: attention
      - fit: {Linear: [4, 6]}
      - {mul: [pool, pool_project], as: product}
      - {add: [fit, product]}
""",
    "lstm": """
name: seq
input: [7, 4]
model:
  graph:
    - lstm: {LSTM: {input_size: 4, hidden_size: 6, batch_first: true}}
      as: [out, _]
    - last: {Select: {dim: 1, index: -1}}
    - fc: {Linear: [6, 3]}
""",
    "prenorm_block": """
name: blk
input: [6, 8]
blocks:
  PreNorm:
    params: {heads: int}
    body:
      params: {gamma: {shape: [8], init: {normal_: {std: 0.1}}}}
      graph:
        - norm: {LayerNorm: 8}
        - attn: {MultiheadAttention: {embed_dim: 8, num_heads: $heads, batch_first: true}}
          from: [norm, norm, norm]
          as: [y, _]
        - {mul: [y, gamma], as: scaled}
        - {add: [x, scaled]}
model:
  - {PreNorm: {heads: 2}}
  - {PreNorm: {heads: 4}}
  - {Mean: {dim: 1}}
""",
    "nest": """
name: nest
input: [8]
model:
  - merge: add
    branches:
      main: {graph: [{inner: {graph: [{fc: {Linear: [8, 8]}}, {mul: [x, fc]}]}}, {sub: [inner, x]}]}
      skip: Identity
""",
    "attention": """
name: tiny_attention
input: [6, 8]
model:
  class: TinyTransformer
  params: {pos: {shape: [1, 6, 8], init: {normal_: {std: 0.02}}}}
  graph:
    - {add: [x, pos]}
    - norm: {LayerNorm: 8}
    - attn: {MultiheadAttention: {embed_dim: 8, num_heads: 2, batch_first: true}}
      from: [norm, norm, norm]
      with: {need_weights: false}
      as: [y, _]
    - pool: {Mean: {dim: 1}}
    - head: {Linear: [8, 3]}
data:
  dataset: {Synthetic: {size: 64, inputs: [6, 8], classes: 3}}
  batch_size: 16
loss: CrossEntropyLoss
optimizer: {Adam: {lr: 0.01}}
train: {epochs: 1}
""",
    "pyramid": """
name: pyramid
input: [4, 8, 8]
model:
  modules:
    inner: [{Conv2d: {out_channels: 6, kernel_size: 1}}, {Conv2d: {out_channels: 6, kernel_size: 1}}]
  graph:
    - {call: inner.0, as: a}
    - down: {MaxPool2d: 2}
      from: x
    - {call: inner.1, from: down, as: b}
    - {interpolate: [b, a], as: up, mode: nearest}
    - {add: [a, up], as: total}
    - aux: {Conv2d: [6, 2, 1]}
      when: training
    - drop: {Dropout: 0.5}
      from: aux
      when: training
  output: {"0": total, aux: drop}
  eval_output: total
""",
    "siamese": """
name: siamese
input: {left: [1, 8, 8], right: [1, 8, 8]}
model:
  modules: {encoder: [Flatten, {Linear: {out_features: 5}}, ReLU]}
  graph:
    - {call: encoder, from: left, as: a}
    - {call: encoder, from: right, as: b}
    - {sub: [a, b], as: d}
    - head: {Linear: {out_features: 2}}
""",
    "child": """
name: child
input: [3, 8]
model:
  graph:
    - split:
        graph:
          - a: {Linear: [8, 4]}
          - b: {Linear: [8, 2]}
            from: x
        output: [a, b]
      as: [p, q]
    - join:
        inputs: [u, v]
        graph:
          - {interpolate: [u, u], as: same}
          - w: {Linear: [2, 4]}
            from: v
          - {mul: [same, w]}
      from: [p, q]
  output: [join, q]
""",
    "aux_heads": """
name: aux
input: [3, 16, 16]
model:
  graph:
    - stem: {Conv2d: {out_channels: 8, kernel_size: 3, padding: 1}}
    - pool: {MaxPool2d: 2}
    - aux1: [{AdaptiveAvgPool2d: 1}, Flatten, {Linear: {out_features: 4}}]
      from: pool
      when: training
    - body: {Conv2d: {out_channels: 8, kernel_size: 3, padding: 1}}
      from: pool
    - aux2: [{AdaptiveAvgPool2d: 1}, Flatten, {Linear: {out_features: 4}}]
      when: training
    - head: [{AdaptiveAvgPool2d: 1}, Flatten, {Linear: {out_features: 4}}]
      from: body
  output: [head, aux2, aux1]
  eval_output: head
""",
    "fpn": """
name: fpn
input: {c3: [4, 16, 16], c4: [8, 8, 8]}
model:
  modules:
    inner: [{Conv2d: {out_channels: 6, kernel_size: 1}}, {Conv2d: {out_channels: 6, kernel_size: 1}}]
    layer: {Conv2d: {in_channels: 6, out_channels: 6, kernel_size: 3, padding: 1}}
  graph:
    - {call: inner.1, from: c4, as: top}
    - {call: inner.0, from: c3, as: lateral}
    - {interpolate: [top, lateral], as: up}
    - {add: [lateral, up], as: merged}
    - {call: layer, from: merged, as: p3}
    - {call: layer, from: top, as: p4}
    - pool: {MaxPool2d: {kernel_size: 1, stride: 2}}
      from: p4
  output: {"0": p3, "1": p4, pool: pool}
""",
    "staged": """
name: staged
input: [3, 8, 8]
model:
  graph:
    - body:
        graph:
          - conv: {Conv2d: {out_channels: 4, kernel_size: 3}}
          - {pool: {AdaptiveAvgPool2d: 1}, keep: false}
          - {flat: Flatten, keep: false}
          - {fc: {Linear: {out_features: 5}}, keep: false}
        init:
          - {type: Conv2d, weight: {kaiming_normal_: {mode: fan_out}}}
          - {path: "f*", weight: {normal_: {std: 0.01}}, bias: zeros_}
    - head: [Flatten, {Linear: {out_features: 2}}]
init:
  - {path: head.1, weight: zeros_}
""",
    "graph_block_loop": """
name: loop
input: [5, 8]
blocks:
  Scale:
    params: {w: int}
    body:
      params: {gamma: {shape: [$in_channels], init: {constant_: {val: 0.5}}}}
      graph:
        - fc: {Linear: {out_features: $w}}
        - back: {Linear: {out_features: $in_channels}}
        - {mul: [back, gamma], as: scaled}
        - {add: [x, scaled]}
model:
  stages:
    "layer_{i}":
      for: i
      in: 3
      body: {Scale: {w: 4}}
  pool: {Mean: {dim: 1}}
""",
}

GRAPH_KEY_NAMES = ["graph", "params", "buffers", "modules", "inputs", "output", "eval_output", "class", "init"]
STEP_KEY_NAMES = ["from", "as", "with", "when", "dim", "mode", "call", "keep"]
GRAPH_OP_NAMES = ["add", "sub", "mul", "div", "matmul", "cat", "stack", "expand_batch", "interpolate"]
# Names a renamed value takes: Python's and the script's own, §15's keys and operations, not identifiers.
VALUE_NAMES = [
    "x",
    "_",
    "__",
    "self",
    "training",
    "forward",
    "super",
    "class",
    "lambda",
    "None",
    "True",
    "graph",
    "call",
    "from",
    "as",
    "with",
    "when",
    "mode",
    "dim",
    "modules",
    "params",
    "inputs",
    "output",
    "eval_output",
    *GRAPH_OP_NAMES,
    "torch",
    "nn",
    "F",
    "math",
    "OrderedDict",
    "build_model",
    "Model",
    "N",
    "len",
    "print",
    "__init__",
    "__class__",
    "_modules",
    "_parameters",
    "state_dict",
    "register_buffer",
    "add_module",
    "ｘ",
    "é",
    "a.b",
    "a.0",
    "0",
    "1a",
    "a-b",
    "",
    " ",
    "x" * 300,
    "\u202ex",
    1,
    0,
    -1,
    True,
    None,
    2.5,
    [],
    {},
]
CLASS_NAMES = [
    "Model",
    "Graph",
    "Block",
    "EncoderBlock",
    "AddBlock",
    "CatBlock",
    "GraphBlock",
    "Select",
    "Permute",
    "Transpose",
    "Mean",
    "LayerNorm2d",
    "Linear",
    "ReLU",
    "Sequential",
    "Module",
    "ModuleList",
    "OrderedDict",
    "Tensor",
    "Parameter",
    "DataLoader",
    "Path",
    "Mix",
    "TinyTransformer",
    "VisionTransformer",
    "Encoder",
    "CNBlock",
    "lowercase",
    "X" * 300,
]
# Hostile values for every new key
ODD = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    2**63,
    10**30,
    -(2**63),
    1.5,
    math.nan,
    math.inf,
    "",
    "x",
    "training",
    "eval",
    "_",
    "x.0",
    "x.-1",
    "x.99999",
    "x.100000",
    "x.01",
    "x. 1",
    "x.1.2",
    ".0",
    "x.",
    "０",
    "x.１",
    [],
    [[]],
    ["x"],
    ["x", "x"],
    [["x"]],
    [1, 2],
    {},
    {"x": "x"},
    {1: "x"},
    {"": "x"},
    {None: "x"},
    {"a": ["x"]},
    {"need_weights": [1]},
    "$x",
    "{i}",
    "x" * 5000,
]


def _odd(rng: random.Random) -> Any:
    return rng.choice(ODD) if rng.random() < 0.75 else _hostile_value(rng)


class _GraphGen:
    """A random graph node that is valid by construction (the fuzzer tracks every value's sample shape), so that
    most generated specs get past validation into build, forward and render, where the graph mutators then
    break them one edit at a time."""

    def __init__(self, rng: random.Random, inputs: dict[str, tuple], depth: int = 0):
        self.rng = rng
        self.depth = depth
        self.shapes: dict[str, tuple] = dict(inputs)  # value -> sample shape (no batch axis)
        self.unused: list[str] = list(inputs)  # values no step reads yet, in the order made
        self.training: set[str] = set()  # values made only in training mode
        self.steps: list[dict] = []
        self.params: dict[str, dict] = {}
        self.modules: dict[str, Any] = {}
        self.last: str | None = "x" if list(inputs) == ["x"] else None  # the value a step takes without `from:`
        self.count = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def pick(self, rank: int | None = None, training: bool = False, minimum: int = 1) -> str | None:
        """A value to read: an unused one first (every value must be read), else any."""
        ok = [
            n
            for n in self.shapes
            if n not in self.params
            and (training or n not in self.training)
            and (rank is None or len(self.shapes[n]) == rank)
            and len(self.shapes[n]) >= minimum
        ]
        if not ok:
            return None
        fresh = [n for n in ok if n in self.unused]
        return self.rng.choice(fresh if fresh and self.rng.random() < 0.8 else ok)

    def read(self, *names: str) -> None:
        for name in names:
            if name in self.unused:
                self.unused.remove(name)

    def define(self, name: str, shape: tuple, training: bool = False) -> None:
        self.shapes[name] = shape
        self.unused.append(name)
        if training:
            self.training.add(name)

    def child(self, node: Any, source: str | list[str], shape: tuple, prefix: str = "s", **extra: Any) -> str:
        """A named child step reading ``source``; its (first) value, named by the step or by `as:`."""
        name = self.fresh(prefix)
        step: dict = {name: node}
        if isinstance(source, list) or source != self.last or self.rng.random() < 0.3:
            step["from"] = source
        step.update(extra)
        self.steps.append(step)
        self.read(*(source if isinstance(source, list) else [source]))
        outs = extra.get("as", name)
        first = outs[0] if isinstance(outs, list) else outs
        self.define(first, shape, training=bool(extra.get("when")))
        self.last = first
        return first

    def op(self, op: str, values: list[str] | str, shape: tuple, **extra: Any) -> str:
        name = self.fresh("v")
        self.steps.append({op: values, "as": name, **extra})
        self.read(*(values if isinstance(values, list) else [values]))
        self.define(name, shape)
        self.last = name
        return name

    def same_shape(self, name: str) -> str:
        """Another value of ``name``'s shape, made by an activation if there is none."""
        others = [
            n
            for n, s in self.shapes.items()
            if s == self.shapes[name] and n != name and n not in self.training and n not in self.params
        ]
        if others and self.rng.random() < 0.7:
            return self.rng.choice(others)
        act = self.rng.choice(["ReLU", "GELU", "Tanh", "Sigmoid", "Identity", {"Dropout": 0.25}])
        return self.child(act, name, self.shapes[name])

    # one kind of step each; a step that does not fit the values there returns without adding one

    def linear(self) -> None:
        v = self.pick()
        if v is None:
            return
        shape = self.shapes[v]
        out = self.rng.choice([3, 4, 6, 8])
        layer = {"Linear": [shape[-1], out]} if self.rng.random() < 0.5 else {"Linear": {"out_features": out}}
        self.child(layer, v, shape[:-1] + (out,))

    def activation(self) -> None:
        v = self.pick()
        if v is not None:
            self.same_shape(v)

    def norm(self) -> None:
        v = self.pick()
        if v is not None:
            self.child({"LayerNorm": self.shapes[v][-1]}, v, self.shapes[v])

    def binary(self) -> None:
        v = self.pick()
        if v is None:
            return
        op = self.rng.choice(["add", "sub", "mul", "div", "add"])
        shape = self.shapes[v]
        if self.rng.random() < 0.3:  # a parameter broadcast over the batch (ViT's position embedding)
            p = self.fresh("p")
            dims = [1, *shape] if self.rng.random() < 0.5 else [shape[-1]]
            init = "ones_" if op == "div" else self.rng.choice(["ones_", {"normal_": {"std": 0.5}}, None])
            self.params[p] = {"shape": dims, **({"init": init} if init else {})}
            self.shapes[p] = tuple(dims)
            values = [v, p] if self.rng.random() < 0.5 else [p, v]
        else:
            values = [v, self.same_shape(v)]
            if self.rng.random() < 0.2:
                values.append(self.same_shape(v))
        if op == "div":  # divide by something that is never zero
            values = [values[0]] + [
                v if v in self.params else self.child("Sigmoid", v, self.shapes[v]) for v in values[1:]
            ]
        self.read(*values)
        self.op(op, values, shape)

    def join(self) -> None:
        v = self.pick()
        if v is None:
            return
        shape = self.shapes[v]
        values = [v, self.same_shape(v)]
        if self.rng.random() < 0.3:
            values.append(self.same_shape(v))
        rank = len(shape)  # torch's numbering: 1 .. rank is the sample's axes, 0 the batch
        if self.rng.random() < 0.5:
            dim = self.rng.randint(1, rank)
            joined = list(shape)
            joined[dim - 1] *= len(values)
            if self.rng.random() < 0.2:
                dim -= rank + 1  # the same axis, counted from the end
            self.op("cat", values, tuple(joined), dim=dim)
        else:
            dim = self.rng.randint(1, rank + 1)
            stacked = list(shape)
            stacked.insert(dim - 1, len(values))
            if self.rng.random() < 0.2:
                dim -= rank + 2
            self.op("stack", values, tuple(stacked), dim=dim)

    def matmul(self) -> None:
        v = self.pick(minimum=2)
        if v is None:
            if (v := self.pick(rank=1)) is not None:  # (N, F) @ (F, K): a parameter
                p, k = self.fresh("w"), self.rng.choice([2, 5])
                f = self.shapes[v][0]
                self.params[p] = {"shape": [f, k], "init": {"normal_": {"std": 0.3}}}
                self.shapes[p] = (f, k)
                self.op("matmul", [v, p], (k,))
            return
        shape = self.shapes[v]
        rank = len(shape)
        t = self.child({"Transpose": [rank - 1, rank]}, v, shape[:-2] + (shape[-1], shape[-2]))
        self.op("matmul", [v, t], shape[:-1] + (shape[-2],))

    def token(self) -> None:
        v = self.pick(rank=2)
        if v is None:
            return
        length, features = self.shapes[v]
        p = self.fresh("token")
        self.params[p] = {"shape": [1, 1, features], "init": {"normal_": {"std": 0.02}}}
        self.shapes[p] = (1, 1, features)
        expanded = self.op("expand_batch", p, (1, features))
        self.op("cat", [expanded, v], (length + 1, features), dim=1)

    def conv(self) -> None:
        v = self.pick(rank=3)
        if v is None:
            return
        c, h, w = self.shapes[v]
        out = self.rng.choice([2, 4, 6])
        layer = self.rng.choice(
            [
                {"Conv2d": {"out_channels": out, "kernel_size": 3, "padding": 1}},
                {"Conv2d": [c, out, 1]},
                [{"Conv2d": {"out_channels": out, "kernel_size": 1}}, {"BatchNorm2d": out}, "ReLU"],
            ]
        )
        self.child(layer, v, (out, h, w))

    def resize(self) -> None:
        v = self.pick(minimum=2)
        if v is None:
            return
        shape = self.shapes[v]
        if len(shape) == 3 and shape[1] >= 2 and shape[2] >= 2:
            small = self.child({"MaxPool2d": 2}, v, (shape[0], shape[1] // 2, shape[2] // 2))
            modes = ["nearest", "nearest-exact", "bilinear", "bicubic", "area"]
        elif len(shape) == 2 and shape[1] >= 2:
            small = self.child({"MaxPool1d": 2}, v, (shape[0], shape[1] // 2))
            modes = ["nearest", "linear", "area"]
        else:
            return
        extra = {"mode": self.rng.choice(modes)} if self.rng.random() < 0.6 else {}
        self.op("interpolate", [small, v], (shape[0], *shape[1:]), **extra)

    def recurrent(self) -> None:
        v = self.pick(rank=2)
        if v is None:
            return
        length, features = self.shapes[v]
        hidden = self.rng.choice([3, 4])
        kind = self.rng.choice(["LSTM", "GRU"])
        out = self.fresh("seq")
        self.child(
            {kind: {"input_size": features, "hidden_size": hidden, "batch_first": True}},
            v,
            (length, hidden),
            prefix="rnn",
            **{"as": [out, "_"]},
        )

    def attention(self) -> None:
        v = self.pick(rank=2)
        if v is None:
            return
        length, features = self.shapes[v]
        heads = self.rng.choice([h for h in (1, 2, 4) if features % h == 0])
        kv = self.rng.choice([v, self.same_shape(v)])
        out, weights = self.fresh("att"), self.fresh("weights")
        keep = self.rng.random() < 0.3
        extra: dict = {"as": [out, weights if keep else "_"]}
        if not keep and self.rng.random() < 0.5:
            extra["with"] = {"need_weights": False}
        self.child(
            {"MultiheadAttention": {"embed_dim": features, "num_heads": heads, "batch_first": True}},
            [v, kv, kv],
            (length, features),
            prefix="mha",
            **extra,
        )
        if keep:
            self.define(weights, (length, length))

    def reduce(self) -> None:
        v = self.pick(minimum=2)
        if v is None:
            return
        shape = self.shapes[v]
        kind = self.rng.choice(["flatten", "mean", "select"])
        if kind == "flatten":
            self.child("Flatten", v, (math.prod(shape),))
        elif kind == "mean":
            self.child({"Mean": {"dim": 1}}, v, shape[1:])
        else:
            self.child({"Select": {"dim": 1, "index": self.rng.choice([0, -1])}}, v, shape[1:])

    def shared(self) -> None:
        """A declared module called on two values of one shape (shared weights), or a declared list run member
        by member (an nn.ModuleList)."""
        v = self.pick()
        if v is None:
            return
        shape = self.shapes[v]
        name = self.fresh("m")
        out = self.rng.choice([3, 5])
        if self.rng.random() < 0.5:
            self.modules[name] = [{"Linear": {"out_features": out}}, "ReLU"]
            for source in (v, self.same_shape(v)):
                self.read(source)
                a = self.fresh("c")
                self.steps.append({"call": name, "from": source, "as": a})
                self.define(a, shape[:-1] + (out,))
            self.last = None
        else:
            members = self.rng.choice([1, 2, 3])
            self.modules[name] = [{"Linear": {"out_features": out + k}} for k in range(members)]
            for k in range(members):
                source = self.pick() or v
                self.read(source)
                a = self.fresh("c")
                self.steps.append({"call": f"{name}.{k}", "from": source, "as": a})
                self.define(a, self.shapes[source][:-1] + (out + k,))
            self.last = None

    def nested(self) -> None:
        """A child graph node of one or two inputs and one or two outputs (a tuple, unpacked by `as:`)."""
        if self.depth >= 2:
            return
        sources = [v for v in (self.pick(), self.pick()) if v is not None]
        sources = list(dict.fromkeys(sources))
        if not sources:
            return
        names = ["x"] if len(sources) == 1 and self.rng.random() < 0.7 else [f"u{i}" for i in range(len(sources))]
        inner = _GraphGen(self.rng, dict(zip(names, (self.shapes[s] for s in sources))), self.depth + 1)
        inner.grow(self.rng.randint(1, 4), training=False)
        node = inner.node(top=False, outputs=self.rng.choice([1, 2]))
        if node is None:
            return
        node, shapes = node
        if names != ["x"] or self.rng.random() < 0.3:
            node["inputs"] = names
        name = self.fresh("g")
        step: dict = {name: node, "from": sources if len(sources) > 1 else sources[0]}
        self.read(*sources)
        if isinstance(node.get("output"), list):  # a tuple, unpacked
            outs = [self.fresh("o") for _ in shapes]
            step["as"] = outs
            for out, shape in zip(outs, shapes):
                self.define(out, shape)
        else:
            self.define(name, shapes[0])
        self.steps.append(step)
        self.last = None

    def aux(self) -> None:
        """A training-only head (`when: training`), sometimes two deep."""
        v = self.pick()
        if v is None:
            return
        head = self.child({"Linear": {"out_features": 2}}, v, self.shapes[v][:-1] + (2,), prefix="aux", when="training")
        if self.rng.random() < 0.3:
            self.child({"Dropout": 0.5}, head, self.shapes[head], prefix="aux", when="training")

    def vector(self, v: str) -> str:
        """``v`` as a (N, 4) value: flattened, then a Linear."""
        if len(self.shapes[v]) > 1:
            v = self.child("Flatten", v, (math.prod(self.shapes[v]),))
        return self.child({"Linear": {"out_features": 4}}, v, (4,))

    KINDS = (
        ("linear", 4),
        ("activation", 2),
        ("norm", 1),
        ("binary", 4),
        ("join", 2),
        ("matmul", 1),
        ("token", 1),
        ("conv", 2),
        ("resize", 2),
        ("recurrent", 1),
        ("attention", 2),
        ("reduce", 1),
        ("shared", 2),
        ("nested", 1),
        ("aux", 1),
    )

    def grow(self, steps: int, training: bool = True) -> None:
        kinds = [k for k, _ in self.KINDS if training or k != "aux"]
        weights = [w for k, w in self.KINDS if training or k != "aux"]
        for _ in range(steps):
            getattr(self, self.rng.choices(kinds, weights)[0])()

    def dropped(self) -> list[dict]:
        """Sometimes a head built and dropped (`keep: false`): last, reading a kept value or each other's."""
        kept = [n for n in self.shapes if n not in self.params]
        if self.rng.random() > 0.2 or not kept:
            return []
        v = self.rng.choice(kept)
        steps = [{self.fresh("d"): "Flatten", "from": v, "keep": False}]
        if self.rng.random() < 0.6:
            steps.append({self.fresh("d"): {"Linear": {"out_features": self.rng.choice([2, 7])}}, "keep": False})
        return steps

    def init_rules(self) -> list[dict]:
        rules = [
            {"type": "Linear", "weight": {"normal_": {"std": 0.02}}, "bias": "zeros_"},
            {"type": ["Conv2d", "Conv1d"], "weight": {"kaiming_normal_": {"mode": "fan_out"}}},
            {"path": self.rng.choice(["d*", "s*", "*.0", "m*.1"]), "weight": "ones_"},
        ]
        return self.rng.sample(rules, self.rng.randint(1, 3))

    def node(self, top: bool, outputs: int = 1) -> tuple[dict, list[tuple]] | None:
        """The graph node: every value no step read becomes an output. (node, the outputs' shapes)."""
        if not self.steps:
            v = self.pick() or next(iter(self.shapes))
            self.child("Identity", v, self.shapes[v])
        main = [n for n in self.unused if n not in self.training]
        aux = [n for n in self.unused if n in self.training]
        while len(main) > outputs and not top:  # fold the extra values into one: (N, 4) each, added
            a, b = main.pop(), main.pop()
            if self.shapes[a] != self.shapes[b]:
                a, b = (self.vector(v) for v in (a, b))
            main.append(self.op("add", [a, b], self.shapes[a]))
        graph: dict = {}
        if self.params:
            graph["params"] = self.params
        if self.modules:
            graph["modules"] = self.modules
        graph["graph"] = self.steps + self.dropped()
        names = main + aux
        if not main:
            return None
        if self.rng.random() < 0.25:  # rules of its own, run when the node is built (torchvision's loop)
            graph["init"] = self.init_rules()
        if aux:  # GoogLeNet's auxiliary heads: training returns them too, eval only the main output(s)
            graph["output"] = names
            graph["eval_output"] = main[0] if len(main) == 1 and self.rng.random() < 0.7 else main
        elif len(names) > 1 and top and self.rng.random() < 0.4:
            graph["output"] = {str(i) if self.rng.random() < 0.5 else f"out_{n}": n for i, n in enumerate(names)}
        elif len(names) > 1 or (not top and self.rng.random() < 0.2):  # a tuple (of one, sometimes)
            graph["output"] = names
        elif names[0] != self.last or self.rng.random() < 0.3:
            graph["output"] = names[0]
        if self.rng.random() < 0.2:
            graph["class"] = self.rng.choice(["Net", "Block", "Graph", "Model2", *CLASS_NAMES[:8]])
        return graph, [self.shapes[n] for n in names]


INPUT_SHAPES = [(8,), (6,), (5, 8), (4, 6), (3, 8, 8), (4, 6, 6), (2, 4, 4)]


def _generate_graph(rng: random.Random) -> dict:
    """A whole spec around a generated graph node, sometimes placed in a list, as a named child or a block body."""
    count = rng.choice([1, 1, 1, 2, 3])
    if count == 1:
        inputs = {"x" if rng.random() < 0.8 else "image": rng.choice(INPUT_SHAPES)}
    else:
        inputs = {
            rng.choice(["a", "b", "c", "left", "right", "img"]) + f"_{i}": rng.choice(INPUT_SHAPES)
            for i in range(count)
        }
    gen = _GraphGen(rng, inputs)
    gen.grow(rng.randint(2, 12))
    made = gen.node(top=True)
    if made is None:
        gen = _GraphGen(rng, inputs)
        gen.linear()
        made = gen.node(top=True)
    node, _ = made
    spec: dict = {"name": "gen"}
    spec["input"] = list(inputs["x"]) if "x" in inputs else {k: list(v) for k, v in inputs.items()}
    simple = "x" in inputs and "eval_output" not in node and not isinstance(node.get("output"), (dict, list))
    where = rng.random() if simple else 1.0
    if where < 0.15:
        spec["model"] = [node, "Identity"]
    elif where < 0.3:
        spec["model"] = {"stage": node, "act": "Identity"}
    elif where < 0.4:
        spec["blocks"] = {"G": {"body": node}}
        spec["model"] = ["G"]
    else:
        spec["model"] = node
    return spec


def _graph_seed_texts(root: Path = ROOT) -> list[tuple[str, bytes]]:
    """The graph seeds: GRAPH_SEEDS, the shipped graph specs (ViT and ConvNeXt at a small size), tests/invalid/graph_*."""
    out = [(f"graph:{name}", text.lstrip().encode()) for name, text in GRAPH_SEEDS.items()]
    small = {
        "vit.yaml": {
            "image_size": 16,
            "patch_size": 8,
            "num_layers": 2,
            "num_heads": 2,
            "hidden_dim": 8,
            "mlp_dim": 12,
            "num_classes": 3,
        },
        "convnext_tiny.yaml": {"depths": [1, 1, 2, 1], "dims": [4, 8, 8, 12], "num_classes": 3},
    }
    for name, sizes in small.items():
        path = root / "specs" / name
        if not path.exists():
            continue
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_SafeLoader)
        tree.setdefault("vars", {}).update(sizes)
        if name.startswith("convnext"):
            tree["input"] = [3, 32, 32]
        out.append((f"graph:{name}", yaml.dump(tree, Dumper=_SafeDumper, sort_keys=False).encode()))
    for path in sorted((root / "specs").glob("*.yaml")):  # the other shipped graph specs (GoogLeNet, FPN, ...)
        text = path.read_bytes()
        if path.name not in small and b"graph:" in text and len(text) <= MAX_SEED_BYTES:
            out.append((f"graph:{path.name}", text))
    for path in sorted((root / "tests" / "invalid").glob("graph_*.yaml")):
        out.append((str(path.relative_to(root)), path.read_bytes()))
    return out


def _graph_nodes(tree: Any) -> list[dict]:
    """Every graph node in a spec's tree (dicts whose `graph:` is a list), outermost first."""
    nodes = []
    seen: set[int] = set()
    stack = [tree]
    while stack and len(nodes) < 200:
        node = stack.pop(0)
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, dict) and isinstance(node.get("graph"), list):
                nodes.append(node)
            stack.extend(node.values() if isinstance(node, dict) else node)
    return nodes


def _step_defines(step: Any) -> list[str]:
    if not isinstance(step, dict):
        return []
    if "as" in step:
        outs = step["as"] if isinstance(step["as"], list) else [step["as"]]
        return [o for o in outs if isinstance(o, str) and o != "_"]
    keys = [k for k in step if k not in STEP_KEY_NAMES and k not in GRAPH_OP_NAMES]
    return [k for k in keys if isinstance(k, str)]


def _node_names(node: dict) -> list[str]:
    """The values a graph node defines: inputs, params, buffers, modules, and each step's."""
    names = list(node["inputs"]) if isinstance(node.get("inputs"), list) else ["x"]
    for key in ("params", "buffers", "modules"):
        if isinstance(node.get(key), dict):
            names += [k for k in node[key] if isinstance(k, str)]
    for step in node["graph"]:
        names += _step_defines(step)
    return [n for n in names if isinstance(n, str)]


def _rename(value: Any, old: str, new: Any) -> Any:
    """Every reference to ``old`` in a step (from, as, an operation's values, call targets) renamed to ``new``."""
    if isinstance(value, str):
        if value == old:
            return new
        if value.startswith(old + ".") and isinstance(new, str):  # call: name.K
            return new + value[len(old) :]
        return value
    if isinstance(value, list):
        return [_rename(v, old, new) for v in value]
    return value


def _mutate_graph_tree(rng: random.Random, tree: Any) -> str | None:
    """One §15-aware edit of ``tree`` in place; a label, or None when there is no graph node to edit."""
    nodes = _graph_nodes(tree)
    if not nodes:
        return None
    node = rng.choice(nodes)
    steps: list = node["graph"]
    names = _node_names(node) or ["x"]
    top_inputs = tree.get("input") if isinstance(tree, dict) and node is tree.get("model") else None
    if isinstance(top_inputs, dict):  # the model's graph reads `input:`'s names
        names = [*(k for k in top_inputs if isinstance(k, str)), *(n for n in names if n != "x")]
    kind = rng.choice(
        [
            "rename",
            "rename_all",
            "drop",
            "duplicate",
            "swap",
            "front",
            "reverse",
            "from",
            "as",
            "as_count",
            "op",
            "arity",
            "dim",
            "mode",
            "when",
            "eval_output",
            "output",
            "call",
            "modules",
            "inputs",
            "input",
            "tensor",
            "with",
            "huge",
            "key",
            "step_key",
            "move",
            "odd_graph_key",
            "class",
        ]
    )
    i = rng.randrange(len(steps)) if steps else 0
    step = steps[i] if steps else None
    what = ""
    if kind in ("rename", "rename_all"):
        old = rng.choice(names)
        new = rng.choice(VALUE_NAMES + names) if rng.random() < 0.8 else _hostile_value(rng)
        new_key = new if not isinstance(new, (list, dict)) else str(new)  # as a mapping's key
        for key in ("params", "buffers", "modules"):
            if isinstance(node.get(key), dict) and old in node[key]:
                node[key] = {(new_key if k == old else k): v for k, v in node[key].items()}
        if isinstance(node.get("inputs"), list):
            node["inputs"] = _rename(node["inputs"], old, new)
        for j, s in enumerate(steps):
            if not isinstance(s, dict):
                continue
            if old in s and old not in STEP_KEY_NAMES:
                steps[j] = s = {(new_key if k == old else k): v for k, v in s.items()}
            if kind == "rename_all" or "as" in s:
                for key in ("from", "as", "call", *GRAPH_OP_NAMES):
                    if key in s and (kind == "rename_all" or key == "as"):
                        s[key] = _rename(s[key], old, new)
        if kind == "rename_all" and isinstance(top_inputs, dict) and old in top_inputs:
            tree["input"] = {(new_key if k == old else k): v for k, v in top_inputs.items()}
        if kind == "rename_all":
            for key in ("output", "eval_output"):
                if isinstance(node.get(key), dict):
                    node[key] = {k: _rename(v, old, new) for k, v in node[key].items()}
                elif key in node:
                    node[key] = _rename(node[key], old, new)
        what = f"{old!r} -> {_short(new)}"
    elif kind == "drop" and len(steps) > 1:
        del steps[i]
        what = f"step {i}"
    elif kind == "duplicate" and steps:
        steps.insert(i, copy.deepcopy(step))
        what = f"step {i}"
    elif kind == "swap" and len(steps) > 1:
        j = rng.randrange(len(steps))
        steps[i], steps[j] = steps[j], steps[i]
        what = f"steps {i},{j}"
    elif kind == "front" and steps:
        steps.insert(0, steps.pop(i))
        what = f"step {i}"
    elif kind == "reverse":
        steps.reverse()
    elif kind == "from" and isinstance(step, dict):
        count = rng.choice([0, 1, 1, 2, 3, 4, 9, 1000])
        pool = names + [*_step_defines(step), "_", "x", "nothing"]
        value: Any = [rng.choice(pool) for _ in range(count)] if rng.random() < 0.8 else _odd(rng)
        if isinstance(value, list) and len(value) == 1 and rng.random() < 0.5:
            value = value[0]
        key = next((k for k in step if k in GRAPH_OP_NAMES), "from")
        step[key if rng.random() < 0.5 else "from"] = value
        what = f"step {i}.{key} = {_short(value)}"
    elif kind in ("as", "as_count") and isinstance(step, dict):
        count = rng.choice([0, 1, 2, 3, 4, 1000]) if kind == "as_count" else 1
        pool = ["_", "out", "h", "weights", *names]
        value = [rng.choice(pool) if rng.random() < 0.7 else f"n{k}" for k in range(count)]
        if kind == "as" or rng.random() < 0.2:
            value = rng.choice([*pool, *ODD[:20], ["_"], ["_", "_"], [["a", "b"]]])
        step["as"] = value
        what = f"step {i}.as = {_short(value)}"
    elif kind == "op" and isinstance(step, dict):
        op = next((k for k in step if k in GRAPH_OP_NAMES), None)
        new_op = rng.choice(GRAPH_OP_NAMES + ["call"])
        if op is not None:
            steps[i] = {(new_op if k == op else k): v for k, v in step.items()}
        else:  # a child step becomes an operation on what it read
            source = step.get("from", rng.choice(names))
            steps[i] = {new_op: source if isinstance(source, list) else [source, rng.choice(names)]}
            if "as" in step:
                steps[i]["as"] = step["as"]
        what = f"step {i}: {op} -> {new_op}"
    elif kind == "arity" and isinstance(step, dict):
        op = next((k for k in step if k in GRAPH_OP_NAMES), None) or rng.choice(GRAPH_OP_NAMES)
        count = rng.choice([0, 1, 2, 3, 5, 100, 10_000])
        step.pop(next((k for k in step if k in GRAPH_OP_NAMES), None), None)
        steps[i] = {op: [rng.choice(names) for _ in range(count)], **step}
        what = f"step {i}: {op} of {count}"
    elif kind == "dim" and isinstance(step, dict):
        step["dim"] = rng.choice([0, 1, 2, 3, 4, 5, -1, -2, -3, -4, -5, 99, -99, 2**63, True, None, "1", 1.0, [1]])
        what = f"step {i}.dim = {step['dim']!r}"
    elif kind == "mode" and isinstance(step, dict):
        step["mode"] = rng.choice(
            ["nearest", "nearest-exact", "bilinear", "bicubic", "linear", "trilinear", "area", "Nearest", "", None, 1]
        )
        what = f"step {i}.mode = {step['mode']!r}"
    elif kind == "when" and isinstance(step, dict):
        step["when"] = "training" if rng.random() < 0.6 else _odd(rng)
        what = f"step {i}.when = {_short(step['when'])}"
    elif kind == "eval_output":
        roll = rng.random()
        if roll < 0.3:
            node.pop("eval_output", None)
            what = "removed"
        else:
            value = rng.choice(names) if roll < 0.6 else [rng.choice(names) for _ in range(rng.choice([1, 2, 3]))]
            node["eval_output"] = value if roll < 0.9 else _odd(rng)
            what = _short(node["eval_output"])
    elif kind == "output":
        roll = rng.random()
        if roll < 0.2:
            node.pop("output", None)
            what = "removed"
        elif roll < 0.45:
            node["output"] = [rng.choice(names) for _ in range(rng.choice([0, 1, 2, 3, 50]))]
        elif roll < 0.7:
            keys = [rng.choice(["0", "1", "out", 0, 1, True, None, "", "a b", "x" * 300]) for _ in range(3)]
            node["output"] = {k: rng.choice(names + [[rng.choice(names)], None]) for k in keys}
        else:
            node["output"] = _odd(rng)
        what = what or _short(node.get("output"))
    elif kind == "call" and isinstance(step, dict):
        modules = list(node["modules"]) if isinstance(node.get("modules"), dict) else []
        target = rng.choice(modules + names) if rng.random() < 0.6 else _odd(rng)
        if isinstance(target, str) and rng.random() < 0.5:
            target += "." + rng.choice(["0", "1", "2", "3", "-1", "99999", "100000", "01", "1.2", "", "a"])
        call = {"call": target}
        for key in ("from", "as"):
            if key in step:
                call[key] = step[key]
        steps[i] = call
        what = f"step {i}: call {_short(target)}"
    elif kind == "modules":
        roll = rng.random()
        if roll < 0.3:
            node["modules"] = _odd(rng)
        elif roll < 0.5:
            node.pop("modules", None)
        elif roll < 0.7:
            name = rng.choice(["encoder", "inner", *names])
            node.setdefault("modules", {}) if isinstance(node.get("modules"), dict) else None
            if isinstance(node.get("modules"), dict):
                node["modules"][name] = rng.choice(
                    [
                        {"Linear": {"out_features": 4}},
                        [{"Linear": {"out_features": 4}}] * rng.choice([1, 3, 1000]),
                        {"graph": [{"fc": {"Linear": {"out_features": 4}}}]},
                        [],
                        {},
                        None,
                        "ReLU",
                        {"repeat": 3, "body": ["ReLU"]},
                    ]
                )
            else:
                node["modules"] = {name: [{"Linear": {"out_features": 4}}, "ReLU"]}
            steps.insert(i, {"call": f"{name}.{rng.choice([0, 1])}" if rng.random() < 0.5 else name})
        else:
            node["modules"] = {f"m{k}": {"Linear": {"out_features": 2}} for k in range(rng.choice([2, 100, 3000]))}
        what = _short(node.get("modules"))
    elif kind == "inputs":
        count = rng.choice([0, 1, 2, 3, 8, 9, 500])
        value = [rng.choice(["a", "b", "x", "u", *names]) for _ in range(count)] if rng.random() < 0.7 else _odd(rng)
        node["inputs"] = value
        what = _short(value)
    elif kind == "input" and isinstance(tree, dict):
        roll = rng.random()
        if roll < 0.4:
            tree["input"] = {
                rng.choice(["a", "b", "x", "left", *names, 0, True, "", "self"]): rng.choice(
                    [[4], [8], [3, 8, 8], [5, 8], [], [0], [-1], [2**40], "x", None, [[4]]]
                )
                for _ in range(rng.choice([0, 1, 2, 3, 9]))
            }
        elif roll < 0.6 and isinstance(node.get("inputs"), list):
            tree["input"] = {n: [rng.choice([4, 8])] for n in node["inputs"] if isinstance(n, str)}
        else:
            tree["input"] = _odd(rng)
        what = _short(tree["input"])
    elif kind == "tensor":
        key = rng.choice(["params", "buffers"])
        table = node.get(key) if isinstance(node.get(key), dict) else {}
        name = rng.choice([*table, *names, "p"]) if rng.random() < 0.8 else _odd(rng)
        decl: Any = {
            "shape": rng.choice(
                [[1, 1, 8], [8], [1, 4], [2**31, 2**31], [10**6, 10**6], [0], [], [-1], [1.5], None, "8"]
            ),
        }
        if rng.random() < 0.5:
            decl["dtype"] = rng.choice(
                ["float32", "float64", "float16", "bfloat16", "int64", "int32", "bool", "half", 1, None]
            )
        if rng.random() < 0.5:
            decl["init"] = rng.choice(
                [
                    "zeros_",
                    "ones_",
                    {"normal_": {"std": 1e308}},
                    {"constant_": {"val": math.nan}},
                    "orthogonal_",
                    3,
                    None,
                    {"trunc_normal_": {"std": 0.02}},
                    {"kaiming_uniform_": {}},
                    "eye_",
                    "dirac_",
                ]
            )
        if rng.random() < 0.2:
            decl = _odd(rng)
        try:
            table[name] = decl
        except TypeError:
            table = _odd(rng)
        node[key] = table
        what = f"{key}.{_short(name)} = {_short(decl)}"
    elif kind == "with" and isinstance(step, dict):
        step["with"] = rng.choice(
            [
                {"need_weights": rng.choice([True, False, 1, "no", None, [1]])},
                {"attn_mask": rng.choice([None, 1, "x", [[0.0]]])},
                {"average_attn_weights": False},
                {"key_padding_mask": None},
                {"is_causal": True},
                {"hx": None},
                {"foo": 1},
                {"": 1},
                {"self": 1},
                {"x": 1},
                {rng.choice(names): rng.choice(names)},
                _odd(rng),
            ]
        )
        what = f"step {i}.with = {_short(step['with'])}"
    elif kind == "huge":
        roll = rng.randrange(5)
        count = rng.choice([300, 1000, 2500, 6000])
        last = _step_defines(steps[-1])[0] if steps and _step_defines(steps[-1]) else "x"
        if roll == 0:  # a long chain of operations
            chain = [{"add": [last, last], "as": "h0"}] + [
                {"add": [f"h{k}", f"h{k}"], "as": f"h{k + 1}"} for k in range(count)
            ]
            steps.extend(chain)
        elif roll == 1:  # one operation on very many values
            steps.append({"add": [last] * count})
        elif roll == 2:  # very many children
            steps.extend({f"r{k}": "ReLU"} for k in range(count))
        elif roll == 4:  # graph nodes nested very deep (the loader stops at 64 levels of YAML)
            count = rng.choice([8, 20, 40])
            inner: Any = {"graph": [{"fc": {"Linear": {"out_features": 4}}}]}
            for k in range(count):
                inner = {"graph": [{f"g{k}": inner}]}
            steps.append({"deep": inner, "from": last})
        else:  # a declared list of very many members, each run
            node["modules"] = {"heads": [{"Linear": {"out_features": 2}}] * count}
            steps.extend({"call": f"heads.{k}", "from": last, "as": f"o{k}"} for k in range(count))
            node["output"] = [f"o{k}" for k in range(count)]
        what = f"{roll} x {count}"
    elif kind == "key" and isinstance(step, dict):
        key = rng.choice(STEP_KEY_NAMES + GRAPH_OP_NAMES + GRAPH_KEY_NAMES + ["froms", "As", 1, None, True])
        step[key] = _odd(rng)
        what = f"step {i}.{_short(key)} = {_short(step[key])}"
    elif kind == "step_key" and isinstance(step, dict):
        child = next((k for k in step if k not in STEP_KEY_NAMES and k not in GRAPH_OP_NAMES), None)
        if child is not None:
            new = rng.choice(VALUE_NAMES)
            try:
                steps[i] = {(new if k == child else k): v for k, v in step.items()}
            except TypeError:
                pass
            what = f"step {i}: {child!r} -> {_short(new)}"
        else:
            steps[i] = _odd(rng)
    elif kind == "move" and len(nodes) > 1 and steps:  # a step into another graph node (outer/inner names)
        other = rng.choice(nodes)
        if other is not node:
            other["graph"].insert(rng.randrange(len(other["graph"]) + 1), steps.pop(i))
            what = f"step {i} elsewhere"
    elif kind == "class":  # the generated class's name: the script's own, a layer's, another node's
        node["class"] = rng.choice(CLASS_NAMES) if rng.random() < 0.9 else _odd(rng)
        what = _short(node["class"])
    elif kind == "odd_graph_key":
        key = rng.choice(GRAPH_KEY_NAMES)
        node[key] = _odd(rng)
        what = f"{key} = {_short(node[key])}"
    return f"{kind}({what})"


def _graph_mutation(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    """A §15-aware edit of a spec's graph nodes (falls back to a structured edit when there is none; a stack model
    becomes a graph node of the same layers first, half the time)."""
    try:
        tree = yaml.load(data.decode("utf-8"), Loader=_SafeLoader)
    except Exception:
        return _token(rng, data, corpus)
    if not isinstance(tree, dict):
        return _structured(rng, data, corpus)
    label = _mutate_graph_tree(rng, tree)
    if label is None:
        if not _graphify(rng, tree):
            return _structured(rng, data, corpus)
        label = "graphify"
    try:
        text = yaml.dump(tree, Dumper=_SafeDumper, sort_keys=False, default_flow_style=rng.choice([False, None]))
    except Exception:
        return _token(rng, data, corpus)
    return text.encode("utf-8", "surrogatepass"), label


def _graphify(rng: random.Random, tree: dict) -> bool:
    """A stack model (a list of layers) rewritten as a graph node of the same steps, sometimes with a residual."""
    model = tree.get("model")
    if isinstance(model, dict) and model and all(isinstance(k, str) for k in model):
        model = [{k: v} for k, v in model.items()]
    if not isinstance(model, list) or not model:
        return False
    steps = []
    for k, layer in enumerate(model):
        steps.append({f"l{k}": layer})
        if k and rng.random() < 0.15:
            steps.append({rng.choice(["add", "mul", "cat"]): [f"l{k - 1}", f"l{k}"], "as": f"r{k}"})
    tree["model"] = {"graph": steps}
    return True


def _generated(rng: random.Random, data: bytes, corpus: list) -> tuple[bytes, str]:
    """A freshly generated graph spec (the seed is dropped)."""
    spec = _generate_graph(rng)
    text = yaml.dump(spec, Dumper=_SafeDumper, sort_keys=False, default_flow_style=rng.choice([False, None]))
    return text.encode("utf-8"), "generated"


def make_graph_input(seed: int, index: int, corpus: list[tuple[str, bytes]]) -> tuple[str, list[str], str]:
    """A graph-family input: a generated graph spec or a graph seed, with zero to three §15-aware edits and
    sometimes one of the byte- or line-level mutators on top."""
    rng = random.Random(f"specc-fuzz-graph:{seed}:{index}")
    seeds = [item for item in corpus if item[0].startswith("graph:") or "/graph_" in item[0]]
    if not seeds or rng.random() < 0.5:
        name, data = "generated", _generated(rng, b"", corpus)[0]
    else:
        name, data = rng.choice(seeds)
    applied = []
    for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3])):
        try:
            data, label = _graph_mutation(rng, data, corpus)
        except Exception as err:
            applied.append(f"graph:failed({type(err).__name__})")
            continue
        applied.append(f"graph:{label}")
    if rng.random() < 0.15:
        mutator = rng.choices(_NAMES, _WEIGHTS)[0]
        try:
            new, label = MUTATORS[mutator][0](rng, data, corpus)
            if len(new) <= MAX_INPUT_CHARS:
                data = new
                applied.append(f"{mutator}:{label}")
        except Exception as err:
            applied.append(f"{mutator}:failed({type(err).__name__})")
    return name, applied, data.decode("utf-8", "replace")


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


GRAPH_SHARE = 0.35  # of a mixed run's inputs, the graph family's


def make_any_input(
    seed: int, index: int, corpus: list[tuple[str, bytes]], graph_corpus: list[tuple[str, bytes]], family: str
) -> tuple[str, list[str], str]:
    """Input ``index`` of run ``seed`` in ``family``: "specs" (make_input), "graph" (make_graph_input) or "mixed"
    (each index drawn to one of them by its own generator, so that the "specs" inputs stay what they were)."""
    if family == "mixed":
        graph = random.Random(f"specc-fuzz-family:{seed}:{index}").random() < GRAPH_SHARE
        family = "graph" if graph else "specs"
    if family == "graph":
        return make_graph_input(seed, index, corpus + graph_corpus)
    return make_input(seed, index, corpus)


# --------------------------------------------------------------------------- running


class _Timeout(BaseException):
    """Raised by the watchdog in the middle of an input that runs past HARD_SECONDS."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Timeout(f"still running after {HARD_SECONDS:g} s")


class BackendMismatch(Exception):
    """A valid graph spec whose compiled model, generated script and lowered shapes disagree (§8)."""


DEEP_BYTES = 8 << 20  # graph models up to this many bytes of tensors also run forward in both backends
DEEP_ELEMENTS = 1 << 20  # ... when their sample inputs hold at most this many numbers
DEEP_LAYERS = 300  # ... and they have at most this many layers


def check_input(text: str) -> str:
    """Run one input through the pipeline; return how far it got. Raises whatever the pipeline raises.

    A valid spec with a graph node (§15) that is small enough also runs forward: the compiled model and the
    generated script's, in eval and train mode, must agree with each other and with the lowered output shapes.
    """
    import torch

    import compiler

    try:
        spec = compiler.parse_spec(text, "fuzz.yaml", max_bytes=MODEL_BYTES)
    except compiler.SpecError as err:
        message = str(err)
        if not message.startswith("fuzz.yaml:") or not err.problems:
            raise AssertionError(f"unlocated SpecError: {message[:300]!r}") from err
        return "spec_error"
    stage, model = "valid", None
    program = compiler.lower_spec(spec)
    if program.model.nbytes <= MODEL_BYTES:
        torch.manual_seed(0)
        model = compiler.build_model(spec)
        stage = "built"
    script = compiler.render_script(spec)
    ast.parse(script)
    if model is not None and _runs_forward(program):
        _forward_both(program, model, script)
        stage = "ran"
    return stage


def _runs_forward(program: Any) -> bool:
    ir = program.model
    if next(ir.graphs(), None) is None or ir.nbytes > DEEP_BYTES or sum(1 for _ in ir.layers()) > DEEP_LAYERS:
        return False
    shapes = list((ir.inputs or {"x": ir.input_shape}).values())
    return (
        all(s and all(isinstance(d, int) for d in s) for s in shapes)
        and sum(2 * math.prod(s) for s in shapes) <= DEEP_ELEMENTS
    )


def _same(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and bool(((a == b) | (a.isnan() & b.isnan())).all())
        )
    return a == b


def _forward_both(program: Any, compiled: Any, script: str) -> None:
    """Forward a batch of 2 through the compiled model and the generated script's, in eval and train mode."""
    import torch

    ir = program.model
    generator = torch.Generator().manual_seed(1234)
    inputs = []
    for shape in (ir.inputs or {"x": ir.input_shape}).values():
        if ir.input_dtype == "int64":
            inputs.append(torch.randint(0, 2, (2, *shape), generator=generator))
        else:
            inputs.append(torch.randn((2, *shape), generator=generator))
    import tempfile

    from compiler.workflow.check import import_script

    with tempfile.TemporaryDirectory() as folder:
        module = import_script(script, "fuzz_generated", folder)
    torch.manual_seed(0)
    generated = module.build_model()
    if str(compiled) != str(generated):
        raise BackendMismatch("str(model) differs between the compiled model and the generated script")
    if not _same(dict(compiled.state_dict()), dict(generated.state_dict())):
        raise BackendMismatch("state dicts differ (keys, shapes or same-seed values)")
    outs = []
    for training in (False, True):
        compiled.train(training), generated.train(training)
        with torch.no_grad():
            torch.manual_seed(7)
            a = compiled(*inputs)
            torch.manual_seed(7)
            b = generated(*inputs)
        if not _same(a, b):
            raise BackendMismatch(f"outputs differ in {'train' if training else 'eval'} mode")
        outs.append(a)
    expected = ir.outputs  # several outputs by name (training mode), or None for one
    got = outs[1]
    if expected is None:
        want = ir.output_shape
        if not isinstance(got, torch.Tensor):
            raise BackendMismatch(f"train mode returned {type(got).__name__}, lowered as one tensor")
        if want and all(isinstance(d, int) for d in want) and tuple(got.shape[1:]) != tuple(want):
            raise BackendMismatch(f"output shape {tuple(got.shape[1:])}, lowered as {tuple(want)}")
        return
    values = list(got.values()) if isinstance(got, dict) else list(got) if isinstance(got, tuple) else [got]
    if len(values) != len(expected):
        raise BackendMismatch(f"train mode returned {len(values)} outputs, lowered as {len(expected)}")
    for (name, want), value in zip(expected.items(), values):
        if want and all(isinstance(d, int) for d in want) and tuple(value.shape[1:]) != tuple(want):
            raise BackendMismatch(f"output {name!r} has shape {tuple(value.shape[1:])}, lowered as {tuple(want)}")


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
    family: str = "mixed",
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
    graph_corpus = _graph_seed_texts()
    if not corpus:
        raise RuntimeError("empty seed corpus")
    links = _make_links()
    # one intra-op thread: on a loaded machine torch's thread pool makes a small LSTM's forward take 0.02 to 9 s
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    report = Report(seed=seed, family=family)
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
            seed_file, applied, text = make_any_input(seed, index, corpus, graph_corpus, family)
            report.graph_inputs += (
                seed_file == "generated"
                or seed_file.startswith("graph:")
                or any(a.startswith("graph:") for a in applied)
            )
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
            elif stage in ("valid", "built", "ran"):
                report.valid += 1
                report.rendered += 1
                report.built += stage in ("built", "ran")
                report.build_skipped += stage == "valid"
                report.ran += stage == "ran"
            if stage not in ("spec_error", "valid", "built", "ran"):
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
        torch.set_num_threads(threads)
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
                f"(reproduce: python tests/fuzz_specs.py --seed {report.seed} --start {escape.index} --inputs 1 "
                f"--family {report.family})"
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
    parser.add_argument(
        "--family",
        choices=["mixed", "specs", "graph"],
        default="mixed",
        help="specs: mutants of the seed files; graph: generated and mutated graph nodes (§15); mixed (default): both",
    )
    args = parser.parse_args(argv)
    report = run_fuzz(
        inputs=args.inputs,
        seed=args.seed,
        seconds=args.seconds,
        start=args.start,
        family=args.family,
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
