"""specs/regnet_y_400mf.yaml is torchvision's regnet_y_400mf, module for module (issue 21, items 5 and 6).

torchvision names each block of a RegNet stage `block{stage}-{i}` with ``add_module``: no Python identifier, yet a
state-dict key (``trunk_output.block2.block2-0.f.a.0.weight``). A child of a named block (an ``nn.Sequential`` key)
may now be such a key: letters, digits, `_` and `-`. The generated script writes the key as a string
(``("block2-0", ...)``, ``**{"in-proj": _in_proj}`` at the top level) and names its variable legally, as torch.fx
does; a merge block's or a graph node's child (an attribute, ``self.<name>``) must stay an identifier.

Against ``torchvision.models.regnet_y_400mf()``: the same state-dict keys in the same order, torchvision's weights
load with strict=True into the compiled model and the generated script's ``build_model()``, the eval outputs on a
64x64 input are bitwise equal, and under the same seed both backends draw torchvision's initial weights bitwise
(torchvision's ``normal_(std=sqrt(2 / fan_out))`` is ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.models import regnet_y_400mf
from torchvision.models.regnet import BlockParams

import compiler
from compiler.cli.commands import main as cli_main
from compiler.front.names import NameProblem, check_block_name
from compiler.workflow.check import compare, import_script

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "regnet_y_400mf.yaml"


def _generated(spec, folder: Path, name: str):
    return import_script(compiler.render_script(spec), name, str(folder))


@functools.cache
def _built(folder: Path) -> tuple:
    """torchvision's regnet_y_400mf and both backends' models, each built under seed 0 (and the RNG after each)."""
    spec = compiler.load_spec(SPEC)
    script = _generated(spec, folder, "regnet_gen")
    built = []
    for make in (regnet_y_400mf, lambda: compiler.build_model(spec), script.build_model):
        torch.manual_seed(0)
        built.append((make(), torch.get_rng_state()))
    return tuple(built)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return _built(tmp_path_factory.mktemp("regnet"))


def test_regnet_y_400mf_loads_torchvisions_weights_and_computes_the_same(models):
    (reference, _), (compiled, _), (generated, _) = models
    keys = list(reference.state_dict())
    assert "trunk_output.block2.block2-0.proj.0.weight" in keys and "trunk_output.block4.block4-5.f.se.fc2.bias" in keys
    for model in (compiled, generated):
        assert list(model.state_dict()) == keys
        model.load_state_dict(reference.state_dict(), strict=True)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference.eval()(x)
        assert expected.shape == (2, 1000)
        assert torch.equal(compiled.eval()(x), expected)
        assert torch.equal(generated.eval()(x), expected)


def test_regnet_y_400mf_draws_torchvisions_initial_weights_under_the_same_seed(models):
    (reference, rng), *backends = models
    expected = reference.state_dict()
    for model, after in backends:
        assert torch.equal(after, rng)  # the same random numbers drawn in all
        state = model.state_dict()
        for key, tensor in expected.items():
            assert torch.equal(state[key], tensor), key


def test_the_stage_table_is_torchvisions_and_so_is_the_parameter_count():
    params = BlockParams.from_init_params(depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8, se_ratio=0.25)
    spec = compiler.load_spec(SPEC)
    variables = spec.vars
    assert variables["stages"] == [list(row) for row in zip(params.widths, params.depths, strict=True)]
    assert variables["group_width"] == params.group_widths[0] and set(params.group_widths) == {8}
    assert params.bottleneck_multipliers == [1.0] * 4 and variables["se_ratio"] == params.se_ratio
    model = compiler.lower_spec(spec).model
    assert model.params == 4_344_144 == sum(p.numel() for p in regnet_y_400mf().parameters())


def test_generated_regnet_keeps_torchvisions_keys_as_strings():
    text = compiler.render_script(compiler.load_spec(SPEC))
    assert '("block2-0", ResBottleneckBlock(48, 104, 2)),' in text
    assert '("block4-5", ResBottleneckBlock(440, 440, 1)),' in text
    assert text.count("class ResBottleneckBlock(nn.Module):") == 1 and "ResBottleneckBlock_" not in text
    assert 'nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")' in text
    assert (ROOT / "generated" / "regnet_y_400mf.py").read_text(encoding="utf-8") == text  # shipped, up to date


def test_both_backends_agree_at_every_level_on_a_small_input():
    spec = compiler.load_spec(SPEC, overrides=["input=[3, 64, 64]"])
    checks = compare(spec, steps=2)
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]


# the name rule --------------------------------------------------------------------------------------------

_KEYS = """name: keys
input: [4]
blocks:
  Unit:
    params: {w: int}
    body: [{Linear: {out_features: $w}}, ReLU]
model:
  "in-proj": {Linear: {out_features: 6}}
  "_0-act": ReLU
  "stage-{k}":
    for: w
    in: [5, 7, 9]
    as: k
    body: [{repeat: 2, as: i, body: {Unit: [$w]}}]
  trunk:
    "a-1": {Linear: {out_features: 3}}
    "units-{i}": {repeat: 2, as: i, body: {Linear: {out_features: 3}}}
    nested: {"deep-key": Tanh, "x_1-2": {repeat: 2, as: i, name: "unit{i}-b", body: ReLU}}
  fc: {Linear: {out_features: 2}}
