"""The model's Python source, emitted from ModelIR the way torch.fx emits a GraphModule's code.

One IR, one emitter: ``build_model()``'s body (named top-level parts as local variables, then
the whole), one small class per distinct merge-block shape with ``forward`` written out line
by line, and ``init_weights(model)`` for the spec's ``init:`` rules. Names are made legal and
unique as they are emitted (``Namespace``); every value is a checked literal or identifier.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from compiler.common.literal import literal
from compiler.common.naming import Namespace
from compiler.errors import RenderError
from compiler.facts.shapes import format_shape
from compiler.lower.ir import (
    FLAG,
    Arg,
    BlockCallIR,
    BlockCodeIR,
    BlockIR,
    CondIR,
    ForIR,
    GraphIR,
    InitRuleIR,
    LayerIR,
    LoopCodeIR,
    LoopStepIR,
    MergeIR,
    ModelIR,
    Node,
    class_names,
)

LINE = 120
INDENT = "    "
REPEATED_CALLS = 3  # identical block calls in a row written as one loop


@dataclass
class ModelCode:
    """What a generated file needs for the model: source pieces and the names they import."""

    build_body: str  # the body of ``build_model()``
    classes: list[str] = field(default_factory=list)  # merge-block classes and specc's own layers
    init_function: str | None = None  # ``def init_weights(model): ...``
    custom_imports: list[str] = field(default_factory=list)  # `from pkg import Layer` for registered layers


def emit_model(model: ModelIR, script_globals: frozenset[str] = frozenset()) -> ModelCode:
    """``script_globals``: the names the script defines at its top level (settings, vars, helpers): the
    locals of ``build_model`` are renamed around them, so a block named ``nn`` cannot hide ``nn``."""
    names = class_names(model.classes(), model.blocks)
    own = {cls.__name__ for cls in _own_layer_classes(list(model.layers()))}
    functions = {name for c in model.blocks.values() for name in (c.function, c.class_name) if name}
    emitter = _Emitter(names, model.blocks)
    code = ModelCode(_build_body(model, emitter, script_globals | own | set(names.values()) | functions))
    layers = list(model.layers())
    code.custom_imports = _custom_imports(layers)
    code.classes = [_layer_class_source(cls) for cls in _own_layer_classes(layers)]
    if (
        "make_divisible(" in code.build_body
        or any("make_divisible(" in source for c in model.blocks.values() for _, source in c.local_vars)
        or any("make_divisible(" in line for c in model.blocks.values() for line in _block_sources(c, emitter))
    ):
        code.classes.append(_make_divisible_source())
    emitted = {c.class_name for c in model.blocks.values() if c.class_name}
    for block in model.blocks.values():
        code.classes += _block_sources(block, emitter)
    for merge in model.classes():
        name = names[merge.shape_key]
        if name not in emitted:
            emitted.add(name)
            source = _graph_class_source if isinstance(merge, GraphIR) else _merge_class_source
            code.classes.append(source(merge, name))  # type: ignore[arg-type]
    if model.init or model.load:
        code.init_function = _init_function(model)
    return code


# --------------------------------------------------------------------------- build_model


def _shapes_text(shapes: dict | None) -> str:
    """``(1, 28, 28)`` for one input; ``left (1, 28, 28), right (1, 28, 28)`` for several."""
    if not shapes:
        return "()"
    if list(shapes) == ["x"]:
        return format_shape(shapes["x"])
    return ", ".join(f"{name} {format_shape(shape) if shape is not None else '(?)'}" for name, shape in shapes.items())


def call_source(script_name: str, args: list[Arg], kwargs: dict[str, Arg], first: tuple[str, ...] = ()) -> str:
    parts = [*first, *(a.source for a in args), *(f"{k}={a.source}" for k, a in kwargs.items())]
    return f"{script_name}({', '.join(parts)})"


def _build_body(model: ModelIR, emitter: _Emitter, script_globals: set[str]) -> str:
    """Named top-level parts as local variables (``conv1 = ...``), in module order, then the whole.

    Assigning in module order keeps construction order, so every random weight matches
    ``compiler.build_model`` exactly.
    """
    root = model.root
    doc = (
        f'"""The network: input {_shapes_text(model.inputs)} -> output '
        f"{_shapes_text(model.outputs) if model.outputs else format_shape(model.output_shape or ())}, "
        f'{model.params:,} parameters."""'
    )
    lines = [INDENT + doc if model.inputs else INDENT + f'"""The network: {model.params:,} parameters."""']
    unwritten = sorted({n.use.block for n in root.walk() if n.use is not None} - set(model.blocks))
    if unwritten:  # a loop inside, or uses whose structure differs: no one class or function fits them all
        note = f"Written out use by use (no one class fits every use): block {', '.join(unwritten)}."
        lines[0] = lines[0][:-3] + "\n\n" + INDENT + note + "\n" + INDENT + '"""'

    result = "model" if model.init or model.load else None
    if isinstance(root, BlockIR) and root.named and any(not isinstance(c, LayerIR) for c in root.children):
        namespace = Namespace({"model", "init_weights", "nn", "OrderedDict", "torch", *script_globals})
        namespace.taken |= {"in_channels"}  # the loops' running channels
        loops = {code.names[0]: code for code in model.loops.get(root.yaml_path, [])}
        lists = model.loops
        covered = {name for code in loops.values() for name in code.names}
        entries = []
        for child in root.children:
            if child.name in loops:  # the children a loop makes: the loop, filling a dict of them
                var = namespace.name("stages")
                lines += [INDENT + f"{var} = {{}}", *_loop_lines(loops[child.name], var, namespace)]
                entries.append(f"**{var}")
                continue
            if child.name in covered:
                continue
            var = namespace.name(child.name)
            # a key that is no identifier (RegNet's `block1-0`) keeps its text: `**{"block1-0": block1_0}`
            entries.append(
                f"{child.name}={var}" if child.name.isidentifier() else f"**{{{literal(child.name)}: {var}}}"
            )
            if isinstance(child, BlockIR) and lists.get(child.yaml_path) and child.use is None and not child.named:
                lines += _list_lines(var, child, lists[child.yaml_path], emitter, namespace)
            else:
                lines += emitter.assign(var, child, 1)
        pairs = ", ".join(entries)
        whole = INDENT + ("return " if result is None else "model = ") + f"nn.Sequential(OrderedDict({pairs}))"
        if len(whole) > LINE:  # one name a line, as ruff would format it
            whole = whole.replace("OrderedDict(", "OrderedDict(\n" + INDENT * 3).replace(", ", ",\n" + INDENT * 3)
            whole = whole[:-2] + ",\n" + INDENT * 2 + ")\n" + INDENT + ")"
            whole = whole.replace("nn.Sequential(OrderedDict(", "nn.Sequential(\n" + INDENT * 2 + "OrderedDict(")
        lines.append(whole)
    else:
        expr = emitter.node_lines(root, 1)
        expr[0] = INDENT + ("return " if result is None else "model = ") + expr[0].lstrip()
        lines += expr
    if result:
        lines += [INDENT + "init_weights(model)", INDENT + "return model"]
    return "\n".join(lines)


