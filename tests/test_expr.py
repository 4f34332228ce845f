"""`$name` references and safe arithmetic: values, precedence, escapes, bounds -- and never ``eval``."""

from __future__ import annotations

import builtins
import time
from pathlib import Path

import pytest
from conftest import assert_within

import compiler
from compiler.front.expr import MAX_EXPR_CHARS, MAX_INT, MAX_POWER_EXPONENT, Evaluated, ExprError, evaluate, references

VARS = {"a": 3, "b": 2.5, "hidden": 100, "n": 0, "flag": True, "word": "same", "sizes": [1, 2]}


def _value(text: str, variables: dict | None = None):
    result = evaluate(text, VARS if variables is None else variables)
    assert isinstance(result, Evaluated), result
    return result.value


def _error(text: str, variables: dict | None = None) -> ExprError:
    with pytest.raises(ExprError) as info:
        evaluate(text, VARS if variables is None else variables)
    assert info.value.message and info.value.fix
    return info.value


# --------------------------------------------------------------------------- values


def test_reference_times_two() -> None:
    result = evaluate("$a * 2", VARS)
    assert result == Evaluated(6, "a * 2")


def test_symbolic_source_keeps_variable_names() -> None:
    assert evaluate("$hidden * 2 + 1", VARS).source == "hidden * 2 + 1"
    assert evaluate("($hidden + 1) * 2", VARS).source == "(hidden + 1) * 2"
    assert evaluate("14*14*128", {}) == Evaluated(25088, "14 * 14 * 128")


def test_bare_reference_is_any_value() -> None:
    assert evaluate("$sizes", VARS) == Evaluated([1, 2], "sizes")
    assert evaluate("$word", VARS) == Evaluated("same", "word")
    assert evaluate("  $a  ", VARS) == Evaluated(3, "a")


def test_evaluated_variables_can_be_referred_to() -> None:
    assert _value("$c + 1", {"c": Evaluated(6, "a * 2")}) == 7


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("2 ** 3 ** 2", 512),  # right-associative
        ("-2 ** 2", -4),  # ** binds tighter than unary minus
        ("(-2) ** 2", 4),
        ("-(3 * 4)", -12),
        ("10 - 4 - 3", 3),  # left-associative
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("7 / 2", 3.5),
        ("2 * 3 % 4", 2),
        ("$a * $b", 7.5),
        ("$hidden // $a", 33),
        ("28 - 3 + 1", 26),
        ("1e3 * 2", 2000.0),
        ("0x10 + 1", 17),
        ("2 ** -1", 0.5),
    ],
)
def test_arithmetic_and_precedence(text: str, value) -> None:
    got = _value(text)
    assert got == value and type(got) is type(value)


# --------------------------------------------------------------------------- strings stay strings


@pytest.mark.parametrize(
    "text",
    [
        "same",
        "relu",
        "a-b",
        "3x3",
        "2024-01-01",
        "data/MNIST",
        "runs/mnist_cnn",
        "123",
        "-1",
        "+2.5",
        "1e-4",
        "0x10",
        "1,2",
        "[1, 2]",
        "1 < 2",
        "not 1",
        "lambda: 1",
        "1+",
        "cuda:0",
        "",
    ],
)
def test_plain_strings_and_quoted_numbers_stay_strings(text: str) -> None:
    assert evaluate(text, VARS) == text


def test_dollar_escape() -> None:
    assert evaluate("$$a", VARS) == "$a"
    assert evaluate("price: $$5", VARS) == "price: $5"
    assert evaluate("$$", VARS) == "$"
    assert references("$$a $b $$ $c_1") == ["b", "c_1"]


# --------------------------------------------------------------------------- errors


