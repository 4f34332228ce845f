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
import fnmatch
import hashlib
import importlib
import io
import json
import os
import pickle
import random
import re
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


def read_csv(path, target, features=None, targets="classes", image=None):
    """A numeric CSV file with a header row -> (features, targets) tensors and the feature columns' names; with
    ``image`` (a column of image files), also each row's image path, relative to the CSV file's folder.

    Targets are class labels (int64) where they are whole numbers, unless ``targets="values"`` (the loss
    compares them with the output: regression): then float, one column, whatever they hold.
    """
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    several = isinstance(target, (list, tuple))  # one target column per output: ``targets`` gives each one's kind
    names = list(target) if several else [target]
    columns = features or [name for name in rows[0] if name not in names and name != image]
    x = torch.tensor([[float(row[name]) for name in columns] for row in rows])
    kinds = targets if several else [targets]
    ys = tuple(csv_targets([float(row[name]) for row in rows], kind) for name, kind in zip(names, kinds))
    if image is None:
        return x, ys if several else ys[0], columns
    folder = os.path.dirname(path)
    files = [(f"{path}:{i + 2}", os.path.join(folder, row[image])) for i, row in enumerate(rows)]
    return x, ys if several else ys[0], columns, files


def csv_targets(values, kind):
    """A target column: class labels (int64) where they are whole numbers and ``kind`` is classes, else one
    float value per row (regression)."""
    if kind == "classes" and all(v.is_integer() for v in values):
        return torch.tensor([int(v) for v in values])
    return torch.tensor(values).unsqueeze(1)


def csv_datasets(
    path,
    target,
    features=None,
    test_path=None,
    val_split=0.0,
    normalize=None,
    seed=0,
    targets="classes",
    image=None,
):
    """(training set, validation set or None) from CSV files; ``normalize`` is fitted on the training split only.
    The training set's ``csv`` holds its columns and scaling, which prediction applies to new rows. With ``image``
    (a column of image files), each set's ``files`` holds its rows' images (``csv_image_datasets``)."""
    x, y, columns, *files = read_csv(path, target, features, targets, image)
    x_val = y_val = scaling = None
    files_val = []
    if test_path is not None:
        x_val, y_val, _, *files_val = read_csv(test_path, target, features, targets, image)
    elif val_split:
        train_idx, val_idx = split_indices(len(x), val_split, seed)
        if isinstance(y, tuple):  # several targets
            y, y_val = tuple(t[train_idx] for t in y), tuple(t[val_idx] for t in y)
        else:
            y, y_val = y[train_idx], y[val_idx]
        x, x_val = x[train_idx], x[val_idx]
        if files:
            files_val, files = [[files[0][i] for i in val_idx]], [[files[0][i] for i in train_idx]]
    if normalize:
        scaling = fit_scaling(normalize, x)
        x, x_val = [None if t is None else apply_scaling(scaling, t) for t in (x, x_val)]
    kind = TargetsDataset if isinstance(y, tuple) else TensorDataset
    train_set, val_set = kind(x, y), (kind(x_val, y_val) if x_val is not None else None)
    train_set.csv = {"columns": columns, "scaling": scaling}
    if files:
        train_set.files = files[0]
    if files_val:
        val_set.files = files_val[0]
    return train_set, val_set


def csv_image_datasets(path, target, image, transform, eval_transform, mode="RGB", **options):
    """``csv_datasets`` of a CSV whose column ``image`` names image files: each sample ((image, features), target),
    the training set's images through ``transform``, the validation set's through ``eval_transform``."""
    train_set, val_set = csv_datasets(path, target, image=image, **options)
    rows = ImageRowsDataset(train_set, transform, mode)
    rows.csv = {**train_set.csv, "image": image}  # prediction reads each row's image too (csv_samples)
    return rows, (ImageRowsDataset(val_set, eval_transform, mode) if val_set is not None else None)


class ImageRowsDataset(torch.utils.data.Dataset):
    """A CSV's rows as ((image, features), target): each row's image file (``row_file``, ``open_image``) read in
    ``mode`` ("L" or "RGB") and transformed, beside its feature columns."""

    def __init__(self, rows, transform, mode="RGB"):
        self.rows, self.files, self.transform, self.mode = rows, rows.files, transform, mode

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        where, path = self.files[i]
        try:
            image = open_image(row_file(path), self.mode)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        features, y = self.rows[i]
        return (self.transform(image) if self.transform is not None else image, features), y


def row_file(path):
    """A file a CSV row names, refused unless it lies inside the folder the program runs in (links followed): a CSV
    cannot make it read /etc/passwd."""
    root = os.path.realpath(os.getcwd())
    if not os.path.basename(path):
        raise ValueError("the row names no file")
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise ValueError(f"{path!r} is outside the folder this program runs in")
    return path


def open_image(path, mode, max_bytes=64 << 20, max_pixels=1 << 25):
    """An image file read by Pillow in ``mode``: a regular file of at most ``max_bytes`` and ``max_pixels``."""
    pil = importlib.import_module("PIL.Image")
    data = read_regular(path, max_bytes, "image file")
    try:
        with pil.open(io.BytesIO(data)) as image:
            size = image.size
            if size[0] * size[1] > max_pixels:
                raise ValueError(f"{path}: {size[0]}x{size[1]} pixels, more than the {max_pixels:,} an input may have")
            return image.convert(mode)
    except (OSError, SyntaxError, pil.DecompressionBombError) as err:
        raise ValueError(f"{path}: not an image Pillow can read ({type(err).__name__})") from None


def text_datasets(
    path,
    text="text",
    label="label",
    test_path=None,
    tokenize="word",
    max_length=64,
    min_freq=1,
    max_vocab=None,
    lowercase=True,
    padding="end",
    val_split=0.0,
    seed=0,
):
    """(training set, validation set or None) of token ids from a CSV file (a ``text`` and a ``label`` column) or a
    folder of ``.txt`` files per class. The vocabulary is built on the training split only; the training set's
    ``text`` holds it with the tokenizer's options (saved in checkpoints: prediction encodes new text with it)."""
    texts, labels, classes = read_texts(path, text, label)
    val = None
    if test_path is not None:
        val = read_texts(test_path, text, label, classes)
    elif val_split:
        train_idx, val_idx = split_indices(len(texts), val_split, seed)
        val = [texts[i] for i in val_idx], [labels[i] for i in val_idx], classes
        texts, labels = [texts[i] for i in train_idx], [labels[i] for i in train_idx]
    info = {"column": text, "tokenize": tokenize, "lowercase": lowercase, "max_length": max_length}
    info["padding"] = padding
    info["vocab"] = build_vocab([text_tokens(t, info) for t in texts], min_freq, max_vocab)
    train_set = TensorDataset(encode_texts(texts, info), torch.tensor(labels, dtype=torch.int64))
    train_set.classes, train_set.text = classes, info
    if val is None:
        return train_set, None
    return train_set, TensorDataset(encode_texts(val[0], info), torch.tensor(val[1], dtype=torch.int64))


