"""Stage 3b: each `blocks:` definition written once, as torchvision writes its blocks.

A block's code is generalised from its uses in the lowered model: the structure of the first use, every argument
replaced by the Python expression of the block's parameters that the spec wrote (found through the path each
expanded value came from), every size that shape inference filled by the expression that tracks the channels
(``in_channels``, then each layer's ``out_channels``), every block used inside by a call to that block's code,
and an `if:` by a Python ``if``. Each expression is evaluated again for every use and must give that use's value;
a definition whose uses cannot be written as one piece of code (a loop inside, a structure that differs) gets no
code, and the script writes its uses out as before.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from typing import Any

from compiler.common.literal import literal
from compiler.common.naming import Namespace
from compiler.front.expr import Evaluated, ExprError, evaluate, needs_evaluation, references
from compiler.lower.ir import (
    FLAG,
    Arg,
    BlockCallIR,
    BlockCodeIR,
    BlockIR,
    CallIR,
    CondIR,
    GraphIR,
    LayerIR,
    MergeIR,
    ModelIR,
    Node,
    PartIR,
    TensorIR,
    UseIR,
    call_key,
)

FUNCTIONS = {"min", "max", "sum", "len", "int", "round", "make_divisible"}  # builtins, and the copied helper
_REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
Instance = tuple[Any, UseIR]  # the node a use made (None: a merge part that passes its input), and the use


class Refused(Exception):
    """This definition's uses cannot be written as one piece of code."""


def plan_blocks(model: ModelIR, library: Any, taken: set[str]) -> dict[str, BlockCodeIR]:
    """The code of every block definition the model uses and that can be written once; ``taken``: names in use."""
    instances: dict[str, dict[tuple, Instance]] = {}
    _collect(model.root, instances)
    planner = _Planner(library, instances, Namespace(set(taken) | set(library.blocks)))
    for name in instances:
        planner.plan(name)
    plans = planner.plans
    return {name: plans[name] for name in library.blocks if plans.get(name) is not None}  # the spec's order


def _collect(node: Any, found: dict[str, dict[tuple, Instance]]) -> None:
    if getattr(node, "use", None) is not None:
        found.setdefault(node.use.block, {})[node.use.root] = (node, node.use)
    if isinstance(node, MergeIR):
        for part in node.parts:
            if part.use is not None and (part.spread or not part.nodes):
                found.setdefault(part.use.block, {})[part.use.root] = ("spread" if part.spread else None, part.use)
            for child in part.nodes:
                _collect(child, found)
    elif isinstance(node, (BlockIR, GraphIR)):
        for child in node.children:
            _collect(child, found)


def snake_case(name: str) -> str:
    """``InvertedResidual`` -> ``inverted_residual``, ``MBConv`` -> ``mb_conv``: the name of a block's function."""
    for word in ("ReLU", "GELU", "SiLU"):  # activations' names stay one word (`conv_bn_relu`)
        name = name.replace(word, word.capitalize())
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


@dataclasses.dataclass
class _Scope:
    """What a template is generalised against: each use's names, and the Python names of the block's own."""

    envs: list[dict]
    names: dict[str, str]  # spec name -> Python name (parameters, in_channels, local vars)
    channels: tuple[str, str] | None = None  # (Python, spec expression) of the channels flowing in
    seen: list[tuple[str, Any]] = dataclasses.field(default_factory=list)  # expressions written so far

    def subset(self, keep: list[int]) -> _Scope:
        return dataclasses.replace(self, envs=[self.envs[i] for i in keep])


