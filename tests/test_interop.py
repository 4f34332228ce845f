"""Work in and out of specs: decompile (to_spec, specc import), export (ONNX, torch.export), the JSON Schema, plugins."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from conftest import ROOT, SPECS
from torch import nn
from torchvision import models

import compiler
from compiler.cli.commands import main
from compiler.front.load import load_file
from compiler.interop.decompile import DecompileError

SLOW_SPECS = {
    "alexnet",
    "convnext_tiny",
    "densenet121",
    "efficientnet_b0",
    "googlenet",
    "mobilenet_v2",
    "resnet50",
    "vit",
}
TORCHVISION = [
    "resnet18",
    "squeezenet1_0",
    "resnet50",
    "mobilenet_v2",
    "densenet121",
    "efficientnet_b0",
    "vgg16_bn",
    "alexnet",
]
FAST_TORCHVISION = {"resnet18", "squeezenet1_0"}


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _quiet_spec(text: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compiler.parse_spec(text)


def _mark(names, slow):
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


# --------------------------------------------------------------------------- decompile


@pytest.mark.parametrize("name", _mark([p.stem for p in SPECS], SLOW_SPECS))
def test_every_shipped_spec_round_trips_to_the_same_structure(name):
    spec = compiler.load_spec(ROOT / "specs" / f"{name}.yaml")
    torch.manual_seed(0)
    model = compiler.build_model(spec)
    text = compiler.to_spec(model, spec.input, name=spec.name)
    again = compiler.build_model(_quiet_spec(text))
    ours, theirs = model.state_dict(), again.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def _with_batchnorm_stats(model: nn.Module) -> nn.Module:
    """BatchNorm statistics that matter, so that equal outputs mean equal computations."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    return model


@pytest.mark.parametrize("name", _mark(TORCHVISION, set(TORCHVISION) - FAST_TORCHVISION))
def test_torchvision_models_decompile_to_specs_that_reproduce_them(name):
    torch.manual_seed(0)
    model = _with_batchnorm_stats(getattr(models, name)(weights=None))
    text = compiler.to_spec(model, (3, 64, 64), name=name)
    rebuilt = compiler.build_model(_quiet_spec(text))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_decompiled_resnet18_reads_like_the_shipped_spec():
    model = models.resnet18(weights=None)
    folded = compiler.to_spec(model, (3, 64, 64), name="resnet18")
    assert "  BasicBlock:\n    params: {out: int, stride: int, downsample: bool}" in folded
    assert "if: $downsample" in folded and "defaults:" in folded and "class: BasicBlock" not in folded
    text = compiler.to_spec(model, (3, 64, 64), name="resnet18", flat=True)  # the module tree written out
    assert "class: BasicBlock" in text and "merge: add" in text and "identity: Identity" in text
    assert "repeat: 2" in text  # layer1's two equal blocks
    assert "in_channels" not in text and "in_features" not in text and "num_features" not in text  # inferred
    assert "{Conv2d: {out_channels: 64, kernel_size: 7, stride: 2, padding: 3, bias: false}}" in text
    assert "flatten: Flatten" in text  # torch.flatten(x, 1) in ResNet.forward


def test_functional_calls_and_unused_modules():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.unused = nn.Dropout(0.3)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            x = torch.nn.functional.relu(self.conv(x))
            x = torch.nn.functional.adaptive_avg_pool2d(x, 1)
            x = x.view(x.size(0), -1)
            return torch.softmax(self.fc(x), dim=1)

    net = Net()
    text = compiler.to_spec(net, (3, 16, 16), name="net")
    assert "relu: ReLU" in text and "{AdaptiveAvgPool2d: 1}" in text and "flatten: Flatten" in text
    assert "{Softmax: 1}" in text or "{Softmax: {dim: 1}}" in text
    assert "unused" in text and "left out" in text  # a comment says so


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x


class _ChildWeight(nn.Module):  # (a child called twice is a declared module: tests/test_import_graphs.py)
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.nn.functional.linear(x, self.fc.weight)


