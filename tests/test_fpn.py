"""specs/resnet18_fpn.yaml is torchvision's ``resnet_fpn_backbone(backbone_name="resnet18", weights=None)``.

Against torchvision's model: the same state-dict keys in the same order, its weights load with strict=True into the
compiled model and into the generated script's ``build_model()``, and the eval outputs on a 64x64 input -- an ordered
mapping of five feature maps, "0" .. "3" and "pool" -- are bitwise equal. The spec's ``init:`` rules are torchvision's
two initialisation loops, each a graph node's own `init:` (run once that node is built), and the body builds
resnet18's avgpool and fc with `keep: false` (built, then dropped): under one seed both backends give torchvision's
initial weights bitwise.

The layer it needs comes first: torchvision's ``FrozenBatchNorm2d`` (``torchvision.ops``), a BatchNorm2d whose affine
values and statistics are buffers, registered like ``LayerNorm2d``: ``num_features`` inferred from the channels, shape
and parameter rules, imported by the generated script (``from torchvision import ops``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

import compiler
from compiler.facts.registry import REGISTRY
from compiler.runtime import helpers as runtime
from compiler.workflow.check import import_script

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "resnet18_fpn.yaml"
KEYS = ["0", "1", "2", "3", "pool"]

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


# --------------------------------------------------------------------------- the backbone


@functools.cache
def _built(folder: Path) -> tuple:
    """torchvision's backbone and both backends' models, each built under seed 0, with their initial states."""
    spec = compiler.load_spec(SPEC)
    script = import_script(compiler.render_script(spec), "resnet18_fpn_gen", str(folder))
    built = []
    for make in (
        lambda: resnet_fpn_backbone(backbone_name="resnet18", weights=None),
        lambda: compiler.build_model(spec),
        script.build_model,
    ):
        torch.manual_seed(0)
        model = make()
        built.append((model, {k: v.clone() for k, v in model.state_dict().items()}))
    return tuple(built)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return _built(tmp_path_factory.mktemp("fpn"))


def test_resnet18_fpn_loads_torchvisions_weights_and_computes_the_same(built):
    reference, *backends = (model for model, _ in built)
    keys = list(reference.state_dict())
    assert keys[:5] == [
        "body.conv1.weight",
        "body.bn1.weight",
        "body.bn1.bias",
        "body.bn1.running_mean",
        "body.bn1.running_var",
    ]
    assert keys[-4:] == [
        "fpn.layer_blocks.2.0.weight",
        "fpn.layer_blocks.2.0.bias",
        "fpn.layer_blocks.3.0.weight",
        "fpn.layer_blocks.3.0.bias",
    ]
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference.eval()(x)
    assert list(expected) == KEYS
    assert [tuple(v.shape) for v in expected.values()] == [(2, 256, s, s) for s in (16, 8, 4, 2, 1)]
    for model in backends:
        assert list(model.state_dict()) == keys
        model.load_state_dict(reference.state_dict(), strict=True)
        with torch.no_grad():
            got = model.eval()(x)
        assert list(got) == KEYS
        for key in KEYS:
            assert torch.equal(got[key], expected[key]), key


def test_the_body_returns_the_stages_torchvisions_intermediate_layer_getter_returns(built):
    (reference, _), (compiled, _), _ = built
    compiled.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stages = compiled.body.eval()(x)
        expected = reference.body.eval()(x)
    assert isinstance(stages, tuple) and list(expected) == ["0", "1", "2", "3"]
    assert all(torch.equal(a, b) for a, b in zip(stages, expected.values(), strict=True))


def test_same_seed_gives_torchvisions_initial_weights_in_both_backends(built):
    """§8's third level against torchvision: its resnet18 is built whole (the fc it then drops draws 513,000 numbers),
    ResNet's loop runs, and only then is the FPN built and its loop run. The spec says so with the body's
    `keep: false` steps and each graph node's own `init:`, which runs once that node is built."""
    theirs = built[0][1]
    for _, state in built[1:]:
        assert list(state) == list(theirs)
        different = [k for k, v in theirs.items() if not torch.equal(state[k], v)]
        assert different == []
    assert not any(k.startswith(("body.fc", "body.avgpool")) for k in theirs)


