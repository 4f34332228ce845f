"""Stage 2: plain data -> a validated ``Spec`` (pydantic v2, unknown keys forbidden).

The model grammar (spec-language.md §2) is parsed here into ``Block``/``Layer``/``Repeat``
nodes; every node keeps the YAML path it came from so later stages can still point at it.
`$vars` and arithmetic are evaluated first (see ``expr``); their Python text is kept in
``Spec.symbols`` so the generated script stays symbolic. No torch is imported here.
"""

from __future__ import annotations

import keyword
import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from compiler.common.literal import literal
from compiler.common.suggest import did_you_mean
from compiler.facts.registry import REGISTRY
from compiler.front.expand import GRAPH_OPS, Library, check_use
from compiler.front.expr import Evaluated, ExprError, evaluate, references
from compiler.front.load import Path_, Source
from compiler.front.names import RESERVED_NAMES, NameProblem, check_block_name, check_spec_name, check_variable
from compiler.front.problems import Problems

MAX_REPEAT = 10_000
MAX_MODULES = 100_000  # per model; checked here before repeats are copied, and again while lowering
# `init:` path patterns: each module is tried against every pattern (validation, build and the script's
# init_weights), so the patterns and their product with the modules are bounded before any is tried
MAX_INIT_PATTERNS = 1_000
MAX_INIT_MATCHES = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Call(_Strict):
    """`TypeName`, `{TypeName: {kw: v}}`, `{TypeName: [args]}` or `{TypeName: scalar}`."""

    type: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    form: Literal["bare", "kwargs", "list", "scalar"] = "bare"
    yaml_path: tuple[Any, ...] = ()


class Layer(Call):
    kind: Literal["layer"] = "layer"


class SchedulerCall(Call):
    """A scheduler, optionally with `interval: step` (step after every update instead of every epoch)."""

    interval: Literal["step", "epoch"] | None = None


SCHEDULER_INTERVALS = ("step", "epoch")


class Repeat(_Strict):
    kind: Literal["repeat"] = "repeat"
    count: int
    body: Block
    yaml_path: tuple[Any, ...] = ()


class Use(_Strict):
    """A use of a `blocks:` definition, `{Bottleneck: {width: 64}}`: its body is instantiated while lowering."""

    kind: Literal["use"] = "use"
    block: str
    args: dict[str, Any] = Field(default_factory=dict)
    yaml_path: tuple[Any, ...] = ()


class Block(_Strict):
    kind: Literal["block"] = "block"
    named: bool
    children: tuple[tuple[str, Node], ...]  # (name or "" for list items, node)
    yaml_path: tuple[Any, ...] = ()


class Merge(_Strict):
    """`{merge: add|cat|mul, branches: {name: node, ...}, before?, then?, dim?, class?}`."""

    kind: Literal["merge"] = "merge"
    op: Literal["add", "cat", "mul"]
    dim: int = 1
    class_name: str | None = None
    before: Node | None = None
    branches: tuple[tuple[str, Node], ...]
    then: Node | None = None
    yaml_path: tuple[Any, ...] = ()


class Tensor(_Strict):
    """A parameter or buffer of a graph node (§15): `name: {shape: [...], dtype?, init?}`."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    init: Call | None = None  # an `init:` function (§11); None: zeros
    buffer: bool = False
    yaml_path: tuple[Any, ...] = ()


class InitRule(_Strict):
    """One `init:` rule: the modules it matches and, per parameter name, the init function; or, written
    `{from: PATH, strict: true}`, weights loaded from a file (``load``) after the other rules have run."""

    types: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    calls: tuple[tuple[str, Call], ...] = ()
    load: str | None = None  # `from:` a specc checkpoint, a state dict or a torchvision weights file
    strict: bool = True  # every tensor of the model from the file (else the matching ones, with a report)
    yaml_path: tuple[Any, ...] = ()


class Step(_Strict):
    """One step of a graph node: a named child (``node``) or an operation (``op``) on named values."""

    name: str = ""  # the child's name (its module attribute and its value), "" for an operation
    node: Node | None = None
    op: str | None = None  # add sub mul div matmul cat stack expand_batch interpolate
    call: str | None = None  # `call: name` (a module of `modules:`) or `call: name.K` (member K of a declared list)
    dim: int | None = None  # cat and stack
    mode: str | None = None  # interpolate
    training: bool = False  # `when: training`: the step runs only in training mode
    keep: bool = True  # `keep: false`: the child is built (its weights drawn, `init:` applied), then dropped
    inputs: tuple[str, ...] | None = None  # `from:` (a child) or the operation's operands; None: the previous value
    outputs: tuple[str, ...] | None = None  # `as:` names (a list unpacks a tuple)
    unpack: bool = False  # `as:` was a list
    keywords: dict[str, Any] = Field(default_factory=dict)  # `with:`: keyword arguments of the child's call
    yaml_path: tuple[Any, ...] = ()


class Graph(_Strict):
    """`{graph: [steps], params?, buffers?, output?, class?}`: named values flowing through steps (§15)."""

    kind: Literal["graph"] = "graph"
    steps: tuple[Step, ...]
    tensors: tuple[Tensor, ...] = ()
    modules: tuple[tuple[str, Node], ...] = ()  # declared children, registered first, run by `call:` steps
    inputs: tuple[str, ...] = ("x",)  # the forward's arguments
    output: str | None = None  # one value (None: the last step's)
    outputs: tuple[str, ...] | None = None  # several: a tuple of these values, or a dict when ``output_keys``
    output_keys: tuple[str, ...] | None = None
    eval_outputs: tuple[str, ...] | None = None  # `eval_output:`: what eval mode returns (one value or a tuple)
    eval_tuple: bool = False
    class_name: str | None = None
    init: tuple[InitRule, ...] = ()  # rules run once the node is built (paths relative to it), before its parent
    yaml_path: tuple[Any, ...] = ()


class Broken(_Strict):
    """A node the parser refused (already reported): lowering skips it and the shapes after it are unknown,
    so the rest of the model is still checked in the same pass."""

    kind: Literal["broken"] = "broken"
    yaml_path: tuple[Any, ...] = ()


Node = Annotated[Layer | Block | Repeat | Merge | Graph | Broken | Use, Field(discriminator="kind")]

MERGE_OPS = ("add", "cat", "mul")
MERGE_KEYS = ("merge", "dim", "class", "before", "branches", "then")


class Checkpoint(_Strict):
    dir: str | None = None  # the folder of runs (default runs/<name>)
    every: int = Field(1, ge=1)  # epochs
    every_steps: int | None = Field(None, ge=1)  # also mid-epoch, every N updates
    best: Literal["val_loss", "val_accuracy"] | None = None  # run options (issue 24): also keep best.pt


class _Refused(ValueError):
    """A value a section's own validator refuses, with its fix (read by ``_pydantic_message``)."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


class ClipGrad(_Strict):
    """`clip_grad: {norm: 1.0}` (torch.nn.utils.clip_grad_norm_; `norm_type: 2` unless given) or `{value: 0.5}`
    (clip_grad_value_): the gradients are clipped before every update."""

    norm: float | None = Field(None, gt=0)
    value: float | None = Field(None, gt=0)
    norm_type: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> ClipGrad:
        if (self.norm is None) == (self.value is None):
            raise _Refused(
                "clip_grad needs exactly one of `norm:` (the gradients' total norm) or `value:` (each gradient)",
                "e.g. `clip_grad: {norm: 1.0}` (clip_grad_norm_) or `clip_grad: {value: 0.5}` (clip_grad_value_)",
            )
        if self.value is not None and "norm_type" in self.model_fields_set:
            raise _Refused("clip_grad's `norm_type:` goes with `norm:`, not `value:`", "remove `norm_type:`")
        return self


class Warmup(_Strict):
    """`warmup: 500` (updates) or `{steps: N}` / `{epochs: N}`: the rate rises linearly from `start_factor` x lr
    to lr (torch's LinearLR), then the scheduler takes over (SequentialLR)."""

    steps: int | None = Field(None, ge=1, le=1 << 40)
    epochs: int | None = Field(None, ge=1, le=1_000_000)
    start_factor: float = Field(0.01, gt=0, le=1)

    @model_validator(mode="after")
    def _one_length(self) -> Warmup:
        if (self.steps is None) == (self.epochs is None):
            raise _Refused(
                "warmup needs exactly one of `steps:` (updates) or `epochs:`",
                "e.g. `warmup: {steps: 500}` (or `warmup: 500`), or `warmup: {epochs: 2}`",
            )
        return self

    @property
    def length(self) -> int:
        return self.steps if self.steps is not None else self.epochs  # type: ignore[return-value]


class DataSpec(_Strict):
    dataset: Call
    normalize: Literal["rescale", "standardize", "normalize"] | None = None
    transforms: tuple[Call, ...] = ()
    eval_transforms: tuple[Call, ...] | None = None
    batch_size: int = Field(64, ge=1, le=1 << 20)
    shuffle: bool = True
    num_workers: int = Field(0, ge=0, le=64)
    val_split: float = Field(0.0, ge=0.0, lt=1.0)
    drop_last: bool = False
    # two samples a sample, for a model of two inputs: ((a, b), 1) when their classes are the same, else 0
    pairs: bool = False
    # the loss's per-class `weight`: n_samples / (n_classes * count) on the training split, or one per class
    class_weights: Literal["balanced"] | list[float] | None = None