class _Halved(nn.Module):  # (two merges, which once was refused here, is a graph node: tests/test_import_graphs.py)
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x):
        return x + self.a(x) * 0.5


class _Sort(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=1).values


@pytest.mark.parametrize(
    ("module", "words"),
    [
        (_Untraceable(), ["cannot trace _Untraceable.forward"]),
        (_ChildWeight(), ["1.fc: ", "reads self.fc.weight", "a tensor of its child fc"]),
        (_Halved(), ["operator.mul()", "the constant 0.5"]),
        (_Sort(), ["torch.sort()", "cannot be expressed"]),
    ],
)
def test_what_a_spec_cannot_express_is_a_located_error(module, words):
    with pytest.raises(DecompileError) as err:
        compiler.to_spec(nn.Sequential(nn.Linear(4, 4), module), (4,))
    message = str(err.value)
    assert message.startswith("1")  # the module path: child "1" of the Sequential
    for word in words:
        assert word in message


def test_an_input_that_does_not_fit_is_refused():
    with pytest.raises(DecompileError, match=r"input shape \[5, 32, 32\]"):
        compiler.to_spec(models.resnet18(weights=None), (5, 32, 32))


def test_specc_import_writes_spec_and_weights_that_reproduce_the_model(tmp_path, capsys):
    spec_path, weights = tmp_path / "r18.yaml", tmp_path / "r18.pt"
    code, _out, err = run(
        capsys,
        "import",
        "torchvision.models:resnet18",
        "--input",
        "3,64,64",
        "-o",
        str(spec_path),
        "--weights",
        str(weights),
    )
    assert code == 0, err
    torch.manual_seed(0)
    reference = models.resnet18(weights=None)
    model = compiler.build_model(compiler.load_spec(spec_path))
    model.load_state_dict(torch.load(weights, weights_only=True), strict=True)
    assert list(model.state_dict()) == list(reference.state_dict())


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["torchvision.models:no_such_model", "--input", "3,64,64"], ["has no 'no_such_model'"]),
        (["no_such_package.models:net", "--input", "3,64,64"], ["cannot import 'no_such_package.models'"]),
        (["torch.nn:LSTM", "--input", "3,4"], ["torch.nn:LSTM() raised TypeError"]),
        (["torchvision.models:resnet18", "--input", "3,64"], ["input shape [3, 64] does not fit"]),
    ],
)
def test_specc_import_bad_input_is_one_line(argv, words, capsys):
    code, out, err = run(capsys, "import", *argv)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"specc import: {argv[0]}: ")
    for word in words:
        assert word in err


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_tutorial_cnn(tmp_path, fmt):
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    out = tmp_path / f"cnn.{fmt}"
    result = compiler.export(ROOT / "specs" / "mnist_cnn.yaml", out, format=fmt)
    assert out.is_file() and result.max_abs_diff <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary file left


def test_export_graph_spec_to_onnx_with_dynamic_batch(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "unet.onnx"
    compiler.export(ROOT / "specs" / "unet_small.yaml", out)  # checked at batch 3 after exporting at batch 2
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: torch.randn(5, 1, 64, 64).numpy()})
    assert y.shape == (5, 2, 64, 64)


def test_export_takes_a_checkpoint_with_a_model_key(tmp_path, capsys):
    spec = ROOT / "specs" / "mlp.yaml"
    torch.manual_seed(5)
    model = compiler.build_model(spec)
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    code, _out, err = run(
        capsys,
        "export",
        str(spec),
        "--format",
        "pt2",
        "--checkpoint",
        str(tmp_path / "ckpt.pt"),
        "-o",
        str(tmp_path / "mlp.pt2"),
    )
    assert code == 0, err
    loaded = torch.export.load(str(tmp_path / "mlp.pt2")).module()
    x = torch.randn(4, 1000)
    assert torch.allclose(loaded(x), model.eval()(x))


