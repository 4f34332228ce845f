"""Run-time helpers shared by both backends.

The compiled backend calls these directly; the renderer copies their source verbatim into
each generated script (``inspect.getsource``), so the script and the compiled objects run
the same code and the script still imports only torch, torchvision and the standard library.
Keep every function here self-contained: stdlib and torch only, no reference to ``compiler``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import sys
import tempfile
import time

import torch
from torch.utils.data import DataLoader, TensorDataset


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


def read_csv(path, target, features=None):
    """A numeric CSV file with a header row -> (features, targets) tensors.

    Integer targets become class labels (int64); any other targets regression values.
    """
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    columns = features or [name for name in rows[0] if name != target]
    x = torch.tensor([[float(row[name]) for name in columns] for row in rows])
    values = [float(row[target]) for row in rows]
    if all(v.is_integer() for v in values):
        return x, torch.tensor([int(v) for v in values])
    return x, torch.tensor(values).unsqueeze(1)


def csv_datasets(path, target, features=None, test_path=None, val_split=0.0, normalize=None, seed=0):
    """(training set, validation set or None) from CSV files; ``normalize`` is fitted on the training split only."""
    x, y = read_csv(path, target, features)
    x_val = y_val = None
    if test_path is not None:
        x_val, y_val = read_csv(test_path, target, features)
    elif val_split:
        train_idx, val_idx = split_indices(len(x), val_split, seed)
        x, y, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    if normalize:
        x, x_val = scale_features(normalize, x, x_val)
    return TensorDataset(x, y), (TensorDataset(x_val, y_val) if x_val is not None else None)


def scale_features(method, x, x_val=None):
    """``rescale`` (min-max to [0, 1]) or ``standardize`` (z-score) with statistics of ``x``; ``normalize``: unit rows."""
    if method == "normalize":  # per sample: nothing to fit
        return [None if t is None else torch.nn.functional.normalize(t, p=2.0, dim=1) for t in (x, x_val)]
    if method == "rescale":
        shift = x.min(dim=0).values
        scale = (x.max(dim=0).values - shift).clamp_min(1e-12)
    else:
        shift, scale = x.mean(dim=0), x.std(dim=0).clamp_min(1e-12)
    return [None if t is None else (t - shift) / scale for t in (x, x_val)]


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

    def __len__(self):
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

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
            yield x, self.y[index]


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
    return train_loader, val_loader


def resolve_speed(device, precision, channels_last, data_on_device, cuda_graph):
    """Turn `auto` options into what is safe and fast on this device (CPU: the tutorial's way)."""
    cuda = device.type == "cuda"
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if channels_last == "auto":
        channels_last = cuda
    if data_on_device == "auto":
        data_on_device = cuda
    if cuda_graph == "auto":
        cuda_graph = cuda and data_on_device
    return precision, channels_last, data_on_device, cuda_graph and cuda


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
    random states. ``epochs`` and ``max_steps`` bound it; ``save`` writes to ``checkpoint`` (None: nowhere)."""

    def __init__(self, epochs, max_steps=None, checkpoint=None):
        self.epochs, self.max_steps, self.checkpoint = epochs, max_steps, checkpoint
        self.epoch, self.batch, self.step, self.history = 0, 0, 0, []
        self.loader_rng = self.restored = None

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
        """Checkpoint the weights, optimizer, schedule, position and random states."""
        if not self.checkpoint:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            **{key: getattr(self, key) for key in ("epoch", "batch", "step", "history", "loader_rng")},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python_rng": random.getstate(),
        }
        save_checkpoint(self.checkpoint, state)

    def resume(self, state, model, optimizer, scheduler):
        """Continue from a checkpoint's ``state``: load the weights, take its position and random states."""
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.batch, self.step, self.history = (state[k] for k in ("epoch", "batch", "step", "history"))
        self.restored = state


def save_checkpoint(path, state):
    """Write ``state`` atomically (temporary file, fsync, rename: a crash leaves the old file whole) behind a
    header line and the payload's SHA-256, so that a truncated or altered checkpoint is refused when loaded."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):  # temporaries a killed save left behind (an hour old: no save writes them)
        stale = os.path.join(folder, name)
        try:
            if name.startswith(".tmp-") and name.endswith(".pt") and time.time() - os.path.getmtime(stale) > 3600:
                os.unlink(stale)
        except OSError:  # another save removed it first
            pass
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(b"specc-checkpoint-v1\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load_checkpoint(path):
    """Read a checkpoint written by ``save_checkpoint``; verify it; unpickle only tensors and plain data."""
    with open(path, "rb") as file:
        magic, digest, payload = file.readline(), file.readline(), file.read()
    if magic != b"specc-checkpoint-v1\n":
        raise ValueError(f"{path}: not a checkpoint written by this script (or truncated)")
    if digest != hashlib.sha256(payload).hexdigest().encode() + b"\n":
        raise ValueError(f"{path}: checksum mismatch: the checkpoint is truncated or was altered")
    return torch.load(io.BytesIO(payload), weights_only=True)


def show_progress(epoch, epochs, batch, batches, loss):
    """One self-overwriting line on a terminal: epoch, a bar, and the last loss."""
    width = 30
    done = width * batch // max(batches, 1)
    bar = "#" * done + "." * (width - done)
    end = "\n" if batch == batches else ""
    print(f"\repoch {epoch}/{epochs} [{bar}] {batch}/{batches} loss {loss:.4f}", end=end, file=sys.stderr, flush=True)


def pick_device(name):
    """``auto`` -> cuda if available, then mps, else cpu; anything else as given."""
    if name == "auto":
        mps = getattr(torch.backends, "mps", None)
        name = "cuda" if torch.cuda.is_available() else "mps" if mps is not None and mps.is_available() else "cpu"
    return torch.device(name)
