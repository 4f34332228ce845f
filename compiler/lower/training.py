"""Stage 3b: the training sections -> TrainingIR, checked against the model and the data.

Catches at validation time what would otherwise crash at batch 1: a 3-channel Normalize on
MNIST, Normalize before ToTensor, images never turned into tensors, a model whose outputs
do not match the classes or targets, a loss that does not fit the targets.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import os

from compiler.common.paths import CSV_MAX_COLUMNS, CSV_SCAN_BYTES, PathError, check_spelling, inside, read_file
from compiler.common.suggest import did_you_mean
from compiler.facts import data_rules, torch_facts
from compiler.facts.param_rules import check_loss
from compiler.facts.registry import NON_NEGATIVE_ARGS, REGISTRY
from compiler.facts.shapes import format_shape
from compiler.front.problems import Problems
from compiler.front.spec import Call, DataSpec, SchedulerCall, Spec, TrainSpec
from compiler.lower.bind import Binder, arg_path, parameters, where_of
from compiler.lower.ir import (
    Arg,
    CallIR,
    DataIR,
    LayerIR,
    LoopIR,
    ModelIR,
    OutputsIR,
    RunIR,
    SpeedIR,
    TrainingIR,
)
from compiler.lower.outputs import lower_outputs

_shape = format_shape


def lower_training(spec: Spec, model: ModelIR | None, problems: Problems) -> TrainingIR | None:
    """Lower data, loss, optimizer, scheduler and train; check them against the model. None for a model-only spec."""
    present = {k: getattr(spec, k) is not None or (k,) in spec.unparsed for k in ("data", "loss", "optimizer", "train")}
    present["loss"] = present["loss"] or bool(spec.losses)
    if any(present.values()) and not all(present.values()):
        missing = [k for k, v in present.items() if not v]
        problems.fail(
            (),
            f"a training spec needs data, loss, optimizer and train; missing {', '.join(missing)}",
            f"add {', '.join(f'`{m}:`' for m in missing)} (or remove the training sections for a model-only spec)",
        )
    if not all(present.values()) or spec.data is None or spec.train is None:
        return None
    before = problems.count()
    binder = Binder(problems, spec.symbols, spec.unparsed)
    checker = _DataChecker(spec, model, binder)
    data = checker.data(spec.data)
    several = model is not None and model.outputs is not None
    if spec.losses and not several and model is not None:
        problems.fail(
            ("loss",),
            "`loss:` names outputs, but the model has one output",
            "give one loss (`loss: CrossEntropyLoss`), or return several outputs (`output: [a, b]`, §15)",
        )
    outputs = loss = None
    if several and data is not None and model is not None:
        outputs = lower_outputs(spec, model, data, lambda call: _call(binder, call, "loss"), checker)
        loss = outputs.losses[0].loss if outputs is not None else None
    elif spec.loss:
        loss = _call(binder, spec.loss, "loss")
    optimizer = _call(binder, spec.optimizer, "optimizer") if spec.optimizer else None
    scheduler = _call(binder, spec.scheduler, "scheduler") if spec.scheduler else None
    if data and loss and not several:
        checker.targets(data, loss, spec.train)
    elif data and outputs:
        checker.several_outputs(data, outputs, spec.train)
    if spec.train.mode == "online" and spec.train.epochs != 1:
        problems.fail(
            ("train", "epochs"),
            "online learning makes one pass and uses each sample once",
            "set `epochs: 1`, or use `mode: minibatch`",
        )
    speed = _speed(problems, spec.train, data, optimizer, scheduler) if data and optimizer else SpeedIR()
    if speed.fast and model is not None and (several or model.several_inputs):
        problems.fail(
            ("train",),
            f"a model of several {'outputs' if several else 'inputs'} trains in the tutorial's loop; the speed "
            "options (precision, compile, channels_last, data_on_device, cuda_graph) are not for it yet",
            "remove them (or `speed: auto`) from `train:`",
        )
    steps = _scheduler_steps(problems, spec.scheduler, scheduler) if spec.scheduler and scheduler else None
    loop, steps = _loop(problems, spec.train, scheduler, steps)
    if data and scheduler and loop.fixed_length:
        _check_schedule_length(problems, spec, data, scheduler, loop)
    run = _run_options(problems, spec.train, model, data, optimizer) if data and optimizer else RunIR()
    if problems.count() > before or not (data and loss and optimizer):
        return None
    return TrainingIR(data, loss, optimizer, scheduler, spec.train, speed, steps, loop, run, outputs)


# --------------------------------------------------------------------------- loop options (issue 24)


def _loop(problems: Problems, train: TrainSpec, scheduler: CallIR | None, steps: str | None) -> tuple:
    """(LoopIR, when the scheduler steps): the loop options checked against the mode and the scheduler."""
    clip = train.clip_grad
    loop = LoopIR(
        clip=None if clip is None else "norm" if clip.norm is not None else "value",
        clip_at=None if clip is None else clip.norm if clip.norm is not None else clip.value,
        norm_type=clip.norm_type if clip else 2.0,
        accumulate=train.accumulate,
        stop_on_nan=train.stop_on_nan,
        ema=train.ema,
        fixed_length=scheduler is not None and ("total_steps",) in scheduler.entry.one_of,
    )
    if train.accumulate > 1 and train.mode != "minibatch":
        what = "the whole training set" if train.mode == "batch" else "one sample, each used once"
        problems.fail(
            ("train", "accumulate"),
            f"mode: {train.mode} updates on {what}: there are no batches to accumulate",
            "remove `accumulate:`, or use `mode: minibatch`",
        )
    if train.warmup is not None:
        steps = _warmup(problems, train, scheduler, steps) or steps
        loop.warmup, loop.warmup_factor = train.warmup.length, train.warmup.start_factor
    return loop, steps


def _warmup(problems: Problems, train: TrainSpec, scheduler: CallIR | None, steps: str | None) -> str | None:
    """When the warmed-up schedule steps ("batch" or "epoch"); None when the warm-up is refused (reported)."""
    warmup, where = train.warmup, ("train", "warmup")
    unit = "batch" if warmup.steps is not None else "epoch"
    if scheduler is None:
        return unit  # the rate rises, then stays
    name = scheduler.name
    if steps == "loss":
        fix = "remove `warmup:`, or use a scheduler that follows a schedule (e.g. CosineAnnealingLR)"
        problems.fail(where, f"{name} steps on the validation loss, which SequentialLR cannot chain", fix)
    elif ("total_steps",) in scheduler.entry.one_of:
        problems.fail(where, f"{name} has its own warm-up (`pct_start:`)", f"remove `warmup:` (or set {name}'s)")
    elif unit != steps and unit == "batch":
        problems.fail(
            where,
            f"the warm-up counts updates, but {name} steps once per epoch",
            "add `interval: step` beside the scheduler's type (its lengths then count updates too), "
            "or count the warm-up in epochs: `warmup: {epochs: N}`",
        )
    elif unit != steps:
        problems.fail(
            where,
            f"the warm-up counts epochs, but {name} steps after every update",
            "count the warm-up in updates: `warmup: {steps: N}`",
        )
    else:
        return steps
    return None


def _check_schedule_length(problems: Problems, spec: Spec, data: DataIR, scheduler: CallIR, loop: LoopIR) -> None:
    """A fixed-length schedule (OneCycleLR) that does not fit the data, refused now where the data's size is known
    (torch would fail at the update past its end, after a whole epoch); else the script checks before step 1."""
    batches = _batches_per_epoch(data, spec.train.mode)
    if batches is None:
        return
    per_epoch, epochs = -(-batches // loop.accumulate), spec.train.epochs
    total, given_epochs, steps_per_epoch = (scheduler.value(k) for k in ("total_steps", "epochs", "steps_per_epoch"))
    name = scheduler.name

    def path(key: str) -> tuple:  # at the argument where the spec wrote it by name
        return scheduler.yaml_path + (name, key) if key in scheduler.kwargs else scheduler.yaml_path

    if total is None and steps_per_epoch is not None and steps_per_epoch != per_epoch:
        problems.fail(
            path("steps_per_epoch"),
            f"{name} steps_per_epoch is {steps_per_epoch}, but an epoch here makes {per_epoch} updates "
            f"({_epoch_words(data, spec.train.mode, batches, loop.accumulate)})",
            f"write `steps_per_epoch: {per_epoch}`",
        )
        return
    length = total if total is not None else (given_epochs or 0) * (steps_per_epoch or 0)
    if isinstance(length, int) and 0 < length < epochs * per_epoch:
        key = "total_steps" if total is not None else "epochs"
        problems.fail(
            path(key),
            f"{name}'s schedule is {length} updates long, but this run makes {epochs * per_epoch} ({epochs} epochs "
            f"x {per_epoch}): torch stops the run at update {length + 1}",
            f"write `total_steps: {epochs * per_epoch}`" if total is not None else f"write `epochs: {epochs}`",
        )


def _batches_per_epoch(data: DataIR, mode: str) -> int | None:
    """The training loader's batches per epoch where the data's size is known now (a `size:` argument)."""
    size = data.dataset.value("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return None
    if data.validation == "val_split":
        size -= round(size * data.val_split)  # as split_indices holds out
    return {"batch": 1, "online": size}.get(mode, -(-size // data.batch_size))


def _epoch_words(data: DataIR, mode: str, batches: int, accumulate: int) -> str:
    if mode != "minibatch":
        return f"mode: {mode}"
    grouped = f", {accumulate} to an update" if accumulate > 1 else ""
    return f"{batches} batches of {data.batch_size}{grouped}"


def _scheduler_steps(problems: Problems, call: SchedulerCall, scheduler: CallIR) -> str:
    """When the scheduler steps: its registry trait, or per update with `interval: step` (epoch schedulers)."""
    steps, interval = scheduler.entry.steps, call.interval
    if interval is None or (interval, steps) in (("step", "batch"), ("epoch", "epoch"), ("epoch", "loss")):
        return steps
    if steps == "loss":
        problems.fail(
            ("scheduler", "interval"),
            f"{scheduler.name} steps on the validation loss, once per epoch",
            "remove `interval:` (or use an epoch scheduler, e.g. CosineAnnealingLR, with `interval: step`)",
        )
    elif steps == "batch":
        problems.fail(
            ("scheduler", "interval"),
            f"{scheduler.name} steps after every update (its length counts updates, not epochs)",
            "remove `interval: epoch`",
        )
    return "batch"


def _speed(problems: Problems, train: TrainSpec, data: DataIR, optimizer: CallIR, scheduler: CallIR | None) -> SpeedIR:
    """Apply `speed:`, check the options against each other and the data, and settle what `auto` may do."""
    speed = SpeedIR(
        *(train.option(n) for n in ("precision", "channels_last", "data_on_device")),
        [],
        True if train.option("compile") is True else train.option("compile"),
        train.option("cuda_graph"),
        train.option("cudnn_benchmark"),
        train.option("reuse_memory"),
    )
    if speed.compile is True:
        speed.compile = "default"
    if train.speed == "auto" and optimizer.entry.fusable and not {"fused", "foreach"} & set(optimizer.kwargs):
        # one fused kernel instead of dozens of foreach kernels a step (a CUDA graph's main cost at batch 64)
        optimizer.kwargs["fused"] = Arg(True, "True")
    _data_on_device(problems, speed, data)
    _cuda_graph(problems, speed, train, optimizer, scheduler)
    return speed


def _data_on_device(problems: Problems, speed: SpeedIR, data: DataIR) -> None:
    """Data on the device flips on the device: other random transforms need the per-sample pipeline."""
    if not speed.data_on_device:
        return
    randoms = [t for t in data.transforms if t.entry.random]
    others = [t.name for t in randoms if t.entry.flip_axis is None]
    if others and speed.data_on_device is True:
        problems.fail(
            ("train", "data_on_device"),
            f"data_on_device applies random flips on the device, but not {', '.join(others)}",
            "remove those transforms, or set `data_on_device: false`",
        )
    elif others:
        speed.data_on_device = False  # auto: keep the per-sample pipeline
    speed.flips = [(t.entry.flip_axis, float(t.value("p", 0.5))) for t in randoms if t.entry.flip_axis is not None]


def _cuda_graph(problems: Problems, speed: SpeedIR, train: TrainSpec, optimizer: CallIR, scheduler: CallIR | None):
    """A CUDA graph replays one captured step: refuse (or, under auto, turn off) what a replay cannot do."""
    reasons = []
    if speed.compile:
        reasons.append("`compile` (its reduce-overhead mode already uses CUDA graphs)")
    if scheduler is not None or train.warmup is not None:
        what = scheduler.name if scheduler is not None else "warmup"
        reasons.append(f"a scheduler ({what}: a captured step keeps its learning rate)")
    if train.clip_grad is not None or train.accumulate > 1:
        reasons.append("clip_grad or accumulate (a captured step updates after every batch, as it was captured)")
    if not optimizer.entry.graph_safe:
        safe = sorted(e.name for e in REGISTRY.entries("optimizer") if e.graph_safe)
        reasons.append(f"{optimizer.name} (captured steps support {', '.join(safe)})")
    if speed.precision == "fp16":
        reasons.append("fp16 (its gradient scaler skips steps, which a graph cannot)")
    if not speed.data_on_device:
        reasons.append("data that is not on the device (`data_on_device`)")
    if speed.cuda_graph is True and reasons:
        problems.fail(
            ("train", "cuda_graph"),
            f"cuda_graph cannot be combined with {'; '.join(reasons)}",
            "set `cuda_graph: false`, or change what it conflicts with",
        )
    elif speed.cuda_graph == "auto" and reasons:
        speed.cuda_graph = False
    if speed.fast and train.mode != "minibatch" and speed.cuda_graph:
        problems.fail(("train", "cuda_graph"), "cuda_graph needs mode: minibatch", "set `cuda_graph: false`")


def _call(binder: Binder, call: Call, kind: str) -> CallIR | None:
    entry = REGISTRY.get(kind, call.type)
    assert entry is not None
    result = binder.bind(call, entry)
    if result is not None and kind in ("loss", "optimizer", "scheduler"):
        _check_arguments(binder.problems, result, call)
    if result is not None and kind in ("transform", "dataset") and not _torchvision_values_ok(binder, call, result):
        return None  # the shapes that follow would only repeat the problem
    return result


def _torchvision_values_ok(binder: Binder, call: Call, ir: CallIR) -> bool:
    """Report the values torchvision would refuse (data_rules), each at its argument."""
    refused = data_rules.check(ir.entry.class_name, ir.arguments)
    positional = list(parameters(ir.entry))
    for name, problem, fix in refused:
        index = next((i for i, p in enumerate(positional) if p.name == name), 0)
        if call.form == "list" and index:  # `Resize: [8, 8]` is Resize(8, 8): size 8, interpolation 8
            first = positional[0].name
            problem += f" (item {index + 1} of `{call.type}: [...]` is its {name})"
            fix += f"; to give {first} as a list, write `{call.type}: {{{first}: [...]}}`"
        binder.problems.fail(arg_path(call, name, positional), problem, fix)
    return not refused


_REDUCTIONS = ("none", "mean", "sum")


def _check_arguments(problems: Problems, ir: CallIR, call: Call) -> None:
    """Catch now what torch would refuse at step 1: an unknown reduction, a negative lr, betas out of range."""
    where = where_of(call)
    reduction = ir.value("reduction")
    allowed = _REDUCTIONS + (("batchmean",) if ir.name == "KLDivLoss" else ())
    if isinstance(reduction, str) and reduction not in allowed:
        problems.fail(
            _arg_where(call, "reduction", where),
            f"{ir.name} reduction {reduction!r} is not one of {allowed}",
            did_you_mean(reduction, allowed, f"use one of {', '.join(allowed)}"),
        )
        return
    kwargs = ir.values()[1]
    if ir.entry.one_of and not any(all(kwargs.get(a) is not None for a in group) for group in ir.entry.one_of):
        options = [" and ".join(f"`{a}:`" for a in group) for group in ir.entry.one_of]
        per_batch = ": it steps once per batch, epochs x batches per epoch in all" if ir.entry.steps == "batch" else ""
        problems.fail(where, f"{ir.name} needs {' or '.join(options)}", f"add {options[0]}{per_batch}")
    if ir.entry.kind != "loss":
        _check_numbers(problems, ir, call)
    else:
        _check_loss(problems, ir, call)


def _check_numbers(problems: Problems, ir: CallIR, call: Call) -> None:
    """An optimizer's or scheduler's numbers torch refuses (constructing one imports torch._dynamo: a second)."""
    where = where_of(call)
    for name, value in ir.values()[1].items():
        values = value if isinstance(value, tuple) else (value,)
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if name in NON_NEGATIVE_ARGS and any(v < 0 for v in numbers):
            problems.fail(
                _arg_where(call, name, where),
                f"{ir.name} {name} must not be negative, got {value!r}",
                f"use a value >= 0 for {name}",
            )
        if name == "betas" and any(not 0.0 <= v < 1.0 for v in numbers):
            problems.fail(
                _arg_where(call, name, where),
                f"{ir.name} betas must be in [0, 1), got {value!r}",
                "e.g. betas: [0.9, 0.999]",
            )


def _check_loss(problems: Problems, ir: CallIR, call: Call) -> None:
    """What a loss's constructor refuses: by its rule (no torch import), or torch's own for a plugin or live."""
    args, kwargs = ir.values()
    try:
        if torch_facts.live() or ir.entry.cls_object is not None:
            ir.entry.resolve()(*args, **kwargs)
        else:
            check_loss(ir.name, ir.arguments)
    except Exception as err:  # torch's own argument checks, e.g. "Invalid learning rate: -0.01"
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        culprit = next((k for k, v in kwargs.items() if repr(v) in message or str(v) in message), None)
        problems.fail(
            _arg_where(call, culprit, where_of(call)) if culprit else where_of(call),
            f"torch refuses {ir.name}'s arguments: {message}",
            "check the value against the torch documentation",
        )


def _arg_where(call: Call, name: str, default: tuple) -> tuple:
    return call.yaml_path + (call.type, name) if name in call.kwargs else default


class _DataChecker:
    def __init__(self, spec: Spec, model: ModelIR | None, binder: Binder):
        self.spec, self.model, self.binder, self.problems = spec, model, binder, binder.problems
        self.text_options: dict | None = None  # a Text dataset's, with what the model decides filled in
        self.target_classes: tuple | None = None  # a CSV of several target columns: each one's classes (or None)
        self.csv_image: dict | None = None  # a CSV's `image:` column: its name, Pillow mode and feature count

    def fail(self, path, message: str, fix: str = "") -> None:
        self.problems.fail(path, message, fix)

    def data(self, data: DataSpec) -> DataIR | None:
        bound = self.bind_data(data)
        if bound is None:
            return None
        dataset, transforms, eval_transforms = bound
        before = self.problems.count()
        shape, classes, has_test = self.dataset_facts(dataset, data)
        if self.problems.count() > before:  # unreadable data: no checks that build on its facts
            return None
        self.check_samples(data, dataset, transforms, eval_transforms, shape)
        if data.pairs:  # the target says whether a pair's two samples are of one class: two classes
            if classes is None and dataset.name != "ImageFolder":
                self.fail(("data", "pairs"), "`pairs:` pairs samples by class, but these targets are values", "")
            classes = 2
        return DataIR(
            dataset,
            transforms,
            eval_transforms,
            data.batch_size,
            data.shuffle,
            data.num_workers,
            data.val_split,
            data.normalize,
            classes,
            _validation(data, dataset, has_test),
            text=self.text_options,
            class_weights=tuple(data.class_weights) if isinstance(data.class_weights, list) else data.class_weights,
            pairs=data.pairs,
            target_classes=self.target_classes,
            image=self.csv_image["column"] if self.csv_image else None,
            image_mode=self.csv_image["mode"] if self.csv_image else "RGB",
        )

    def bind_data(self, data: DataSpec) -> tuple[CallIR, list[CallIR], list[CallIR]] | None:
        """The dataset, transforms and eval transforms bound; None when one is refused (reported)."""
        refused = ("data", "dataset") in self.spec.unparsed
        dataset = None if refused else _call(self.binder, data.dataset, "dataset")
        transforms = [c for c in (_call(self.binder, t, "transform") for t in data.transforms) if c]
        if data.eval_transforms is not None:
            eval_transforms = [c for c in (_call(self.binder, t, "transform") for t in data.eval_transforms) if c]
        else:
            eval_transforms = [t for t in transforms if not t.entry.random]
        dropped = {("data", "transforms"), ("data", "eval_transforms")} & self.spec.unparsed
        if dataset is None or len(transforms) != len(data.transforms) or dropped:
            return None
        for t in data.transforms:
            entry = REGISTRY.get("transform", t.type)
            if entry and entry.replaced_by:
                self.problems.warn(
                    t.yaml_path, f"{t.type} is the old name of {entry.replaced_by}", f"write {entry.replaced_by}"
                )
        return dataset, transforms, eval_transforms

    def check_samples(self, data: DataSpec, dataset: CallIR, transforms: list, eval_transforms: list, shape) -> None:
        """A sample through the transforms, against the model's `input:`."""
        image = dataset.entry.image or self.csv_image is not None
        sample = self.walk_transforms(transforms, shape, image, ("data", "transforms"))
        if data.eval_transforms is not None:
            self.walk_transforms(eval_transforms, shape, image, ("data", "eval_transforms"))
        if dataset.name == "Text" and (data.transforms or data.eval_transforms):
            self.fail(
                ("data", "transforms" if data.transforms else "eval_transforms"),
                "Text gives token ids; image transforms do not apply to them",
                "remove the transforms (Text's own options: tokenize, max_length, min_freq, max_vocab)",
            )
        if data.normalize and dataset.name != "CSV":
            self.fail(
                ("data", "normalize"),
                "`normalize:` scales tabular features; this dataset is not tabular",
                "use a Normalize transform for images, or remove `normalize:`",
            )
        if self.several_inputs(data, dataset, sample):
            return
        model_input = self.spec.input
        if sample is not None and model_input is not None and None not in sample and tuple(sample) != model_input:
            self.fail(
                ("input",),
                f"the model's input is {_shape(model_input)} but the data gives samples of "
                f"shape {_shape(tuple(sample))}",
                f"write `input: {list(sample)}` or change the transforms",
            )

    def several_inputs(self, data: DataSpec, dataset: CallIR, sample: tuple | None) -> bool:
        """`pairs: true` gives two inputs a sample, each a sample of the dataset: for a model of two inputs of its
        shape. True when the model's inputs are checked here (or the pairing is refused)."""
        inputs = self.spec.input_shapes or {}
        if self.csv_image is not None:
            return self.image_and_features(data, dataset, sample, inputs)
        if not data.pairs and len(inputs) < 2:
            return False
        if not data.pairs:
            self.fail(
                ("input",),
                f"the model takes {len(inputs)} inputs, but {dataset.name} gives one a sample",
                "for a two-input (Siamese) model, pair the samples: `data: {pairs: true, ...}`",
            )
            return True
        if len(inputs) != 2:
            self.fail(
                ("data", "pairs"),
                f"`pairs: true` gives two inputs a sample, but the model takes {len(inputs)}",
                "name two inputs: `input: {left: [...], right: [...]}`",
            )
            return True
        if dataset.name in ("Text", "Synthetic") or (dataset.name == "CSV" and not isinstance(sample, tuple)):
            self.fail(("data", "pairs"), f"`pairs:` pairs samples by class; {dataset.name} here has none", "")
            return True
        for name, shape in inputs.items():
            if sample is not None and None not in sample and tuple(sample) != tuple(shape):
                self.fail(
                    ("input", name),
                    f"input {name!r} is {_shape(tuple(shape))}, but a pair holds two samples of shape "
                    f"{_shape(tuple(sample))}",
                    f"write `{name}: {list(sample)}` or change the transforms",
                )
        return True

    def image_and_features(self, data: DataSpec, dataset: CallIR, sample: tuple | None, inputs: dict) -> bool:
        """A CSV's `image:` gives two inputs a sample: the row's image (through the transforms), then its features;
        for a model of two inputs of those shapes, in that order."""
        if data.pairs:
            self.fail(
                ("data", "pairs"),
                "`pairs:` pairs single samples; a CSV's `image:` gives two inputs already",
                "remove `pairs:`",
            )
            return True
        if len(inputs) != 2:
            self.fail(
                ("input",),
                f"a CSV with `image:` gives two inputs a sample (the image, then the features), but the model takes "
                f"{len(inputs)}",
                "name two inputs, the image's first: `input: {image: [1, 28, 28], features: [3]}`",
            )
            return True
        assert self.csv_image is not None
        expected = [tuple(sample) if sample is not None and None not in sample else None]
        expected.append((self.csv_image["features"],))
        for (name, shape), given, what in zip(inputs.items(), expected, ("image", "features")):
            if given is not None and tuple(shape) != given:
                self.fail(
                    ("input", name),
                    f"input {name!r} takes the row's {what} ({'first' if what == 'image' else 'second'} input), "
                    f"which {'the transforms make' if what == 'image' else 'the CSV gives'} {_shape(given)}, but it "
                    f"is {_shape(tuple(shape))}",
                    f"write `{name}: {list(given)}`" + (" or change the transforms" if what == "image" else ""),
                )
        return True

    def dataset_facts(self, dataset: CallIR, data: DataSpec):
        """(sample shape before transforms, number of classes, has a test split)."""
        name = dataset.name
        path = dataset.yaml_path
        if name == "ImageFolder":
            return dataset.entry.sample, self.image_folder_classes(dataset), False
        if dataset.entry.sample is not None:
            return dataset.entry.sample, dataset.entry.classes, dataset.entry.test_split
        if name == "FakeData":
            size = dataset.value("image_size", (3, 224, 224))
            return tuple(size), dataset.value("num_classes", 10), False
        if name == "Synthetic":
            inputs, targets, classes = (dataset.value(k) for k in ("inputs", "targets", "classes"))
            if (targets is None) == (classes is None):
                self.fail(
                    path,
                    "Synthetic needs exactly one of `targets:` (a shape: regression) or `classes:`",
                    "e.g. `targets: [10]` or `classes: 10`",
                )
            if not _is_shape(inputs) or (targets is not None and not _is_shape(targets)):
                self.fail(
                    path,
                    "Synthetic `inputs:` and `targets:` are shapes: lists of positive integers",
                    "e.g. `inputs: [1000]`",
                )
                return None, None, False
            if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
                self.fail(path, "Synthetic `classes:` must be a positive integer")
            size = dataset.value("size")
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 10_000_000:
                self.fail(path, "Synthetic `size:` must be an integer from 1 to 10000000")
            return tuple(inputs), classes, False
        if name == "CSV":
            return self.csv_facts(dataset)
        if name == "Text":
            return self.text_facts(dataset)
        return None, None, False

    def image_folder_classes(self, dataset: CallIR) -> int | None:
        """ImageFolder's classes are its root's subfolders (counted, not read); None if the root is not there."""
        root = dataset.value("root")
        if not isinstance(root, str) or not os.path.isdir(root):
            self.fail(
                dataset.yaml_path,
                f"ImageFolder root {root!r} is not a folder (paths are relative to where you run specc)",
                "give the folder that holds one subfolder of images per class",
            )
            return None
        with os.scandir(root) as entries:
            classes = sum(1 for e in entries if e.is_dir() and not e.name.startswith("."))
        if classes == 0:
            self.fail(
                dataset.yaml_path,
                f"ImageFolder root {root!r} has no class subfolders",
                "put each class's images in a subfolder named after the class",
            )
        return classes or None

    def text_facts(self, dataset: CallIR):
        """((max_length,), classes, has a test set) of a Text dataset: its file's columns and labels, or its
        folder's class subfolders; ``max_length`` and ``max_vocab`` come from the model where not given."""
        where, options = dataset.yaml_path, {k: dataset.value(k) for k in _TEXT_DEFAULTS}
        options = {k: _TEXT_DEFAULTS[k] if v is None else v for k, v in options.items()}
        options["max_length"] = self.text_length(dataset, options["max_length"])
        options["max_vocab"] = self.text_vocabulary(dataset, options["max_vocab"])
        classes = self.text_source(dataset, "path", options)
        if classes is None or options["max_length"] is None:
            return None, None, False
        if options["test_path"] is not None and self.text_source(dataset, "test_path", options) is None:
            return None, None, False
        if classes < 2:
            self.fail(where, f"Text {options['path']!r} holds {classes} class", "give examples of 2 or more classes")
        self.text_options = options
        return (options["max_length"],), classes, options["test_path"] is not None

    def text_length(self, dataset: CallIR, given: int | None) -> int | None:
        """Token ids per sample: ``max_length``, else the model's one-dimensional ``input:``."""
        model_input = self.spec.input
        if given is None and model_input is not None and len(model_input) == 1:
            return model_input[0]
        if given is not None and model_input is not None and len(model_input) == 1 and given != model_input[0]:
            self.fail(
                _csv_where(dataset, "max_length"),
                f"Text max_length {given} gives {given} token ids per sample, but the model's input is {model_input}",
                f"write `input: [{given}]`, or max_length: {model_input[0]} (or leave it out: it follows the input)",
            )
            return None
        if given is None:
            self.fail(
                dataset.yaml_path,
                "Text needs `max_length:` (the token ids per sample) or a model `input:` of one number",
                "e.g. max_length: 64 (texts are cut or padded to it), and input: [64]",
            )
        return given

    def text_vocabulary(self, dataset: CallIR, given: int | None) -> int | None:
        """The most tokens the vocabulary keeps: ``max_vocab``, else the first Embedding's ``num_embeddings``;
        refused when the Embedding has fewer rows than the vocabulary may have ids."""
        embedding = _first_embedding(self.model)
        rows = embedding.call.value("num_embeddings") if embedding is not None else None
        if not isinstance(rows, int) or given is None:
            return given if given is not None else rows
        if given > rows:
            self.fail(
                _csv_where(dataset, "max_vocab"),
                f"Text max_vocab {given} gives token ids up to {given - 1}, but the model's Embedding "
                f"({embedding.path}) has {rows} rows (num_embeddings)",
                f"set max_vocab: {rows}, or num_embeddings: {given}",
            )
        return given

    def text_source(self, dataset: CallIR, key: str, options: dict) -> int | None:
        """The classes of a Text file (its label column's values) or folder (its subfolders); None when refused."""
        path = options[key]
        try:
            check_spelling(path)
            folder = os.path.isdir(path)
        except PathError as err:
            self.fail(_csv_where(dataset, key), f"Text {key} {path!r} {err.message}", err.fix)
            return None
        if folder:
            return self.folder_classes(dataset, key, path)
        if not os.path.lexists(path):
            self.fail(
                _csv_where(dataset, key),
                f"Text {key} {path!r} not found (paths are relative to where you run specc)",
                "give a CSV file with text and label columns, or a folder with a subfolder of .txt files per class",
            )
            return None
        header, labels = self.csv_head(dataset, key, path, options["label"])
        if header is None:
            return None
        for column in ("text", "label"):
            if options[column] not in header:
                self.fail(
                    _csv_where(dataset, column if column in dataset.kwargs else key),
                    f"CSV file {path!r} has no {column} column {_clip(options[column])}",
                    did_you_mean(options[column], [c[:40] for c in header], f"its columns: {_columns(header)}"),
                )
                return None
        return len(labels)

    def folder_classes(self, dataset: CallIR, key: str, path: str) -> int | None:
        """A Text folder's classes: its subfolders (counted, not read), inside the folder specc runs in."""
        if not inside(path):
            self.fail(
                _csv_where(dataset, key),
                f"Text {key} {path!r} leaves the folder specc runs in (a symbolic link points outside it)",
                "copy the texts into the project instead of linking to them",
            )
            return None
        with os.scandir(path) as entries:
            classes = sum(1 for e in entries if e.is_dir() and not e.name.startswith("."))
        if classes == 0:
            self.fail(
                _csv_where(dataset, key),
                f"Text folder {path!r} has no class subfolders",
                "put each class's .txt files in a subfolder named after the class",
            )
        return classes or None

    def csv_facts(self, dataset: CallIR):
        """(features, classes, has a test file) of a CSV dataset; its files are read through ``paths.read_file``.

        Both files (``path`` and ``test_path``) must resolve, symbolic links followed, to regular files inside
        the folder specc runs in; at most ``CSV_SCAN_BYTES`` of each is read. Problems name at most a few
        columns, each cut to 40 characters and escaped: a file's contents never reach a log in bulk.
        """
        path, target = dataset.value("path"), dataset.value("target")
        where = dataset.yaml_path
        if isinstance(target, (list, tuple)) and target and all(isinstance(t, str) for t in target):
            return self.csv_several_targets(dataset, path, target)
        if not isinstance(path, str) or not isinstance(target, str):
            self.fail(
                where,
                "CSV `path:` is a string, and `target:` a column's name (or a list of them, one per output)",
                "e.g. `target: label`",
            )
            return None, None, False
        test_path = dataset.value("test_path")
        if test_path is not None and not isinstance(test_path, str):
            self.fail(_csv_where(dataset, "test_path"), "CSV `test_path:` must be a string", "write a relative path")
            return None, None, False
        header, labels = self.csv_head(dataset, "path", path, target)
        if header is None:
            return None, None, False
        image = dataset.value("image")
        if image is not None:
            return self.csv_image_facts(dataset, path, header, [target], labels, test_path)
        files = [("path", path, header)]
        if test_path is not None:
            test_header, _ = self.csv_head(dataset, "test_path", test_path, target)
            if test_header is None:
                return None, None, False
            files.append(("test_path", test_path, test_header))
        features = dataset.value("features") or [h for h in header if h != target]
        if not all(self.csv_columns(dataset, key, name, columns, target, features) for key, name, columns in files):
            return None, None, False
        return (len(features),), _classes(labels), test_path is not None

    def csv_several_targets(self, dataset: CallIR, path: object, targets: list[str] | tuple[str, ...]):
        """`target: [species, petal_width]`: one column per output; each column's classes are kept (DataIR)."""
        if not isinstance(path, str) or dataset.value("test_path") is not None:
            self.fail(
                _csv_where(dataset, "test_path" if isinstance(path, str) else "path"),
                "a CSV of several targets reads `path:` (a string) and splits it with `val_split:`",
                "remove `test_path:`, or give one target",
            )
            return None, None, False
        if len(set(targets)) != len(targets):
            self.fail(_csv_where(dataset, "target"), "`target:` names a column twice", "name each column once")
            return None, None, False
        heads = [self.csv_head(dataset, "path", path, t) for t in targets]
        header = heads[0][0]
        if header is None:
            return None, None, False
        features = dataset.value("features") or [h for h in header if h not in targets]
        for t in targets:
            if not self.csv_columns(dataset, "path", path, header, t, [f for f in features if f not in targets]):
                return None, None, False
        overlap = [f for f in features if f in targets]
        if overlap:
            self.fail(_csv_where(dataset, "features"), f"{overlap[0]!r} is a target and a feature", "drop one")
            return None, None, False
        self.target_classes = tuple(_classes(labels) for _, labels in heads)
        if dataset.value("image") is not None:
            return self.csv_image_facts(dataset, path, header, list(targets), set(), None)
        return (len(features),), None, False

    def csv_image_facts(self, dataset: CallIR, path: str, header: list, targets: list, labels: set, test_path):
        """`image: column`: each row names an image file (relative to the CSV's folder), the other columns are
        features. Every path the scan reads must stay inside the folder specc runs in; the first image is opened
        (Pillow) for its size. (image shape, classes, has a test file), the features' count kept for the inputs."""
        column, where = dataset.value("image"), _csv_where(dataset, "image")
        if not isinstance(column, str) or column not in header:
            self.fail(
                where,
                f"CSV `image:` names the column of image files; {path!r} has no column {_clip(column)}",
                did_you_mean(str(column), [c[:40] for c in header], f"its columns: {_columns(header)}"),
            )
            return None, None, False
        if column in targets:
            self.fail(where, f"{column!r} is the target and the image column", "name the column of image files")
            return None, None, False
        features = dataset.value("features") or [h for h in header if h not in targets and h != column]
        if column in features:
            self.fail(_csv_where(dataset, "features"), f"{column!r} is the image column, not a feature", "drop it")
            return None, None, False
        for key, name in [("path", path)] + ([("test_path", test_path)] if test_path is not None else []):
            columns = header if key == "path" else self.csv_head(dataset, key, name, targets[0])[0]
            if columns is None:
                return None, None, False
            if not all(self.csv_columns(dataset, key, name, columns, t, [*features, column]) for t in targets):
                return None, None, False
            size = self.first_image(dataset, key, name, column)
            if size is None:
                return None, None, False
        first = next(iter((self.spec.input_shapes or {}).values()), None) or ()
        mode = "L" if tuple(first[:1]) == (1,) else "RGB"  # the image's input: one channel is grayscale
        self.csv_image = {"column": column, "mode": mode, "features": len(features)}
        return (1 if mode == "L" else 3, size[1], size[0]), _classes(labels) if labels else None, test_path is not None

    def first_image(self, dataset: CallIR, key: str, path: str, column: str) -> tuple[int, int] | None:
        """Every image path in a CSV file's first rows spelled inside the folder specc runs in (relative, no ``..``
        out: the reader resolves links when it opens each), and the first image's (width, height); None when refused
        (reported)."""
        where = _csv_where(dataset, "image")
        raw, _ = read_file(path, limit=CSV_SCAN_BYTES)
        folder = os.path.dirname(path)
        files = _column_values(raw, column)
        if not files:
            self.fail(_csv_where(dataset, key), f"CSV file {path!r} has no data rows", "give rows of images")
            return None
        for line, name in files:
            try:
                check_spelling(os.path.join(folder, name))
            except PathError as err:
                self.fail(where, f"{path}:{line}: image {_clip(name)} {err.message}", err.fix)
                return None
        line, name = files[0]
        try:
            data, complete = read_file(os.path.join(folder, name), limit=IMAGE_MAX_BYTES)
        except PathError as err:
            self.fail(where, f"{path}:{line}: image {_clip(name)} {err.message}", err.fix)
            return None
        size = _image_size(data) if complete else None
        if size is None:
            self.fail(
                where,
                f"{path}:{line}: {_clip(name)} is not an image Pillow can read (or is over 64 MiB)",
                "give PNG or JPEG files, their paths relative to the CSV file's folder",
            )
        return size

    def csv_columns(self, dataset: CallIR, key: str, name: str, columns: list, target: str, features: list) -> bool:
        """A CSV file has the target column and every feature column; False when not (reported)."""
        label = "CSV file" if key == "path" else "CSV test file"
        if target not in columns:
            self.fail(
                _csv_where(dataset, "target"),
                f"{label} {name!r} has no column {_clip(target)}",
                did_you_mean(target, [c[:40] for c in columns], f"its columns: {_columns(columns)}"),
            )
            return False
        present = set(columns)
        missing = [f for f in features if f not in present]
        if missing:
            self.fail(
                _csv_where(dataset, "features" if dataset.value("features") else key),
                f"{label} {name!r} has no column{'s' if len(missing) > 1 else ''} {_columns(missing)}",
                f"its columns: {_columns(columns)}",
            )
            return False
        return True

    def csv_head(self, dataset: CallIR, key: str, path: str, target: str) -> tuple[list[str] | None, set[str]]:
        """The header of a CSV file a spec names and the values of its target column in the first rows."""
        where = _csv_where(dataset, key)
        label = "CSV file" if key == "path" else "CSV test file"
        try:
            raw, complete = read_file(path, limit=CSV_SCAN_BYTES)
        except PathError as err:
            if err.kind == "outside":
                self.fail(where, f"CSV {key} {path!r} {err.message}", err.fix)
            elif err.kind == "missing":
                self.fail(where, f"{label} {path!r} not found (paths are relative to where you run specc)", err.fix)
            else:
                self.fail(where, f"{label} {path!r} {err.message}", err.fix)
            return None, set()
        if not complete:  # scan whole rows only
            cut = raw.rfind(b"\n")
            if cut < 0:
                message = f"{label} {path!r} has a first line longer than {CSV_SCAN_BYTES >> 20} MiB"
                self.fail(where, message, "give a CSV file with a header row")
                return None, set()
            raw = raw[: cut + 1]
        first = raw.split(b"\n", 1)[0]
        if first.count(b",") >= CSV_MAX_COLUMNS:  # counted before csv builds a list of them (an over-count is fine)
            self.fail(where, f"{label} {path!r} has more than {CSV_MAX_COLUMNS:,} columns", "give fewer columns")
            return None, set()
        try:
            return _header_and_labels(raw, target)
        except (UnicodeDecodeError, csv.Error) as err:
            self.fail(
                where, f"cannot read {label} {path!r}: {type(err).__name__}", "give a UTF-8 CSV file with a header row"
            )
            return None, set()

    def walk_transforms(self, transforms: list[CallIR], shape, image: bool, path) -> tuple | None:
        """Follow a sample through the transforms: PIL image or tensor, and its shape."""
        state = "image" if image else "tensor"
        shape = list(shape) if shape is not None else None
        for i, t in enumerate(transforms):
            state = self.walk_transform(t, path + (i,), state, shape, image)
        if state == "image":
            self.fail(
                path if transforms else ("data", "dataset"),
                "the samples are still PIL images after the transforms; a DataLoader cannot batch them",
                "add `ToTensor` to `transforms:`",
            )
            return None
        return tuple(shape) if shape is not None else None

    def walk_transform(self, t: CallIR, where: tuple, state: str, shape: list | None, image: bool) -> str:
        """One transform: the sample's state after it (image or tensor); ``shape`` changes in place."""
        name = t.entry.class_name
        if name == "ToTensor":
            if state == "tensor":
                self.fail(
                    where,
                    "ToTensor gets a tensor: the sample is already one",
                    "remove it (or put ToPILImage before it)",
                )
            return "tensor"
        if name == "ToPILImage":
            if state == "image":
                self.fail(where, "ToPILImage gets a PIL image already", "remove it")
            return "image"
        if name == "Normalize":
            if state == "image":
                self.fail(where, "Normalize needs a tensor but gets a PIL image", "put ToTensor before Normalize")
            self.normalize_values(t, where, shape[0] if shape else None, image)
        elif name in ("Resize", "CenterCrop", "RandomCrop") and shape:
            self.resize(t, name, where, shape)
        elif name == "Grayscale" and shape:
            shape[0] = t.value("num_output_channels", 1) or 1
        elif name == "Pad" and shape and shape[1] is not None:
            pad = t.value("padding")
            pad = [pad] * 4 if isinstance(pad, int) else list(pad) * {1: 4, 2: 2}.get(len(pad), 1)
            if len(pad) == 4:
                shape[1:] = [shape[1] + pad[1] + pad[3], shape[2] + pad[0] + pad[2]]
        return state

    def normalize_values(self, t: CallIR, where: tuple, channels: int | None, image: bool) -> None:
        """Normalize's mean and std: one value, or one per channel of the images."""
        for key in ("mean", "std"):
            value = t.value(key)
            n = len(value) if isinstance(value, (list, tuple)) else 1
            if channels is not None and image and n not in (1, channels):
                self.fail(
                    where,
                    f"Normalize has {n} {key} values but the images have {channels} "
                    f"channel{'s' if channels > 1 else ''}",
                    f"give {channels} value{'s' if channels > 1 else ''}, e.g. {key}: {[0.5] * channels}",
                )

    def resize(self, t: CallIR, name: str, where: tuple, shape: list) -> None:
        """The (C, H, W) of a sample after Resize, CenterCrop or RandomCrop (a crop larger than the image refused)."""
        size = t.value("size")
        size = size[0] if isinstance(size, (list, tuple)) and len(size) == 1 else size  # [s] is s
        if name == "RandomCrop" and shape[1] is not None and not t.value("pad_if_needed"):
            crop = data_rules.crop_too_large(size, t.value("padding"), shape[1], shape[2])
            if crop:
                self.fail(
                    where,
                    f"RandomCrop's crop {crop} is larger than the {shape[1]}x{shape[2]} images",
                    "crop less, add `padding:`, or set `pad_if_needed: true`",
                )
        if isinstance(size, int) and name != "Resize":
            shape[1:] = [size, size]
        elif isinstance(size, int):  # Resize(int) scales the shorter side
            h, w = shape[1], shape[2]
            if h is not None and w is not None:
                shape[1:] = [size, max(1, int(size * w / h))] if h <= w else [max(1, int(size * h / w)), size]
            else:
                shape[1:] = [None, None]
        elif isinstance(size, (list, tuple)) and len(size) == 2:
            shape[1:] = list(size)

    def targets(self, data: DataIR, loss: CallIR, train: TrainSpec) -> None:
        """The loss against the data's targets and the model's output, before anything trains."""
        out = self.model.output_shape if self.model else None
        name = data.dataset.name
        if self.model is not None and self.model.input_dtype == "int64" and name in ("Synthetic", "CSV"):
            self.fail(
                data.dataset.yaml_path,
                f"the model's first layer takes integer indices, but {name} gives float inputs",
                "feed it token indices, or start the model with a layer that takes floats (e.g. Linear)",
            )
        if self.model is not None and self.model.input_dtype != "int64" and name == "Text":
            self.fail(
                data.dataset.yaml_path,
                "Text gives token ids (whole numbers), but the model's first layer takes floats",
                "start the model with `Embedding: {num_embeddings: 5000, embedding_dim: 32, padding_idx: 0}`",
            )
        if self.model is not None:
            _check_final_layer(self.problems, self.model, loss)
        if loss.entry.targets == "classes":
            self.class_targets(data, loss, out)
        elif loss.entry.targets in ("values", "probabilities"):
            self.value_targets(data, loss, out)
        if data.class_weights is not None:
            self.class_weights(data, loss)
        if "accuracy" in train.metrics and data.targets != "classes":
            self.fail(
                ("train", "metrics"),
                "accuracy needs class labels; these targets are regression values",
                "remove `accuracy`",
            )

    def several_outputs(self, data: DataIR, outputs: OutputsIR, train: TrainSpec) -> None:
        """What `targets` checks of one loss that concerns the whole data, for a loss per output."""
        if data.class_weights is not None:
            self.fail(
                ("data", "class_weights"),
                "class_weights weight one loss's classes; with a loss per output, give each loss its own `weight:`",
                "remove `class_weights:`",
            )
        if "accuracy" in train.metrics and not any(item.accuracy for item in outputs.losses):
            self.fail(("train", "metrics"), "accuracy needs an output with class labels; none has", "remove it")

    def class_targets(self, data: DataIR, loss: CallIR, out: tuple | None) -> None:
        classes = data.num_classes
        if classes is None and data.dataset.name != "ImageFolder":
            self.fail(
                ("loss",),
                f"{loss.name} needs class labels but the data has regression targets",
                "use MSELoss or L1Loss, or a dataset with classes",
            )
            return
        data.targets = "classes"
        if out is None or classes is None:
            return
        if len(out) > 1:
            self.fail(
                ("model",),
                f"the model outputs {_shape(out)} per sample, but {loss.name} over {classes} "
                f"classes needs ({classes},)",
                "insert `Flatten` before the first Linear, so the dense layers see one vector per sample",
            )
        elif out[0] != classes:
            self.fail(
                ("model",),
                f"the model outputs {out[0]} values per sample but the data has {classes} class"
                + ("es" if classes != 1 else ""),
                f"make the last layer output {classes}",
            )

    def class_weights(self, data: DataIR, loss: CallIR) -> None:
        """`class_weights:` become the loss's `weight`: a classification loss that takes one, one per class."""
        where, weights = ("data", "class_weights"), data.class_weights
        takes = "weight" in {p.name for p in parameters(loss.entry)}
        if loss.entry.targets != "classes" or not takes:
            losses = [e for e in REGISTRY.entries("loss") if e.targets == "classes"]
            weighted = [e.name for e in losses if "weight" in {p.name for p in parameters(e)}]
            self.fail(where, f"{loss.name} takes no per-class weight", f"use {' or '.join(weighted)}, or remove it")
        elif loss.value("weight") is not None:
            self.fail(where, f"{loss.name} is given `weight:` already", "keep one: class_weights or the loss's weight")
        elif isinstance(weights, tuple) and data.num_classes is not None and len(weights) != data.num_classes:
            self.fail(
                where,
                f"class_weights gives {len(weights)} weights, but the data has {data.num_classes} classes",
                f"give one weight per class ({data.num_classes}), or write `class_weights: balanced`",
            )
        elif isinstance(weights, tuple) and (not all(0 <= w < float("inf") for w in weights) or not any(weights)):
            self.fail(where, f"class_weights must be finite, not negative, not all 0: {list(weights)}", "e.g. [1, 2]")

    def value_targets(self, data: DataIR, loss: CallIR, out: tuple | None) -> None:
        """Regression (MSE, L1...) and probability (BCE) losses compare the output with targets of its shape."""
        name, classes = data.dataset.name, data.num_classes
        labels = name != "CSV" and classes is not None
        if loss.entry.targets == "probabilities" and classes is not None and classes > 2:
            labels = True  # BCE on a CSV's class labels 0..N-1: a classification dataset
        if labels:
            what = f"class labels 0..{classes - 1}" if classes else "class labels"
            self.fail(
                ("loss",),
                f"{loss.name} compares outputs with targets of the same shape, but {name} gives {what}",
                f"use {_classification_loss()} (a classification loss) for {classes or 'the'} classes",
            )
            return
        data.targets = "values"
        targets = (
            tuple(data.dataset.value("targets"))
            if name == "Synthetic" and _is_shape(data.dataset.value("targets"))
            else (1,)
            if name == "CSV"
            else None
        )
        if targets is not None and out is not None and targets != tuple(out):
            fix = f"make the last layer output {_shape(targets)}"
            if classes is not None and tuple(out) == (classes,):  # a CSV of whole numbers 0..N-1, N outputs
                fix = (
                    f"the target column holds whole numbers 0..{classes - 1}: to classify them, use "
                    f"{_classification_loss()} (a classification loss); for regression, {fix}"
                )
            self.fail(
                ("model",), f"the model outputs {_shape(out)} per sample but the targets are {_shape(targets)}", fix
            )


