"""specc: a declarative model-spec compiler for PyTorch.

    spec = compiler.load_spec("specs/mnist_cnn.yaml")   # validated, shapes checked
    model = compiler.build_model(spec)                   # nested nn.Sequential
    script = compiler.render_script(spec)                # a standalone training script

Every bad spec raises ``SpecError``, whose ``str`` lists each problem as ``file:line:col: message``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from compiler.errors import Problem, RenderError, SpecError

if TYPE_CHECKING:
    from compiler.facts.registry import register_layer
    from compiler.facts.shapes import ShapeError
    from compiler.front.spec import Spec
    from compiler.pipeline import (
        SpecWarning,
        build_model,
        build_training,
        load_spec,
        lower_spec,
        parse_spec,
        render_script,
    )
    from compiler.workflow.runs import evaluate, predict

# Imported on first use: `import compiler` (and the `specc` command's start) stays light, and a Ctrl-C
# during the seconds torch takes to import reaches the command's own handling.
_LAZY = {
    **dict.fromkeys(
        "SpecWarning build_model build_training load_spec lower_spec parse_spec render_script".split(),
        "compiler.pipeline",
    ),
    **dict.fromkeys(("evaluate", "predict"), "compiler.workflow.runs"),
    "register_layer": "compiler.facts.registry",
    "ShapeError": "compiler.facts.shapes",
    "Spec": "compiler.front.spec",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'compiler' has no attribute {name!r}")


__all__ = [
    "Problem",
    "RenderError",
    "ShapeError",
    "Spec",
    "SpecError",
    "SpecWarning",
    "build_model",
    "build_training",
    "evaluate",
    "export",
    "load_spec",
    "lower_spec",
    "parse_spec",
    "predict",
    "register_layer",
    "render_script",
    "to_spec",
]


def to_spec(module, input=(3, 224, 224), name=None, **kwargs):
    """The spec (YAML text) of a live ``nn.Module``, verified against it (``compiler.interop.decompile.to_spec``)."""
    from compiler.interop.decompile import to_spec as decompile

    return decompile(module, input, name, **kwargs)


def export(spec, path, format="onnx", checkpoint=None, **kwargs):
    """Write the spec's model as ONNX or a torch.export program (``compiler.interop.exporting.export``); imported lazily."""
    from compiler.interop.exporting import export as run_export

    return run_export(spec, path, format=format, checkpoint=checkpoint, **kwargs)