class _Emitter:
    """Lines of ``build_model()``, laid out as ``ruff format`` would: a call too long for one line opens its
    parentheses, with its arguments on one indented line if they fit, else one a line."""

    def __init__(self, names: dict[tuple, str], blocks: dict[str, BlockCodeIR] | None = None):
        self.names = names
        self.blocks = blocks or {}

    def assign(self, var: str, node: Node, depth: int) -> list[str]:
        return self.lines(f"{var} = ", node, "", depth)

    def node_lines(self, node: Node, depth: int) -> list[str]:
        return self.lines("", node, "", depth)

    def lines(self, prefix: str, node: Node, suffix: str, depth: int) -> list[str]:
        """``prefix`` + the node's expression + ``suffix``, starting at ``depth`` indents."""
        pad = INDENT * depth
        if isinstance(node, BlockCallIR):
            return [pad + prefix + f"{node.target}({', '.join(node.args)})" + suffix]
        code = self.blocks.get(node.use.block) if node.use is not None else None
        if code is not None:
            return [pad + prefix + _use_call(node, code) + suffix]
        if isinstance(node, LayerIR):
            return _layer_lines(pad, prefix, node, suffix)
        if isinstance(node, (MergeIR, GraphIR)):
            params = dict(_init_params(node))  # the keywords are its __init__'s parameters
            built = node.built if isinstance(node, GraphIR) else node.children
            body = [line for child in built for line in self.lines(f"{params[child.name]}=", child, ",", depth + 1)]
            return [pad + prefix + self.names[node.shape_key] + "(", *body, pad + ")" + suffix]
        if getattr(node, "module_list", False):  # a graph node's declared list, its members called one by one
            body = [line for child in node.children for line in self.lines("", child, ",", depth + 2)]
            return [pad + prefix + "nn.ModuleList(", pad + INDENT + "[", *body, pad + INDENT + "]", pad + ")" + suffix]
        if not node.named:
            if any(isinstance(child, CondIR) for child in node.children):
                raise ValueError("a list with optional items is written as statements (_items_lines)")
            body = [line for run in self.runs(node.children) for line in self.run_lines(run, depth + 1)]
            return [pad + prefix + "nn.Sequential(", *body, pad + ")" + suffix]
        body = []
        inner = INDENT * (depth + 3)
        for child in node.children:
            one = self.lines(f"({literal(child.name)}, ", child, "),", depth + 3)
            if len(one) == 1:
                body += one
            else:  # ruff splits the tuple itself: its name and its value each on a line
                body += [inner + "(", inner + INDENT + literal(child.name) + ","]
                body += self.lines("", child, ",", depth + 4) + [inner + "),"]
        return [
            pad + prefix + "nn.Sequential(",
            pad + INDENT + "OrderedDict(",
            pad + INDENT * 2 + "[",
            *body,
            pad + INDENT * 2 + "]",
            pad + INDENT + ")",
            pad + ")" + suffix,
        ]

    def call_text(self, node: Node) -> str | None:
        code = self.blocks.get(node.use.block) if getattr(node, "use", None) is not None else None
        return _use_call(node, code) if code is not None else None

    def runs(self, children: list) -> list[list]:
        """Consecutive children that are the same block call (a loop's identical iterations) go together."""
        runs: list[list] = []
        for child in children:
            text = self.call_text(child)
            if runs and text is not None and self.call_text(runs[-1][0]) == text:
                runs[-1].append(child)
            else:
                runs.append([child])
        return runs

    def run_lines(self, run: list, depth: int) -> list[str]:
        """Three or more identical calls as one loop, as torchvision's ``_make_layer`` adds its blocks."""
        if len(run) < REPEATED_CALLS:
            return [line for child in run for line in self.lines("", child, ",", depth)]
        return [INDENT * depth + f"*({self.call_text(run[0])} for _ in range({len(run)})),"]


