"""Stage 1b: blocks, loops, conditions and layer defaults -> the model grammar of spec-language.md §2.

``expand(data, source, problems)`` runs between loading and parsing. It rewrites the model as plain
data: loops (`repeat` with an index, `for` over a table) become their copies, `if:` parts are kept or
dropped, `defaults:` are written into each layer, and `blocks:` definitions are checked and replaced by
a ``Library`` that the parser and the lowerer read. Every value it writes gets the source position of
the value it came from, so later errors still point at the right line.

A block *use* (`{Bottleneck: {width: 64}}`) is left in place: its body is instantiated while lowering,
by ``instantiate``, where the input's shape is known. That is what lets a body ask for
`$in_channels` (a shortcut only when the width changes, torchvision's `inplanes`) without a second
shape inference here: the lowerer already computes every shape, in module order, and instantiating a
body is a pure function of (definition, arguments, input shape) that returns data for the same parser.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from compiler.common.suggest import did_you_mean
from compiler.facts.registry import REGISTRY
from compiler.front.expr import Evaluated, ExprError, evaluate, needs_evaluation, references
from compiler.front.load import Path_, Source
from compiler.front.names import RESERVED_NAMES
from compiler.front.problems import Problems

LOOP_KEYS = ("repeat", "for", "in", "as", "name", "body")
IF_KEYS = ("if", "then", "else")
BLOCK_KEYS = ("params", "vars", "defaults", "body")
TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "list": (list,), "any": (object,)}
SHAPE_VARS = ("in_channels", "in_shape")  # what a block body sees of its input
RESERVED_BLOCKS = ("repeat", "body", "merge", "graph", "if", "for")
GRAPH_OPS = ("add", "sub", "mul", "div", "matmul", "cat", "stack", "expand_batch", "interpolate")
STEP_VALUES = ("from", "as", "with", "when", "dim", "mode", "call")  # a step's keys that hold values, not a node
MAX_USE_DEPTH = 32  # blocks inside blocks
MAX_ITERATIONS = 10_000  # one loop (as `repeat`)
# values written by expansion, loops and every block instance together: each becomes a node the lowerer
# binds and checks one by one (unlike §2's `repeat`, whose copies are checked once), so this bounds the
# time validation takes (about 2 s at the bound); the largest torchvision family member writes ~7,000
MAX_EXPANDED = 20_000
_PATTERN = re.compile(r"\{([^{}]*)\}")
_BARE = re.compile(r"(?<![$\w'\"])([A-Za-z_]\w*)(?![\w'\"(])")


@dataclass(frozen=True)
class Param:
    name: str
    types: tuple[type, ...]
    type_name: str
    default: Any = None
    required: bool = True


@dataclass(frozen=True)
class BlockDef:
    """A checked `blocks:` entry: its parameters, local `vars`, `defaults` and raw body."""

    name: str
    params: dict[str, Param]
    local_vars: dict[str, Any]
    defaults: dict[str, Any]
    body: Any
    path: Path_
    line: int


@dataclass
class Library:
    """The spec's block definitions and what their bodies see: the spec's variables and defaults."""

    blocks: dict[str, BlockDef] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, tuple[dict, Path_]] = field(default_factory=dict)
    instances: dict[Path_, Any] = field(default_factory=dict)  # use path -> its body's data (`specc expand`)
    envs: dict[Path_, dict] = field(default_factory=dict)  # use path -> the names its body saw (generated classes)
    origins: dict[Path_, Path_] = field(default_factory=dict)  # a written value's path -> the path it came from
    expanded: dict = field(default_factory=dict)  # the spec after expansion, uses still in place
    loops: list[LoopRun] = field(default_factory=list)  # every loop as it was copied (the script's `for` loops)
    written: int = 0  # values written by expansion so far (MAX_EXPANDED)


@dataclass
class LoopRun:
    """One loop as expansion copied it into one container: what the generated script writes back as a ``for``."""

    origin: Path_  # the loop's place in the spec
    raw: dict  # the loop as written
    container: Path_  # the list or named block its copies went into
    envs: list[dict] = field(default_factory=list)  # each iteration's names (variables, every enclosing loop's)
    spans: list = field(default_factory=list)  # each iteration's children: (start, stop) in a list, names in a block


@dataclass
class _Scope:
    env: dict[str, Any]
    local: frozenset[str]  # names whose references are evaluated here (loop variables, parameters)
    defaults: dict[str, tuple[dict, Path_]]
    evaluate_all: bool = False  # inside a block body nothing is left for the parser's `$vars` pass


# --------------------------------------------------------------------------- entry points


def expand(data: Any, source: Source, problems: Problems) -> Any:
    """The spec with loops, conditions and defaults expanded; `blocks:` replaced by a checked ``Library``."""
    if not isinstance(data, dict):
        return data
    if not ({"blocks", "defaults"} & set(data) or _new_forms(data.get("model"))):
        return {**data, "blocks": Library(expanded=data)}  # §2's grammar alone: nothing to rewrite
    library = Library(variables=_variables(data.get("vars")))
    library.defaults = _defaults(data.get("defaults"), ("defaults",), problems)
    raw_vars = data.get("vars") if isinstance(data.get("vars"), dict) else {}  # else the spec's check reports it
    library.blocks = _definitions(data.get("blocks"), raw_vars, source, problems)
    out = {k: v for k, v in data.items() if k not in ("blocks", "defaults")}
    if "model" in data:
        scope = _Scope(dict(library.variables), frozenset(), library.defaults)
        out["model"] = _Expander(source, problems, library, snapshot=True).node(
            data["model"], ("model",), ("model",), scope
        )
    library.expanded = dict(out)
    out["blocks"] = library
    return out


def instantiate(
    library: Library, use_name: str, args: dict, in_shape: tuple | None, path: Path_, problems: Problems
) -> Any:
    """The body of block ``use_name`` for these arguments and this input shape, as data rooted at ``path``."""
    block = library.blocks[use_name]
    env = dict(library.variables)
    if in_shape is not None:
        env.update(in_channels=in_shape[0], in_shape=list(in_shape))
    env.update({name: p.default for name, p in block.params.items() if not p.required})
    env.update(args)
    expander = _Expander(problems.source, problems, library)
    for name, raw in block.local_vars.items():
        env[name] = expander.value(raw, block.path + ("vars", name), path, _Scope(env, frozenset(env), {}, True))
    defaults = {**library.defaults, **block.defaults}
    scope = _Scope(env, frozenset(env), defaults, evaluate_all=True)
    body = expander.node(block.body, block.path + ("body",), path, scope)
    for kind in ("merge", "graph"):
        if isinstance(body, dict) and kind in body and "class" not in body:  # the script's class: the block's name
            body = {kind: body[kind], "class": block.name, **{k: v for k, v in body.items() if k != kind}}
    library.instances[path] = body
    library.envs[path] = env
    return body


def _new_forms(raw: Any) -> bool:
    """Whether model data holds a loop, an `if:` part or a `$name` key (else expansion has nothing to do)."""
    if isinstance(raw, list):
        return any(_new_forms(v) for v in raw)
    if isinstance(raw, dict):
        if is_loop(raw) or _is_if(raw) or any(isinstance(k, str) and k.startswith("$") for k in raw):
            return True
        return any(_new_forms(v) for v in raw.values())
    return False


# --------------------------------------------------------------------------- definitions


def _variables(raw: Any) -> dict[str, Any]:
    """The spec's `vars`, evaluated in order (their errors are the parser's to report, once)."""
    env: dict[str, Any] = {}
    for name, value in (raw or {}).items() if isinstance(raw, dict) else ():
        try:
            env[name] = _plain(value, env)
        except ExprError:
            continue
    return env


def _plain(value: Any, env: dict) -> Any:
    if isinstance(value, str):
        result = evaluate(value, env)
        return result.value if isinstance(result, Evaluated) else result
    if isinstance(value, list):
        return [_plain(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, env) for k, v in value.items()}
    return value


def _defaults(raw: Any, path: Path_, problems: Problems) -> dict[str, tuple[dict, Path_]]:
    """`defaults: {BatchNorm2d: {eps: 0.001}}`: per layer type, keyword arguments and where they are."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.fail(path, "`defaults:` maps layer types to arguments", "e.g. `defaults: {ReLU: {inplace: true}}`")
        return {}
    found = {}
    for type_name, kwargs in raw.items():
        where = path + (type_name,)
        if not REGISTRY.is_layer(str(type_name)):
            fix = did_you_mean(str(type_name), REGISTRY.names("layer"), "defaults apply to layer types")
            problems.fail(where, f"unknown layer type {type_name!r} in `defaults:`", fix)
        elif not isinstance(kwargs, dict) or not kwargs:
            problems.fail(where, f"defaults for {type_name} must be keyword arguments", f"e.g. `{type_name}: {{k: v}}`")
        else:
            found[type_name] = (kwargs, where)
    return found


