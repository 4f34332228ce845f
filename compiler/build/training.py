"""Backend 1, training half: TrainingIR -> live loss, optimizer, scheduler and data loaders.

Built in the generated script's order (seed, model, datasets, loaders, loss, optimizer,
scheduler) so that both draw the same random numbers and produce the same objects.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Subset

from compiler.runtime import helpers as runtime
from compiler.build.model import build_model
from compiler.lower.ir import CallIR, DataIR, LoopIR, Program, RunIR, TrainingIR


@dataclass
class Training:
    """What a hand-written training loop needs."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader | None

    # when to call scheduler.step(): "epoch", "batch" (after every optimizer.step()), or "loss" (once per epoch,
    # with the validation loss); None without a scheduler
    scheduler_steps: str | None = None
    # the loop options (issue 24), for a hand-written loop to apply as the generated script's does: clip the
    # gradients (``clip``: "norm" with ``clip_at``/``norm_type``, or "value"), update every ``accumulate`` batches
    # (each loss divided by it), stop on a NaN or infinite loss, and update ``ema`` (an AveragedModel, evaluated
    # instead of the model) after every update; a warm-up is already part of ``scheduler`` (SequentialLR)
    loop: LoopIR = field(default_factory=LoopIR)
    ema: Any = None
    # run options a hand-written loop reads: `train.early_stop` (see runtime.early_stopped) and the metric best.pt
    # is kept by (runtime.is_best, runtime.save_best); None when the spec has none
    early_stop: Any = None
    best: str | None = None

    def __iter__(self):  # model, loss_fn, optimizer, scheduler, train_loader, val_loader = training
        return iter((self.model, self.loss_fn, self.optimizer, self.scheduler, self.train_loader, self.val_loader))