def read_texts(path, column, label, classes=None, max_bytes=1 << 28):
    """(texts, class indices, class names) of a CSV file or a folder of ``.txt`` files per class (classes in name
    order, whole numbers first, by value); ``classes`` given (a test set): a label outside them is refused."""
    if os.path.isdir(path):
        rows, names = folder_texts(path, classes)
    else:
        rows = text_rows(path, column, label, max_bytes)
        names = classes or sorted({name for _, name in rows}, key=class_order)
    index = {name: i for i, name in enumerate(names)}
    unknown = next((name for _, name in rows if name not in index), None)
    if unknown is not None:
        raise ValueError(f"{path}: label {unknown[:40]!r} is not one of the training classes {names[:10]}")
    return [t for t, _ in rows], [index[name] for _, name in rows], list(names)


def class_order(name):
    """Class names in name order, whole numbers first and by value (2 before 10)."""
    return (not name.isdigit(), int(name) if name.isdigit() else 0, name)


def folder_texts(path, classes=None, max_files=1_000_000):
    """((text, class name) of every ``.txt`` file in the class subfolders, class names): the subfolders in name
    order, or ``classes`` (a test folder: a subfolder outside them is refused)."""
    found = sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isdir(os.path.join(path, n)))
    if classes is not None and set(found) - set(classes):
        raise ValueError(f"{path}: class folder {min(set(found) - set(classes))[:40]!r} is not a training class")
    rows = []
    for name in classes or found:
        folder = os.path.join(path, name)
        files = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        if len(files) > max_files:
            raise ValueError(f"{folder}: more than {max_files:,} files")
        rows += [(read_text(os.path.join(folder, n), 1 << 20), name) for n in files if n.endswith(".txt")]
    if not rows:
        raise ValueError(f"{path}: no .txt files in its class subfolders")
    return rows, list(classes or found)


def read_text(path, max_bytes):
    """A text file's text (a regular file of at most ``max_bytes``, UTF-8)."""
    try:
        return read_regular(path, max_bytes, "text file").decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start})") from None


def text_rows(path, column, label, max_bytes, need_label=True):
    """(text, label) of each data row of a CSV file (a short row or a missing column refused at its line)."""
    reader = csv.reader(io.StringIO(read_text(path, max_bytes), newline=""))
    try:
        header = next(reader, [])
        wanted = [column, label] if need_label else [column]
        missing = [name for name in wanted if name not in header]
        if missing:
            raise ValueError(f"{path}:1: no column {missing[0]!r} in the header {header[:10]}")
        where = [header.index(name) for name in wanted]
        rows = []
        for row in reader:
            if row and max(where) >= len(row):
                raise ValueError(f"{path}:{reader.line_num}: the row has {len(row)} cells, not {len(header)}")
            if row:
                rows.append((row[where[0]], row[where[-1]] if need_label else f"{path}:{reader.line_num}"))
    except csv.Error as err:
        raise ValueError(f"{path}:{reader.line_num}: not a CSV file Python can read ({err})") from None
    if not rows:
        raise ValueError(f"{path}: a header and no data rows")
    return rows


def text_tokens(text, info):
    """A text's tokens: its characters, or its words and punctuation marks (``\\w+|[^\\w\\s]``)."""
    text = text.lower() if info["lowercase"] else text
    return list(text) if info["tokenize"] == "char" else re.findall(r"\w+|[^\w\s]", text)


def build_vocab(token_lists, min_freq=1, max_vocab=None):
    """``<pad>`` (id 0), ``<unk>`` (id 1), then the tokens seen at least ``min_freq`` times, most frequent first
    (ties in code-point order), at most ``max_vocab`` entries in all."""
    counts = {}
    for tokens in token_lists:
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
    kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
    vocab = ["<pad>", "<unk>", *kept]
    return vocab[:max_vocab] if max_vocab is not None else vocab


def encode_texts(texts, info):
    """Texts as an (N, max_length) int64 tensor of token ids: cut to ``max_length`` tokens (the first), padded with
    ``<pad>`` (0) at the ``end`` or the ``start``; a token outside the vocabulary is ``<unk>`` (1)."""
    index = {token: i for i, token in enumerate(info["vocab"])}
    length, rows = info["max_length"], []
    for text in texts:
        ids = [index.get(token, 1) for token in text_tokens(text, info)][:length]
        pad = [0] * (length - len(ids))
        rows.append(pad + ids if info["padding"] == "start" else ids + pad)
    return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), length)


def class_weights(dataset, weights, classes):
    """The loss's per-class ``weight``: one per class as given, or ``balanced``, n_samples / (n_classes * count)
    over the training set's labels (scikit-learn's); a class with no samples gets weight 0."""
    if weights != "balanced":
        return torch.tensor(weights, dtype=torch.float32)
    labels = dataset_labels(dataset)
    counts = torch.bincount(labels, minlength=classes)[:classes].double()
    balanced = torch.where(counts > 0, len(labels) / (classes * counts.clamp_min(1)), torch.zeros_like(counts))
    return balanced.float()


def dataset_labels(dataset):
    """A dataset's class labels as one tensor: its ``targets`` or tensors (inside a Subset, its part), else read."""
    indices = None
    if isinstance(dataset, torch.utils.data.Subset):
        dataset, indices = dataset.dataset, dataset.indices
    if isinstance(dataset, TensorDataset):
        labels = dataset.tensors[1]
    elif getattr(dataset, "targets", None) is not None:
        labels = torch.as_tensor(dataset.targets)
    else:
        labels = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
    labels = labels.long().flatten()
    return labels[torch.as_tensor(indices, dtype=torch.int64)] if indices is not None else labels


class PairDataset(torch.utils.data.Dataset):
    """Pairs of a labelled dataset's samples, for a model of two inputs (a Siamese network): ((a, b), 1) when the
    two are of one class, ((a, b), 0) when not, about half of each; each sample's partner drawn once from ``seed``."""

    def __init__(self, dataset, seed=0):
        self.dataset = dataset
        labels = dataset_labels(dataset)
        generator = torch.Generator().manual_seed(seed)
        same = (torch.rand(len(labels), generator=generator) < 0.5).tolist()
        classes = labels.unique().tolist()
        alike = {c: torch.nonzero(labels == c).flatten() for c in classes}
        other = {c: torch.nonzero(labels != c).flatten() for c in classes}
        self.partners, self.targets = [], []
        for i, label in enumerate(labels.tolist()):
            pool = alike[label] if same[i] or len(classes) == 1 else other[label]
            j = int(pool[torch.randint(len(pool), (1,), generator=generator)])
            self.partners.append(j)
            self.targets.append(int(labels[j] == label))

    def __len__(self):
        return len(self.partners)

    def __getitem__(self, i):
        (a, _), (b, _) = self.dataset[i], self.dataset[self.partners[i]]
        return (a, b), self.targets[i]