def test_a_failed_export_leaves_no_file(tmp_path, capsys):
    torch.save({"wrong.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    code, _out, err = run(
        capsys,
        "export",
        str(ROOT / "specs" / "mlp.yaml"),
        "--format",
        "pt2",
        "--checkpoint",
        str(tmp_path / "bad.pt"),
        "-o",
        str(tmp_path / "out" / "mlp.pt2"),
    )
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "does not fit the spec's model" in err and "unexpected key" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_onnx_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    code, _out, err = run(capsys, "export", str(ROOT / "specs" / "mlp.yaml"), "-o", str(tmp_path / "m.onnx"))
    assert code == 1 and "pip install 'specc[export]'" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_import_compiler_and_validate_do_not_load_export_or_onnx():
    code = textwrap.dedent(f"""
        import sys
        import compiler
        from compiler.cli.commands import main
        assert main(["validate", {str(ROOT / "specs" / "mnist_cnn.yaml")!r}]) == 0
        loaded = [m for m in ("compiler.interop.exporting", "compiler.interop.decompile", "compiler.cli.schema", "onnx", "onnxruntime",
                              "onnxscript") if m in sys.modules]
        assert not loaded, loaded
    """)
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )


# --------------------------------------------------------------------------- JSON Schema


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    from compiler.cli.schema import schema

    return jsonschema.Draft202012Validator(schema())


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_validates_against_the_schema(path, validator):
    data, _ = load_file(path)
    errors = [e.message for e in validator.iter_errors(data)]
    assert not errors, errors[:3]


INVALID_BY_SCHEMA = [
    "unknown_top_level_key",
    "unknown_kwarg",
    "merge_unknown_op",
    "repeat_extra_key",
    "shuffle_yes",
    "bad_device",
    "train_mode_typo",
    "init_unknown_function",
    "epochs_float",
    "unknown_optimizer",
    "unknown_loss",
    "lstm_kwarg_typo",
    "metric_typo",
    "missing_model",
    "missing_name",
    "top_level_list",
    "batch_size_zero",
    "unknown_data_key",
    "unknown_train_key",
    "misspelt_layer_mapping",
    "input_not_a_list",
]


@pytest.mark.parametrize("name", INVALID_BY_SCHEMA)
def test_structural_mistakes_fail_the_schema(name, validator):
    data, _ = load_file(ROOT / "tests" / "invalid" / f"{name}.yaml")
    assert not validator.is_valid(data)


_BLOCK_SPEC = {
    "name": "blocks",
    "input": [3, 32, 32],
    "defaults": {"ReLU": {"inplace": True}},
    "blocks": {
        "Unit": {
            "params": {"width": "int", "stride": 1},
            "body": {
                "merge": "add",
                "branches": {
                    "main": [{"Conv2d": {"out_channels": "$width", "kernel_size": 3, "padding": 1}}, "ReLU"],
                    "skip": {
                        "if": "$stride != 1",
                        "then": {"Conv2d": {"out_channels": "$width", "kernel_size": 1}},
                        "else": "Identity",
                    },
                },
            },
        }
    },
    "model": {
        "stem": [{"repeat": 2, "as": "i", "body": {"Unit": {"width": "8 * ($i + 1)"}}}],
        "stage{k + 1}": {"for": "w", "in": [16, 32], "as": "k", "body": [{"Unit": ["$w", 2]}]},
        "head": [{"AdaptiveAvgPool2d": 1}, "Flatten", {"Linear": {"out_features": "max(10, 2)"}}],
    },
}


def _with(path: tuple, value: object) -> dict:
    data = copy.deepcopy(_BLOCK_SPEC)
    *parents, last = path
    target = data
    for key in parents:
        target = target[key]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return data