def _definitions(raw: Any, raw_vars: dict, source: Source, problems: Problems) -> dict[str, BlockDef]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.fail(("blocks",), "`blocks:` maps block names to definitions", "e.g. `blocks: {Fire: {body: ...}}`")
        return {}
    blocks = {}
    for name, spec in raw.items():
        block = _definition(name, spec, raw_vars, source, problems)
        if block is not None:
            blocks[name] = block
    _check_recursion(blocks, problems)
    return blocks


def _definition(name: Any, raw: Any, raw_vars: dict, source: Source, problems: Problems) -> BlockDef | None:
    path = ("blocks", name)
    if not _block_name_ok(name, path, raw_vars, problems):
        return None
    if not isinstance(raw, dict) or "body" not in raw:
        problems.fail(path, f"block {name} needs `body:`", "e.g. `{params: {width: int}, body: [...]}`")
        return None
    for key in raw:
        if key not in BLOCK_KEYS:
            problems.fail(path + (key,), f"unknown key {key!r} in block {name}", did_you_mean(str(key), BLOCK_KEYS))
    params = _params(raw.get("params"), path + ("params",), problems)
    local_vars = raw.get("vars") or {}
    if not isinstance(local_vars, dict):
        problems.fail(path + ("vars",), "a block's `vars:` is a mapping", "e.g. `vars: {out: $width * 4}`")
        local_vars = {}
    defaults = _defaults(raw.get("defaults"), path + ("defaults",), problems)
    line = source.locate(path)[0]
    return BlockDef(name, params, local_vars, defaults, raw["body"], path, line)