# A loss's `expects` against the final layer's `produces` (registry traits): (problem, fix) of the lint warning.
_OUTPUT_MISMATCH = {
    ("logits", "probabilities"): (
        "{layer} before {loss}: {loss} applies its own {squash} to raw scores (logits), so training on "
        + "probabilities squashes them twice and learns slowly or stalls",
        "remove the final {layer} (apply it when predicting if you need probabilities)",
    ),
    ("logits", "log_probabilities"): (
        "{layer} before {loss}: {loss} takes raw scores (logits) and applies its own {squash}",
        "remove the final {layer}, or keep it and use NLLLoss",
    ),
    ("log_probabilities", "logits"): (
        "{loss} expects log-probabilities, but the model ends with {layer}, which gives raw scores",
        "end the model with `LogSoftmax: {{dim: 1}}`, or use CrossEntropyLoss, which applies it itself",
    ),
    ("log_probabilities", "probabilities"): (
        "{loss} expects log-probabilities, but the model ends with {layer}, which gives probabilities",
        "use `LogSoftmax: {{dim: 1}}` instead of {layer}",
    ),
    ("probabilities", "logits"): (
        "{loss} expects probabilities in [0, 1], but the model ends with {layer}, which gives raw scores",
        "end the model with Sigmoid, or use BCEWithLogitsLoss (more stable), which applies it itself",
    ),
    ("probabilities", "log_probabilities"): (
        "{loss} expects probabilities in [0, 1], but the model ends with {layer}, which gives log-probabilities",
        "end the model with Sigmoid instead of {layer}",
    ),
}


