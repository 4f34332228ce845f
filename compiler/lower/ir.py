"""The lowered spec: every IR class, in one place. Both backends read these and nothing else.

A model is a tree: ``BlockIR`` (an ``nn.Sequential``), ``MergeIR`` (a module whose branches
are combined by add, cat or mul) and ``LayerIR`` leaves. Every argument is resolved and every
shape known; every node keeps its YAML path so late errors can still name a line.
The training sections lower to ``TrainingIR``; ``Program`` is the whole lowered spec.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from compiler.common.naming import Namespace
from compiler.errors import Problem
from compiler.facts.registry import Entry

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Arg:
    """One argument: its value, and the Python text the generated script writes for it."""

    value: Any
    source: str


@dataclass
class CallIR:
    """A constructor (or function) call with bound arguments: a layer, loss, optimizer, transform..."""

    entry: Entry
    args: list[Arg]
    kwargs: dict[str, Arg]
    yaml_path: tuple = ()
    arguments: dict[str, Any] = field(default_factory=dict)  # every argument by name, defaults filled in

    @property
    def name(self) -> str:
        return self.entry.name

    def values(self) -> tuple[list, dict]:
        return [a.value for a in self.args], {k: a.value for k, a in self.kwargs.items()}

    def value(self, name: str, default: Any = None) -> Any:
        """An argument's value by name, given by position or keyword, else its default."""
        value = self.arguments.get(name, default)
        return default if value is None else value


# --------------------------------------------------------------------------- model


@dataclass
class UseIR:
    """Which `blocks:` definition made a subtree, and the names its body saw (parameters, `in_channels`,
    local `vars`, the spec's variables): what the generated script's class for the block is written from."""

    block: str
    env: dict[str, Any]
    root: tuple  # the YAML path its body's nodes are under (``use path + ("<Block>",)``)


@dataclass
class LayerIR:
    name: str  # child name in its parent ("0", "conv1")
    path: str  # module path from the root ("dense.0"), as in ``model.get_submodule``
    call: CallIR
    in_shape: Shape | None
    out_shape: Shape | None = None
    params: int = 0  # trainable parameters
    nbytes: int = 0  # parameters and buffers
    param_slots: tuple[str, ...] = ()  # the module's parameter names, ``None`` ones (bias=False) included
    none_params: tuple[str, ...] = ()  # those of them that are ``None``
    param_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (name, shape) of the others: what init rules meet
    inferred: str | None = None  # the argument filled by shape inference
    use: UseIR | None = None  # the block use this layer is the whole body of

    @property
    def entry(self) -> Entry:
        return self.call.entry

    @property
    def type(self) -> str:
        return self.call.entry.name

    @property
    def yaml_path(self) -> tuple:
        return self.call.yaml_path

    def walk(self) -> Iterator[Node]:
        return iter(())


@dataclass
class BlockIR:
    """``nn.Sequential`` of the children, with names (``OrderedDict``) or numbered; an ``nn.ModuleList`` when
    a graph node declares it and calls its members one by one (``module_list``)."""

    name: str
    path: str
    named: bool
    children: list[Node] = field(default_factory=list)
    yaml_path: tuple = ()
    in_shape: Shape | None = None
    out_shape: Shape | None = None
    use: UseIR | None = None
    module_list: bool = False

    @property
    def params(self) -> int:
        return sum(child.params for child in self.children)

    @property
    def nbytes(self) -> int:
        return sum(child.nbytes for child in self.children)

    def walk(self) -> Iterator[Node]:
        """Every node below this one, depth first, in module order."""
        for child in self.children:
            yield child
            yield from child.walk()


@dataclass
class PartIR:
    """``before``, one branch, or ``then`` of a merge block.

    ``nodes`` run in order. A part written as a mapping of names is *spread*: its nodes are
    direct children of the merge module. Otherwise it is one child named after the part. An
    ``Identity`` branch has no nodes: it passes the block's input through.
    """

    name: str
    nodes: list[Node]
    spread: bool
    yaml_path: tuple = ()
    out_shape: Shape | None = None
    use: UseIR | None = None  # a part that is a block use (its nodes may be none: the input passes through)


