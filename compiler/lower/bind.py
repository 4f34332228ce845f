"""Arguments: a spec's call matched to the class's own signature, checked, and given script text.

Every call a spec makes (layer, loss, optimizer, scheduler, transform, dataset, init function)
goes through ``bind``: names, order and count come from torch's signature, types from its
annotations, and an argument that shape inference fills is added here.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from compiler.common.literal import literal
from compiler.common.suggest import did_you_mean
from compiler.facts import torch_facts
from compiler.facts.registry import Entry
from compiler.facts.shapes import format_shape
from compiler.front.load import Path_
from compiler.front.problems import Problems
from compiler.front.spec import Call
from compiler.lower.ir import Arg, CallIR

NOT_ARGS = ("device", "dtype")  # set for the whole model, never per layer in a spec
_INVALID = object()


class Binder:
    def __init__(self, problems: Problems, symbols: dict[Path_, str], unparsed: frozenset[Path_] = frozenset()):
        self.problems = problems
        self.symbols = symbols  # Python text of values that came from `$vars` or arithmetic
        self.unparsed = unparsed  # values the parser refused (reported): invalid here, not reported again

    def bind(self, call: Call, entry: Entry, shape: tuple | None = None) -> CallIR | None:
        """Match ``call``'s arguments to ``entry``'s signature; fill the inferable one from ``shape``.

        With ``shape`` unknown (a problem before this layer), the other arguments are still checked.
        """
        params = parameters(entry)
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        given = self.given(call, entry, params, positional)
        if given is None:
            return None
        inferred = entry.infer if entry.infer and entry.infer not in given else None
        if inferred is not None:
            value = self.inferred_value(call, entry, shape)
            if value is None and shape is not None:
                return None  # reported
            if value is not None:
                given[inferred] = value
        missing = [p.name for p in params if p.default is p.empty and p.name not in given and p.name != inferred]
        if missing:
            s = "s" if len(missing) > 1 else ""
            self.problems.fail(
                where_of(call),
                f"{entry.name} is missing required argument{s} {', '.join(missing)}",
                f"add {', '.join(f'`{m}:`' for m in missing)}",
            )
            return None
        if not self.types_ok(call, entry, given, positional) or (inferred and inferred not in given):
            return None
        args, kwargs = self.arrange(call, given, inferred, positional)
        arguments = {p.name: p.default if p.default is not p.empty else None for p in params} | given
        return CallIR(entry, args, kwargs, call.yaml_path, arguments)

    def given(self, call: Call, entry: Entry, params: tuple, positional: list) -> dict[str, Any] | None:
        """The arguments the spec gives, by name; None when one is extra, unknown or given twice (reported)."""
        where = where_of(call)
        if len(call.args) > len(positional):
            self.problems.fail(
                where,
                f"{entry.name} takes at most {len(positional)} positional arguments "
                f"({', '.join(p.name for p in positional)}), got {len(call.args)}",
                "remove the extra values or name them",
            )
            return None
        given = {param.name: value for param, value in zip(positional, call.args)}
        names = [p.name for p in params]
        ok = True
        for key, value in call.kwargs.items():
            if key in NOT_ARGS:
                self.problems.fail(
                    where + (key,), f"{key!r} cannot be set per layer", "set `train.device` for the whole model"
                )
            elif key not in names:
                fix = did_you_mean(key, names, f"its arguments are: {', '.join(names)}") or ""
                self.problems.fail(where + (key,), f"{entry.name} has no argument {key!r}", fix)
            elif key in given:
                self.problems.fail(where + (key,), f"{key!r} is given twice (by position and by name)", "give it once")
            else:
                given[key] = value
                continue
            ok = False
        return given if ok else None

    def types_ok(self, call: Call, entry: Entry, given: dict[str, Any], positional: list) -> bool:
        """Check each given value against its annotation (in place: lists become tuples where torch takes them)."""
        ok = True
        params = {p.name: p for p in parameters(entry)}
        for name, value in list(given.items()):
            checked = self.check_type(entry, params[name], value, arg_path(call, name, positional))
            if checked is _INVALID:
                ok = False
            given[name] = checked
        return ok

    def arrange(self, call: Call, given: dict, inferred: str | None, positional: list):
        """Keep the user's form: positional stays positional, keywords stay keywords.

        An inferred argument is positional when it comes right after the user's positional
        ones (``BatchNorm2d`` -> ``nn.BatchNorm2d(64)``), else a keyword listed first.
        """
        names = [p.name for p in positional]
        order = names[: len(call.args)]
        keywords = list(call.kwargs)
        if inferred is not None:
            if call.form != "kwargs" and inferred in names and names.index(inferred) == len(order):
                order.append(inferred)
            else:
                keywords.insert(0, inferred)

        def arg(name: str) -> Arg:
            return Arg(given[name], self.source_of(call, name, given[name], positional, inferred))

        return [arg(n) for n in order], {n: arg(n) for n in keywords}

    def source_of(self, call: Call, name: str, value: Any, positional: list, inferred: str | None) -> str:
        if name == inferred:
            return literal(value)
        path = arg_path(call, name, positional)
        if path in self.symbols:
            return self.symbols[path]
        if isinstance(value, tuple) and any(path + (i,) in self.symbols for i in range(len(value))):
            parts = [self.symbols.get(path + (i,), literal(v)) for i, v in enumerate(value)]
            return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
        return literal(value)

    def inferred_value(self, call: Call, entry: Entry, shape: tuple | None) -> Any:
        where = where_of(call)
        if shape is None:
            return None  # the input shape is unknown: reported where it became unknown
        if not shape:  # e.g. after Select on the only axis: one number per sample
            self.problems.fail(
                where,
                f"{entry.name} cannot infer {entry.infer}: its input is one number per sample (shape ())",
                "keep an axis before it (e.g. `keepdim: true` on the reduction), or drop the layer that removed it",
            )
            return None
        if entry.infer_axis == "features":
            if entry.name == "Linear" and len(shape) > 1:
                self.problems.warn(
                    where,
                    f"Linear infers in_features={shape[-1]} from the last axis of a {format_shape(shape)} input; "
                    f"this is legal in torch but usually a forgotten Flatten",
                    f"insert `Flatten` before it if you meant all {math.prod(shape)} features",
                )
            return shape[-1]
        return shape[0]

    def check_type(self, entry: Entry, param: inspect.Parameter, value: Any, path: Path_) -> Any:
        if path in self.unparsed:
            return _INVALID
        value = _to_tuples(value)
        adapter = _adapter(param.annotation)
        if adapter is None:
            return value
        for candidate in (value, _to_lists(value)):
            try:
                adapter.validate_python(candidate)
                return candidate
            except ValidationError:
                continue
            except Exception:  # an annotation pydantic cannot check: let torch judge
                return value
        expected = _annotation_text(param.annotation)
        fix = (
            "write the number without quotes"
            if isinstance(value, str) and _numeric(value)
            else f"give {param.name} a value of type {expected}"
        )
        self.problems.fail(path, f"{entry.name}.{param.name} expects {expected}, got {_value_text(value)}", fix)
        return _INVALID


def where_of(call: Call) -> Path_:
    """Where a call's problems point: at its type name (or the bare name)."""
    return call.yaml_path + ((call.type,) if call.form != "bare" else ())


