"""The one identifier check for the names a spec gives: variables, block names and the spec name.

Variables become module-level constants of the generated script, top-level blocks become local
variables of its ``build_model``, block names become ``nn.Module`` attributes (``add_module``), and
the spec name becomes the script's file name (``generated/<name>.py``). Each name is checked in this
order, and each refusal is a ``NameProblem`` with a message naming the clash and a fix:

1. Unicode: Python folds identifiers to NFKC (``ｎn`` *is* ``nn``), so a name that NFKC changes is refused;
2. a Python identifier, not a keyword (soft keywords included), not starting with ``__``;
3. not a name the generated script already uses: Python's builtins (``len``, ``print``), the script's
   settings (``SEED``, ``EPOCHS``), its imports (``io``, ``torch``, ``nn``), the functions it defines,
   and every helper copied from ``compiler/runtime/helpers.py`` (read with ``ast``, never imported);
4. block names only: not an attribute of ``torch.nn.Sequential`` (``forward``, ``training``, ``_modules``),
   and a top-level block not named like one of the spec's variables (both are locals of ``build_model``);
5. the spec name only: not a module a script imports (``json``, ``torch``): ``python generated/json.py``
   would import itself in its place.

No torch is imported here: ``MODULE_ATTRIBUTES`` is a constant, written by ``python -m compiler.front.names``
and compared with the installed torch by ``tests/test_hardening2.py``.
"""

from __future__ import annotations

import ast
import builtins
import functools
import keyword
import os
import pkgutil
import re
import sys
import unicodedata
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]

SETTINGS = frozenset(
    {
        "SEED",
        "EPOCHS",
        "MODE",
        "BATCH_SIZE",
        "SHUFFLE",
        "NUM_WORKERS",
        "LOG_EVERY",
        "DEVICE",
        "CHECKPOINT_DIR",
        "RUNS",
        "LOG",
        "CHECKPOINT_EVERY",
        "CHECKPOINT_EVERY_STEPS",
        "VAL_SPLIT",
        "PRECISION",
        "CHANNELS_LAST",
        "DATA_ON_DEVICE",
        "FLIPS",
        "COMPILE",
        "CUDA_GRAPH",
        "CUDNN_BENCHMARK",
        "REUSE_MEMORY",
        # a model of several outputs' (a loss per output)
        "OUTPUTS",
        "EVAL_OUTPUTS",
        "LOSS_WEIGHTS",
        "ACCURACY_OUTPUTS",
        # the trainer options' (issue 24), and the lean script's own
        "ACCUMULATE",
        "BEST",
        "BEST_CHECKPOINT",
        "CHECKPOINT",
        "CLIP_GRAD_NORM",
        "CLIP_GRAD_VALUE",
        "EARLY_STOP",
        "EMA_DECAY",
        "FREEZE",
        "MLFLOW_URI",
        "NORM_TYPE",
        "PARAM_GROUPS",
        "WARMUP",
        "WARMUP_FACTOR",
    }
)
IMPORTS = frozenset(
    {
        "io",
        "csv",
        "fnmatch",
        "struct",
        "zipfile",
        "tqdm",
        "json",
        "os",
        "sys",
        "time",
        "random",
        "argparse",
        "hashlib",
        "tempfile",
        "math",
        "pathlib",
        "Path",
        "torch",
        "torchvision",
        "nn",
        "optim",
        "F",
        "transforms",
        "datasets",
        "DataLoader",
        "Subset",
        "TensorDataset",
        "OrderedDict",
        "collections",
        "AveragedModel",
        "get_ema_multi_avg_fn",
        "pickle",
        "mlflow",
    }
)
# Older names kept reserved so specs stay portable between specc versions.
_FORMER = frozenset({"build_data"})


# A top-level statement that binds a name, as ruff formats the runtime modules: def/class, import, from-import
# (parenthesised over lines too), assignment. Read as text: parsing helpers.py's 1,700 lines took 30 ms of every
# `specc validate`; tests/test_layout.py holds this scan to the AST's answer.
_TOP_BINDING = re.compile(
    r"^(?:(?:async\s+)?def|class)\s+(\w+)|^import\s+([^\n#]+)|^from\s+\S+\s+import\s+(\([^)]*\)|[^\n#]+)"
    r"|^(\w+)\s*(?::[^=\n]*)?=(?!=)",
    re.MULTILINE,
)


def _runtime_names(module: str = "helpers.py") -> frozenset[str]:
    """Every name a module copied into scripts (``runtime/helpers.py``, ``runtime/layers.py``) binds at its top level."""
    names: set[str] = set()
    for match in _TOP_BINDING.finditer((_PACKAGE / "runtime" / module).read_text(encoding="utf-8")):
        defined, imported, imported_from, assigned = match.groups()
        names.add(defined or assigned or "")
        for part in (imported or imported_from or "").strip("()").split(","):
            name, _, alias = part.strip().partition(" as ")
            names.add((alias or name).strip().split(".")[0])
    names -= {"", "annotations"}  # `from __future__ import annotations` binds nothing in a script
    return frozenset(names)