@dataclass
class MergeIR:
    """A module whose branches all take the same input and are combined by ``op``."""

    name: str
    path: str
    op: str  # add | cat | mul
    dim: int  # cat's dimension (torch's numbering: the batch is 0)
    class_name: str  # the generated script's class for this block's shape
    before: PartIR | None
    branches: list[PartIR]
    then: PartIR | None
    yaml_path: tuple = ()
    in_shape: Shape | None = None
    out_shape: Shape | None = None
    use: UseIR | None = None

    @property
    def parts(self) -> list[PartIR]:
        return [p for p in (self.before, *self.branches, self.then) if p is not None]

    @property
    def children(self) -> list[Node]:
        """The module's children in registration order: before, the branches, then."""
        return [node for part in self.parts for node in part.nodes]

    @property
    def shape_key(self) -> tuple:
        """What the generated class depends on: equal keys share one class."""
        return (
            self.class_name,
            self.op,
            self.dim,
            *(
                (p.name, p.spread, tuple(n.name for n in p.nodes))
                for p in [self.before or PartIR("", [], False), *self.branches, self.then or PartIR("", [], False)]
            ),
        )

    @property
    def params(self) -> int:
        return sum(child.params for child in self.children)

    @property
    def nbytes(self) -> int:
        return sum(child.nbytes for child in self.children)

    def walk(self) -> Iterator[Node]:
        for child in self.children:
            yield child
            yield from child.walk()


@dataclass
class TensorIR:
    """A parameter or buffer a graph node holds itself (ViT's ``class_token``), created after its children."""

    name: str
    shape: Shape
    dtype: str
    init: CallIR | None  # None: zeros
    buffer: bool
    yaml_path: tuple = ()
    sizes: tuple[str, ...] | None = None  # in a block's class: each size's Python text (``in_channels``)

    @property
    def numel(self) -> int:
        n = 1
        for size in self.shape:
            n *= size
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * {"float64": 8, "int64": 8, "float16": 2, "bfloat16": 2, "bool": 1}.get(self.dtype, 4)


@dataclass
class StepIR:
    """One step of a graph node: a child module called on named values, or an operation on them.

    ``inputs`` and ``outputs`` are value names: the spec's, ``x`` for the node's input, or for a value no
    name was given ``#k`` (the step's index); ``None`` in ``outputs`` is a dropped tuple item (``_``)."""

    node: Node | None
    op: str | None
    dim: int | None
    inputs: list[str]
    outputs: list[str | None]
    unpack: bool  # the child returns a tuple unpacked into ``outputs``
    keywords: dict[str, Arg] = field(default_factory=dict)  # `with:` arguments of the call
    yaml_path: tuple = ()
    shapes: list[Any] = field(default_factory=list)  # each output's shape, the batch written "N"
    call: tuple[str, int | None] | None = None  # `call:` a declared module (name, member index or None)
    training: bool = False  # `when: training`: runs only in training mode
    mode: str | None = None  # interpolate's mode

    @property
    def key(self) -> tuple:
        name = self.node.name if self.node is not None else None
        return (
            name,
            self.call,
            self.training,
            self.mode,
            self.op,
            self.dim,
            tuple(self.inputs),
            tuple(self.outputs),
            self.unpack,
            tuple((k, a.source) for k, a in self.keywords.items()),
        )


