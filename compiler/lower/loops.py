"""Stage 3c: the spec's loops written back as Python ``for`` loops, as torchvision's ``_make_layer`` builds its stages.

Expansion copies a loop once per iteration (``Library.loops`` keeps each copy's names and children). Where every
iteration is the same code over the loop's values, the script writes the loop instead of its copies: the loop's
own `for`/`repeat` as a ``for`` statement, each block use in its body as one call whose arguments are the spec's
own expressions (``64 * 2**k``), and the channels flowing from one block to the next as a running ``in_channels``
(torchvision's ``self.inplanes``), updated after each call by the block's output channels (``$width * 4``).

Only loops at the top of ``build_model`` are written so: in the root (named children, ``layer{k + 1}``) or in a
list the root names (``features``). Every value is checked against every copy; a loop whose copies differ in
anything the code could not say (an `if:` item, a layer, a block with no code) keeps its copies written out.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from typing import Any

from compiler.common.literal import literal
from compiler.common.naming import Namespace
from compiler.front.expand import Library, LoopRun, is_loop
from compiler.front.expr import Evaluated, ExprError, evaluate, needs_evaluation, references
from compiler.lower.blocks import FUNCTIONS, _DropIntOfRound, _plain, _same
from compiler.lower.ir import BlockIR, ForIR, LoopCodeIR, LoopStepIR, ModelIR

_PART = re.compile(r"\{([^{}]*)\}")
_REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_POWER = re.compile(r"(?<![\w.)\]])([A-Za-z_]\w*|\d+(?:\.\d+)?) \*\* ([A-Za-z_]\w*|\d+(?:\.\d+)?)(?![\w.(\[])")


class Refused(Exception):
    """This loop's copies cannot be written as one loop."""


def plan_loops(model: ModelIR, library: Library, taken: set[str]) -> dict[tuple, list[LoopCodeIR]]:
    """The loops at the top of ``build_model`` written as code, by container; ``taken``: the script's names."""
    root = model.root
    if not isinstance(root, BlockIR) or not root.named or not library.loops or "in_channels" in taken:
        return {}
    containers = [root] + [c for c in root.children if isinstance(c, BlockIR) and not c.named and c.use is None]
    namespace = Namespace(set(taken) | {"in_channels", "stages", "blocks", "stage"})
    found: dict[tuple, list[LoopCodeIR]] = {}
    for container in containers:
        for run in _outer_runs(library.loops, container.yaml_path):
            try:
                code = _Writer(model, library, container, namespace).loop_code(run)
            except Refused:
                continue
            found.setdefault(container.yaml_path, []).append(code)
    return found


def _outer_runs(runs: list[LoopRun], container: tuple) -> list[LoopRun]:
    """The loops copied straight into ``container`` (not those inside another of its loops)."""
    mine = [run for run in runs if run.container == container and run.envs]
    origins = {run.origin for run in mine}
    return [run for run in mine if not any(run.origin[: len(o)] == o and run.origin != o for o in origins)]


@dataclasses.dataclass
class _State:
    channels: Any = None  # the running in_channels' value, as the script would hold it at this point
    first: Any = None  # its first value