def test_unknown_variable_suggests_the_close_one() -> None:
    err = _error("$hiden * 2")
    assert err.message == "unknown variable $hiden"
    assert "did you mean 'hidden'?" in err.fix and "$$" in err.fix


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1/0", "division by zero"),
        ("$a % 0", "division by zero"),
        ("$a // $n", "division by zero"),
        ("0 ** -1", "0 raised to a negative power"),
        ("2 ** 999", "exponent 999 is too large"),
        (f"2 ** {MAX_POWER_EXPONENT + 1}", "is too large"),
        ("9 ** 9 ** 9 ** 9", "is too large"),
        ("2 ** 53 + 1", f"is larger than {MAX_INT}"),
        ("-(2 ** 53) - 1", f"is larger than {MAX_INT}"),
        ("2 ** 60 * 2 ** 60", "is larger than"),
        ("1.5e308 * 10", "not a finite number"),
        ("0.5 ** -2000", "too large"),
        ("(-8) ** 0.5", "not a real number"),
        ("$flag + 1", "numbers only"),
        ("$word * 2", "numbers only"),
        ("$sizes * 2", "numbers only"),
    ],
)
def test_arithmetic_errors(text: str, message: str) -> None:
    assert message in _error(text).message


@pytest.mark.parametrize(
    "text",
    [
        "$hidden units",
        "$a +",
        "$a$a",
        "$a.real",
        "$a + 1j",
        "$a; 1",
        "$a\n+ 1",
        "f($a)",
        "max($a, key=1)",
        "[$a][0]",
        "lambda: $a",
        "$a in $sizes",
        "print($a)",
        "__import__($a)",
    ],
)
def test_mixed_text_with_variables_is_an_error(text: str) -> None:
    err = _error(text)
    assert text in err.message or repr(text) in err.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$a + 'x'", "numbers only"),
        ("$a + True", "numbers only"),
        ("$a[0]", "cannot index"),
        ("$sizes[2]", "out of range"),
        ("$sizes[$b]", "must be an integer"),
        ("$word < 1", "cannot compare"),
        ("int($a, 2)", "takes 1 arguments"),
        ("make_divisible($a, 0)", "positive integer"),
        ("max($sizes[:0])", "of nothing"),
        ("round($b, 99)", "digits"),
    ],
)
def test_expression_errors(text: str, message: str) -> None:
    assert message in _error(text).message


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$a if $flag else 2", 3),
        ("2 if $n == 0 else 1", 2),
        ("$a == 3 and $b > 2", True),
        ("not $flag or $n", 0),
        ("$sizes[-1] + $sizes[0]", 3),
        ("$sizes[1:]", [2]),
        ("min($a, $b)", 2.5),
        ("max($sizes)", 2),
        ("sum($sizes) + len($sizes)", 5),
        ("int($b)", 2),
        ("round($b)", 2),  # Python's (banker's) rounding, as torchvision's code gets
        ("round(2.567, 2)", 2.57),
        ("floor(-$b)", -3),
        ("ceil($b)", 3),
        ("sum($sizes[:0]) + 1", 1),
        ("$word == 'same'", True),
        ("$t[$a]", "c"),
        ("$t[3] + 1", 3),
        ("1 < $a <= 3", True),
    ],
)
def test_functions_conditions_indexing(text: str, value) -> None:
    variables = {**VARS, "t": {"3": 2, "x": 0} if text.startswith("$t[3]") else {"3": "c"}}
    result = evaluate(text, variables)
    assert isinstance(result, Evaluated) and result.value == value and type(result.value) is type(value)


def test_make_divisible_is_torchvisions() -> None:
    from torchvision.models._utils import _make_divisible

    for value in [3, 7.5, 16 * 0.75, 24 * 1.4, 32 * 0.35, 1280 * 1.3, 96 * 1.1, 320 * 0.5, 0.1]:
        for divisor in (1, 4, 8, 16):
            assert _value(f"make_divisible({value}, {divisor})", {}) == _make_divisible(value, divisor)
        assert _value(f"make_divisible({value}, 8, 16)", {}) == _make_divisible(value, 8, 16)


def test_time_and_size_bounds() -> None:
    start = time.perf_counter()
    for text in ("9 ** 9 ** 9 ** 9", "10 ** 10 ** 10", "$a ** $a ** $a ** $a ** $a", "-" * 150 + "$a"):
        try:
            evaluate(text, VARS)
        except ExprError:
            pass
    assert_within(start, 0.5)
    assert "longer than" in _error("$a" + " + 1" * MAX_EXPR_CHARS).message
    assert evaluate("1" + "+1" * MAX_EXPR_CHARS, {}) == "1" + "+1" * MAX_EXPR_CHARS  # long non-reference text
    assert evaluate("(" * 90 + "$a" + ")" * 90, VARS).value == 3