def test_without_staged_init_the_same_seed_gives_other_weights():
    """What the staging is for: the same rules run once on the whole model (the spec's top-level `init:`) draw the
    body's weights after the FPN is built, not before, as torchvision does."""
    theirs = _built_reference_state()
    torch.manual_seed(0)
    flat = compiler.load_spec(
        SPEC,
        overrides=[
            "model.graph.0.body.init=[]",
            "model.graph.1.fpn.init=[]",
            (
                'init=[{path: "fpn.*_blocks.*.0", weight: {kaiming_uniform_: {a: 1}}, bias: zeros_}, '
                "{type: Conv2d, weight: {kaiming_normal_: {mode: fan_out, nonlinearity: relu}}}]"
            ),
        ],
    )
    state = compiler.build_model(flat).state_dict()
    assert not torch.equal(state["body.conv1.weight"], theirs["body.conv1.weight"])


@functools.cache
def _built_reference_state() -> dict:
    torch.manual_seed(0)
    return resnet_fpn_backbone(backbone_name="resnet18", weights=None).state_dict()


def test_torchvisions_frozen_layers_are_the_freeze_patterns(built):
    """trainable_layers=3 freezes conv1 and layer1 (FrozenBatchNorm2d has no parameters): a training spec's
    `train: {freeze: [body.conv1, "body.layer1.*"]}` freezes exactly those."""
    (reference, _), _, (generated, _) = built
    frozen = [n for n, p in reference.named_parameters() if not p.requires_grad]
    assert frozen == ["body.conv1.weight"] + [f"body.layer1.{b}.conv{c}.weight" for b in (0, 1) for c in (1, 2)]
    runtime.freeze(generated, ["body.conv1", "body.layer1.*"])
    assert [n for n, p in generated.named_parameters() if not p.requires_grad] == frozen
    for p in generated.parameters():
        p.requires_grad_(True)


def test_generated_resnet18_fpn_reads_like_torchvision():
    text = compiler.render_script(compiler.load_spec(SPEC))
    assert "from torchvision import ops\n" in text and "ops.FrozenBatchNorm2d(width)" in text
    assert "class FeaturePyramidNetwork(nn.Module):" in text and "class IntermediateLayerGetter(nn.Module):" in text
    assert "    def forward(self, c2, c3, c4, c5):" in text
    assert "inner5 = self.inner_blocks[3](c5)" in text and "p2 = self.layer_blocks[0](inner2)" in text
    assert 'top_down4 = nn.functional.interpolate(inner5, size=lateral4.shape[2:], mode="nearest")' in text
    assert "return layer1, layer2, layer3, layer4" in text
    assert 'return {"0": p2, "1": p3, "2": p4, "3": p5, "pool": pool}' in text
    assert "c2, c3, c4, c5 = self.body(x)" in text
    assert (ROOT / "generated" / "resnet18_fpn.py").read_text(encoding="utf-8") == text  # shipped, up to date


def test_both_backends_build_the_same_model_under_the_same_seed(built):
    """§8's first two levels (``specc check`` adds the outputs and train mode; it runs in tests/test_specs.py)."""
    _, (compiled, first), (generated, second) = built
    assert str(compiled) == str(generated)
    assert "(inner_blocks): ModuleList(" in str(compiled) and "(0): Conv2dNormActivation(" in str(compiled)
    assert list(first) == list(second) and all(torch.equal(first[k], second[k]) for k in first)


def test_shapes_and_parameters_without_building():
    model = compiler.lower_spec(compiler.load_spec(SPEC)).model
    assert model.params == 13_774_016  # torchvision's resnet_fpn_backbone("resnet18")
    assert model.outputs == {
        "0": (256, 16, 16),
        "1": (256, 8, 8),
        "2": (256, 4, 4),
        "3": (256, 2, 2),
        "pool": (256, 1, 1),
    }


def test_resnet34_fpn_by_set():
    spec = compiler.load_spec(SPEC, overrides=["vars.layers=[3, 4, 6, 3]", "init=[]"])
    reference = resnet_fpn_backbone(backbone_name="resnet34", weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
    model = compiler.build_model(spec).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        got = model(x)
    assert list(got) == KEYS and all(torch.equal(got[k], expected[k]) for k in KEYS)