def _layer_lines(pad: str, prefix: str, node: LayerIR, suffix: str) -> list[str]:
    call = node.call
    parts = [a.source for a in call.args] + [f"{k}={a.source}" for k, a in call.kwargs.items()]
    head = pad + prefix + node.entry.script_name + "("
    one = head + ", ".join(parts) + ")" + suffix
    if len(one) <= LINE:
        return [_with_comment(one, node)]
    hugged = pad + INDENT + ", ".join(parts)
    if len(hugged) <= LINE:
        return [head, hugged, pad + ")" + suffix]
    return [head, *(pad + INDENT + part + "," for part in parts), pad + ")" + suffix]


def _with_comment(line: str, node: LayerIR) -> str:
    comment = f"  # -> {format_shape(node.out_shape)}" if node.out_shape is not None else ""
    if node.inferred:
        comment = (comment or "  #") + f", {node.inferred} inferred"
    return line + comment if len(line + comment) <= LINE else line


# --------------------------------------------------------------------------- loops written as loops


def _list_lines(var: str, node: BlockIR, codes: list[LoopCodeIR], emitter: _Emitter, names: Namespace) -> list[str]:
    """A list of modules some loops made, built as torchvision builds ``features``: the items before the first
    loop, each loop appending its modules, the items after appended, then ``nn.Sequential(*features)``."""
    starts = {code.names[0]: code for code in codes}
    covered = {name for code in codes for name in code.names}
    head: list[str] = []
    lines: list[str] = []
    opened = False
    for child in node.children:
        if child.name in starts:
            if not opened:
                lines = [INDENT + f"{var} = [", *head, INDENT + "]"] if head else [INDENT + f"{var} = []"]
                if len(head) == 1 and len(INDENT + f"{var} = [{head[0].strip()[:-1]}]") <= LINE and "#" not in head[0]:
                    lines = [INDENT + f"{var} = [{head[0].strip()[:-1]}]"]
                opened = True
            lines += _loop_lines(starts[child.name], var, names)
        elif child.name in covered:
            continue
        elif not opened:
            head += emitter.lines("", child, ",", 2)
        else:
            lines += emitter.lines(f"{var}.append(", child, ")", 1)
    return [*lines, INDENT + f"{var} = nn.Sequential(*{var})"]


def _loop_lines(code: LoopCodeIR, target: str, names: Namespace) -> list[str]:
    """The loop, its running channels set first: the first call's input."""
    lines = [INDENT + f"in_channels = {code.channels}"] if code.channels is not None else []
    return lines + _for_lines(code.loop, target, 1, names)


def _for_lines(loop: ForIR, target: str, depth: int, names: Namespace) -> list[str]:
    """``for k, n in enumerate(layers):`` and its body; ``target``: the list (or, for a named loop, the dict)
    each iteration adds to."""
    lines = [INDENT * depth + f"for {loop.targets} in {loop.iterable}:"]
    for item in loop.body:
        if isinstance(item, ForIR):
            lines += _for_lines(item, target, depth + 1, names)
        else:
            put = f"{target}[{loop.name}] = " if loop.name else f"{target}.append("
            lines += _step_lines(
                item, put, "" if loop.name else ")", depth + 1, names, "blocks" if loop.name else "stage"
            )
    return lines


def _step_lines(step: LoopStepIR, prefix: str, suffix: str, depth: int, names: Namespace, wanted: str) -> list[str]:
    pad = INDENT * depth
    if step.items is None:
        lines = _call_lines(pad, prefix, f"{step.call}(", step.args, suffix)
        return lines + ([pad + f"in_channels = {step.channels}"] if step.channels is not None else [])
    inner = names.name(wanted)
    lines = [pad + f"{inner} = []"]
    for item in step.items:
        if isinstance(item, ForIR):
            lines += _for_lines(item, inner, depth, names)
        else:
            lines += _step_lines(item, f"{inner}.append(", ")", depth, names, "stage")
    return lines + [pad + prefix + f"nn.Sequential(*{inner})" + suffix]