def test_the_schema_describes_blocks_loops_conditions_and_defaults(validator):
    assert [e.message for e in validator.iter_errors(_BLOCK_SPEC)] == []
    assert validator.is_valid({"base": "resnet.yaml", "model": [{"Bottleneck": {"width": 64}}]})
    # a section's required keys may come from the base; without one they are required
    assert validator.is_valid({"base": "mnist_cnn.yaml", "data": {"batch_size": 32}})
    assert not validator.is_valid({**_BLOCK_SPEC, "data": {"batch_size": 32}})
    assert validator.is_valid({**_BLOCK_SPEC, "data": {"dataset": {"MNIST": {"root": "data"}}, "batch_size": 32}})
    mistakes = [
        _with(("blocks",), None),  # a use of a block no `blocks:` defines
        _with(("defaults", "Relu"), {"inplace": True}),  # a default for no layer type
        _with(("blocks", "Unit", "bdy"), []),  # an unknown key in a definition
        _with(("blocks", "unit"), {"body": "ReLU"}),  # a block name that is no class name
        _with(("blocks", "Unit", "params", "width"), "integer"),  # no such type
        _with(("model", "stage{k + 1}", "rows"), 2),  # an unknown loop key
        _with(("model", "stage{k + 1}", "for"), None),  # `in:` without `for:`
        _with(("model", "stem", 0, "name"), "u{i}"),  # a loop in a list splices: no `name:`
        _with(("blocks", "Unit", "body", "branches", "skip", "elif"), "ReLU"),  # an `if:` part's unknown key
    ]
    for data in mistakes:
        assert not validator.is_valid(data), data


def test_specc_schema_prints_json_with_layers_and_their_arguments(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path))
    code, out, _err = run(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    layers = schema["$defs"]["layer"]["anyOf"]
    assert "Conv2d" in layers[0]["enum"]
    conv = next(s for s in layers[1:] if s["required"] == ["Conv2d"])
    kwargs = conv["properties"]["Conv2d"]["anyOf"][0]["properties"]
    assert {"out_channels", "kernel_size", "stride", "padding", "bias"} <= set(kwargs)
    assert {"merge", "repeat", "init_rule"} <= set(schema["$defs"])
    code, again, _ = run(capsys, "schema")  # from the cache
    assert again == out


# --------------------------------------------------------------------------- plugins


PLUGIN = '''
from torch import nn
import compiler


class Scale(nn.Module):
    """x * factor."""

    def __init__(self, factor: float = 2.0):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


compiler.register_layer(Scale)
'''


def _specc(tmp_path, *argv):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from compiler.cli.commands import main; sys.exit(main())", *argv],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def plugin(tmp_path):
    (tmp_path / "myplugin.py").write_text(PLUGIN)
    (tmp_path / "s.yaml").write_text(
        "name: plugged\ninput: [4]\nmodel:\n  - {Linear: {out_features: 3}}\n  - {Scale: {factor: 0.5}}\n"
    )
    return tmp_path


def test_plugin_layers_are_visible_to_specc_with_a_warning(plugin):
    without = _specc(plugin, "validate", "s.yaml")
    assert without.returncode == 1 and "unknown layer type 'Scale'" in without.stderr
    result = _specc(plugin, "--plugin", "myplugin", "validate", "s.yaml")
    assert result.returncode == 0, result.stderr
    assert "s.yaml:5:6: warning:" in result.stderr and "meta device" in result.stderr
    generated = _specc(plugin, "--plugin", "myplugin", "generate", "s.yaml", "-o", "g.py")
    assert generated.returncode == 0, generated.stderr
    assert "from myplugin import Scale" in (plugin / "g.py").read_text()


def test_plugin_from_an_entry_point(plugin):
    dist = plugin / "myplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[specc.layers]\nscale = myplugin\n")
    result = _specc(plugin, "validate", "s.yaml")
    assert result.returncode == 0, result.stderr


def test_a_broken_plugin_is_one_line(plugin):
    result = _specc(plugin, "--plugin", "no_such_plugin", "validate", "s.yaml")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip() == "specc validate: --plugin no_such_plugin: ModuleNotFoundError: No module named "
        "'no_such_plugin'"
    )
