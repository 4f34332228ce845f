"""A JSON Schema for spec files (``specc schema``), generated from the registry and the pydantic models.

Editors that speak JSON Schema (yaml-language-server: VS Code's YAML extension, Neovim, Helix) use it
to complete layer names and their keyword arguments and to flag structural mistakes as you type. It
is a first line, not the validator: ``specc validate`` remains the authority (shapes, ranges, data).
Every value a spec may write as a ``$var`` or as arithmetic also accepts such a string.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from compiler.facts.registry import REGISTRY

SCHEMA_ID = "https://specc.dev/specc.schema.json"
# $var, arithmetic, or a call of an expression function (docs/spec-language.md §14)
_EXPRESSION = {
    "type": "string",
    "pattern": r"\$|^[\s0-9eE.+\-*/%()]+$|\b(min|max|sum|len|int|round|floor|ceil|make_divisible)\(",
}
_VAR = {"type": "string", "pattern": r"^\$[A-Za-z_][A-Za-z0-9_]*$"}
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _json_type(annotation: Any, depth: int = 0) -> dict:
    """The JSON schema of a Python annotation, as far as it says (``{}`` where it does not)."""
    if depth > 4 or annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    if annotation is type(None) or annotation is None:
        return {"type": "null"}
    if annotation is bool:
        return {"anyOf": [{"type": "boolean"}, _VAR]}
    if annotation is int:
        return {"anyOf": [{"type": "integer"}, _EXPRESSION]}
    if annotation is float:
        return {"anyOf": [{"type": "number"}, _EXPRESSION]}
    if annotation is str:
        return {"type": "string"}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        parts = [_json_type(a, depth + 1) for a in args]
        if any(p == {} for p in parts):
            return {}
        return {"anyOf": parts}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (tuple, list) or annotation in (tuple, list):
        items = [_json_type(a, depth + 1) for a in args if a is not Ellipsis]
        schema: dict = {"type": "array"}
        if items and all(i == items[0] for i in items):
            schema["items"] = items[0]
        return {"anyOf": [schema, _VAR]}
    return {}


def _param_schema(param: inspect.Parameter, hints: dict) -> dict:
    annotation = hints.get(param.name, param.annotation)
    schema = _json_type(annotation)
    if schema == {} and param.default not in (inspect.Parameter.empty, None):
        schema = _json_type(type(param.default))
    if schema and param.default is None:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _hints(entry: Any) -> dict:
    if entry.params is not None:
        return {}
    try:
        cls = entry.resolve()
        return typing.get_type_hints(cls.__init__ if isinstance(cls, type) else cls)
    except Exception:
        return {}


def _call(entry: Any) -> dict:
    """``{Name: {kw: ...} | [args] | scalar}`` for one entry."""
    try:
        sig = entry.signature()
    except Exception:
        return {
            "type": "object",
            "required": [entry.name],
            "additionalProperties": False,
            "properties": {entry.name: {}},
        }
    hints = _hints(entry)
    params = [
        p
        for p in sig.parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in ("device", "dtype")
    ]
    variadic = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values())
    properties = {p.name: _param_schema(p, hints) for p in params}
    value = _arguments(properties, variadic)
    schema = {
        "type": "object",
        "required": [entry.name],
        "additionalProperties": False,
        "properties": {entry.name: value},
    }
    doc = (inspect.getdoc(entry.cls_object) if entry.cls_object is not None else None) or ""
    if doc:
        schema["description"] = doc.splitlines()[0]
    return schema


def _arguments(properties: dict, variadic: bool) -> dict:
    """A call's value: keyword arguments, a list of positional ones, or one scalar."""
    if not properties and not variadic:
        return {"anyOf": [{"type": "object", "maxProperties": 0}, {"type": "array", "maxItems": 0}]}
    kwargs: dict = {"type": "object", "properties": properties}
    if not variadic:
        kwargs["additionalProperties"] = False
    return {
        "anyOf": [
            kwargs,
            {"type": "array", **({} if variadic else {"maxItems": len(properties)})},
            {"type": ["string", "number", "boolean"]},
        ]
    }