def pair_sets(train_set, val_set, seed):
    """The training and validation sets paired (``PairDataset``), each with its own draw of partners."""
    return PairDataset(train_set, seed), (PairDataset(val_set, seed + 1) if val_set is not None else None)


class TargetsDataset(torch.utils.data.Dataset):
    """Features and several targets (a CSV's target columns): each sample is (x, (y1, y2, ...)), one per output."""

    def __init__(self, x, targets):
        self.x, self.targets = x, tuple(targets)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], tuple(t[i] for t in self.targets)


class OutputLosses(torch.nn.Module):
    """A loss per output of a model of several outputs, weighted and summed (Keras's ``loss`` and
    ``loss_weights``). The model returns a tuple in ``names``' order or a dict, in eval mode perhaps fewer
    (``eval_names``); the targets are one tensor every output is compared with, or one per output in order."""

    def __init__(self, losses, weights, names, eval_names):
        super().__init__()
        self.losses = torch.nn.ModuleList(losses)  # in names' order (an output's name may be any text)
        self.weights, self.names, self.eval_names = list(weights), list(names), list(eval_names)

    def named(self, outputs, training=True):
        """{output name: tensor} of what the model returned in training (or eval) mode."""
        if isinstance(outputs, dict):
            return outputs
        names = self.names if training else self.eval_names
        return dict(zip(names, outputs if isinstance(outputs, (tuple, list)) else (outputs,)))

    def parts(self, outputs, targets, training=True):
        """{output name: (its loss, its weight, its target)}."""
        parts = {}
        for name, output in self.named(outputs, training).items():
            k = self.names.index(name)
            target = targets[k] if isinstance(targets, (tuple, list)) else targets
            parts[name] = (self.losses[k](output, target), self.weights[k], target)
        return parts

    def forward(self, outputs, targets):
        return sum(weight * loss for loss, weight, _ in self.parts(outputs, targets).values())


def to_device(value, device):
    """A tensor, or a tuple or list of them (a model's several inputs, or several targets), on ``device``."""
    if isinstance(value, (tuple, list)):
        return tuple(to_device(item, device) for item in value)
    return value.to(device)


def metrics_text(metrics):
    """``loss 0.0374, species_loss 0.0248, species_accuracy 96.67%``: evaluate_outputs's numbers for a log line."""
    return ", ".join(f"{k} {v:.2%}" if k.endswith("accuracy") else f"{k} {v:.4f}" for k, v in metrics.items())


@torch.no_grad()
def evaluate_outputs(model, loss_fn, loader, device, accuracy=()):
    """Mean loss (the weighted sum over what eval mode returns) and each output's loss, and accuracy for the
    outputs named in ``accuracy``, over a loader in eval mode (under torchrun: over every rank's part)."""
    model = unwrap(model).eval()
    sums, count = {"loss": 0.0}, 0
    for x, y in loader:
        x, y = to_device(x, device), to_device(y, device)
        outputs = model(*x) if isinstance(x, tuple) else model(x)
        n = len(y[0] if isinstance(y, tuple) else y)
        for name, (loss, weight, target) in loss_fn.parts(outputs, y, training=False).items():
            sums["loss"] += weight * loss.item() * n
            sums[f"{name}_loss"] = sums.get(f"{name}_loss", 0.0) + loss.item() * n
            if name in accuracy:
                correct = (loss_fn.named(outputs, False)[name].argmax(dim=1) == target).sum().item()
                sums[f"{name}_accuracy"] = sums.get(f"{name}_accuracy", 0.0) + correct
        count += n
    model.train()
    totals = over_ranks([*sums.values(), count])
    return {key: value / totals[-1] for key, value in zip(sums, totals)}


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


def torchrun_environment():
    """Whether torchrun started this process (it sets RANK); ValueError, before any wait, when RANK comes without
    the rest of what torchrun sets (a stray ``RANK=1 WORLD_SIZE=2`` would wait for processes that never come)."""
    if "RANK" not in os.environ:
        return False
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    found = " ".join(f"{name}={printable(os.environ[name])}" for name in names if name in os.environ)
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise ValueError(
            f"{found} in the environment without {', '.join(missing)}, which torchrun sets with them: unset them to "
            "train in one process, or start this script with torchrun"
        )
    timeout = os.environ.get("SPECC_DIST_TIMEOUT", "300")
    numbers = [os.environ[name] for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")] + [timeout]
    if (
        not all(n.isascii() and n.isdigit() and len(n) < 10 for n in numbers)
        or int(numbers[0]) >= int(numbers[1])
        or int(timeout) < 1
    ):
        raise ValueError(
            f"{found} SPECC_DIST_TIMEOUT={printable(timeout)} in the environment: RANK, WORLD_SIZE, LOCAL_RANK, "
            "MASTER_PORT are whole numbers, RANK below WORLD_SIZE, and SPECC_DIST_TIMEOUT 1 or more (seconds)"
        )
    return True


def setup_distributed(device, quiet=True):
    """Under torchrun (it sets RANK): join its process group, NCCL on CUDA, else gloo (waits end after
    SPECC_DIST_TIMEOUT s, default 300); ranks after the first print nothing if ``quiet``. -> (device, rank)"""
    if not torchrun_environment():
        return device, 0
    if quiet and int(os.environ["RANK"]):
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # torchrun stops the others: exit as interrupted
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=int(os.environ.get("SPECC_DIST_TIMEOUT", "300")))
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


def record_losses(history, pending, step, epoch, rates):
    """Move losses kept on the device into the history, each with the learning rate its update used (``rates``):
    one synchronisation for many steps."""
    values = torch.stack(pending).tolist() if pending else []
    for offset, (value, lr) in enumerate(zip(values, rates)):
        history.append({"step": step - len(values) + 1 + offset, "epoch": epoch, "loss": value, "lr": lr})
    pending.clear()
    rates.clear()
    return values