def _block_name_ok(name: Any, path: Path_, raw_vars: dict, problems: Problems) -> bool:
    text = str(name)
    if name in RESERVED_BLOCKS:
        problems.fail(path, f"block name {name!r} is reserved", f"rename it, e.g. {text.capitalize() + 'Block'!r}")
    elif REGISTRY.is_layer(text):
        problems.fail(path, f"block name {name!r} is a layer type's name", f"call it e.g. {text + 'Block'!r}")
    elif not (isinstance(name, str) and name.isidentifier() and name.isascii() and name[:1].isupper()):
        fix = "ASCII letters and digits, starting with a capital, e.g. `Bottleneck`"
        problems.fail(path, f"block name {text!r} must be a Python class name", fix)
    elif name in RESERVED_NAMES or name in raw_vars:
        problems.fail(path, f"block name {name!r} is taken by the generated script or a variable", "rename it")
    else:
        return True
    return False


def _params(raw: Any, path: Path_, problems: Problems) -> dict[str, Param]:
    """`params: {width: int, stride: 1, groups: {type: int, default: 1}}`."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.fail(path, "`params:` maps parameter names to types or defaults", "e.g. `{width: int, stride: 1}`")
        return {}
    params = {}
    for name, decl in raw.items():
        where = path + (name,)
        if not (isinstance(name, str) and name.isidentifier()) or name in SHAPE_VARS:
            problems.fail(where, f"parameter name {name!r} is not allowed", "use an identifier other than in_*shape")
            continue
        param = _param(name, decl, where, problems)
        if param is not None:
            params[name] = param
    return params


def _param(name: str, decl: Any, where: Path_, problems: Problems) -> Param | None:
    if isinstance(decl, str) and decl in TYPES:
        return Param(name, TYPES[decl], decl)
    if isinstance(decl, dict) and set(decl) <= {"type", "default"} and decl.get("type", "any") in TYPES:
        type_name = decl.get("type", "any")
        param = Param(name, TYPES[type_name], type_name, decl.get("default"), "default" not in decl)
        if not param.required and not _fits(param, param.default):
            problems.fail(where + ("default",), f"default {param.default!r} is not {_a(type_name)}", "fix the default")
            return None
        return param
    if isinstance(decl, (dict, str)) or decl is None:
        fix = f"write a type ({', '.join(TYPES)}), a default value, or `{{type: int, default: 1}}`"
        problems.fail(where, f"cannot read parameter {name}'s declaration {decl!r}", fix)
        return None
    type_name = "bool" if isinstance(decl, bool) else type(decl).__name__
    return Param(name, TYPES.get(type_name, (object,)), type_name, decl, False)


def _fits(param: Param, value: Any) -> bool:
    if isinstance(value, bool) and param.type_name in ("int", "float"):
        return False
    return isinstance(value, param.types)


def _a(type_name: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(
        type_name, f"a {type_name}"
    )


def _check_recursion(blocks: dict[str, BlockDef], problems: Problems) -> None:
    """A block that uses itself, directly or through others, would expand forever: a located error."""
    uses = {name: _references(block.body, block.path + ("body",), blocks) for name, block in blocks.items()}
    for name in blocks:
        chain = _cycle(name, name, uses, [name], set())
        if chain:
            target, where = chain[1], next(p for n, p in uses[name] if n == chain[1])
            problems.fail(
                where,
                f"block {name} uses itself ({' -> '.join(chain)}): it would expand forever",
                f"remove the use of {target} from {name}'s body",
            )


def _cycle(start: str, name: str, uses: dict, chain: list, seen: set) -> list | None:
    for used, _ in uses.get(name, ()):
        if used == start:
            return [*chain, used]
        if used not in seen:
            seen.add(used)
            found = _cycle(start, used, uses, [*chain, used], seen)
            if found:
                return found
    return None


def _references(raw: Any, path: Path_, blocks: dict) -> list[tuple[str, Path_]]:
    if isinstance(raw, str):
        return [(raw, path)] if raw in blocks else []
    if isinstance(raw, list):
        return [r for i, v in enumerate(raw) for r in _references(v, path + (i,), blocks)]
    if isinstance(raw, dict):
        found = [(k, path + (k,)) for k in raw if k in blocks]
        return found + [r for k, v in raw.items() for r in _references(v, path + (k,), blocks)]
    return []


# --------------------------------------------------------------------------- expansion


class _Expander:
    """Rewrites model data: `origin` is where a value is written, `path` where its copy goes."""

    def __init__(self, source: Source, problems: Problems, library: Library, snapshot: bool = False):
        self.source = source
        # where values came from: a copy when the model's own paths are rewritten (a copy placed at index 4
        # must not move the position of the value that was at index 4 before it is read)
        self.origins = Source(source.filename, "", dict(source.positions)) if snapshot else source
        self.problems = problems
        self.library = library

    def place(self, origin: Path_, path: Path_) -> None:
        self.library.written += 1
        if self.library.written == MAX_EXPANDED + 1:
            fix = "use fewer or shorter loops, or fewer block uses (a plain `repeat` of identical copies is cheaper)"
            self.problems.fail(origin, f"the model expands to more than {MAX_EXPANDED:,} values", fix)
        if origin != path:
            self.source.positions[path] = self.origins.locate(origin)
            self.library.origins[path] = origin

    def fail(self, origin: Path_, message: str, fix: str = "") -> None:
        self.problems.fail(origin, message, fix)

    def over_budget(self) -> bool:
        """Past MAX_EXPANDED values (reported once, in ``place``): stop copying at once."""
        return self.library.written > MAX_EXPANDED

    # nodes -----------------------------------------------------------------------------

    def node(self, raw: Any, origin: Path_, path: Path_, scope: _Scope) -> Any:
        self.place(origin, path)
        if self.over_budget():
            return None
        if isinstance(raw, list):
            return self.items(raw, origin, path, scope)
        if isinstance(raw, str):
            return self.layer(raw, None, origin, path + (raw,), scope)
        if not isinstance(raw, dict):
            return raw
        if is_loop(raw):  # a loop standing alone (a merge part, a block's value): its copies, named or in a list
            if "name" in raw or _pattern_keys(raw["body"]):
                out: dict = {}
                self.named_loop(out, raw, origin, path, scope)
                return out
            return self.items([raw], origin, path, scope, alone=True)
        if _is_if(raw):
            chosen = self.choose(raw, origin, scope)
            return None if chosen is None else self.node(chosen[0], chosen[1], path, scope)
        if "graph" in raw:
            return self.graph(raw, origin, path, scope)
        if "merge" in raw:
            return self.merge(raw, origin, path, scope)
        if "repeat" in raw and "body" in raw:
            return self.plain_repeat(raw, origin, path, scope)
        if len(raw) == 1:
            key = next(iter(raw))
            name = self.key(key, origin, scope)
            if REGISTRY.is_layer(str(name)) or name in self.library.blocks:
                return self.layer(name, raw[key], origin + (key,), path + (name,), scope)
        return self.named(raw, origin, path, scope)

    def items(self, raw: list, origin: Path_, path: Path_, scope: _Scope, alone: bool = False) -> Any:
        out: list = []
        for i, item in enumerate(raw):
            where = origin if alone else origin + (i,)
            if isinstance(item, dict) and is_loop(item):
                copies = self.iterations(item, where, scope, in_list=True)
                run = self.record(item, where, path)
                for copy_scope, _ in copies if copies is not None else [(None, None)]:
                    if self.over_budget():
                        break
                    if copy_scope is None:  # reported: a placeholder keeps later errors about this loop away
                        out.append("Identity")
                        continue
                    start = len(out)
                    self.splice(out, item["body"], where + ("body",), path, copy_scope)
                    run.envs.append(copy_scope.env)
                    run.spans.append((start, len(out)))
                continue
            value = self.node(item, where, path + (len(out),), scope)
            if value is not None:
                out.append(value)
        return out

    def splice(self, out: list, body: Any, origin: Path_, path: Path_, scope: _Scope) -> None:
        """One loop iteration in a list: a list body's items join the list, anything else is one item."""
        if isinstance(body, list):
            for i, item in enumerate(body):
                if isinstance(item, dict) and is_loop(item):
                    run = self.record(item, origin + (i,), path)
                    for inner, _ in self.iterations(item, origin + (i,), scope, in_list=True) or ():
                        if self.over_budget():
                            break
                        start = len(out)
                        self.splice(out, item["body"], origin + (i, "body"), path, inner)
                        run.envs.append(inner.env)
                        run.spans.append((start, len(out)))
                    continue
                value = self.node(item, origin + (i,), path + (len(out),), scope)
                if value is not None:
                    out.append(value)
            return
        value = self.node(body, origin, path + (len(out),), scope)
        if value is not None:
            out.append(value)

    def named(self, raw: dict, origin: Path_, path: Path_, scope: _Scope) -> dict:
        out: dict = {}
        for key, item in raw.items():
            where = origin + (key,)
            if isinstance(item, dict) and is_loop(item) and _splices(key, item):
                self.named_loop(out, item, where, path, scope, key)
                continue
            name = self.key(key, where, scope)
            value = self.node(item, where, path + (name,), scope)
            if value is not None:
                self.put(out, name, value, where)
        return out

    def named_loop(self, out: dict, loop: dict, origin: Path_, path: Path_, scope: _Scope, key: Any = None) -> None:
        """Named children per iteration: the loop's key (`"layer{k + 1}": {for: ...}`) or `name:` names the
        body's copy; else the body's own keys are patterns (`{"denseblock{k}": ..., "transition{k}": ...}`)."""
        body = loop["body"]
        pattern = key if isinstance(key, str) and "{" in key else loop.get("name")
        if pattern is not None and not isinstance(pattern, str):
            self.fail(origin + ("name",), f"a name pattern must be text, got {pattern!r}", 'e.g. `name: "layer{i+1}"`')
            return
        if pattern is None and not _pattern_keys(body):
            fix = 'add `name: "layer{i}"`, or give the body named children such as `"block{i}": ...`'
            self.fail(origin, "a loop that makes named children must say how to name them", fix)
            return
        run = self.record(loop, origin, path)
        for copy_scope, _ in self.iterations(loop, origin, scope) or ():
            if self.over_budget():
                break
            run.envs.append(copy_scope.env)
            run.spans.append(made := [])
            if pattern is not None:
                where = origin if pattern is key else origin + ("name",)
                name = self.pattern(pattern, where, copy_scope)
                value = self.node(body, origin + ("body",), path + (name,), copy_scope)
                if value is not None:
                    self.put(out, name, value, where)
                    made.append(name)
                continue
            for child_key, item in body.items():
                where = origin + ("body", child_key)
                child = self.key(child_key, where, copy_scope)
                value = self.node(item, where, path + (child,), copy_scope)
                if value is not None:
                    self.put(out, child, value, where)
                    made.append(child)

    def record(self, loop: dict, origin: Path_, container: Path_) -> LoopRun:
        run = LoopRun(origin, loop, container)
        self.library.loops.append(run)
        return run

    def put(self, out: dict, name: Any, value: Any, origin: Path_) -> None:
        if name in out:
            self.fail(origin, f"the name {name!r} is made twice in this block", "make the names differ, e.g. {i}")
        out[name] = value

    def merge(self, raw: dict, origin: Path_, path: Path_, scope: _Scope) -> dict:
        out: dict = {}
        for key, value in raw.items():
            where = origin + (key,)
            self.place(where, path + (key,))
            if key in ("before", "then"):
                out[key] = self.node(value, where, path + (key,), scope)
            elif key == "branches" and isinstance(value, dict):
                out[key] = self.named(value, where, path + (key,), scope)
            else:
                out[key] = self.value(value, where, path + (key,), scope)
        return {k: v for k, v in out.items() if v is not None}

    def graph(self, raw: dict, origin: Path_, path: Path_, scope: _Scope) -> dict:
        """A graph node (§15): each step's child is a node, everything else (names, shapes) a value."""
        out: dict = {}
        for key, value in raw.items():
            where = origin + (key,)
            if key == "graph" and isinstance(value, list):
                self.place(where, path + (key,))
                out[key] = [self.step(item, where + (i,), path + (key, i), scope) for i, item in enumerate(value)]
            elif key == "modules" and isinstance(value, dict):
                out[key] = self.named(value, where, path + (key,), scope)
            else:
                out[key] = self.value(value, where, path + (key,), scope)
        return out

    def step(self, raw: Any, origin: Path_, path: Path_, scope: _Scope) -> Any:
        if not isinstance(raw, dict):
            return self.value(raw, origin, path, scope)
        self.place(origin, path)
        out: dict = {}
        for key, value in raw.items():
            where = origin + (key,)
            if key in STEP_VALUES or key in GRAPH_OPS:
                out[key] = self.value(value, where, path + (key,), scope)
            else:
                name = self.key(key, where, scope)
                out[name] = self.node(value, where, path + (name,), scope)
        return out

    def plain_repeat(self, raw: dict, origin: Path_, path: Path_, scope: _Scope) -> dict:
        """`{repeat: N, body: ...}` without an index keeps its meaning (§2); only its body is expanded."""
        out = {}
        for key, value in raw.items():
            where = origin + (key,)
            if key == "body":
                out[key] = self.node(value, where, path + (key,), scope)
            else:
                self.place(where, path + (key,))
                out[key] = self.value(value, where, path + (key,), scope)
        return out

    def layer(self, name: str, args: Any, origin: Path_, path: Path_, scope: _Scope) -> Any:
        """A layer or a block use: its arguments evaluated, the defaults for its type written in."""
        if not isinstance(name, str) or not (REGISTRY.is_layer(name) or name in self.library.blocks):
            return name if args is None else {name: self.value(args, origin, path, scope)}
        value = None if args is None else self.value(args, origin, path, scope)
        defaults = scope.defaults.get(name)
        if defaults is not None:
            value = self.with_defaults(name, value, defaults, path, scope)
        return name if value is None else {name: value}

    def with_defaults(self, name: str, value: Any, defaults: tuple[dict, Path_], path: Path_, scope: _Scope) -> Any:
        kwargs, where = defaults
        if isinstance(value, list) or (value is not None and not isinstance(value, dict)):
            keywords = _as_keywords(name, value if isinstance(value, list) else [value])
            if keywords is None:
                return value  # more arguments than torch takes: the binder reports it
            value = keywords
        value = dict(value or {})
        for key, default in kwargs.items():
            if key not in value:
                value[key] = self.value(default, where + (key,), path + (key,), scope)
        return value

    # loops and conditions ------------------------------------------------------------------

    def iterations(self, loop: dict, origin: Path_, scope: _Scope, in_list: bool = False) -> list | None:
        """Each iteration's scope; None for a broken loop (reported)."""
        if in_list and "name" in loop:
            self.fail(
                origin + ("name",),
                "unknown key 'name' in a repeat in a list: `name:` names the children of a named block",
                "a repeat has only `repeat:` and `body:` (and `as:`, or `for:` and `in:`); remove `name:`",
            )
            return None
        rows = self.loop_rows(loop, origin, scope) if not self.over_budget() else None
        if rows is None:
            return None
        local = scope.local | {name for row in rows[:1] for name in row}
        return [(_Scope({**scope.env, **row}, local, scope.defaults, scope.evaluate_all), None) for row in rows]

    def loop_rows(self, loop: dict, origin: Path_, scope: _Scope) -> list[dict] | None:
        for key in loop:
            if key not in LOOP_KEYS:
                fix = did_you_mean(
                    str(key), LOOP_KEYS, "a loop has `repeat: N` or `for:` and `in:`, then `as:`, `name:`"
                )
                self.fail(origin + (key,), f"unknown key {key!r} in a loop", fix + ", `body:`")
                return None
        names = self.loop_names(loop, origin)
        if names is None:
            return None
        source_key = "repeat" if "repeat" in loop else "in"
        items = self.loop_items(loop.get(source_key), origin + (source_key,), scope)
        if items is None:
            return None
        rows = []
        for index, item in enumerate(items):
            bound = self.bind_row(names, item, origin, index)
            if bound is None:
                return None
            rows.append({**bound, **({loop["as"]: index} if "as" in loop else {})})
        return rows

    def loop_names(self, loop: dict, origin: Path_) -> list[str] | None:
        if "repeat" in loop and "for" in loop:
            self.fail(origin, "a loop has `repeat: N` or `for: ... in: ...`, not both", "keep one")
            return None
        if "for" in loop and "in" not in loop:
            self.fail(origin, "`for:` needs `in:`, the values or the table to loop over", "e.g. `in: $stages`")
            return None
        raw = loop.get("for", [])
        names = raw if isinstance(raw, list) else [raw]
        names = names + ([loop["as"]] if "as" in loop else [])
        for name in names:
            if not isinstance(name, str) or not name.isidentifier() or name in SHAPE_VARS:
                where = origin + ("as" if name == loop.get("as") else "for",)
                self.fail(where, f"a loop variable must be a name, got {name!r}", "e.g. `for: [t, c, n, s]`")
                return None
        return names[: len(names) - (1 if "as" in loop else 0)]

    def loop_items(self, raw: Any, origin: Path_, scope: _Scope) -> list | None:
        value = self.value(raw, origin, origin, _Scope(scope.env, frozenset(scope.env), {}, True))
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= MAX_ITERATIONS:
                self.fail(origin, f"a loop of {value} iterations", f"use 0 to {MAX_ITERATIONS}")
                return None
            return list(range(value))
        if isinstance(value, list) and len(value) <= MAX_ITERATIONS:
            return value
        self.fail(origin, f"a loop runs over a count or a list, got {value!r}", "e.g. `repeat: 3` or `in: $stages`")
        return None

    def bind_row(self, names: list[str], item: Any, origin: Path_, index: int) -> dict | None:
        if not names:
            return {}
        if len(names) == 1:
            return {names[0]: item}
        if not isinstance(item, list) or len(item) != len(names):
            self.fail(
                origin + ("in",),
                f"row {index} is {item!r}, but `for:` names {len(names)} values ({', '.join(names)})",
                f"give every row {len(names)} values",
            )
            return None
        return dict(zip(names, item, strict=True))

    def choose(self, raw: dict, origin: Path_, scope: _Scope) -> tuple[Any, Path_] | None:
        """`{if: COND, then: node, else: node}`: the chosen node and its origin; None when nothing is chosen."""
        for key in raw:
            if key not in IF_KEYS:
                fix = did_you_mean(str(key), IF_KEYS, "an `if:` part has `if:`, `then:` and optionally `else:`")
                self.fail(origin + (key,), f"unknown key {key!r} in an `if:` part", fix)
                return None
        if "then" not in raw:
            self.fail(origin, "an `if:` part needs `then:`", "e.g. `{if: $stride != 1, then: [...]}`")
            return None
        cond = self.value(raw["if"], origin + ("if",), origin + ("if",), _Scope(scope.env, frozenset(), {}, True))
        if not isinstance(cond, bool):
            self.fail(origin + ("if",), f"a condition must be true or false, got {cond!r}", "compare, e.g. `$i == 0`")
            return None
        key = "then" if cond else "else"
        return (raw[key], origin + (key,)) if key in raw else None

    # values --------------------------------------------------------------------------------

    def value(self, raw: Any, origin: Path_, path: Path_, scope: _Scope) -> Any:
        """An argument: strings that use this scope's own names are evaluated, the rest left to the parser."""
        self.place(origin, path)
        if isinstance(raw, str):
            if not needs_evaluation(raw) or not (scope.evaluate_all or set(references(raw)) & scope.local):
                return raw
            try:
                result = evaluate(raw, scope.env)
            except ExprError as err:
                self.fail(origin, err.message, _shape_fix(err, raw, scope))
                return raw
            return result.value if isinstance(result, Evaluated) else result
        if isinstance(raw, list):
            return [self.value(v, origin + (i,), path + (i,), scope) for i, v in enumerate(raw)]
        if isinstance(raw, dict):
            return {k: self.value(v, origin + (k,), path + (k,), scope) for k, v in raw.items()}
        return raw

    def key(self, key: Any, origin: Path_, scope: _Scope) -> Any:
        """A mapping key: `$name` is replaced by the variable's text, `{expr}` parts by their values."""
        if not isinstance(key, str):
            return key
        if key.startswith("$") and key[1:].isidentifier():
            value = self.value(key, origin, origin, _Scope(scope.env, frozenset(scope.env), {}))
            return value if isinstance(value, str) else key
        return self.pattern(key, origin, scope) if "{" in key else key

    def pattern(self, text: Any, origin: Path_, scope: _Scope) -> Any:
        """`denselayer{i+1}` -> `denselayer1`: each `{expression}` over the loop's names is evaluated."""
        if not isinstance(text, str):
            self.fail(origin, f"a name pattern must be text, got {text!r}", 'e.g. `name: "layer{i+1}"`')
            return text

        def part(match: re.Match) -> str:
            code = _BARE.sub(lambda m: "$" + m.group(1) if m.group(1) in scope.env else m.group(1), match.group(1))
            try:
                result = evaluate(code if references(code) or "(" in code else code + "+0", scope.env)
            except ExprError as err:
                self.fail(origin, f"in the name pattern {text!r}: {err.message}", err.fix)
                return match.group(0)
            value = result.value if isinstance(result, Evaluated) else result
            return str(value)

        return _PATTERN.sub(part, text)


