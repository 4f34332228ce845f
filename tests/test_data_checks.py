"""Wrong-but-valid data/loss/model combinations are refused at validation, all problems in one pass."""

from __future__ import annotations

import time

import pytest
from conftest import assert_fast

import compiler


def _problems(text: str) -> str:
    with pytest.raises(compiler.SpecError) as err:
        compiler.parse_spec(text, "s.yaml")
    return str(err.value)


TRAIN = "optimizer: {SGD: {lr: 0.1}}\ntrain: {epochs: 1}\n"


def test_image_folder_counts_its_class_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("cat", "dog", "fox"):
        (tmp_path / "imgs" / "train" / name).mkdir(parents=True)
    base = (
        "name: imf\ninput: [3, 8, 8]\nmodel: [Flatten, {Linear: {out_features: OUT}}]\n"
        "data: {dataset: {ImageFolder: {root: imgs/train}}, transforms: [{Resize: {size: [8, 8]}}, ToTensor]}\n"
        "loss: CrossEntropyLoss\n" + TRAIN
    )
    program = compiler.lower_spec(compiler.parse_spec(base.replace("OUT", "3")))
    assert program.training.data.num_classes == 3
    assert "the data has 3 classes" in _problems(base.replace("OUT", "2"))


def test_bce_on_class_labels_is_refused():
    text = (
        "name: bce\ninput: [4]\nmodel: [{Linear: {out_features: 1}}]\n"
        "data: {dataset: {CSV: {path: data/iris.csv, target: label}}}\nloss: BCEWithLogitsLoss\n" + TRAIN
    )
    assert "BCEWithLogitsLoss compares outputs with targets of the same shape, but CSV gives class labels 0..2" in (
        _problems(text)
    )


def test_csv_integer_targets_are_regression_values_under_mse():
    text = (
        "name: reg\ninput: [4]\nmodel: [{Linear: {out_features: 1}}]\n"
        "data: {dataset: {CSV: {path: data/iris.csv, target: label}}}\nloss: MSELoss\n" + TRAIN
    )
    spec = compiler.parse_spec(text)
    assert compiler.lower_spec(spec).training.data.targets == "values"
    _, y = next(iter(compiler.build_training(spec).train_loader))
    assert y.dtype.is_floating_point and y.shape[1:] == (1,)  # the output's shape: no broadcasting against (N,)
    assert 'targets="values"' in compiler.render_script(spec)


def test_embedding_fed_floats_is_refused():
    text = (
        "name: emb\ninput: [12]\nmodel: [{Embedding: [100, 8]}, Flatten, {Linear: {out_features: 2}}]\n"
        "data: {dataset: {Synthetic: {size: 8, inputs: [12], classes: 2}}}\nloss: CrossEntropyLoss\n" + TRAIN
    )
    assert "the model's first layer takes integer indices, but Synthetic gives float inputs" in _problems(text)


def test_forgotten_flatten_with_data_names_the_shape_and_the_warning():
    text = (
        "name: nf\ninput: [1, 16, 16]\nmodel: [{Conv2d: {out_channels: 16, kernel_size: 3, padding: 1}},"
        " {Linear: {out_features: 10}}]\n"
        "data: {dataset: {Synthetic: {size: 8, inputs: [1, 16, 16], classes: 10}}}\nloss: CrossEntropyLoss\n" + TRAIN
    )
    problems = _problems(text)
    assert "the model outputs (16, 16, 10) per sample, but CrossEntropyLoss over 10 classes needs (10,)" in problems
    assert "usually a forgotten Flatten" in problems


def test_every_section_reported_in_one_pass():
    text = """name: my-model
input: [4]
model:
  - Linear: {out_features: 3, bias: yes}
  - Dropout: 1.5
  - Linear: {out_features: 2}
data:
  dataset: {Synthetic: {size: 10, inputs: [4], classes: 2}}
  batch_size: 0
loss: CrossEntropyLoss
optimizer: {SGD: {lr: -0.1}}
train: {epochs: -1, metrics: [acc]}
"""
    problems = _problems(text)
    for fragment in (
        "name must be a Python identifier",
        "Linear.bias expects bool",
        "dropout probability",
        "batch_size must be at least 1",
        "SGD lr must not be negative",
        "epochs must be at least 1",
        "'accuracy'",
    ):
        assert fragment in problems, fragment


