"""Backend 1, training half: TrainingIR -> live loss, optimizer, scheduler and data loaders.

Built in the generated script's order (seed, model, datasets, loaders, loss, optimizer,
scheduler) so that both draw the same random numbers and produce the same objects.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Subset

from compiler.runtime import helpers as runtime
from compiler.build.model import build_model
from compiler.lower.ir import CallIR, DataIR, Program


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

    def __iter__(self):  # model, loss_fn, optimizer, scheduler, train_loader, val_loader = training
        return iter((self.model, self.loss_fn, self.optimizer, self.scheduler, self.train_loader, self.val_loader))


def build_training(program: Program, device: str | torch.device | None = None) -> Training:
    """Seed, then build everything on ``device`` (default: ``train.device``, with auto resolved)."""
    spec, training = program.spec, program.training
    if training is None:
        from compiler.errors import SpecError

        raise SpecError(
            [
                spec.source.problem(
                    (),
                    "this spec has no training sections",
                    "add data, loss, optimizer and train (docs/spec-language.md §4-6)",
                )
            ]
        )
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
    datasets = {"data": training.data, "seed": spec.seed, "augment": not on_device}
    if training.data.downloads:  # as the generated build_all: one download per machine under torchrun
        train_set, val_set = runtime.leader_first(build_datasets, **datasets)
    else:
        train_set, val_set = build_datasets(**datasets)
    data = training.data
    mode = training.train.mode
    if on_device:
        train_loader, val_loader = runtime.make_device_loaders(
            train_set,
            val_set,
            mode,
            data.batch_size,
            data.shuffle,
            data.num_workers,
            spec.seed,
            device,
            speed.flips,
            cuda_graph,
        )
    else:
        train_loader, val_loader = runtime.make_loaders(
            train_set, val_set, mode, data.batch_size, data.shuffle, data.num_workers, spec.seed
        )
    model, train_loader, val_loader = runtime.distribute(  # under an initialised process group (torchrun)
        model, train_loader, val_loader, spec.seed, sync_batchnorm=training.train.sync_batchnorm
    )
    loss_fn = _construct(training.loss, **_class_weights(data, train_set, device))
    optimizer = _construct(training.optimizer, model.parameters())
    scheduler = _construct(training.scheduler, optimizer) if training.scheduler else None
    return Training(model, loss_fn, optimizer, scheduler, train_loader, val_loader, training.scheduler_steps)


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


def build_datasets(data: DataIR, seed: int, augment: bool = True):
    """(training set, validation set or None), exactly as the generated ``build_datasets``."""
    ds = data.dataset
    if ds.name == "CSV":
        values = {p: ds.value(p) for p in ("path", "target", "features", "test_path")}
        return runtime.csv_datasets(
            **values, val_split=data.val_split, normalize=data.normalize, seed=seed, targets=data.targets
        )
    if ds.name == "Text":  # the options with max_length and max_vocab filled in from the model
        return runtime.text_datasets(**data.text, val_split=data.val_split, seed=seed)
    if ds.name == "Synthetic":
        values = {p: ds.value(p) for p in ("size", "inputs", "targets", "classes")}
        train_set = val_source = runtime.synthetic_dataset(**values, seed=seed)
    else:
        train_tf = _compose(data.transforms if augment else [t for t in data.transforms if not t.entry.random])
        eval_tf = _compose(data.eval_transforms) if data.eval_transforms != data.transforms else train_tf
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