def _shape_fix(err: ExprError, raw: str, scope: _Scope) -> str:
    if any(name in SHAPE_VARS and name not in scope.env for name in references(raw)):
        return "the input's shape is not known here: give the spec `input:` (one sample's shape)"
    return err.fix


def _as_keywords(name: str, args: list) -> dict | None:
    """Positional arguments as keywords (torch's order), so that defaults can join them."""
    entry = REGISTRY.get("layer", name)
    try:
        names = [p for p in entry.signature().parameters if p != "self"] if entry is not None else []
    except (TypeError, ValueError):
        return None
    if len(args) > len(names):
        return None
    return dict(zip(names, args, strict=False))


def is_loop(raw: dict) -> bool:
    """`{repeat: N, as: i, ...}` or `{for: ..., in: ..., body: ...}` (a plain `{repeat, body}` is §2's repeat)."""
    return "body" in raw and ("for" in raw or ("repeat" in raw and bool({"as", "name"} & set(raw))))


def _is_if(raw: dict) -> bool:
    return "if" in raw and set(raw) <= set(IF_KEYS) | {"if"}


def _splices(key: Any, loop: dict) -> bool:
    """A loop in a named block adds its children there when its key is a name pattern or a label for
    pattern-named children; otherwise it is one child, named by its key, holding the copies."""
    return (isinstance(key, str) and "{" in key) or ("name" not in loop and _pattern_keys(loop["body"]))