def check_finite(values, step, epoch, run):
    """Stop the run (``train.stop_on_nan``) at the first loss that is NaN or infinite, before anything is saved:
    the run's checkpoint stays the last good one. ``values`` are the losses of the updates up to ``step``."""
    bad = next((i for i, value in enumerate(values) if not abs(value) < float("inf")), None)
    if bad is None:
        return
    where = f"epoch {epoch} step {step - len(values) + 1 + bad}"
    kept = "its last checkpoint is kept" if run.checkpoint and os.path.exists(run.checkpoint) else "nothing was saved"
    raise FloatingPointError(
        f"the loss is {values[bad]} at {where}: training stopped (train.stop_on_nan), {kept}; "
        "lower the learning rate, add a warm-up (train.warmup) or clip the gradients (train.clip_grad)"
    )


def check_schedule_length(scheduler, epochs, max_steps, batches, accumulate=1):
    """Before the first update: a fixed-length schedule (OneCycleLR's ``total_steps``) shorter than the run would
    stop it with torch's error at the update past its end, after a whole epoch; say so now, in one line."""
    total, per_epoch = getattr(scheduler, "total_steps", None), -(-batches // accumulate)
    needed = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    if total is not None and needed > total:
        raise ValueError(
            f"scheduler {type(scheduler).__name__}: its schedule is {total} updates long (total_steps, or epochs x "
            f"steps_per_epoch), but this run makes {needed} ({epochs} epochs x {per_epoch} updates); give the "
            f"spec's scheduler `total_steps: {needed}`, or `epochs: {epochs}` and `steps_per_epoch: {per_epoch}`"
        )


def ema_weights(state):
    """The weights a checkpoint is evaluated with: its moving average's (``train.ema``) if it has one."""
    average = state.get("ema")
    if not average:
        return state["model"]
    return {key[len("module.") :]: value for key, value in average.items() if key.startswith("module.")}


class Run:
    """Where a run stands, saved and restored whole so that a resumed run continues bit for bit: ``epoch`` (the
    one to continue in, from 0), ``batch`` (its batches done), ``step`` (updates in all), the history, and the
    random states. ``epochs`` and ``max_steps`` bound it; ``save`` writes to ``checkpoint`` (None: nowhere) with
    ``data``, what prediction needs (``data_info``)."""

    def __init__(self, epochs, max_steps=None, checkpoint=None):
        self.epochs, self.max_steps, self.checkpoint = epochs, max_steps, checkpoint
        self.epoch, self.batch, self.step, self.history = 0, 0, 0, []
        self.loader_rng = self.restored = self.data = self.ema_state = None
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

    def save(self, model, optimizer, scheduler, ema=None):
        """Checkpoint the weights (and their moving average, ``ema``), optimizer, schedule, position, random states
        and what the run is (its ``identity`` and ``data``); refresh the metrics beside it."""
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
                **({"ema": ema.state_dict()} if ema is not None else {}),
            }
            save_checkpoint(self.checkpoint, state)
            write_metrics(os.path.dirname(self.checkpoint), self.history)
        if ranks:
            torch.distributed.barrier()  # no rank goes on before rank 0's checkpoint is whole

    def resume(self, state, model, optimizer, scheduler, name="the checkpoint", model_only=False):
        """Continue from a checkpoint's ``state`` (refused if another spec wrote it): load the weights, take its
        position and random states. ``model_only`` (evaluating, predicting): only the model must match."""
        model = unwrap(model)
        check_state(state, name)
        saved, here = state["identity"], identity(model, optimizer, scheduler)
        if model_only:
            saved, here = ({k: v for k, v in d.items() if k.startswith("model: ")} for d in (saved, here))
        different = identity_difference(saved, here)
        if different:
            raise ValueError(f"{name} was written for another spec: {different}")
        weights = ema_weights(state) if model_only else state["model"]  # evaluating: the moving average's
        different = weights_difference(weights, model)
        if different:
            raise ValueError(f"{name} does not fit this model: {different}")
        model.load_state_dict(weights)
        # data None: an older checkpoint, which says nothing of its data; train() restores its moving average
        self.data, self.ema_state = state.get("data"), state.get("ema")
        if model_only:
            return
        resume_optimizer(state, name, optimizer, scheduler)
        self.epoch, self.batch, self.step, self.history = (state[k] for k in ("epoch", "batch", "step", "history"))
        self.restored, self.synced = own_random_states(state), len(self.history)


def resume_optimizer(state, name, optimizer, scheduler):
    """Restore the optimizer's and the schedule's state; a checkpoint without them, or with another optimizer's, is a
    ValueError of one line (a checksum-valid file may still lack what a resumed run needs)."""
    needed = ["optimizer", "torch_rng", "python_rng"] + (["scheduler"] if scheduler is not None else [])
    missing = [key for key in needed if state.get(key) is None]
    if missing:
        raise ValueError(f"{name} cannot be resumed: it holds no {', '.join(missing)} (eval and predict can read it)")
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"{name} cannot be resumed: its optimizer or schedule state does not fit ({err})") from None


def early_stopped(history, monitor, patience, min_delta=0.0, mode="min"):
    """Whether the run stops here, read from its epoch records as Keras's EarlyStopping decides: ``monitor`` has
    not bettered its best by more than ``min_delta`` for ``patience`` epochs in a row. Read from the history (which
    checkpoints keep), a resumed run decides as a straight one."""
    sign, best, wait = (1.0 if mode == "min" else -1.0), float("inf"), 0
    for value in [record[monitor] for record in history if record.get(monitor) is not None]:
        if sign * value < best - min_delta:
            best, wait = sign * value, 0
        else:
            wait += 1
    return wait >= patience


def is_best(history, monitor):
    """Whether the last epoch's ``monitor`` (val_loss: lower, val_accuracy: higher) is better than every earlier one."""
    sign = -1.0 if monitor == "val_accuracy" else 1.0
    values = [sign * record[monitor] for record in history if record.get(monitor) is not None]
    return bool(values) and all(values[-1] < value for value in values[:-1])


def save_best(run, model, optimizer, scheduler, ema=None):
    """Keep this epoch's state as ``best.pt`` beside the run's checkpoint, in its format (written atomically, and read
    by eval, predict, export and --resume as any checkpoint)."""
    last = run.checkpoint
    run.checkpoint = os.path.join(os.path.dirname(last), "best.pt") if last else None
    try:
        run.save(model, optimizer, scheduler, ema)
    finally:
        run.checkpoint = last


def matches(name, patterns):
    """Whether a parameter or module path matches a pattern (fnmatch): a module's path names everything in it."""
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + ".*") for p in patterns)