@dataclass
class GraphIR:
    """A module whose ``forward`` runs ``steps`` on named values (§15): any dataflow, not only a tree."""

    name: str
    path: str
    class_name: str
    tensors: list[TensorIR]
    steps: list[StepIR]
    output: str  # the value returned (the first of several)
    yaml_path: tuple = ()
    in_shape: Shape | None = None
    out_shape: Shape | None = None
    use: UseIR | None = None
    inputs: list[str] = field(default_factory=lambda: ["x"])  # the forward's arguments
    in_shapes: list[Shape | None] = field(default_factory=list)  # each input's sample shape
    modules: list[Node] = field(default_factory=list)  # `modules:`, registered before the steps' children
    outputs: list[str] | None = None  # several values: a tuple, or a dict under ``output_keys``
    output_keys: list[str] | None = None
    out_shapes: list[Shape | None] = field(default_factory=list)  # each of several outputs' sample shape
    eval_outputs: list[str] | None = None  # what eval mode returns instead (`eval_output:`)
    eval_tuple: bool = False
    dropped: list[Node] = field(default_factory=list)  # `keep: false` steps' children: built, initialised, dropped
    init: list[InitRuleIR] = field(default_factory=list)  # the node's `init:`, run once it is built

    @property
    def children(self) -> list[Node]:
        """The child modules in registration order: the declared modules, then the steps' own in step order."""
        return [*self.modules, *(step.node for step in self.steps if step.node is not None)]

    @property
    def built(self) -> list[Node]:
        """Every module the node's construction makes, in order: its children, then the ones it drops."""
        return [*self.children, *self.dropped]

    @property
    def returned(self) -> list[str]:
        """Every value the node returns, in training mode (``outputs``) or its one ``output``."""
        return list(self.outputs) if self.outputs is not None else [self.output]

    @property
    def several_outputs(self) -> bool:
        return self.outputs is not None

    @property
    def shape_key(self) -> tuple:
        """What the generated class depends on: equal keys share one class."""
        tensors = tuple((t.name, t.shape, t.dtype, t.buffer, call_key(t.init)) for t in self.tensors)
        modules = tuple((m.name, type(m).__name__, getattr(m, "module_list", False)) for m in self.modules)
        outputs = (self.output, _tuple(self.outputs), _tuple(self.output_keys), _tuple(self.eval_outputs))
        steps = tuple(step.key for step in self.steps)
        made = (tuple(n.name for n in self.dropped), tuple(rule.key for rule in self.init))
        return (self.class_name, "graph", tensors, tuple(self.inputs), modules, steps, outputs, self.eval_tuple, made)

    @property
    def params(self) -> int:
        own = sum(t.numel for t in self.tensors if not t.buffer and t.dtype.startswith(("float", "bfloat")))
        return own + sum(child.params for child in self.children)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors) + sum(child.nbytes for child in self.children)

    def walk(self) -> Iterator[Node]:
        for child in self.children:
            yield child
            yield from child.walk()


def _tuple(items: list | None) -> tuple | None:
    return tuple(items) if items is not None else None


def call_key(call: CallIR | None) -> tuple | None:
    if call is None:
        return None
    return (call.name, tuple(a.source for a in call.args), tuple((k, a.source) for k, a in call.kwargs.items()))


Node = LayerIR | BlockIR | MergeIR | GraphIR


@dataclass
class InitRuleIR:
    """``init:`` rule: modules it matches (by type or path glob) and a call per parameter name."""

    types: tuple[Entry, ...]
    paths: tuple[str, ...]
    calls: dict[str, CallIR]
    yaml_path: tuple = ()
    scope: str = ""  # a graph node's rule: its module path, which the rule's paths are relative to
    _globs: re.Pattern | None = field(default=None, init=False, repr=False, compare=False)

    def matches(self, layer: LayerIR) -> bool:
        """Whether the rule applies to a layer: its type, or its module path against a glob."""
        return layer.entry in self.types or self.path_matches(self.relative(layer.path))

    def relative(self, path: str) -> str:
        """A module path from the root as the rule's paths read it: relative to its graph node (``scope``)."""
        return path[len(self.scope) + 1 :] if self.scope else path

    @property
    def key(self) -> tuple:
        """What the generated code of the rule depends on."""
        calls = tuple((name, call_key(call)) for name, call in self.calls.items())
        return (tuple(e.name for e in self.types), self.paths, calls)

    def path_matches(self, path: str) -> bool:
        """Whether a module path matches one of the globs (``fnmatchcase`` on each, as one regex built once)."""
        if not self.paths:
            return False
        if self._globs is None:
            self._globs = re.compile("|".join(fnmatch.translate(p) for p in self.paths))
        return self._globs.match(path) is not None


@dataclass
class LoadIR:
    """``init: - {from: PATH, strict: ...}``: weights loaded from a file once the other init rules have run."""

    path: str
    strict: bool
    yaml_path: tuple = ()


