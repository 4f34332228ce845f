"""Graph-shaped specs (merge blocks, functional layers, `init:` rules), against torchvision and across backends.

The six torchvision specs reproduce torchvision module for module: torchvision's state dict loads
with strict=True and the outputs are bitwise equal (eval mode, and train mode under one seed); under
the same seed the spec's `init:` rules draw torchvision's initial weights bit for bit. The generated
script's build_model() must do the same. The other specs are checked for their output shapes on two
input sizes, compiled against generated, and (resnet_mnist) for the accuracy their header promises.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models
from torchvision.ops import StochasticDepth

import compiler
from compiler.workflow.check import compare

ROOT = Path(__file__).resolve().parent.parent
TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "squeezenet1_0", "densenet121", "efficientnet_b0"]


@functools.cache
def _spec(name: str):
    return compiler.load_spec(ROOT / "specs" / f"{name}.yaml")


def _import_script(name: str, folder) -> object:
    """The spec's rendered script, written to ``folder`` and imported as a module."""
    path = folder / f"{name}.py"
    path.write_text(compiler.render_script(_spec(name)), encoding="utf-8")
    module_spec = importlib.util.spec_from_file_location(f"graph_models_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@functools.cache
def _torchvision_init(name: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """torchvision's initial weights under seed 0, and the RNG state its construction left behind."""
    torch.manual_seed(0)
    state = getattr(models, name)(weights=None).state_dict()
    return state, torch.get_rng_state()


@functools.cache
def _reference(name: str):
    """torchvision's model with BatchNorm made to matter, an input, and its outputs in eval and train mode."""
    torch.manual_seed(0)
    reference = getattr(models, name)(weights=None)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    x = torch.randn(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        eval_out = reference.eval()(x.clone())
        torch.manual_seed(2)
        train_out = reference.train()(x.clone())  # dropout and stochastic depth draw here
    return state, x, eval_out, train_out


def _assert_reproduces_torchvision(model: nn.Module, name: str) -> None:
    state, x, eval_out, train_out = _reference(name)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = model.eval()(x.clone())
        assert out.shape == (2, 1000)
        assert torch.equal(out, eval_out)
        torch.manual_seed(2)
        assert torch.equal(model.train()(x.clone()), train_out)


def _assert_states_equal(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs)
    differ = [k for k in theirs if not torch.equal(ours[k], theirs[k])]
    assert not differ, f"{len(differ)} of {len(theirs)} tensors differ, first: {differ[:5]}"


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_state_dict_loads_strict_and_outputs_are_equal(name):
    _assert_reproduces_torchvision(compiler.build_model(_spec(name)), name)


@pytest.mark.parametrize("name", TORCHVISION)
def test_same_seed_gives_torchvision_initial_weights(name):
    theirs, rng_after = _torchvision_init(name)
    torch.manual_seed(0)
    ours = compiler.build_model(_spec(name)).state_dict()
    _assert_states_equal(ours, theirs)
    assert torch.equal(torch.get_rng_state(), rng_after), "the same random numbers, and no more, are drawn"


@pytest.mark.parametrize("name", TORCHVISION)
def test_generated_script_builds_torchvision_model(name, tmp_path):
    script = _import_script(name, tmp_path)
    theirs, rng_after = _torchvision_init(name)
    torch.manual_seed(0)
    model = script.build_model()
    _assert_states_equal(model.state_dict(), theirs)
    assert torch.equal(torch.get_rng_state(), rng_after)
    _assert_reproduces_torchvision(model, name)


def test_efficientnet_stochastic_depth_probabilities_are_torchvisions():
    """Each block with a shortcut drops with p = 0.2 * i / 16 exactly; blocks without one never call the module."""
    model = compiler.build_model(_spec("efficientnet_b0"))
    reference = models.efficientnet_b0(weights=None)
    seen = 0
    for path, theirs in reference.named_modules():
        if isinstance(theirs, StochasticDepth):
            ours = model.get_submodule(path)
            block = reference.get_submodule(path.rsplit(".", 1)[0])
            assert isinstance(ours, StochasticDepth) and ours.mode == theirs.mode == "row"
            assert ours.p == (theirs.p if block.use_res_connect else 0.0), path
            seen += block.use_res_connect
    assert seen == 9


# name: [(one sample's input shape, one sample's output shape), ...], two sizes each
SHAPES = {
    "unet_small": [((1, 64, 64), (2, 64, 64)), ((1, 32, 48), (2, 32, 48))],
    "lstm_classifier": [((20,), (4,)), ((7,), (4,))],  # token ids (an Embedding first)
    "transformer_classifier": [((16,), (4,)), ((5,), (4,))],
    "resnet_mnist": [((1, 28, 28), (10,)), ((1, 36, 36), (10,))],
}


@pytest.mark.parametrize("name", SHAPES)
def test_compiled_and_generated_agree_on_two_input_sizes(name, tmp_path):
    script = _import_script(name, tmp_path)
    torch.manual_seed(0)
    compiled = compiler.build_model(_spec(name))
    torch.manual_seed(0)
    generated = script.build_model()
    assert str(compiled) == str(generated)
    _assert_states_equal(compiled.state_dict(), generated.state_dict())
    for shape, out_shape in SHAPES[name]:
        x = torch.randint(0, 100, (3, *shape)) if len(shape) == 1 else torch.randn(3, *shape)
        with torch.no_grad():
            out = compiled.eval()(x)
            assert out.shape == (3, *out_shape)
            assert torch.equal(out, generated.eval()(x))
        torch.manual_seed(1)
        out = compiled.train()(x)
        torch.manual_seed(1)
        assert torch.equal(out, generated.train()(x))


@pytest.mark.parametrize("name", ["lstm_classifier", "transformer_classifier", "resnet_mnist"])
def test_training_specs_pass_specc_check(name):
    """spec-language.md §8 in full: trees, weights, outputs, optimizer, data, two training steps."""
    failed = [f"{c.name}: {c.detail}" for c in compare(_spec(name), steps=2) if not c.ok]
    assert not failed


def test_unet_levels_nest_cat_merges():
    model = compiler.build_model(_spec("unet_small"))
    # two block shapes, so two classes: UNetLevel and UNetLevel_1 (spec-language.md §11)
    assert {type(model.level1).__name__, type(model.level1.level2).__name__} == {"UNetLevel", "UNetLevel_1"}
    assert model.dec1[0].in_channels == 2 * 16  # cat(skip, up): channels add up
    assert model.level1.dec2[0].in_channels == 2 * 32


@pytest.mark.slow
def test_resnet_mnist_reaches_95_percent_in_two_epochs(tmp_path):
    """The header's promise: two epochs on the shipped 4,000 digits, >= 95% on the 1,000 held out."""
    script = _import_script("resnet_mnist", tmp_path)
    script.main(["--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "run")])
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    accuracy = [r["val_accuracy"] for r in history if "val_accuracy" in r][-1]
    assert accuracy >= 0.95, accuracy