def param_groups(model, rules):
    """The trainable parameters (``requires_grad``) as optimizer parameter groups. A parameter takes the settings of
    every rule that names it (later rules win): by its path (``matches``) or its layer's class (``layers``). Equal
    settings share a group, in order of first appearance; the parameters no rule names take the optimizer's own."""
    groups, seen = {}, set()
    for path, module in model.named_modules():
        for name, param in module.named_parameters(prefix=path, recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            options = {}
            for rule in rules:
                if type(module).__name__ in rule["layers"] or matches(name, rule["params"]):
                    options.update({k: v for k, v in rule.items() if k not in ("params", "layers")})
            groups.setdefault(repr(options), (options, []))[1].append(param)
    return [{"params": params, **options} for options, params in groups.values()]


def freeze(model, patterns):
    """Train no parameter ``patterns`` name. A normalisation layer that a pattern names (or a module holding it) runs
    in inference mode, as a frozen layer does in Keras: it normalises with its running statistics and keeps them."""
    for name, param in model.named_parameters():
        if matches(name, patterns):
            param.requires_grad_(False)

    def inference_mode(module, args):  # before every forward: model.train() cannot switch it back
        module.train(False)

    for path, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._NormBase) and matches(path, patterns):
            module.register_forward_pre_hook(inference_mode)
    return model


def read_weights(path, max_bytes=1 << 36):
    """The state dict in a weights file: a specc checkpoint's model, or a ``torch.save`` file (a torchvision weights
    file) holding a state dict, or one under ``model`` or ``state_dict``; read as a checkpoint is (a regular file,
    bounded, no compressed entries, tensors only). DistributedDataParallel's ``module.`` prefix is removed."""
    data = read_regular(path, max_bytes, "weights file")
    entries = zip_entries(data) or []  # none: torch's legacy format, no archive
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or sum(e.file_size for e in entries) > len(data):
        raise ValueError(f"{path}: compressed entries larger than the file (refused: a decompression bomb)")
    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, TypeError, AttributeError, KeyError) as err:
        raise ValueError(f"{path}: not a weights file ({type(err).__name__} in weights_only unpickling)") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not (
        isinstance(state, dict) and state and all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items())
    ):
        raise ValueError(f"{path}: not a state dict of tensors (nor a checkpoint holding one)")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def load_weights(model, path, strict=True):
    """``init: - {from: PATH}``: the file's tensors into ``model``. Strict: every tensor of the model, of its shape,
    and nothing else, or ValueError; not strict: the tensors that fit, and a printed report of the rest."""
    state, here = read_weights(path), model.state_dict()
    missing = [key for key in here if key not in state]
    unexpected = [key for key in state if key not in here]
    mismatched = [key for key in here if key in state and state[key].shape != here[key].shape]
    report = weights_report(missing, unexpected, [(k, tuple(state[k].shape), tuple(here[k].shape)) for k in mismatched])
    if strict and report:
        raise ValueError(
            f"{path} does not fit the model: {report}; to load the tensors that fit, write `strict: false`"
        )
    fitting = {key: value for key, value in state.items() if key in here and key not in mismatched}
    model.load_state_dict(fitting, strict=False)
    if not strict:
        print(
            f"loaded {len(fitting)} of the model's {len(here)} tensors from {path}" + (f"; {report}" if report else "")
        )
    return model


def weights_report(missing, unexpected, mismatched):
    """The tensors a weights file does not supply, in words: at most 5 names of each kind ("" when it fits)."""

    def names(keys):
        return ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")

    parts = [f"missing from the file (kept as initialised): {names(missing)}"] if missing else []
    parts += [f"not in the model (ignored): {names(unexpected)}"] if unexpected else []
    shapes = [f"{k} {tuple(a)} in the file, {tuple(b)} here" for k, a, b in mismatched]
    parts += [f"of another shape (kept as initialised): {names(shapes)}"] if shapes else []
    return "; ".join(parts)


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


def data_info(dataset, input_shape, task, outputs=None):
    """What prediction needs, saved in every checkpoint: the input shape, the targets (``classes`` or ``values``),
    the class names, the CSV columns and scaling, a text model's vocabulary; for a model of several outputs, what
    each output eval mode returns predicts (``{"species": "classes", "petal_width": "values"}``)."""
    dataset = getattr(dataset, "dataset", dataset)  # inside a Subset
    classes = list(getattr(dataset, "classes", None) or []) or None
    info = {"input": tuple(input_shape), "task": task, "classes": classes, "csv": getattr(dataset, "csv", None)}
    info = {**info, "text": getattr(dataset, "text", None)}  # Text: the vocabulary and the tokenizer's options
    return {**info, "outputs": outputs} if outputs is not None else info


def write_atomic(path, data):
    """Write ``data`` through a temporary file, fsync and rename: a crash leaves the old file whole, and a symlink
    at ``path`` is replaced, never followed. The file gets the mode a plain ``open`` would give (the umask's)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
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
    are patched and hashed in place: a checkpoint is several times the model, and each copy of it costs time. In a
    numbered run folder, ``latest`` beside it then names the newest run with a checkpoint (``mark_latest``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with buffer.getbuffer() as data:
        data[-2:] = (77).to_bytes(2, "little")  # the zip comment's length: the 77 bytes below
        digest = hashlib.sha256(data).hexdigest()
    buffer.write(b"specc-sha256:" + digest.encode())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with buffer.getbuffer() as data:
        write_atomic(path, data)
    mark_latest(os.path.dirname(os.path.abspath(path)))


def read_regular(path, max_bytes, what="file"):
    """The bytes of the regular file at ``path`` (ValueError if it holds more than ``max_bytes``): a directory,
    FIFO, device or socket is refused before it is opened, and the open never blocks (``O_NONBLOCK``)."""
    a = "an" if what[:1] in "aeiou" else "a"
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError(f"{path}: not {a} {what} (a directory, FIFO or device)")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as err:
        raise ValueError(f"{path}: {err.strerror}") from None
    with open(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # what was opened, not what was there a moment before
            raise ValueError(f"{path}: not {a} {what} (a directory, FIFO or device)")
        data = file.read(min(os.fstat(fd).st_size, max_bytes) + 1)  # at most its size when opened
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes:,} bytes, the most {a} {what} may hold")
    return data


def zip_entries(data):
    """The zip archive's entries, or None where the bytes hold none that can be read: on hostile bytes zipfile
    raises BadZipFile, but also NotImplementedError (an unknown version), EOFError, ValueError and OSError."""
    try:
        return zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, NotImplementedError, EOFError, ValueError, OSError):
        return None


def load_checkpoint(path, max_bytes=1 << 36):
    """Read a checkpoint written by ``save_checkpoint`` (a regular file, at most ``max_bytes``); verify its
    checksum; refuse compressed entries (a decompression bomb); unpickle only tensors and plain data.
    ``Run.resume`` then checks that it holds what a run's state holds (``check_state``)."""
    data = read_regular(path, max_bytes, "checkpoint file")
    body, tag, digest = data[:-77], data[-77:-64], data[-64:]
    if tag != b"specc-sha256:" or hashlib.sha256(body).hexdigest().encode() != digest:
        raise ValueError(f"{path}: not a specc checkpoint, or truncated or altered (checksum mismatch)")
    entries = zip_entries(data)
    if entries is None:
        raise ValueError(f"{path}: not a checkpoint (no readable zip archive)")
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or sum(e.file_size for e in entries) > len(data):
        raise ValueError(f"{path}: compressed entries larger than the file (refused: a decompression bomb)")
    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as err:  # a checksum recomputed over another payload: torch's message is not for users
        raise ValueError(f"{path}: not a specc checkpoint ({type(err).__name__} in weights_only unpickling)") from None
    return state