def test_overrides_are_validated_like_the_file():
    spec = compiler.load_spec("specs/mnist_cnn.yaml", overrides=["train.epochs=3", "optimizer.Adam.lr=3e-4"])
    assert spec.train.epochs == 3 and spec.optimizer.kwargs["lr"] == 3e-4
    with pytest.raises(compiler.SpecError, match="epochs must be at least 1, got 0"):
        compiler.load_spec("specs/mnist_cnn.yaml", overrides=["train.epochs=0"])
    with pytest.raises(compiler.SpecError, match="did you mean 'epochs'"):
        compiler.load_spec("specs/mnist_cnn.yaml", overrides=["train.epochz=2"])
    with pytest.raises(
        compiler.SpecError,
        match="an override is KEY=VALUE, the key's parts joined by dots Fix: e.g. --set train.epochs=3",
    ):
        compiler.load_spec("specs/mnist_cnn.yaml", overrides=["train"])


def test_cli_train_refuses_zero_epochs_and_model_only_specs(capsys):
    from compiler.cli.commands import main

    with pytest.raises(SystemExit) as usage:  # a bad number on the command line is a usage error (exit 64)
        main(["train", "specs/mnist_cnn.yaml", "--epochs", "0"])
    assert usage.value.code == 64
    assert main(["train", "specs/mnist_cnn.yaml", "--set", "train.epochs=0"]) == 1
    assert main(["train", "specs/mlp.yaml"]) == 1
    err = capsys.readouterr().err
    assert "0 is out of range: give 1 to 1,000,000" in err
    assert "epochs must be at least 1, got 0" in err and "nothing to train" in err and "Traceback" not in err


def _seconds(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _refused_lstm_bomb() -> None:
    with pytest.raises(compiler.SpecError, match="exceeds what validation checks in bounded time"):
        compiler.parse_spec("name: b\ninput: [4, 8]\nmodel:\n  - LSTM: {hidden_size: 1, num_layers: 100000}\n")


def test_repeated_layers_are_checked_once_and_bombs_stop_fast():
    body = "\n".join("  - {repeat: 10000, body: [{Linear: {out_features: 8}}]}" for _ in range(5))
    # 50,000 layers: about 1 s here, was about 20 s
    assert_fast(
        lambda: _seconds(lambda: compiler.parse_spec(f"name: deep\ninput: [8]\nmodel:\n{body}\n")), 10, "50,000 layers"
    )
    assert_fast(lambda: _seconds(_refused_lstm_bomb), 2, "LSTM of 100,000 layers")


def test_specc_check_on_untrusted_specs_downloads_nothing_and_stays_inside(tmp_path, capsys, monkeypatch):
    from compiler.cli.commands import main
    from compiler.workflow import check

    seen = []
    monkeypatch.setattr(check, "run_checks", lambda spec, steps: seen.append(spec) or 0)
    assert main(["check", "specs/mnist_cnn.yaml"]) == 0
    assert seen[0].data.dataset.kwargs["download"] is False  # the spec says true: check turns it off
    outside = tmp_path / "out.yaml"
    outside.write_text(
        "name: o\ninput: [1, 28, 28]\nmodel: [Flatten, {Linear: {out_features: 10}}]\n"
        "data: {dataset: {MNIST: {root: /tmp/elsewhere, download: true}}, transforms: [ToTensor]}\n"
        "loss: CrossEntropyLoss\noptimizer: {SGD: {lr: 0.1}}\ntrain: {epochs: 1}\n"
    )
    big = tmp_path / "big.yaml"
    big.write_text(
        "name: b\ninput: [40]\nmodel: [{Linear: {out_features: 10}}]\n"
        "data: {dataset: {Synthetic: {size: 10000000, inputs: [40], classes: 10}}}\n"
        "loss: CrossEntropyLoss\noptimizer: {SGD: {lr: 0.1}}\ntrain: {epochs: 1}\n"
    )
    assert main(["check", str(outside)]) == 1 and main(["check", str(big)]) == 1
    err = capsys.readouterr().err
    assert "resolves outside it" in err and "builds at most 67,108,864 input values" in err
    assert len(seen) == 1


def test_checkpoint_every_steps_without_dir_and_generate_into_a_folder(tmp_path, capsys):
    from compiler.cli.commands import main

    spec = compiler.load_spec("specs/mnist_cnn.yaml", overrides=["train.checkpoint={every_steps: 50}"])
    assert spec.train.checkpoint.every_steps == 50 and spec.train.checkpoint.dir is None
    assert 'RUNS = "runs/mnist_cnn"' in compiler.render_script(spec)
    assert main(["generate", "specs/mlp.yaml", "-o", f"{tmp_path}/"]) == 0
    assert (tmp_path / "mlp.py").exists()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "example:\n  specc train specs/mnist_cnn.yaml" in capsys.readouterr().out