def _calls(kind: str) -> dict:
    """Any call of one kind: a bare name (enum) or a one-key mapping per entry."""
    options, bare = [], []
    for entry in REGISTRY.entries(kind):
        options.append(_call(entry))
        bare.append(entry.name)
    return {"anyOf": [{"enum": bare}, *options]}


def _loosen(schema: Any) -> Any:
    """Numbers and booleans in pydantic's schema may also be ``$vars`` or arithmetic."""
    if isinstance(schema, dict):
        out = {k: _loosen(v) for k, v in schema.items()}
        kind = out.get("type")
        if kind in ("integer", "number"):
            bounds = {k: out.pop(k) for k in list(out) if k in ("title", "default", "description")}
            return {"anyOf": [out, _EXPRESSION], **bounds}
        if kind == "boolean":
            bounds = {k: out.pop(k) for k in list(out) if k in ("title", "default", "description")}
            return {"anyOf": [out, _VAR], **bounds}
        return out
    if isinstance(schema, list):
        return [_loosen(v) for v in schema]
    return schema


def _pydantic(model: Any, defs: dict, skip: tuple[str, ...] = ()) -> dict:
    schema = model.model_json_schema(ref_template="#/$defs/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        defs[name] = _loosen(sub)
    for field in skip:
        schema["properties"].pop(field, None)
        if field in schema.get("required", []):
            schema["required"].remove(field)
    schema.pop("title", None)
    return _loosen(schema)


def schema() -> dict:
    """The JSON Schema (draft 2020-12) of a spec file."""
    defs: dict[str, Any] = {"layer": _calls("layer"), **_model_defs(), **_model_defs("_b", uses=True)}
    defs |= {"init_rule": _init_rule(), "initialiser_rule": _initialiser_rule(REGISTRY.names("layer"))}
    defs |= {"defaults": _defaults_def()}
    sections = _sections(defs)
    sections_required = {
        key: {"required": section.pop("required")} for key, section in sections.items() if section.get("required")
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "specc model spec",
        "description": "A YAML model spec for specc (docs/spec-language.md)",
        "type": "object",
        "anyOf": [{"required": ["base"]}, {"required": ["name", "model"]}],  # a `base:` may supply them
        # block uses only where `blocks:` (or a base, which may define them) says which names are blocks
        "allOf": [
            {
                "if": {"anyOf": [{"required": ["blocks"]}, {"required": ["base"]}]},
                "then": {"properties": {"model": _root("_b")}},
                "else": {"properties": {"model": _root("")}},
            },
            # a section's required keys may come from the base, which is merged into it key by key
            {"if": {"not": {"required": ["base"]}}, "then": {"properties": sections_required}},
        ],
        "additionalProperties": False,
        "properties": sections,
        "$defs": defs,
    }


def _sections(defs: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys."""
    from compiler.front.spec import DataSpec, TrainSpec

    data = _pydantic(DataSpec, defs)
    data["properties"]["dataset"] = _calls("dataset")
    data["properties"]["transforms"] = {"type": "array", "items": _calls("transform")}
    data["properties"]["eval_transforms"] = {"type": "array", "items": _calls("transform")}
    shape = {
        "type": "array",
        "minItems": 1,
        "maxItems": 8,
        "items": {"anyOf": [{"type": "integer", "minimum": 1}, _EXPRESSION]},
    }
    return {
        "base": {"type": "string", "description": "a spec file this one extends (relative to this file)"},
        "version": {"const": 1},
        "name": {"type": "string", "pattern": _IDENT},
        "description": {"type": "string"},
        "seed": {"anyOf": [{"type": "integer", "minimum": 0}, _EXPRESSION]},
        "vars": {"type": "object", "propertyNames": {"pattern": _IDENT}},
        "input": {
            "anyOf": [
                shape,
                {
                    "type": "object",
                    "description": "several inputs, each one sample's shape, by name (a graph model's values)",
                    "minProperties": 1,
                    "maxProperties": 8,
                    "propertyNames": {"pattern": _IDENT},
                    "additionalProperties": shape,
                },
            ]
        },
        "defaults": {"$ref": "#/$defs/defaults"},
        "blocks": _blocks_def(),
        "model": {"type": ["object", "array"]},
        "init": {"type": "array", "items": {"$ref": "#/$defs/init_rule"}},
        "data": data,
        "loss": {
            "anyOf": [
                _calls("loss"),
                {
                    "type": "object",
                    "description": "a loss per output of a model of several outputs, by the output's name",
                    "minProperties": 1,
                    "additionalProperties": _calls("loss"),
                },
            ]
        },
        "loss_weights": {
            "type": "object",
            "description": "each output's loss weight in the sum (default 1)",
            "additionalProperties": {"type": "number", "minimum": 0},
        },
        "optimizer": _calls("optimizer"),
        "scheduler": _scheduler_calls(),
        "train": _pydantic(TrainSpec, defs),
    }


def _root(suffix: str) -> dict:
    """`model:`: a block (a list or named children), a merge block or a graph node."""
    kinds = ("block", "merge", "graph")
    return {"anyOf": [{"$ref": f"#/$defs/{kind}{suffix}"} for kind in kinds]}


def _scheduler_calls() -> dict:
    """A scheduler; its mapping forms may also say `interval: step | epoch`."""
    from compiler.front.spec import SCHEDULER_INTERVALS

    calls = _calls("scheduler")
    for option in calls["anyOf"][1:]:
        option["properties"]["interval"] = {"enum": list(SCHEDULER_INTERVALS)}
    return calls


def _model_defs(suffix: str = "", uses: bool = False) -> dict[str, Any]:
    """The model grammar: a node is a layer, a block, a repeat, a loop, an `if:` part or a merge block (and, where
    the spec defines `blocks:` or extends a base that may, a block use). ``suffix`` names this variant's defs."""
    layer_names = REGISTRY.names("layer")
    node = {"$ref": f"#/$defs/node{suffix}"}
    kinds = ["layer", *(["use"] if uses else []), f"block{suffix}", f"repeat{suffix}", f"loop{suffix}"]
    kinds += [f"if{suffix}", f"merge{suffix}", f"graph{suffix}"]
    defs = {
        f"node{suffix}": {"anyOf": [{"$ref": f"#/$defs/{kind}"} for kind in kinds]},
        f"block{suffix}": _block_def(node, layer_names),
        f"repeat{suffix}": {
            "type": "object",
            "required": ["repeat", "body"],
            "additionalProperties": False,
            "description": "N copies of body, spliced into the enclosing list",
            "properties": {
                "repeat": {"anyOf": [{"type": "integer", "minimum": 1}, _EXPRESSION]},
                "body": {"$ref": f"#/$defs/block{suffix}"},
            },
        },
        f"loop{suffix}": _loop_def(node),
        f"if{suffix}": {
            "type": "object",
            "required": ["if", "then"],
            "additionalProperties": False,
            "description": "a part kept (then), replaced (else) or left out, by a condition",
            "properties": {"if": {"anyOf": [{"type": "boolean"}, _EXPRESSION]}, "then": node, "else": node},
        },
        f"merge{suffix}": _merge_def(node),
        f"graph{suffix}": _graph_def(node, layer_names),
    }
    if uses:
        defs["use"] = _use_def(layer_names)
    return defs


def _block_def(node: dict, layer_names: list[str]) -> dict[str, Any]:
    """A list (``nn.Sequential``) or named children; a child's name may be a loop's pattern or a ``$var``."""
    reserved = [*layer_names, "repeat", "body", "merge", "graph", "if", "for"]
    # a key as torch writes some (RegNet's `block1-0`); a merge part's or a graph's must be an identifier (§2)
    key = {"pattern": r"^[A-Za-z_][A-Za-z0-9_-]*$", "not": {"enum": reserved}}
    child_names = {"anyOf": [key, {"pattern": r"\{"}, {"pattern": r"^\$"}]}
    item = {"allOf": [node, {"not": {"type": "object", "required": ["name", "body"]}}]}  # a list's loop splices
    return {
        "anyOf": [
            {"type": "array", "minItems": 1, "items": item, "description": "nn.Sequential"},
            {
                "type": "object",
                "minProperties": 1,
                "description": "nn.Sequential(OrderedDict): children by name (or by a loop's name pattern)",
                "propertyNames": child_names,
                "additionalProperties": node,
            },
        ]
    }


def _loop_def(node: dict) -> dict[str, Any]:
    """`{for: n | [t, c, n, s], in: ..., as: i, name: "layer{i + 1}", body: ...}` or `{repeat: N, as: i, ...}`."""
    names = {"anyOf": [{"type": "string", "pattern": _IDENT}, {"type": "array", "items": {"pattern": _IDENT}}]}
    common = {
        "as": {"type": "string", "pattern": _IDENT},
        "name": {"type": "string", "description": 'a name pattern, e.g. "layer{i + 1}"'},
        "body": node,
    }
    return {
        "description": "a loop: its body once per iteration, the loop's names visible as $name",
        "anyOf": [
            {
                "type": "object",
                "required": ["for", "in", "body"],
                "additionalProperties": False,
                "properties": {"for": names, "in": {"anyOf": [{"type": "array"}, {"type": "integer"}, _EXPRESSION]}}
                | common,
            },
            {
                "type": "object",
                "required": ["repeat", "body"],
                "anyOf": [{"required": ["as"]}, {"required": ["name"]}],
                "additionalProperties": False,
                "properties": {"repeat": {"anyOf": [{"type": "integer", "minimum": 0}, _EXPRESSION]}} | common,
            },
        ],
    }


def _use_def(layer_names: list[str]) -> dict[str, Any]:
    """A use of a block of `blocks:` (or `{$var: ...}`): its arguments by name, in order, or one value."""
    name = {"anyOf": [{"pattern": r"^[A-Z][A-Za-z0-9_]*$", "not": {"enum": layer_names}}, {"pattern": r"^\$"}]}
    return {
        "anyOf": [
            {"type": "string", "pattern": r"^[A-Z][A-Za-z0-9_]*$", "not": {"enum": layer_names}},
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "propertyNames": name,
                "additionalProperties": {"type": ["object", "array", "string", "number", "boolean"]},
            },
        ],
        "description": "a block of `blocks:` used like a layer",
    }


def _blocks_def() -> dict[str, Any]:
    """`blocks: {Name: {params, vars, defaults, body}}`."""
    param = {
        "anyOf": [
            {"enum": ["int", "float", "bool", "str", "list", "any"]},
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"type": {"enum": ["int", "float", "bool", "str", "list", "any"]}, "default": {}},
            },
            {"type": ["number", "boolean", "array"]},  # a default (a string default: `{type: str, default: ...}`)
        ]
    }
    return {
        "type": "object",
        "propertyNames": {"pattern": r"^[A-Z][A-Za-z0-9_]*$", "not": {"enum": REGISTRY.names("layer")}},
        "additionalProperties": {
            "type": "object",
            "required": ["body"],
            "additionalProperties": False,
            "properties": {
                "params": {"type": "object", "propertyNames": {"pattern": _IDENT}, "additionalProperties": param},
                "vars": {"type": "object", "propertyNames": {"pattern": _IDENT}},
                "defaults": {"$ref": "#/$defs/defaults"},
                "body": {"$ref": "#/$defs/node_b"},
            },
        },
    }


