"""Hostile specs: injection into generated code, fuzzed bytes, checkpoints that are cut or altered."""

import ast
import os
import random
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_import_runs_nothing, assert_within
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compiler
from compiler.runtime import helpers as runtime

HOSTILE = [
    'a"b',
    "a'b",
    '"""; import os; os.system("x"); """',
    "'''",
    "back\\slash\\",
    "new\nline",
    "\u2028line separator",
    "nul\x00byte",
    "bidi \u202eevil\u202c",
    "{{ jinja }}",
    "{% raw %}",
    "$$dollar",
    "#comment",
    "\\N{BULLET}",
]

BASE = """
name: hostile
description: {description}
vars: {{text: {text}}}
input: [1, 28, 28]
model:
  - Flatten
  - Linear: {{out_features: 10}}
data:
  dataset: {{MNIST: {{root: {root}}}}}
  transforms: [ToTensor]
loss: CrossEntropyLoss
optimizer: {{SGD: {{lr: 0.1}}}}
train: {{epochs: 1, checkpoint: {{dir: {root}}}}}
"""


def _yaml_str(text):
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_render_as_exact_literals(text):
    yaml_text = BASE.format(description=_yaml_str(text), text=_yaml_str(text), root=_yaml_str(text))
    try:
        spec = compiler.parse_spec(yaml_text, "hostile.yaml")
    except compiler.SpecError as err:  # a rejection must be located
        assert all(p.line > 0 for p in err.problems)
        return
    script = compiler.render_script(spec)
    tree = ast.parse(script)
    imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imports |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    import sys

    roots = {name.split(".")[0] for name in imports}
    assert roots <= {"torch", "torchvision"} | set(sys.stdlib_module_names), roots  # spec text adds no import
    constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    expected = text.replace("$$", "$")
    assert expected in constants  # the value round-trips exactly through the script
    # top level: only imports, assignments, defs and the main guard: nothing executes on import
    assert_import_runs_nothing(tree)


@pytest.mark.parametrize("name", ["__import__", "class", "os.system", "a b", "1abc", "ＡＢ"])
def test_names_must_be_safe_identifiers(name):
    text = f"name: ok\ninput: [4]\nmodel:\n  {name}: ReLU\n  other: ReLU\n"
    if name == "ＡＢ":  # NFKC-folds to "AB": legal, but two names folding together are refused
        text = "name: ok\ninput: [4]\nmodel:\n  ＡＢ: ReLU\n  AB: ReLU\n"
    with pytest.raises(compiler.SpecError):
        compiler.parse_spec(text)


def test_spec_strings_never_import_code():
    for text in (
        "model: [{os.system: [ls]}]",
        "model: [{'torch.nn.Linear': [1, 2]}]",
        "model: [!!python/object:os.system ls]",
    ):
        with pytest.raises(compiler.SpecError):
            compiler.parse_spec("name: x\ninput: [1]\n" + text)