def _template_functions() -> frozenset[str]:
    """The functions the script templates define (``build_model``, ``train``, ``main``, ...)."""
    found: set[str] = set()
    for template in sorted((_PACKAGE / "render" / "templates").glob("*.j2")):
        found.update(re.findall(r"^def (\w+)\(", template.read_text(encoding="utf-8"), re.MULTILINE))
    return frozenset(found)


def _registry_imports() -> frozenset[str]:
    """Built-in layers a script imports under their own names (torchvision's ``LayerNorm2d``)."""
    from compiler.facts.registry import REGISTRY

    return frozenset(e.class_name for kind in ("layer",) for e in REGISTRY.entries(kind) if e.imported_by_name)


# emit.py writes `init_weights`; scripts import tqdm, fnmatch, struct and zipfile where they use them
HELPERS = (
    _runtime_names()
    | _runtime_names("layers.py")
    | _template_functions()
    | _registry_imports()
    | {"init_weights", "ops", "make_divisible"}
)
BUILTINS = frozenset(name for name in dir(builtins) if not name.startswith("__"))
# Names the generated script defines or uses at module level: a variable or a block may not take them.
RESERVED_NAMES = SETTINGS | IMPORTS | HELPERS | _FORMER

# Modules a generated script's own folder would shadow if the spec name took their name: every importable
# top-level name -- the standard library's (private ones too: `_csv`, `_pickle`), the interpreter's built-in
# modules, and whatever is installed (``installed_modules``), plus the ones a script or specc itself imports.
MODULES = (
    frozenset(getattr(sys, "stdlib_module_names", ()))
    | frozenset(sys.builtin_module_names)
    | frozenset({"torch", "torchvision", "numpy", "PIL", "compiler", "specc", "tqdm", "typing_extensions"})
)


@functools.cache
def installed_modules() -> frozenset[str]:
    """The top-level modules and packages (namespace packages too: ``nvidia``) in site-packages, read from the
    folders (nothing is imported)."""
    folders = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]
    names = {module.name for module in pkgutil.iter_modules(folders)}
    for folder in folders:
        names.update(n.split(".")[0] for n in os.listdir(folder) if n.split(".")[0].isidentifier())
    return frozenset(names)


def _own_attributes() -> frozenset[str]:
    """The attributes specc's own container classes use on themselves (``self._op``, ``self._branches`` in a
    merge block, read from ``build/model.py``): a block name is an attribute of its parent, so not one of these."""
    tree = ast.parse((_PACKAGE / "build" / "model.py").read_text(encoding="utf-8"))
    return frozenset(
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
    )


OWN_ATTRIBUTES = _own_attributes()

# dir(torch.nn.Sequential()) without dunders: a block name is an attribute name on its parent
# (nn.Module.add_module refuses one that exists). Regenerate with `python -m compiler.front.names`.
# BEGIN MODULE_ATTRIBUTES
MODULE_ATTRIBUTES = frozenset(
    {
        "T_destination",
        "_apply",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_buffers",
        "_call_impl",
        "_compiled_call_impl",
        "_forward_hooks",
        "_forward_hooks_always_called",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
        "_get_backward_hooks",
        "_get_backward_pre_hooks",
        "_get_item_by_idx",
        "_get_name",
        "_is_full_backward_hook",
        "_load_from_state_dict",
        "_load_state_dict_post_hooks",
        "_load_state_dict_pre_hooks",
        "_maybe_warn_non_full_backward_hook",
        "_modules",
        "_named_members",
        "_non_persistent_buffers_set",
        "_parameters",
        "_register_load_state_dict_pre_hook",
        "_register_state_dict_hook",
        "_replicate_for_data_parallel",
        "_save_to_state_dict",
        "_slow_forward",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_version",
        "_wrapped_call_impl",
        "add_module",
        "append",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extend",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "insert",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "pop",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
    }
)
# END MODULE_ATTRIBUTES


