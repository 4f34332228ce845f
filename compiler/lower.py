"""Stage 3: Spec -> ModelIR. Resolves every argument and infers every shape.

Arguments are checked against the torch class's own signature (names, order, count, types).
Shapes come from torch itself: each layer is constructed on the ``meta`` device and run on
an empty meta tensor, so inference is exactly torch's, allocates no weights, and draws no
random numbers (``build_model`` after ``manual_seed`` stays bitwise-equal to hand-written code).
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from functools import lru_cache
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from ._literal import literal
from ._suggest import did_you_mean
from .errors import MAX_PROBLEMS, Problem, SpecError
from .ir import Arg, BlockIR, LayerIR, ModelIR
from .load import Path_
from .registry import REGISTRY, Entry
from .shapes import ShapeError, output_shape
from .spec import MAX_MODULES, Block, Layer, Repeat, Spec

_META_BATCH = 2  # BatchNorm refuses a batch of one in training; 2 keeps every layer happy
_NOT_ARGS = ("device", "dtype")  # set for the whole model, never per layer in a spec


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def memory_budget() -> int:
    """Bytes a model's parameters and buffers may take (``SPECC_MAX_MODEL_BYTES`` overrides)."""
    value = os.environ.get("SPECC_MAX_MODEL_BYTES")
    if value:
        try:
            return int(float(value))
        except ValueError:
            pass
    return physical_memory()


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def lower_model(spec: Spec, max_bytes: int | None = None) -> ModelIR:
    """Lower ``spec.model``; raise SpecError naming every problem found."""
    lowerer = _Lowerer(spec)
    shape = spec.input
    first = _first_entry(spec.model)
    dtype = "int64" if first is not None and first.takes_indices else "float32"
    root = BlockIR("", "", spec.model.named, yaml_path=("model",), in_shape=shape)
    lowerer.fill_block(root, spec.model, shape, dtype)
    model = ModelIR(root, spec.input, dtype)
    budget = memory_budget() if max_bytes is None else max_bytes
    if not lowerer.problems and model.nbytes > budget:
        lowerer.fail(
            ("model",),
            f"the model's parameters and buffers need {format_bytes(model.nbytes)} "
            f"({model.params:,} parameters), more than the {format_bytes(budget)} allowed",
            "make the layers smaller, or raise the limit (--max-memory, or SPECC_MAX_MODEL_BYTES)",
        )
    spec._warnings.extend(lowerer.warnings)
    if lowerer.problems:
        raise SpecError(lowerer.problems, spec.source.text)
    return model


def _first_entry(block: Block) -> Entry | None:
    """The registry entry of the model's first layer (it decides the input's dtype)."""
    for _, child in block.children:
        if isinstance(child, Layer):
            return REGISTRY.get("layer", child.type)
        found = _first_entry(child.body if isinstance(child, Repeat) else child)
        if found:
            return found
    return None


