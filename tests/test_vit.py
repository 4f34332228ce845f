"""specs/vit.yaml is torchvision's VisionTransformer, module for module (issue 21's proof of graph nodes, §15).

A small configuration (`--set` overrides) against ``torchvision.models.VisionTransformer`` with the same
arguments: the same state-dict keys in the same order, torchvision's weights load with strict=True, and the
eval outputs are bitwise equal in both backends. torchvision re-initialises its weights in its own order,
so the initial weights are compared between the two backends only (same seed, bitwise).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torchvision.models import VisionTransformer

import compiler
from compiler.workflow.check import import_script

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"image_size": 32, "patch_size": 16, "num_layers": 2, "num_heads": 2, "hidden_dim": 8, "mlp_dim": 16}
OTHER = {"image_size": 48, "patch_size": 8, "num_layers": 3, "num_heads": 4, "hidden_dim": 16, "mlp_dim": 24}


@functools.cache
def _spec(config: tuple):
    overrides = [f"vars.{k}={v}" for k, v in config] + ["vars.num_classes=10"]
    return compiler.load_spec(ROOT / "specs" / "vit.yaml", overrides=overrides)


def _generated(spec, folder: Path, name: str):
    return import_script(compiler.render_script(spec), name, str(folder))


@pytest.mark.parametrize("config", [SMALL, OTHER], ids=["small", "other"])
def test_vit_is_torchvisions_in_both_backends(config, tmp_path):
    spec = _spec(tuple(config.items()))
    torch.manual_seed(0)
    reference = VisionTransformer(**config, num_classes=10).eval()
    compiled = compiler.build_model(spec).eval()
    generated = _generated(spec, tmp_path, "vit_small").build_model().eval()
    keys = list(reference.state_dict())
    assert keys[:3] == ["class_token", "conv_proj.weight", "conv_proj.bias"]
    assert "encoder.layers.encoder_layer_1.self_attention.in_proj_weight" in keys
    assert "encoder.layers.encoder_layer_0.mlp.3.weight" in keys and "heads.head.bias" in keys
    for model in (compiled, generated):
        assert list(model.state_dict()) == keys
        model.load_state_dict(reference.state_dict(), strict=True)
    torch.manual_seed(1)
    x = torch.randn(3, 3, config["image_size"], config["image_size"])
    with torch.no_grad():
        expected = reference(x)
        assert torch.equal(compiled(x), expected)
        assert torch.equal(generated(x), expected)


def test_vit_backends_draw_the_same_initial_weights(tmp_path):
    spec = _spec(tuple(SMALL.items()))
    torch.manual_seed(0)
    compiled = compiler.build_model(spec)
    after_compiled = torch.get_rng_state()
    torch.manual_seed(0)
    generated = _generated(spec, tmp_path, "vit_init").build_model()
    assert torch.equal(after_compiled, torch.get_rng_state())
    assert str(compiled) == str(generated)
    for (key, a), (_, b) in zip(compiled.state_dict().items(), generated.state_dict().items(), strict=True):
        assert torch.equal(a, b), key
    assert torch.count_nonzero(compiled.class_token) == 0  # zeros, as torchvision's
    assert compiled.encoder.pos_embedding.std() > 0  # normal_(std=0.02)


def test_vit_b_16_by_default_without_building_it():
    program = compiler.lower_spec(compiler.load_spec(ROOT / "specs" / "vit.yaml"))
    model = program.model
    assert model.input_shape == (3, 224, 224) and model.output_shape == (1000,)
    assert model.params == 86_567_656  # torchvision's vit_b_16
    encoder = next(g for g in model.graphs() if g.name == "encoder")
    assert encoder.tensors[0].shape == (1, 197, 768)
    assert sum(1 for g in model.graphs() if g.class_name == "EncoderBlock") == 12


def test_generated_vit_reads_like_torchvision():
    text = compiler.render_script(_spec(tuple(SMALL.items())))
    assert "class VisionTransformer(nn.Module):" in text and "class EncoderBlock(nn.Module):" in text
    assert "self.class_token = nn.Parameter(torch.zeros(1, 1, 8))" in text
    assert "nn.init.normal_(self.pos_embedding, std=0.02)" in text
    assert "attention, _ = self.self_attention(ln_1, ln_1, ln_1, need_weights=False)" in text
    assert "batch_class_token = self.class_token.expand(x.shape[0], -1, -1)" in text
    assert "torch.cat([batch_class_token, permute], dim=1)" in text
    assert text.count("class EncoderBlock(") == 1  # one class for every layer, written from its parameters
    assert '("encoder_layer_1", EncoderBlock(5, 2, 16)),' in text


def test_both_backends_trace_with_torch_fx(tmp_path):
    """Graph nodes are plain Python on tensors: torch.fx traces them (as torchvision's model traces)."""
    from torch import fx

    spec = _spec(tuple(SMALL.items()))
    x = torch.randn(2, 3, 32, 32)
    for model in (compiler.build_model(spec), _generated(spec, tmp_path, "vit_fx").build_model()):
        traced = fx.symbolic_trace(model.eval())
        with torch.no_grad():
            assert torch.equal(traced(x), model(x))
