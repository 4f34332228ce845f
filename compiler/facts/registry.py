"""The one table of everything a spec may name, read by validation, both backends and the docs.

An entry says where the class lives, how the generated script spells it, and which argument
shape inference fills. A spec can only name entries of this table: nothing is ever imported
from a string in a spec. Argument names, order and types come from the class's own
signature, read from ``torch_facts.json`` (generated from the installed torch by
``python -m compiler.facts.make_table``; a test regenerates and compares it) so validation need not
import torch, or by ``inspect.signature`` for plugins and when the table is for another torch;
the torchvision entries carry their parameter names statically (``tests/test_torch_facts.py``
checks them against torchvision's own signatures in the table).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from compiler.facts import torch_facts

# How the generated script spells each module (render.py writes the import from the names the script reads).
SCRIPT_ALIASES = {
    "compiler.runtime.helpers": "",  # copied into the script itself
    "compiler.runtime.layers": "",  # likewise
    "torch.nn": "nn",
    "torch.nn.init": "nn.init",
    "torch.optim": "optim",
    "torch.optim.lr_scheduler": "optim.lr_scheduler",
    "torchvision.transforms": "transforms",
    "torchvision.datasets": "datasets",
    "torchvision.ops": "ops",
}


@dataclass(frozen=True)
class Entry:
    name: str  # what a spec writes
    kind: str  # layer | loss | optimizer | scheduler | transform | dataset
    module: str  # where the class lives ("" for specc's own entries, e.g. GradientDescent)
    attr: str = ""  # class name in that module (default: name)
    infer: str | None = None  # the argument shape inference fills
    infer_axis: str = "channels"  # channels: dim 0 of a sample | features: its last dim
    returns_tuple: bool = False  # e.g. LSTM returns (output, (h, c))
    takes_tuple: bool = False  # TupleItem: the one layer that may follow a tuple-returning one
    takes_indices: bool = False  # e.g. Embedding takes integer indices
    # layers whose forward takes several tensors (a graph step's `from:`), e.g. MultiheadAttention's
    forward_inputs: tuple[str, ...] = ()
    forward_options: tuple[str, ...] = ()  # keyword arguments of forward a graph step's `with:` may give (literals)
    random: bool = False  # a Random* transform: applied per sample, left out of eval transforms
    params: tuple[str, ...] | None = None  # static parameter names, "name!" if required (torchvision)
    replaced_by: str | None = None  # a deprecated alias (Scale -> Resize)
    # optimizers: `fusable` (speed: auto sets fused=True), `graph_safe` (a CUDA graph may capture its step)
    fusable: bool = False
    graph_safe: bool = False
    steps: str = "epoch"  # schedulers: when step() runs: epoch | batch | loss (on the validation loss)
    # arguments torch needs in one of these combinations (defaults None in the signature), e.g. OneCycleLR's length
    one_of: tuple[tuple[str, ...], ...] = ()
    targets: str | None = None  # losses: "classes" (class labels) | "values" (same shape as the output)
    # what a loss expects of the model's output, and what a final layer makes of it: "logits" (raw scores),
    # "probabilities" (Softmax, Sigmoid) or "log_probabilities" (LogSoftmax); a mismatch is a lint warning
    expects: str | None = None  # losses
    produces: str | None = None  # layers
    norm: bool = False  # normalisation layers (train.no_decay: [norm] turns their weight decay off)
    flip_axis: int | None = None  # random flips: the tensor axis flipped (data_on_device flips on the device)
    sample: tuple | None = None  # image datasets: (C, H, W) of a sample before transforms (None: unknown size)
    classes: int | None = None  # image datasets: number of classes
    test_split: bool = False  # datasets with torchvision's `train=False` split
    image: bool = False  # datasets whose samples are PIL images
    # specc's own entries: the runtime helpers (compiler/runtime/helpers.py) a generated script copies to make it
    runtime: tuple[str, ...] = ()
    inputs: str | None = None  # datasets: the runtime helper that reads new inputs for prediction (--predict)
    cls_object: Any = field(default=None, compare=False, hash=False)  # registered from Python
    shape_rule: Any = field(default=None, compare=False, hash=False)  # a plugin's own: (in_shape, arguments) -> shape

    @property
    def class_name(self) -> str:
        return self.attr or self.name

    @property
    def arity(self) -> int:
        """How many tensors the layer's forward takes."""
        return max(1, len(self.forward_inputs))

    @property
    def inputs_named(self) -> tuple[str, ...]:
        return self.forward_inputs or ("input",)

    @property
    def script_name(self) -> str:
        """How the generated script spells the class, e.g. ``nn.Conv2d``."""
        if self.cls_object is not None or not SCRIPT_ALIASES.get(self.module):
            return self.class_name
        return f"{SCRIPT_ALIASES[self.module]}.{self.class_name}"

    @property
    def imported_by_name(self) -> bool:
        """A built-in entry the script imports under its own name (``from torchvision.models.convnext import
        LayerNorm2d``): that name is then taken at the script's top level."""
        return self.cls_object is None and self.module not in SCRIPT_ALIASES

    def resolve(self) -> Any:
        """Import and return the class (lazily: torch and torchvision cost seconds)."""
        if self.cls_object is not None:
            return self.cls_object
        return getattr(importlib.import_module(self.module), self.class_name)

    def signature(self) -> inspect.Signature:
        """The constructor's signature: static for torchvision entries, from ``torch_facts`` for torch's (no
        import needed), read from the class for plugins or when the table is for another torch."""
        if self.params is not None:
            return inspect.Signature([self._static_parameter(p) for p in self.params])
        if self.cls_object is None:
            sig = torch_facts.signature(self)  # from the checked-in table: no torch import
            if sig is not None:
                return sig
        return torch_facts.live_signature(self)

    def _static_parameter(self, spelt: str) -> inspect.Parameter:
        """One of ``params``: "name!" is required; torchvision's get their type from TORCHVISION_TYPES."""
        name = spelt.rstrip("!")
        annotation = inspect.Parameter.empty
        if self.module.startswith("torchvision"):
            annotation = TORCHVISION_TYPES.get(f"{self.name}.{name}", TORCHVISION_TYPES.get(name, annotation))
        default = inspect.Parameter.empty if spelt.endswith("!") else None
        return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)


