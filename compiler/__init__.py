"""specc: a declarative model-spec compiler for PyTorch.

    spec = compiler.load_spec("specs/mnist_cnn.yaml")   # validated, shapes checked
    model = compiler.build_model(spec)                   # nested nn.Sequential
    script = compiler.render_script(spec)                # a standalone training script

Every bad spec raises ``SpecError``, whose ``str`` lists each problem as ``file:line:col: message``.
"""

from ._api import (
    SpecWarning,
    build_model,
    build_training,
    evaluate,
    load_spec,
    lower_spec,
    parse_spec,
    predict,
    render_script,
)
from .errors import Problem, SpecError
from .registry import register_layer
from .spec import Spec

__all__ = [
    "Problem",
    "Spec",
    "SpecWarning",
    "SpecError",
    "build_model",
    "build_training",
    "evaluate",
    "load_spec",
    "lower_spec",
    "parse_spec",
    "predict",
    "register_layer",
    "render_script",
]