def _defaults_def() -> dict[str, Any]:
    """`defaults: {Type: {keyword: value}}`: keyword values for every layer of a type."""
    return {
        "type": "object",
        "propertyNames": {"enum": REGISTRY.names("layer")},
        "additionalProperties": {"type": "object", "propertyNames": {"pattern": _IDENT}},
    }


def _merge_def(node: dict) -> dict[str, Any]:
    from compiler.front.spec import MERGE_OPS

    return {
        "type": "object",
        "required": ["merge", "branches"],
        "additionalProperties": False,
        "description": "branches that all take the block's input, combined by add, cat or mul",
        "properties": {
            "merge": {"enum": list(MERGE_OPS)},
            "dim": {"anyOf": [{"type": "integer"}, _EXPRESSION]},
            "class": {"type": "string", "pattern": r"^[A-Z][A-Za-z0-9_]*$"},
            "before": node,
            "branches": {
                "type": "object",
                "minProperties": 2,
                "propertyNames": {"anyOf": [{"pattern": _IDENT}, {"pattern": r"^\$"}]},
                "additionalProperties": node,
            },
            "then": node,
        },
    }


def _graph_def(node: dict, layer_names: list[str]) -> dict[str, Any]:
    """A graph node (§15): steps on named values, its own parameters and buffers."""
    from compiler.front.spec import GRAPH_KEYS, GRAPH_OPS, INTERPOLATE_MODES, STEP_KEYS, TENSOR_DTYPES

    value = {"type": "string", "pattern": _IDENT}
    values = {"anyOf": [value, {"type": "array", "minItems": 1, "items": value}]}
    size = {"anyOf": [{"type": "integer", "minimum": 1}, _EXPRESSION]}
    tensor = {
        "type": "object",
        "required": ["shape"],
        "additionalProperties": False,
        "properties": {
            "shape": {"type": "array", "minItems": 1, "items": size},
            "dtype": {"enum": list(TENSOR_DTYPES)},
            "init": _calls("init"),
        },
    }
    tensors = {"type": "object", "propertyNames": {"pattern": _IDENT}, "additionalProperties": tensor}
    operations = [
        {
            "type": "object",
            "required": [op],
            "additionalProperties": False,
            "properties": {op: values, "as": value}
            | ({"dim": size} if op in ("cat", "stack") else {})
            | ({"mode": {"enum": list(INTERPOLATE_MODES)}} if op == "interpolate" else {}),
        }
        for op in GRAPH_OPS
    ]
    # `body` may name a step (torchvision's BackboneWithFPN.body): a step is never read as a repeat
    reserved = [*layer_names, *GRAPH_OPS, *STEP_KEYS, "call", "repeat", "merge", "graph", "if", "for"]
    around = {
        "from": values,
        "as": {"anyOf": [value, {"type": "array", "minItems": 1, "items": value}]},
        "with": {"type": "object", "propertyNames": {"pattern": _IDENT}},
        "when": {"enum": ["training"]},
    }
    # `keep: false` beside a child drops it once built; alone, `keep` names the step (as before the option)
    kept = {**around, "keep": {"anyOf": [{"const": False}, node]}}
    child = {
        "type": "object",
        "minProperties": 1,
        "description": "a named child (its value: the step's name) with `from:`, `as:`, `with:`, `when:`, `keep:` "
        "beside it",
        "propertyNames": {"anyOf": [{"enum": list(kept)}, {"pattern": _IDENT, "not": {"enum": reserved}}]},
        "properties": kept,
        "additionalProperties": node,
    }
    call = {
        "type": "object",
        "required": ["call"],
        "additionalProperties": False,
        "description": "runs a module of `modules:` (`encoder`) or a member of a declared list (`inner_blocks.3`)",
        "properties": {"call": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[0-9]+)?$"}, **around},
    }
    output = {
        "anyOf": [
            value,
            {"type": "array", "minItems": 1, "items": value},
            {"type": "object", "minProperties": 1, "additionalProperties": value},
        ]
    }
    return {
        "type": "object",
        "required": ["graph"],
        "additionalProperties": False,
        "description": "steps run in order on named values (the input is `x`); parameters and buffers of its own",
        "propertyNames": {"enum": list(GRAPH_KEYS)},
        "properties": {
            "graph": {"type": "array", "minItems": 1, "items": {"anyOf": [*operations, call, child]}},
            "params": tensors,
            "buffers": tensors,
            "modules": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": _IDENT}},
            "inputs": {"type": "array", "minItems": 1, "maxItems": 8, "items": value},
            "output": output,
            "eval_output": values,
            "class": {"type": "string", "pattern": r"^[A-Z][A-Za-z0-9_]*$"},
            "init": {
                "type": "array",
                "description": "rules run once the node is built, on its modules (paths relative to it)",
                "items": {"$ref": "#/$defs/initialiser_rule"},
            },
        },
    }