def _call_lines(pad: str, prefix: str, head: str, args: list[str], suffix: str) -> list[str]:
    """A call laid out as ruff would: one line, else its arguments on one indented line, else one a line; an
    ``.append(`` around it opens first."""
    one = pad + prefix + head + ", ".join(args) + ")" + suffix
    if len(one) <= LINE:
        return [one]
    if prefix.endswith("(") and suffix == ")":  # `stage.append(` alone, then the call indented
        return [pad + prefix, *_call_lines(pad + INDENT, "", head, args, ""), pad + ")"]
    hugged = pad + INDENT + ", ".join(args)
    if len(hugged) <= LINE:
        return [pad + prefix + head, hugged, pad + ")" + suffix]
    return [pad + prefix + head, *(pad + INDENT + arg + "," for arg in args), pad + ")" + suffix]


# --------------------------------------------------------------------------- blocks: a class or function each


def _use_call(node: Node, code: BlockCodeIR) -> str:
    """``BasicBlock(64, 128, stride=2)``: a block's code called with one use's values (defaults left out)."""
    assert node.use is not None
    env, parts = node.use.env, []
    for (python, default), name in zip(code.params, code.spec_params, strict=True):
        value = literal(env[name])
        if default is None:
            parts.append(value)
        elif value != default:
            parts.append(f"{python}={value}")
    target = code.class_name if code.function is None else code.function
    return f"{target}({', '.join(parts)})"


def _signature(code: BlockCodeIR, first: str = "") -> str:
    params = [name if default is None else f"{name}={default}" for name, default in code.params]
    return ", ".join([first, *params] if first else params)


def _block_sources(code: BlockCodeIR, emitter: _Emitter) -> list[str]:
    """The block's class (a merge body) and its function (any other body, or an `if:` between bodies)."""
    sources = []
    if code.sequential:
        sources.append(_sequential_class_source(code, emitter))
    if code.merge is not None and code.class_name:
        sources.append(_block_class_source(code, emitter))
    if code.function:
        sources.append(_block_function_source(code, emitter))
    return sources


def _block_class_source(code: BlockCodeIR, emitter: _Emitter) -> str:
    """``class BasicBlock(nn.Module)``: its modules built from its parameters, ``forward`` written out."""
    merge = code.merge
    assert merge is not None
    if isinstance(merge, GraphIR):
        return _graph_block_class_source(code, merge, emitter)
    doc = _describe(merge) if code.flag is None else f"{_describe(merge)[:-1]} when {FLAG}, else {_chained(merge)}."
    lines = [f"class {code.class_name}(nn.Module):", INDENT + f'"""{doc}"""', ""]
    lines.append(INDENT + f"def __init__({_signature(code, 'self')}):")
    lines.append(INDENT * 2 + "super().__init__()")
    lines += [INDENT * 2 + f"{name} = {source}" for name, source in code.local_vars if code.function is None]
    if code.flag is not None:
        lines.append(INDENT * 2 + f"self.{FLAG} = {code.flag}")
    for child in merge.children:
        if isinstance(child, CondIR):  # torchvision's `downsample = None` unless the shape changes
            lines.append(INDENT * 2 + f"self.{child.name} = None")
            lines.append(INDENT * 2 + f"if {child.condition}:")
            lines += emitter.lines(f"self.{child.name} = ", child.node, "", 3)
        else:
            lines += emitter.lines(f"self.{child.name} = ", child, "", 2)
    lines += ["", INDENT + "def forward(self, x):"]
    if code.flag is None:
        lines += [INDENT * 2 + line for line in _forward_lines(merge, code.optional)]
        return "\n".join(lines)
    lines.append(INDENT * 2 + f"if self.{FLAG}:")  # torchvision's InvertedResidual.forward
    if all(len(branch.nodes) <= 2 for branch in merge.branches):  # `return x + self.conv(x)`
        lines.append(INDENT * 3 + "return " + " + ".join(_calls(b.nodes, "x") for b in merge.branches))
    else:
        lines += [INDENT * 3 + line for line in _forward_lines(merge)]
    chain = _chain("x", "x", merge.children)
    if len(chain) == 1:
        return "\n".join([*lines, INDENT * 2 + "return " + chain[0].removeprefix("x = ")])
    return "\n".join([*lines, *(INDENT * 2 + line for line in chain), INDENT * 2 + "return x"])


def _chained(merge: MergeIR) -> str:
    names = [child.name for child in merge.children]
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"


def _sequential_class_source(code: BlockCodeIR, emitter: _Emitter) -> str:
    """``class ConvBNReLU(nn.Sequential)``: its ``__init__`` builds the body's modules from the parameters."""
    lines = [f"class {code.class_name}(nn.Sequential):", INDENT + f'"""The spec\'s block {code.block}."""', ""]
    lines.append(INDENT + f"def __init__({_signature(code, 'self')}):")
    lines += [INDENT * 2 + f"{name} = {source}" for name, source in code.local_vars]
    body = _return_lines(code.branches[0][1], emitter, 2)
    last = body[-1]
    if last.strip() == "return nn.Sequential(*layers)":
        body[-1] = INDENT * 2 + "super().__init__(*layers)"
    else:
        body[0] = body[0].replace("return nn.Sequential(", "super().__init__(", 1)
    return "\n".join(lines + body)