def _classification_loss() -> str:
    """The loss to suggest for class labels: the registry's classification loss on raw scores."""
    return next(e.name for e in REGISTRY.entries("loss") if e.targets == "classes" and e.expects == "logits")


def _check_final_layer(problems: Problems, model: ModelIR, loss: CallIR) -> None:
    """Lint: what the loss expects of the model's output against what its final layer makes of it."""
    last = model.final_layer()
    if last is None or loss.entry.expects is None:
        return
    mismatch = _OUTPUT_MISMATCH.get((loss.entry.expects, last.entry.produces or "logits"))
    if mismatch is None:
        return
    squash = "sigmoid" if loss.entry.targets == "probabilities" else "log-softmax"
    problem, fix = (text.format(layer=last.type, loss=loss.name, squash=squash) for text in mismatch)
    problems.warn(last.yaml_path, problem, fix)


def _header_and_labels(raw: bytes, target: str) -> tuple[list[str], set[str]]:
    """A CSV's header and the distinct values of its target column in (at most 100,001 of) its first rows."""
    labels: set[str] = set()
    reader = csv.reader(io.StringIO(raw.decode("utf-8"), newline=""))
    header = next(reader, [])
    column = header.index(target) if target in header else None
    for i, row in enumerate(reader):
        if column is not None and len(row) == len(header):
            labels.add(row[column])
        if i > 100_000:
            break
    return header, labels