"""


def test_child_keys_as_torch_writes_them_in_both_backends(tmp_path):
    spec = compiler.parse_spec(_KEYS, "keys.yaml")
    script = _generated(spec, tmp_path, "keys_gen")
    built = []
    for make in (lambda: compiler.build_model(spec), script.build_model):
        torch.manual_seed(0)
        built.append(make())
    compiled, generated = built
    keys = list(compiled.state_dict())
    assert keys[:2] == ["in-proj.weight", "in-proj.bias"]
    assert "stage-2.1.0.weight" in keys and "trunk.a-1.weight" in keys and "trunk.units-1.bias" in keys
    assert [name for name, _ in compiled.named_modules()][-6:-1] == [
        "trunk.nested",
        "trunk.nested.deep-key",
        "trunk.nested.x_1-2",
        "trunk.nested.x_1-2.unit0-b",
        "trunk.nested.x_1-2.unit1-b",
    ]
    assert list(generated.state_dict()) == keys
    assert [n for n, _ in generated.named_modules()] == [n for n, _ in compiled.named_modules()]
    assert all(torch.equal(generated.state_dict()[k], v) for k, v in compiled.state_dict().items())
    assert str(generated) == str(compiled)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(generated(x), compiled(x))
    text = compiler.render_script(spec)
    assert '**{"in-proj": _in_proj},' in text and '**{"_0-act": __0_act},' in text  # the key kept, the variable legal
    assert 'stages[f"stage-{k}"] = nn.Sequential(*blocks)' in text  # the loop stays a loop
    assert '("deep-key", nn.Tanh()),' in text
    lean = compiler.render_script(spec, lean=True)  # the lean script's build_model is the same code
    assert '**{"in-proj": _in_proj},' in lean and '("deep-key", nn.Tanh()),' in lean
    compile(lean, "keys_lean.py", "exec")


@pytest.mark.parametrize("name", ["block1-0", "x1-1x1", "a_b-c", "_-", "layer-"])
def test_a_key_of_letters_digits_underscores_and_hyphens_names_a_child(name):
    check_block_name(name)
    with pytest.raises(NameProblem, match="must be a Python identifier"):
        check_block_name(name, attribute=True)  # a merge's or a graph's child is `self.<name>`


@pytest.mark.parametrize("name", ["a.b", "a b", "", "a/b", "tab\t", "é-1", "a:b", "0", "1x1", "-", "-a"])
def test_any_other_key_is_refused_with_a_fix(name):
    with pytest.raises(NameProblem) as info:
        check_block_name(name)
    assert (
        "a Python identifier or a key of letters, digits, '_' and '-' that starts with a letter" in info.value.message
    )
    assert "e.g." in info.value.fix


@pytest.mark.parametrize("name", ["forward", "fc1", "_x", "trunk_output"])
def test_identifiers_keep_their_rules(name):
    if name == "forward":
        with pytest.raises(NameProblem, match="taken by the generated script"):
            check_block_name(name)
    else:
        check_block_name(name)
        check_block_name(name, attribute=True)


def test_torchvisions_regnet_decompiles_to_a_spec_with_its_keys():
    """`specc import` reads torchvision's `block1-0` keys and writes them back as they are."""
    torch.manual_seed(0)
    model = regnet_y_400mf()
    text = compiler.to_spec(model, (3, 64, 64), name="regnet_import")
    assert "block2-0" in text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rebuilt = compiler.build_model(compiler.parse_spec(text))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_the_schema_takes_child_keys_and_refuses_a_dot():
    jsonschema = pytest.importorskip("jsonschema")
    from compiler.cli.schema import schema

    validator = jsonschema.Draft202012Validator(schema())
    data = yaml.safe_load(_KEYS)
    assert not [e.message for e in validator.iter_errors(data)]
    data["model"]["fc.1"] = data["model"].pop("fc")
    assert list(validator.iter_errors(data))


def test_expanded_regnet_keeps_the_keys_and_builds_the_same_model(tmp_path, capsys):
    assert cli_main(["expand", str(SPEC), "--set=vars.stages=[[8, 1], [16, 2]]", "--set=input=[3, 32, 32]"]) == 0
    text = capsys.readouterr().out
    assert "blocks:" not in text and "block2-1:" in text
    written = tmp_path / "regnet_expanded.yaml"
    written.write_text(text, encoding="utf-8")
    built = []
    for spec in (
        compiler.load_spec(written),
        compiler.load_spec(SPEC, overrides=["vars.stages=[[8, 1], [16, 2]]", "input=[3, 32, 32]"]),
    ):
        torch.manual_seed(0)
        built.append(compiler.build_model(spec).state_dict())
    expanded, original = built
    assert "trunk_output.block2.block2-1.f.se.fc1.weight" in original
    assert list(expanded) == list(original) and all(torch.equal(expanded[k], original[k]) for k in original)