def _layers(names: str, **kw: Any) -> list[Entry]:
    return [Entry(n, "layer", "torch.nn", **kw) for n in names.split()]


LAYERS: list[Entry] = [
    # convolutions: input (C, *spatial)
    *_layers("Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d", infer="in_channels"),
    # pooling
    *_layers("MaxPool1d MaxPool2d MaxPool3d AvgPool1d AvgPool2d AvgPool3d LPPool1d LPPool2d LPPool3d"),
    *_layers("AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d"),
    *_layers("AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d"),
    # normalisation
    *_layers(
        "BatchNorm1d BatchNorm2d BatchNorm3d InstanceNorm1d InstanceNorm2d InstanceNorm3d",
        infer="num_features",
        norm=True,
    ),
    *_layers("GroupNorm", infer="num_channels", norm=True),
    *_layers("LayerNorm RMSNorm", infer="normalized_shape", infer_axis="features", norm=True),
    *_layers("LocalResponseNorm"),
    # dense
    *_layers("Linear", infer="in_features", infer_axis="features"),
    *_layers("Bilinear"),
    *_layers("Embedding EmbeddingBag", takes_indices=True),
    # recurrent: return (output, state)
    *_layers("RNN LSTM GRU", infer="input_size", infer_axis="features", returns_tuple=True),
    *_layers("TransformerEncoderLayer"),
    # attention: forward(query, key, value) -> (output, weights); a graph step (§15) with `from: [q, k, v]`
    *_layers(
        "MultiheadAttention",
        returns_tuple=True,
        forward_inputs=("query", "key", "value"),
        forward_options=("need_weights", "average_attn_weights", "is_causal"),
    ),
    # regularisation
    *_layers("Dropout Dropout1d Dropout2d Dropout3d AlphaDropout FeatureAlphaDropout"),
    # reshaping and resampling
    *_layers("Flatten Unflatten Identity Upsample UpsamplingNearest2d UpsamplingBilinear2d"),
    *_layers("PixelShuffle PixelUnshuffle ChannelShuffle Unfold"),
    *_layers("ZeroPad1d ZeroPad2d ZeroPad3d ConstantPad1d ConstantPad2d ConstantPad3d"),
    *_layers("ReflectionPad1d ReflectionPad2d ReflectionPad3d ReplicationPad1d ReplicationPad2d ReplicationPad3d"),
    *_layers("CircularPad1d CircularPad2d CircularPad3d"),
    # activations
    *_layers("ReLU ReLU6 PReLU LeakyReLU RReLU ELU SELU CELU GELU SiLU Mish Tanh"),
    *_layers("Sigmoid", produces="probabilities"),
    *_layers("LogSigmoid"),
    *_layers("Hardtanh Hardswish Hardsigmoid Hardshrink Softshrink Tanhshrink Softplus Softsign Threshold GLU"),
    *_layers("Softmax Softmin", produces="probabilities"),
    *_layers("LogSoftmax", produces="log_probabilities"),
    *_layers("Softmax2d", produces="probabilities"),
    # specc's own (compiler/runtime/layers.py): what torch.nn has no module for
    *(
        Entry(n, "layer", "compiler.runtime.layers")
        for n in "Select Slice Permute Transpose Mean Sum Amax Reshape".split()
    ),
    Entry("TupleItem", "layer", "compiler.runtime.layers", takes_tuple=True),
    Entry("StochasticDepth", "layer", "torchvision.ops", params=("p!", "mode!")),
    # ConvNeXt's LayerNorm over the channels of (N, C, H, W): nn.LayerNorm's arguments (its signature, in the table)
    Entry("LayerNorm2d", "layer", "torchvision.models.convnext", infer="normalized_shape", norm=True),
    # detection backbones' BatchNorm2d with its statistics and affine values as buffers (no parameters, no updates)
    Entry("FrozenBatchNorm2d", "layer", "torchvision.ops", infer="num_features", norm=True),
]