IMAGE_MAX_BYTES = 64 << 20  # as the runtime's image reader


def _column_values(raw: bytes, column: str, most: int = 100_000) -> list[tuple[int, str]]:
    """(line, value) of one column in a CSV's first rows (lines counted from 1, the header's)."""
    reader = csv.reader(io.StringIO(raw.decode("utf-8"), newline=""))
    header = next(reader, [])
    index = header.index(column)
    values = []
    for row in reader:
        if len(row) == len(header):
            values.append((reader.line_num, row[index]))
        if len(values) >= most:
            break
    return values


def _image_size(data: bytes) -> tuple[int, int] | None:
    """An image file's (width, height) by Pillow (imported here only: a CSV of image files needs it), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


def _classes(labels: set[str]) -> int | None:
    """Class labels 0..N-1 in a CSV's target column: N; None for regression values."""
    if not labels or not all(_is_int(v) for v in labels):
        return None
    values = [int(float(v)) for v in labels]
    if min(values) >= 0 and max(values) < 1 << 24:  # else whole-number regression values, not classes
        return max(values) + 1
    return None


# Text's options and their defaults (max_length and max_vocab: from the model's input and first Embedding)
_TEXT_DEFAULTS = {
    "path": None,
    "text": "text",
    "label": "label",
    "test_path": None,
    "tokenize": "word",
    "max_length": None,
    "min_freq": 1,
    "max_vocab": None,
    "lowercase": True,
    "padding": "end",
}