def _pattern_keys(body: Any) -> bool:
    return isinstance(body, dict) and bool(body) and all(isinstance(k, str) and "{" in k for k in body)


# --------------------------------------------------------------------------- uses


def check_use(block: BlockDef, raw: Any, path: Path_, problems: Problems) -> dict | None:
    """A use's arguments, checked like a layer's: a mapping (or a list in declaration order) of parameters."""
    where = path + (block.name,)
    defined = f"{block.name} (defined on line {block.line})"
    if raw is None:
        raw = {}
    if isinstance(raw, list):
        if len(raw) > len(block.params):
            problems.fail(where, f"{defined} takes {len(block.params)} parameters, got {len(raw)}", "remove some")
            return None
        raw = dict(zip(block.params, raw, strict=False))
    if not isinstance(raw, dict):
        fix = f"write `{block.name}: {{{', '.join(block.params) or ''}}}` with values"
        problems.fail(where, f"{defined} takes its parameters as a mapping, got {raw!r}", fix)
        return None
    ok = True
    for key, value in raw.items():
        param = block.params.get(key)
        if param is None:
            choices = list(block.params)
            fix = did_you_mean(str(key), choices, f"its parameters are: {', '.join(choices) or 'none'}")
            problems.fail(where + (key,), f"{defined} has no parameter {key!r}", fix)
            ok = False
        elif not _fits(param, value):
            problems.fail(
                where + (key,),
                f"{block.name}'s {key} must be {_a(param.type_name)}, got {value!r}",
                f"give {key} {_a(param.type_name)} (see {defined})",
            )
            ok = False
    for name, param in block.params.items():
        if param.required and name not in raw:
            problems.fail(where, f"{defined} needs parameter {name!r} ({param.type_name})", f"add `{name}: ...`")
            ok = False
    return dict(raw) if ok else None