class EarlyStop(_Strict):
    """`early_stop:` as Keras's EarlyStopping: stop once ``monitor`` has not improved by more than ``min_delta``
    for ``patience`` epochs in a row."""

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(5, ge=1, le=1_000_000)
    min_delta: float = Field(0.0, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"  # auto: min for a loss, max for accuracy

    @property
    def direction(self) -> str:
        return self.mode if self.mode != "auto" else ("max" if self.monitor == "val_accuracy" else "min")


class TrainSpec(_Strict):
    epochs: int = Field(1, ge=1, le=1_000_000)
    mode: Literal["minibatch", "batch", "online"] = "minibatch"
    log_every: int = Field(100, ge=1)
    metrics: list[Literal["accuracy"]] = Field(default_factory=list)
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]{1,2})?)$")
    checkpoint: Checkpoint | None = None
    log: list[Literal["csv", "tensorboard", "mlflow"]] = Field(default_factory=lambda: ["csv"])  # metrics.csv, ...
    mlflow_uri: str | None = Field(None, max_length=4096)  # log: [mlflow]'s tracking store (default RUN/mlruns)
    sync_batchnorm: bool = False  # under torchrun: BatchNorm layers as SyncBatchNorm (statistics over every rank)
    # speed options (docs/spec-language.md §10); the defaults are the tutorial's way
    speed: Literal["tutorial", "auto"] = "tutorial"  # auto: every option below that is unset becomes auto
    precision: Literal["fp32", "bf16", "fp16", "auto"] | None = None  # autocast; fp16 with a gradient scaler
    channels_last: bool | Literal["auto"] | None = None  # NHWC memory format for conv models
    data_on_device: bool | Literal["auto"] | None = None  # deterministic transforms once, batches on the device
    compile: Literal[False, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None = None
    cuda_graph: bool | Literal["auto"] | None = None  # forward, backward and update replayed as one CUDA graph
    cudnn_benchmark: bool | Literal["auto"] | None = None  # let cuDNN time its convolution algorithms once
    reuse_memory: bool | Literal["auto"] | None = None  # glibc keeps freed memory for the next step (CPU)
    # loop options (issue 24): each is off unless given, and a script carries only those its spec uses
    clip_grad: ClipGrad | None = Field(
        None,
        description="`{norm: 1.0}` or `{value: 0.5}`: clip the gradients before every update (unscaled under fp16)",
    )
    accumulate: int = Field(
        1, ge=1, le=1 << 20, description="batches per update: their gradients add up, each loss divided by N"
    )
    stop_on_nan: bool = Field(
        False, description="stop in one line on a NaN or infinite loss; the checkpoint stays good"
    )
    ema: float | None = Field(
        None, gt=0, lt=1, description="decay of a moving average of the weights, evaluated and saved beside them"
    )
    warmup: Warmup | None = Field(
        None,
        description="`500` or `{steps: N}` / `{epochs: N}`, `start_factor`: LinearLR before the scheduler",
        json_schema_extra=lambda schema: schema["anyOf"].insert(1, {"type": "integer", "minimum": 1}),  # `warmup: 500`
    )

    @field_validator("warmup", mode="before")
    @classmethod
    def _warmup_in_updates(cls, value: Any) -> Any:
        """`warmup: 500` is short for `warmup: {steps: 500}`."""
        return {"steps": value} if isinstance(value, int) and not isinstance(value, bool) else value

    # run options (issue 24; docs/spec-language.md §6): checked against the model and data in lower/training.py
    early_stop: EarlyStop | None = None  # stop when a validation metric stops improving
    no_decay: list[str] = Field(default_factory=list)  # `norm`, `bias` or parameter patterns: weight_decay 0
    param_groups: list[dict[str, Any]] = Field(default_factory=list)  # [{params: "layer4.*", lr: 0.001}]
    freeze: list[str] = Field(default_factory=list)  # module or parameter patterns: not trained

    def option(self, name: str):
        """An option's value with `speed:` applied (unset: `auto` under speed: auto, else off)."""
        value = getattr(self, name)
        if value is not None:
            return value
        if self.speed == "auto" and name != "compile":
            return "auto"
        return {"precision": "fp32", "compile": False}.get(name, False)


def _input_kind(value: Any) -> str:
    return "named" if isinstance(value, dict) else "shape"


# `input:` is one shape or a mapping of named shapes; the discriminator reports only the written form's errors
InputShape = (
    Annotated[
        Annotated[tuple[int, ...], Tag("shape")] | Annotated[dict[str, tuple[int, ...]], Tag("named")],
        Discriminator(_input_kind),
    ]
    | None
)


class Spec(_Strict):
    """A validated spec. ``load_spec`` also lowers it (``compiler.lower_spec``), so shapes are checked too."""

    version: Literal[1] = 1
    name: str
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**63)
    vars: dict[str, Any] = Field(default_factory=dict)
    input: InputShape = None  # one sample's shape, or several by name
    model: Annotated[Block | Graph, Field(discriminator="kind")]
    init: tuple[InitRule, ...] = ()
    data: DataSpec | None = None
    loss: Call | None = None
    losses: tuple[tuple[str, Call], ...] = ()  # `loss:` as a mapping: one loss per output of the model, by name
    loss_weights: dict[str, float] | None = None  # each output's loss weight in the sum (default 1)
    optimizer: Call | None = None
    scheduler: SchedulerCall | None = None
    train: TrainSpec | None = None

    _source: Source | None = PrivateAttr(default=None)
    _symbols: dict[Path_, str] = PrivateAttr(default_factory=dict)
    _unparsed: frozenset[Path_] = PrivateAttr(default_factory=frozenset)
    _library: Library = PrivateAttr(default_factory=Library)

    @property
    def library(self) -> Library:
        """The spec's `blocks:` (checked definitions) and what their bodies see."""
        return self._library

    @property
    def source(self) -> Source:
        assert self._source is not None
        return self._source

    @property
    def symbols(self) -> dict[Path_, str]:
        """Python source text of every value that came from `$vars` or arithmetic, by YAML path."""
        return self._symbols

    @property
    def unparsed(self) -> frozenset[Path_]:
        """Paths of the calls the parser refused (reported): the checks that need them are skipped."""
        return self._unparsed

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        check_spec_name(value)  # a NameProblem carries its fix to _pydantic_problems
        return value

    @field_validator("input", mode="before")
    @classmethod
    def _input_is_shape(cls, value: Any) -> Any:
        if isinstance(value, list):
            return tuple(value)
        if isinstance(value, dict):  # several named inputs (§15): each a shape
            for name in value:
                if not _is_value_name(name):
                    raise NameProblem(
                        f"an input's name is a Python identifier (a value's name in the graph), got {name!r}",
                        "e.g. `input: {left: [1, 28, 28], right: [1, 28, 28]}`",
                    )
            return {name: tuple(v) if isinstance(v, list) else v for name, v in value.items()}
        return value

    @field_validator("input")
    @classmethod
    def _input_positive(cls, value: tuple[int, ...] | dict | None) -> tuple[int, ...] | dict | None:
        if isinstance(value, dict):
            if not 1 <= len(value) <= 8:
                raise NameProblem("input must name 1 to 8 inputs", "e.g. `input: {image: [3, 64, 64], features: [8]}`")
            for shape in value.values():
                _check_input_shape(shape)
        elif value is not None:
            _check_input_shape(value)
        return value

    @field_validator("loss_weights")
    @classmethod
    def _weights_finite(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, weight in (value or {}).items():
            if not 0 <= weight < float("inf"):
                raise NameProblem(
                    f"loss_weights.{name} must be finite and not negative, got {weight}", "e.g. `{aux: 0.3}`"
                )
        return value

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """The model's inputs by name: `input: [1, 28, 28]` is one input, `x`."""
        if self.input is None:
            return None
        return dict(self.input) if isinstance(self.input, dict) else {"x": self.input}


def _check_input_shape(value: tuple[int, ...]) -> None:
    if not 1 <= len(value) <= 8:
        raise ValueError("input must list 1 to 8 sizes (one sample, no batch dimension)")
    if any(v < 1 or v > 1 << 24 for v in value):
        raise ValueError("input sizes must be between 1 and 16777216")


# --------------------------------------------------------------------------- parsing


class _Parser:
    """Parses the YAML forms pydantic cannot discriminate by itself, collecting problems."""

    def __init__(self, problems: Problems, library: Library | None = None):
        self.source = problems.source
        self.library = library or Library()
        self.collector = problems
        self.found = 0  # problems this parser found
        self.unparsed: set[Path_] = set()  # values refused here (reported): later stages do not report them again
        self.refused_vars: set[str] = set()  # variables refused (reported): their uses are not reported again

    def fail(self, path: Path_, message: str, fix: str = "") -> None:
        self.found += 1
        self.collector.fail(path, message, fix)

    # calls: layers, losses, optimizers, transforms, datasets --------------------------

    def call(self, raw: Any, path: Path_, kind: str, cls: type[Call] = Call) -> Call | None:
        form = _call_form(raw)
        if form is None:
            self.not_a_call(raw, path, kind)
            return None
        type_name, value, shape = form
        entry = REGISTRY.get(kind, type_name) if isinstance(type_name, str) else None
        if entry is None:
            where = path + (type_name,) if shape != "bare" else path
            self.fail(
                where,
                f"unknown {kind} type {type_name!r}",
                did_you_mean(str(type_name), REGISTRY.names(kind), f"see docs/spec-language.md for the {kind}s"),
            )
            return None
        args: tuple[Any, ...] = tuple(value) if shape == "list" else (value,) if shape == "scalar" else ()
        kwargs: dict[str, Any] = dict(value) if shape == "kwargs" else {}
        return cls(type=type_name, args=args, kwargs=kwargs, form=shape, yaml_path=path)

    def section_call(self, raw: Any, path: Path_, kind: str) -> Call | None:
        """`loss:`, `optimizer:` or `scheduler:`; a scheduler may have `interval:` beside its type."""
        cls = _CALL_CLASSES.get(kind, Call)
        if not (cls is SchedulerCall and isinstance(raw, dict) and "interval" in raw and len(raw) > 1):
            return self.call(raw, path, kind, cls)
        interval = raw["interval"]
        call = self.call({k: v for k, v in raw.items() if k != "interval"}, path, kind, cls)
        if interval not in SCHEDULER_INTERVALS:
            self.fail(
                path + ("interval",),
                f"interval must be step or epoch, got {_describe(interval)}",
                did_you_mean(
                    str(interval), SCHEDULER_INTERVALS, "write `interval: step` (after every update) or epoch"
                ),
            )
            return None
        return call.model_copy(update={"interval": interval}) if call is not None else None

    def not_a_call(self, raw: Any, path: Path_, kind: str) -> None:
        """Report a value that is not `Name`, `{Name: args}`: a stray key beside the type, or no type at all."""
        known = [k for k in raw if isinstance(k, str) and REGISTRY.get(kind, k)] if isinstance(raw, dict) else []
        article = "an" if kind[0] in "aeiou" else "a"
        if len(known) == 1:  # `Adam:` with `lr:` beside it instead of under it, or a stray key
            others = [str(k) for k in raw if k != known[0]]
            fix = f"put {known[0]}'s arguments under it, e.g. `{known[0]}: {{{others[0]}: ...}}`"
            beside = " (and `interval:`)" if kind == "scheduler" else ""
            self.fail(
                path + (others[0],),
                f"unexpected key{'s' if len(others) > 1 else ''} {', '.join(map(repr, others))} beside the "
                f"{kind} type {known[0]!r}: {article} {kind} mapping has one key, its type{beside}",
                did_you_mean(others[0], ["interval"], fix) if beside else fix,
            )
            return
        self.fail(
            path,
            f"expected {article} {kind} (`Name`, `{{Name: {{arg: value}}}}` or `{{Name: [args]}}`), got "
            f"{_describe(raw)}",
            f"e.g. `{kind}: {_EXAMPLES.get(kind, 'Name')}`",
        )

    # model grammar -----------------------------------------------------------------

    def node(self, raw: Any, path: Path_) -> Layer | Block | Repeat | None:
        if isinstance(raw, list):
            return self.block(raw, path)
        if (name := self.use_name(raw)) is not None:  # `{Bottleneck: {width: 64}}` or `Bottleneck`
            return self.use(name, raw[name] if isinstance(raw, dict) else None, path)
        if isinstance(raw, str):
            if REGISTRY.is_layer(raw):
                return self.call(raw, path, "layer", Layer)  # type: ignore[return-value]
            self.fail(path, f"unknown layer type {raw!r}", did_you_mean(raw, REGISTRY.names("layer"), ""))
            return None
        if isinstance(raw, dict):
            keys = set(raw)
            if "graph" in raw:
                return self.graph(raw, path)
            if "merge" in raw:
                return self.merge(raw, path)
            if _is_repeat(raw):
                return self.repeat(raw, path)
            if len(raw) == 1:
                (key,) = keys
                if REGISTRY.is_layer(key):
                    if _holds_layers(raw[key]):  # `Linear: [ReLU, ...]`: meant as a block named Linear
                        self.fail(
                            path + (key,),
                            f"{key!r} is a layer type, so this reads as a {key} layer whose arguments are layers",
                            f"to name a block, use a name that is not a layer type, e.g. {key.lower() + '_1'!r}",
                        )
                        return None
                    return self.call(raw, path, "layer", Layer)  # type: ignore[return-value]
                if _looks_like_layer(key, raw[key]):
                    self.fail(
                        path + (key,),
                        f"unknown layer type {key!r}",
                        did_you_mean(key, REGISTRY.names("layer"), "a named block's value must be a layer or a block"),
                    )
                    return None
            elif self.misplaced_layers(raw, path):
                return None
            return self.block(raw, path)
        self.fail(path, f"expected a layer, a block or a repeat, got {_describe(raw)}", "write e.g. `- ReLU`")
        return None

    def use_name(self, raw: Any) -> str | None:
        """The block a node uses, if it is a use of one of the spec's `blocks:`."""
        name = raw if isinstance(raw, str) else next(iter(raw)) if isinstance(raw, dict) and len(raw) == 1 else None
        return name if isinstance(name, str) and name in self.library.blocks else None

    def use(self, name: str, raw: Any, path: Path_) -> Use | None:
        args = check_use(self.library.blocks[name], raw, path, self.collector)
        if args is None:
            self.found += 1
            return None
        return Use(block=name, args=args, yaml_path=path)

    def misplaced_layers(self, raw: dict, path: Path_) -> bool:
        """Report a mapping of several keys that is neither a layer nor a named block; True if reported."""
        layers = [k for k in raw if isinstance(k, str) and REGISTRY.is_layer(k)]
        if len(layers) > 1 and len(layers) == len(raw):  # `- {Linear: [4, 2], ReLU: null}`
            first = layers[0]
            if path and isinstance(path[-1], int):
                message = f"one list item holds {len(layers)} layers ({', '.join(layers)})"
                fix = "start each layer on its own line with `- `"
            else:
                message = f"the keys {', '.join(layers)} are layer types, but a named block's keys are names"
                fix = (
                    f"make it a list (`- {first}: ...`) or name each layer, e.g. `{first.lower()}_1: {{{first}: ...}}`"
                )
            self.fail(path, message, fix)
            return True
        if len(layers) == 1 and raw[layers[0]] is None:  # `- Linear:` with its arguments not indented under it
            key = layers[0]
            others = [str(k) for k in raw if k != key]
            if not any(_holds_layers([v]) or isinstance(v, dict) for k, v in raw.items() if k != key):
                self.fail(
                    path + (key,),
                    f"{', '.join(others)} sit{'s' if len(others) == 1 else ''} beside `{key}:` instead of under it",
                    f"indent {key}'s arguments further than `{key}:`, or write `{key}: {{{others[0]}: ...}}`",
                )
                return True
        return False

    def block(self, raw: list | dict, path: Path_) -> Block | None:
        if not raw:
            self.fail(path, "an empty block", "add layers to it or remove it")
            return None
        if isinstance(raw, list):
            children = tuple(("", self.child(item, path + (i,))) for i, item in enumerate(raw))
            return Block(named=False, children=children, yaml_path=path)
        seen: dict[str, str] = {}
        named = []
        for name, item in raw.items():
            self.block_name(name, path + (name,), seen)
            named.append((name, self.child(item, path + (name,))))
        return Block(named=True, children=tuple(named), yaml_path=path)

    def child(self, raw: Any, path: Path_) -> Layer | Block | Repeat | Merge | Broken:
        """A node, or a ``Broken`` one in its place (reported) so that the nodes around it are still checked."""
        node = self.node(raw, path)
        return Broken(yaml_path=path) if node is None else node

    def block_name(
        self, name: Any, path: Path_, seen: dict[str, str], attribute: bool = False, step: bool = False
    ) -> None:
        if not isinstance(name, str):
            self.fail(path, f"a block name must be a string, got {_describe(name)}", "use a Python identifier")
            return
        # a graph step is never read as a repeat, so `body` may name one (torchvision's BackboneWithFPN.body)
        if name in ("repeat", "body", "merge", "graph") and not (step and name == "body"):
            what = {"merge": "merge blocks", "graph": "graph nodes"}.get(name, "repeats")
            self.fail(
                path,
                f"block name {name!r} is reserved for {what}",
                f"rename the block, e.g. {name + '_1'!r}",
            )
        elif REGISTRY.is_layer(name):
            self.fail(path, f"block name {name!r} is a layer type's name", f"call it e.g. {name.lower() + '_1'!r}")
        else:
            try:
                check_block_name(name, attribute)
            except NameProblem as err:
                self.fail(path, err.message, err.fix)
                return
        folded = unicodedata.normalize("NFKC", name)
        if folded in seen:
            self.fail(path, f"block name {name!r} equals {seen[folded]!r} after Unicode normalisation", "rename one")
        seen[folded] = name

    def repeat(self, raw: dict, path: Path_) -> Repeat | None:
        extra = set(raw) - {"repeat", "body"}
        for key in extra:
            self.fail(path + (key,), f"unknown key {key!r} in a repeat", "a repeat has only `repeat:` and `body:`")
        if "repeat" not in raw or "body" not in raw:
            missing = "repeat" if "repeat" not in raw else "body"
            self.fail(path, f"a repeat needs `{missing}:`", "write `{repeat: N, body: [...]}`")
            return None
        count = raw["repeat"]
        if isinstance(count, bool) or not isinstance(count, int):
            self.fail(
                path + ("repeat",),
                f"repeat count must be an integer, got {_describe(count)}",
                "write a number, e.g. `repeat: 3` (or a $variable)",
            )
            return None
        if not 1 <= count <= MAX_REPEAT:
            self.fail(path + ("repeat",), f"repeat count {count} is out of range", f"use 1 to {MAX_REPEAT}")
            return None
        body = self.child(raw["body"], path + ("body",))
        if not isinstance(body, Block):
            body = Block(named=False, children=(("", body),), yaml_path=path + ("body",))
        repeat = Repeat(count=count, body=body, yaml_path=path)
        size = _spliced(repeat)
        if size > MAX_MODULES:
            self.fail(
                path + ("repeat",),
                f"this repeat makes {size:,} modules, more than the {MAX_MODULES:,} a model may have",
                "use a smaller count",
            )
            return None
        return repeat

    def merge(self, raw: dict, path: Path_) -> Merge | None:
        """`{merge: add, branches: {...}, ...}`; its parts keep their own YAML paths."""
        ok = self.merge_keys_ok(raw, path)
        branches_raw = raw.get("branches")
        if not isinstance(branches_raw, dict) or len(branches_raw) < 2:
            self.fail(
                path + ("branches",) if "branches" in raw else path,
                "a merge block needs `branches:`, a mapping of at least two named branches",
                "e.g. `branches: {main: [...], identity: Identity}`",
            )
            return None
        seen: dict[str, str] = {}
        branches = []
        for name, item in branches_raw.items():
            self.block_name(name, path + ("branches", name), seen, attribute=True)
            branches.append((name, self.child(item, path + ("branches", name))))
        parts = {key: self.child(raw[key], path + (key,)) for key in ("before", "then") if raw.get(key) is not None}
        if not ok:
            return None
        op, dim, class_name = raw["merge"], raw.get("dim", 1), raw.get("class")
        return Merge(op=op, dim=dim, class_name=class_name, branches=tuple(branches), yaml_path=path, **parts)

    def merge_keys_ok(self, raw: dict, path: Path_) -> bool:
        """Report unknown keys and a bad `merge:`, `dim:` or `class:`; True when there are none."""
        before = self.found
        for key in raw:
            if key not in MERGE_KEYS:
                self.fail(
                    path + (key,),
                    f"unknown key {key!r} in a merge block",
                    did_you_mean(str(key), MERGE_KEYS, f"a merge block has: {', '.join(MERGE_KEYS)}"),
                )
        op = raw["merge"]
        if op not in MERGE_OPS:
            self.fail(
                path + ("merge",), f"unknown merge {op!r}", did_you_mean(str(op), MERGE_OPS, "use add, cat or mul")
            )
        dim = raw.get("dim", 1)
        if "dim" in raw and op in MERGE_OPS and op != "cat":
            self.fail(path + ("dim",), f"`dim:` is for cat; {op} combines whole tensors", "remove `dim:`")
        elif isinstance(dim, bool) or not isinstance(dim, int):
            self.fail(path + ("dim",), f"dim must be an integer, got {_describe(dim)}", "e.g. `dim: 1` (channels)")
        class_name = raw.get("class")
        if class_name is not None and not _is_class_name(class_name):
            self.fail(
                path + ("class",),
                f"class must be a Python class name, got {_describe(class_name)}",
                "e.g. `class: BasicBlock` (ASCII letters and digits, starting with a capital)",
            )
        return self.found == before

    # graph nodes (§15) ---------------------------------------------------------------

    def graph(self, raw: dict, path: Path_) -> Graph | None:
        """`{graph: [steps], params?, buffers?, modules?, inputs?, output?, eval_output?, class?}`; names are
        checked while lowering (values)."""
        before = self.found
        for key in raw:
            if key not in GRAPH_KEYS:
                self.fail(
                    path + (key,),
                    f"unknown key {key!r} in a graph node",
                    did_you_mean(str(key), GRAPH_KEYS, f"a graph node has: {', '.join(GRAPH_KEYS)}"),
                )
        steps_raw = raw["graph"]
        if not isinstance(steps_raw, list) or not steps_raw:
            self.fail(path + ("graph",), "`graph:` is a list of steps", "e.g. `graph: [{fc: {Linear: 4}}]`")
            return None
        if len(steps_raw) > MAX_GRAPH_STEPS:
            self.fail(
                path + ("graph",),
                f"a graph node has at most {MAX_GRAPH_STEPS:,} steps, got {len(steps_raw):,}",
                "put repeated steps in a block or a loop (one step), or split the node into child graph nodes",
            )
            return None
        seen: dict[str, str] = {}
        inputs = self.graph_inputs(raw, path, seen)
        tensors = [
            tensor
            for key in ("params", "buffers")
            if key in raw
            for tensor in self.tensors(raw[key], path + (key,), key == "buffers", seen)
        ]
        modules = self.declared_modules(raw["modules"], path + ("modules",), seen) if "modules" in raw else []
        steps = [self.step(item, path + ("graph", i), seen) for i, item in enumerate(steps_raw)]
        outputs = self.graph_outputs(raw, path)
        init = self.node_init_rules(raw["init"], path + ("init",)) if "init" in raw else ()
        class_name = raw.get("class")
        if class_name is not None and not _is_class_name(class_name):
            self.fail(
                path + ("class",),
                f"class must be a Python class name, got {_describe(class_name)}",
                "e.g. `class: EncoderBlock` (ASCII letters and digits, starting with a capital)",
            )
        if self.found != before or any(step is None for step in steps) or outputs is None:
            return None
        return Graph(
            steps=tuple(steps),
            tensors=tuple(tensors),
            modules=tuple(modules),
            class_name=class_name,
            init=init,
            **({"inputs": inputs} if "inputs" in raw else {}),
            yaml_path=path,
            **outputs,
        )

    def node_init_rules(self, raw: Any, path: Path_) -> tuple[InitRule, ...]:
        """A graph node's `init:`: rules run when the node is built, on its modules (paths relative to it), as a
        torchvision class's ``__init__`` ends with its loop over ``self.modules()``. No `from:`: a file's weights
        load into the whole model."""
        rules = self.init_rules(raw, path)
        for rule in rules:
            if rule.load is not None:
                self.fail(
                    rule.yaml_path + ("from",),
                    "a graph node's `init:` initialises its modules when it is built; weights from a file load into "
                    "the whole model",
                    "move `- {from: ...}` to the spec's top-level `init:`",
                )
                return ()
        return rules

    def graph_inputs(self, raw: dict, path: Path_, seen: dict[str, str]) -> tuple[str, ...]:
        """`inputs: [a, b]`: the names of the forward's arguments (default `x`)."""
        if "inputs" not in raw:
            seen["x"] = "#input"
            return ("x",)
        names = self.value_names(raw["inputs"], path + ("inputs",))
        if names is None:
            return ("x",)
        if len(names) > MAX_GRAPH_INPUTS:
            self.fail(path + ("inputs",), f"a graph node takes at most {MAX_GRAPH_INPUTS} inputs", "join some first")
            return ("x",)
        for i, name in enumerate(names):
            self.graph_name(name, path + ("inputs", i) if isinstance(raw["inputs"], list) else path + ("inputs",), seen)
        return names

    def graph_outputs(self, raw: dict, path: Path_) -> dict | None:
        """`output:` (a name, a list: a tuple, a mapping: a dict) and `eval_output:` (a name or a list)."""
        out: dict[str, Any] = {}
        output = raw.get("output")
        if isinstance(output, dict):
            keys = list(output)
            bad = [k for k in keys if not isinstance(k, str) or not k or not k.isprintable()]
            if bad or not keys:
                self.fail(
                    path + ("output", bad[0]) if bad else path + ("output",),
                    f"an output's key is a string, got {_describe(bad[0])}" if bad else "`output:` is empty",
                    'quote a number: `{"0": p2, "1": p3}`' if bad else "name the values it returns",
                )
                return None
            names = [self.value_names(v, path + ("output", k)) for k, v in output.items()]
            if any(n is None or len(n) != 1 for n in names):
                if all(n is not None for n in names):
                    self.fail(path + ("output",), "each output's value is one value's name", "e.g. `{logits: fc}`")
                return None
            out.update(outputs=tuple(n[0] for n in names if n), output_keys=tuple(keys))
        elif isinstance(output, list):
            names = self.value_names(output, path + ("output",))
            if names is None or not self.distinct(names, path + ("output",)):
                return None
            out["outputs"] = names
        elif output is not None:
            if not _is_value_name(output):
                self.fail(
                    path + ("output",), f"`output:` is a value's name, got {_describe(output)}", "e.g. `output: h`"
                )
                return None
            out["output"] = output
        if "eval_output" in raw:
            names = self.value_names(raw["eval_output"], path + ("eval_output",))
            if names is None or not self.distinct(names, path + ("eval_output",)):
                return None
            if "output" not in raw:
                self.fail(
                    path + ("eval_output",),
                    "`eval_output:` is what eval mode returns instead of `output:`, which is missing",
                    "give `output:` too (what training mode returns)",
                )
                return None
            out.update(eval_outputs=names, eval_tuple=isinstance(raw["eval_output"], list))
        return out

    def distinct(self, names: tuple[str, ...], path: Path_) -> bool:
        """A tuple output names each value once (its items are told apart by name)."""
        twice = next((i for i, name in enumerate(names) if name in names[:i]), None)
        if twice is None:
            return True
        self.fail(
            path + (twice,),
            f"{names[twice]!r} is returned twice: each item of a tuple output is a different value",
            "remove one",
        )
        return False

    def declared_modules(self, raw: Any, path: Path_, seen: dict[str, str]) -> list[tuple[str, Any]]:
        """`modules: {name: node}`: children registered first, in this order, and run by `call:` steps."""
        if not isinstance(raw, dict) or not raw:
            self.fail(path, f"`modules:` is a mapping of named modules, got {_describe(raw)}", EXAMPLE_MODULES)
            return []
        out = []
        for name, item in raw.items():
            self.graph_name(name, path + (name,), seen)
            out.append((name, self.child(item, path + (name,))))
        return out

    def tensors(self, raw: Any, path: Path_, buffer: bool, seen: dict[str, str]) -> list[Tensor]:
        """`params:` or `buffers:`: `name: {shape: [...], dtype: float32, init: zeros_}`."""
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping of names, got {_describe(raw)}", EXAMPLE_TENSOR)
            return []
        out = []
        for name, decl in raw.items():
            where = path + (name,)
            self.graph_name(name, where, seen)
            if not isinstance(decl, dict) or "shape" not in decl:
                self.fail(where, f"{name!r} needs `shape:`", EXAMPLE_TENSOR)
                continue
            for key in decl:
                if key not in TENSOR_KEYS:
                    self.fail(
                        where + (key,), f"unknown key {key!r}", did_you_mean(str(key), TENSOR_KEYS, EXAMPLE_TENSOR)
                    )
            shape, dtype = decl["shape"], decl.get("dtype", "float32")
            if not (isinstance(shape, list) and shape and all(_is_size(d) for d in shape)):
                self.fail(
                    where + ("shape",),
                    f"a shape is a list of positive sizes, got {_describe(shape)}",
                    "e.g. `shape: [1, 1, 768]`",
                )
                continue
            if dtype not in TENSOR_DTYPES:
                self.fail(
                    where + ("dtype",),
                    f"unknown dtype {dtype!r}",
                    did_you_mean(str(dtype), TENSOR_DTYPES, f"use one of {', '.join(TENSOR_DTYPES)}"),
                )
                continue
            init = self.call(decl["init"], where + ("init",), "init") if decl.get("init") is not None else None
            if decl.get("init") is not None and init is None:
                continue
            out.append(Tensor(name=name, shape=tuple(shape), dtype=dtype, init=init, buffer=buffer, yaml_path=where))
        return out

    def step(self, raw: Any, path: Path_, seen: dict[str, str]) -> Step | None:
        """`- name: node` (with `from:`, `as:`, `with:`, `when:` beside it), `- {call: module, from?, as?}` or
        `- {op: [values], dim?, mode?, as?}`."""
        keys = [k for k in raw if k not in STEP_KEYS] if isinstance(raw, dict) else []
        if len(keys) == 2 and "keep" in keys:  # `keep:` beside a child (alone, `keep` names the step, as before)
            keys.remove("keep")
        if len(keys) != 1:
            what = f"the keys {', '.join(map(repr, keys))}" if keys else _describe(raw)
            self.fail(
                path,
                "a graph step is one named child, one `call:` or one operation (with `from:`, `as:`, `with:`, "
                f"`when:`, `keep:`, `dim:`, `mode:`), got {what}",
                "e.g. `- fc: {Linear: 4}`, `- {call: encoder, from: left}` or `- {add: [x, fc], as: h}`",
            )
            return None
        (key,) = keys
        found = self.found
        outputs = self.value_names(raw.get("as"), path + ("as",), allow_discard=True) if "as" in raw else None
        unpack = isinstance(raw.get("as"), list)
        training = self.step_when(raw, path)
        keep = self.step_keep(raw, key, path)
        if key in GRAPH_OPS:
            for option in ("when", "keep"):
                if option in raw and option != key:
                    self.fail(
                        path + (option,),
                        f"`{option}:` is for a child step: operations always run",
                        f"remove `{option}:`",
                    )
            return self.op_step(raw, key, path, outputs, unpack) if self.found == found else None
        for extra in ("dim", "mode"):
            if extra in raw:
                self.fail(path + (extra,), f"`{extra}:` is for {STEP_OPTION_OWNERS[extra]}", f"remove `{extra}:`")
        inputs = self.value_names(raw["from"], path + ("from",)) if "from" in raw else None
        keywords = raw.get("with", {})
        if not isinstance(keywords, dict) or not all(isinstance(k, str) and k.isidentifier() for k in keywords):
            self.fail(
                path + ("with",), "`with:` is a mapping of keyword arguments", "e.g. `with: {need_weights: false}`"
            )
        if key == "call":
            if not keep:
                self.fail(
                    path + ("keep",),
                    "`keep: false` drops a step's own child; a declared module belongs to `modules:`",
                    "remove `keep:`, or remove the module from `modules:`",
                )
            target = raw["call"]
            if not isinstance(target, str) or not _is_call_target(target):
                self.fail(
                    path + ("call",),
                    f"`call:` names a module of `modules:`, got {_describe(target)}",
                    "e.g. `call: encoder`, or `call: inner_blocks.3` for a member of a declared list",
                )
            if self.found != found:
                return None
            return Step(
                call=target,
                inputs=inputs,
                outputs=outputs,
                unpack=unpack,
                keywords=keywords,
                training=training,
                yaml_path=path,
            )
        if key not in GRAPH_OPS and _value_list(raw[key]) and did_you_mean(str(key), GRAPH_OPS):
            self.fail(path + (key,), f"unknown operation {key!r}", did_you_mean(str(key), GRAPH_OPS))
            return None
        self.graph_name(key, path + (key,), seen)
        node = self.child(raw[key], path + (key,))
        if self.found != found:
            return None
        return Step(
            name=key,
            node=node,
            inputs=inputs,
            outputs=outputs,
            unpack=unpack,
            keywords=keywords,
            training=training,
            keep=keep,
            yaml_path=path,
        )

    def step_keep(self, raw: dict, key: Any, path: Path_) -> bool:
        """`keep: false`: the child is built where it stands (its initial weights drawn, the node's `init:` run on
        it), then dropped: torchvision's ``IntermediateLayerGetter`` keeps a ResNet's stages, not its ``fc``."""
        if "keep" not in raw or key == "keep":
            return True
        if "when" in raw:
            self.fail(path + ("when",), "a step with `keep: false` never runs: `when:` does not apply", "remove one")
        elif raw["keep"] is not False:
            self.fail(
                path + ("keep",),
                f"`keep:` takes false, got {_describe(raw['keep'])}",
                "write `keep: false` (the module is built, then dropped), or remove it",
            )
        return False

    def step_when(self, raw: dict, path: Path_) -> bool:
        """`when: training`: the step runs only in training mode (GoogLeNet's auxiliary heads)."""
        if "when" not in raw:
            return False
        if raw["when"] != "training":
            self.fail(
                path + ("when",),
                f"`when:` takes `training`, got {_describe(raw['when'])}",
                "write `when: training` (the step runs only in training mode), or remove it",
            )
        return True

    def op_step(self, raw: dict, op: str, path: Path_, outputs: tuple | None, unpack: bool) -> Step | None:
        before = self.found
        for extra in ("from", "with"):
            if extra in raw:
                self.fail(
                    path + (extra,),
                    f"`{extra}:` is for a child step; {op} names its values itself",
                    f"write `{op}: [a, b]`",
                )
        if "dim" in raw and op not in ("cat", "stack"):
            self.fail(path + ("dim",), f"`dim:` is for cat and stack, not {op}", "remove `dim:`")
        if "mode" in raw and op != "interpolate":
            self.fail(path + ("mode",), f"`mode:` is for interpolate, not {op}", "remove `mode:`")
        dim = raw.get("dim", 1 if op in ("cat", "stack") else None)
        if "dim" in raw and (isinstance(dim, bool) or not isinstance(dim, int)):  # `dim: null` too
            self.fail(path + ("dim",), f"dim must be an integer, got {_describe(dim)}", "e.g. `dim: 1`")
        mode = raw.get("mode", "nearest") if op == "interpolate" else None
        if "mode" in raw and mode not in INTERPOLATE_MODES:
            self.fail(
                path + ("mode",),
                f"unknown interpolation mode {_describe(mode)}",
                did_you_mean(str(mode), INTERPOLATE_MODES, f"use one of {', '.join(INTERPOLATE_MODES)}"),
            )
        if unpack:
            self.fail(path + ("as",), f"{op} gives one value: `as:` is one name", "e.g. `as: h`")
        value = raw[op]
        if op == "expand_batch":
            inputs = self.value_names(value, path + (op,))
            if inputs is not None and len(inputs) != 1:
                self.fail(path + (op,), "expand_batch takes one value", "e.g. `{expand_batch: class_token}`")
        elif op == "interpolate":
            inputs = self.value_names(value, path + (op,)) if isinstance(value, list) else None
            if inputs is None or len(inputs) != 2:
                self.fail(
                    path + (op,),
                    "interpolate takes two values: the one to resize and the one whose size it takes",
                    "e.g. `{interpolate: [top, lateral], mode: nearest}`",
                )
                return None
        else:
            inputs = self.value_names(value, path + (op,)) if isinstance(value, list) else None
            if inputs is None or len(inputs) < 2:
                if inputs is not None or not isinstance(value, list):
                    self.fail(path + (op,), f"{op} takes a list of two or more values", f"e.g. `{op}: [x, h]`")
                return None
        if inputs is not None and len(inputs) > MAX_OP_VALUES:
            self.fail(
                path + (op,),
                f"{op} takes at most {MAX_OP_VALUES} values, got {len(inputs):,}",
                "combine them in several steps of fewer values",
            )
        if inputs is None or self.found != before:
            return None
        return Step(op=op, dim=dim, mode=mode, inputs=inputs, outputs=outputs, yaml_path=path)

    def graph_name(self, name: Any, path: Path_, seen: dict[str, str]) -> None:
        """A step's or tensor's name: a block name (§2), once per graph node (they share its attributes)."""
        if isinstance(name, str) and seen.get(name) == "#input":
            self.fail(path, f"`{name}` is the graph node's input", f"name the step otherwise, e.g. {name + '_1'!r}")
            return
        if isinstance(name, str) and name in seen:
            self.fail(
                path,
                f"{name!r} already names an input, step, module, parameter or buffer of this graph node",
                "rename one",
            )
            return
        self.block_name(name, path, seen, attribute=True, step=True)

    def value_names(self, raw: Any, path: Path_, allow_discard: bool = False) -> tuple[str, ...] | None:
        """One value's name or a list of them (`_` drops a tuple item where ``allow_discard``)."""
        items = raw if isinstance(raw, list) else [raw]
        ok = bool(items) and all(_is_value_name(v) or (allow_discard and v == "_") for v in items)
        if not ok:
            self.fail(
                path, f"expected a value's name or a list of names, got {_describe(raw)}", "e.g. `[ln_1, ln_1, ln_1]`"
            )
            return None
        return tuple(items)

    # init rules --------------------------------------------------------------------

    def init_rules(self, raw: Any, path: Path_ = ("init",)) -> tuple[InitRule, ...]:
        if not isinstance(raw, list):
            self.fail(
                path,
                f"`init:` is a list of rules, got {_describe(raw)}",
                "e.g. `init: [{type: Conv2d, weight: kaiming_normal_}]`",
            )
            return ()
        rules, patterns = [], 0
        for i, item in enumerate(raw):
            rule = self.init_rule(item, path + (i,))
            if rule is None:
                continue
            if rule.load and any(r.load for r in rules):
                self.fail(path + (i, "from"), "a second `from:` rule: weights load from one file", "keep one")
                continue
            patterns += len(rule.paths)
            if patterns > MAX_INIT_PATTERNS:
                self.fail(
                    path + (i, "path"),
                    f"the init rules have more than {MAX_INIT_PATTERNS:,} `path:` patterns",
                    "use fewer patterns: one with wildcards matches many modules (e.g. `layer*.*.bn2`), "
                    "or match by `type:`",
                )
                return tuple(rules)
            rules.append(rule)
        return tuple(rules)

    def init_work(self, rules: tuple[InitRule, ...], modules: int) -> None:
        """Every module is tried against every `path:` pattern: their product stays within MAX_INIT_MATCHES."""
        patterns = 0
        for rule in rules:
            patterns += len(rule.paths)
            if patterns * modules > MAX_INIT_MATCHES:
                self.fail(
                    rule.yaml_path + ("path",),
                    f"{patterns:,} `path:` patterns in the init rules, each tried on {modules:,} modules, make "
                    f"{patterns * modules:,} matches, more than the {MAX_INIT_MATCHES:,} allowed",
                    "use fewer patterns: one with wildcards matches many modules (e.g. `layer*.*.bn2`), "
                    "or match by `type:`",
                )
                return

    def init_rule(self, raw: Any, path: Path_) -> InitRule | None:
        if not isinstance(raw, dict):
            self.fail(
                path,
                f"an init rule is a mapping, got {_describe(raw)}",
                "e.g. `{type: Linear, weight: {normal_: {std: 0.01}}, bias: zeros_}`",
            )
            return None
        if "from" in raw:
            return self.init_load(raw, path)
        selectors = self.init_selectors(raw, path)
        if selectors is None:
            return None
        calls = self.init_calls(raw, path)
        if not any(key not in ("type", "path") for key in raw):
            self.fail(path, "this init rule sets no parameter", "add e.g. `weight: {kaiming_normal_: {mode: fan_out}}`")
            return None
        if not calls:
            return None
        return InitRule(types=selectors["type"], paths=selectors["path"], calls=calls, yaml_path=path)

    def init_load(self, raw: dict, path: Path_) -> InitRule | None:
        """`{from: PATH, strict: true}`: weights from a file; the path is checked while lowering."""
        others = [key for key in raw if key not in ("from", "strict")]
        if others:
            self.fail(
                path + (others[0],),
                f"an init rule with `from:` loads weights and takes only `strict:`, not {others[0]!r}",
                "write the initialisers as a rule of their own, e.g. `- {type: Linear, weight: zeros_}`",
            )
            return None
        load, strict = raw["from"], raw.get("strict", True)
        if not isinstance(load, str) or not load:
            self.fail(path + ("from",), f"`from:` is a file path, got {_describe(load)}", "e.g. `from: weights.pt`")
            return None
        if not isinstance(strict, bool):
            self.fail(
                path + ("strict",), f"`strict:` is true or false, got {_describe(strict)}", "write `strict: false`"
            )
            return None
        return InitRule(load=load, strict=strict, yaml_path=path)

    def init_selectors(self, raw: dict, path: Path_) -> dict[str, tuple[str, ...]] | None:
        """An init rule's `type:` and `path:`, each a tuple of names; None when reported."""
        selectors = {}
        for key in ("type", "path"):
            value = raw.get(key)
            values = value if isinstance(value, list) else [value] if value is not None else []
            if not all(isinstance(v, str) and v for v in values):
                self.fail(
                    path + (key,),
                    f"`{key}:` is a name or a list of names, got {_describe(value)}",
                    "e.g. `type: [BatchNorm2d, GroupNorm]` or `path: 'layer*.*.bn2'`",
                )
                return None
            selectors[key] = tuple(values)
        if not selectors["type"] and not selectors["path"]:
            self.fail(
                path,
                "an init rule needs `type:` (layer types) or `path:` (module path patterns)",
                "e.g. `type: Conv2d`",
            )
            return None
        for i, name in enumerate(selectors["type"]):
            if not REGISTRY.is_layer(name):
                where = path + ("type",) + ((i,) if isinstance(raw["type"], list) else ())
                self.fail(where, f"unknown layer type {name!r}", did_you_mean(name, REGISTRY.names("layer"), ""))
                return None
        return selectors

    def init_calls(self, raw: dict, path: Path_) -> tuple[tuple[str, Call], ...]:
        """(parameter name, init function) for each parameter an init rule sets."""
        calls = []
        for key, value in raw.items():
            if key in ("type", "path"):
                continue
            if not isinstance(key, str) or not key.isidentifier():
                self.fail(path + (key,), f"{key!r} is not a parameter name", "e.g. `weight:` or `bias:`")
                continue
            call = self.call(value, path + (key,), "init")
            if call is not None:
                calls.append((key, call))
        return tuple(calls)


GRAPH_KEYS = ("graph", "params", "buffers", "modules", "inputs", "output", "eval_output", "class", "init")
STEP_KEYS = ("from", "as", "with", "when", "dim", "mode")
MAX_GRAPH_INPUTS = 8  # as `input:`
MAX_GRAPH_STEPS = 2_000  # per graph node: each step costs several lines of the script (lowering, render: ~1 s)
MAX_OP_VALUES = 256  # per operation: `add` of N values is written `a + b + ...`, N levels deep for Python's parser
STEP_OPTION_OWNERS = {"dim": "cat and stack", "mode": "interpolate"}
INTERPOLATE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "linear", "trilinear", "area")
EXAMPLE_MODULES = "e.g. `modules: {encoder: [{Linear: 64}, ReLU]}`, run by `- {call: encoder, from: left}`"
TENSOR_KEYS = ("shape", "dtype", "init")
TENSOR_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")
EXAMPLE_TENSOR = "e.g. `class_token: {shape: [1, 1, 768], init: zeros_}`"


