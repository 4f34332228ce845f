"""Modules to spec nodes: the module tree walked top down -- registered layers, ``nn.Sequential`` as lists or
blocks (equal neighbours a ``repeat``), other modules through their traced ``forward``."""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from compiler.interop.graph import G, Steps, all_steps, join_path, read_graph, simplify_graph, topological
from compiler.interop.layers import equivalent_layer, layer_call, layer_classes
from compiler.interop.nodes import Block, DecompileError, Layer, Merge

# --------------------------------------------------------------------------- modules to nodes


class _Names:
    def __init__(self, taken: set[str]):
        self.taken = set(taken)

    def fresh(self, base: str) -> str:
        base = re.sub(r"\W", "_", base) or "layer"
        if not base[0].isalpha():
            base = "op_" + base
        name, i = base, 1
        while name in self.taken or name in ("merge", "repeat", "body"):
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


class Decompiler:
    """Modules to spec nodes. ``root`` and ``shape`` (one sample's) let a forward that is no tree be read as a graph
    node: its sizes come from a forward pass on that input (``dataflow.Probe``)."""

    def __init__(self, root: nn.Module | None = None, shape: tuple[int, ...] | dict[str, tuple[int, ...]] = ()):
        from compiler.interop.dataflow import Probe

        self.layer_classes = layer_classes()
        self.notes: list[tuple[str, str]] = []  # (a module's path, what is said of it)
        self.probe = Probe(root, shape) if root is not None else None
        self.done: dict[tuple[int, str], Any] = {}  # (module, path) -> its node, or the DecompileError it raised

    def convert(self, module: nn.Module, path: str) -> Any:
        """``module``'s node; each module is read once (a parent read again as a graph node reuses its children's)."""
        key = (id(module), path)
        if key not in self.done:
            try:
                self.done[key] = self._convert(module, path)
            except DecompileError as err:
                self.done[key] = err
        found = self.done[key]
        if isinstance(found, DecompileError):
            raise DecompileError(found.path, found.message)
        return found

    def note_lines(self) -> list[str]:
        """The notes, one line per thing said: ``a.0.b, a.1.b and 11 more (Sequential) are never called ...``."""
        said: dict[str, list[str]] = {}
        for path, text in self.notes:
            paths = said.setdefault(text, [])
            if path not in paths:
                paths.append(path)
        lines = []
        for text, paths in said.items():
            if len(paths) == 1:
                lines.append(f"{paths[0]} {text}")
                continue
            shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            lines.append(f"{shown} {text.replace(' is never', ' are never', 1)}")
        return lines

    def class_name(self, module: nn.Module) -> str | None:
        return _class_name(module)

    def _convert(self, module: nn.Module, path: str) -> Any:
        entry = self.layer_classes.get(type(module))
        if entry is not None:
            return layer_call(module, entry, path)
        equivalent = equivalent_layer(module, path)
        if equivalent is not None:
            return equivalent
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            children = list(module.named_children())
            if not children:
                return Layer("Identity")
            items = tuple((name, self.convert(child, join_path(path, name))) for name, child in children)
            named = [n for n, _ in items] != [str(i) for i in range(len(items))]
            return Block(items, named=named, origin=type(module).__name__)
        return self.traced(module, path)

    def traced(self, module: nn.Module, path: str) -> Any:
        """A chain with at most one merge where the forward is one (a merge block keeps the state-dict keys), else
        a graph node (§15); when neither reads it, the graph reader's refusal (it reads more)."""
        notes = len(self.notes)
        if not path and self.probe is not None and isinstance(self.probe.shape, dict):
            from compiler.interop.dataflow import read_dataflow

            return read_dataflow(self, module, path)  # several inputs: only a graph node takes them
        try:
            found = self.tree(module, path)
            if not path and isinstance(found, Merge):  # the model's top level: a merge there would add a level
                raise DecompileError(path, "a merge at the model's top level is one module inside it")
            return found
        except DecompileError:
            if self.probe is None:
                raise
            del self.notes[notes:]  # the graph reader notes the same children again
        from compiler.interop.dataflow import read_dataflow

        return read_dataflow(self, module, path)

    def tree(self, module: nn.Module, path: str) -> Any:
        own = [n for n, _ in module.named_parameters(recurse=False)]
        own += [n for n, _ in module.named_buffers(recurse=False) if n not in module._non_persistent_buffers_set]
        if own:  # a stack or a merge holds no tensors of its own: a graph node's params: and buffers: do
            raise DecompileError(path, f"{type(module).__name__} holds tensors of its own ({', '.join(own)})")
        was = {m: m.training for m in module.modules()}
        module.train()  # F.dropout(training=self.training) is traced as in training
        try:
            source, output, inline = read_graph(module, path)
        finally:
            for m, mode in was.items():
                m.training = mode
        simplify_graph(output)
        reader = Steps(path)
        steps = reader.seq(output, source)
        used = all_steps(steps, reader)
        ids = [id(n) for n in used]
        needed = {id(n) for n in topological(output) if n.kind != "input"}
        if len(ids) != len(set(ids)) or set(ids) != needed:
            raise DecompileError(
                path,
                f"{type(module).__name__}.forward reuses an intermediate value in a way "
                "merge blocks cannot express (a value feeds two places that are not branches of "
                "one merge)",
            )
        called = {n.target.split(".")[0] for n in used if n.kind == "module"}
        for name, child in module.named_children():
            if name not in called and name not in inline:
                if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
                    raise DecompileError(
                        join_path(path, name),
                        f"{type(module).__name__}.forward never calls it, but it has weights a spec would lose",
                    )
                self.notes.append(
                    (
                        join_path(path, name),
                        f"({type(child).__name__}) is never called by {type(module).__name__}.forward: left out",
                    )
                )
        return self.level(steps, 0, module, path, reader)

    def level(self, steps: list[G], depth: int, owner: nn.Module, path: str, reader: Steps) -> Any:
        names = _Names({n for n, _ in owner.named_children()})
        items = self.items(steps, depth, owner, path, reader, names, set())
        return self.assemble(items, owner, path)

    def key(self, step: G, depth: int, reader: Steps) -> str | None:
        """The child of the owner that a step belongs to, when it lies deeper (an inlined child)."""
        if step.kind == "module":
            parts = step.target.split(".")
            return parts[depth] if len(parts) > depth + 1 else None
        if step.kind == "merge":
            keys = {self.key(s, depth, reader) if s.kind != "layer" else "" for s in all_steps([step], reader)[1:]}
            keys.discard("")
            return keys.pop() if len(keys) == 1 and None not in keys else None
        return None

    def items(
        self, steps: list[G], depth: int, owner: nn.Module, path: str, reader: Steps, names: _Names, seen: set[str]
    ) -> list[tuple[str, Any, bool]]:
        out: list[tuple[str, Any, bool]] = []
        i = 0
        while i < len(steps):
            step = steps[i]
            key = self.key(step, depth, reader)
            if key is not None:
                j = i
                while j < len(steps) and self.key(steps[j], depth, reader) == key:
                    j += 1
                child = owner.get_submodule(key)
                level = self.level(steps[i:j], depth + 1, child, join_path(path, key), reader)
                if isinstance(child, nn.ModuleList) and not (isinstance(level, Block) and not level.named):
                    raise DecompileError(
                        path, f"{type(owner).__name__}.forward runs {key}'s members other than in a chain"
                    )
                out.append((key, level, False))
                i = j
                continue
            i += 1
            if step.kind == "module":
                out.append(self.module_item(step, depth, owner, path, names, seen))
            elif step.kind == "layer":
                out.append((names.fresh(step.base), step.layer, False))
            else:
                out.append(self.merge_item(step, depth, owner, path, reader, names, seen))
        return out

    def module_item(
        self, step: G, depth: int, owner: nn.Module, path: str, names: _Names, seen: set[str]
    ) -> tuple[str, Any, bool]:
        """A child module's call; a second call of one with weights is refused (a spec cannot share them)."""
        name = step.target.split(".")[depth]
        child = owner.get_submodule(name)
        if name in seen:
            if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
                raise DecompileError(
                    join_path(path, name),
                    "called twice by the forward: a spec cannot share weights between two places",
                )
            name = names.fresh(name)
        seen.add(name)
        return name, self.convert(child, join_path(path, name)), False

    def merge_item(
        self, step: G, depth: int, owner: nn.Module, path: str, reader: Steps, names: _Names, seen: set[str]
    ) -> tuple[str, Any, bool]:
        """A merge of branches, each read as items; a merge inside a branch is refused."""
        branches = []
        for branch in reader.branches(step):
            sub = self.items(branch, depth, owner, path, reader, names, seen)
            if any(is_merge for _, _, is_merge in sub):
                raise DecompileError(
                    path,
                    f"{type(owner).__name__}.forward nests {step.what} inside another "
                    "merge's branch; a spec's merge would add a module level and change the "
                    "state-dict keys",
                )
            branches.append(sub)
        return "", (step, branches, names), True

    def assemble(self, items: list[tuple[str, Any, bool]], owner: nn.Module, path: str) -> Any:
        merges = [i for i, item in enumerate(items) if item[2]]
        if not merges:
            if not items:
                return Layer("Identity")
            return Block(
                tuple((n, node) for n, node, _ in items),
                named=[n for n, _, _ in items] != [str(i) for i in range(len(items))],
                origin=type(owner).__name__,
            )
        if len(merges) > 1:
            whats = ", ".join(items[i][1][0].what for i in merges)
            raise DecompileError(
                path,
                f"{type(owner).__name__}.forward merges more than once ({whats}); a spec's "
                "merge block is one module, so this would change the state-dict keys",
            )
        at = merges[0]
        step, branches, names = items[at][1]
        return Merge(
            step.op,
            step.dim,
            _class_name(owner),
            tuple((n, node) for n, node, _ in items[:at]),
            tuple(_branch_parts(branches, names)),
            tuple((n, node) for n, node, _ in items[at + 1 :]),
            origin=type(owner).__name__,
        )


def _branch_parts(branches: list, names: Any) -> list[tuple[str, Any]]:
    """A merge's branches as named parts: empty ones an identity, one unnamed step as it is, else a block."""
    parts: list[tuple[str, Any]] = []
    for branch in branches:
        if not branch:
            parts.append((names.fresh("identity"), None))
        elif (
            len(branch) == 1
            and not (isinstance(branch[0][1], Block) and branch[0][1].named)
            and not (isinstance(branch[0][1], Layer) and branch[0][1].type == "Identity")
        ):
            parts.append((branch[0][0], branch[0][1]))
        else:
            block = Block(tuple((n, node) for n, node, _ in branch), named=True)
            parts.append((names.fresh("main" if not parts else "branch"), block))
    return parts


def _class_name(owner: nn.Module) -> str | None:
    """The merge class's name: the module's own (a rebuilt block's without its ``_N``), capitalised."""
    from compiler.build.model import DataflowBlock, GraphBlock

    cls = type(owner).__name__
    if isinstance(owner, (GraphBlock, DataflowBlock)):
        cls = re.sub(r"_\d+$", "", cls)
    cls = cls.lstrip("_")
    return cls[:1].upper() + cls[1:] if cls.isidentifier() and cls.isascii() else None
