"""Run-time helpers shared by both backends.

The compiled backend calls these directly; the renderer copies their source verbatim into
each generated script (``inspect.getsource``), so the script and the compiled objects run
the same code and the script still imports only torch, torchvision and the standard library.
Keep every function here self-contained: stdlib and torch only, no reference to ``compiler``.
"""

from __future__ import annotations

import atexit
import csv
import ctypes
import datetime
import errno
import hashlib
import importlib
import io
import json
import os
import random
import signal
import stat
import sys
import tempfile
import zipfile

import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets


class GradientDescent(torch.optim.Optimizer):
    """The tutorial's hand-written update rule, ``param -= lr * param.grad``, as an optimizer."""

    def __init__(self, params, lr=1e-3):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param -= group["lr"] * param.grad


def synthetic_dataset(size, inputs, targets=None, classes=None, seed=0):
    """Random inputs ``randn(size, *inputs)`` with ``randn`` targets or integer class labels."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, *inputs, generator=generator)
    if classes is not None:
        y = torch.randint(0, classes, (size,), generator=generator)
    else:
        y = torch.randn(size, *targets, generator=generator)
    return TensorDataset(x, y)


def read_csv(path, target, features=None, targets="classes"):
    """A numeric CSV file with a header row -> (features, targets) tensors and the feature columns' names.

    Targets are class labels (int64) where they are whole numbers, unless ``targets="values"`` (the loss
    compares them with the output: regression): then float, one column, whatever they hold.
    """
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    columns = features or [name for name in rows[0] if name != target]
    x = torch.tensor([[float(row[name]) for name in columns] for row in rows])
    values = [float(row[target]) for row in rows]
    if targets == "classes" and all(v.is_integer() for v in values):
        return x, torch.tensor([int(v) for v in values]), columns
    return x, torch.tensor(values).unsqueeze(1), columns


def csv_datasets(path, target, features=None, test_path=None, val_split=0.0, normalize=None, seed=0, targets="classes"):
    """(training set, validation set or None) from CSV files; ``normalize`` is fitted on the training split only.
    The training set's ``csv`` holds its columns and scaling, which prediction applies to new rows."""
    x, y, columns = read_csv(path, target, features, targets)
    x_val = y_val = scaling = None
    if test_path is not None:
        x_val, y_val, _ = read_csv(test_path, target, features, targets)
    elif val_split:
        train_idx, val_idx = split_indices(len(x), val_split, seed)
        x, y, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    if normalize:
        scaling = fit_scaling(normalize, x)
        x, x_val = [None if t is None else apply_scaling(scaling, t) for t in (x, x_val)]
    train_set = TensorDataset(x, y)
    train_set.csv = {"columns": columns, "scaling": scaling}
    return train_set, (TensorDataset(x_val, y_val) if x_val is not None else None)


def fit_scaling(method, x):
    """``rescale`` (min-max to [0, 1]) or ``standardize`` (z-score) statistics of ``x``; ``normalize``: unit rows."""
    if method == "rescale":
        shift = x.min(dim=0).values
        return {"method": method, "shift": shift, "scale": (x.max(dim=0).values - shift).clamp_min(1e-12)}
    if method == "standardize":
        return {"method": method, "shift": x.mean(dim=0), "scale": x.std(dim=0).clamp_min(1e-12)}
    return {"method": method}


def apply_scaling(scaling, x):
    if scaling["method"] == "normalize":  # per sample: nothing fitted
        return torch.nn.functional.normalize(x, p=2.0, dim=1)
    return (x - scaling["shift"]) / scaling["scale"]