def _first_embedding(model: ModelIR | None) -> LayerIR | None:
    """The model's first layer when it takes token ids (an Embedding), else None."""
    if model is None or model.input_dtype != "int64":
        return None
    return next((n for n in model.root.walk() if isinstance(n, LayerIR) and n.call.entry.takes_indices), None)


def _validation(data: DataSpec, dataset: CallIR, has_test: bool) -> str | None:
    """Where validation batches come from: a split of the training set, the CSV test file, the test split."""
    if data.val_split:
        return "val_split"
    if dataset.name in ("CSV", "Text") and has_test:
        return "test_path"
    return "test_split" if has_test else None


def _is_shape(value) -> bool:
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 24 for v in value)
    )


def _csv_where(dataset: CallIR, key: str) -> tuple:
    """The YAML path of a CSV argument (its position when given by keyword, else the dataset's)."""
    return dataset.yaml_path + (dataset.name, key) if key in dataset.kwargs else dataset.yaml_path


def _clip(text) -> str:
    """A name from a file or a spec, escaped and cut to 40 characters."""
    text = str(text)
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def _columns(names: list) -> str:
    """At most 5 names, clipped: a header row never reaches a log in full."""
    shown = ", ".join(_clip(n) for n in names[:5])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 5 else "")


def _is_int(text: str) -> bool:
    try:
        return float(text).is_integer()
    except ValueError:
        return False