def check_state(state, path):
    """ValueError unless ``state`` has the parts and types ``Run.resume`` and prediction read."""
    kinds = {"model": dict, "identity": dict, "epoch": int, "batch": int, "step": int, "history": list}
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a specc checkpoint (it holds a {type(state).__name__}, not a run's state)")  # noqa: TRY004
    for key, kind in kinds.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise ValueError(f"{path}: not a specc checkpoint ({key!r} is missing or not a {kind.__name__})")  # noqa: TRY004
    for key in ("model", "ema"):  # the weights, and their moving average where train.ema keeps one
        tensors = state.get(key, {})
        if not isinstance(tensors, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
        ):
            raise ValueError(f"{path}: not a specc checkpoint (its {key!r} is not a state dict of tensors)")
    data = state.get("data")
    shape = data.get("input") if isinstance(data, dict) else None
    if data is not None and not (
        isinstance(shape, (tuple, list))
        and all(isinstance(n, int) and 0 < n < 1 << 20 for n in shape)
        and data.get("task") in ("classes", "values")
        and (data.get("classes") is None or isinstance(data.get("classes"), list))
        and (data.get("csv") is None or isinstance(data.get("csv"), dict))
        and (data.get("text") is None or text_info_ok(data["text"]))
        and (
            data.get("outputs") is None
            or isinstance(data["outputs"], dict)
            and all(isinstance(k, str) and v in ("classes", "values") for k, v in data["outputs"].items())
        )
    ):
        raise ValueError(f"{path}: not a specc checkpoint (its 'data' does not describe the inputs)")


def text_info_ok(info):
    """Whether a checkpoint's ``text`` is a vocabulary of strings with the tokenizer's options."""
    vocab = info.get("vocab") if isinstance(info, dict) else None
    return (
        isinstance(vocab, list)
        and all(isinstance(token, str) for token in vocab)
        and info.get("tokenize") in ("word", "char")
        and info.get("padding") in ("end", "start")
        and isinstance(info.get("max_length"), int)
        and isinstance(info.get("column"), str)
    )


def weights_difference(saved, model):
    """The first tensor of ``saved`` (a state dict) that does not fit ``model``, in words (None: they fit)."""
    here = model.state_dict()
    for key in dict.fromkeys([*here, *saved]):
        if key not in saved or key not in here:
            return f"{key} is {'absent from the checkpoint' if key not in saved else 'not in this model'}"
        if saved[key].shape != here[key].shape:
            return f"{key} has shape {tuple(saved[key].shape)} in the checkpoint, {tuple(here[key].shape)} here"
    return None


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


def require_mlflow():
    """The mlflow module, or a one-line ValueError (as Ludwig does, at the start of training) when it is absent."""
    try:
        return importlib.import_module("mlflow")
    except ImportError:
        raise ValueError(
            "train.log names mlflow, which is not installed: pip install 'specc[mlflow]' (or mlflow-skinny)"
        ) from None


def log_mlflow(folder, history, params, uri=None, files=()):
    """The run in an MLflow store (``uri``; default ``folder/mlruns``), an experiment named by the spec: ``params``
    (the expanded spec, flattened), each epoch's numbers (its mean training loss and validation metrics, step =
    the epoch) and the run folder's files with ``files`` as artifacts. -> the MLflow run's id"""
    mlflow = require_mlflow()
    if uri is None:  # MLflow 3 keeps its local file store ("maintenance mode") behind this switch
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri or os.path.abspath(os.path.join(folder, "mlruns")))
    mlflow.set_experiment(str(params.get("name", "specc")))
    with mlflow.start_run(run_name=os.path.basename(os.path.abspath(folder))) as active:
        mlflow.log_params({key[:250]: str(value)[:500] for key, value in params.items()})
        for record in history:
            if "loss" in record:  # a step's record; the epoch's record (below) carries its mean
                continue
            losses = [r["loss"] for r in history if r.get("epoch") == record["epoch"] and "loss" in r]
            values = {k: v for k, v in record.items() if k not in ("step", "epoch") and v is not None}
            values.update({"train_loss": sum(losses) / len(losses)} if losses else {})
            mlflow.log_metrics(values, step=record["epoch"])
        names = sorted(os.listdir(folder))
        paths = [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]
        for path in [*paths, *files]:
            if not os.path.islink(path):
                mlflow.log_artifact(path)
        return active.info.run_id


def new_run_folder(root):
    """A new numbered run folder ``root/N``, made exclusively (two runs never share one). ``root/latest`` names it
    once it holds a checkpoint (``mark_latest``): a run that never started is never the latest."""
    os.makedirs(root, exist_ok=True)
    numbers = [int(name) for name in os.listdir(root) if name.isdigit() and len(name) < 10]
    number = max(numbers, default=0) + 1
    while True:
        try:
            os.mkdir(os.path.join(root, str(number)))
            return os.path.join(root, str(number))
        except FileExistsError:  # another run took it
            number += 1


def check_out_folder(folder, checkpoint=None):
    """ValueError when ``folder`` is no place for a run's files: not a folder, or one holding another run (its
    checkpoint, weights or metrics) than the one resumed from ``checkpoint``; a finished run is never written over.
    ``folder`` None: nothing to check (no --out)."""
    if folder is None:
        return
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--out {printable(folder)}: not a folder")
    if checkpoint and os.path.realpath(os.path.dirname(checkpoint) or ".") == os.path.realpath(folder):
        return  # continuing its own run
    for name in ("checkpoint.pt", "model.pt", "metrics.json"):
        if os.path.lexists(os.path.join(folder, name)):
            raise ValueError(
                f"--out {printable(folder)} holds another run ({name}), which is never written over: name a new "
                f"folder, or continue that run with --resume {printable(folder)}"
            )