def _graph_block_class_source(code: BlockCodeIR, graph: GraphIR, emitter: _Emitter) -> str:
    """A block whose body is a graph node: its modules built from its parameters, its tensors, ``forward``."""
    lines = [f"class {code.class_name}(nn.Module):", INDENT + f'"""{_graph_doc(graph)}"""', ""]
    lines.append(INDENT + f"def __init__({_signature(code, 'self')}):")
    lines.append(INDENT * 2 + "super().__init__()")
    lines += [INDENT * 2 + f"{name} = {source}" for name, source in code.local_vars]
    for child in graph.built:
        lines += emitter.lines(f"self.{child.name} = ", child, "", 2)
    for tensor in graph.tensors:
        lines += [INDENT * 2 + line for line in _tensor_lines(tensor)]
    lines += _made_lines(graph)
    lines += ["", INDENT + f"def forward({', '.join(['self', *_forward_args(graph)])}):"]
    lines += [INDENT * 2 + line for line in _graph_forward_lines(graph)]
    return "\n".join(lines)


def _block_function_source(code: BlockCodeIR, emitter: _Emitter) -> str:
    """``def shortcut(in_channels, out, stride)``: the modules of the block's body, chosen by its `if:`."""
    lines = [f"def {code.function}({_signature(code)}):", INDENT + f'"""The spec\'s block {code.block}."""']
    lines += [INDENT + f"{name} = {source}" for name, source in code.local_vars]
    for condition, template in code.branches:
        depth = 1 if condition is None else 2
        if condition is not None:
            lines.append(INDENT + f"if {condition}:")
        lines += _return_lines(template, emitter, depth)
    if code.branches[-1][0] is not None:
        lines.append(INDENT + "return None")
    return "\n".join(lines)


def _return_lines(template: object, emitter: _Emitter, depth: int) -> list[str]:
    pad = INDENT * depth
    if template is None:
        return [pad + "return None  # the input passes through"]
    if isinstance(template, BlockIR) and any(isinstance(child, CondIR) for child in template.children):
        first = next(i for i, child in enumerate(template.children) if isinstance(child, CondIR))
        lines = [pad + "layers = ["]  # the items every use has, up to the first optional one
        lines += [line for child in template.children[:first] for line in emitter.lines("", child, ",", depth + 1)]
        lines = [pad + "layers = []"] if first == 0 else [*lines, pad + "]"]
        for child in template.children[first:]:
            if isinstance(child, CondIR):
                lines.append(pad + f"if {child.condition}:")
                lines += emitter.lines("layers.append(", child.node, ")", depth + 1)
            else:
                lines += emitter.lines("layers.append(", child, ")", depth)
        return [*lines, pad + "return nn.Sequential(*layers)"]
    return emitter.lines("return ", template, "", depth)  # type: ignore[arg-type]


def _make_divisible_source() -> str:
    """torchvision's ``_make_divisible``, which the blocks' sizes use (the spec's ``make_divisible``)."""
    from compiler.front.expr import make_divisible

    return inspect.getsource(make_divisible).rstrip()


# --------------------------------------------------------------------------- merge classes


def _merge_class_source(merge: MergeIR, name: str) -> str:
    """``class BasicBlock(nn.Module)``: children passed in by name, ``forward`` written out."""
    children = _init_params(merge)
    lines = [f"class {name}(nn.Module):", INDENT + f'"""{_describe(merge)}"""', ""]
    lines.append(INDENT + f"def __init__(self, {', '.join(p for _, p in children)}):")
    lines.append(INDENT * 2 + "super().__init__()")
    lines += [INDENT * 2 + f"self.{attr} = {param}" for attr, param in children]
    lines += ["", INDENT + "def forward(self, x):"]
    lines += [INDENT * 2 + line for line in _forward_lines(merge)]
    return "\n".join(lines)


def _describe(merge: MergeIR) -> str:
    """The block in one line: ``conv1 .. bn2 + downsample, then relu_out``."""

    def part(p) -> str:
        names = [n.name for n in p.nodes] or ["input"]
        return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"

    branches = [part(b) for b in merge.branches]
    merged = (
        f"cat([{', '.join(branches)}], dim={merge.dim})"
        if merge.op == "cat"
        else f" {'+' if merge.op == 'add' else '*'} ".join(branches)
    )
    before = f"{part(merge.before)}, then " if merge.before else ""
    return f"{before}{merged}" + (f", then {part(merge.then)}." if merge.then else ".")