# --------------------------------------------------------------------------- `specc expand`


def written_out(library: Library, filled: dict[str, Any]) -> dict:
    """The spec as plain §2 grammar: every block use replaced by its instantiated body (recorded while
    lowering), every `$variable` and expression replaced by its value, and ``filled`` (the sections'
    defaults) written in. A use inside a plain `repeat` stays a use: its copies may differ (the first
    one's input does), and the spec says so itself."""
    data = {**library.expanded, **filled}
    data.pop("blocks", None)
    out = {key: _values(value, library.variables) for key, value in data.items() if key not in ("vars", "model")}
    if "model" in data:
        out["model"] = _values(_bodies(data["model"], ("model",), library), library.variables)
    if "vars" in data:
        out["vars"] = {k: library.variables.get(k, v) for k, v in data["vars"].items()}
    order = ["version", "name", "description", "seed", "vars", "input", "model"]
    return {k: out[k] for k in order if k in out} | {k: v for k, v in out.items() if k not in order}


def _bodies(raw: Any, path: Path_, library: Library) -> Any:
    name = raw if isinstance(raw, str) else next(iter(raw)) if isinstance(raw, dict) and len(raw) == 1 else None
    if isinstance(name, str) and name in library.blocks:
        root = path + (f"<{name}>",)
        if root in library.instances:
            return _bodies(library.instances[root], root, library)
    if isinstance(raw, list):
        return [_bodies(v, path + (i,), library) for i, v in enumerate(raw)]
    if isinstance(raw, dict) and not ("repeat" in raw and "body" in raw):
        return {k: _bodies(v, path + (k,), library) for k, v in raw.items()}
    return raw


def _values(raw: Any, env: dict) -> Any:
    if isinstance(raw, str):
        try:
            result = evaluate(raw, env)
        except ExprError:
            return raw
        return result.value if isinstance(result, Evaluated) else result
    if isinstance(raw, list):
        return [_values(v, env) for v in raw]
    if isinstance(raw, dict):
        return {k: _values(v, env) for k, v in raw.items()}
    return raw


def note_use(problems: Problems, since: int, name: str, use_path: Path_) -> None:
    """Name the use in errors found inside a block's body (they point at the body, which every use shares)."""
    line, col = problems.source.locate(use_path)
    for i in range(since, len(problems.errors)):
        problem = problems.errors[i]
        inside = f"<{name}>" in problem.path or problem.path.startswith(f"blocks.{name}.")
        if inside and "(in block " not in problem.message:
            message = f"{problem.message} (in block {name}, used at line {line}, column {col})"
            problems.errors[i] = dataclasses.replace(problem, message=message)