# --------------------------------------------------------------------------- run options (issue 24)


def _run_options(problems: Problems, train: TrainSpec, model: ModelIR | None, data: DataIR, optimizer: CallIR) -> RunIR:
    """Early stopping, the best checkpoint, parameter groups and frozen parameters, checked against the model."""
    best = train.checkpoint.best if train.checkpoint else None
    run = RunIR(train.early_stop, best, freeze=list(train.freeze))
    if train.early_stop is not None:
        _needs_metric(problems, ("train", "early_stop", "monitor"), train.early_stop.monitor, "early_stop", train, data)
    if best is not None:
        _needs_metric(problems, ("train", "checkpoint", "best"), best, "checkpoint.best", train, data)
    if model is None:
        return run
    names = _parameter_names(model)
    _check_patterns(problems, ("train", "freeze"), train.freeze, names, "freeze")
    if train.freeze and all(_matches(name, train.freeze) for name in names):
        problems.fail(("train", "freeze"), "`freeze:` freezes every parameter: nothing would train", "freeze fewer")
    if train.no_decay:
        run.groups.append(_no_decay(problems, train.no_decay, model, names, optimizer))
    for i, group in enumerate(train.param_groups):
        rule = _param_group(problems, ("train", "param_groups", i), group, names, optimizer)
        if rule is not None:
            run.groups.append(rule)
    return run