def split_indices(n, val_fraction, seed):
    """A seeded permutation of ``range(n)``, split into (train, validation) index lists."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = round(n * val_fraction)
    return order[n_val:], order[:n_val]


def make_loaders(train_set, val_set, mode, batch_size, shuffle, num_workers, seed):
    """Seeded loaders: the same seed gives the same batches in the same order."""
    generator = torch.Generator().manual_seed(seed)
    # batch mode: every update sees the whole training set; online: one sample per update, one pass
    size, workers = {"batch": (len(train_set), 0), "online": (1, 0)}.get(mode, (batch_size, num_workers))
    shuffle = shuffle and mode != "batch"
    train_loader = DataLoader(train_set, size, shuffle=shuffle, num_workers=workers, generator=generator)
    val_loader = DataLoader(val_set, max(batch_size, 256), num_workers=num_workers) if val_set is not None else None
    return train_loader, val_loader


class DeviceLoader:
    """Batches sliced from tensors that already sit on the device, shuffled by a seeded CPU generator.

    Random flips (the only augmentations that commute with the deterministic transforms applied
    up front) are drawn from the same generator and applied per batch on the device.
    """

    def __init__(self, x, y, batch_size, shuffle, generator, drop_last=False, flips=()):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = generator
        self.flips = flips  # (dim, probability) pairs
        self.ranks = (0, 1)  # (rank, processes): under torchrun each batch is split across them (``distribute``)

    def __len__(self):
        n = len(self.x)
        drop = self.drop_last or 0 < n % self.batch_size < self.ranks[1]  # every rank must take a part
        return n // self.batch_size if drop else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.x)
        if self.generator is not None:  # draw as DataLoader does (its workers' base seed), so the order matches
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.x.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            x = self.x[index]
            for dim, p in self.flips:
                flip = (torch.rand(len(index), generator=self.generator) < p).to(x.device)
                x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(dim), x)
            part = rank_part(len(index), *self.ranks)
            yield x[part], self.y[index][part]


def preload(dataset, device, num_workers=0):
    """Run the dataset's (deterministic) transforms once and keep every sample as one tensor on the device."""
    xs, ys = [], []
    for x, y in DataLoader(dataset, batch_size=1024, num_workers=num_workers):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs).to(device), torch.cat(ys).to(device)


def make_device_loaders(train_set, val_set, mode, batch_size, shuffle, num_workers, seed, device, flips, drop_last):
    """``make_loaders`` for data held on the device: the same batches, without per-sample Python work."""
    generator = torch.Generator().manual_seed(seed)
    x, y = preload(train_set, device, num_workers)
    size = {"batch": len(x), "online": 1}.get(mode, batch_size)
    train_loader = DeviceLoader(x, y, size, shuffle and mode != "batch", generator, drop_last, flips)
    val_loader = None
    if val_set is not None:
        val_x, val_y = preload(val_set, device, num_workers)
        val_loader = DeviceLoader(val_x, val_y, max(batch_size, 256), False, None)
    train_loader.dataset = train_set  # as a DataLoader's: class names and CSV scaling are read from it
    return train_loader, val_loader


def cpu_bf16():
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated: fp32 stays."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def reuse_freed_memory(setting, device):
    """``setting`` True, or "auto" on a CPU: have glibc keep freed memory in the process for reuse (elsewhere --
    macOS, Windows, musl -- nothing to do).

    A CPU step frees and allocates the same large buffers every time (the tutorial CNN: the bf16 copy of its
    100 MB dense weight, the gradients). glibc serves each buffer over 32 MB with a fresh mmap and returns it
    on free, so every step faults those pages back in (measured: 0.22 s a bf16 step, 0.13 s without; RESULTS.md).
    With mmap off and trimming off, they come from the heap and stay there: peak memory about 18% higher.
    Process-wide, which is why the script's main calls it and train() does not. -> whether it applied"""
    if setting is not True and not (setting == "auto" and device.type == "cpu"):
        return False
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # Windows has no confstr; macOS no such name
        glibc = ""
    if not glibc.startswith("glibc"):
        return False
    libc = ctypes.CDLL(None)  # the process's own C library
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def setup_distributed(device, quiet=True):
    """Under torchrun (it sets RANK): join its process group, NCCL on CUDA, else gloo (waits end after
    SPECC_DIST_TIMEOUT s, default 300); ranks after the first print nothing if ``quiet``. -> (device, rank)"""
    if "RANK" not in os.environ:
        return device, 0
    if quiet and int(os.environ["RANK"]):
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # torchrun stops the others: exit as interrupted
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=float(os.environ.get("SPECC_DIST_TIMEOUT", "300")))
    try:
        if not torch.distributed.is_initialized():  # (main may run twice in a process)
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
            # left to interpreter teardown, gloo's threads can abort the process (SIGABRT) after a good run
            atexit.register(leave_process_group)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"cannot join the torchrun process group: {err}") from None
    return device, torch.distributed.get_rank()