class _Planner:
    def __init__(self, library: Any, instances: dict[str, dict[tuple, Instance]], namespace: Namespace):
        self.library = library
        self.instances = instances
        self.namespace = namespace
        self.plans: dict[str, BlockCodeIR | None] = {}

    def plan(self, name: str) -> BlockCodeIR | None:
        if name not in self.plans:
            self.plans[name] = None  # while planning: a use of itself (refused earlier) finds no code
            try:
                self.plans[name] = self.code(name, list(self.instances.get(name, {}).values()))
            except Refused:
                self.plans[name] = None
        return self.plans[name]

    def code(self, name: str, uses: list[Instance]) -> BlockCodeIR:
        block = self.library.blocks[name]
        if not uses or any(node == "spread" or "in_channels" not in use.env for node, use in uses):
            raise Refused
        params = Namespace({"self", "x", "nn", "torch", "layers", "OrderedDict", *FUNCTIONS})
        names = {"in_channels": params.name("in_channels")}
        names.update({p: params.name(p) for p in block.params})
        # required parameters first: a spec may list them in any order, a Python signature may not
        order = sorted(block.params, key=lambda p: not block.params[p].required)
        declared = [(names["in_channels"], None)]
        for p in order:
            param = block.params[p]
            declared.append((names[p], None if param.required else literal(param.default)))
        code = BlockCodeIR(name, declared, ["in_channels", *order], [])
        scope = _Scope([use.env for _, use in uses], names)
        for var, raw in block.local_vars.items():
            names[var] = params.name(var)
            code.local_vars.append((names[var], self.expression(raw, scope, [use.env[var] for _, use in uses])))
        nodes = [node for node, _ in uses]
        body = block.body
        if isinstance(body, dict) and "if" in body and set(body) <= {"if", "then", "else"}:
            self.branches(code, body, nodes, scope)
        else:
            code.branches.append((None, self.branch(code, nodes, scope, block.path + ("body",))))
        if code.merge is not None and code.branches == [(None, _call_of(code))]:
            code.branches = []  # the body is the merge: the class alone
        elif (merge := self.flag_merge(code, nodes, scope)) is not None:
            # torchvision's InvertedResidual: one class, the residual add switched by a flag set in __init__
            code.flag, code.merge, code.branches = code.branches[0][0], merge, []
        elif code.merge is None and len(code.branches) == 1 and isinstance(code.branches[0][1], BlockIR):
            code.class_name, code.sequential = name, True  # always the body's modules: an nn.Sequential subclass
        else:
            # a body that may be no module (an `if:` whose other side passes the input through: None), that
            # chooses between the block's merge class and another module, or that is one layer: a function
            code.function = self.namespace.name(snake_case(name))
        code.out_channels = self.out_channels(block, uses)
        return code

    def out_channels(self, block: Any, uses: list[Instance]) -> str | None:
        """The spec text of the channels every use puts out: a parameter, ``$in_channels`` or a value in the body
        over them (``$width * 4``); None when no one text gives every use's."""
        own = {"in_channels", *block.params}
        candidates = ["$in_channels", *(f"${p}" for p in block.params), *_texts(block.body)]
        for raw in candidates:
            refs = set(references(raw))
            if refs & set(block.local_vars) or not refs & own:
                continue
            if all(
                node is not None
                and getattr(node, "out_shape", None)
                and self.matches(raw, use.env, node.out_shape[0])
                or node is None
                and self.matches(raw, use.env, use.env.get("in_channels"))
                for node, use in uses
            ):
                return raw
        return None

    def branches(self, code: BlockCodeIR, body: dict, nodes: list, scope: _Scope) -> None:
        """A body that is an `if:`: a function whose ``if`` returns one branch's modules or the other's."""
        condition = self.expression(body["if"], scope, None)
        taken = [self.evaluate(body["if"], env) for env in scope.envs]
        for key, wanted in (("then", True), ("else", False)):
            keep = [i for i, value in enumerate(taken) if value is wanted]
            if key not in body:
                if keep:
                    raise Refused  # nothing chosen: the use is no module at all
                continue
            if not keep:
                raise Refused  # a branch no use takes: nothing to write it from
            path = self.library.blocks[code.block].path + ("body", key)
            template = self.branch(code, [nodes[i] for i in keep], scope.subset(keep), path)
            code.branches.append((condition if wanted else None, template))

    def branch(self, code: BlockCodeIR, nodes: list, scope: _Scope, origin: tuple) -> Any:
        """What one branch of the body returns, as a template (None: the input passes through)."""
        if all(node is None for node in nodes):
            return None
        if any(node is None for node in nodes):
            raise Refused
        if all(isinstance(node, MergeIR) for node in nodes):
            if code.merge is not None:
                raise Refused
            code.class_name = code.block
            code.merge, code.optional = self.merge(nodes, scope)
            return _call_of(code)
        if all(isinstance(node, GraphIR) for node in nodes):
            if code.merge is not None:
                raise Refused
            code.class_name = code.block
            code.merge = self.graph(nodes, scope)
            return _call_of(code)
        if all(isinstance(node, BlockIR) and not node.named for node in nodes):
            return self.items(nodes, scope, origin)
        scope.channels = (scope.names["in_channels"], "$in_channels")
        return self.node(nodes, scope, top=True)

    def flag_merge(self, code: BlockCodeIR, nodes: list, scope: _Scope) -> MergeIR | None:
        """The class's template when an `if:` body is torchvision's ``use_res_connect`` (``_flag_shape``): the
        `then` side's children, a layer whose arguments differ between the sides taking one text that gives
        every use's value, else ``then_value if self.use_res_connect else else_value`` (EfficientNet's
        stochastic depth, off without the add); None: the body does not fit."""
        shape = _flag_shape(code)
        if shape is None:
            return None
        merge, chosen = shape
        sides = [[i for i, n in enumerate(nodes) if isinstance(n, MergeIR) is wanted] for wanted in (True, False)]
        texts = {python: f"${name}" for name, python in scope.names.items()} | dict(scope.seen)
        joined = {}
        for index, (ours, theirs) in enumerate(zip(merge.children, chosen.children, strict=True)):
            if _code_key(ours) == _code_key(theirs):
                continue
            if not isinstance(ours, LayerIR) or not isinstance(theirs, LayerIR) or not _same_layer(ours, theirs):
                return None
            uses = [[(scope.envs[i], nodes[i].children[index].call) for i in side] for side in sides]
            keys = [*range(len(ours.call.args)), *ours.call.kwargs]
            args = [self.joined_arg(key, ours.call, theirs.call, uses, texts) for key in keys]
            call = dataclasses.replace(ours.call, args=args[: len(ours.call.args)])
            call.kwargs = dict(zip(ours.call.kwargs, args[len(ours.call.args) :], strict=True))
            joined[id(ours)] = dataclasses.replace(ours, call=call)
        parts = [dataclasses.replace(p, nodes=[joined.get(id(n), n) for n in p.nodes]) for p in merge.branches]
        return dataclasses.replace(merge, branches=parts)

    def joined_arg(self, key: int | str, ours: CallIR, theirs: CallIR, uses: list, texts: dict) -> Arg:
        """One argument of a layer on both sides of the flag: either side's text when it gives every use's value
        (``out``, which equals ``in_channels`` where the input is added), else the choice between them."""
        a, b = (call.args[key] if isinstance(key, int) else call.kwargs[key] for call in (ours, theirs))
        if a.source == b.source:
            return a
        for arg, side in ((b, uses[0]), (a, uses[1])):
            raw = texts.get(arg.source, _number(arg.source))
            if raw is not None and all(
                self.matches(raw, env, call.args[key].value if isinstance(key, int) else call.kwargs[key].value)
                for env, call in side
            ):
                return Arg(a.value, arg.source)
        test = ast.Attribute(ast.Name("self", ast.Load()), FLAG, ast.Load())
        body, orelse = (ast.parse(arg.source, mode="eval").body for arg in (a, b))
        return Arg(a.value, ast.unparse(ast.IfExp(test, body, orelse)))

    # templates ------------------------------------------------------------------------

    def node(self, nodes: list, scope: _Scope, top: bool = False) -> Any:
        """One node's template; ``top``: the nodes are the uses themselves (not a block used inside)."""
        first = nodes[0]
        if not top and first.use is not None:
            return self.call(nodes, first.name, scope)
        if any(type(node) is not type(first) or not (top or _same_name(node.name, first.name)) for node in nodes):
            raise Refused
        if isinstance(first, LayerIR):
            return self.layer(nodes, scope)
        if isinstance(first, BlockIR):
            if any(len(node.children) != len(first.children) or node.named != first.named for node in nodes):
                raise Refused
            children = [self.node([node.children[i] for node in nodes], scope) for i in range(len(first.children))]
            return dataclasses.replace(first, children=children, use=None)
        raise Refused  # a merge that is no block's body

    def items(self, nodes: list[BlockIR], scope: _Scope, origin: tuple) -> BlockIR:
        """A list body whose `{if: ...}` items exist in some uses only: each item once, conditional or not."""
        keyed = [self.item_keys(node, origin) for node in nodes]
        order = sorted({key for keys in keyed for key in keys}, key=str)
        order.sort(key=lambda k: k[0])
        scope.channels = (scope.names["in_channels"], "$in_channels")
        children: list[Any] = []
        for key in order:
            keep = [i for i, keys in enumerate(keyed) if key in keys]
            sub = scope.subset(keep)
            items = [keyed[i][key] for i in keep]
            if len(keep) == len(nodes) and key[1] is None:
                children.append(self.node(items, sub))
                scope.channels = sub.channels
                continue
            children.append(self.conditional(key, items, keep, scope, origin))
        return dataclasses.replace(nodes[0], children=children, use=None)

    def conditional(self, key: tuple, items: list, keep: list[int], scope: _Scope, origin: tuple) -> CondIR:
        raw = self.raw(origin + (key[0],))
        if key[1] is None or not isinstance(raw, dict) or "if" not in raw:
            raise Refused  # absent from some uses, yet not an `if:` item (a loop)
        wanted = key[1] == "then"
        for i, env in enumerate(scope.envs):
            if (self.evaluate(raw["if"], env) is wanted) != (i in keep):
                raise Refused
        condition = self.expression(raw["if"], scope, None)
        sub = scope.subset(keep)
        template = self.node(items, sub)
        if not _keeps_channels(items):
            scope.channels = None
        return CondIR(condition if wanted else f"not ({condition})", template)

    def item_keys(self, node: BlockIR, origin: tuple) -> dict[tuple, Any]:
        """Each child by the list item it came from: (index, None) or (index, 'then'/'else') for an `if:` item."""
        keys: dict[tuple, Any] = {}
        for child in node.children:
            path = child.use.root[:-1] if child.use is not None else child.yaml_path
            came = self.library.origins.get(path)
            if came is None or came[: len(origin)] != origin or len(came) <= len(origin):
                raise Refused
            rest = came[len(origin) :]
            key = (rest[0], rest[1] if len(rest) > 1 else None)
            if key in keys:
                raise Refused
            keys[key] = child
        return keys

    def layer(self, nodes: list[LayerIR], scope: _Scope) -> LayerIR:
        first = nodes[0]
        if any(
            len(n.call.args) != len(first.call.args) or list(n.call.kwargs) != list(first.call.kwargs) for n in nodes
        ):
            raise Refused
        args = [self.arg(nodes, i, scope) for i in range(len(first.call.args))]
        kwargs = {key: self.arg(nodes, key, scope) for key in first.call.kwargs}
        call = CallIR(first.entry, args, kwargs, first.call.yaml_path, first.call.arguments)
        self.track(nodes, [*args, *kwargs.values()], scope)
        return dataclasses.replace(first, call=call, use=None, out_shape=None, inferred=None)  # no one use's shape

    def arg(self, nodes: list[LayerIR], key: int | str, scope: _Scope) -> Arg:
        first = nodes[0]
        values = [(n.call.args[key] if isinstance(key, int) else n.call.kwargs[key]) for n in nodes]
        paths = [n.yaml_path + (n.type, key) for n in nodes]
        origins = {self.library.origins.get(p) for p in paths}
        if origins == {None} and key == 0 and len(first.call.args) == 1:  # the short form: `{Dropout: $p}`
            origins = {self.library.origins.get(n.yaml_path + (n.type,)) for n in nodes}
        name = key if isinstance(key, str) else _positional_name(first, key)
        if len(origins) == 1 and None not in origins:
            raw = self.raw(origins.pop())
            if isinstance(raw, str) and needs_evaluation(raw):
                text = self.expression(raw, scope, [v.value for v in values])
                scope.seen.append((text, raw))
                return Arg(values[0].value, text)
        elif name == first.entry.infer:
            found = self.search([v.value for v in values], scope)
            if found is not None:
                return Arg(values[0].value, found)
        if any(v.source != values[0].source for v in values):
            raise Refused
        return values[0]

    def call(self, nodes: list, name: str, scope: _Scope) -> BlockCallIR:
        """A block used inside: a call of its code, each argument the expression the spec passed."""
        block = nodes[0].use.block if nodes[0] is not None else None
        uses = [node.use for node in nodes]
        if any(use.block != block for use in uses):
            raise Refused
        inner = self.plan(block)
        if inner is None:
            raise Refused
        found = self.search([use.env.get("in_channels") for use in uses], scope)
        if found is None:
            raise Refused
        args = [found]
        texts: dict[str, tuple[str, Any]] = {}
        definition = self.library.blocks[block]
        python_name = dict(zip(inner.spec_params, (name for name, _ in inner.params)))  # its signature's names
        keywords = False  # after the first keyword argument, every argument is one
        for index, (p, param) in enumerate(definition.params.items()):
            where = [use.root[:-1] + (block, p) for use in uses]
            if not any(w in self.library.origins for w in where):
                where = [use.root[:-1] + (block, index) for use in uses]
            origins = {self.library.origins.get(w) for w in where}
            if origins == {None} and not param.required:
                continue  # the default
            raw = self.raw(origins.pop()) if len(origins) == 1 and None not in origins else None
            if raw is None:
                raise Refused
            text = self.expression(raw, scope, [use.env[p] for use in uses])
            texts[p] = (text, raw)
            scope.seen.append((text, raw))
            # positional while the spec's order is the signature's (required parameters come first there)
            keywords = keywords or not (param.required and len(args) == index + 1)
            args.append(f"{python_name[p]}={text}" if keywords else text)
        target = inner.class_name if inner.function is None else inner.function
        self.track_use(nodes, uses, texts, scope)
        return BlockCallIR(name, target, args, use=uses[0])

    def merge(self, nodes: list[MergeIR], scope: _Scope) -> tuple[MergeIR, tuple[str, ...]]:
        """The class of a merge body: every part generalised over the uses, a block part that may pass the
        input through (torchvision's ``downsample = None``) optional."""
        first = nodes[0]
        if any(n.op != first.op or n.dim != first.dim or _part_names(n) != _part_names(first) for n in nodes):
            raise Refused
        optional: list[str] = []
        scope.channels = (scope.names["in_channels"], "$in_channels")
        before = self.part([n.before for n in nodes], scope, optional)
        entry, merged = scope.channels, None
        branches = []
        for index in range(len(first.branches)):
            scope.channels = entry
            branches.append(self.part([n.branches[index] for n in nodes], scope, optional))
            merged = scope.channels if index == 0 else merged
        scope.channels = merged if first.op != "cat" else None
        then = self.part([n.then for n in nodes], scope, optional)
        template = dataclasses.replace(first, before=before, branches=branches, then=then, use=None)
        return template, tuple(optional)

    def graph(self, nodes: list[GraphIR], scope: _Scope) -> GraphIR:
        """The class of a graph body (§15): the same steps and tensors in every use, each child generalised.
        Channels are not tracked through a graph (its values need not be channels first)."""
        first = nodes[0]
        if any(_graph_key(n) != _graph_key(first) for n in nodes):
            raise Refused
        scope.channels = None
        steps = []
        for i, step in enumerate(first.steps):
            node = self.node([n.steps[i].node for n in nodes], scope) if step.node is not None else None
            steps.append(dataclasses.replace(step, node=node))
        tensors = [self.tensor([n.tensors[i] for n in nodes], scope) for i in range(len(first.tensors))]
        modules = [self.node([n.modules[i] for n in nodes], scope) for i in range(len(first.modules))]
        dropped = [self.node([n.dropped[i] for n in nodes], scope) for i in range(len(first.dropped))]
        return dataclasses.replace(first, steps=steps, tensors=tensors, modules=modules, dropped=dropped, use=None)

    def tensor(self, tensors: list[TensorIR], scope: _Scope) -> TensorIR:
        """A graph body's parameter or buffer: each size the expression the spec wrote (ConvNeXt's layer scale,
        ``[$in_channels, 1, 1]``), checked against every use's."""
        first = tensors[0]
        sizes = []
        for axis in range(len(first.shape)):
            values = [t.shape[axis] for t in tensors]
            origins = {self.library.origins.get(t.yaml_path + ("shape", axis)) for t in tensors}
            if len(origins) != 1 or None in origins:
                if any(v != values[0] for v in values):
                    raise Refused  # sizes that differ, written as one expression for the whole shape
                sizes.append(literal(values[0]))
                continue
            sizes.append(self.expression(self.raw(origins.pop()), scope, values))
        return dataclasses.replace(first, sizes=tuple(sizes))

    def part(self, parts: list, scope: _Scope, optional: list[str]) -> PartIR | None:
        """One part of a merge over the uses: a block used there is a call, an `if:` there an optional module."""
        if parts[0] is None:
            return None
        if parts[0].use is not None and not parts[0].spread:
            if any(p.use is None or p.use.block != parts[0].use.block for p in parts):
                raise Refused
            if any(not p.nodes for p in parts):
                optional.append(parts[0].name)
                if all(not p.nodes for p in parts) or not self.may_pass(parts[0].use.block):
                    raise Refused
            call = self.call([p.nodes[0] if p.nodes else _Absent(p.use) for p in parts], parts[0].name, scope)
            return dataclasses.replace(parts[0], nodes=[call], use=None)
        if any(not p.nodes for p in parts) and any(p.nodes for p in parts) and not parts[0].spread:
            return self.optional_part(parts, scope, optional)
        if any(p.spread != parts[0].spread or [c.name for c in p.nodes] != _names(parts[0]) for p in parts):
            raise Refused
        children = [self.node([p.nodes[i] for p in parts], scope) for i in range(len(parts[0].nodes))]
        return dataclasses.replace(parts[0], nodes=children, use=None)

    def optional_part(self, parts: list[PartIR], scope: _Scope, optional: list[str]) -> PartIR:
        """A part that is an `if:` with an `Identity` side: its module, or None (the input passes through)."""
        keep = [i for i, p in enumerate(parts) if p.nodes]
        if not keep or any(len(parts[i].nodes) != 1 for i in keep):
            raise Refused
        came = {self.library.origins.get(parts[i].yaml_path) for i in keep}
        origin = came.pop() if len(came) == 1 else None
        raw = self.raw(origin[:-1]) if origin is not None else None
        if not isinstance(raw, dict) or "if" not in raw or origin[-1] not in ("then", "else"):
            raise Refused
        wanted = origin[-1] == "then"
        for i, env in enumerate(scope.envs):
            if (self.evaluate(raw["if"], env) is wanted) != (i in keep):
                raise Refused
        condition = self.expression(raw["if"], scope, None)
        template = self.node([parts[i].nodes[0] for i in keep], scope.subset(keep))
        optional.append(parts[0].name)
        node = CondIR(condition if wanted else f"not ({condition})", template)
        return dataclasses.replace(parts[keep[0]], nodes=[node], use=None)

    def may_pass(self, block: str) -> bool:
        code = self.plan(block)
        return code is not None and any(template is None for _, template in code.branches)

    # channels -------------------------------------------------------------------------

    def track(self, nodes: list[LayerIR], args: list[Arg], scope: _Scope) -> None:
        """The channels after a layer: the argument that sets them (``out_channels``), else unchanged."""
        outs = [n.out_shape[0] if n.out_shape else None for n in nodes]
        ins = [n.in_shape[0] if n.in_shape else None for n in nodes]
        if outs == ins:
            return
        first = nodes[0]
        texts = {**{str(i): a.source for i, a in enumerate(args[: len(first.call.args)])}}
        texts.update({k: a.source for k, a in zip(first.call.kwargs, args[len(first.call.args) :], strict=True)})
        for key in sorted(first.call.arguments, key=lambda k: "out" not in k):
            values = [n.call.arguments.get(key) for n in nodes]
            if values == outs and key in first.call.kwargs:
                raw = self.library.origins.get(first.yaml_path + (first.type, key))
                scope.channels = (texts[key], self.raw(raw)) if raw is not None else None
                return
        scope.channels = None

    def track_use(self, nodes: list, uses: list[UseIR], texts: dict, scope: _Scope) -> None:
        """The channels after a block used inside: the argument its output's channels equal (``out``), else
        unchanged, else unknown (the next inferred size is then found among the block's own names)."""
        outs = [getattr(node, "out_shape", None) for node in nodes]
        if any(out is None for out in outs):
            scope.channels = None
            return
        channels = [out[0] for out in outs]
        if channels == [use.env.get("in_channels") for use in uses]:
            return
        for p in sorted(texts, key=lambda k: "out" not in k):
            if [use.env.get(p) for use in uses] == channels:
                scope.channels = texts[p]
                return
        scope.channels = None

    def search(self, values: list, scope: _Scope) -> str | None:
        """The Python expression for an inferred size: the tracked channels, else one of the block's names."""
        candidates = [scope.channels] if scope.channels is not None else []
        candidates += [(python, f"${name}") for name, python in scope.names.items()]
        candidates += scope.seen[::-1]
        for python, raw in candidates:
            if raw is not None and all(self.matches(raw, env, v) for env, v in zip(scope.envs, values, strict=True)):
                return python
        return None

    # expressions ------------------------------------------------------------------------

    def raw(self, origin: tuple | None) -> Any:
        """The spec's own text at ``origin`` (a block's body, its or the spec's `defaults:`)."""
        if origin is None:
            return None
        if origin[:1] == ("defaults",):
            data, rest = self.library.defaults.get(origin[1], ({}, ()))[0], origin[2:]
        elif origin[:1] == ("blocks",) and origin[1] in self.library.blocks:
            block = self.library.blocks[origin[1]]
            if origin[2:3] == ("defaults",):
                data, rest = block.defaults.get(origin[3], ({}, ()))[0], origin[4:]
            else:
                data, rest = {"body": block.body, "vars": block.local_vars}, origin[2:]
        else:
            return None
        for key in rest:
            if (
                isinstance(data, dict)
                and key in data
                or isinstance(data, list)
                and isinstance(key, int)
                and 0 <= key < len(data)
            ):
                data = data[key]
            else:
                return None
        return data

    def expression(self, raw: Any, scope: _Scope, values: list | None) -> str:
        """Python text of a spec value over the block's names, checked against each use's value."""
        if not isinstance(raw, str) or not needs_evaluation(raw):
            if values is not None and any(v != raw for v in values):
                raise Refused
            return literal(raw)
        if "$$" in raw:
            raise Refused
        refs = references(raw)
        if not set(refs) & set(scope.names) and values and all(_same(v, values[0]) for v in values):
            return literal(values[0])  # the spec's variables alone: one value for every use
        if any(name not in scope.names and not _plain(scope.envs[0].get(name)) for name in refs):
            raise Refused  # a table of the spec's: the script's copy may differ (its keys are text)
        try:
            tree = ast.parse(_REF.sub(lambda m: scope.names.get(m.group(1), m.group(1)), raw).strip(), mode="eval")
        except SyntaxError as err:
            raise Refused from err
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                raise Refused
            if isinstance(node, ast.Attribute):
                raise Refused
        if values is not None and not all(self.matches(raw, env, v) for env, v in zip(scope.envs, values, strict=True)):
            raise Refused
        return ast.unparse(_DropIntOfRound().visit(tree))

    def evaluate(self, raw: Any, env: dict) -> Any:
        if not isinstance(raw, str):
            return raw
        try:
            result = evaluate(raw, env)
        except ExprError as err:
            raise Refused from err
        return result.value if isinstance(result, Evaluated) else result

    def matches(self, raw: Any, env: dict, value: Any) -> bool:
        try:
            got = self.evaluate(raw, env)
        except Refused:
            return False
        return _same(got, value)