def _needs_metric(problems: Problems, where: tuple, metric: str, option: str, train: TrainSpec, data: DataIR) -> None:
    """A validation metric needs a validation set, and accuracy needs `metrics: [accuracy]`."""
    if data.validation is None:
        problems.fail(
            where,
            f"{option} watches {metric}, but this data has no validation set",
            "hold out part of the training set with `data.val_split: 0.1`",
        )
    elif metric == "val_accuracy" and "accuracy" not in train.metrics:
        problems.fail(where, f"{option} watches val_accuracy, which is not measured", "add `metrics: [accuracy]`")


def _parameter_names(model: ModelIR) -> dict[str, object]:
    """Every parameter's name in the state dict (``dense.0.weight``) -> the registry entry of its layer."""
    return {f"{layer.path}.{name}": layer.entry for layer in model.layers() for name, _ in layer.param_shapes}


def _matches(name: str, patterns) -> bool:
    """As runtime.param_groups matches: a pattern names a parameter, or a module and so all its parameters."""
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + ".*") for p in patterns)


def _check_patterns(problems: Problems, where: tuple, patterns, names: dict, option: str, listed=True) -> None:
    """Each pattern must match a parameter: one that matches none is a typo, never silently ignored."""
    tops = sorted({name.split(".")[0] for name in names})
    for i, pattern in enumerate(patterns):
        if not _matches_any(pattern, names):
            problems.fail(
                where + ((i,) if listed else ()),
                f"{option} pattern {pattern!r} matches no parameter of the model",
                did_you_mean(pattern, tops, f"module paths start with {', '.join(tops[:8])} (see `specc summary`)"),
            )