def leave_process_group():
    """At exit, while Python is still whole: destroy the process group (torch asks every process to)."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def leader_first(build, **kwargs):
    """Under torchrun: each machine's first process (LOCAL_RANK 0) runs ``build`` (a download) while the others
    wait, then they run it and find the files in place: one download per machine, no file read half-written."""
    if not torch.distributed.is_initialized():
        return build(**kwargs)
    leader = int(os.environ.get("LOCAL_RANK", "0")) == 0
    if not leader:
        torch.distributed.barrier()
    built = build(**kwargs)
    if leader:
        torch.distributed.barrier()
    return built


def rank_part(n, rank, processes):
    """This rank's contiguous slice of a batch of ``n`` (sizes differ by at most one)."""
    return slice(rank * n // processes, (rank + 1) * n // processes)


class RankBatches:
    """A loader's batches (from its batch sampler: a plain run's seeded order), each split across the ranks; a last
    batch smaller than the number of ranks is left out (every rank must take a part)."""

    def __init__(self, batches, rank, processes):
        self.batches, self.rank, self.processes = batches, rank, processes

    def __len__(self):
        return len(self.batches) - (0 < len(self.batches.sampler) % self.batches.batch_size < self.processes)

    def __iter__(self):
        for batch in self.batches:
            if len(batch) >= self.processes:
                yield batch[rank_part(len(batch), self.rank, self.processes)]


def distribute(model, train_loader, val_loader, seed, sync_batchnorm=False):
    """Under torchrun: the model in DistributedDataParallel (with SyncBatchNorm if asked) and each global batch
    (``batch_size``) split across the ranks, which so train on a plain run's batches; ranks after the first draw
    their own dropout and augmentation (seeded ``seed + rank``)."""
    if not torch.distributed.is_initialized():
        return model, train_loader, val_loader
    rank, processes = torch.distributed.get_rank(), torch.distributed.get_world_size()
    size = train_loader.batch_size
    if size % processes:  # mode: batch takes the whole training set as its one batch
        what = "the training set (mode: batch)" if size == len(train_loader.dataset) else "batch_size"
        raise ValueError(
            f"{what} {size} does not divide among {processes} processes: run a number of processes that divides {size}"
        )
    device = next(model.parameters()).device
    if sync_batchnorm and device.type == "cpu":
        raise ValueError("train.sync_batchnorm needs GPUs: torch's SyncBatchNorm does not run on the CPU")
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync_batchnorm else model
    ids = [device.index] if device.type == "cuda" else None  # gradients as views into DDP's buckets: no copies
    model = torch.nn.parallel.DistributedDataParallel(model, ids, gradient_as_bucket_view=True)
    loaders = [train_loader, val_loader]
    for i, loader in enumerate(loaders):
        if isinstance(loader, DataLoader):
            batches = RankBatches(loader.batch_sampler, rank, processes)
            loaders[i] = DataLoader(
                loader.dataset, batch_sampler=batches, num_workers=loader.num_workers, generator=loader.generator
            )
        elif loader is not None:  # a DeviceLoader
            loader.ranks = (rank, processes)
    if rank:
        torch.manual_seed(seed + rank)
        random.seed(seed + rank)
    return model, *loaders


def unwrap(model):
    """The model inside a DistributedDataParallel wrapper (whose state dict keys carry a ``module.`` prefix)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def over_ranks(values, mean=False):
    """Numbers (or a number) summed, or averaged, over the ranks of a torchrun run; in a plain run, as given."""
    if not torch.distributed.is_initialized():
        return values
    device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    total = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return (total / torch.distributed.get_world_size() if mean else total).tolist()


def gather_ranks(run):
    """Under torchrun (every rank calls ``Run.save``): the losses recorded since the last call become their mean over
    the ranks; every rank's random states, gathered for the checkpoint. A plain run: None."""
    if not torch.distributed.is_initialized():
        return None
    records = [record for record in run.history[run.synced :] if "loss" in record]
    for record, value in zip(records, over_ranks([record["loss"] for record in records], mean=True)):
        record["loss"] = value
    run.synced, states = len(run.history), [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, random_states())
    return states


def random_states():
    """The random states a resumed run restores: torch's (CPU and CUDA) and Python's."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"torch_rng": torch.get_rng_state(), "cuda_rng": cuda, "python_rng": random.getstate()}


def own_random_states(state):
    """A checkpoint's state with this rank's random states (under torchrun; its own where the checkpoint has none)."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    ranks = state.get("ranks") or [state]
    return {**state, **(ranks[rank] if rank < len(ranks) else random_states())}


def resolve_speed(device, precision, channels_last, data_on_device, cuda_graph):
    """Turn `auto` options into what is safe and fast on this device (measured: bench/RESULTS.md).

    CPU: bf16 autocast where the CPU has bf16 instructions (the tutorial CNN's steps: 1.4x over fp32 with
    fused Adam); channels_last (oneDNN's convolutions are NHWC: about 2%); the data stays in the DataLoader
    (per-sample loading is about 3% of a step: holding the data as tensors gained nothing measurable).
    """
    cuda, cpu = device.type == "cuda", device.type == "cpu"
    if precision == "auto":
        precision = "bf16" if (cuda and torch.cuda.is_bf16_supported()) or (cpu and cpu_bf16()) else "fp32"
    if channels_last == "auto":
        channels_last = cuda or cpu
    if data_on_device == "auto":
        data_on_device = cuda
    if cuda_graph == "auto":
        cuda_graph = cuda and data_on_device
    return precision, channels_last, data_on_device, cuda_graph and cuda and not torch.distributed.is_initialized()


class GraphedStep:
    """One training step (forward, backward, optimizer update) captured as a CUDA graph and replayed.

    A CUDA graph removes the per-kernel launch cost that bounds small batches. Capturing needs
    a few warm-up steps on a side stream; their effect on weights, buffers and optimizer state
    is undone afterwards, so the run trains exactly the steps it is asked to.
    """

    def __init__(self, model, loss_fn, optimizer, x, y, precision):
        self.model, self.optimizer = model, optimizer
        self.static_x, self.static_y = x.clone(), y.clone()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        for group in optimizer.param_groups:
            if "capturable" in group:  # Adam/AdamW keep their step counts on the GPU while captured
                group["capturable"] = True
        saved = self._snapshot()

        def step():
            # autocast's cast cache must be off while capturing (the casts have to be recorded)
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=False):
                loss = loss_fn(model(self.static_x), self.static_y)
            loss.backward()
            optimizer.step()
            return loss

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream().wait_stream(side)
        self._restore(saved)
        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.static_loss = step()

    def _snapshot(self):
        tensors = [*self.model.parameters(), *self.model.buffers()]
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if torch.is_tensor(v)]
        return {id(t): (t, t.detach().clone()) for t in tensors}

    def _restore(self, saved):
        with torch.no_grad():
            for tensor, value in saved.values():
                tensor.copy_(value)
            for state in self.optimizer.state.values():  # state the warm-up created starts from zero
                for v in state.values():
                    if torch.is_tensor(v) and id(v) not in saved:
                        v.zero_()

    def __call__(self, x, y):
        if x.shape != self.static_x.shape:
            raise ValueError("a CUDA graph replays one batch shape: drop the last, smaller batch")
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
        return self.static_loss