def arg_path(call: Call, name: str, positional: list) -> Path_:
    if call.form == "kwargs" or name in call.kwargs:
        return call.yaml_path + (call.type, name)
    if call.form == "scalar":
        return call.yaml_path + (call.type,)
    index = next((i for i, p in enumerate(positional) if p.name == name), 0)
    return call.yaml_path + (call.type, index)


_PARAMETERS: dict[Entry, tuple[inspect.Parameter, ...]] = {}
torch_facts.on_mode_change(_PARAMETERS.clear)  # the signatures it was read from changed


def parameters(entry: Entry) -> tuple[inspect.Parameter, ...]:
    """The arguments a spec may give: the signature without device, dtype, *args and **kwargs."""
    if entry not in _PARAMETERS:
        params = entry.signature().parameters.values()
        _PARAMETERS[entry] = tuple(
            p for p in params if p.name not in NOT_ARGS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
    return _PARAMETERS[entry]


_ADAPTERS: dict[Any, TypeAdapter | None] = {}


def _adapter(annotation: Any) -> TypeAdapter | None:
    if annotation is inspect.Parameter.empty or isinstance(annotation, str):
        return None
    key = repr(annotation)
    if key not in _ADAPTERS:
        try:
            _ADAPTERS[key] = TypeAdapter(annotation, config=ConfigDict(strict=True, arbitrary_types_allowed=True))
        except Exception:
            _ADAPTERS[key] = None
    return _ADAPTERS[key]


def _to_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuples(v) for v in value)
    return value


def _to_lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_lists(v) for v in value]
    return value


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _annotation_text(annotation: Any) -> str:
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    for noise in ("typing.", "torch.", "Union", "NoneType"):
        text = text.replace(noise, {"Union": "", "NoneType": "None"}.get(noise, ""))
    return text.replace("[", "", 1).rstrip("]") if text.startswith("[") else text


def _value_text(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", tuple: "list"}.get(type(value), "value")
    return f"{kind} {value!r}" if not isinstance(value, tuple) else f"list {list(value)!r}"
