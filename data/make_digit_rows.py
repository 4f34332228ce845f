"""Write data/digit_rows/: a table whose rows pair an image file with numeric features (deterministic).

Run from the repo root:  python data/make_digit_rows.py

Each row is one real handwritten digit from data/MNIST/raw (written as a 28x28 grayscale PNG under
data/digit_rows/images/) and a number 0..9 drawn with a fixed seed; the target `larger` is 1 when the digit is
larger than the number, else 0. Neither input alone decides it: the image gives the digit, the feature the
number, so a model has to read both (specs/digit_vs_number.yaml). Needs only Pillow (torchvision's dependency).

  train.csv  1,200 rows from MNIST's training split;  test.csv  300 rows from its test split
  columns    image (a path relative to the CSV's folder), number, larger
"""

import csv
import os
import random
import struct

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
RAW = os.path.join(HERE, "MNIST", "raw")
OUT = os.path.join(HERE, "digit_rows")
SEED = 0


def read_idx(split):
    with open(os.path.join(RAW, f"{split}-images-idx3-ubyte"), "rb") as f:
        _, count, rows, cols = struct.unpack(">IIII", f.read(16))
        pixels = f.read(count * rows * cols)
    with open(os.path.join(RAW, f"{split}-labels-idx1-ubyte"), "rb") as f:
        f.read(8)
        labels = list(f.read(count))
    size = rows * cols
    return [(pixels[i * size : (i + 1) * size], labels[i]) for i in range(count)], (cols, rows)


def write_split(name, split, count, rng):
    digits, size = read_idx(split)
    rows = []
    for i, (pixels, digit) in enumerate(digits[:count]):
        path = f"images/{name}_{i:04d}.png"
        Image.frombytes("L", size, pixels).save(os.path.join(OUT, path), optimize=True)
        number = rng.randrange(10)
        rows.append({"image": path, "number": number, "larger": int(digit > number)})
    with open(os.path.join(OUT, f"{name}.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "number", "larger"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main():
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    rng = random.Random(SEED)
    for name, split, count in (("train", "train", 1200), ("test", "t10k", 300)):
        rows = write_split(name, split, count, rng)
        share = sum(r["larger"] for r in rows) / len(rows)
        print(f"wrote {OUT}/{name}.csv: {len(rows)} rows, {share:.0%} larger")


if __name__ == "__main__":
    main()