def record_losses(history, pending, step, epoch):
    """Move losses kept on the device into the history: one synchronisation for many steps."""
    values = torch.stack(pending).tolist() if pending else []
    for offset, value in enumerate(values):
        history.append({"step": step - len(values) + 1 + offset, "epoch": epoch, "loss": value})
    pending.clear()
    return values


class Run:
    """Where a run stands, saved and restored whole so that a resumed run continues bit for bit: ``epoch`` (the
    one to continue in, from 0), ``batch`` (its batches done), ``step`` (updates in all), the history, and the
    random states. ``epochs`` and ``max_steps`` bound it; ``save`` writes to ``checkpoint`` (None: nowhere) with
    ``data``, what prediction needs (``data_info``)."""

    def __init__(self, epochs, max_steps=None, checkpoint=None):
        self.epochs, self.max_steps, self.checkpoint = epochs, max_steps, checkpoint
        self.epoch, self.batch, self.step, self.history = 0, 0, 0, []
        self.loader_rng = self.restored = self.data = None
        self.synced = 0  # history records averaged over the ranks (torchrun)

    def batches(self, loader):
        """This epoch's batches from where the run stands, with the shuffle and random draws of a straight run."""
        if self.restored is not None:
            loader.generator.set_state(self.restored["loader_rng"])
        self.loader_rng = loader.generator.get_state()  # the shuffle generator at the start of the epoch
        batches = iter(loader)
        for _ in range(self.batch):  # the batches this epoch had already trained on
            next(batches)
        if self.restored is not None:  # dropout and augmentation continue where they stopped
            torch.set_rng_state(self.restored["torch_rng"])
            if self.restored["cuda_rng"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self.restored["cuda_rng"])
            random.setstate(self.restored["python_rng"])
            self.restored = None
        return batches

    def end_epoch(self, loader):
        self.epoch, self.batch, self.loader_rng = self.epoch + 1, 0, loader.generator.get_state()

    def save(self, model, optimizer, scheduler):
        """Checkpoint the weights, optimizer, schedule, position, random states and what the run is (its
        ``identity`` and ``data``); refresh the metrics beside it."""
        model, ranks = unwrap(model), gather_ranks(self)  # under torchrun every rank saves; rank 0 writes
        if self.checkpoint:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                **{key: getattr(self, key) for key in ("epoch", "batch", "step", "history", "loader_rng", "data")},
                **random_states(),
                "ranks": ranks,
                "identity": identity(model, optimizer, scheduler),
            }
            save_checkpoint(self.checkpoint, state)
            write_metrics(os.path.dirname(self.checkpoint), self.history)
        if ranks:
            torch.distributed.barrier()  # no rank goes on before rank 0's checkpoint is whole

    def resume(self, state, model, optimizer, scheduler, name="the checkpoint", model_only=False):
        """Continue from a checkpoint's ``state`` (refused if another spec wrote it): load the weights, take its
        position and random states. ``model_only`` (evaluating, predicting): only the model must match."""
        model = unwrap(model)
        saved, here = state["identity"], identity(model, optimizer, scheduler)
        if model_only:
            saved, here = ({k: v for k, v in d.items() if k.startswith("model: ")} for d in (saved, here))
        different = identity_difference(saved, here)
        if different:
            raise ValueError(f"{name} was written for another spec: {different}")
        model.load_state_dict(state["model"])
        self.data = state["data"]
        if model_only:
            return
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.batch, self.step, self.history = (state[k] for k in ("epoch", "batch", "step", "history"))
        self.restored, self.synced = own_random_states(state), len(self.history)


