"""specs/resnet18_fpn.yaml is torchvision's ``resnet_fpn_backbone(backbone_name="resnet18", weights=None)``.

This file starts with the layer it needs: torchvision's ``FrozenBatchNorm2d`` (``torchvision.ops``), a BatchNorm2d
whose affine values and statistics are buffers, registered like ``LayerNorm2d``: ``num_features`` inferred from the
channels, shape and parameter rules, imported by the generated script (``from torchvision import ops``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import compiler
from compiler.facts.registry import REGISTRY
from compiler.workflow.check import import_script

_FROZEN = """name: frozen
input: [3, 10, 10]
model:
  - {Conv2d: {out_channels: 8, kernel_size: 3, bias: false}}
  - FrozenBatchNorm2d
  - ReLU
  - {FrozenBatchNorm2d: {eps: 0.001}}
"""


def _frozen_stats(module: FrozenBatchNorm2d, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name in ("weight", "bias", "running_mean"):
        getattr(module, name).copy_(torch.randn(module.weight.shape, generator=g))
    module.running_var.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)


def test_frozen_batch_norm_is_torchvisions_class_with_its_size_inferred(tmp_path):
    entry = REGISTRY.get("layer", "FrozenBatchNorm2d")
    assert entry.resolve() is FrozenBatchNorm2d and entry.infer == "num_features" and entry.norm
    spec = compiler.parse_spec(_FROZEN, "frozen.yaml")
    text = compiler.render_script(spec)
    assert "from torchvision import ops\n" in text
    assert "ops.FrozenBatchNorm2d(8),  # -> (8, 8, 8), num_features inferred" in text
    assert "ops.FrozenBatchNorm2d(num_features=8, eps=0.001)" in text
    script = import_script(text, "frozen_gen", str(tmp_path))
    reference = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), FrozenBatchNorm2d(8), nn.ReLU(), FrozenBatchNorm2d(8, 1e-3)
    )
    with torch.no_grad():
        _frozen_stats(reference[1], 1), _frozen_stats(reference[3], 2)
    x = torch.randn(2, 3, 10, 10)
    expected = reference(x)
    for model in (compiler.build_model(spec), script.build_model()):
        assert str(model) == str(reference)
        assert [type(m) for m in model] == [type(m) for m in reference]
        # buffers only: nothing to train, four (C,) tensors each and no num_batches_tracked
        assert [n for n, _ in model.named_parameters()] == ["0.weight"]
        assert list(model.state_dict()) == list(reference.state_dict())
        model.load_state_dict(reference.state_dict(), strict=True)
        with torch.no_grad():
            assert torch.equal(model(x), expected)
            assert torch.equal(model.train()(x), expected)  # frozen: training mode changes nothing
    lowered = compiler.lower_spec(spec).model
    assert lowered.params == 8 * 3 * 3 * 3 and lowered.output_shape == (8, 8, 8)


def test_frozen_batch_norm_loads_a_batch_norm_state_dict():
    """torchvision's point: a BatchNorm2d's trained values (and its num_batches_tracked, dropped) load into it."""
    spec = compiler.parse_spec("name: f\ninput: [4, 5, 5]\nmodel:\n  - FrozenBatchNorm2d\n", "f.yaml")
    model = compiler.build_model(spec).eval()
    trained = nn.BatchNorm2d(4)
    with torch.no_grad():
        trained(torch.randn(8, 4, 5, 5) * 3 + 1)  # moves the running statistics
        trained.weight.uniform_(0.5, 1.5), trained.bias.uniform_(-1, 1)
    model[0].load_state_dict(trained.state_dict(), strict=True)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        assert torch.allclose(model(x), trained.eval()(x), atol=1e-5)


@pytest.mark.parametrize(
    ("model", "where", "message"),
    [
        (
            "  - FrozenBatchNorm2d: {num_features: 4}\n",
            "f.yaml:4:5:",
            "FrozenBatchNorm2d was built for 4 input channels (num_features=4), but its input (8, 6, 6) has 8 channels",
        ),
        ("  - Flatten\n  - FrozenBatchNorm2d\n", "f.yaml:5:5:", "expects each sample to be (C, H, W), 3 dims"),
        ("  - {FrozenBatchNorm2d: {eps: small}}\n", "f.yaml:4:", "eps"),
        ("  - {FrozenBatchNorm2d: {momentum: 0.1}}\n", "f.yaml:4:", "momentum"),
    ],
)
def test_frozen_batch_norm_mistakes_are_located(model, where, message):
    with pytest.raises(compiler.SpecError) as err:
        compiler.parse_spec(f"name: f\ninput: [8, 6, 6]\nmodel:\n{model}", "f.yaml")
    assert where in str(err.value) and message in str(err.value) and "Fix:" in str(err.value)


def test_frozen_batch_norm_decompiles():
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), FrozenBatchNorm2d(8, eps=1e-3), nn.ReLU(), FrozenBatchNorm2d(8)
    )
    text = compiler.to_spec(module, input=(3, 12, 12))
    assert "- {FrozenBatchNorm2d: {eps: 0.001}}\n" in text and "  - FrozenBatchNorm2d\n" in text
    rebuilt = compiler.build_model(compiler.parse_spec(text, "decompiled.yaml"))
    assert str(rebuilt) == str(module)


def test_a_graph_step_may_be_named_body_as_torchvisions_backbone_with_fpn():
    """``BackboneWithFPN.body``: a graph step is never read as a repeat, so `body` may name one (its state-dict keys
    are ``body.*``); as a named block's child it still means a repeat's body."""
    text = "name: b\ninput: [3, 8, 8]\nmodel:\n  graph:\n    - body: {Conv2d: {out_channels: 4, kernel_size: 3}}\n"
    model = compiler.build_model(compiler.parse_spec(text, "b.yaml"))
    assert list(model.state_dict()) == ["body.weight", "body.bias"]
    with pytest.raises(compiler.SpecError, match="a repeat needs `repeat:`"):
        compiler.parse_spec("name: b\ninput: [3, 8, 8]\nmodel:\n  body: {Conv2d: {out_channels: 4}}\n", "b.yaml")
    with pytest.raises(compiler.SpecError, match="block name 'repeat' is reserved for repeats"):
        compiler.parse_spec(text.replace("- body:", "- repeat:"), "b.yaml")