@dataclasses.dataclass
class _Absent:
    """A use that made no module (a merge part passing its input), where ``call`` reads a node's ``use``."""

    use: UseIR
    name: str = ""


def _flag_shape(code: BlockCodeIR) -> tuple[MergeIR, BlockIR] | None:
    """The `then` merge and the `else` block of an `if:` body that is torchvision's ``use_res_connect``:
    ``then`` adds the input (an ``Identity`` branch) to named branches, ``else`` is a named block of the same
    children (names and order; a layer's arguments may differ), so one class builds them once and its
    ``forward`` adds the input or not."""
    merge = code.merge
    if not isinstance(merge, MergeIR) or len(code.branches) != 2 or code.optional:
        return None
    (condition, then), (other, chosen) = code.branches
    if condition is None or other is not None or then != _call_of(code):
        return None
    if merge.op != "add" or merge.before is not None or merge.then is not None or len(merge.branches) < 2:
        return None
    if sum(not branch.nodes for branch in merge.branches) != 1:
        return None  # exactly one branch passes the input through
    if not isinstance(chosen, BlockIR) or not chosen.named or FLAG in {c.name for c in merge.children}:
        return None
    if [c.name for c in merge.children] != [c.name for c in chosen.children]:
        return None
    return merge, chosen


def _same_layer(a: LayerIR, b: LayerIR) -> bool:
    """The same layer with the same arguments given the same way (their values may differ)."""
    return all(f(a) == f(b) for f in (lambda n: (n.name, n.type), lambda n: (len(n.call.args), list(n.call.kwargs))))