def identity(model, optimizer, scheduler):
    """What a checkpoint must match to be resumed (the number of epochs may change): the optimizer, its
    hyperparameters and the scheduler; the model's tensors, by name and shape."""
    plain = (int, float, str, tuple, type(None))
    hyperparameters = {key: value for key, value in optimizer.defaults.items() if isinstance(value, plain)}
    layers = {f"model: layer {key}": tuple(value.shape) for key, value in model.state_dict().items()}
    schedule = type(scheduler).__name__ if scheduler is not None else None
    return {"optimizer": type(optimizer).__name__, "scheduler": schedule, **hyperparameters, **layers}


def identity_difference(saved, here):
    """The first way a checkpoint's ``identity`` differs from this run's, in words (None: the same). Optimizer
    flags that choose torch's kernel may differ (`speed: auto` makes Adam fused)."""
    for key in dict.fromkeys([*saved, *here]):
        if key in ("fused", "foreach", "capturable", "differentiable"):  # torch's kernel, not the arithmetic
            continue
        old, new = saved.get(key, "absent"), here.get(key, "absent")
        if old != new:
            return f"{key}: {old} in the checkpoint, {new} here"
    return None


def data_info(dataset, input_shape, task):
    """What prediction needs, saved in every checkpoint: the input shape, the targets (``classes`` or ``values``),
    the class names, the CSV columns and scaling."""
    dataset = getattr(dataset, "dataset", dataset)  # inside a Subset
    classes = list(getattr(dataset, "classes", None) or []) or None
    return {"input": tuple(input_shape), "task": task, "classes": classes, "csv": getattr(dataset, "csv", None)}