def _matches_any(pattern: str, names: dict) -> bool:
    return any(_matches(name, (pattern,)) for name in names)


def _no_decay(problems: Problems, items, model: ModelIR, names: dict, optimizer: CallIR) -> dict:
    """`no_decay: [norm, bias, pattern...]` as a parameter-group rule with weight_decay 0."""
    if "weight_decay" not in optimizer.arguments:
        problems.fail(("train", "no_decay"), f"{optimizer.name} has no weight_decay", "remove `no_decay:`")
    norms = sorted({entry.class_name for entry in names.values() if entry.norm})
    patterns = [("*.bias" if item == "bias" else item) for item in items if item != "norm"]
    for i, item in enumerate(items):
        found = bool(norms) if item == "norm" else _matches_any("*.bias" if item == "bias" else item, names)
        if not found:
            what = "the model has no normalisation layer" if item == "norm" else "it matches no parameter of the model"
            problems.fail(("train", "no_decay", i), f"no_decay {item!r}: {what}", f"remove {item!r}")
    return {"params": patterns, "layers": norms if "norm" in items else [], "weight_decay": 0.0}


def _param_group(problems: Problems, where: tuple, group: dict, names: dict, optimizer: CallIR) -> dict | None:
    """`{params: PATTERNS, lr: ..., ...}`: the parameters it names take these optimizer settings."""
    written = group.get("params")
    patterns = [written] if isinstance(written, str) else written
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
        problems.fail(
            where, "a parameter group needs `params:`, a pattern or a list of them", 'e.g. `params: "layer4.*"`'
        )
        return None
    before = problems.count()
    _check_patterns(problems, where + ("params",), patterns, names, "param_groups", isinstance(written, list))
    options = {key: value for key, value in group.items() if key != "params"}
    for key, value in options.items():
        _group_option(problems, where + (key,), key, value, optimizer)
    if not options:
        problems.fail(where, "this parameter group sets nothing", "add a setting, e.g. `lr: 0.001`")
    return {"params": patterns, "layers": [], **options} if problems.count() == before else None


def _group_option(problems: Problems, where: tuple, key, value, optimizer: CallIR) -> None:
    """One setting of a parameter group: an argument of the optimizer, a number (or a list of numbers)."""
    allowed = [k for k in optimizer.arguments if k not in ("params", "fused", "foreach", "capturable")]
    if key not in allowed:
        problems.fail(where, f"{optimizer.name} has no setting {key!r}", did_you_mean(str(key), allowed, ""))
        return
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        problems.fail(where, f"{key} is a number, got {value!r}", f"e.g. `{key}: 0.001`")
    elif key in NON_NEGATIVE_ARGS and any(v < 0 for v in values):
        problems.fail(where, f"{optimizer.name} {key} must not be negative, got {value!r}", "use a value >= 0")