def _losses(names: str, **kw: Any) -> list[Entry]:
    return [Entry(n, "loss", "torch.nn", **kw) for n in names.split()]


LOSSES: list[Entry] = [
    *_losses("CrossEntropyLoss", targets="classes", expects="logits"),
    *_losses("NLLLoss", targets="classes", expects="log_probabilities"),
    *_losses("MultiMarginLoss", targets="classes"),
    *_losses("MSELoss L1Loss SmoothL1Loss HuberLoss", targets="values"),
    *_losses("BCELoss", targets="probabilities", expects="probabilities"),
    *_losses("BCEWithLogitsLoss", targets="probabilities", expects="logits"),
    *_losses("KLDivLoss PoissonNLLLoss MultiLabelMarginLoss MultiLabelSoftMarginLoss SoftMarginLoss"),
]

OPTIMIZERS: list[Entry] = [
    Entry("SGD", "optimizer", "torch.optim", graph_safe=True),
    Entry("Adam", "optimizer", "torch.optim", fusable=True, graph_safe=True),
    Entry("AdamW", "optimizer", "torch.optim", fusable=True, graph_safe=True),
    *(
        Entry(n, "optimizer", "torch.optim")
        for n in "Adagrad RMSprop Adadelta Adamax NAdam RAdam ASGD Rprop Adafactor".split()
    ),
    # the tutorial's hand-written rule: param -= lr * param.grad
    Entry("GradientDescent", "optimizer", "compiler.runtime.helpers", runtime=("GradientDescent",)),
]

# Optimizer and scheduler arguments torch refuses when negative (checked without constructing them).
NON_NEGATIVE_ARGS = frozenset(
    "lr eps momentum weight_decay lr_decay rho alpha dampening gamma initial_accumulator_value momentum_decay "
    "eta_min max_lr step_size T_max T_0".split()
)