def _init_rule() -> dict[str, Any]:
    load = {
        "type": "object",
        "description": "weights from a file (a specc checkpoint, a state dict, a .pth), after the other rules",
        "properties": {"from": {"type": "string", "minLength": 1}, "strict": {"type": "boolean"}},
        "required": ["from"],
        "additionalProperties": False,
    }
    return {"anyOf": [load, {"$ref": "#/$defs/initialiser_rule"}]}


def _initialiser_rule(layer_names: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "not": {"required": ["from"]},
        "description": "modules by type and/or path; a torch.nn.init call per parameter name",
        "properties": {
            "type": {"anyOf": [{"enum": layer_names}, {"type": "array", "items": {"enum": layer_names}}]},
            "path": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        },
        "propertyNames": {"pattern": _IDENT},
        "additionalProperties": _calls("init"),
    }


def _cache_key() -> str:
    """What the schema depends on: the registry (plugins included), torch's signatures, this code."""
    import hashlib
    import json
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    versions = []
    for package in ("torch", "torchvision", "pydantic"):
        try:
            versions.append(version(package))
        except PackageNotFoundError:
            versions.append("")
    package = Path(__file__).parents[1]
    code = [(package / name).read_bytes() for name in ("cli/schema.py", "front/spec.py", "facts/registry.py")]
    entries = sorted(
        (e.kind, e.name, e.module, e.class_name, repr(e.params))
        for kind in ("layer", "loss", "optimizer", "scheduler", "transform", "dataset", "init")
        for e in REGISTRY.entries(kind)
    )
    digest = hashlib.sha256(json.dumps([versions, entries]).encode())
    for blob in code:
        digest.update(blob)
    return digest.hexdigest()[:32]


SHIPPED = "specc.schema.json"  # beside this file, built for the key in specc.schema.key (a test keeps both current)


def schema_text() -> str:
    """The schema as JSON text. Building it imports torch (seconds), so it comes, in order, from the copy shipped
    in the package when it was built for this registry and these versions, from the user's cache, or is built."""
    import json
    import os
    import tempfile
    from pathlib import Path

    here = Path(__file__).parent
    key = _cache_key()
    try:
        if (here / "specc.schema.key").read_text(encoding="utf-8").strip() == key:
            return (here / SHIPPED).read_text(encoding="utf-8")
    except OSError:
        pass
    folder = Path(
        os.environ.get("SPECC_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "specc"
    )
    path = folder / f"schema-{key}.json"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        pass
    text = json.dumps(schema(), indent=2) + "\n"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".schema-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: no cache, the same text
    return text


if __name__ == "__main__":  # python -m compiler.cli.schema: rebuild the shipped copy and its key
    import json
    from pathlib import Path

    here = Path(__file__).parent
    (here / SHIPPED).write_text(json.dumps(schema(), indent=2) + "\n", encoding="utf-8")
    (here / "specc.schema.key").write_text(_cache_key() + "\n", encoding="utf-8")