def _number(source: str) -> Any:
    """A number the script writes as it is (``0.0``), else None."""
    try:
        value = ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _code_key(template: Any) -> Any:
    """What a child template's code depends on: its name and the Python text it is built from (not the use's
    values or paths, which differ between the uses each side of an `if:` was generalised from)."""
    if isinstance(template, LayerIR):
        args = tuple(a.source for a in template.call.args)
        kwargs = tuple((k, a.source) for k, a in template.call.kwargs.items())
        return ("layer", template.name, template.type, args, kwargs)
    if isinstance(template, BlockCallIR):
        return ("call", template.name, template.target, tuple(template.args), template.optional)
    if isinstance(template, CondIR):
        return ("if", template.condition, _code_key(template.node))
    if isinstance(template, BlockIR):
        return ("block", template.name, template.named, tuple(_code_key(c) for c in template.children))
    return ("other", id(template))  # a merge or graph inside: never the same code


def _call_of(code: BlockCodeIR) -> BlockCallIR:
    return BlockCallIR("", code.block, [name for name, _ in code.params])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _texts(raw: Any) -> list[str]:
    """Every expression written in a block's body, in order."""
    if isinstance(raw, str):
        return [raw] if needs_evaluation(raw) else []
    if isinstance(raw, list):
        return [t for v in raw for t in _texts(v)]
    if isinstance(raw, dict):
        return [t for v in raw.values() for t in _texts(v)]
    return []