SCHEDULERS: list[Entry] = [
    *(
        Entry(n, "scheduler", "torch.optim.lr_scheduler")
        for n in (
            "StepLR MultiStepLR ExponentialLR CosineAnnealingLR CosineAnnealingWarmRestarts LinearLR ConstantLR "
            "PolynomialLR"
        ).split()
    ),
    Entry("ReduceLROnPlateau", "scheduler", "torch.optim.lr_scheduler", steps="loss"),
    Entry("CyclicLR", "scheduler", "torch.optim.lr_scheduler", steps="batch"),
    Entry(
        "OneCycleLR",
        "scheduler",
        "torch.optim.lr_scheduler",
        steps="batch",
        one_of=(("total_steps",), ("epochs", "steps_per_epoch")),
    ),
]


# The types torchvision's transforms and datasets take, by argument name ("Entry.argument" where one differs):
# their signatures carry no annotations, so these are what the binder checks a spec's values against
# (data_rules.py then checks the values themselves). A float takes an int too (pydantic's strict mode).
_NUMBERS = float | tuple[float, ...]
TORCHVISION_TYPES: dict[str, Any] = {
    "size": int | tuple[int, ...],
    "FakeData.size": int,
    "p": float,
    "mean": _NUMBERS,
    "std": _NUMBERS,
    "inplace": bool,
    "mode": str | None,
    "interpolation": int | str,  # an int; a name is refused by data_rules with its code
    "max_size": int | None,
    "antialias": bool | None,
    "padding": int | tuple[int, ...] | None,
    "pad_if_needed": bool,
    "fill": _NUMBERS,
    "padding_mode": str,
    "degrees": _NUMBERS,
    "expand": bool,
    "center": tuple[float, ...] | None,
    "num_output_channels": int,
    "root": str,
    "download": bool,
    "allow_empty": bool,
    "image_size": tuple[int, ...],
    "num_classes": int,
    "random_offset": int,
}


def _tv(name: str, kind: str, params: str, **kw: Any) -> Entry:
    module = "torchvision.transforms" if kind == "transform" else "torchvision.datasets"
    return Entry(name, kind, module, params=tuple(params.split()), **kw)


TRANSFORMS: list[Entry] = [
    _tv("ToTensor", "transform", ""),
    _tv("ToPILImage", "transform", "mode"),
    _tv("Normalize", "transform", "mean! std! inplace"),
    _tv("Resize", "transform", "size! interpolation max_size antialias"),
    _tv("Scale", "transform", "size! interpolation max_size antialias", attr="Resize", replaced_by="Resize"),
    _tv("CenterCrop", "transform", "size!"),
    _tv("RandomCrop", "transform", "size! padding pad_if_needed fill padding_mode", random=True),
    _tv("RandomHorizontalFlip", "transform", "p", random=True, flip_axis=-1),
    _tv("RandomVerticalFlip", "transform", "p", random=True, flip_axis=-2),
    _tv("RandomRotation", "transform", "degrees! interpolation expand center fill", random=True),
    _tv("Grayscale", "transform", "num_output_channels"),
    _tv("Pad", "transform", "padding! fill padding_mode"),
]

# `transform`, `target_transform` and `train` are supplied by specc (transforms:, the splits)
_IMAGES = {"image": True, "inputs": "image_inputs"}
_SPLIT = {"test_split": True, **_IMAGES}
DATASETS: list[Entry] = [
    _tv("MNIST", "dataset", "root! download", sample=(1, 28, 28), classes=10, **_SPLIT),
    _tv("FashionMNIST", "dataset", "root! download", sample=(1, 28, 28), classes=10, **_SPLIT),
    _tv("KMNIST", "dataset", "root! download", sample=(1, 28, 28), classes=10, **_SPLIT),
    _tv("CIFAR10", "dataset", "root! download", sample=(3, 32, 32), classes=10, **_SPLIT),
    _tv("CIFAR100", "dataset", "root! download", sample=(3, 32, 32), classes=100, **_SPLIT),
    _tv("ImageFolder", "dataset", "root! allow_empty", sample=(3, None, None), **_IMAGES),
    _tv("FakeData", "dataset", "size image_size num_classes random_offset", **_IMAGES),
    # specc's own: the tutorial's random tensors, and tabular files
    Entry(
        "Synthetic", "dataset", "", params=("size!", "inputs!", "targets", "classes"), runtime=("synthetic_dataset",)
    ),
    Entry(
        "CSV",
        "dataset",
        "",
        params=("path!", "target!", "features", "test_path", "image"),
        runtime=("csv_datasets",),
        inputs="csv_inputs",
    ),
    # text as token ids: a CSV file (a text and a label column) or a folder of text files per class
    Entry(
        "Text",
        "dataset",
        "",
        params=tuple("path! text label test_path tokenize max_length min_freq max_vocab lowercase padding".split()),
        runtime=("text_datasets",),
        inputs="text_inputs",
    ),
]