def _is_value_name(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name) and name != "_"


def _is_call_target(text: str) -> bool:
    """`encoder` or `inner_blocks.3`: a declared module, or a member of a declared list."""
    name, _, member = text.partition(".")
    return _is_value_name(name) and (not member or (member.isdigit() and member.isascii() and len(member) < 6))


def _value_list(value: Any) -> bool:
    """`[x, h]`: names of values, as an operation takes (not a list of layers)."""
    return isinstance(value, list) and all(isinstance(v, str) and not REGISTRY.is_layer(v) for v in value)


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_class_name(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and name.isascii() and name[:1].isupper()


def _call_form(raw: Any) -> tuple[Any, Any, str] | None:
    """(type name, value, form) of a call's YAML, or None when it is not a call's shape."""
    if isinstance(raw, str):
        return raw, None, "bare"
    if not (isinstance(raw, dict) and len(raw) == 1):
        return None
    type_name, value = next(iter(raw.items()))
    if value is None:
        return type_name, None, "bare"
    return type_name, value, "kwargs" if isinstance(value, dict) else "list" if isinstance(value, list) else "scalar"


_EXAMPLES = {
    "loss": "CrossEntropyLoss",
    "optimizer": "{Adam: {lr: 0.001}}",
    "scheduler": "{StepLR: {step_size: 1}}",
    "dataset": "{MNIST: {root: data}}",
    "transform": "ToTensor",
    "layer": "ReLU",
    "init": "zeros_",
}


def parse_node(raw: Any, path: Path_, problems: Problems, library: Library) -> Layer | Block | Repeat | Merge | None:
    """One model node (a block's instantiated body, while lowering), its problems into ``problems``."""
    return _Parser(problems, library).node(raw, path)


def _is_repeat(raw: dict) -> bool:
    """`{repeat: N, body: ...}` (even a broken one), not a named block that has a `repeat` or `body` child."""
    if "repeat" not in raw and "body" not in raw:
        return False
    if len(raw) == 1:
        return True
    return not all(isinstance(v, (list, dict)) or (isinstance(v, str) and REGISTRY.is_layer(v)) for v in raw.values())


def _holds_layers(value: Any) -> bool:
    """Whether a layer's arguments are really layers (a block named like a layer type)."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        if isinstance(item, str) and REGISTRY.is_layer(item):
            return True
        if isinstance(item, dict) and any(isinstance(k, str) and (REGISTRY.is_layer(k) or k == "repeat") for k in item):
            return True
        if isinstance(item, list) and _holds_layers(item):
            return True
    return False


def _count_modules(node: Any) -> int:
    """Modules lowering will create for a node (Python ints: exact however large)."""
    if isinstance(node, Block):
        return 1 + _count_children(node)
    if isinstance(node, Merge):
        parts = [node.before, node.then, *(b for _, b in node.branches)]
        return 1 + sum(_count_modules(p) for p in parts if p is not None)
    if isinstance(node, Repeat):
        return _spliced(node)
    if isinstance(node, Graph):
        return 1 + sum(_count_modules(step.node) for step in node.steps if step.node is not None)
    return 1


def _count_children(block: Block) -> int:
    return sum(_spliced(c) if isinstance(c, Repeat) else _count_modules(c) for _, c in block.children)


def _spliced(repeat: Repeat) -> int:
    body = repeat.body
    return repeat.count * (_count_modules(body) if body.named else _count_children(body))


def _looks_like_layer(key: str, value: Any) -> bool:
    """`{Linearr: {in_features: 3}}`: a misspelt layer, not a block named `Linearr`."""
    if isinstance(value, (list, str)) or value is None:
        return not isinstance(value, str) and key[:1].isupper() and _args_like(value)
    if isinstance(value, dict):
        return key[:1].isupper() and not any(
            isinstance(v, (dict, list)) or (isinstance(v, str) and REGISTRY.is_layer(v)) for v in value.values()
        )
    return True  # {Foo: 0.5}: a scalar is an argument, never a block


def _args_like(value: Any) -> bool:
    if value is None:
        return True
    return all(not isinstance(v, (dict, list)) and not (isinstance(v, str) and REGISTRY.is_layer(v)) for v in value)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }
    return (
        f"{kinds.get(type(value), type(value).__name__)} ({value!r})"
        if not isinstance(value, (list, dict))
        else kinds[type(value)]
    )


# --------------------------------------------------------------------------- variables


def _resolve_vars(data: dict, source: Source, parser: _Parser) -> tuple[dict, dict[Path_, str]]:
    """Evaluate `vars` in order, then every `$ref`/arithmetic string elsewhere."""
    symbols: dict[Path_, str] = {}
    raw_vars = data.get("vars", {})
    variables = _variables(raw_vars, parser, symbols) if isinstance(raw_vars, dict) else {}
    out = {}
    for key, value in data.items():
        if key in ("vars", "name", "description"):
            out[key] = dict(variables) if key == "vars" and isinstance(raw_vars, dict) else value
        else:
            out[key] = _substitute(value, (key,), variables, symbols, parser, top=True)
    return out, symbols


def _variables(raw_vars: dict, parser: _Parser, symbols: dict[Path_, str]) -> dict[str, Any]:
    """The `vars:` table evaluated in order; each refused variable is reported and left out."""
    variables: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for name, value in raw_vars.items():
        path = ("vars", name)
        if not _variable_name_ok(name, path, seen, parser) or not _variable_order_ok(
            name, value, variables, raw_vars, parser
        ):
            parser.refused_vars.add(str(name))
            continue
        before = len(parser.unparsed)
        resolved = _substitute(value, path, variables, symbols, parser, top=False)
        if len(parser.unparsed) > before:
            parser.refused_vars.add(name)
            continue
        if _has_expression(resolved):
            symbols[path] = python_text(resolved)
        variables[name] = _plain(resolved)
    return variables


def _variable_order_ok(name: str, value: Any, variables: dict, raw_vars: dict, parser: _Parser) -> bool:
    """A variable may use only the variables above it."""
    later = [r for r in _references_in(value) if r not in variables and r in raw_vars]
    if not later:
        return True
    ref, path = later[0], ("vars", name)
    if ref == name:
        parser.fail(path, f"variable ${name} refers to itself", "give it a value that does not use it")
    elif ref not in parser.refused_vars:
        parser.fail(
            path,
            f"variable ${name} uses ${ref}, which is defined after it",
            f"move `{ref}:` above `{name}:` in `vars:` (they are read in order)",
        )
    return False


def _variable_name_ok(name: Any, path: Path_, seen: dict[str, str], parser: _Parser) -> bool:
    try:
        check_variable(str(name))
    except NameProblem as err:
        parser.fail(path, err.message, err.fix)
        return False
    folded = unicodedata.normalize("NFKC", name)
    if name in RESERVED_NAMES or folded in seen:
        parser.fail(path, f"variable name {name!r} is taken by the generated script", f"rename it, e.g. {name + '_'!r}")
        return False
    seen[folded] = name
    return True


def _references_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return references(value)
    if isinstance(value, (list, dict)):
        return [r for v in (value.values() if isinstance(value, dict) else value) for r in _references_in(v)]
    return []


def _substitute(value: Any, path: Path_, variables: dict, symbols: dict, parser: _Parser, top: bool) -> Any:
    if isinstance(value, str):
        if parser.refused_vars.intersection(references(value)):  # uses a refused variable: reported there
            parser.unparsed.add(path)
            return value
        try:
            result = evaluate(value, variables)
        except ExprError as err:
            parser.fail(path, err.message, err.fix)
            parser.unparsed.add(path)
            return value
        if isinstance(result, Evaluated):
            if top:
                symbols[path] = result.source
            return result.value if top else result
        return result
    if isinstance(value, list):
        return [_substitute(v, path + (i,), variables, symbols, parser, top) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _substitute(v, path + (k,), variables, symbols, parser, top) for k, v in value.items()}
    return value


def _has_expression(value: Any) -> bool:
    if isinstance(value, Evaluated):
        return True
    if isinstance(value, (list, dict)):
        return any(_has_expression(v) for v in (value.values() if isinstance(value, dict) else value))
    return False


def python_text(value: Any) -> str:
    """Python source for a (possibly partly symbolic) value."""
    if isinstance(value, Evaluated):
        return value.source
    if isinstance(value, list):
        return "[" + ", ".join(python_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {python_text(v)}" for k, v in value.items()) + "}"
    return literal(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Evaluated):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- validation

_CALL_FIELDS: dict[Path_, str] = {("loss",): "loss", ("optimizer",): "optimizer", ("scheduler",): "scheduler"}
_CALL_CLASSES: dict[str, type[Call]] = {"scheduler": SchedulerCall}


def validate(data: Any, source: Source) -> Spec:
    """Validate loaded data against the schema; raise SpecError listing every problem."""
    problems = Problems(source)
    spec = parse(data, problems)
    problems.raise_if_any()
    assert spec is not None
    return spec


def parse(data: Any, problems: Problems) -> Spec | None:
    """Stage 2: loaded data -> Spec, every problem into ``problems``.

    Returns a Spec whenever the rest of the pipeline can still check it: a value pydantic refuses
    (a bad `batch_size`, an unknown metric) is reported, then left out (its default used), so that
    the model, data and optimizer checks still run and every problem is reported in one pass.
    None when the model grammar itself is broken.
    """
    source = problems.source
    parser = _Parser(problems)
    if not isinstance(data, dict):
        fix = "write `name:`, `model:` and the other sections at the top level, without a leading `- `"
        problems.fail((), f"a spec is a mapping of sections, got {_describe(data)}", fix)
        return None
    library = data.get("blocks")
    if isinstance(library, Library):  # `expand` checked the definitions (compiler/front/expand.py)
        data = {k: v for k, v in data.items() if k != "blocks"}
        parser.library = library
    data, symbols = _resolve_vars(data, source, parser)
    prepared, unparsed = _prepare(data, parser)
    unparsed |= parser.unparsed
    for _attempt in range(3):
        try:
            spec = Spec.model_validate(prepared)
        except ValidationError as err:
            for loc, message, fix in _pydantic_problems(err, data):
                if loc not in unparsed:
                    problems.fail(loc, message, fix)
            if not _salvage(prepared, err):
                return None
            continue
        spec._source = source
        spec._symbols = symbols
        spec._unparsed = frozenset(unparsed)
        spec._library = parser.library
        return spec
    return None


def _prepare(data: dict, parser: _Parser) -> tuple[dict, set[Path_]]:
    """The sections pydantic cannot parse by itself: model grammar, calls, init rules, data.

    Also returns the paths of the calls the parser refused (reported): later stages skip the checks that
    need them instead of reporting them missing.
    """
    prepared = dict(data)
    unparsed: set[Path_] = set()
    if "init" in data:
        prepared["init"] = parser.init_rules(data["init"])
    if "model" in data:
        _prepare_model(prepared, data["model"], parser)
    if prepared.get("init") and isinstance(prepared.get("model"), Block):
        parser.init_work(prepared["init"], _count_children(prepared["model"]))
    if _per_output(data.get("loss")):  # `loss: {digit: CrossEntropyLoss, odd: ...}`: a loss per output
        losses = [(k, parser.call(v, ("loss", k), "loss")) for k, v in data["loss"].items()]
        prepared.pop("loss")
        prepared["losses"] = tuple((k, call) for k, call in losses if call is not None)
        if len(prepared["losses"]) < len(losses):
            unparsed.add(("loss",))
    for path, kind in _CALL_FIELDS.items():
        key = path[0]
        if data.get(key) is not None and key in prepared:  # (a loss per output is parsed above)
            prepared[key] = parser.section_call(data[key], path, kind)
            if prepared[key] is None:
                prepared.pop(key)
                unparsed.add(path)
    if isinstance(data.get("data"), dict):
        prepared["data"] = _prepare_data(data["data"], parser, unparsed)
    return prepared, unparsed


def _per_output(raw: Any) -> bool:
    """`loss:` as a mapping of output names (none a loss type) to losses, rather than one loss's call."""
    if not isinstance(raw, dict) or not raw or any(REGISTRY.get("loss", str(k)) for k in raw):
        return False
    if len(raw) > 1:
        return True
    (value,) = raw.values()
    name = value if isinstance(value, str) else next(iter(value)) if isinstance(value, dict) and value else None
    return isinstance(name, str) and REGISTRY.get("loss", name) is not None


def _prepare_model(prepared: dict, raw: Any, parser: _Parser) -> None:
    before = parser.found
    model = parser.node(raw, ("model",))
    if isinstance(model, (Layer, Repeat, Merge)):
        model = Block(named=False, children=(("", model),), yaml_path=("model",))
    if model is None:
        prepared.pop("model")
        return
    prepared["model"] = model
    size = _count_modules(model) - 1 if isinstance(model, Graph) else _count_children(model)
    if parser.found == before and size > MAX_MODULES:
        parser.fail(
            ("model",),
            f"the model has {size:,} modules, more than the {MAX_MODULES:,} allowed",
            "use fewer or smaller repeats",
        )


_PLACEHOLDERS = {"name": "spec"}  # required values that have no default


def _salvage(prepared: dict, err: ValidationError) -> bool:
    """Leave out every value pydantic refused (its default is used); False when nothing can be left out."""
    changed = False
    for item in err.errors(include_url=False):
        loc = [x for x in item["loc"] if not (isinstance(x, str) and x in ("Layer", "Block", "Repeat", "Merge"))]
        if item["type"] == "missing" or not loc or loc[0] == "model":
            return False
        if len(loc) == 1:
            if loc[0] in _PLACEHOLDERS:
                prepared[loc[0]] = _PLACEHOLDERS[loc[0]]
            else:
                prepared.pop(loc[0], None)
            changed = True
        elif isinstance(prepared.get(loc[0]), dict) and loc[1] in prepared[loc[0]]:
            section = dict(prepared[loc[0]])
            section.pop(loc[1])
            prepared[loc[0]] = section
            changed = True
        else:
            return False
    return changed


def _prepare_data(raw: dict, parser: _Parser, unparsed: set[Path_]) -> dict:
    prepared = dict(raw)
    if raw.get("dataset") is not None:
        path = ("data", "dataset")
        prepared["dataset"] = parser.call(raw["dataset"], path, "dataset") or Call(type="", yaml_path=path)
        if not prepared["dataset"].type:  # refused: a stand-in keeps the section's other values checked
            unparsed.add(path)
    for key in ("transforms", "eval_transforms"):
        items = raw.get(key)
        if isinstance(items, list):
            calls = [parser.call(item, ("data", key, i), "transform") for i, item in enumerate(items)]
            prepared[key] = tuple(c for c in calls if c is not None)
            if len(prepared[key]) < len(calls):
                unparsed.add(("data", key))
    return prepared


def _pydantic_problems(err: ValidationError, data: dict) -> list[tuple[Path_, str, str]]:
    problems = []
    for item in err.errors(include_url=False):
        loc = tuple(x for x in item["loc"] if not (isinstance(x, str) and x in ("Layer", "Block", "Repeat", "Merge")))
        if loc[:2] in (("input", "shape"), ("input", "named")):  # the union's tag, not a key of the YAML
            loc = loc[:1] + loc[2:]
        if item["type"] == "missing" and _present(data, loc):  # given, but it failed to parse: already reported
            continue
        problems.append((loc, *_pydantic_message(item, loc)))
    return problems


def _pydantic_message(item: Any, loc: Path_) -> tuple[str, str]:
    """(message, fix) for one of pydantic's errors, in the spec's words."""
    kind = item["type"]
    if kind == "extra_forbidden":
        parent_fields = _fields_at(loc[:-1])
        fix = did_you_mean(str(loc[-1]), parent_fields, "remove it") if parent_fields else "remove it"
        return f"unknown key {loc[-1]!r}", fix + (f" (allowed: {', '.join(parent_fields)})" if parent_fields else "")
    if kind == "missing":
        return f"missing required key {loc[-1]!r}", f"add `{loc[-1]}:`"
    if kind == "value_error":  # our own validators: the message is already the whole story
        error = item.get("ctx", {}).get("error")
        fix = getattr(error, "fix", "")  # a NameProblem's own fix
        if not fix and loc == ("name",) and isinstance(item.get("input"), str):
            fix = f"e.g. `name: {_identifier_like(item['input'])}`"
        return str(error if error is not None else item["msg"]), fix
    if kind in _BOUNDS:
        relation, bound = _BOUNDS[kind]
        return f"{loc[-1]} must be {relation} {item['ctx'][bound]}, got {item.get('input')!r}", _range_text(loc)
    if kind == "string_pattern_mismatch" and loc[-1:] == ("device",):
        return f"unknown device {item.get('input')!r}", "use auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps"
    if kind.endswith("_type") or kind in ("literal_error", "string_pattern_mismatch", "enum"):
        return f"{item['msg'].rstrip('.')}, got {_describe(item.get('input'))}", _type_fix(item)
    return item["msg"], ""


def _type_fix(item: Any) -> str:
    """The fix for a value of the wrong type or not among the allowed ones."""
    kind, value = item["type"], item.get("input")
    if isinstance(value, str) and kind in ("int_type", "float_type"):
        return "write the number without quotes (or use $name for a variable)"
    if isinstance(value, float) and kind == "int_type":
        return "write a whole number"
    if kind == "bool_type":
        return "write true or false (in YAML 1.2, yes/no/on/off are strings)"
    if kind in ("list_type", "tuple_type") and not isinstance(value, (list, dict)):
        return f"write a list, e.g. [{value}]"
    if kind == "dict_type":
        return "write a mapping of `key: value` pairs"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", item.get("ctx", {}).get("expected", ""))
        if choices:
            return did_you_mean(str(value), choices, f"use one of: {', '.join(choices)}")
    return ""


def _present(data: Any, loc: Path_) -> bool:
    for part in loc:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return data is not None


_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("greater than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}


def _range_text(loc: Path_) -> str:
    """The allowed range of a numeric field, from its pydantic constraints."""
    model = _model_at(loc[:-1])
    field = getattr(model, "model_fields", {}).get(loc[-1]) if model is not None else None
    bounds = {}
    for constraint in getattr(field, "metadata", ()):
        for name in ("ge", "gt", "le", "lt"):
            if getattr(constraint, name, None) is not None:
                bounds[name] = getattr(constraint, name)
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [f"{signs[name]} {value}" for name, value in bounds.items()]
    return f"use a value {' and '.join(parts)}" if parts else ""


def _identifier_like(name: str) -> str:
    """A Python identifier close to ``name`` (`my-model` -> `my_model`, `class` -> `class_`)."""
    text = re.sub(r"\W+", "_", name).strip("_") or "spec"
    if text[0].isdigit():
        text = "spec_" + text
    if keyword.iskeyword(text) or keyword.issoftkeyword(text) or text.startswith("__"):
        text = text.lstrip("_") + "_"
    return text


def _model_at(loc: Path_) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc``, or None."""
    model: Any = Spec
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            return None
    return model


def _fields_at(loc: Path_) -> list[str]:
    return [f for f in getattr(_model_at(loc), "model_fields", {}) if f != "yaml_path"]
