"""specs/resnet18_fpn.yaml is torchvision's ``resnet_fpn_backbone(backbone_name="resnet18", weights=None)``.

Against torchvision's model: the same state-dict keys in the same order, its weights load with strict=True into the
compiled model and into the generated script's ``build_model()``, and the eval outputs on a 64x64 input -- an ordered
mapping of five feature maps, "0" .. "3" and "pool" -- are bitwise equal. The spec's ``init:`` rules are torchvision's
two initialisation loops (ResNet's, then the FPN's), checked by running those loops on the spec's model; torchvision's
same-seed weights are not reproducible (it draws the initialisation of a Linear it discards, and initialises the
ResNet before constructing the FPN), see docs/spec-language.md §15.

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


def test_init_rules_are_torchvisions_loops(built):
    """The spec's rules give what torchvision's own two loops give on the spec's constructed model, in torchvision's
    order (ResNet's loop, then the FPN's): the same functions, arguments and draws. Under one seed, both backends
    agree bitwise (test_both_backends_build_the_same_model_under_the_same_seed); torchvision's own model does not (see the docstring)."""
    theirs = built[0][1]  # torchvision's model as built under seed 0
    torch.manual_seed(0)
    bare = compiler.build_model(compiler.load_spec(SPEC, overrides=["init=[]"]))  # constructed, no rules
    for m in bare.body.modules():  # torchvision.models.resnet.ResNet.__init__
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    for m in bare.fpn.modules():  # torchvision.ops.FeaturePyramidNetwork.__init__
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, a=1)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
    torch.manual_seed(0)
    ruled = compiler.build_model(compiler.load_spec(SPEC))
    expected, state = bare.state_dict(), ruled.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    # torchvision's own same-seed model: what draws nothing is equal (the frozen statistics, the FPN's zero biases),
    # the drawn weights are not (its discarded fc draws, and it initialises the ResNet before building the FPN)
    drawn = {f"{name}.weight" for name, m in built[0][0].named_modules() if isinstance(m, nn.Conv2d)}
    assert all(torch.equal(state[k], v) for k, v in theirs.items() if k not in drawn)
    assert not torch.equal(state["body.conv1.weight"], theirs["body.conv1.weight"])


def test_same_seed_weights_differ_from_torchvisions_only_by_its_order_of_draws(built):
    """What §15 says: without the discarded fc (an empty Linear draws nothing), torchvision's same-seed FPN weights
    are the spec's -- as many numbers are drawn before them -- and the body's are not: torchvision draws them
    before constructing the FPN, the spec after."""
    from torchvision.models import resnet18
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor  # resnet_fpn_backbone's own

    ours = built[1][1]
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="zero-element tensors"):
        fc_less = resnet18(num_classes=0, norm_layer=FrozenBatchNorm2d)
    theirs = _resnet_fpn_extractor(fc_less, 3).state_dict()
    assert list(theirs) == list(ours)
    fpn = [k for k in ours if k.startswith("fpn.")]
    assert len(fpn) == 16 and all(torch.equal(ours[k], theirs[k]) for k in fpn)
    assert not torch.equal(ours["body.conv1.weight"], theirs["body.conv1.weight"])


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