class NameProblem(ValueError):
    """A name a spec may not use: ``message`` names the clash, ``fix`` suggests another name."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.message, self.fix = message, fix


_WHAT = {"var": "a variable name", "block": "a block name", "spec": "a spec name"}


def check_variable(name: str) -> None:
    _check(name, "var")


# A child's key as torchvision writes some (RegNet's `block1-0`): torch's add_module takes any text without a
# `.`; specc takes these plain characters, which every file that holds the key (YAML, a script, a checkpoint)
# writes as they are. It starts as an identifier does: a leading digit would read as a list's index (`0`).
CHILD_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def check_block_name(name: str, attribute: bool = False) -> None:
    """A block (or branch) name becomes a module attribute, so it must not be one of ``nn.Module``'s. Where it
    is also a local variable of the script's ``build_model``, the emitter renames the variable (``nn_1``) if it
    would hide a global. A child of a named block (an ``nn.Sequential`` key) may also be a ``CHILD_KEY`` that is
    no identifier (``block1-0``): the script writes it as a string, its variable a legal name. An ``attribute``
    (a merge block's or a graph node's child, ``self.<name>`` in its class) must be an identifier."""
    if not name.isidentifier() and CHILD_KEY.fullmatch(name):
        if attribute:
            raise NameProblem(
                f"a merge block's or graph node's child is an attribute of its class (self.<name>), so its name"
                f" must be a Python identifier, got {_short(name)}",
                f"{_fix(name, 'block', plain=True)}; a key such as {_short(name)} may name a child of a named"
                " block (an nn.Sequential)",
            )
        return
    if not name.isidentifier():
        raise NameProblem(
            f"a block name must be a Python identifier or a key of letters, digits, '_' and '-' that starts with a"
            f" letter or '_', got {_short(name)}",
            _fix(name, "block", plain=True),
        )
    _check(name, "block", globals_too=False)
    if name in MODULE_ATTRIBUTES or name in OWN_ATTRIBUTES:
        raise _taken(name, "block", "an attribute of torch.nn.Module or specc's blocks, which the block is added to")
    if name in BUILTINS:  # a branch is a parameter of its merge class's __init__: `super` would hide super()
        raise _taken(name, "block", "a Python builtin, which its merge class's code calls")


def check_spec_name(name: str) -> None:
    _check(name, "spec")
    if name in MODULES or name in installed_modules():
        raise NameProblem(
            f"spec name {name!r} is the name of a Python module: generated/{name}.py would be imported in its place",
            _fix(name, "spec"),
        )


def _check(name: str, kind: str, globals_too: bool = True) -> None:
    what = _WHAT[kind]
    shown = _short(name)
    folded = unicodedata.normalize("NFKC", name)
    if folded != name:
        raise NameProblem(
            f"{what} must be written as Python reads it: {shown} becomes {_short(folded)} (Unicode NFKC)",
            _fix(name, kind, plain=True),
        )
    if not name.isidentifier():
        raise NameProblem(f"{what} must be a Python identifier, got {shown}", _fix(name, kind, plain=True))
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise NameProblem(f"{what} must not be a Python keyword, got {shown}", _fix(name, kind))
    if name.startswith("__"):
        raise NameProblem(f"{what} must not start with '__', got {shown}", _fix(name, kind))
    reason = _reason(name) if globals_too else None
    if reason:
        raise _taken(name, kind, reason)


def _reason(name: str) -> str:
    if name in SETTINGS:
        return "one of its settings"
    if name in IMPORTS:
        return "a module or class it imports"
    if name in HELPERS or name in _FORMER:
        return "a function or class it defines"
    if name in BUILTINS:
        return "a Python builtin"
    return ""


def _taken(name: str, kind: str, reason: str) -> NameProblem:
    noun = _WHAT[kind][2:]
    return NameProblem(f"{noun} {_short(name)} is taken by the generated script ({reason})", _fix(name, kind))


def _short(name: str) -> str:
    return repr(name) if len(name) <= 60 else repr(name[:40]) + f"... ({len(name)} characters)"


def _fix(name: str, kind: str, plain: bool = False) -> str:
    """A suggestion that passes every check: `seed_` for `SEED`, `nn_` for `ｎn`, `my_model` for `my-model`."""
    text = re.sub(r"\W+", "_", unicodedata.normalize("NFKC", name))[:40].strip("_") or kind
    if text[0].isdigit():
        text = f"{kind}_{text}"
    text = text.lstrip("_") or kind
    while text == name or _reason(text) or _attribute_or_module(text) or keyword.iskeyword(text):
        text += "_"
    if keyword.issoftkeyword(text):
        text += "_"
    if kind == "spec":
        return f"e.g. `name: {text}`"
    return f"write it in plain characters, e.g. {text!r}" if plain else f"rename it, e.g. {text!r}"


def _attribute_or_module(name: str) -> bool:
    return name in MODULE_ATTRIBUTES or name in OWN_ATTRIBUTES or name in MODULES or name in installed_modules()


def _generate() -> str:
    """The MODULE_ATTRIBUTES block for the installed torch (run `python -m compiler.front.names` to rewrite it)."""
    import torch

    attributes = sorted(n for n in dir(torch.nn.Sequential()) if not n.startswith("__"))
    body = "".join(f'        "{n}",\n' for n in attributes)
    return (
        f"# BEGIN MODULE_ATTRIBUTES\nMODULE_ATTRIBUTES = frozenset(\n    {{\n{body}    }}\n)\n# END MODULE_ATTRIBUTES\n"
    )


if __name__ == "__main__":
    source = Path(__file__).read_text(encoding="utf-8")
    start, end = source.index("# BEGIN MODULE_ATTRIBUTES"), source.index("# END MODULE_ATTRIBUTES\n")
    Path(__file__).write_text(source[:start] + _generate() + source[end + len("# END MODULE_ATTRIBUTES\n") :])
    print(f"rewrote MODULE_ATTRIBUTES in {__file__}")
