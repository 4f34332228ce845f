"""specs/convnext_tiny.yaml is torchvision's convnext_tiny, module for module (issue 21: graph nodes with a parameter).

Against ``torchvision.models.convnext_tiny()``: the same state-dict keys in the same order, torchvision's weights load
with strict=True into the compiled model and into the generated script's ``build_model()``, the eval outputs on a
64x64 input are bitwise equal, and under the same seed both backends draw torchvision's initial weights bitwise
(torchvision builds every layer, drawing torch's default initialisation, then re-initialises Conv2d and Linear with
trunc_normal_ in ``modules()`` order: the spec's `init:` rule does the same after construction, and the layer scale,
``torch.ones(dim, 1, 1) * 1e-6``, is ``constant_(1e-6)`` bitwise and draws nothing). A smaller configuration by
``--set`` is torchvision's ``ConvNeXt`` with the same block settings (convnext_small's depths).
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models import convnext_tiny
from torchvision.models.convnext import CNBlockConfig, ConvNeXt, LayerNorm2d

import compiler
from compiler.cli.commands import main as cli_main
from compiler.facts.registry import REGISTRY
from compiler.workflow.check import compare, import_script

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "convnext_tiny.yaml"


def _generated(spec, folder: Path, name: str):
    return import_script(compiler.render_script(spec), name, str(folder))


@functools.cache
def _tiny(folder: Path) -> tuple:
    """torchvision's convnext_tiny and both backends' models, each built under seed 0 (and the RNG after each)."""
    spec = compiler.load_spec(SPEC)
    built = []
    script = _generated(spec, folder, "convnext_gen")
    for make in (convnext_tiny, lambda: compiler.build_model(spec), script.build_model):
        torch.manual_seed(0)
        built.append((make(), torch.get_rng_state()))
    return tuple(built)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("convnext"))


def test_convnext_tiny_loads_torchvisions_weights_and_computes_the_same(tiny):
    (reference, _), (compiled, _), (generated, _) = tiny
    keys = list(reference.state_dict())
    assert keys[:4] == ["features.0.0.weight", "features.0.0.bias", "features.0.1.weight", "features.0.1.bias"]
    assert keys[4:7] == ["features.1.0.layer_scale", "features.1.0.block.0.weight", "features.1.0.block.0.bias"]
    assert "features.5.8.block.5.weight" in keys and "features.6.1.weight" in keys and keys[-1] == "classifier.2.bias"
    for model in (compiled, generated):
        assert list(model.state_dict()) == keys
        model.load_state_dict(reference.state_dict(), strict=True)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)  # 64x64: the stem and three downsamplings leave 2x2 for the last stage
    with torch.no_grad():
        expected = reference.eval()(x)
        assert expected.shape == (2, 1000)
        assert torch.equal(compiled.eval()(x), expected)
        assert torch.equal(generated.eval()(x), expected)


def test_convnext_tiny_draws_torchvisions_initial_weights_under_the_same_seed(tiny):
    (reference, rng), *backends = tiny
    expected = reference.state_dict()
    assert torch.equal(expected["features.1.0.layer_scale"], torch.ones(96, 1, 1) * 1e-6)
    for model, after in backends:
        assert torch.equal(after, rng)  # the same random numbers drawn in all
        state = model.state_dict()
        for key, tensor in expected.items():
            assert torch.equal(state[key], tensor), key


def test_stochastic_depth_grows_block_by_block_as_torchvisions(tiny):
    (reference, _), *backends = tiny

    def depths(model):
        return [(m.p, m.mode) for m in model.modules() if type(m).__name__ == "StochasticDepth"]

    expected = depths(reference)
    assert len(expected) == 18 and expected[0] == (0.0, "row") and expected[-1] == (0.1, "row")
    for model, _ in backends:
        assert depths(model) == expected  # equal floats: the same arithmetic as torchvision's sd_prob


def test_convnext_tiny_by_default_and_the_larger_ones_by_set_without_building_them():
    model = compiler.lower_spec(compiler.load_spec(SPEC)).model
    assert model.input_shape == (3, 224, 224) and model.output_shape == (1000,)
    assert model.params == 28_589_128  # torchvision's convnext_tiny
    assert sum(1 for g in model.graphs() if g.class_name == "CNBlock") == 18
    small = compiler.load_spec(SPEC, overrides=["vars.depths=[3, 3, 27, 3]", "vars.stochastic_depth_prob=0.4"])
    assert compiler.lower_spec(small).model.params == 50_223_688  # torchvision's convnext_small
    for dims, params in (([128, 256, 512, 1024], 88_591_464), ([192, 384, 768, 1536], 197_767_336)):  # base, large
        wide = compiler.load_spec(SPEC, overrides=["vars.depths=[3, 3, 27, 3]", f"vars.dims={dims}"])
        assert compiler.lower_spec(wide).model.params == params


def test_a_smaller_configuration_is_torchvisions_convnext(tmp_path):
    """convnext_small's depths and drop rate, narrow: torchvision's ConvNeXt with the same block settings."""
    dims, depths = [8, 16, 24, 32], [3, 3, 27, 3]
    overrides = [f"vars.dims={dims}", f"vars.depths={depths}", "vars.stochastic_depth_prob=0.4", "vars.num_classes=10"]
    spec = compiler.load_spec(SPEC, overrides=[*overrides, "input=[3, 32, 32]"])
    settings = [CNBlockConfig(d, o, n) for d, o, n in zip(dims, [*dims[1:], None], depths, strict=True)]
    reference = ConvNeXt(settings, stochastic_depth_prob=0.4, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    for model in (compiler.build_model(spec), _generated(spec, tmp_path, "convnext_small_gen").build_model()):
        assert list(model.state_dict()) == list(reference.state_dict())
        model.load_state_dict(reference.state_dict(), strict=True)
        sd = [m.p for m in model.modules() if type(m).__name__ == "StochasticDepth"]
        assert sd == [m.p for m in reference.modules() if type(m).__name__ == "StochasticDepth"]
        with torch.no_grad():
            assert torch.equal(model.eval()(x), reference(x))


def test_generated_convnext_reads_like_torchvision():
    text = compiler.render_script(compiler.load_spec(SPEC))
    assert "from torchvision.models.convnext import LayerNorm2d\n" in text
    assert text.count("class CNBlock(nn.Module):") == 1 and "class CNBlock_" not in text  # one class for 18 uses
    assert "    def __init__(self, in_channels, p):" in text
    assert "self.layer_scale = nn.Parameter(torch.empty(in_channels, 1, 1))" in text
    assert "nn.init.constant_(self.layer_scale, val=1e-06)" in text
    assert "result = self.layer_scale * block" in text and "return stochastic_depth + x" in text
    assert "CNBlock(96, 0.0)," in text and "CNBlock(768, 0.1)," in text
    assert "LayerNorm2d(normalized_shape=768, eps=1e-06)" in text
    assert "nn.init.trunc_normal_(module.weight, std=0.02)" in text
    assert (ROOT / "generated" / "convnext_tiny.py").read_text(encoding="utf-8") == text  # shipped, up to date


def test_both_backends_agree_at_every_level_on_a_small_input():
    spec = compiler.load_spec(SPEC, overrides=["input=[3, 64, 64]", "vars.depths=[1, 1, 2, 1]"])
    checks = compare(spec, steps=2)
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_layer_norm_2d_is_torchvisions_class():
    entry = REGISTRY.get("layer", "LayerNorm2d")
    assert entry.resolve() is LayerNorm2d and entry.infer == "normalized_shape" and entry.norm
    spec = compiler.parse_spec(
        "name: ln2d\ninput: [6, 5, 5]\nmodel:\n  - LayerNorm2d: {eps: 1.0e-6}\n  - Flatten\n", "ln2d.yaml"
    )
    model = compiler.build_model(spec)
    assert isinstance(model[0], LayerNorm2d) and model[0].normalized_shape == (6,) and model[0].eps == 1e-6
    x = torch.randn(3, 6, 5, 5)
    expected = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), eps=1e-6).permute(0, 3, 1, 2)
    with torch.no_grad():
        assert torch.equal(model[0](x), expected)


def test_expanded_convnext_builds_the_same_model(tmp_path, capsys):
    overrides = ["vars.depths=[1, 2, 1, 1]", "vars.dims=[8, 16, 24, 32]"]
    assert cli_main(["expand", str(SPEC), *[f"--set={o}" for o in overrides]]) == 0
    text = capsys.readouterr().out
    assert "blocks:" not in text and "$" not in text.split("model:", 1)[1]
    written = tmp_path / "convnext_expanded.yaml"
    written.write_text(text, encoding="utf-8")
    built = []
    for spec in (compiler.load_spec(written), compiler.load_spec(SPEC, overrides=overrides)):
        torch.manual_seed(0)
        built.append(compiler.build_model(spec).state_dict())
    expanded, original = built
    assert list(expanded) == list(original) and all(torch.equal(expanded[k], original[k]) for k in original)


def test_validating_convnext_imports_neither_torch_nor_torchvision():
    code = (
        "import sys; from compiler.cli.commands import main; "
        "rc = main(['validate', 'specs/convnext_tiny.yaml']); "
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


_SCALED = """# a block whose parameter's sizes follow the block's
name: scaled
input: [4, 6, 6]
blocks:
  Scale:
    params: {width: int}
    body:
      params:
        gain: {shape: SHAPE, init: {normal_: {std: 0.5}}}
      buffers:
        offset: {shape: [$width, 1, 1]}
      graph:
        - conv: {Conv2d: {out_channels: $width, kernel_size: 1}}
        - {mul: [gain, conv], as: scaled}
        - {add: [scaled, offset]}