def latest_run(root):
    """The number ``root/latest`` names if that run has a checkpoint, else the highest-numbered run folder
    with one; None when no run in ``root`` has a checkpoint. ``latest`` only ever holds a number."""
    try:
        text = read_regular(os.path.join(root, "latest"), 64, "latest file").decode("ascii").strip()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if text.isdigit() and len(text) < 10 and os.path.isfile(os.path.join(root, text, "checkpoint.pt")):
        return int(text)
    try:
        names = [name for name in os.listdir(root) if name.isdigit() and len(name) < 10]
    except OSError:
        return None
    done = [int(name) for name in names if os.path.isfile(os.path.join(root, name, "checkpoint.pt"))]
    return max(done, default=None)


def mark_latest(folder):
    """In a numbered run folder ``root/N`` that has a checkpoint: make ``root/latest`` name the highest-numbered
    such run, replaced atomically under a lock on ``root`` (concurrent runs never leave it naming an older one)."""
    root, name = os.path.split(os.path.abspath(folder))
    if not (name.isdigit() and len(name) < 10):
        return
    try:
        fcntl = importlib.import_module("fcntl")
    except ImportError:  # Windows: no lock, still atomic
        fcntl = None
    fd = os.open(root, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        current = latest_run(root)
        if current is None or current <= int(name):
            write_atomic(os.path.join(root, "latest"), f"{int(name)}\n".encode())
    finally:
        os.close(fd)  # releases the lock


def find_checkpoint(path):
    """The checkpoint a path names: a checkpoint file as given; in a run folder, its checkpoint.pt; in a folder of
    runs (or its ``latest`` file), the latest run's (``latest_run``). ValueError when it names none."""
    path = os.fspath(path)
    if os.path.basename(os.path.normpath(path)) == "latest" and not os.path.isdir(path):
        path = os.path.dirname(os.path.normpath(path)) or "."
    if not os.path.isdir(path):
        if not os.path.lexists(path):
            raise ValueError(f"{path}: no such checkpoint file or run folder")
        return path
    if os.path.lexists(os.path.join(path, "checkpoint.pt")):
        return os.path.join(path, "checkpoint.pt")
    number = latest_run(path)
    if number is None:
        raise ValueError(f"{path}: no checkpoint here, nor a run folder with one (train first, or name a checkpoint)")
    return os.path.join(path, str(number), "checkpoint.pt")


def progress_bar(run, steps_per_epoch):
    """A tqdm bar (ETA, rate) on a terminal when tqdm is installed; else None, and the log lines remain."""
    try:
        tqdm = importlib.import_module("tqdm").tqdm  # (an optional extra: not a static import of the script)
    except ImportError:
        return None
    total = run.epochs * steps_per_epoch if run.max_steps is None else min(run.max_steps, run.epochs * steps_per_epoch)
    return tqdm(total=total, initial=run.step, unit="step", dynamic_ncols=True) if sys.stderr.isatty() else None


def predict(model, inputs, info, transform, device, top_k=1):
    """(input, prediction) for image files, folders of images and CSV files (rows scaled as in training), as text
    safe to print: the class name (or number), with probabilities for the ``top_k`` best; or the values."""
    names, batch = model_inputs(inputs, info, transform)
    return predictions(model, names, batch, info, device, top_k)


def model_inputs(inputs, info, transform):
    """(names, tensors) of the inputs, read as the model's data was: texts, CSV rows or images."""
    if info.get("text") is not None:
        return text_inputs(inputs, info)
    return csv_inputs(inputs, info, transform) if info["csv"] is not None else image_inputs(inputs, info, transform)


def predictions(model, names, batch, info, device, top_k=1):
    """(name, prediction) for read inputs, as text safe to print (a script's ``--predict``)."""
    rows = label_rows(model, names, batch, info, device, top_k)
    if info.get("outputs"):  # several outputs: each one's prediction by name
        return [(printable(name), ", ".join(f"{printable(k)} {v}" for k, v in each.items())) for name, each in rows]
    if info["task"] != "classes":
        return [(printable(name), " ".join(f"{v:.6g}" for v in values)) for name, values in rows]
    if top_k == 1:
        return [(printable(name), printable(best[0][0])) for name, best in rows]
    return [(printable(name), ", ".join(f"{printable(c)} ({p:.3f})" for c, p in best)) for name, best in rows]


def printable(text):
    """``text`` safe to print on a terminal: every character that is not printable (escape sequences, carriage
    returns, newlines, bidi overrides) becomes its visible escape, as in a Python string literal."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def predict_rows(model, inputs, info, transform, device, top_k=1):
    """(input, [(class, probability), ...] best first) for a classifier, else (input, [values])."""
    names, batch = model_inputs(inputs, info, transform)
    return label_rows(model, names, batch, info, device, top_k)


def label_rows(model, names, batch, info, device, top_k, batch_size=64):
    """``label_outputs`` over the inputs, ``batch_size`` at a time."""
    if not batch:
        raise ValueError("nothing to predict: the folders given hold no images")
    model.eval()
    rows = []
    with torch.no_grad():
        for i in range(0, len(batch), batch_size):
            part = list(zip(names[i : i + batch_size], batch[i : i + batch_size]))
            rows += label_outputs(model, part, info, device, top_k)
    return rows


def label_outputs(model, samples, info, device, top_k):
    """The model's outputs for (name, input) samples: the ``top_k`` classes with their softmax probabilities."""
    names, xs = [name for name, _ in samples], [x for _, x in samples]
    if isinstance(xs[0], tuple):  # several inputs a sample (a CSV row's image and features): a batch of each
        output = model(*(torch.stack(parts).to(device) for parts in zip(*xs)))
    else:
        output = model(torch.stack(xs).to(device))
    if info.get("outputs"):  # several outputs: a class (its probability) or values for each, by name
        tasks = info["outputs"]
        if not isinstance(output, dict):
            output = dict(zip(tasks, output if isinstance(output, (tuple, list)) else (output,)))
        rows = [{} for _ in names]
        for key, out in output.items():
            out = out.float().cpu()
            for row, value in zip(rows, out.argmax(dim=1).tolist() if tasks[key] == "classes" else out.flatten(1)):
                row[key] = str(value) if tasks[key] == "classes" else " ".join(f"{v:.6g}" for v in value.tolist())
        return list(zip(names, rows))
    output = output.float().cpu()
    if info["task"] != "classes":
        return list(zip(names, output.flatten(1).tolist()))
    classes = info["classes"] or [str(i) for i in range(output.shape[1])]
    if output.dim() != 2 or len(classes) != output.shape[1]:
        raise ValueError(f"the checkpoint names {len(classes)} classes, the model gives {tuple(output.shape[1:])}")
    best = output.softmax(dim=1).topk(min(top_k, output.shape[1]), dim=1)
    pairs = zip(best.indices.tolist(), best.values.tolist())
    return [(name, [(str(classes[i]), p) for i, p in zip(*pair)]) for name, pair in zip(names, pairs)]


def image_inputs(paths, info, transform, max_files=100_000):
    """(names, tensors) of image files and the images in a folder (in name order), each checked by
    ``image_sample``; a CSV file is refused in one line (this model reads images)."""
    if info["csv"] is not None:  # a checkpoint of a model of CSV rows
        raise ValueError(f"this model reads CSV rows (columns {', '.join(info['csv']['columns'])}), not images")
    names, batch = [], []
    for path in paths:
        if path.lower().endswith(".csv") and not os.path.isdir(path):
            raise ValueError(f"{path}: this model was trained on images, not CSV rows: give image files or folders")
        files = [path]
        if os.path.isdir(path):
            found = sorted(os.listdir(path))
            if len(found) > max_files:
                raise ValueError(f"{path}: more than {max_files:,} files; predict on smaller folders")
            files = [os.path.join(path, n) for n in found if n.lower().endswith(datasets.folder.IMG_EXTENSIONS)]
        for file in files:
            batch.append(image_sample(file, info, transform))
            names.append(file)
    return names, batch


def csv_inputs(paths, info, transform=None):
    """(names ``file:line``, tensors) of the rows of CSV files, scaled as the training rows were (``csv_samples``);
    for a model trained on a CSV's images and features, (image, features) a row."""
    names, batch = [], []
    for path in paths:
        if not path.lower().endswith(".csv"):
            columns = ", ".join(info["csv"]["columns"])
            raise ValueError(f"{path}: this model reads CSV rows (columns {columns}), not images: give CSV files")
        for name, x in csv_samples(path, info, transform):
            names.append(name)
            batch.append(x)
    return names, batch


def text_inputs(paths, info, max_bytes=1 << 28, max_files=100_000):
    """(names, token ids) of texts to classify: each row of a CSV file (its text column, named ``file:line``), each
    ``.txt`` file of a folder, or any other file's whole text; encoded with the checkpoint's vocabulary."""
    if info.get("text") is None:
        raise ValueError(f"{paths[0]}: this model was not trained on text")
    names, texts = [], []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.listdir(path))
            if len(found) > max_files:
                raise ValueError(f"{path}: more than {max_files:,} files; predict on smaller folders")
            files = [os.path.join(path, n) for n in found if n.endswith(".txt")]
            pairs = [(read_text(file, 1 << 20), file) for file in files]
        elif path.lower().endswith(".csv"):
            pairs = text_rows(path, info["text"]["column"], None, max_bytes, need_label=False)
        else:
            pairs = [(read_text(path, 1 << 20), path)]
        texts += [text for text, _ in pairs]
        names += [name for _, name in pairs]
    return names, list(encode_texts(texts, info["text"])) if texts else []