# --------------------------------------------------------------------------- no eval, no code


def _guarded_import(real):
    def guarded(name, *args, **kwargs):
        if name in ("os", "subprocess", "shutil", "pathlib"):
            raise AssertionError(f"import of {name} during evaluation")
        return real(name, *args, **kwargs)

    return guarded


def test_python_code_is_never_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payloads = [
        "__import__('os')",
        f"__import__('pathlib').Path({str(marker)!r}).touch()",
        "__import__('os').system('echo pwned')",
        "().__class__.__bases__[0].__subclasses__()",
        "[x for x in (1, 2)]",
        "open('/etc/passwd').read()",
        "(lambda: 1)()",
        "1 + (2).__class__",
    ]

    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec was called")

    with monkeypatch.context() as m:
        m.setattr(builtins, "eval", refuse)
        m.setattr(builtins, "exec", refuse)
        m.setattr(builtins, "__import__", _guarded_import(builtins.__import__))
        results = [evaluate(text, VARS) for text in payloads]  # plain strings, never executed
        errors = []
        for text in payloads[:4]:
            try:
                evaluate("$a + " + text, VARS)
            except ExprError as err:
                errors.append(err)
    assert results == payloads
    assert len(errors) == 4
    assert not marker.exists()


def test_placeholder_names_cannot_reach_variables() -> None:
    """The evaluator's internal name for `$a` is not a way around the `$` (it stays text or is refused)."""
    assert evaluate("_specc_var_a + 1", VARS) == "_specc_var_a + 1"
    _error("$a + _specc_var_hidden")


# --------------------------------------------------------------------------- through a spec


def _spec(text: str) -> compiler.Spec:
    return compiler.parse_spec(text, "expr.yaml")


def test_vars_chain_in_order_and_stay_symbolic() -> None:
    spec = _spec("name: v\nvars: {a: 2, b: $a * 3}\ninput: [4]\nmodel:\n  - Linear: {out_features: $b + 1}\n")
    assert spec.vars == {"a": 2, "b": 6}
    assert spec.symbols[("vars", "b")] == "a * 3"
    assert spec.symbols[("model", 0, "Linear", "out_features")] == "b + 1"
    assert spec.model.children[0][1].kwargs["out_features"] == 7


def _problems(text: str) -> list[str]:
    with pytest.raises(compiler.SpecError) as info:
        _spec(text)
    return [str(p) for p in info.value.problems]


def test_a_variable_used_before_it_is_defined() -> None:
    (problem,) = _problems("name: v\nvars: {a: $b, b: 2}\ninput: [4]\nmodel: [ReLU]\n")
    assert problem.startswith("expr.yaml:2:8: ")
    assert "$a uses $b, which is defined after it" in problem and "move `b:` above `a:`" in problem


def test_a_variable_that_refers_to_itself() -> None:
    (problem,) = _problems("name: v\nvars: {a: $a + 1}\ninput: [4]\nmodel: [ReLU]\n")
    assert "variable $a refers to itself" in problem


def test_quoted_numbers_stay_strings_in_a_spec() -> None:
    problems = _problems('name: q\ninput: [4]\nmodel:\n  - Linear: {out_features: "123"}\n')
    assert any("expects int, got string '123'" in p and "without quotes" in p for p in problems)


def test_expression_errors_are_located() -> None:
    problems = _problems("name: e\ninput: [4]\nmodel:\n  - Linear: {out_features: 1/0}\n")
    assert problems == ["expr.yaml:4:14: model.0.Linear.out_features: division by zero Fix: check the divisor"]


def test_a_yaml_float_needs_no_expression() -> None:
    spec = _spec("name: f\nvars: {lr: 1e-4}\ninput: [4]\nmodel: [ReLU]\n")
    assert spec.vars["lr"] == 1e-4 and isinstance(spec.vars["lr"], float)