def _plain(value: Any) -> bool:
    """A value the script's variables hold as the spec does: numbers, text, lists of them."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, (int, float, str, bool))


def _positional_name(layer: LayerIR, index: int) -> str | None:
    names = [name for name in layer.call.arguments]
    return names[index] if index < len(names) else None


def _graph_key(graph: GraphIR) -> tuple:
    """What every use of a graph body must share: its steps, tensors (their sizes may differ: ``tensor``) and
    output."""
    tensors = tuple((t.name, len(t.shape), t.dtype, t.buffer, call_key(t.init)) for t in graph.tensors)
    return graph.shape_key[3:] + (tensors,)


def _part_names(merge: MergeIR) -> tuple:
    return tuple((p.name, p.spread) for p in (merge.before, *merge.branches, merge.then) if p is not None) + (
        merge.before is None,
        merge.then is None,
    )


def _names(part: PartIR) -> list[str]:
    return [node.name for node in part.nodes]


def _keeps_channels(nodes: list[Node]) -> bool:
    return all(n.in_shape is not None and n.out_shape is not None and n.in_shape[0] == n.out_shape[0] for n in nodes)


def _same_name(a: str, b: str) -> bool:
    """Children of a list are numbered by position: an optional item before them shifts their numbers."""
    return a == b or (a.isdigit() and b.isdigit())


class _DropIntOfRound(ast.NodeTransformer):
    """``int(round(x))`` is ``round(x)``: one-argument ``round`` already returns an int (ruff's RUF046)."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        inner = node.args[0] if len(node.args) == 1 and not node.keywords else None
        if _is_call(node, "int") and isinstance(inner, ast.Call) and _is_call(inner, "round") and len(inner.args) == 1:
            return inner if not inner.keywords else node
        return node


def _is_call(node: ast.Call, name: str) -> bool:
    return isinstance(node.func, ast.Name) and node.func.id == name
