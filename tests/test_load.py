"""Stage 1, the loader: YAML 1.2 core scalars, positions, duplicates, tags and the bounds that keep it safe."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import assert_within

from compiler import SpecError
from compiler.front import load as load_mod
from compiler.front.load import MAX_ALIASES, MAX_BYTES, MAX_DEPTH, load_file, load_text


def _data(text: str):
    return load_text(text, "t.yaml")[0]


def _error(text: str, filename: str = "t.yaml") -> SpecError:
    with pytest.raises(SpecError) as info:
        load_text(text, filename)
    return info.value


def _only(err: SpecError):
    assert len(err.problems) == 1, str(err)
    return err.problems[0]


# --------------------------------------------------------------------------- YAML 1.2 core scalars


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-4", 1e-4),
        ("1E3", 1000.0),
        ("-2.5e+2", -250.0),
        (".5", 0.5),
        ("3.", 3.0),
        ("10", 10),
        ("-7", -7),
        ("+3", 3),
        ("012", 12),  # decimal in YAML 1.2, not octal
        ("0o17", 15),
        ("0x1F", 31),
        ("true", True),
        ("False", False),
        ("TRUE", True),
        ("~", None),
        ("null", None),
        ("", None),
    ],
)
def test_core_schema_scalars(text: str, value) -> None:
    got = _data(f"v: {text}\n")["v"]
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan", ".NaN", "+.Inf"])
def test_special_floats(text: str) -> None:
    """No torch argument a spec can set takes NaN or infinity: refused where they are written (issue 10)."""
    with pytest.raises(SpecError) as info:
        load_text(f"v: {text}\n", "t.yaml")
    problem = _only(info.value)
    assert (problem.line, problem.col) == (1, 4) and "use a finite number" in problem.fix


@pytest.mark.parametrize(
    "text",
    [
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "Yes",
        "ON",
        "2024-01-01",
        "2001-12-14t21:59:43.10-05:00",
        "1:30",
        "1_000",
        "0b101",
        "1e",
        "e5",
        "Null1",
        "same",
        "+-1",
    ],
)
def test_yaml_11_lookalikes_stay_strings(text: str) -> None:
    assert _data(f"v: {text}\n")["v"] == text


@pytest.mark.parametrize("text", ['"123"', "'1e-4'", '"true"', "'null'", '"0x10"'])
def test_quoted_scalars_are_strings(text: str) -> None:
    assert _data(f"v: {text}\n")["v"] == text[1:-1]


def test_core_tags_are_allowed() -> None:
    data = _data(
        "a: !!str 123\nb: !!int '5'\nc: !!float 1\nd: !!bool true\ne: !!null ''\nf: !!seq [1]\ng: !!map {x: 1}\n"
    )
    assert data == {"a": "123", "b": 5, "c": 1.0, "d": True, "e": None, "f": [1], "g": {"x": 1}}


def test_a_core_tag_with_a_wrong_value() -> None:
    problem = _only(_error("a: !!int abc\n"))
    assert (problem.line, problem.col) == (1, 4)
    assert "'abc' is not a valid int" in problem.message and problem.fix


def test_keys_become_strings() -> None:
    assert _data("1: a\ntrue: b\nnull: c\n1.5: d\n") == {"1": "a", "true": "b", "null": "c", "1.5": "d"}


def test_empty_and_comment_only() -> None:
    for text in ("", "\n\n", "# only a comment\n", "---\n", "~\n"):
        problem = _only(_error(text))
        assert "the spec is empty" in problem.message and (problem.line, problem.col) == (1, 1)


# --------------------------------------------------------------------------- positions


def test_positions_of_keys_and_items() -> None:
    _, source = load_text("name: pos\nvars: {a: 1}\nmodel:\n  - Linear: {in_features: 4, out_features: 2}\n  - ReLU\n")
    assert source.positions[("name",)] == (1, 1)
    assert source.positions[("vars", "a")] == (2, 8)
    assert source.positions[("model",)] == (3, 1)
    assert source.positions[("model", 0)] == (4, 5)
    assert source.positions[("model", 0, "Linear")] == (4, 5)
    assert source.positions[("model", 0, "Linear", "out_features")] == (4, 30)
    assert source.positions[("model", 1)] == (5, 5)


def test_locate_falls_back_to_the_nearest_ancestor() -> None:
    _, source = load_text("model:\n  - Linear: {out_features: 2}\n", "f.yaml")
    assert source.locate(("model", 0, "Linear", "bias")) == (2, 5)  # not written: its layer's key
    assert source.locate(("nothing", "here")) == (1, 1)
    problem = source.problem(("model", 0, "Linear", "bias"), "msg", "fix")
    assert str(problem) == "f.yaml:2:5: model.0.Linear.bias: msg Fix: fix"


# --------------------------------------------------------------------------- duplicates


def test_duplicate_key_names_the_first_line() -> None:
    problem = _only(_error("name: a\nmodel: [ReLU]\nname: b\n"))
    assert (problem.line, problem.col) == (3, 1)
    assert "duplicate key 'name' (first on line 1)" in problem.message
    assert problem.fix


def test_nested_duplicate_key() -> None:
    problem = _only(_error("model:\n  - Linear:\n      out_features: 1\n      out_features: 2\n"))
    assert (problem.line, problem.col) == (4, 7)
    assert "duplicate key 'out_features' (first on line 3)" in problem.message


def test_duplicates_after_conversion() -> None:
    assert "duplicate key 'a'" in str(_error('a: 1\n"a": 2\n'))
    assert "duplicate key '1'" in str(_error("1: x\n'1': y\n"))


# --------------------------------------------------------------------------- tags and merge keys


@pytest.mark.parametrize(
    "text",
    [
        "x: !!python/object/apply:os.system ['echo pwned']\n",
        "x: !!python/name:os.system ''\n",
        "x: !!python/object:collections.OrderedDict {}\n",
        "x: !custom 8\n",
        "x: !!binary aGVsbG8=\n",
        "x: !!timestamp 2024-01-01\n",
        "x: !!set {a: null}\n",
        "x: !!omap [{a: 1}]\n",
        "x: !<tag:example.com,2024:thing> 1\n",
    ],
)
def test_non_core_tags_are_refused(text: str) -> None:
    problem = _only(_error(text))
    assert "YAML tag" in problem.message and "is not allowed" in problem.message
    assert (problem.line, problem.col) == (1, 4)
    assert problem.fix


def test_python_tag_is_shown_as_written() -> None:
    assert "'!!python/object/apply:os.system'" in str(_error("x: !!python/object/apply:os.system ['x']\n"))


@pytest.mark.parametrize(
    "text",
    ["base: &b {x: 1}\nuse: {<<: *b}\n", "base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n", "a:\n  <<: {c: 1}\n"],
)
def test_merge_keys_are_refused(text: str) -> None:
    problem = _only(_error(text))
    assert "merge keys" in problem.message


def test_a_quoted_merge_key_is_a_plain_key() -> None:
    assert _data('"<<": 1\n') == {"<<": 1}


def test_non_scalar_keys_are_refused() -> None:
    problem = _only(_error("? [a, b]\n: 1\n"))
    assert "mapping keys must be plain strings" in problem.message


# --------------------------------------------------------------------------- aliases


def test_a_few_aliases_are_fine() -> None:
    data = _data("a: &x [1, 2]\nb: *x\nc: *x\n")
    assert data == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}


def test_alias_uses_are_bounded() -> None:
    ok = "a: &x 1\nb: [" + ", ".join(["*x"] * MAX_ALIASES) + "]\n"
    assert len(_data(ok)["b"]) == MAX_ALIASES
    too_many = "a: &x 1\nb: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n"
    assert f"more than {MAX_ALIASES} alias uses" in str(_error(too_many))


def test_recursive_alias_is_refused() -> None:
    assert "refers to its own ancestor" in str(_error("x: &x [*x]\n"))


def test_billion_laughs_is_refused_fast() -> None:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    text = "\n".join(lines) + "\n"
    start = time.perf_counter()
    err = _error(text)
    assert_within(start, 1)
    assert "alias expansion" in str(err)


def test_quadratic_blowup_is_refused_fast() -> None:
    """One big anchor referred to many times: the alias bound stops it."""
    text = "a: &a [" + ", ".join(["x"] * 5000) + "]\nb: [" + ", ".join(["*a"] * 500) + "]\n"
    start = time.perf_counter()
    _error(text)
    assert_within(start, 1)


# --------------------------------------------------------------------------- depth and size


def test_flow_nesting_is_bounded_before_parsing() -> None:
    ok = "x: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"
    _data(ok)
    start = time.perf_counter()
    problem = _only(_error("x: " + "[" * 10_000 + "]" * 10_000 + "\n"))
    assert_within(start, 1)
    assert f"nesting deeper than {MAX_DEPTH} levels" in problem.message
    assert (problem.line, problem.col) == (1, 4 + MAX_DEPTH)


def test_brackets_in_strings_and_comments_do_not_count() -> None:
    deep = "[" * (MAX_DEPTH + 10)
    assert _data(f"a: '{deep}'\nb: \"{deep}\"\nc: 1  # {deep}\n") == {"a": deep, "b": deep, "c": 1}


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500, 10_000])
def test_block_nesting_is_bounded(levels: int) -> None:
    text = "x:\n  " + "- " * levels + "1\n"
    start = time.perf_counter()
    problem = _only(_error(text))
    assert_within(start, 1)
    assert f"nesting deeper than {MAX_DEPTH} levels" in problem.message


def test_indentation_nesting_is_bounded() -> None:
    text = "".join(" " * i + f"k{i}:\n" for i in range(200))
    assert f"nesting deeper than {MAX_DEPTH} levels" in str(_error(text))


def test_a_parser_recursion_error_is_a_spec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pure-Python YAML parser recurses on deep nesting; that must still be a located problem."""

    def boom(self):
        raise RecursionError

    monkeypatch.setattr(load_mod._CoreLoader, "get_single_node", boom)
    assert "nesting deeper" in str(_error("a: 1\n"))