def image_sample(path, info, transform):
    """An image file as the model's input (``open_image``), through the evaluation transforms, of the shape the
    model was trained on."""
    image = open_image(path, "L" if info["input"][0] == 1 else "RGB")
    try:
        x = transform(image)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{path}: the spec's transforms fail on this image: {str(err).splitlines()[0]}") from None
    if not torch.is_tensor(x) or tuple(x.shape) != tuple(info["input"]):
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(
            f"{path}: a {image.size[0]}x{image.size[1]} image gives an input of shape {shape}, but the model takes "
            f"{tuple(info['input'])}: resize the image, or add Resize to the spec's transforms"
        )
    return x


def csv_samples(path, info, transform=None, max_bytes=1 << 28):
    """(path:line, row) for each data row of a CSV file that has the columns the model was trained on, scaled as
    in training; a missing column, a short row or a cell that is not a finite number is refused at its line. A
    model trained on a CSV's image column reads each row's image too (``row_image``): (path:line, (image, row))."""
    if info["csv"] is None:
        raise ValueError(f"{path}: this model was trained on images, not CSV rows: give image files or folders")
    try:
        text = read_regular(path, max_bytes, "CSV file").decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header, columns = next(reader, []), info["csv"]["columns"]
    image = info["csv"].get("image")
    missing = [column for column in [*columns, *([image] if image else [])] if column not in header]
    if missing:
        raise ValueError(f"{path}:1: no column {missing[0]!r} in the header; the model reads {', '.join(columns)}")
    where = [header.index(column) for column in columns]
    rows, lines, images = [], [], []
    for row in reader:
        if row:
            rows.append(csv_row(f"{path}:{reader.line_num}", row, where, columns))
            lines.append(reader.line_num)
            cell = row[header.index(image)] if image and header.index(image) < len(row) else ""
            images.append(os.path.join(os.path.dirname(path), cell) if image else None)
    if not rows:
        raise ValueError(f"{path}: a header and no data rows")
    x = torch.tensor(rows, dtype=torch.float32)
    x = apply_scaling(info["csv"]["scaling"], x) if info["csv"]["scaling"] else x
    if not image:
        return [(f"{path}:{line}", sample) for line, sample in zip(lines, x)]
    pictures = [row_image(f"{path}:{line}", file, info, transform) for line, file in zip(lines, images)]
    return [(f"{path}:{line}", (picture, sample)) for line, picture, sample in zip(lines, pictures, x)]


def row_image(where, path, info, transform):
    """A CSV row's image file (``row_file``) as the model reads it in training (``image_sample``), named by its
    row when refused."""
    try:
        return image_sample(row_file(path), info, transform)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def csv_row(where, row, indices, columns):
    """A CSV row's cells in ``columns`` (at ``indices``) as finite numbers; ValueError naming the cell."""
    values = []
    for column, index in zip(columns, indices):
        cell = row[index] if index < len(row) else None
        try:
            value = float(cell)
        except (TypeError, ValueError):
            value = float("nan")
        if not abs(value) < float("inf"):  # nan or infinite
            shown = "nothing (the row is short)" if cell is None else repr(cell[:40])
            raise ValueError(f"{where}:{index + 1}: column {column!r} holds {shown}, not a finite number")
        values.append(value)
    return values


def explain(err, run):
    """A failure told in one line on stderr; -> the exit code: 1 bad input, 3 the run failed, 130 interrupted."""
    message, code = failure(err, run)
    print(f"error: {message}", file=sys.stderr)
    return code


def failure(err, run):
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
    if isinstance(err, FloatingPointError):  # train.stop_on_nan: the run failed, its checkpoint is the last good one
        return str(err), 3
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
