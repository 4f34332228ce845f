"""A CSV whose `image:` column names image files (§4): each sample is ((image, features), target) for a model of
two inputs, the image's first. The shipped spec (specs/digit_vs_number.yaml) on the shipped rows
(data/digit_rows, written by data/make_digit_rows.py); both backends' datasets and training equal; each mistake a
located error; a path out of the project refused when validating and when reading.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import compiler
from compiler.build.training import build_datasets
from compiler.errors import SpecError
from compiler.runtime import helpers as runtime
from compiler.workflow.check import compare, import_script

ROOT = Path(__file__).resolve().parent.parent
SPEC = "specs/digit_vs_number.yaml"


def test_the_shipped_rows_pair_a_real_digit_with_a_number():
    with open(ROOT / "data/digit_rows/train.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 1200 and list(rows[0]) == ["image", "number", "larger"]
    image = Image.open(ROOT / "data/digit_rows" / rows[0]["image"])
    assert image.size == (28, 28) and image.mode == "L"
    assert 0.3 < sum(int(r["larger"]) for r in rows) / len(rows) < 0.7


def test_a_sample_is_the_rows_image_through_the_transforms_and_its_features():
    program = compiler.lower_spec(compiler.load_spec(SPEC))
    data = program.training.data
    assert data.image == "image" and data.image_mode == "L" and data.several_inputs and data.images
    train_set, val_set = build_datasets(data, seed=0)
    assert (len(train_set), len(val_set)) == (1200, 300)
    (image, number), label = train_set[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and number.shape == (1,)
    assert 0.0 <= number.item() <= 1.0  # `normalize: rescale`, fitted on the training rows
    raw = Image.open(ROOT / "data/digit_rows/images/train_0000.png")
    expected = (torch.tensor(list(raw.tobytes()), dtype=torch.float32).view(1, 28, 28) / 255 - 0.1307) / 0.3081
    assert torch.allclose(image, expected, atol=1e-6)
    assert label.item() in (0, 1)
    batch = next(iter(torch.utils.data.DataLoader(train_set, batch_size=4)))
    (images, numbers), labels = batch
    assert images.shape == (4, 1, 28, 28) and numbers.shape == (4, 1) and labels.shape == (4,)


def test_both_backends_match_at_every_level():
    checks = compare(compiler.load_spec(SPEC), steps=2)
    assert len(checks) == 6 and all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]


def test_the_generated_script_reads_the_rows_as_the_compiled_trainer_does(tmp_path):
    spec = compiler.load_spec(SPEC)
    text = compiler.render_script(spec)
    assert "return csv_image_datasets(" in text and 'image="image"' in text and 'mode="L"' in text
    assert "output = model(*x)" in text and "# x: the row's image and features" in text
    script = import_script(text, "digit_vs_number_gen", str(tmp_path))
    theirs, _ = script.build_datasets()
    ours, _ = build_datasets(compiler.lower_spec(spec).training.data, seed=0)
    for i in (0, 17, 1199):
        (a, b), y = theirs[i]
        (c, d), z = ours[i]
        assert torch.equal(a, c) and torch.equal(b, d) and torch.equal(torch.as_tensor(y), torch.as_tensor(z))


def test_a_val_split_splits_images_with_their_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _rows(tmp_path, 20)
    train_set, val_set = runtime.csv_image_datasets(
        "rows/t.csv", "label", "file", transform=_to_tensor(), eval_transform=_to_tensor(), mode="L", val_split=0.25
    )
    assert (len(train_set), len(val_set)) == (15, 5)
    for dataset in (train_set, val_set):
        for i in range(len(dataset)):
            (image, features), _ = dataset[i]
            assert image[0, 0, 0].item() * 255 == pytest.approx(features[0].item())  # each row kept its own image


def test_an_image_outside_the_project_is_refused_when_read(tmp_path, monkeypatch):
    """Validation checks the rows it scans; the reader checks every row it opens (a link made since, a row past the
    scan): the image must lie inside the folder the program runs in."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    _rows(project, 2)
    secret = tmp_path / "secret.png"
    Image.new("L", (2, 2)).save(secret)
    (project / "rows" / "img_1.png").unlink()
    os.symlink(secret, project / "rows" / "img_1.png")
    train_set, _ = runtime.csv_image_datasets("rows/t.csv", "label", "file", _to_tensor(), None, mode="L")
    train_set[0]
    with pytest.raises(ValueError, match=r"rows/t.csv:3: .rows/img_1.png. is outside the folder this program runs in"):
        train_set[1]
    (project / "rows" / "img_0.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"rows/t.csv:2: rows/img_0.png: not an image Pillow can read"):
        train_set[0]


def _rows(folder: Path, count: int) -> None:
    """``rows/t.csv``: ``file,f,label``; image k is 2x2 of gray level k, its feature k."""
    (folder / "rows").mkdir(exist_ok=True)
    lines = ["file,f,label"]
    for k in range(count):
        Image.new("L", (2, 2), color=k).save(folder / "rows" / f"img_{k}.png")
        lines.append(f"img_{k}.png,{k},{k % 2}")
    (folder / "rows" / "t.csv").write_text("\n".join(lines) + "\n")


def _to_tensor():
    from torchvision import transforms

    return transforms.ToTensor()


SMALL = """name: rows
input: {image: [1, 2, 2], f: [1]}
model:
  graph:
    - a: [Flatten, {Linear: {out_features: 4}}]
      from: image
    - b: {Linear: {out_features: 4}}
      from: f
    - {add: [a, b]}
    - head: {Linear: {out_features: 2}}
data:
  dataset: {CSV: {path: rows/t.csv, target: label, image: file}}
  transforms: [ToTensor]
  batch_size: 4
loss: CrossEntropyLoss
optimizer: {SGD: {lr: 0.1}}
train: {epochs: 1}
"""


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "image: file}",
            "image: files}",
            "CSV `image:` names the column of image files; 'rows/t.csv' has no column 'files'",
        ),
        ("image: file}", "image: label}", "'label' is the target and the image column"),
        ("target: label, image: file}", "target: label, image: file, features: [f, file]}", "is the image column"),
        ("input: {image: [1, 2, 2], f: [1]}", "input: [1, 2, 2]", "gives two inputs a sample (the image, then the"),
        ("image: [1, 2, 2]", "image: [1, 3, 3]", "input 'image' takes the row's image (first input), which the"),
        ("f: [1]}", "f: [2]}", "input 'f' takes the row's features (second input), which the CSV gives (1,)"),
        ("  batch_size: 4\n", "  batch_size: 4\n  pairs: true\n", "`pairs:` pairs single samples"),
    ],
)
def test_located_errors(old, new, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _rows(tmp_path, 4)
    assert old in SMALL
    with pytest.raises(SpecError) as err:
        compiler.parse_spec(SMALL.replace(old, new), "rows.yaml")
    assert expected in str(err.value) and "Fix:" in str(err.value)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("/etc/passwd", "rows/t.csv:3: image '/etc/passwd' leaves the folder specc runs in"),
        ("../../x.png", "rows/t.csv:3: image '../../x.png' leaves the folder specc runs in"),
    ],
)
def test_image_paths_out_of_the_project_are_refused_when_validating(cell, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _rows(tmp_path, 3)
    table = tmp_path / "rows" / "t.csv"
    table.write_text(table.read_text().replace("img_1.png", cell))
    with pytest.raises(SpecError) as err:
        compiler.parse_spec(SMALL, "rows.yaml")
    assert "rows.yaml:12:" in str(err.value) and expected in str(err.value)


def test_a_first_image_that_is_not_an_image_is_located(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _rows(tmp_path, 3)
    (tmp_path / "rows" / "img_0.png").write_text("text")
    with pytest.raises(SpecError, match=r"rows/t.csv:2: 'img_0.png' is not an image Pillow can read"):
        compiler.parse_spec(SMALL, "rows.yaml")


def test_the_small_spec_trains_in_both_backends(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _rows(tmp_path, 8)
    checks = compare(compiler.parse_spec(SMALL, "rows.yaml"), steps=2)
    assert all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]


def test_lean_and_the_speed_options_refuse_two_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _rows(tmp_path, 4)
    with pytest.raises(SpecError, match="the lean script trains a model of one input and one output"):
        compiler.render_script(compiler.parse_spec(SMALL, "rows.yaml"), lean=True)
    with pytest.raises(SpecError, match="a model of several inputs trains in the tutorial's loop"):
        compiler.parse_spec(SMALL.replace("train: {epochs: 1}", "train: {epochs: 1, speed: auto}"), "rows.yaml")


def test_prediction_reads_each_rows_image_and_features(tmp_path, monkeypatch):
    """What ``specc predict`` and the script's ``--predict`` read of a CSV (``csv_inputs``): each row's image through
    the evaluation transforms and its features scaled as in training, a batch of each for the model's two inputs."""
    monkeypatch.chdir(tmp_path)
    _rows(tmp_path, 3)
    train_set, _ = runtime.csv_image_datasets("rows/t.csv", "label", "file", _to_tensor(), None, mode="L")
    info = runtime.data_info(train_set, (1, 2, 2), "classes")
    assert info["csv"] == {"columns": ["f"], "scaling": None, "image": "file"}
    names, batch = runtime.csv_inputs(["rows/t.csv"], info, _to_tensor())
    assert names == ["rows/t.csv:2", "rows/t.csv:3", "rows/t.csv:4"]
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), ((c, d), _) in zip(batch, train_set))

    class TwoInputs(torch.nn.Module):
        def forward(self, image, f):
            return torch.stack([image.flatten(1).sum(1), f[:, 0] + 0.5], dim=1)

    rows = runtime.label_outputs(TwoInputs(), list(zip(names, batch)), info, "cpu", top_k=1)
    assert [best[0][0] for _, best in rows] == ["1", "1", "1"]  # k + 0.5 beats the image's 4 * k / 255
    (tmp_path / "rows" / "p.csv").write_text("file,f\n../../../etc/passwd,1\n")
    with pytest.raises(ValueError, match=r"rows/p.csv:2: .* is outside the folder this program runs in"):
        runtime.csv_inputs(["rows/p.csv"], info, _to_tensor())
    (tmp_path / "rows" / "p.csv").write_text("file,f\nimg_0.png,1\nmissing.png,2\n")
    with pytest.raises(ValueError, match=r"rows/p.csv:3: .*missing.png"):
        runtime.csv_inputs(["rows/p.csv"], info, _to_tensor())


@pytest.mark.slow  # spawns the training script
def test_the_shipped_spec_trains_evaluates_and_predicts(tmp_path, monkeypatch, capfd):
    from compiler.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ["data/digit_rows/train.csv", "data/digit_rows/test.csv", SPEC]:  # copies: links out are refused
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    (tmp_path / "data/digit_rows/images").symlink_to(ROOT / "data/digit_rows/images")
    with pytest.raises(SpecError, match="leaves the folder specc runs in"):  # the images through a link out
        compiler.load_spec(SPEC)
    (tmp_path / "data/digit_rows/images").unlink()
    import shutil

    shutil.copytree(ROOT / "data/digit_rows/images", tmp_path / "data/digit_rows/images")
    assert main(["train", SPEC, "--epochs", "3"]) == 0
    assert "val accuracy" in capfd.readouterr().out
    assert main(["eval", SPEC]) == 0
    out = capfd.readouterr().out
    assert out.startswith("val loss ") and ", val accuracy " in out
    assert main(["predict", SPEC, "data/digit_rows/test.csv"]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 300 and lines[0].split(": ")[1] in ("0", "1")