def build_training(program: Program, device: str | torch.device | None = None) -> Training:
    """Seed, then build everything on ``device`` (default: ``train.device``, with auto resolved)."""
    spec, training = program.spec, program.training
    if training is None:
        _no_training(spec)
    device = runtime.pick_device(str(device) if device is not None else training.train.device)
    speed = training.speed
    _, channels_last, on_device, cuda_graph = runtime.resolve_speed(
        device, speed.precision, speed.channels_last, speed.data_on_device, speed.cuda_graph
    )
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    model = build_model(program.model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_set, train_loader, val_loader = _loaders(training, spec.seed, device, on_device, cuda_graph)
    if training.run.freeze:  # before DistributedDataParallel, which hooks the parameters that train
        runtime.freeze(model, training.run.freeze)
    model, train_loader, val_loader = runtime.distribute(  # under an initialised process group (torchrun)
        model, train_loader, val_loader, spec.seed, sync_batchnorm=training.train.sync_batchnorm
    )
    loss_fn = _loss(training, train_set, device)
    optimizer = _construct(training.optimizer, _parameters(model, training.run))
    scheduler = _scheduler(training, optimizer)
    loop = training.loop
    if loop.fixed_length:  # before the first update, as the script's train() checks
        runtime.check_schedule_length(scheduler, training.train.epochs, None, len(train_loader), loop.accumulate)
    ema = _ema(model, loop.ema) if loop.ema is not None else None
    objects = (model, loss_fn, optimizer, scheduler, train_loader, val_loader)
    run = training.run
    return Training(*objects, training.scheduler_steps, loop, ema, run.early_stop, run.best)


def _loaders(training: TrainingIR, seed: int, device: torch.device, on_device: bool, cuda_graph: bool) -> tuple:
    """(the training set, the training and validation loaders), as the generated ``build_all`` makes them."""
    data, mode = training.data, training.train.mode
    datasets = {"data": data, "seed": seed, "augment": not on_device}
    if data.downloads:  # as the generated build_all: one download per machine under torchrun
        train_set, val_set = runtime.leader_first(build_datasets, **datasets)
    else:
        train_set, val_set = build_datasets(**datasets)
    if on_device:
        args = (data.batch_size, data.shuffle, data.num_workers, seed, device, training.speed.flips, cuda_graph)
        return train_set, *runtime.make_device_loaders(train_set, val_set, mode, *args)
    loaders = runtime.make_loaders(train_set, val_set, mode, data.batch_size, data.shuffle, data.num_workers, seed)
    return train_set, *loaders


def _loss(training: TrainingIR, train_set: Any, device: torch.device) -> torch.nn.Module:
    """The loss; for a model of several outputs one per output, weighted and summed (as the script's)."""
    outputs = training.outputs
    if outputs is None:
        return _construct(training.loss, **_class_weights(training.data, train_set, device))
    losses = [_construct(item.loss) for item in outputs.losses]
    weights, names = [item.weight for item in outputs.losses], [item.name for item in outputs.losses]
    return runtime.OutputLosses(losses, weights, names, outputs.eval_names)


def _scheduler(training: TrainingIR, optimizer: torch.optim.Optimizer) -> Any:
    """The spec's scheduler, after a linear warm-up (SequentialLR) where ``train.warmup`` asks for one."""
    loop = training.loop
    schedulers = torch.optim.lr_scheduler
    if loop.warmup is not None:
        warmup = schedulers.LinearLR(optimizer, start_factor=loop.warmup_factor, total_iters=loop.warmup)
        if training.scheduler is None:
            return warmup
    scheduler = _construct(training.scheduler, optimizer) if training.scheduler else None
    if loop.warmup is None:
        return scheduler
    return schedulers.SequentialLR(optimizer, [warmup, scheduler], milestones=[loop.warmup])


def _ema(model: torch.nn.Module, decay: float) -> Any:
    """An exponential moving average of the weights (and buffers), as the generated ``train`` keeps it."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(runtime.unwrap(model), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _no_training(spec: Any) -> None:
    from compiler.errors import SpecError

    problem = spec.source.problem(
        (), "this spec has no training sections", "add data, loss, optimizer and train (docs/spec-language.md §4-6)"
    )
    raise SpecError([problem])


def _parameters(model: torch.nn.Module, run: RunIR) -> Any:
    """What the optimizer updates: every parameter, those not frozen, or parameter groups (as the script)."""
    if run.groups:
        return runtime.param_groups(runtime.unwrap(model), run.groups)
    if run.freeze:
        return [p for p in model.parameters() if p.requires_grad]
    return model.parameters()


def _construct(call: CallIR, *first: Any, **extra: Any) -> Any:
    args, kwargs = call.values()
    return call.entry.resolve()(*first, *args, **kwargs, **extra)


def _class_weights(data: DataIR, train_set: Any, device: torch.device) -> dict:
    """The loss's ``weight`` from ``class_weights:`` (as the script's ``class_weights`` call), else nothing."""
    if data.class_weights is None:
        return {}
    weights = data.class_weights if isinstance(data.class_weights, str) else list(data.class_weights)
    return {"weight": runtime.class_weights(train_set, weights, data.num_classes).to(device)}


def _compose(calls: list[CallIR]):
    if not calls:
        return None
    from torchvision import transforms

    return transforms.Compose([_construct(c) for c in calls])


def _datasets(data: DataIR, seed: int, augment: bool = True):
    ds = data.dataset
    if ds.name == "CSV":
        values = {p: ds.value(p) for p in ("path", "target", "features", "test_path")}
        kinds = data.target_kinds if data.target_kinds is not None else data.targets
        options = dict(val_split=data.val_split, normalize=data.normalize, seed=seed, targets=kinds)
        if data.image is None:
            return runtime.csv_datasets(**values, **options)
        train_tf, eval_tf = _transforms(data, augment)
        return runtime.csv_image_datasets(
            **values, image=data.image, transform=train_tf, eval_transform=eval_tf, mode=data.image_mode, **options
        )
    if ds.name == "Text":  # the options with max_length and max_vocab filled in from the model
        return runtime.text_datasets(**data.text, val_split=data.val_split, seed=seed)
    if ds.name == "Synthetic":
        values = {p: ds.value(p) for p in ("size", "inputs", "targets", "classes")}
        train_set = val_source = runtime.synthetic_dataset(**values, seed=seed)
    else:
        train_tf, eval_tf = _transforms(data, augment)
        args, kwargs = ds.values()
        split = {"train": True} if ds.entry.test_split and data.validation else {}
        train_set = ds.entry.resolve()(*args, **kwargs, **split, transform=train_tf)
        if data.validation == "test_split":
            return train_set, ds.entry.resolve()(*args, **kwargs, train=False, transform=eval_tf)
        if data.validation == "val_split":
            val_source = ds.entry.resolve()(*args, **kwargs, **split, transform=eval_tf)
    if data.validation == "val_split":
        train_idx, val_idx = runtime.split_indices(len(train_set), data.val_split, seed)
        return Subset(train_set, train_idx), Subset(val_source, val_idx)
    return train_set, None


def _transforms(data: DataIR, augment: bool) -> tuple:
    """(training transforms, evaluation transforms), as the script's ``build_transforms``."""
    train_tf = _compose(data.transforms if augment else [t for t in data.transforms if not t.entry.random])
    return train_tf, _compose(data.eval_transforms) if data.eval_transforms != data.transforms else train_tf


def build_datasets(data: DataIR, seed: int, augment: bool = True):
    """(training set, validation set or None), exactly as the generated ``build_datasets``: with ``pairs:``,
    each sample paired with another of the same class or of another (``PairDataset``)."""
    train_set, val_set = _datasets(data, seed, augment)
    if not data.pairs:
        return train_set, val_set
    return runtime.pair_sets(train_set, val_set, seed)
