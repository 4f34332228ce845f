"""The block form of a decompiled tree (``specc import`` without ``--flat``): repeated structure as blocks.

Subtrees that are one module each (a merge block, a ``Sequential``, a traced module) and are equal up to their
layers' arguments -- the same layer types, child names and merge shape -- become one block definition; the
arguments that differ become its parameters (one parameter for arguments that are equal in every instance, a
multiple of another where they are, ``out: $width * 4``). Merges that differ only in a branch that some
instances leave as their input (torchvision's ``downsample``) join as one block with a ``bool`` parameter and an
``if:`` part. Each pass takes the outermost repeated subtrees whose block form is shorter; later passes find
repeats inside the bodies (a squeeze-excitation inside every MBConv). The caller verifies the written spec.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections import Counter
from typing import Any

from compiler.interop.nodes import Block, BlockDef, Cond, Dataflow, Layer, Loop, Merge, Repeat, Use

WILD = object()  # an instance that lacks the part: any value fits
_SHORT_NAMES = {"out_channels": "out", "out_features": "out", "kernel_size": "kernel", "num_features": "features"}


# --------------------------------------------------------------------------- walking the tree


def with_children(node: Any, change: Any) -> Any:
    """``node`` with ``change`` applied to each direct child node."""
    if isinstance(node, Block):
        return dataclasses.replace(node, items=tuple((n, change(c)) for n, c in node.items))
    if isinstance(node, Merge):
        return dataclasses.replace(
            node,
            before=tuple((n, change(c)) for n, c in node.before),
            branches=tuple((n, None if c is None else change(c)) for n, c in node.branches),
            then=tuple((n, change(c)) for n, c in node.then),
        )
    if isinstance(node, Cond):
        other = None if node.otherwise is None else change(node.otherwise)
        return dataclasses.replace(node, then=change(node.then), otherwise=other)
    if isinstance(node, Loop):
        return dataclasses.replace(node, body=change(node.body))
    if isinstance(node, Repeat):
        return dataclasses.replace(node, body=tuple(change(c) for c in node.body))
    if isinstance(node, Dataflow):
        steps = tuple(s if s.node is None else dataclasses.replace(s, node=change(s.node)) for s in node.steps)
        return dataclasses.replace(node, steps=steps, modules=tuple((n, change(c)) for n, c in node.modules))
    return node


def children(node: Any) -> list[Any]:
    found: list[Any] = []
    with_children(node, lambda c: found.append(c) or c)
    return found


def walk(node: Any):
    """Every node below and including ``node``, parents first."""
    yield node
    for child in children(node):
        yield from walk(child)


def shape(node: Any) -> Any:
    """What two instances of one block share: layer types, child names, merge ops; not the arguments."""
    if isinstance(node, Layer):
        return ("L", node.type)
    if isinstance(node, Use):
        return ("U", node.name)
    if isinstance(node, Block):
        return ("B", node.named, tuple((n if node.named else "", shape(c)) for n, c in node.items))
    if isinstance(node, Merge):
        return ("M", *_merge_frame(node), tuple(_branch_shape(n, c) for n, c in node.branches))
    if isinstance(node, Repeat):
        return ("R", node.times, tuple(shape(c) for c in node.body))
    if isinstance(node, Cond):  # (a block made in an earlier pass holds it)
        return ("C", shape(node.then), None if node.otherwise is None else shape(node.otherwise))
    if isinstance(node, Dataflow):  # the same steps on the same names; tensor sizes may differ
        tensors = tuple((t.name, t.buffer, t.dtype, len(t.shape)) for t in node.tensors)
        steps = tuple(dataclasses.replace(s, node=None if s.node is None else shape(s.node)) for s in node.steps)
        modules = tuple((n, shape(c)) for n, c in node.modules)
        outputs = (node.output, node.output_keys, node.eval_output)
        return ("G", node.class_name, node.inputs, tensors, modules, steps, outputs)
    return ("?", repr(node))


def _merge_frame(node: Merge) -> tuple:
    before = tuple((n, shape(c)) for n, c in node.before)
    return node.op, node.dim, node.class_name, before, tuple((n, shape(c)) for n, c in node.then)


def _branch_shape(name: str, part: Any) -> Any:
    return ("I",) if _identity(part) else (name, shape(part))


def _identity(part: Any) -> bool:
    return part is None or isinstance(part, Layer) and part.type == "Identity"


def leaves(node: Any) -> int:
    return sum(1 for n in walk(node) if isinstance(n, (Layer, Use)))


# --------------------------------------------------------------------------- groups of instances


def _joined(shapes: list[Any]) -> dict[Any, Any]:
    """Each merge shape -> the shape of its group: merges that differ only where some leave a branch as their
    input (an identity) join, when every other branch position holds one and the same part."""
    frames: dict[Any, list[Any]] = {}
    for s in shapes:
        if s[0] == "M":
            frames.setdefault((s[1:-1], len(s[-1])), []).append(s)
    joined = {s: s for s in shapes}
    for members in frames.values():
        positions = list(zip(*(s[-1] for s in members)))
        parts = [{p for p in column if p != ("I",)} for column in positions]
        if len(members) > 1 and all(len(p) <= 1 for p in parts):
            key = (*members[0][:-1], tuple(("?", *p) if len(p) else ("I",) for p in parts))
            joined.update({s: key for s in members})
    return joined


def candidates(root: Any) -> list[Any]:
    """The nodes that may become block uses: each one module (never a merge's spread part)."""
    return [n for n in walk(root) if isinstance(n, (Block, Merge, Dataflow)) and n.origin and leaves(n) >= 1]


def repeated_groups(roots: list[Any], lines: Any) -> list[list[Any]]:
    """Outermost subtrees, repeated, whose block form is shorter than writing each out: groups of instances.
    A group whose instances hold a part that repeats outside them too waits: that part becomes a block first
    (a squeeze-excitation in two kinds of MBConv), and the group is found again, using it, in a later pass."""
    nodes = [n for root in roots for n in candidates(root)]
    joined = _joined(list({shape(n): None for n in nodes}))
    counts = Counter(joined[shape(n)] for n in nodes)
    every: dict[Any, list[Any]] = {}
    for n in nodes:
        every.setdefault(joined[shape(n)], []).append(n)
    pays = {key for key, group in every.items() if len(group) >= 2 and _worth(group, lines)}
    within: dict[Any, Counter] = {}
    for n in nodes:
        within.setdefault(joined[shape(n)], Counter()).update(joined[shape(d)] for d in candidates(n)[1:])
    waits = {key for key, inner in within.items() if any(counts[k] > c and k in pays for k, c in inner.items())}
    taken: dict[Any, list[Any]] = {}

    def visit(node: Any, top: bool) -> None:
        key = joined.get(shape(node)) if isinstance(node, (Block, Merge, Dataflow)) and node.origin else None
        if not top and key is not None and counts[key] >= 2 and key not in waits:
            taken.setdefault(key, []).append(node)
            return
        for child in children(node):
            visit(child, False)

    for root in roots:
        visit(root, True)
    return [group for group in taken.values() if len(group) >= 2 and _worth(group, lines)]


def _worth(group: list[Any], lines: Any) -> bool:
    """A block pays when the instances written out take more lines than one body, its header and a line each."""
    written = sum(lines(n) for n in group)
    return written > max(lines(n) for n in group) + 3 + len(group)


# --------------------------------------------------------------------------- a block from its instances


class Template:
    """One block's body built from its instances, with a slot per argument that differs between them."""

    def __init__(self, signature_of: Any):
        self.signature_of = signature_of
        self.slots: list[list[Any]] = []  # per slot: its value in each instance (WILD where absent)
        self.hints: list[tuple[str, str]] = []  # per slot: (its layer's name, its argument's short name)

    def slot(self, values: list[Any], hint: tuple[str, str]) -> Any:
        known = [v for v in values if v is not WILD]
        if all(_key(v) == _key(known[0]) for v in known) and not (isinstance(known[0], str) and "$" in known[0]):
            return known[0]  # (an expression names the enclosing block's parameters: passed in, never copied)
        self.slots.append(values)
        self.hints.append(hint)
        return _Slot(len(self.slots) - 1)

    def build(self, nodes: list[Any], where: str = "") -> Any:
        first = next(n for n in nodes if n is not None)
        if isinstance(first, Layer):
            return self.layer(nodes, first, where)
        if isinstance(first, Use):
            args = [(k, self.slot([_arg(n, k) for n in nodes], (where, k))) for k, _ in first.args]
            return Use(first.name, tuple(args))
        if isinstance(first, Block):
            items = [
                (n, self.build([m.items[i][1] if m else None for m in nodes], n))
                for i, (n, _) in enumerate(first.items)
            ]
            return Block(tuple(items), first.named, first.origin)
        if isinstance(first, Cond):
            cond = self.slot([WILD if n is None else n.cond for n in nodes], (where, "flag"))
            other = None if first.otherwise is None else self.build([n and n.otherwise for n in nodes], where)
            return Cond(cond, self.build([n and n.then for n in nodes], where), other)
        if isinstance(first, Repeat):
            return Repeat(
                first.times,
                tuple(self.build([m.body[i] if m else None for m in nodes]) for i in range(len(first.body))),
            )
        if isinstance(first, Dataflow):
            return self.dataflow(nodes, first)
        return self.merge(nodes, first)

    def dataflow(self, nodes: list[Any], first: Dataflow) -> Dataflow:
        """A graph node's template: each child built from the instances' children, then each tensor size a slot
        (after the layers, so that a size equal to a layer's argument shares its parameter and name)."""
        modules = tuple(
            (name, self.build([n.modules[i][1] if n else None for n in nodes], name))
            for i, (name, _) in enumerate(first.modules)
        )
        steps = []
        for i, step in enumerate(first.steps):
            if step.node is not None:
                built = self.build([n.steps[i].node if n else None for n in nodes], step.name)
                step = dataclasses.replace(step, node=built)
            steps.append(step)
        tensors = []
        for i, tensor in enumerate(first.tensors):
            sizes = tuple(
                self.slot([WILD if n is None else n.tensors[i].shape[k] for n in nodes], (tensor.name, "size"))
                for k in range(len(tensor.shape))
            )
            tensors.append(dataclasses.replace(tensor, shape=sizes))
        return dataclasses.replace(first, steps=tuple(steps), tensors=tuple(tensors), modules=modules)

    def layer(self, nodes: list[Any], first: Layer, where: str) -> Layer:
        signature = self.signature_of(first.type)
        keys = {k for n in nodes if n is not None for k, _ in n.args}
        order = [k for k in signature.parameters if k in keys] if signature else sorted(keys)
        args = []
        for k in order:
            default = signature.parameters[k].default if signature else inspect.Parameter.empty
            values = [WILD if n is None else dict(n.args).get(k, default) for n in nodes]
            value = self.slot(values, (where, _SHORT_NAMES.get(k, k)))
            if isinstance(value, _Slot) or default is inspect.Parameter.empty or _key(value) != _key(default):
                args.append((k, value))
        same = all(n is None or n.args == first.args for n in nodes)
        return Layer(first.type, tuple(args), first.short and same)

    def merge(self, nodes: list[Any], first: Merge) -> Merge:
        def parts(field: str) -> tuple:
            own = getattr(first, field)
            return tuple(
                (n, self.build([getattr(m, field)[i][1] if m else None for m in nodes], n))
                for i, (n, _) in enumerate(own)
            )

        branches = []
        for i in range(len(first.branches)):
            column = [m.branches[i] if m else None for m in nodes]
            present = [None if b is None or _identity(b[1]) else b[1] for b in column]
            named = next((b for b in column if b is not None and not _identity(b[1])), column[0])
            if all(p is not None for p, b in zip(present, column) if b is not None):
                branches.append((named[0], self.build(present, named[0])))
            elif all(p is None for p in present):
                branches.append(named)
            else:
                flag = self.slot(
                    [WILD if b is None else p is not None for p, b in zip(present, column)], ("", named[0])
                )
                branches.append((named[0], Cond(flag, self.build(present, named[0]), Layer("Identity"))))
        return dataclasses.replace(first, before=parts("before"), branches=tuple(branches), then=parts("then"))


@dataclasses.dataclass(frozen=True)
class _Slot:
    index: int


def _arg(node: Any, key: str) -> Any:
    return WILD if node is None else dict(node.args).get(key, WILD)


def _key(value: Any) -> str:
    """Equality that tells ``1``, ``1.0`` and ``True`` apart (a rebuilt layer would differ)."""
    return repr(value)


# --------------------------------------------------------------------------- parameters


class _Params:
    """A template's slots as parameters: equal slots share one, a multiple of another is written as one."""

    def __init__(self, count: int):
        self.count = count
        self.names: list[str] = []
        self.values: list[list[Any]] = []
        self.written: list[Any] = []  # per slot: its text in the body

    def add(self, values: list[Any], hint: tuple[str, str]) -> None:
        for name, known in zip(self.names, self.values):
            if _fits(values, known):
                known[:] = [v if k is WILD else k for k, v in zip(known, values)]
                self.written.append(f"${name}")
                return
        for name, known in zip(self.names, self.values):
            ratio = _multiple(values, known)
            if ratio:
                self.written.append(ratio.replace("$", f"${name}"))
                return
        self.names.append(_fresh(hint, self.names))
        self.values.append(list(values))
        self.written.append(f"${self.names[-1]}")

    def declared(self) -> tuple[tuple[str, str], ...]:
        return tuple((name, _type_of(values)) for name, values in zip(self.names, self.values))

    def args(self, instance: int) -> tuple[tuple[str, Any], ...]:
        out = []
        for name, values in zip(self.names, self.values):
            value = values[instance]
            if value is WILD:  # the instance lacks every part the parameter reaches: any value does
                value = Counter(_key(v) for v in values if v is not WILD).most_common(1)[0][0]
                value = next(v for v in values if v is not WILD and _key(v) == value)
            out.append((name, value))
        return tuple(out)


def _fits(a: list[Any], b: list[Any]) -> bool:
    return all(x is WILD or y is WILD or _key(x) == _key(y) for x, y in zip(a, b))


def _multiple(values: list[Any], base: list[Any]) -> str:
    """``"$ * 4"`` or ``"$ // 2"`` where each value is that multiple of the base's (integers), else ``""``."""
    pairs = [(v, b) for v, b in zip(values, base) if v is not WILD and b is not WILD]
    if not pairs or not all(_integer(v) and _integer(b) and v > 0 and b > 0 for v, b in pairs):
        return ""
    v, b = pairs[0]
    if v % b == 0 and all(x == y * (v // b) for x, y in pairs):
        return f"$ * {v // b}"
    if b % v == 0 and all(x * (b // v) == y and y // (b // v) == x for x, y in pairs):
        return f"$ // {b // v}"
    return ""


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_of(values: list[Any]) -> str:
    known = [v for v in values if v is not WILD and not (isinstance(v, str) and "$" in v)]
    kinds = {"bool" if isinstance(v, bool) else type(v).__name__ for v in known}
    if kinds <= {"int", "float"} and kinds:
        return "float" if "float" in kinds else "int"
    if len(kinds) == 1 and next(iter(kinds)) in ("bool", "str", "list"):
        return next(iter(kinds))
    return "any"


def _fresh(hint: tuple[str, str], taken: list[str]) -> str:
    """A parameter name: the argument's short name, else with its layer's name (``conv3_out``), else numbered."""
    where, short = hint
    short = short if short.isidentifier() else "p"
    for name in (short, f"{where}_{short}" if where else ""):
        if name.isidentifier() and name not in taken and name not in ("in_channels", "in_shape"):
            return name
    i = 2
    while f"{short}{i}" in taken:
        i += 1
    return f"{short}{i}"


def _written(node: Any, text: list[Any]) -> Any:
    """The template with each slot replaced by its text (a parameter, or an expression over one)."""
    if isinstance(node, _Slot):
        return text[node.index]
    if isinstance(node, Layer):
        return dataclasses.replace(node, args=tuple((k, _written(v, text)) for k, v in node.args))
    if isinstance(node, Use):
        return dataclasses.replace(node, args=tuple((k, _written(v, text)) for k, v in node.args))
    if isinstance(node, Cond):
        return Cond(_written(node.cond, text), _written(node.then, text), _written(node.otherwise, text))
    if isinstance(node, Dataflow):
        tensors = tuple(dataclasses.replace(t, shape=tuple(_written(d, text) for d in t.shape)) for t in node.tensors)
        node = dataclasses.replace(node, tensors=tensors)
    return with_children(node, lambda c: _written(c, text))


# --------------------------------------------------------------------------- passes


def fold_blocks(root: Any, lines: Any, signature_of: Any, reserved: set[str]) -> tuple[list[BlockDef], Any]:
    """Block definitions for the repeated structure of ``root`` and ``root`` using them (passes until none is
    found: each pass also looks inside the bodies made so far)."""
    blocks: list[BlockDef] = []
    for _ in range(8):
        groups = repeated_groups([root, *(b.body for b in blocks)], lines)
        if not groups:
            break
        uses: dict[int, Use] = {}
        for group in groups:
            name = _block_name(group, {b.name for b in blocks} | reserved)
            definition, made = _define(name, group, signature_of)
            blocks.append(definition)
            uses.update({id(node): use for node, use in zip(group, made)})
        root = _substitute(root, uses)
        blocks = [dataclasses.replace(b, body=_substitute(b.body, uses, top=True)) for b in blocks]
    return blocks, root


def _define(name: str, group: list[Any], signature_of: Any) -> tuple[BlockDef, list[Use]]:
    template = Template(signature_of)
    body = template.build(group)
    params = _Params(len(group))
    for values, hint in zip(template.slots, template.hints):
        params.add(values, hint)
    body = _written(body, params.written)
    if isinstance(body, (Merge, Dataflow)) and body.class_name == name:
        body = dataclasses.replace(body, class_name=None)  # a block's merge (or graph) class is the block's name
    uses = [Use(name, params.args(i)) for i in range(len(group))]
    return BlockDef(name, params.declared(), body), uses


def _substitute(node: Any, uses: dict[int, Use], top: bool = False) -> Any:
    if not top and id(node) in uses:
        return uses[id(node)]
    return with_children(node, lambda c: _substitute(c, uses))


def _block_name(group: list[Any], taken: set[str]) -> str:
    """The instances' class (``_DenseLayer`` -> ``DenseLayer``), or ``Block``; made unique."""
    from compiler.facts.registry import REGISTRY

    origin = Counter(n.class_name if isinstance(n, (Merge, Dataflow)) and n.class_name else n.origin for n in group)
    base = origin.most_common(1)[0][0].lstrip("_")
    base = base[:1].upper() + base[1:]
    if base == "Sequential":
        base = "Stage"  # a list of layers or blocks, as torchvision's `_make_layer` returns
    if not (base.isidentifier() and base.isascii()) or REGISTRY.is_layer(base):
        base = "Block"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


# --------------------------------------------------------------------------- layer defaults


def layer_defaults(roots: list[Any], signature_of: Any, least: int = 2) -> tuple[tuple, list[Any]]:
    """``defaults:``: a keyword value every layer of a type says (at least ``least`` of them), and ``roots``
    without it. Only keywords with a default of their own (a required one reads better at the layer), never
    expressions (a block's parameters: they mean something else per block)."""
    by_type: dict[str, list[Layer]] = {}
    for root in roots:
        for node in walk(root):
            if isinstance(node, Layer):
                by_type.setdefault(node.type, []).append(node)
    table: dict[str, tuple] = {}
    for kind, layers in by_type.items():
        signature = signature_of(kind)
        optional = {k for k, p in signature.parameters.items() if p.default is not p.empty} if signature else set()
        shared = [
            (k, v)
            for k, v in layers[0].args
            if k in optional and not (isinstance(v, str) and "$" in v) and all(_says(x, k, v) for x in layers[1:])
        ]
        if len(layers) >= least and shared:
            table[kind] = tuple(shared)
    return tuple(table.items()), [_without(root, table) for root in roots]


def _says(layer: Layer, key: str, value: Any) -> bool:
    return any(k == key and _key(v) == _key(value) for k, v in layer.args)


def _without(node: Any, table: dict[str, tuple]) -> Any:
    if isinstance(node, Layer) and node.type in table:
        keys = {k for k, _ in table[node.type]}
        args = tuple((k, v) for k, v in node.args if k not in keys)
        return Layer(node.type, args, node.short and args == node.args)
    return with_children(node, lambda c: _without(c, table))


# --------------------------------------------------------------------------- parameter defaults


def param_defaults(blocks: list[BlockDef], roots: list[Any]) -> tuple[list[BlockDef], list[Any]]:
    """A parameter's value in most uses (at least two, more than half) as its default, which those uses leave
    out: ``{BasicBlock: {out: 64}}`` for ``{BasicBlock: {out: 64, stride: 1, downsample: false}}``. Integers and
    booleans only (a text default would read as a type's name); an expression is never left out."""
    uses = [n for root in roots for n in walk(root) if isinstance(n, Use)]
    table: dict[str, dict[str, Any]] = {}
    for block in blocks:
        mine = [dict(u.args) for u in uses if u.name == block.name]
        chosen = {}
        for name, kind in block.params:
            values = [args[name] for args in mine if name in args and kind in ("int", "bool")]
            counts = Counter(_key(v) for v in values if not isinstance(v, str))
            if counts and counts.most_common(1)[0][1] >= max(2, len(mine) // 2 + 1):
                chosen[name] = next(v for v in values if _key(v) == counts.most_common(1)[0][0])
        table[block.name] = chosen
    blocks = [dataclasses.replace(b, defaults=tuple(table[b.name].items())) for b in blocks]
    return blocks, [_without_defaults(root, table) for root in roots]


def _without_defaults(node: Any, table: dict[str, dict[str, Any]]) -> Any:
    if isinstance(node, Use):
        given = table.get(node.name, {})
        return Use(node.name, tuple((k, v) for k, v in node.args if not (k in given and _key(v) == _key(given[k]))))
    return with_children(node, lambda c: _without_defaults(c, table))