@dataclass
class ModelIR:
    root: BlockIR | MergeIR | GraphIR
    input_shape: Shape | None
    input_dtype: str = "float32"  # "int64" when the first layer takes indices (Embedding)
    init: list[InitRuleIR] = field(default_factory=list)
    blocks: dict[str, BlockCodeIR] = field(default_factory=dict)  # the code of each block the script writes once
    loops: dict[tuple, list[LoopCodeIR]] = field(default_factory=dict)  # container YAML path -> its loops as code
    load: LoadIR | None = None
    inputs: dict[str, Shape] | None = None  # every input's sample shape by name (one input: ``{"x": shape}``)
    input_dtypes: dict[str, str] = field(default_factory=dict)  # and its dtype: int64 where an Embedding reads it

    @property
    def output_shape(self) -> Shape | None:
        return self.root.out_shape

    @property
    def outputs(self) -> dict[str, Shape | None] | None:
        """Several outputs' sample shapes by name (a dict's keys, or the tuple's value names); None for one."""
        root = self.root
        if not isinstance(root, GraphIR) or root.outputs is None:
            return None
        names = root.output_keys if root.output_keys is not None else root.outputs
        return dict(zip(names, root.out_shapes))

    @property
    def several_inputs(self) -> bool:
        return self.inputs is not None and len(self.inputs) > 1

    @property
    def params(self) -> int:
        return self.root.params

    @property
    def nbytes(self) -> int:
        return self.root.nbytes

    def layers(self) -> Iterator[LayerIR]:
        return (node for node in self.root.walk() if isinstance(node, LayerIR))

    def final_layer(self) -> LayerIR | None:
        """The layer whose output is the model's, or None when the model ends by merging branches."""
        node: Node | None = self.root
        while node is not None and not isinstance(node, LayerIR):
            if isinstance(node, MergeIR):
                nodes = node.then.nodes if node.then is not None else []
            elif isinstance(node, GraphIR):
                last = next((s for s in node.steps if node.output in s.outputs), None)
                nodes = [last.node] if last is not None and last.node is not None and not last.unpack else []
            else:
                nodes = node.children
            node = nodes[-1] if nodes else None
        return node

    def merges(self) -> Iterator[MergeIR]:
        nodes = [self.root, *self.root.walk()]
        return (node for node in nodes if isinstance(node, MergeIR))

    def graphs(self) -> Iterator[GraphIR]:
        nodes = [self.root, *self.root.walk()]
        return (node for node in nodes if isinstance(node, GraphIR))

    def classes(self) -> list[MergeIR | GraphIR]:
        """The nodes the generated script writes a class for (merge blocks and graph nodes), in module order."""
        nodes = [self.root, *self.root.walk()]
        return [node for node in nodes if isinstance(node, (MergeIR, GraphIR))]


# --------------------------------------------------------------------------- training


@dataclass
class DataIR:
    dataset: CallIR
    transforms: list[CallIR]
    eval_transforms: list[CallIR]
    batch_size: int
    shuffle: bool
    num_workers: int
    val_split: float
    normalize: str | None  # CSV features: rescale | standardize | normalize
    num_classes: int | None  # None for regression targets
    validation: str | None  # where the validation set comes from: val_split | test_split | test_path | None
    targets: str = "classes"  # classes (int64 labels) | values (float, the output's shape); set by the loss check
    text: dict | None = None  # Text: its options, max_length and max_vocab filled in from the model
    class_weights: str | tuple | None = None  # "balanced" or one weight per class, for the loss's `weight`
    pairs: bool = False  # two samples a sample: ((a, b), 1 when one class else 0), for a model of two inputs
    target_classes: tuple | None = None  # a CSV of several target columns: each one's classes (None: values)
    target_kinds: list[str] | None = None  # and each one's kind, as its output's loss reads it
    image: str | None = None  # a CSV's column of image files: each sample is ((image, features), target)
    image_mode: str = "RGB"  # how its images are read (Pillow's mode): "L" for a model's one-channel input

    @property
    def images(self) -> bool:
        """Whether the samples hold images (the transforms apply to them): an image dataset, or a CSV's `image:`."""
        return self.dataset.entry.image or self.image is not None

    @property
    def several_inputs(self) -> bool:
        """Whether a sample is several inputs: a pair, or a CSV row's image and features."""
        return self.pairs or self.image is not None

    @property
    def augments(self) -> bool:
        return any(t.entry.random for t in self.transforms)

    @property
    def downloads(self) -> bool:
        """``download: true``: under torchrun each machine's first process builds the datasets first."""
        return self.dataset.value("download") is True