class _Writer:
    def __init__(self, model: ModelIR, library: Library, container: BlockIR, namespace: Namespace):
        self.model = model
        self.library = library
        self.container = container
        self.namespace = namespace
        self.names: dict[str, str] = {}  # loop variable -> its Python name (the same: a clash refuses)
        self.channels = "in_channels"
        self.checks: dict[int, tuple[str, dict, str]] = {}  # a call's block, its spec arguments, its output channels

    def loop_code(self, run: LoopRun) -> LoopCodeIR:
        children = self.container.children
        named = self.container.named
        if named:
            made = [name for names in run.spans for name in names]
            positions = [i for i, child in enumerate(children) if child.name in made]
        else:
            positions = list(range(run.spans[0][0], run.spans[-1][1]))
        if not positions or positions != list(range(positions[0], positions[0] + len(positions))):
            raise Refused
        loop = self.loop(run.raw, run.origin, named)
        state = _State()
        if named:
            by_name = {child.name: child for child in children}
            for env, names in zip(run.envs, run.spans, strict=True):
                if len(names) != 1 or names[0] not in by_name:  # a copy the model no longer holds by that name
                    raise Refused
                self.match_step(loop.body[0], by_name[names[0]], env, state)
        else:
            self.match_run(loop, run, self.container.yaml_path, children, state)
        covered = [children[i].name for i in positions]
        first = None if state.first is None else literal(state.first)
        return LoopCodeIR(self.container.yaml_path, covered, loop, first)

    # the code, from the spec's text ------------------------------------------------------

    def loop(self, raw: dict, origin: tuple, named: bool) -> ForIR:
        names = raw.get("for", [])
        names = list(names) if isinstance(names, list) else [names]
        index = raw.get("as")
        for name in [*names, *([index] if index else [])]:
            if name in self.names or name in self.namespace.taken or not str(name).isidentifier():
                raise Refused  # a loop variable would shadow a name the script uses
            self.names[name] = name
        if "repeat" in raw:
            iterable, targets = f"range({self.python(raw['repeat'])})", index or "_"
        else:
            rows = self.python(raw["in"])
            targets = ", ".join(names) if len(names) > 1 or not index else names[0]
            if index:
                iterable, targets = (
                    f"enumerate({rows})",
                    f"{index}, ({targets})" if len(names) > 1 else f"{index}, {targets}",
                )
            else:
                iterable = rows
        body = raw["body"]
        if named:
            pattern = raw.get("name")
            key = origin[-1]
            pattern = key if isinstance(key, str) and "{" in key else pattern
            if not isinstance(pattern, str) or "{" not in pattern or isinstance(body, dict) and _pattern_keys(body):
                raise Refused
            self.f_string_parts(pattern)
            step = self.step(body, origin + ("body",))
            return ForIR(targets, iterable, [step], "f" + literal(pattern), origin)
        items = body if isinstance(body, list) else [body]
        where = [origin + ("body", i) for i in range(len(items))] if isinstance(body, list) else [origin + ("body",)]
        return ForIR(
            targets, iterable, [self.item(item, at) for item, at in zip(items, where, strict=True)], None, origin
        )

    def f_string_parts(self, pattern: str) -> None:
        """Each `{...}` of a name pattern must be Python over the loop's names (an f-string gives the same)."""
        for part in _PART.findall(pattern):
            try:
                tree = ast.parse(part.strip(), mode="eval")
            except SyntaxError as err:
                raise Refused from err
            used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
            if not used <= set(self.names) or any(isinstance(n, (ast.Call, ast.Attribute)) for n in ast.walk(tree)):
                raise Refused

    def item(self, raw: Any, origin: tuple) -> Any:
        if isinstance(raw, dict) and is_loop(raw):  # (a plain `repeat` is §2's: one Sequential, refused below)
            if "name" in raw:
                raise Refused
            return self.loop(raw, origin, False)  # a loop in the list: its copies join the list
        return self.step(raw, origin)

    def step(self, raw: Any, origin: tuple) -> LoopStepIR:
        """One child: a block use (a call), or a nested list (an ``nn.Sequential`` of its statements)."""
        if isinstance(raw, list):
            items = [self.item(item, origin + (i,)) for i, item in enumerate(raw)]
            return LoopStepIR(items=items)
        if isinstance(raw, str):
            return self.call(raw, None)
        if not isinstance(raw, dict) or len(raw) != 1 or not isinstance(next(iter(raw)), str):
            raise Refused  # an `if:` item, a named block: its copies may differ
        name, args = next(iter(raw.items()))
        return self.call(name, args)

    def call(self, name: str, args: Any) -> LoopStepIR:
        block = self.block_of(name)
        code = self.model.blocks.get(block)
        definition = self.library.blocks.get(block)
        if code is None or definition is None or code.out_channels is None:
            raise Refused
        if isinstance(args, list):
            args = dict(zip(definition.params, args, strict=False))
        args = args or {}
        if not isinstance(args, dict) or set(args) - set(definition.params):
            raise Refused
        texts, keyword = [self.channels], False
        spec = {"in_channels": "$in_channels"}  # each parameter's spec text, for the output channels' text
        for (python, default), p in zip(code.params[1:], code.spec_params[1:], strict=True):
            if p not in args:
                if default is None:
                    raise Refused
                spec[p] = literal(definition.params[p].default)
                keyword = True  # the next ones by name: this place is left out
                continue
            text = self.python(args[p])
            keyword = keyword or default is not None  # no positional argument after a keyword one
            texts.append(f"{python}={text}" if keyword else text)
            spec[p] = args[p] if isinstance(args[p], str) and needs_evaluation(args[p]) else literal(args[p])
        out = _REF.sub(lambda m: f"({spec[m.group(1)]})" if m.group(1) in spec else m.group(0), code.out_channels)
        target = code.class_name if code.function is None else code.function
        channels = self.python(out)
        step = LoopStepIR(call=target, args=texts, channels=None if channels == self.channels else channels)
        self.checks[id(step)] = (block, args, out)
        return step

    def block_of(self, name: str) -> str:
        if name.startswith("$") and name[1:].isidentifier():
            value = self.library.variables.get(name[1:])
            if not isinstance(value, str):
                raise Refused
            return value
        if name not in self.library.blocks:
            raise Refused  # a layer: its inferred sizes are not tracked here
        return name

    def python(self, raw: Any) -> str:
        """Python text of a spec value: loop variables and the spec's (plain) variables by name."""
        if not isinstance(raw, str) or not needs_evaluation(raw):
            return literal(raw)
        if "$$" in raw:
            raise Refused
        for name in references(raw):
            if name == "in_channels":
                continue
            if name not in self.names and not _plain(self.library.variables.get(name)):
                raise Refused  # a table of the spec's: the script's copy may differ (its keys are text)
        text = _REF.sub(lambda m: self.channels if m.group(1) == "in_channels" else m.group(1), raw)
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as err:
            raise Refused from err
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                raise Refused
            if isinstance(node, ast.Attribute):
                raise Refused
        return _POWER.sub(r"\1**\2", ast.unparse(_DropIntOfRound().visit(tree)))

    # checked against every copy ---------------------------------------------------------

    def match_run(self, loop: ForIR, run: LoopRun, container: tuple, children: list, state: _State) -> None:
        for env, (start, stop) in zip(run.envs, run.spans, strict=True):
            end = self.match_items(loop.body, container, children, start, env, state)
            if end != stop:
                raise Refused

    def match_items(self, items: list, container: tuple, children: list, at: int, env: dict, state: _State) -> int:
        for item in items:
            if isinstance(item, ForIR):  # a loop in the list: its run in this container that starts here
                runs = [r for r in self.library.loops if r.origin == item.yaml_path and r.container == container]
                run = next((r for r in runs if r.spans and r.spans[0][0] == at), None)
                if run is None:
                    raise Refused  # no iterations here (an empty loop), or copies elsewhere
                self.match_run(item, run, container, children, state)
                at = run.spans[-1][1]
                continue
            if at >= len(children):
                raise Refused
            self.match_step(item, children[at], env, state)
            at += 1
        return at

    def match_step(self, step: LoopStepIR, child: Any, env: dict, state: _State) -> None:
        if step.items is not None:
            if not isinstance(child, BlockIR) or child.named or child.use is not None:
                raise Refused
            end = self.match_items(step.items, child.yaml_path, child.children, 0, env, state)
            if end != len(child.children):
                raise Refused
            return
        block, args, out_text = self.checks[id(step)]
        use = getattr(child, "use", None)
        if use is None or use.block != block or child.out_shape is None:
            raise Refused
        if state.first is None:
            state.first = state.channels = use.env.get("in_channels")
        if use.env.get("in_channels") != state.channels:
            raise Refused
        here = {**env, "in_channels": state.channels}
        for p, raw in args.items():
            if not _same(_value(raw, here), use.env.get(p)):
                raise Refused
        out = _value(out_text, here)
        if not _same(out, child.out_shape[0]):
            raise Refused
        state.channels = out


def _value(raw: Any, env: dict) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        result = evaluate(raw, env)
    except ExprError as err:
        raise Refused from err
    return result.value if isinstance(result, Evaluated) else result


def _pattern_keys(body: dict) -> bool:
    return bool(body) and all(isinstance(k, str) and "{" in k for k in body)