def write_atomic(path, data):
    """Write ``data`` through a temporary file, fsync and rename: a crash leaves the old file whole, and a symlink
    at ``path`` is replaced, never followed."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)  # make the rename itself durable
    os.fsync(dir_fd)
    os.close(dir_fd)


def save_checkpoint(path, state):
    """``torch.save`` the state (a zip file), then put the SHA-256 of all that precedes it in the zip's closing
    comment: plain ``torch.load`` still reads it; ``load_checkpoint`` refuses it truncated or altered. The bytes
    are patched and hashed in place: a checkpoint is several times the model, and each copy of it costs time."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with buffer.getbuffer() as data:
        data[-2:] = (77).to_bytes(2, "little")  # the zip comment's length: the 77 bytes below
        digest = hashlib.sha256(data).hexdigest()
    buffer.write(b"specc-sha256:" + digest.encode())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with buffer.getbuffer() as data:
        write_atomic(path, data)


def load_checkpoint(path, max_bytes=1 << 36):
    """Read a checkpoint written by ``save_checkpoint`` (a regular file, at most ``max_bytes``); verify its
    checksum; refuse compressed entries (a decompression bomb); unpickle only tensors and plain data."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except OSError as err:
        raise ValueError(f"{path}: {err.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ValueError(f"{path}: not a checkpoint file")
    with open(fd, "rb") as file:
        data = file.read(min(info.st_size, max_bytes) + 1)
    body, tag, digest = data[:-77], data[-77:-64], data[-64:]
    if len(data) > max_bytes or tag != b"specc-sha256:" or hashlib.sha256(body).hexdigest().encode() != digest:
        raise ValueError(f"{path}: not a specc checkpoint, or truncated or altered (checksum mismatch)")
    try:
        entries = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not a checkpoint (no zip archive)") from None
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or sum(e.file_size for e in entries) > len(data):
        raise ValueError(f"{path}: compressed entries larger than the file (refused: a decompression bomb)")
    return torch.load(io.BytesIO(data), weights_only=True)


def save_weights(model, path):
    """The model's state dict alone, for use outside specc: ``model.load_state_dict(torch.load(path))``."""
    buffer = io.BytesIO()
    torch.save(unwrap(model).state_dict(), buffer)
    write_atomic(path, buffer.getvalue())