def _forward_lines(merge: MergeIR, optional: tuple[str, ...] = ()) -> list[str]:
    """``optional``: branches that may be None (the input passes through, torchvision's ``downsample``)."""
    variables = Namespace({"self", "x", "torch", "nn", "out"})
    lines: list[str] = []
    if merge.before:
        lines += _chain("x", "x", merge.before.nodes)
    values = []
    for branch in merge.branches:
        if not branch.nodes:
            values.append("x")
            continue
        var = variables.name(branch.name)
        if branch.name in optional:
            lines += [f"{var} = x", f"if self.{branch.name} is not None:", INDENT + f"{var} = self.{branch.name}(x)"]
        else:
            lines += _chain(var, "x", branch.nodes)
        values.append(var)
    if merge.op == "cat":
        merged = f"torch.cat([{', '.join(values)}], dim={merge.dim})"
    else:
        merged = f" {'+' if merge.op == 'add' else '*'} ".join(values)
    then = merge.then.nodes if merge.then else []
    if len(then) <= 2:
        return lines + [f"return {_calls(then, merged)}"]
    return lines + [f"out = {merged}", *_chain("out", "out", then), "return out"]


def _chain(var: str, source: str, nodes: list[Node]) -> list[str]:
    """``var = self.b(self.a(source))`` for two calls; longer chains one call a line, as torchvision writes them."""
    if len(nodes) <= 2:
        return [f"{var} = {_calls(nodes, source)}"]
    return [f"{var} = {_calls([node], source if i == 0 else var)}" for i, node in enumerate(nodes)]


def _calls(nodes: list[Node], arg: str) -> str:
    for node in nodes:
        arg = f"self.{node.name}({arg})"
    return arg


# --------------------------------------------------------------------------- graph nodes (§15)


def _graph_class_source(graph: GraphIR, name: str) -> str:
    """``class EncoderBlock(nn.Module)``: children passed in by name, its own parameters and buffers made in
    ``__init__`` (after the children, as ``compiler.build_model`` makes them), ``forward`` written out with the
    spec's names of the values, as torch.fx's code generator writes a graph."""
    children = _init_params(graph)
    lines = [f"class {name}(nn.Module):", INDENT + f'"""{_graph_doc(graph)}"""', ""]
    lines += _def_lines("__init__", ["self", *(p for _, p in children)])
    lines.append(INDENT * 2 + "super().__init__()")
    lines += [INDENT * 2 + f"self.{attr} = {param}" for attr, param in children]
    for tensor in graph.tensors:
        lines += [INDENT * 2 + line for line in _tensor_lines(tensor)]
    lines += _made_lines(graph)
    lines += ["", INDENT + f"def forward({', '.join(['self', *_forward_args(graph)])}):"]
    lines += [INDENT * 2 + line for line in _graph_forward_lines(graph)]
    return "\n".join(lines)


def _made_lines(graph: GraphIR) -> list[str]:
    """The end of a graph node's ``__init__``: its `init:` rules over ``self.named_modules()`` (torchvision's
    loop), then ``del`` of the modules `keep: false` drops."""
    lines = []
    if graph.init:
        lines.append(INDENT * 2 + "for name, module in self.named_modules():  # the node's `init:` rules")
        nodes = [n for child in graph.built for n in (child, *child.walk())]
        lines += _rule_lines(graph.init, nodes, 3)
    if graph.dropped:
        names = ", ".join(f"self.{node.name}" for node in graph.dropped)
        lines.append(INDENT * 2 + f"del {names}  # built and initialised, then dropped (`keep: false`)")
    return lines


def _init_params(node: MergeIR | GraphIR) -> list[tuple[str, str]]:
    """(attribute, ``__init__`` parameter) of each child passed to a merge's or graph node's class: the child's
    name, unless the class's own code needs it (``self``; a graph node's ``__init__`` makes its tensors with
    ``torch`` and ``nn``): ``self_1``. The script's ``build_model`` passes each child by this keyword."""
    if isinstance(node, GraphIR):  # its __init__ may also run `init:` rules (nn.init, fnmatch)
        params = Namespace({"self", "torch", "nn", "fnmatch"} if node.init else {"self", "torch", "nn"})
        return [(child.name, params.name(child.name)) for child in node.built]
    params = Namespace({"self"})
    return [(child.name, params.name(child.name)) for child in node.children]


def _forward_args(graph: GraphIR) -> list[str]:
    """``forward``'s parameters: the inputs' names, but one that ``forward``'s own code needs (``self``, ``torch``,
    ``nn``) is renamed (``torch_1``)."""
    own = ("self", "torch", "nn")
    taken = Namespace({*own, *graph.inputs})
    return [taken.name(name) if name in own else name for name in graph.inputs]


def _def_lines(name: str, params: list[str]) -> list[str]:
    """A method's ``def`` line, as ruff formats it: one line if it fits in 120 columns, else a parameter a line."""
    line = INDENT + f"def {name}({', '.join(params)}):"
    if len(line) <= 120:
        return [line]
    return [INDENT + f"def {name}(", *(INDENT * 2 + f"{p}," for p in params), INDENT + "):"]


def _graph_doc(graph: GraphIR) -> str:
    names = [c.name for c in graph.children] or [t.name for t in graph.tensors] or ["the input"]
    doc = f"{names[0]} .. {names[-1]}" if len(names) > 1 else names[0]
    return f"{doc}: steps on named values (spec §15)."