class _Lowerer:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.source = spec.source
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.count = 0
        self.tuple_from: LayerIR | None = None  # a layer whose tuple output a next layer would get

    def fail(self, path: Path_, message: str, fix: str = "") -> None:
        self.problems.append(self.source.problem(path, message, fix))
        if len(self.problems) >= MAX_PROBLEMS:  # a broken or hostile spec: report the first ones, fast
            stop = self.source.problem(path, f"stopping after {MAX_PROBLEMS} problems", "fix these first")
            raise SpecError([*self.problems, stop], self.source.text)

    def warn(self, path: Path_, message: str, fix: str = "") -> None:
        self.warnings.append(self.source.problem(path, message, fix, severity="warning"))

    # tree ---------------------------------------------------------------------------

    def fill_block(self, ir: BlockIR, block: Block, shape: tuple | None, dtype: str) -> tuple | None:
        """Lower ``block``'s children into ``ir``; return the output shape (None once unknown)."""
        for name, child in block.children:
            if isinstance(child, Repeat):
                if ir.named:  # a named repeat is its own Sequential of the copies
                    sub = BlockIR(name, _join(ir.path, name), False, yaml_path=child.yaml_path, in_shape=shape)
                    ir.children.append(sub)
                    shape = self.splice(sub, child, shape, dtype)
                    sub.out_shape = shape
                else:
                    shape = self.splice(ir, child, shape, dtype)
            else:
                shape = self.add(ir, name or str(len(ir.children)), child, shape, dtype)
            dtype = "float32"
        ir.out_shape = shape
        return shape

    def splice(self, ir: BlockIR, repeat: Repeat, shape: tuple | None, dtype: str) -> tuple | None:
        for _ in range(repeat.count):
            if repeat.body.named:
                shape = self.add(ir, str(len(ir.children)), repeat.body, shape, dtype)
            else:
                shape = self.fill_block_into(ir, repeat.body, shape, dtype)
            if self.count > MAX_MODULES:
                break
        return shape

    def fill_block_into(self, ir: BlockIR, block: Block, shape: tuple | None, dtype: str) -> tuple | None:
        for name, child in block.children:
            if isinstance(child, Repeat):
                shape = self.splice(ir, child, shape, dtype)
            else:
                shape = self.add(ir, str(len(ir.children)), child, shape, dtype)
            dtype = "float32"
        return shape

    def add(self, parent: BlockIR, name: str, node: Layer | Block, shape: tuple | None, dtype: str) -> tuple | None:
        path = _join(parent.path, name)
        self.count += 1
        if self.count == MAX_MODULES + 1:
            self.fail(node.yaml_path, f"the model has more than {MAX_MODULES} modules", "use fewer repeats")
        if self.count > MAX_MODULES:
            return None
        if isinstance(node, Block):
            sub = BlockIR(name, path, node.named, yaml_path=node.yaml_path, in_shape=shape)
            parent.children.append(sub)
            return self.fill_block(sub, node, shape, dtype)
        layer = self.layer(node, name, path, shape, dtype)
        if layer is None:
            return None
        parent.children.append(layer)
        return layer.out_shape

    # one layer -------------------------------------------------------------------------

    def layer(self, node: Layer, name: str, path: str, shape: tuple | None, dtype: str) -> LayerIR | None:
        entry = REGISTRY.get("layer", node.type)
        assert entry is not None  # the parser only accepts registered names
        if self.tuple_from is not None:
            prev = self.tuple_from
            self.fail(
                node.yaml_path,
                f"{prev.type} at {prev.path!r} returns a tuple (output, state); nn.Sequential would pass "
                f"the whole tuple to this {entry.name}",
                f"make {prev.type} the last layer, or write the model in Python and register it",
            )
            self.tuple_from = None
            return None
        bound = self.bind(node, entry, shape)
        if bound is None:
            return None
        args, kwargs, inferred = bound
        ir = LayerIR(name, path, entry, args, kwargs, shape, None, inferred=inferred, yaml_path=node.yaml_path)
        self.infer_shape(ir, dtype)
        if ir.out_shape is not None and entry.returns_tuple:
            self.tuple_from = ir
        return ir

    def bind(self, node: Layer, entry: Entry, shape: tuple | None):
        """Match the spec's arguments to the class signature; fill the inferable one."""
        where = node.yaml_path + ((node.type,) if node.form != "bare" else ())
        params = _parameters(entry)
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params]
        ok = True
        if len(node.args) > len(positional):
            self.fail(
                where,
                f"{entry.name} takes at most {len(positional)} positional arguments "
                f"({', '.join(p.name for p in positional)}), got {len(node.args)}",
                "remove the extra values or name them",
            )
            return None
        given: dict[str, Any] = {}
        for param, value in zip(positional, node.args):
            given[param.name] = value
        for key, value in node.kwargs.items():
            if key in _NOT_ARGS:
                self.fail(where + (key,), f"{key!r} cannot be set per layer", "set `train.device` for the whole model")
                ok = False
            elif key not in names:
                self.fail(
                    where + (key,),
                    f"{entry.name} has no argument {key!r}",
                    did_you_mean(key, names, f"its arguments are: {', '.join(names)}") or "",
                )
                ok = False
            elif key in given:
                self.fail(where + (key,), f"{key!r} is given twice (by position and by name)", "give it once")
                ok = False
            else:
                given[key] = value
        if not ok:
            return None
        inferred = None
        if entry.infer and entry.infer not in given:
            value = self.inferred_value(node, entry, shape)
            if value is None:
                return None
            given[entry.infer] = value
            inferred = entry.infer
        missing = [p.name for p in params if p.default is p.empty and p.name not in given and p.kind != p.VAR_KEYWORD]
        if missing:
            self.fail(
                where,
                f"{entry.name} is missing required argument{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                f"add {', '.join(f'`{m}:`' for m in missing)}",
            )
            return None
        for pname, value in list(given.items()):
            param = next(p for p in params if p.name == pname)
            checked = self.check_type(entry, param, value, _arg_path(node, pname, positional))
            if checked is _INVALID:
                ok = False
            else:
                given[pname] = checked
        if not ok:
            return None
        return self.arrange(node, entry, given, inferred, positional)

    def arrange(self, node: Layer, entry: Entry, given: dict, inferred: str | None, positional: list):
        """Keep the user's form: positional stays positional, keywords stay keywords.

        An inferred argument is positional when it comes right after the user's positional
        ones (``BatchNorm2d`` -> ``nn.BatchNorm2d(64)``), else a keyword listed first.
        """
        names = [p.name for p in positional]
        order = names[: len(node.args)]
        keywords = list(node.kwargs)
        if inferred is not None:
            if node.form != "kwargs" and inferred in names and names.index(inferred) == len(order):
                order.append(inferred)
            else:
                keywords.insert(0, inferred)
        args = [Arg(given[n], self.source_of(node, n, given[n], positional, inferred)) for n in order]
        kwargs = {n: Arg(given[n], self.source_of(node, n, given[n], positional, inferred)) for n in keywords}
        return args, kwargs, inferred

    def source_of(self, node: Layer, pname: str, value: Any, positional: list, inferred: str | None) -> str:
        if pname == inferred:
            return _literal(value)
        path = _arg_path(node, pname, positional)
        symbols = self.spec.symbols
        if path in symbols:
            return symbols[path]
        if isinstance(value, tuple) and any(path + (i,) in symbols for i in range(len(value))):
            parts = [symbols.get(path + (i,), _literal(v)) for i, v in enumerate(value)]
            return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
        return _literal(value)

    def inferred_value(self, node: Layer, entry: Entry, shape: tuple | None) -> Any:
        where = node.yaml_path + ((node.type,) if node.form != "bare" else ())
        if shape is None:
            if self.spec.input is None:
                self.fail(where, f"cannot infer {entry.name}.{entry.infer}: the spec has no `input:` shape",
                          f"add `input: [...]` (one sample's shape) or give `{entry.infer}:`")
            return None
        if entry.infer_axis == "features":
            if entry.name == "Linear" and len(shape) > 1:
                self.warn(
                    where,
                    f"Linear infers in_features={shape[-1]} from the last axis of a {_shape(shape)} input; "
                    f"this is legal in torch but usually a forgotten Flatten",
                    f"insert `Flatten` before it if you meant all {math.prod(shape)} features",
                )
            return shape[-1]
        return shape[0]

    def check_type(self, entry: Entry, param: inspect.Parameter, value: Any, path: Path_) -> Any:
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
        self.fail(path, f"{entry.name}.{param.name} expects {expected}, got {_value_text(value)}",
                  "write the number without quotes" if isinstance(value, str) and _numeric(value) else
                  f"give {param.name} a value of type {expected}")
        return _INVALID

    # shapes --------------------------------------------------------------------------

    def infer_shape(self, ir: LayerIR, dtype: str) -> None:
        import torch

        where = ir.yaml_path + ((ir.type,) if ir.args or ir.kwargs else ())
        cls = ir.entry.resolve()
        args = [a.value for a in ir.args]
        kwargs = {k: a.value for k, a in ir.kwargs.items()}
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = cls(*args, **kwargs)
        except Exception as err:  # torch's own argument checks
            self.fail(where, f"{ir.type}{_call_text(ir)} is refused by torch: {_first_line(err)}",
                      "check the arguments against the torch documentation")
            return
        ir.params = sum(p.numel() for p in module.parameters() if p.requires_grad)
        ir.nbytes = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
        if ir.in_shape is None:
            return
        try:
            out_shape = output_shape(ir.type, _full_arguments(ir), ir.in_shape)
        except ShapeError as err:
            self.fail(where, err.message, err.fix)
            return
        if out_shape is not None:
            ir.out_shape = tuple(out_shape)
            return
        # no arithmetic rule (a layer registered from Python): run it on the meta device
        x = torch.empty((_META_BATCH, *ir.in_shape), device="meta",
                        dtype=torch.long if dtype == "int64" else torch.float32)
        try:
            module.eval()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = module(x)
        except Exception as err:
            self.fail(where, f"{ir.type} cannot take an input of shape {_shape(ir.in_shape)}: {_first_line(err)} "
                      f"(torch's shapes include a batch dimension of {_META_BATCH})",
                      "check the layers before it, or the `input:` shape")
            return
        if isinstance(out, tuple):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.dim() < 1:
            self.fail(where, f"{ir.type} does not return a batch of tensors", "use a different layer")
            return
        ir.out_shape = tuple(out.shape[1:])