model:
  - {Scale: {width: 8}}
  - {Scale: {width: 5}}
  - Flatten
"""


@pytest.mark.parametrize(
    ("shape", "one_class"), [("[$width * 2 - $width, 1, $in_channels // $in_channels]", True), ("$shapes", False)]
)
def test_a_graph_blocks_tensor_sizes_are_expressions_of_its_parameters(shape, one_class):
    """Each size the spec wrote over the block's names is that expression in the block's class; a shape written
    as one value (a list variable) is a class per use, as before."""
    text = _SCALED.replace("SHAPE", shape)
    if not one_class:
        text = text.replace("params: {width: int}", "params: {width: int, shapes: list}")
        text = text.replace("{width: 8}", "{width: 8, shapes: [8, 1, 1]}").replace(
            "{width: 5}", "{width: 5, shapes: [5, 1, 1]}"
        )
    spec = compiler.parse_spec(text, "scaled.yaml")
    script = compiler.render_script(spec)
    assert (script.count("class Scale") == 1) is one_class
    if one_class:
        assert "self.gain = nn.Parameter(torch.empty(width * 2 - width, 1, in_channels // in_channels))" in script
        assert 'self.register_buffer("offset", torch.zeros(width, 1, 1))' in script
        assert "Scale(4, 8)" in script and "Scale(8, 5)" in script
    checks = compare(spec, steps=2)
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