# torch.nn.init: the functions `init:` rules may call on a parameter
INITS: list[Entry] = [
    Entry(n, "init", "torch.nn.init")
    for n in (
        "uniform_ normal_ trunc_normal_ constant_ ones_ zeros_ eye_ dirac_ xavier_uniform_ xavier_normal_ "
        "kaiming_uniform_ kaiming_normal_ orthogonal_ sparse_"
    ).split()
]


class Registry:
    """Name -> entry, per kind. `register_layer` adds Python-defined layers (never from a spec)."""

    def __init__(self, entries: list[Entry]):
        self._by_kind: dict[str, dict[str, Entry]] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: Entry) -> None:
        table = self._by_kind.setdefault(entry.kind, {})
        if entry.name in table and table[entry.name] != entry:
            raise ValueError(f"{entry.kind} {entry.name!r} is already registered")
        table[entry.name] = entry

    def get(self, kind: str, name: str) -> Entry | None:
        return self._by_kind.get(kind, {}).get(name)

    def names(self, kind: str) -> list[str]:
        return list(self._by_kind.get(kind, {}))

    def entries(self, kind: str) -> list[Entry]:
        return list(self._by_kind.get(kind, {}).values())

    def is_layer(self, name: str) -> bool:
        return name in self._by_kind.get("layer", {})


REGISTRY = Registry(LAYERS + LOSSES + OPTIMIZERS + SCHEDULERS + TRANSFORMS + DATASETS + INITS)


def register_layer(
    cls: type,
    name: str | None = None,
    *,
    infer: str | None = None,
    infer_axis: str = "channels",
    shape: Callable[[tuple[int, ...], dict[str, Any]], tuple[int, ...]] | None = None,
) -> Entry:
    """Make a Python-defined ``nn.Module`` subclass nameable in specs.

    This is the only way to extend the set of layers: a spec can never import code itself.
    A generated script imports the class from its module (``cls.__module__``).

    ``shape`` is the layer's shape rule: given one sample's input shape (no batch dimension) and every
    constructor argument by name (defaults filled in), it returns the output shape, or raises
    ``compiler.ShapeError(message, fix)`` (or ``ValueError``) for an input the layer cannot take. Without it,
    validation runs the layer once on the meta device and warns that the shape came from there.
    """
    name = name or getattr(cls, "__name__", "")
    _check_plugin(cls, name, infer, shape)
    entry = Entry(
        name,
        "layer",
        cls.__module__,
        attr=cls.__qualname__,
        infer=infer,
        infer_axis=infer_axis,
        cls_object=cls,
        shape_rule=shape,
    )
    REGISTRY.add(entry)
    return entry


def _check_plugin(cls: Any, name: str, infer: str | None, shape: Any) -> None:
    from torch import nn

    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_layer expects an nn.Module subclass, got {cls!r}")
    if not name.isidentifier():
        raise ValueError(f"layer name {name!r} is not an identifier")
    if infer is not None and infer not in inspect.signature(cls).parameters:
        raise ValueError(f"{cls.__name__} has no argument {infer!r} to infer")
    if shape is not None and not callable(shape):
        raise TypeError(f"shape must be a function (in_shape, arguments) -> output shape, got {shape!r}")
