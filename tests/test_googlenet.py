"""specs/googlenet.yaml is torchvision's googlenet (Inception v1), module for module, auxiliary heads included.

Against ``torchvision.models.googlenet()`` (aux_logits=True, transform_input=False, torchvision's own initialisation):
the same state-dict keys in the same order, torchvision's weights load with strict=True into the compiled model and
into the generated script's ``build_model()``, and under the same seed both backends draw torchvision's initial
weights bitwise (every module is registered in torchvision's order: the aux heads are the top-level graph's steps
after inception5b, reading inception4a and inception4d). In eval mode the output is the logits, bitwise equal; in
train mode it is torchvision's tuple (logits, aux2, aux1), bitwise equal under one seed: the heads run only when
training (`when: training`), and their dropouts draw before the main one, as in torchvision's forward.
"""

from __future__ import annotations

import copy
import functools
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.models import GoogLeNet_Weights, googlenet

import compiler
from compiler.workflow.check import compare, import_script

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "googlenet.yaml"


def _googlenet(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # init_weights=None: torchvision's notice, same weights
        return googlenet(**kwargs)


@functools.cache
def _built(folder: Path) -> tuple:
    """torchvision's googlenet and both backends' models, each built under seed 0 (and the RNG after each)."""
    spec = compiler.load_spec(SPEC)
    script = import_script(compiler.render_script(spec), "googlenet_gen", str(folder))
    built = []
    for make in (_googlenet, lambda: compiler.build_model(spec), script.build_model):
        torch.manual_seed(0)
        built.append((make(), torch.get_rng_state()))
    return tuple(built)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return _built(tmp_path_factory.mktemp("googlenet"))


def _loaded(models) -> list:
    """Fresh copies of the three models, each holding torchvision's weights (strict)."""
    (reference, _), *backends = models
    state = reference.state_dict()
    copies = [copy.deepcopy(reference)]
    for model, _ in backends:
        model = copy.deepcopy(model)
        model.load_state_dict(state, strict=True)
        copies.append(model)
    return copies


def test_googlenet_has_torchvisions_keys_and_computes_the_same_in_eval_mode(models):
    (reference, _), *backends = models
    keys = list(reference.state_dict())
    assert keys[:2] == ["conv1.conv.weight", "conv1.bn.weight"]
    assert "inception3a.branch1.conv.weight" in keys and "inception5b.branch4.1.bn.running_var" in keys
    assert keys[-20:-18] == ["aux1.conv.bn.bias", "aux1.conv.bn.running_mean"] and keys[-2:] == ["fc.weight", "fc.bias"]
    for model, _ in backends:
        assert list(model.state_dict()) == keys
        children = [name for name, _ in model.named_children() if name != "flatten"]  # torch.flatten's module
        assert children == [name for name, _ in reference.named_children()]
    torch.manual_seed(1)
    x = torch.randn(2, 3, 80, 80)  # 80x80: 5x5 at the aux heads (pooled to 4x4), 3x3 after maxpool4
    reference, compiled, generated = (model.eval() for model in _loaded(models))
    with torch.no_grad():
        expected = reference(x)
        assert isinstance(expected, torch.Tensor) and expected.shape == (2, 1000)  # eval: the logits only
        for model in (compiled, generated):
            out = model(x)
            assert isinstance(out, torch.Tensor) and torch.equal(out, expected)


def test_googlenet_returns_torchvisions_tuple_in_train_mode(models):
    torch.manual_seed(2)
    x = torch.randn(3, 3, 80, 80)
    outputs = []
    for model in _loaded(models):
        torch.manual_seed(3)  # the same dropout masks: aux1's, aux2's, then the main one
        with torch.no_grad():
            outputs.append((model.train()(x), model.state_dict()))
    (expected, state), *rest = outputs
    assert type(expected).__name__ == "GoogLeNetOutputs" and len(expected) == 3
    assert all(t.shape == (3, 1000) for t in expected)
    for out, after in rest:
        assert isinstance(out, tuple) and len(out) == 3  # (logits, aux_logits2, aux_logits1)
        assert all(torch.equal(a, b) for a, b in zip(out, expected, strict=True))
        assert all(torch.equal(after[k], v) for k, v in state.items())  # the same batch-norm statistics


def test_googlenet_draws_torchvisions_initial_weights_under_the_same_seed(models):
    (reference, rng), *backends = models
    expected = reference.state_dict()
    for model, after in backends:
        assert torch.equal(after, rng)  # the same random numbers drawn in all
        state = model.state_dict()
        for key, tensor in expected.items():
            assert torch.equal(state[key], tensor), key
    fc1 = expected["aux1.fc1.weight"]
    assert fc1.abs().max() <= 2 and 0.009 < fc1.std() < 0.011  # trunc_normal_(std=0.01, a=-2, b=2)


def test_googlenet_without_building_it(models):
    (reference, _), *_ = models
    model = compiler.lower_spec(compiler.load_spec(SPEC)).model
    assert model.inputs == {"x": (3, 224, 224)}
    assert model.outputs == {"fc": (1000,), "aux2": (1000,), "aux1": (1000,)}  # in training; eval: fc
    assert model.params == 13_004_888 == sum(p.numel() for p in reference.parameters())
    heads = sum(p.numel() for name, p in reference.named_parameters() if name.startswith("aux"))
    assert model.params - heads == GoogLeNet_Weights.IMAGENET1K_V1.meta["num_params"]  # without the aux heads


def test_generated_googlenet_reads_like_torchvision():
    text = compiler.render_script(compiler.load_spec(SPEC))
    for name in (
        "BasicConv2d(nn.Sequential)",
        "Inception(nn.Module)",
        "InceptionAux(nn.Module)",
        "GoogLeNet(nn.Module)",
    ):
        assert text.count(f"class {name}:") == 1
    assert "class Inception_" not in text and "class BasicConv2d_" not in text  # one class for every use
    assert "def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):" in text
    assert "return torch.cat([branch1, branch2, branch3, branch4], dim=1)" in text
    assert "inception4e=Inception(528, 256, 160, 320, 32, 128, 128)," in text
    assert "if self.training:" in text
    assert "nn.init.trunc_normal_(module.weight, mean=0.0, std=0.01, a=-2, b=2)" in text
    assert (ROOT / "generated" / "googlenet.py").read_text(encoding="utf-8") == text  # shipped, up to date


def test_both_backends_agree_at_every_level_on_a_small_input():
    spec = compiler.load_spec(SPEC, overrides=["input=[3, 32, 32]", "vars.num_classes=10"])
    checks = compare(spec, steps=2)
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