@dataclass
class SpeedIR:
    """The speed options with ``speed:`` applied; ``auto`` values are resolved by the device at run time."""

    precision: str = "fp32"
    channels_last: bool | str = False
    data_on_device: bool | str = False
    flips: list = field(default_factory=list)  # (axis, probability) of the random flips
    compile: bool | str = False
    cuda_graph: bool | str = False
    cudnn_benchmark: bool | str = False
    reuse_memory: bool | str = False

    @property
    def fast(self) -> bool:
        """Whether any option leaves the tutorial's way (the script then has the fast loop)."""
        options = (
            self.precision,
            self.channels_last,
            self.data_on_device,
            self.compile,
            self.cuda_graph,
            self.cudnn_benchmark,
            self.reuse_memory,
        )
        return options != ("fp32", False, False, False, False, False, False)


@dataclass
class LoopIR:
    """The loop options of `train:` (issue 24), checked: each is off by default and rendered only when on."""

    clip: str | None = None  # "norm" (clip_grad_norm_) | "value" (clip_grad_value_) | None
    clip_at: float | None = None  # the largest norm or value
    norm_type: float = 2.0
    accumulate: int = 1  # batches per update
    stop_on_nan: bool = False
    ema: float | None = None  # the decay of the weights' moving average
    warmup: int | None = None  # LinearLR's length, counted in the scheduler's steps (updates or epochs)
    warmup_factor: float = 0.01  # LinearLR's start_factor
    # a fixed-length schedule (OneCycleLR's total_steps) whose length the run is checked against before step 1
    fixed_length: bool = False


@dataclass
class RunIR:
    """The run options (issue 24): early stopping, the best checkpoint, parameter groups, frozen parameters."""

    early_stop: Any = None  # spec.EarlyStop
    best: str | None = None  # the metric best.pt is kept by: val_loss | val_accuracy
    # rules for runtime.param_groups, in order: {"params": [patterns], "layers": [class names], **options}
    groups: list[dict] = field(default_factory=list)
    freeze: list[str] = field(default_factory=list)  # module or parameter path patterns


@dataclass
class OutputLossIR:
    """One output's loss (`loss: {name: Loss}`), its weight in the sum and whether accuracy is reported."""

    name: str
    loss: CallIR
    weight: float
    accuracy: bool


@dataclass
class OutputsIR:
    """The losses of a model of several outputs, in training mode's output order, and what eval mode returns."""

    losses: list[OutputLossIR]
    eval_names: list[str]


@dataclass
class TrainingIR:
    data: DataIR
    loss: CallIR
    optimizer: CallIR
    scheduler: CallIR | None
    train: Any  # spec.TrainSpec
    speed: SpeedIR = field(default_factory=SpeedIR)
    # when scheduler.step() runs: "epoch", "batch" (after every update) or "loss" (per epoch, on the validation
    # loss); the registry's `steps` unless the spec's `interval:` says otherwise
    scheduler_steps: str | None = None
    loop: LoopIR = field(default_factory=LoopIR)  # clipping, accumulation, EMA, warm-up, stop on NaN
    run: RunIR = field(default_factory=RunIR)
    outputs: OutputsIR | None = None  # a model of several outputs: a loss per output


@dataclass
class Program:
    """A lowered spec: what every backend (build, render, check, summary) takes."""

    spec: Any  # spec.Spec
    model: ModelIR
    training: TrainingIR | None
    warnings: list[Problem] = field(default_factory=list)


def class_names(merges: list[MergeIR | GraphIR], blocks: dict[str, BlockCodeIR] | None = None) -> dict[tuple, str]:
    """A class name per distinct block shape, in order of first appearance (``AddBlock``, ``AddBlock_1``); a merge
    a `blocks:` definition made takes that block's class when the block's code is written once (``blocks``)."""
    blocks = blocks or {}
    own = {code.class_name for code in blocks.values() if code.class_name}
    namespace = Namespace({"Module", "Sequential", "OrderedDict", *own})
    names: dict[tuple, str] = {}
    for merge in merges:
        code = blocks.get(merge.use.block) if merge.use is not None else None
        if code is not None and code.class_name:
            names[merge.shape_key] = code.class_name
        elif merge.shape_key not in names:
            names[merge.shape_key] = namespace.name(merge.class_name)
    return names