VALID = (
    "name: fuzz\nvars: {h: 8}\ninput: [4]\nmodel:\n  body:\n    - Linear: {out_features: $h}\n    - ReLU\n"
    "    - repeat: 2\n      body: [{Linear: [$h, $h]}, Tanh]\n  head: {Linear: {out_features: 2}}\n"
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_specs_raise_only_spec_errors(data):
    """Mutated bytes of a valid spec: load -> validate -> lower -> build -> render; only SpecError escapes."""
    raw = bytearray(VALID.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.sampled_from(b"[]{}:-,$*'\"!&0123456789 \n\tabcXYZ#"))
        elif op == "insert":
            raw[pos:pos] = data.draw(
                st.sampled_from([b"[", b"{", b"&a ", b"*a", b"!!str ", b"2**", b"$h", b": ", b"\n  -"])
            )
        elif op == "delete" and raw:
            del raw[pos]
        else:
            raw[pos:pos] = raw[max(0, pos - 10) : pos]
    text = raw.decode("utf-8", "replace")
    started = time.perf_counter()
    try:
        spec = compiler.parse_spec(text, "fuzz.yaml")
        compiler.build_model(spec)
        compiler.render_script(spec)
    except compiler.SpecError as err:
        assert str(err).startswith("fuzz.yaml:")
    assert_within(started, 5)


def test_checkpoint_roundtrip_and_detects_truncation_and_tampering(tmp_path):
    path = tmp_path / "ckpt.pt"
    runtime.save_checkpoint(str(path), {"w": torch.arange(10.0), "epoch": 3})
    assert runtime.load_checkpoint(str(path))["epoch"] == 3
    blob = path.read_bytes()
    path.write_bytes(blob[:-7])
    with pytest.raises(ValueError, match="checksum"):
        runtime.load_checkpoint(str(path))
    altered = bytearray(blob)
    altered[-20] ^= 0xFF
    path.write_bytes(bytes(altered))
    with pytest.raises(ValueError, match="checksum"):
        runtime.load_checkpoint(str(path))


def test_checkpoint_refuses_pickled_code(tmp_path):
    import hashlib
    import io
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    buffer = io.BytesIO()
    torch.save({"x": Evil()}, buffer, pickle_module=pickle)
    payload = buffer.getvalue()[:-2] + (77).to_bytes(2, "little")  # a valid trailer: only the unpickler refuses it
    path = tmp_path / "evil.pt"
    path.write_bytes(payload + b"specc-sha256:" + hashlib.sha256(payload).hexdigest().encode())
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        runtime.load_checkpoint(str(path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_checkpoint_to_read_only_folder_raises(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OSError):
            runtime.save_checkpoint(str(tmp_path / "c.pt"), {"a": 1})
    finally:
        tmp_path.chmod(0o700)


def test_an_alias_tree_of_typos_is_refused_fast():
    """54,000 misspelt layer names under the expansion limit: the problem cap keeps the refusal fast."""
    text = (
        "a: &a [" + ", ".join(["Lineer"] * 2000) + "]\n"
        "l0: &l0 [" + ", ".join(["*a"] * 9) + "]\n"
        "l1: &l1 [" + ", ".join(["*l0"] * 3) + "]\n"
        "name: t\nmodel: [*l1]\n"
    )
    started = time.perf_counter()
    with pytest.raises(compiler.SpecError) as info:
        compiler.parse_spec(text, "typos.yaml")
    assert_within(started, 3)
    assert len(info.value.problems) == 101
    assert "stopping after 100 problems" in str(info.value)
    assert "unknown layer type 'Lineer'" in str(info.value) and "did you mean 'Linear'?" in str(info.value)


def test_csv_paths_stay_inside_the_project():
    spec = (
        "name: t\ninput: [4]\nmodel: [{{Linear: {{out_features: 3}}}}]\n"
        "data:\n  dataset: {{CSV: {{path: {path}, target: label}}}}\n"
        "loss: CrossEntropyLoss\noptimizer: {{SGD: {{lr: 0.1}}}}\ntrain: {{epochs: 1}}\n"
    )
    for path in ("/proc/self/environ", "../outside.csv", "data/../../x.csv"):
        with pytest.raises(compiler.SpecError, match="leaves the folder specc runs in") as info:
            compiler.parse_spec(spec.format(path=path), "csv.yaml")
        assert len(info.value.problems) == 1  # no cascade of follow-on errors
    compiler.parse_spec(spec.format(path="data/iris.csv"), "csv.yaml")


def _string_leaves(data, path=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _string_leaves(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _string_leaves(value, (*path, i))
    elif isinstance(data, str):
        yield path


def _replace(data, path, value):
    if not path:
        return value
    head, *rest = path
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[head] = _replace(data[head], rest, value)
    return copy


@pytest.mark.parametrize(
    "spec_path", sorted(Path(__file__).resolve().parent.parent.glob("specs/*.yaml")), ids=lambda p: p.stem
)
def test_hostile_strings_in_every_string_field_of_every_spec(spec_path):
    """Each string value of a shipped spec replaced by each hostile string: a located SpecError, or a script
    that parses, imports only what it should, and carries the string exactly."""
    import yaml

    data = yaml.safe_load(spec_path.read_text())
    leaves = [p for p in _string_leaves(data) if p[0] not in ("model",) or isinstance(p[-1], str)]
    # the big graph specs repeat the same kinds of fields hundreds of times: a seeded sample of 40 keeps every
    # kind (names, paths, strings of each section) while the whole test stays fast
    leaves = [p for p in leaves if p[0] != "model"] + random.Random(0).sample(
        [p for p in leaves if p[0] == "model"], min(40, sum(p[0] == "model" for p in leaves))
    )
    rendered = rejected = 0
    for path in leaves:
        for text in HOSTILE[:8]:
            mutated = _replace(data, list(path), text)
            try:
                spec = compiler.parse_spec(yaml.safe_dump(mutated, allow_unicode=True), "hostile.yaml")
            except compiler.SpecError as err:
                assert all(p.line > 0 and p.file == "hostile.yaml" for p in err.problems), str(err)
                rejected += 1
                continue
            tree = ast.parse(compiler.render_script(spec))
            constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            if path == ("description",):  # the docstring keeps a sanitised copy: printable, no quotes or backslashes
                from compiler.render.script import _safe_doc

                assert _safe_doc(text) in (ast.get_docstring(tree) or "")
            else:
                assert text.replace("$$", "$") in constants
            rendered += 1
    assert rendered + rejected == len(leaves) * 8
