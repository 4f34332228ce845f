"""`$name` references and safe arithmetic in spec values.

A string that is arithmetic over numbers and `$names` (``+ - * / // % **`` and parentheses)
is evaluated by walking a whitelisted Python AST -- never ``eval`` -- with bounds on
length, exponents and magnitudes. Each evaluated value keeps its Python source text
(``$hidden * 2`` -> ``hidden * 2``) so the generated script can stay symbolic.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
from dataclasses import dataclass
from typing import Any

from compiler.common.literal import literal

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
        tree = _parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        if refs:
            raise ExprError(f"cannot read {text!r} as arithmetic", "use numbers, $names, + - * / // % ** and ( )")
        return unescape(text)
    return _evaluate_tree(text, tree.body, refs, allowed, variables)


def _evaluate_tree(text: str, body: ast.AST, refs: list[str], allowed: set[str], variables: dict) -> Evaluated | str:
    """A parsed string's value: a bare `$name`, arithmetic (kept symbolic), another expression, or the text."""
    if isinstance(body, ast.Name) and body.id in allowed:  # a bare `$name`: any value
        name = body.id[len(_PLACEHOLDER) :]
        value = variables[name]
        return Evaluated(value.value if isinstance(value, Evaluated) else value, name)
    if not _is_arithmetic(body, allowed):
        if _is_expression(body, allowed):  # functions, conditions, indexing: the script gets the value
            value = _Evaluator(variables).value(body)
            return Evaluated(value, literal(value))
        if refs:
            raise ExprError(
                f"{text!r} mixes $variables with text that is not arithmetic nor another expression",
                f"use numbers, $names, + - * / // % **, ( ), comparisons, `a if c else b`, $table[i] and "
                f"{', '.join(FUNCTIONS)}; write $$ for a literal $",
            )
        return unescape(text)
    if not refs and _is_number(body):  # "123" or "-1" quoted in YAML stays a string
        return unescape(text)
    value = _eval(body, variables)
    return Evaluated(value, _python_source(body))


@functools.lru_cache(maxsize=4096)
def _parse(code: str) -> ast.Expression:
    """Parsed once per text: a block's body is instantiated once per use, with the same expressions."""
    return ast.parse(code, mode="eval")


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
    return _arithmetic(node.op, left, right)


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


