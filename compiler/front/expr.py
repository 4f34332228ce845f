"""`$name` references and safe arithmetic in spec values.

A string that is arithmetic over numbers and `$names` (``+ - * / // % **`` and parentheses)
is evaluated by walking a whitelisted Python AST -- never ``eval`` -- with bounds on
length, exponents and magnitudes. Each evaluated value keeps its Python source text
(``$hidden * 2`` -> ``hidden * 2``) so the generated script can stay symbolic.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass
from typing import Any

MAX_EXPR_CHARS = 200
MAX_INT = 2**53  # beyond any real size, still exact in a float
MAX_POWER_EXPONENT = 64

_REF = re.compile(r"\$(\$|[A-Za-z_][A-Za-z0-9_]*)")
_PLACEHOLDER = "_specc_var_"
_OPERATOR = re.compile(r"[-+*/%()]")


class ExprError(ValueError):
    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message, self.fix = message, fix


@dataclass(frozen=True)
class Evaluated:
    """A value computed from an expression, with the Python text that computes it."""

    value: Any
    source: str  # Python expression over the spec's variable names


_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def references(text: str) -> list[str]:
    """The `$names` a string refers to (`$$` is an escaped dollar, not a reference)."""
    return [m.group(1) for m in _REF.finditer(text) if m.group(1) != "$"]


def needs_evaluation(text: str) -> bool:
    """Whether ``evaluate`` parses ``text`` (a `$reference` or arithmetic) instead of returning it as it is."""
    if "$" in text and references(text):
        return True
    return _OPERATOR.search(text) is not None and any(c.isdigit() for c in text)


def unescape(text: str) -> str:
    return text.replace("$$", "$")


def evaluate(text: str, variables: dict[str, Any]) -> Evaluated | str:
    """Evaluate `text` if it is a reference or arithmetic; otherwise return the plain string.

    Raises ExprError for a string that refers to variables but cannot be evaluated.
    """
    if not needs_evaluation(text):
        return unescape(text)
    refs = references(text)
    if len(text) > MAX_EXPR_CHARS:
        if refs:
            raise ExprError(f"expression longer than {MAX_EXPR_CHARS} characters", "use a shorter expression")
        return unescape(text)
    for name in refs:
        if name not in variables:
            from compiler.common.suggest import did_you_mean

            raise ExprError(
                f"unknown variable ${name}",
                did_you_mean(name, variables, "define it under `vars:`") + " (write $$ for a literal $)",
            )
    if _PLACEHOLDER in text:  # the text itself spells an internal name: it is not arithmetic over $names
        if refs:
            raise ExprError(f"cannot read {text!r} as arithmetic", "use numbers, $names, + - * / // % ** and ( )")
        return unescape(text)
    # a space after each placeholder keeps `$a$b` two names (a syntax error), not one unknown name
    code = _REF.sub(lambda m: "$" if m.group(1) == "$" else _PLACEHOLDER + m.group(1) + " ", text.strip())
    allowed = {_PLACEHOLDER + name for name in refs}
    try:
        tree = ast.parse(code, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        if refs:
            raise ExprError(f"cannot read {text!r} as arithmetic", "use numbers, $names, + - * / // % ** and ( )")
        return unescape(text)
    body = tree.body
    if isinstance(body, ast.Name) and body.id in allowed:  # a bare `$name`: any value
        name = body.id[len(_PLACEHOLDER) :]
        value = variables[name]
        return Evaluated(value.value if isinstance(value, Evaluated) else value, name)
    if not _is_arithmetic(body, allowed):
        if refs:
            raise ExprError(
                f"{text!r} mixes $variables with text that is not arithmetic",
                "use only numbers, $names, + - * / // % ** and ( ); write $$ for a literal $",
            )
        return unescape(text)
    if not refs and _is_number(body):  # "123" or "-1" quoted in YAML stays a string
        return unescape(text)
    value = _eval(tree.body, variables)
    return Evaluated(value, _python_source(tree.body))


def _is_arithmetic(node: ast.AST, allowed: set[str]) -> bool:
    """Numbers, the spec's `$names` (as placeholders in ``allowed``) and the whitelisted operators only."""
    if isinstance(node, ast.BinOp):
        return type(node.op) in _BINOPS and _is_arithmetic(node.left, allowed) and _is_arithmetic(node.right, allowed)
    if isinstance(node, ast.UnaryOp):
        return type(node.op) in _UNARY and _is_arithmetic(node.operand, allowed)
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float)
    if isinstance(node, ast.Name):
        return node.id in allowed
    return False