# --------------------------------------------------------------------------- blocks in the generated script


@dataclass
class BlockCallIR:
    """A block use inside another block's code: ``shortcut(in_channels, width, stride)``."""

    name: str  # child name in its parent
    target: str  # the class or function it calls
    args: list[str]  # Python text of each argument (``stride=stride`` for keywords)
    optional: bool = False  # may return None (a part that passes the input through)
    use: UseIR | None = None


@dataclass
class CondIR:
    """An item of a block's list that exists only when ``condition`` holds (the spec's `{if: ...}` item)."""

    condition: str
    node: Any  # a template node

    @property
    def name(self) -> str:
        return self.node.name


@dataclass
class BlockCodeIR:
    """One `blocks:` definition as the generated script writes it: a class when its body is a merge (torchvision's
    ``BasicBlock``), an `if:` that adds the input or not (``flag``, torchvision's ``InvertedResidual``) or always a
    list of modules (an ``nn.Sequential`` subclass, torchvision's ``Conv2dNormActivation``), else a function
    returning the body's modules or None.

    Templates are IR nodes whose argument sources are Python expressions of the parameters; ``BlockCallIR`` stands
    for a block used inside, ``CondIR`` for an optional list item. Checked against every use in the model."""

    block: str
    params: list[tuple[str, str | None]]  # (Python name, default's Python text or None)
    spec_params: list[str]  # the spec's names of the same parameters, in order
    local_vars: list[tuple[str, str]]  # (name, Python text), computed first
    class_name: str | None = None  # the merge class (its body, or the merge one branch of an `if:` chooses)
    merge: MergeIR | None = None  # the class's template
    optional: tuple[str, ...] = ()  # its parts that may be None
    function: str | None = None  # the function (a body that is not a merge, or an `if:`)
    branches: list[tuple[str | None, Any]] = field(default_factory=list)  # (condition or None, template or None)
    doc: str = ""
    # the channels it puts out, as spec text over its parameters and `$in_channels` (``$width * 4``), checked
    # against every use: what a loop's running ``in_channels`` becomes after a call (torchvision's inplanes)
    out_channels: str | None = None
    # the body is always one list of modules: ``class ConvBNReLU(nn.Sequential)`` (torchvision's
    # ``Conv2dNormActivation``), its ``__init__`` the block's parameters; the compiled model's class has its name
    sequential: bool = False
    # the body is an `if:` between a residual add and the same modules alone: one class whose ``__init__`` sets
    # ``self.use_res_connect`` (FLAG) to this condition's Python text and whose ``forward`` adds the input or not
    # (torchvision's ``InvertedResidual``); ``merge`` is the `then` side, its children also the `else` side's
    flag: str | None = None


FLAG = "use_res_connect"  # the attribute of a flag class (BlockCodeIR.flag), as torchvision names it


@dataclass
class ForIR:
    """A spec loop the script writes as a Python ``for`` (torchvision's ``_make_layer``), its body statements:
    ``ForIR`` (a loop inside), ``LoopStepIR`` (one module appended)."""

    targets: str  # ``k, n``
    iterable: str  # ``enumerate(layers)``
    body: list[Any]
    name: str | None = None  # in a named block: the f-string that names each iteration's child
    yaml_path: tuple = ()  # the loop's place in the spec


@dataclass
class LoopStepIR:
    """One module a loop's iteration adds: a block call, or a nested list's statements (an ``nn.Sequential``)."""

    call: str | None = None  # the class or function called: ``BasicBlock``
    args: list[str] = field(default_factory=list)  # its arguments' Python text: ``in_channels``, ``stride=...``
    items: list[Any] | None = None  # a nested list: its statements
    channels: str | None = None  # the running channels after the call (None: unchanged)


@dataclass
class LoopCodeIR:
    """The children of one container (the root, or a list at its top) that a loop made, written as the loop."""

    container: tuple  # the container's YAML path
    names: list[str]  # the children it makes, in order (their names in the container)
    loop: ForIR
    channels: str | None = None  # the running channels' first value (the first call's input)
