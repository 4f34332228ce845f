"""The Text dataset: token ids from a CSV file or a folder of text files per class, a vocabulary built on the
training split only and saved in the checkpoint, the same batches and losses in both backends (spec-language §8),
prediction on text files and CSV rows, and the shipped LSTM and Transformer specs learning the shipped headlines."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import ROOT

import compiler
from compiler.errors import SpecError
from compiler.runtime import helpers as runtime
from compiler.workflow.check import compare, import_script

WORD = {"tokenize": "word", "lowercase": True, "max_length": 5, "padding": "end", "column": "text"}

ROWS = [
    ("the rain falls on the hills", "weather"),
    ("a cold wind and rain tonight", "weather"),
    ("snow and frost in the north", "weather"),
    ("the striker scores twice", "sports"),
    ("the keeper saves a penalty", "sports"),
    ("fans cheer the late goal", "sports"),
] * 6

SPEC = """\
name: tiny_text
input: [8]
model:
  - Embedding: {num_embeddings: 40, embedding_dim: 6, padding_idx: 0}
  - LSTM: {hidden_size: 5, batch_first: true}
  - TupleItem: {index: 0}
  - Select: {dim: 1, index: -1}
  - Linear: {out_features: 2}
data:
  dataset: {Text: {path: PATH, padding: start}}
  batch_size: 4
  val_split: 0.25
loss: CrossEntropyLoss
optimizer: {Adam: {lr: 0.05}}
train: {epochs: 8, metrics: [accuracy], log_every: 100}
"""


def _write_csv(path: Path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with news.csv (6 distinct rows, 36 in all) and a spec reading it, as the current folder."""
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "news.csv", ROWS)
    (tmp_path / "tiny_text.yaml").write_text(SPEC.replace("PATH", "news.csv"))
    return tmp_path


def test_tokens_vocabulary_ids_and_padding():
    tokens = [runtime.text_tokens(t, WORD) for t in ["The cat sat.", "the dog sat", "A cat!"]]
    assert tokens[0] == ["the", "cat", "sat", "."]
    vocab = runtime.build_vocab(tokens)
    assert vocab == ["<pad>", "<unk>", "cat", "sat", "the", "!", ".", "a", "dog"]  # by count, then code point
    assert runtime.build_vocab(tokens, min_freq=2) == ["<pad>", "<unk>", "cat", "sat", "the"]
    assert runtime.build_vocab(tokens, max_vocab=4) == ["<pad>", "<unk>", "cat", "sat"]
    info = {**WORD, "vocab": vocab}
    ids = runtime.encode_texts(["the cat sat on the mat", "cat"], info)  # cut to 5; padded with 0
    assert ids.dtype == torch.int64 and ids.tolist() == [[4, 2, 3, 1, 4], [2, 0, 0, 0, 0]]
    assert runtime.encode_texts(["cat"], {**info, "padding": "start"}).tolist() == [[0, 0, 0, 0, 2]]
    chars = {**WORD, "tokenize": "char", "lowercase": False}
    assert runtime.text_tokens("Ab c", chars) == ["A", "b", " ", "c"]


def test_the_vocabulary_comes_from_the_training_split_only(project):
    _write_csv(project / "test.csv", [("zebra crossing in the rain", "weather"), ("the striker scores", "sports")])
    train_set, val_set = runtime.text_datasets("news.csv", test_path="test.csv", max_length=6)
    assert "zebra" not in train_set.text["vocab"] and "rain" in train_set.text["vocab"]
    assert val_set.tensors[0][0].tolist()[0] == 1  # zebra: <unk>
    assert train_set.classes == ["sports", "weather"] and val_set.tensors[1].tolist() == [1, 0]
    train_set, _ = runtime.text_datasets("news.csv", max_length=6, val_split=0.25, seed=3)
    train_idx, _ = runtime.split_indices(len(ROWS), 0.25, 3)
    expected = runtime.build_vocab([runtime.text_tokens(ROWS[i][0], WORD) for i in train_idx])
    assert train_set.text["vocab"] == expected and len(train_set) == len(train_idx)


def test_a_folder_of_text_files_per_class(project):
    for name, label in (("a", "pos"), ("b", "pos"), ("c", "neg")):
        (project / "texts" / label).mkdir(parents=True, exist_ok=True)
        (project / "texts" / label / f"{name}.txt").write_text(f"{label} words here {name}")
    (project / "texts" / "pos" / "notes.md").write_text("not a .txt file: left out")
    train_set, val_set = runtime.text_datasets("texts", max_length=4)
    assert val_set is None and train_set.classes == ["neg", "pos"]
    assert train_set.tensors[1].tolist() == [0, 1, 1] and len(train_set) == 3
    spec = compiler.load_spec(
        project / "tiny_text.yaml", overrides=["data.dataset.Text.path=texts", "data.val_split=0"]
    )
    assert compiler.lower_spec(spec).training.data.num_classes == 2