# --------------------------------------------------------------------------- functions, conditions, indexing
# Beyond arithmetic: a closed set of calls, comparisons, `a if c else b`, `and`/`or`/`not`, and indexing a
# table (list) or mapping by a value. No attribute access, no other names, no call outside FUNCTIONS; every
# number is bounded as in arithmetic, and nothing builds a value larger than one the spec already holds.


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: round to the nearest multiple of ``divisor``, never below 90%."""
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _numbers(args: tuple, empty: bool = False) -> list:
    items = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
    if not items and not empty:
        raise ExprError("min/max of nothing", "give at least one number")
    return [_check_number(v) for v in items]


def _round(value: Any, digits: Any = None) -> Any:
    if digits is None:
        return round(_check_number(value))
    if not isinstance(digits, int) or isinstance(digits, bool) or not -20 <= digits <= 20:
        raise ExprError("round's digits must be an integer from -20 to 20", "e.g. round($x, 2)")
    return round(_check_number(value), digits)


def _length(value: Any) -> int:
    if not isinstance(value, (list, tuple, dict, str)):
        raise ExprError("len() takes a list, a mapping or a string", "e.g. len($table)")
    return len(value)


def _divisible(value: Any, divisor: Any, min_value: Any = None) -> int:
    value, divisor = _check_number(value), _check_number(divisor)
    if not isinstance(divisor, int) or divisor < 1:
        raise ExprError("make_divisible's divisor must be a positive integer", "e.g. make_divisible($c, 8)")
    return make_divisible(value, divisor, None if min_value is None else _check_number(min_value))


FUNCTIONS: dict[str, Any] = {
    "min": lambda *a: min(_numbers(a)),
    "max": lambda *a: max(_numbers(a)),
    "sum": lambda *a: sum(_numbers(a, empty=True)),
    "len": _length,
    "int": lambda x: int(_check_number(x)),
    "round": _round,
    "floor": lambda x: math.floor(_check_number(x)),
    "ceil": lambda x: math.ceil(_check_number(x)),
    "make_divisible": _divisible,
}
_ARITY = {"int": (1, 1), "floor": (1, 1), "ceil": (1, 1), "len": (1, 1), "round": (1, 2), "make_divisible": (2, 3)}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _is_expression(node: ast.AST, allowed: set[str]) -> bool:
    """The closed expression language: arithmetic plus FUNCTIONS, comparisons, conditions and indexing."""
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float, bool, str)
    if isinstance(node, ast.Name):
        return node.id in allowed
    if isinstance(node, ast.Call):
        simple = isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords
        return simple and all(_is_expression(a, allowed) for a in node.args)
    if isinstance(node, ast.Slice):
        return all(_is_expression(p, allowed) for p in (node.lower, node.upper) if p is not None) and node.step is None
    children = _CHILDREN.get(type(node))
    if children is None:
        return False
    if isinstance(node, ast.BinOp) and type(node.op) not in _BINOPS:
        return False
    if isinstance(node, ast.UnaryOp) and not isinstance(node.op, (ast.Not, *_UNARY)):  # `~` is no operator here
        return False
    if isinstance(node, ast.Compare) and not all(type(op) in _COMPARE for op in node.ops):
        return False
    return all(_is_expression(child, allowed) for child in children(node))


_CHILDREN: dict[type, Any] = {
    ast.BinOp: lambda n: (n.left, n.right),
    ast.UnaryOp: lambda n: (n.operand,),
    ast.BoolOp: lambda n: n.values,
    ast.Compare: lambda n: (n.left, *n.comparators),
    ast.IfExp: lambda n: (n.test, n.body, n.orelse),
    ast.Subscript: lambda n: (n.value, n.slice),
}


class _Evaluator:
    """Evaluates a tree ``_is_expression`` accepted."""

    def __init__(self, variables: dict[str, Any]):
        self.variables = variables

    def value(self, node: ast.AST) -> Any:
        method = getattr(self, "_" + type(node).__name__.lower())
        return method(node)

    def _constant(self, node: ast.Constant) -> Any:
        return node.value if isinstance(node.value, (str, bool)) else _check_number(node.value)

    def _name(self, node: ast.Name) -> Any:
        value = self.variables[node.id[len(_PLACEHOLDER) :]]
        return value.value if isinstance(value, Evaluated) else value

    def _unaryop(self, node: ast.UnaryOp) -> Any:
        operand = self.value(node.operand)
        if isinstance(node.op, ast.Not):
            return not operand
        return _check_number(_UNARY[type(node.op)](_check_number(operand)))

    def _binop(self, node: ast.BinOp) -> Any:
        return _arithmetic(node.op, _check_number(self.value(node.left)), _check_number(self.value(node.right)))

    def _boolop(self, node: ast.BoolOp) -> Any:
        result: Any = None
        for child in node.values:
            result = self.value(child)
            if bool(result) != isinstance(node.op, ast.And):  # `or` stops at a true value, `and` at a false one
                return result
        return result

    def _compare(self, node: ast.Compare) -> bool:
        left = self.value(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.value(right_node)
            try:
                if not _COMPARE[type(op)](left, right):
                    return False
            except TypeError:
                raise ExprError(
                    f"cannot compare {type(left).__name__} with {type(right).__name__}", "compare like with like"
                ) from None
            left = right
        return True

    def _ifexp(self, node: ast.IfExp) -> Any:
        return self.value(node.body) if self.value(node.test) else self.value(node.orelse)

    def _subscript(self, node: ast.Subscript) -> Any:
        table = self.value(node.value)
        if isinstance(node.slice, ast.Slice):
            return self._slice(table, node.slice)
        return _index(table, self.value(node.slice))

    def _slice(self, table: Any, part: ast.Slice) -> Any:
        if not isinstance(table, (list, tuple)):
            raise ExprError(f"only a list can be sliced, not {type(table).__name__}", "slice a table")
        bounds = [None if p is None else self.value(p) for p in (part.lower, part.upper)]
        if any(b is not None and (not isinstance(b, int) or isinstance(b, bool)) for b in bounds):
            raise ExprError("slice bounds must be integers", "e.g. $table[:$i]")
        return list(table[bounds[0] : bounds[1]])

    def _call(self, node: ast.Call) -> Any:
        name = node.func.id  # type: ignore[attr-defined]
        low, high = _ARITY.get(name, (1, 64))
        if not low <= len(node.args) <= high:
            count = str(low) if low == high else f"{low} to {high}"
            raise ExprError(f"{name}() takes {count} arguments, got {len(node.args)}", f"see {name} in the docs")
        args = [self.value(a) for a in node.args]
        try:
            return FUNCTIONS[name](*args)
        except ExprError:
            raise
        except (OverflowError, ValueError):
            raise ExprError(f"{name}() got a value it cannot take", "use finite numbers") from None


def _index(table: Any, key: Any) -> Any:
    """``table[key]``: a list by an integer (negative from the end), a mapping by its key (or the key as text)."""
    if isinstance(table, dict):
        if key in table and not isinstance(key, bool):
            return table[key]
        if str(key) in table and not isinstance(key, bool):  # YAML keys are strings: `{18: ...}[$depth]`
            return table[str(key)]
        from compiler.common.suggest import did_you_mean

        raise ExprError(f"no key {key!r} in the mapping", did_you_mean(str(key), [str(k) for k in table], ""))
    if isinstance(table, (list, tuple, str)):
        if not isinstance(key, int) or isinstance(key, bool):
            raise ExprError(f"a list index must be an integer, got {key!r}", "index with a whole number")
        if not -len(table) <= key < len(table):
            raise ExprError(f"index {key} is out of range for a list of {len(table)}", f"use 0 to {len(table) - 1}")
        return table[key]
    raise ExprError(f"cannot index a {type(table).__name__}", "index a list or a mapping")


def _arithmetic(op: ast.operator, left: Any, right: Any) -> Any:
    """One bounded binary operation on two checked numbers (shared by both evaluators)."""
    if isinstance(op, ast.Pow):
        if abs(right) > MAX_POWER_EXPONENT and abs(left) > 1:
            raise ExprError(f"exponent {right} is too large (at most {MAX_POWER_EXPONENT})", "use a smaller power")
        if left == 0 and right < 0:
            raise ExprError("0 raised to a negative power", "check the expression")
    try:
        result = _BINOPS[type(op)](left, right)
    except ZeroDivisionError:
        raise ExprError("division by zero", "check the divisor") from None
    except OverflowError:
        raise ExprError("the result is too large", "use smaller values") from None
    if isinstance(result, complex):
        raise ExprError("the result is not a real number", "check the expression")
    return _check_number(result)