def _tensor_lines(tensor) -> list[str]:
    """``self.class_token = nn.Parameter(torch.zeros(1, 1, 768))``; other inits fill an empty tensor."""
    init = tensor.init.name if tensor.init is not None else "zeros_"
    maker = {"zeros_": "torch.zeros", "ones_": "torch.ones"}.get(init, "torch.empty")
    dtype = f", dtype=torch.{tensor.dtype}" if tensor.dtype != "float32" else ""
    value = f"{maker}({', '.join(tensor.sizes or map(str, tensor.shape))}{dtype})"
    if tensor.buffer:
        lines = [f"self.register_buffer({literal(tensor.name)}, {value})"]
    else:
        lines = [f"self.{tensor.name} = nn.Parameter({value})"]
    if maker == "torch.empty":
        call = tensor.init
        lines.append(call_source(call.entry.script_name, call.args, call.kwargs, (f"self.{tensor.name}",)))
    return lines


def _graph_forward_lines(graph: GraphIR) -> list[str]:
    """``forward``'s statements: a step a line, named as the spec names its values; the steps that run only in
    training mode under ``if self.training:``; a last step that is the output returned directly."""
    args = _forward_args(graph)
    variables = Namespace({"self", "torch", "nn", *graph.inputs, *args})
    text = {**dict(zip(graph.inputs, args)), **{t.name: f"self.{t.name}" for t in graph.tensors}}
    lines: list[str] = []
    plain_return = graph.outputs is None and graph.eval_outputs is None
    for i, step in enumerate(graph.steps):
        expr = _step_text(step, [text[name] for name in step.inputs], text[graph.inputs[0]])
        pad = INDENT if step.training else ""
        if step.training and not (i and graph.steps[i - 1].training):
            lines.append("if self.training:")
        last = i == len(graph.steps) - 1 and not step.unpack and step.outputs[0] == graph.output and not pad
        if last and plain_return:
            return lines + [f"return {expr}"]
        targets = []
        for out in step.outputs:
            if out is None:
                targets.append("_")
                continue
            wanted = out if not out.startswith("#") else (step.op or (step.call[0] if step.call else "out"))
            text[out] = variables.name(wanted)
            targets.append(text[out])
        unpacked = f"({targets[0]},)" if step.unpack and len(targets) == 1 else ", ".join(targets)  # a 1-tuple
        lines.append(pad + f"{unpacked} = {expr}")
    returned = _graph_return_lines(graph, text)
    if graph.steps and graph.steps[-1].training and returned[0] == "if self.training:":
        return lines + returned[1:]  # the training-only steps' block ends with training mode's return
    return lines + returned


def _step_text(step, args: list[str], first_input: str) -> str:
    if step.node is not None or step.call is not None:
        keywords = [f"{k}={a.source}" for k, a in step.keywords.items()]
        if step.call is not None:
            name, member = step.call
            target = f"self.{name}" + (f"[{member}]" if member is not None else "")
        else:
            target = f"self.{step.node.name}"
        return f"{target}({', '.join(args + keywords)})"
    return _op_text(step, args, first_input)


def _graph_return_lines(graph: GraphIR, text: dict[str, str]) -> list[str]:
    """``return a``, ``return a, b`` or ``return {"0": p2, ...}``; eval mode's own return under ``if``."""
    returned = _returned_text(graph.returned, graph.output_keys, graph.outputs is not None, text)
    if graph.eval_outputs is None:
        return [f"return {returned}"]
    evaluated = _returned_text(graph.eval_outputs, None, graph.eval_tuple, text)
    return ["if self.training:", INDENT + f"return {returned}", f"return {evaluated}"]


def _returned_text(names: list[str], keys: list[str] | None, several: bool, text: dict[str, str]) -> str:
    if keys is not None:
        return "{" + ", ".join(f"{literal(k)}: {text[n]}" for k, n in zip(keys, names)) + "}"
    if several:
        return ", ".join(text[n] for n in names) + ("," if len(names) == 1 else "")
    return text[names[0]]


_OP_SYMBOLS = {"add": " + ", "sub": " - ", "mul": " * ", "div": " / ", "matmul": " @ "}


def _op_text(step, args: list[str], first_input: str) -> str:
    if step.op in _OP_SYMBOLS:
        return _OP_SYMBOLS[step.op].join(args)
    if step.op in ("cat", "stack"):
        return f"torch.{step.op}([{', '.join(args)}], dim={step.dim})"
    if step.op == "interpolate":  # as torchvision's FPN: the top-down map resized to the lateral one's size
        return f"nn.functional.interpolate({args[0]}, size={args[1]}.shape[2:], mode={literal(step.mode)})"
    # expand_batch: torchvision's `class_token.expand(n, -1, -1)` (traceable by torch.fx) when the rank is known
    batch = f"{first_input}.shape[0]"
    rank = len(step.shapes[0]) if step.shapes and step.shapes[0] is not None else None
    if rank is not None:
        return f"{args[0]}.expand({', '.join([batch] + ['-1'] * (rank - 1))})"
    return f"{args[0]}.expand({batch}, *{args[0]}.shape[1:])"