def test_large_text_is_refused() -> None:
    text = "a: 1\n" + "#" * MAX_BYTES + "\n"
    start = time.perf_counter()
    problem = _only(_error(text))
    assert_within(start, 1)
    assert "larger than 1024 KiB" in problem.message


# --------------------------------------------------------------------------- syntax errors


def test_syntax_error_is_located_with_context() -> None:
    problem = _only(_error("name: x\ninput: [1, 28, 28\nmodel: [ReLU]\n"))
    assert (problem.line, problem.col) == (3, 6)
    assert problem.message.startswith("YAML syntax error: ")
    assert "flow sequence that starts at line 2, column 8" in problem.message


def test_tab_indentation_is_explained() -> None:
    problem = _only(_error("model:\n\t- ReLU\n"))
    assert (problem.line, problem.col) == (2, 1)
    assert "tab" in problem.message and "spaces" in problem.fix


def test_tabs_inside_values_are_fine() -> None:
    assert _data("a: 'x\ty'\nb: 1\t# comment\n") == {"a": "x\ty", "b": 1}


def test_a_second_document_is_explained() -> None:
    problem = _only(_error("a: 1\n---\nb: 2\n"))
    assert (problem.line, problem.col) == (2, 1) and "second YAML document" in problem.message


def test_control_character_is_located() -> None:
    problem = _only(_error('a: 1\nb: "x\x01y"\n'))
    assert (problem.line, problem.col) == (2, 6)
    assert "U+0001" in problem.message and "\n" not in str(problem)


def test_error_text_is_one_line_with_file_position() -> None:
    for text in ("a: [\n", "a: b: c\n", "- a\nb: 1\n", "a: 'unterminated\n", "\x00"):
        err = _error(text, "spec.yaml")
        for problem in err.problems:
            rendered = str(problem)
            assert rendered.startswith(f"spec.yaml:{problem.line}:{problem.col}: ")
            assert "\n" not in rendered and problem.fix


# --------------------------------------------------------------------------- files


def test_load_file_errors(tmp_path: Path) -> None:
    assert "no such file" in str(_load_error(tmp_path / "missing.yaml"))
    assert "is a directory" in str(_load_error(tmp_path))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: x\ndescription: caf\xe9\n")
    problem = _only(_load_error(latin))
    assert "not UTF-8" in problem.message and problem.line == 2
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" + b"#" * MAX_BYTES)
    assert "larger than 1024 KiB" in str(_load_error(big))


def test_load_file_reads_a_spec(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("name: ok\nmodel: [ReLU]\n", encoding="utf-8")
    data, source = load_file(path)
    assert data == {"name": "ok", "model": ["ReLU"]} and source.filename == str(path)


def _load_error(path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_file(path)
    return info.value