_INVALID = object()


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _arg_path(node: Layer, pname: str, positional: list) -> Path_:
    if node.form == "kwargs" or pname in node.kwargs:
        return node.yaml_path + (node.type, pname)
    index = next((i for i, p in enumerate(positional) if p.name == pname), 0)
    if node.form == "scalar":
        return node.yaml_path + (node.type,)
    return node.yaml_path + (node.type, index)


@lru_cache(maxsize=None)
def _parameters(entry: Entry) -> tuple[inspect.Parameter, ...]:
    """The arguments a spec may give: the signature without device, dtype, *args and **kwargs."""
    params = entry.signature().parameters.values()
    return tuple(p for p in params if p.name not in _NOT_ARGS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


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


def _literal(value: Any) -> str:
    return literal(value)


def _shape(shape: tuple | None) -> str:
    if shape is None:
        return "(?)"
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _call_text(ir: LayerIR) -> str:
    parts = [a.source for a in ir.args] + [f"{k}={a.source}" for k, a in ir.kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def _full_arguments(ir: LayerIR) -> dict[str, Any]:
    """Every constructor argument by name, defaults filled in (what the shape rules read)."""
    params = _parameters(ir.entry)
    values = {p.name: p.default for p in params}
    values.update({p.name: a.value for p, a in zip(params, ir.args)})
    values.update({k: a.value for k, a in ir.kwargs.items()})
    return values