# --------------------------------------------------------------------------- specc's own layers


def _own_layer_classes(layers: list[LayerIR]) -> list[type]:
    """The classes from compiler/runtime/layers.py the model uses, base classes first."""
    from compiler.runtime import layers as own

    used: list[type] = []
    for layer in layers:
        if layer.entry.module != "compiler.runtime.layers":
            continue
        cls = getattr(own, layer.entry.class_name)
        for base in reversed(cls.__mro__):
            if base.__module__ == own.__name__ and base not in used:
                used.append(base)
    return used


def _layer_class_source(cls: type) -> str:
    return inspect.getsource(cls).rstrip()


def _custom_imports(layers: list[LayerIR]) -> list[str]:
    imports = set()
    for layer in layers:
        entry = layer.entry
        if entry.imported_by_name:  # torchvision's LayerNorm2d
            imports.add(f"from {entry.module} import {entry.class_name}")
        if layer.entry.cls_object is not None:
            module, name = layer.entry.module, layer.entry.class_name
            problem = _import_problem(layer.entry.cls_object, module, name)
            if problem:
                raise RenderError(
                    f"layer {layer.entry.name} (register_layer): {problem}, so a generated script cannot import it: "
                    "define the class at the top level of a module (a .py file the script can import) and register "
                    "it from there; compiler.build_model builds it in this process as it is"
                )
            imports.add(f"from {module} import {name}")
    return sorted(imports)


def _import_problem(cls: type, module: str, name: str) -> str | None:
    """Why ``from module import name`` would not give ``cls`` in another process (None: it would)."""
    import importlib.util
    import sys

    if module == "__main__" or module.startswith("__main__."):
        return "its class is defined in __main__ (the script that ran)"
    if not (all(part.isidentifier() for part in module.split(".")) and name.isidentifier()):
        return f"its class {module}.{name} is not at the top level of a module"
    loaded = sys.modules.get(module)
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module made in memory (no __spec__)
        found = False
    if loaded is None or not found or getattr(loaded, name, None) is not cls:
        return f"{module}.{name} does not name its class in an importable module"
    return None


# --------------------------------------------------------------------------- init rules


def _init_function(model: ModelIR) -> str:
    lines = ["def init_weights(model):"]
    if not model.init:
        lines.append(INDENT + '"""The spec\'s `init:`: weights from a file."""')
        return "\n".join(lines + [_load_line(model)])
    doc = "each module takes the first that matches it" + ("; then weights from a file" if model.load else "")
    lines += [
        INDENT + f'"""The spec\'s `init:` rules: {doc}."""',
        INDENT + "for name, module in model.named_modules():",
    ]
    lines += _rule_lines(model.init, [model.root, *model.root.walk()], 2)
    return "\n".join(lines + ([_load_line(model)] if model.load else []))


def _load_line(model: ModelIR) -> str:
    load = model.load
    assert load is not None
    return INDENT + f"load_weights(model, {literal(load.path)}, strict={load.strict})"


def _rule_lines(rules: list[InitRuleIR], nodes: list, depth: int) -> list[str]:
    """The if/elif chain of `init:` rules inside a loop over ``named_modules()``; ``nodes``: every node the loop
    meets (the model's, or a graph node's built ones)."""
    lines, pad = [], INDENT * depth
    layers = [n for n in nodes if isinstance(n, LayerIR)]
    for i, rule in enumerate(rules):
        lines.append(pad + ("if " if i == 0 else "elif ") + _condition(rule) + ":")
        nullable = {p for layer in layers if rule.matches(layer) for p in layer.none_params}
        # a path glob may match a container (a Sequential has no weight) or a layer without this parameter (a
        # ReLU): compiler.build_model skips them too
        globbed = [n for n in nodes if rule.paths and rule.path_matches(rule.relative(n.path))]
        for pname, call in rule.calls.items():
            line = call_source(call.entry.script_name, call.args, call.kwargs, (f"module.{pname}",))
            if any(not isinstance(n, LayerIR) or pname not in n.param_slots for n in globbed):
                lines += [
                    pad + INDENT + f"if getattr(module, {literal(pname)}, None) is not None:",
                    pad + INDENT * 2 + line,
                ]
            elif pname in nullable:
                lines += [pad + INDENT + f"if module.{pname} is not None:", pad + INDENT * 2 + line]
            else:
                lines.append(pad + INDENT + line)
    return lines


def _condition(rule: InitRuleIR) -> str:
    parts = []
    if rule.types:
        names = [e.script_name for e in rule.types]
        parts.append(f"isinstance(module, {names[0] if len(names) == 1 else '(' + ', '.join(names) + ')'})")
    parts += [f"fnmatch.fnmatchcase(name, {literal(p)})" for p in rule.paths]
    return " or ".join(parts)