def write_metrics(folder, history, seconds=None):
    """``metrics.json`` and ``metrics.csv`` (one row per logged step or epoch), each written atomically."""
    write_atomic(os.path.join(folder, "metrics.json"), json.dumps({"seconds": seconds, "history": history}).encode())
    table, columns = io.StringIO(), list(dict.fromkeys(key for record in history for key in record))
    writer = csv.DictWriter(table, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_atomic(os.path.join(folder, "metrics.csv"), table.getvalue().encode())


def write_tensorboard(folder, history):
    """The history as TensorBoard scalars (``tensorboard --logdir runs``), when tensorboard is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("train.log names tensorboard, which is not installed (pip install tensorboard)", file=sys.stderr)
        return
    with SummaryWriter(folder) as writer:
        for record in history:
            for key, value in record.items():
                if key not in ("step", "epoch") and value is not None:
                    writer.add_scalar(key, value, record["step"])


def new_run_folder(root):
    """A new numbered run folder ``root/N``, made exclusively (two runs never share one); ``root/latest`` names it."""
    os.makedirs(root, exist_ok=True)
    number = max([int(name) for name in os.listdir(root) if name.isdigit()], default=0) + 1
    while True:
        try:
            os.mkdir(os.path.join(root, str(number)))
            break
        except FileExistsError:  # another run took it
            number += 1
    write_atomic(os.path.join(root, "latest"), f"{number}\n".encode())
    return os.path.join(root, str(number))


def find_checkpoint(path):
    """A checkpoint file as given; in a run folder, its checkpoint.pt; in a folder of runs (or its ``latest``
    file), the latest run's."""
    if os.path.basename(path) == "latest" and os.path.isfile(path):
        path = os.path.dirname(path) or "."
    latest = os.path.join(path, "latest")
    if os.path.isdir(path) and os.path.isfile(latest):
        with open(latest, encoding="utf-8") as file:
            path = os.path.join(path, file.read(20).strip())
    return os.path.join(path, "checkpoint.pt") if os.path.isdir(path) else path


def progress_bar(run, steps_per_epoch):
    """A tqdm bar (ETA, rate) on a terminal when tqdm is installed; else None, and the log lines remain."""
    try:
        tqdm = importlib.import_module("tqdm").tqdm  # (an optional extra: not a static import of the script)
    except ImportError:
        return None
    total = run.epochs * steps_per_epoch if run.max_steps is None else min(run.max_steps, run.epochs * steps_per_epoch)
    return tqdm(total=total, initial=run.step, unit="step", dynamic_ncols=True) if sys.stderr.isatty() else None


def predict(model, inputs, info, transform, device):
    """(input, prediction) for image files, folders of images and CSV files (rows scaled as in training): the
    class name (or number), or the regression values."""
    names, batch = [], []
    for path in inputs:
        read = csv_inputs([path], info) if path.lower().endswith(".csv") else image_inputs([path], info, transform)
        names, batch = names + read[0], batch + read[1]
    return predictions(model, names, batch, info, device)


def image_inputs(paths, info, transform):
    """(names, tensors) of image files and the images in folders, through the evaluation ``transform``."""
    names, batch = [], []
    for path in paths:
        files = [os.path.join(path, name) for name in sorted(os.listdir(path))] if os.path.isdir(path) else [path]
        for file in files:
            if file == path or file.lower().endswith(datasets.folder.IMG_EXTENSIONS):
                image = datasets.folder.default_loader(file).convert("L" if info["input"][0] == 1 else "RGB")
                batch.append(transform(image))
                names.append(file)
    return names, batch


def csv_inputs(paths, info):
    """(names ``file:line``, tensors) of the rows of CSV files, scaled as the training rows were."""
    names, batch = [], []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        x = torch.tensor([[float(row[column]) for column in info["csv"]["columns"]] for row in rows])
        batch += list(apply_scaling(info["csv"]["scaling"], x) if info["csv"]["scaling"] else x)
        names += [f"{path}:{line}" for line in range(2, len(rows) + 2)]
    return names, batch


def predictions(model, names, batch, info, device):
    """(name, prediction) for a batch of inputs: the class name (or number), or the regression values."""
    model.eval()
    with torch.no_grad():
        output = model(torch.stack(batch).to(device)).cpu()
    if info["task"] == "classes":
        classes = info["classes"] or range(output.shape[1])
        return [(name, str(classes[i])) for name, i in zip(names, output.argmax(dim=1).tolist())]
    return [(name, " ".join(f"{v:.6g}" for v in row)) for name, row in zip(names, output.flatten(1).tolist())]


def explain(err, run):
    """A failure as one line and an exit code: 1 bad input, 3 the run failed, 130 interrupted."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # torchrun stopping this process from here on ends it quietly
    dist = torch.distributed
    lost = dist.is_initialized() and (
        isinstance(err, dist.DistError) or "gloo" in str(err) and isinstance(err, RuntimeError)
    )
    if isinstance(err, KeyboardInterrupt) or lost:  # lost: a collective failed, another process of the run is gone
        where = "lost another process of the run" if lost else str(err) or "interrupted"
        where, code = f"{where} at epoch {run.epoch + 1} step {run.step}", 3 if lost else 130
        if run.checkpoint and os.path.exists(run.checkpoint):
            return f"{where}; resume with: python {sys.argv[0]} --resume {os.path.dirname(run.checkpoint)}", code
        return f"{where}, before the first checkpoint", code
    if isinstance(err, ValueError):
        return str(err), 1
    if type(err).__name__ == "URLError" or str(err).startswith("Error downloading"):
        tb = err.__traceback__
        while tb.tb_next and not hasattr(tb.tb_frame.f_locals.get("self"), "root"):
            tb = tb.tb_next
        dataset = tb.tb_frame.f_locals.get("self")
        where = getattr(dataset, "raw_folder", getattr(dataset, "root", "its root folder"))
        return f"could not download {type(dataset).__name__}: no network; put the files under {where} or retry", 3
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"the disk is full: could not write {err.filename or 'the run folder'}", 3
    if isinstance(err, OSError) and err.filename:
        return f"cannot write {err.filename}: {err.strerror}", 3
    return f"the run failed: {type(err).__name__}: {err} (--debug shows the traceback)", 3


def pick_device(name):
    """``auto`` -> cuda if available, then mps, else cpu; anything else as given."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA is not available on this machine; use --device cpu")
    if name == "auto":
        mps = getattr(torch.backends, "mps", None)
        name = "cuda" if torch.cuda.is_available() else "mps" if mps is not None and mps.is_available() else "cpu"
    return torch.device(name)