def test_compiled_and_generated_agree_at_every_level(project):
    """spec-language §8 in full on a text spec: trees, weights, outputs, loss and optimizer, the first batches
    (token ids), two training steps with identical losses and bitwise weights."""
    checks = compare(compiler.load_spec(project / "tiny_text.yaml"), steps=2)
    assert all(c.ok for c in checks), [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert len(checks) == 6 and "inputs (4, 8)" in checks[4].detail


def test_vocabulary_is_saved_and_restored_by_eval_predict_and_resume(project, capsys):
    spec = compiler.load_spec(project / "tiny_text.yaml")
    script = import_script(compiler.render_script(spec), "tiny_text", str(project))
    assert script.main(["--device", "cpu", "--out", "run", "--epochs", "6"]) == 0
    state = torch.load(project / "run" / "checkpoint.pt", weights_only=True)
    built = compiler.build_training(spec, "cpu")
    assert state["data"]["text"] == built.train_loader.dataset.text  # the vocabulary and the tokenizer
    assert state["data"]["classes"] == ["sports", "weather"] and state["data"]["input"] == (8,)
    assert script.main(["--device", "cpu", "--resume", "run"]) == 0  # resumes to 8 epochs: the same vocabulary
    history = json.loads((project / "run" / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history if "val_loss" in r] == list(range(1, 9))
    (project / "rain.txt").write_text("A cold wind and rain tonight")
    _write_csv(project / "new.csv", [("the keeper saves a penalty", "?"), ("snow and frost in the north", "?")])
    (project / "inbox").mkdir()
    (project / "inbox" / "goal.txt").write_text("fans cheer the late goal")
    predicted = compiler.predict(spec, "run", ["rain.txt", "new.csv", "inbox"])
    assert predicted == [
        ("rain.txt", "weather"),
        ("new.csv:2", "sports"),
        ("new.csv:3", "weather"),
        (str(Path("inbox") / "goal.txt"), "sports"),
    ]
    capsys.readouterr()
    assert script.main(["--device", "cpu", "--resume", "run", "--predict", "rain.txt", "new.csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["rain.txt: weather", "new.csv:2: sports", "new.csv:3: weather"]
    result = compiler.evaluate(spec, "run")
    assert result["accuracy"] == 1.0 and result["loss"] < 0.7


def test_predict_refuses_bad_inputs_in_one_line(project):
    spec = compiler.load_spec(project / "tiny_text.yaml")
    script = import_script(compiler.render_script(spec), "tiny_text", str(project))
    assert script.main(["--device", "cpu", "--out", "run", "--max-steps", "1"]) == 0
    (project / "bad.csv").write_text("headline\nsome words\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: no column 'text' in the header"):
        compiler.predict(spec, "run", ["bad.csv"])
    (project / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(ValueError, match=r"latin1.txt: not UTF-8 text"):
        compiler.predict(spec, "run", ["latin1.txt"])


def test_a_label_outside_the_training_classes_is_refused(project):
    _write_csv(project / "test.csv", [("wind", "politics")])
    with pytest.raises(ValueError, match="label 'politics' is not one of the training classes"):
        runtime.text_datasets("news.csv", test_path="test.csv", max_length=4)
    for split, label in (("train", "pos"), ("train", "neg"), ("test", "pos"), ("test", "other")):
        (project / split / label).mkdir(parents=True)
        (project / split / label / "a.txt").write_text(f"{label} text")
    with pytest.raises(ValueError, match="test: class folder 'other' is not a training class"):
        runtime.text_datasets("train", test_path="test", max_length=4)


def test_labels_order_names_and_numbers():
    assert sorted(["10", "b", "2", "a"], key=runtime.class_order) == ["2", "10", "a", "b"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_fifos_and_large_files_are_refused_unopened(project):
    os.mkfifo(project / "pipe.csv")
    with pytest.raises(SpecError, match=r"CSV file 'pipe.csv' is a FIFO \(named pipe\), not a regular file"):
        compiler.load_spec(project / "tiny_text.yaml", overrides=["data.dataset.Text.path=pipe.csv"])
    with pytest.raises(ValueError, match=r"pipe.csv: not a text file \(a directory, FIFO or device\)"):
        runtime.text_datasets("pipe.csv", max_length=4)
    info = {"text": {**WORD, "vocab": ["<pad>", "<unk>"]}}
    with pytest.raises(ValueError, match="pipe.csv: not a text file"):
        runtime.text_inputs(["pipe.csv"], info)
    (project / "big.txt").write_bytes(b"a" * ((1 << 20) + 1))
    with pytest.raises(ValueError, match=r"big.txt: larger than 1,048,576 bytes"):
        runtime.text_inputs(["big.txt"], info)


def test_max_vocab_follows_the_embedding_and_max_length_the_input(project):
    data = compiler.lower_spec(compiler.load_spec(project / "tiny_text.yaml")).training.data
    assert data.text["max_vocab"] == 40 and data.text["max_length"] == 8
    text = compiler.render_script(compiler.load_spec(project / "tiny_text.yaml"))
    assert 'text_datasets(path="news.csv", padding="start", max_length=8, max_vocab=40' in text
    with pytest.raises(SpecError, match=r"max_vocab 50 gives token ids up to 49, but the model's Embedding"):
        compiler.load_spec(project / "tiny_text.yaml", overrides=["data.dataset.Text.max_vocab=50"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm_classifier", "transformer_classifier"])
def test_shipped_text_specs_learn_the_headlines(name, tmp_path, monkeypatch):
    """The accuracy the specs' headers state: at least 90% of the 500 held-out headlines after their 5 epochs."""
    monkeypatch.chdir(ROOT)
    spec = compiler.load_spec(ROOT / "specs" / f"{name}.yaml")
    script = import_script(compiler.render_script(spec), f"text_{name}", str(tmp_path))
    assert script.main(["--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    accuracy = [r["val_accuracy"] for r in history if "val_accuracy" in r]
    assert len(accuracy) == spec.train.epochs and accuracy[-1] >= 0.90, accuracy