def _is_number(node: ast.AST) -> bool:
    """A bare (signed) number: `123`, `-1`, `+2.5` -- no operator between numbers."""
    if isinstance(node, ast.UnaryOp):
        return _is_number(node.operand)
    return isinstance(node, ast.Constant)


def _check_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExprError("arithmetic works on numbers only", "refer to numeric variables")
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise ExprError(f"the result {_short(value)} is larger than {MAX_INT}", "use smaller values")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError("the result is not a finite number", "check the expression")
    return value


def _short(value: int) -> str:
    text = str(value) if value.bit_length() < 200 else f"about 2**{value.bit_length()}"
    return text if len(text) < 40 else text[:20] + "..."


def _eval(node: ast.AST, variables: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return _check_number(node.value)
    if isinstance(node, ast.Name):
        name = node.id[len(_PLACEHOLDER) :]
        value = variables[name]
        return _check_number(value.value if isinstance(value, Evaluated) else value)
    if isinstance(node, ast.UnaryOp):
        return _check_number(_UNARY[type(node.op)](_check_number(_eval(node.operand, variables))))
    assert isinstance(node, ast.BinOp)
    left = _check_number(_eval(node.left, variables))
    right = _check_number(_eval(node.right, variables))
    if isinstance(node.op, ast.Pow):
        if abs(right) > MAX_POWER_EXPONENT and abs(left) > 1:
            raise ExprError(f"exponent {right} is too large (at most {MAX_POWER_EXPONENT})", "use a smaller power")
        if left == 0 and right < 0:
            raise ExprError("0 raised to a negative power", "check the expression")
    try:
        result = _BINOPS[type(node.op)](left, right)
    except ZeroDivisionError:
        raise ExprError("division by zero", "check the divisor") from None
    except OverflowError:
        raise ExprError("the result is too large", "use smaller values") from None
    if isinstance(result, complex):
        raise ExprError("the result is not a real number", "check the expression")
    return _check_number(result)


def _python_source(node: ast.AST) -> str:
    """The expression as Python text, spaced as ``ruff format`` spaces it (``n**0.5``, ``a * b``)."""
    return _text(node, 0)


_PRECEDENCE = {ast.Add: 11, ast.Sub: 11, ast.Mult: 12, ast.Div: 12, ast.FloorDiv: 12, ast.Mod: 12, ast.Pow: 14}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}


def _text(node: ast.AST, outer: int) -> str:
    """Python source of an arithmetic node, parenthesised only where ``outer`` precedence needs it."""
    if isinstance(node, ast.Expression):
        return _text(node.body, outer)
    if isinstance(node, ast.Name):
        return node.id.removeprefix(_PLACEHOLDER)
    if isinstance(node, ast.Constant):
        return repr(node.value)
    if isinstance(node, ast.UnaryOp):
        text = ("-" if isinstance(node.op, ast.USub) else "+") + _text(node.operand, 13)
        return f"({text})" if outer > 13 else text
    assert isinstance(node, ast.BinOp)
    op = type(node.op)
    prec = _PRECEDENCE[op]
    power = op is ast.Pow  # right-associative: its left operand binds tighter
    left = _text(node.left, prec + 1 if power else prec)
    right = _text(node.right, 13 if power else prec + 1)  # `2**-1` needs no parentheses
    # a negated left operand is parenthesised, and ruff spaces `**` around anything in parentheses
    simple = power and isinstance(node.left, (ast.Name, ast.Constant)) and _simple_operand(node.right)
    text = f"{left}**{right}" if simple else f"{left} {_SYMBOLS[op]} {right}"
    return f"({text})" if prec < outer else text


def _simple_operand(node: ast.AST) -> bool:
    """What ``ruff format`` writes without spaces around ``**``: names, numbers, and their negations."""
    if isinstance(node, ast.UnaryOp):
        return _simple_operand(node.operand)
    return isinstance(node, (ast.Name, ast.Constant))
