"""`specc import` reads forwards that are not trees into graph nodes (docs/spec-language.md §15): a module's own
parameters and buffers, child calls with several tensors, keywords and tuples, operations on named values, sizes
read from shapes; torchvision's ViT, ConvNeXt, ShuffleNetV2 (small configurations of the same classes) verify
exactly, and what a graph node cannot say is refused naming the module path and the operation."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from torch import nn
from torchvision import models
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.regnet import BlockParams

import compiler
from compiler.cli.commands import main
from compiler.interop.decompile import DecompileError
from compiler.workflow.check import import_script


def _quiet_spec(text: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compiler.parse_spec(text)


def _randomised(model: nn.Module) -> nn.Module:
    """Every tensor random (BatchNorm statistics, ViT's class token, ConvNeXt's layer scale are zeros or ones):
    equal outputs then mean equal computations."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
    return model


def _reproduces(model: nn.Module, text: str, shape: tuple[int, ...]) -> nn.Module:
    """The spec's model takes the state dict strictly and computes the same (checked here, not only by import)."""
    rebuilt = compiler.build_model(_quiet_spec(text))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = rebuilt.eval()(x), model.eval()(x)
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs)
        ours, theirs = list(ours.values()), list(theirs.values())
    if isinstance(theirs, (tuple, list)):
        assert len(ours) == len(theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs))
    else:
        assert torch.equal(ours, theirs)
    return rebuilt


def _small_vit() -> nn.Module:
    return models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10
    )


# --------------------------------------------------------------------------- torchvision


def test_vision_transformer_imports_as_graph_nodes(tmp_path):
    model = _randomised(_small_vit())
    flat = compiler.to_spec(model, (3, 32, 32), name="vit", flat=True)
    # VisionTransformer.forward: a bare parameter, x.shape[0] feeding expand(n, -1, -1), torch.cat, x[:, 0]
    assert "class: VisionTransformer\n  params:\n    class_token: {shape: [1, 1, 16]}\n  graph:\n" in flat
    assert "- flatten: {Flatten: 2}\n" in flat  # x.reshape(n, hidden, n_h * n_w): the patches' axes merged
    assert "- {expand_batch: class_token, as: batch_class_token}\n" in flat
    assert "- {cat: [batch_class_token, permute], dim: 1}\n" in flat
    assert "- select: {Select: {dim: 1, index: 0}}\n" in flat
    assert "pos_embedding: {shape: [1, 5, 16]}" in flat and "- {add: [x, pos_embedding]}" in flat  # Encoder
    # EncoderBlock: MultiheadAttention's (query, key, value), need_weights=False and its (out, weights) tuple
    attention = (
        "- self_attention: {MultiheadAttention: {embed_dim: 16, num_heads: 2, batch_first: true}}\n"
        "                    from: [ln_1, ln_1, ln_1]\n"
        "                    with: {need_weights: false}\n"
        "                    as: [self_attention, _]\n"
    )
    assert attention in flat
    assert "- {add: [dropout, x], as: summed}" in flat and "- {add: [summed, mlp]}" in flat
    _reproduces(model, flat, (3, 32, 32))
    folded = compiler.to_spec(model, (3, 32, 32), name="vit")
    assert "blocks:\n  EncoderBlock:\n    body:\n      graph:\n" in folded
    assert '"encoder_layer_{i}": {repeat: 2, as: i, body: EncoderBlock}' in folded
    _reproduces(model, folded, (3, 32, 32))
    # the written spec is a spec like any other: its generated script builds the same model
    script = import_script(compiler.render_script(_quiet_spec(folded)), "imported_vit", str(tmp_path))
    built = script.build_model()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(built.eval()(x), model.eval()(x))


def test_convnext_layer_scale_is_a_parameter_of_a_graph_block():
    blocks = [CNBlockConfig(8, 16, 2), CNBlockConfig(16, None, 2)]
    model = _randomised(models.ConvNeXt(blocks, stochastic_depth_prob=0.1, num_classes=10))
    text = compiler.to_spec(model, (3, 64, 64), name="convnext")
    assert "  CNBlock:\n" in text
    assert "layer_scale: {shape: [$out, 1, 1]}" in text  # a size per stage: the block's parameter
    assert "- {mul: [layer_scale, block]}" in text and "- {add: [stochastic_depth, x]}" in text
    assert "StochasticDepth: {p: $p, mode: row}" in text
    assert "{Permute: {dims: [0, 2, 3, 1]}}" in text  # torchvision's own Permute class, as specc's layer
    assert "LayerNorm2d" in text and "layer_norm" not in text  # a layer, not traced into F.layer_norm
    _reproduces(model, text, (3, 64, 64))


def test_shufflenet_channel_shuffle_and_chunk_are_layers():
    model = _randomised(models.ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=10))
    text = compiler.to_spec(model, (3, 64, 64), name="shufflenet", flat=True)
    # channel_shuffle: view(n, 2, c // 2, h, w), transpose(1, 2), view(n, c, h, w): sizes from x.size()
    assert "{Unflatten: {dim: 1, unflattened_size: [2, 8]}}" in text
    assert "{Transpose: {dim0: 1, dim1: 2}}" in text and "flatten: {Flatten: {end_dim: 2}}" in text
    # x.chunk(2, dim=1): two slices of the input, the second read by branch2
    assert "- piece: {Slice: {dim: 1, end: 8}}\n" in text
    assert "- piece_2: {Slice: {dim: 1, start: 8, end: 16}}\n" in text
    assert "- {cat: [piece, branch2], dim: 1}" in text
    assert "branch1 (Sequential) are never called by InvertedResidual.forward: left out" in text  # empty
    _reproduces(model, text, (3, 64, 64))


def test_a_forward_that_is_a_tree_stays_one():
    params = BlockParams.from_init_params(depth=4, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    model = _randomised(models.RegNet(params, num_classes=10))
    text = compiler.to_spec(model, (3, 64, 64), name="regnet")
    assert "graph:" not in text and "merge: add" in text
    _reproduces(model, text, (3, 64, 64))


def test_googlenet_aux_heads_are_training_only_steps():
    model = _randomised(models.GoogLeNet(num_classes=10, init_weights=False))
    text = compiler.to_spec(model, (3, 64, 64), name="googlenet")
    assert "    - aux1: InceptionAux\n      when: training\n    - inception4b:" in text  # where forward calls it
    assert "  output: [fc, aux2, aux1]\n  eval_output: fc\n" in text
    rebuilt = _reproduces(model, text, (3, 64, 64))  # eval mode: the logits
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    outputs = []
    for net in (model, rebuilt):  # training mode: (logits, aux2, aux1), the dropouts drawing in the same order
        torch.manual_seed(4)
        with torch.no_grad():
            outputs.append(tuple(net.train()(x)))
    assert len(outputs[1]) == 3 and all(torch.equal(a, b) for a, b in zip(*outputs))


@pytest.mark.parametrize(
    ("name", "overrides", "shape"),
    [
        (
            "vit",
            ["vars.image_size=32", "vars.num_layers=2", "vars.num_heads=2", "vars.hidden_dim=16", "vars.mlp_dim=32"],
            (3, 32, 32),
        ),
        ("convnext_tiny", ["vars.depths=[1,2,1,1]", "vars.dims=[8,16,24,32]"], (3, 64, 64)),
    ],
)
def test_specc_graph_models_round_trip(name, overrides, shape):
    """specc's own graph modules (DataflowBlock) import as the graph nodes they were built from."""
    spec = compiler.load_spec(
        ROOT / "specs" / f"{name}.yaml", overrides=[*overrides, f"input=[{shape[0]},{shape[1]},{shape[2]}]"]
    )
    torch.manual_seed(0)
    model = _randomised(compiler.build_model(spec))
    text = compiler.to_spec(model, shape, name=name)
    rebuilt = _reproduces(model, text, shape)
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    assert str(rebuilt) == str(model)


def test_specc_import_small_vit_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "vit.yaml"
    argv = ["import", "torchvision.models:VisionTransformer", "--input", "3,32,32", "-o", str(out)]
    for arg in ("image_size=32", "patch_size=16", "num_layers=1", "num_heads=2", "hidden_dim=8", "mlp_dim=16"):
        argv += ["--arg", arg]
    assert main(argv) == 0, capsys.readouterr().err
    text = out.read_text()
    assert "expand_batch: class_token" in text and "from: [ln_1, ln_1, ln_1]" in text
    torch.manual_seed(0)
    made = models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16)
    _reproduces(_randomised(made), text, (3, 32, 32))


# --------------------------------------------------------------------------- what graph nodes say


class _TwoMerges(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        x = x + self.a(x)
        return x + self.b(x)


class _Standardise(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.randn(1, 4))
        self.register_buffer("std", torch.rand(1, 4) + 0.5)
        self.register_buffer("seen", torch.tensor([3]))  # saved, never read
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc((x - self.mean) / self.std)


class _LastStep(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.fc = nn.LSTM(4, 8, batch_first=True), nn.Linear(8, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


class _Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)

    def forward(self, x):
        a, b = self.fc(x).chunk(2, dim=-1)
        return a * torch.sigmoid(b)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k = nn.Linear(8, 8), nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        q, k = self.q(x), self.k(x)
        mixed, _ = self.attn(q, k, x)
        scores = torch.softmax(q @ k.transpose(1, 2), dim=-1)
        return torch.stack([scores @ x, mixed], dim=1).flatten(1, 2).unsqueeze(1)


class _Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.a(x), self.b(x)


class _UsesTwo(nn.Module):
    def __init__(self):
        super().__init__()
        self.two, self.fc = _Two(), nn.Linear(3, 4)

    def forward(self, x):
        p, q = self.two(x)
        return p * self.fc(q)


class _Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.cls, self.box = nn.Linear(4, 8), nn.Linear(8, 3), nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return {"logits": self.cls(h), "0": self.box(h)}


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return x + self.fc(x)


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, a, b):
        return a + b * self.scale


class _CallsPair(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair, self.fc = _Pair(), nn.Linear(4, 4)

    def forward(self, x):
        return self.pair(x, self.fc(x))


class _Siamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.head = nn.Sequential(nn.Linear(4, 8), nn.ReLU()), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.enc(x) - self.enc(torch.tanh(x)))


class _Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x * self.scale


class _Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

    def forward(self, x):
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs[0] + outs[2]


class _TopDown(nn.Module):
    def __init__(self):
        super().__init__()
        self.down, self.lateral = nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        lateral = self.lateral(x)
        return lateral + F.interpolate(self.down(x), size=lateral.shape[-2:], mode="nearest")


@pytest.mark.parametrize(
    ("module", "shape", "lines"),
    [
        (_Siamese(), (4,), ["  modules:\n    enc: [{Linear: {out_features: 8}}, ReLU]", "{call: enc, as: enc_out_2}"]),
        (_Chain(), (4,), ["- blocks: [{Linear: {out_features: 4}}, {Linear: {out_features: 4}}, {Linear:"]),
        (_Skip(), (4,), ["    blocks: [{Linear:", "- {call: blocks.0, as: blocks_0}", "- {call: blocks.1}"]),
        (_CallsPair(), (4,), ["        inputs: [a, b]", "      from: [x, fc]", "- {mul: [b, scale], as: product}"]),
        (
            _TopDown(),
            (3, 8, 8),
            ["- {interpolate: [down, lateral], mode: nearest, as: resized}", "- {add: [lateral, resized]}"],
        ),
        (_UsesTwo(), (4,), ["        output: [a, b]\n      as: [two, two_1]", "from: two_1", "- {mul: [two, fc]}"]),
        (_Heads(), (4,), ['  output: {"logits": cls, "0": box}']),
        (_Residual(), (4,), ["  class: Residual\n  graph:", "- {add: [x, fc]}"]),  # a merge would add a level
        (
            _TwoMerges(),
            (4,),
            ["- a: {Linear: {out_features: 4}}", "- {add: [x, a], as: summed}", "- {add: [summed, b]}"],
        ),
        (
            _Standardise(),
            (4,),
            ["buffers:", "mean: {shape: [1, 4]}", "seen: {shape: [1], dtype: int64}", "- {div: [difference, std]}"],
        ),
        (_LastStep(), (5, 4), ["as: [lstm, _]", "- select: {Select: {dim: 1, index: -1}}"]),
        (
            _Gated(),
            (4,),
            ["- piece_2: {Slice: {dim: 1, start: 4, end: 8}}\n      from: fc", "- {mul: [piece, sigmoid]}"],
        ),
        (
            _Attention(),
            (5, 8),
            [
                "from: [q, k, x]",
                "as: [attn, _]",
                "- {matmul: [q, transpose]}\n    - softmax: {Softmax: -1}",
                "- {matmul: [softmax, x], as: matmul_out}",
                "- {stack: [matmul_out, attn], dim: 1}",
                "{Unflatten: {dim: 1, unflattened_size: [1, 10]}}",
            ],
        ),
    ],
)
def test_forwards_that_are_no_tree_become_graph_nodes(module, shape, lines):
    module = _randomised(module)
    text = compiler.to_spec(module, shape, flat=True)
    assert "graph:" in text
    for line in lines:
        assert line in text, text
    _reproduces(module, text, shape)


# --------------------------------------------------------------------------- refusals: the path and the operation


class _Owner(nn.Module):
    """A module with a child, a parameter and a forward given per case."""

    def __init__(self, forward, attention: bool = False):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.p = nn.Parameter(torch.zeros(1, 4))
        if attention:
            self.attn = nn.MultiheadAttention(4, 2)
        self._forward = forward

    def forward(self, x):
        return self._forward(self, x)


def _doubled_in_place(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = m.fc(x) + m.p
    y.mul_(2)
    return y


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, y):
        return self.fc(x) + y


@pytest.mark.parametrize(
    ("module", "path", "words"),
    [
        (_Owner(lambda m, x: F.linear(x, m.fc.weight) + m.p), "1.fc", ["reads self.fc.weight", "its child fc"]),
        (_Owner(lambda m, x: m.fc(x) * 0.5 + m.p), "1", ["operator.mul()", "the constant 0.5"]),
        (_Owner(lambda m, x: m.fc(x).view(-1) + m.p.sum()), "1", [".view()", "does not keep the batch"]),
        (_Owner(lambda m, x: torch.cat([m.fc(x), x + m.p], dim=0)), "1", ["torch.cat()", "along dim 0"]),
        (_Owner(lambda m, x: m.fc(x)[0] + m.p), "1", ["operator.getitem()", "indexes the batch axis"]),
        (_Owner(lambda m, x: m.fc(x) + m.p.expand(3, 4)[:1]), "1", [".expand()", "expand_batch"]),
        (_Owner(lambda m, x: {"y": m.fc(x) + m.p}), "1", ["returns a dict", "the model's, at its top level"]),
        (_Owner(lambda m, x: m.fc(x)), "1", ["never reads its parameter p"]),
        (_Owner(lambda m, x: m.fc(m.p) + x), "1", ["self.fc() takes p", "no batch axis"]),
        (
            _Owner(lambda m, x: m.fc(x).view(x.size(0) * 2, 2).view(x.size(0), 4) + m.p),
            "1",
            [".view() takes operator.mul()", "computed from the batch size"],
        ),
        (_Owner(lambda m, x: torch.sort(m.fc(x) + m.p, dim=1).values), "1", ["torch.sort()", "cannot be expressed"]),
        (
            _Owner(lambda m, x: m.attn(*[x.unsqueeze(1)] * 3)[0][:, 0] + m.fc(x) + m.p, attention=True),
            "1.attn",
            ["MultiheadAttention with batch_first=False"],
        ),
        (
            _Owner(_doubled_in_place),
            "1",
            [".mul_() changes a value in place", "never read"],
        ),
        (_Owner(lambda m, x: (m.fc(x), x + m.p)[1]), "1.fc", ["calls it only for a result it never reads"]),
    ],
)
def test_what_a_graph_node_cannot_say_is_refused_with_its_path_and_operation(module, path, words):
    with pytest.raises(DecompileError) as err:
        compiler.to_spec(nn.Sequential(nn.Linear(4, 4), module), (4,))
    assert err.value.path == path
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    for word in words:
        assert word in message, message


def test_a_model_of_several_inputs_is_refused():
    with pytest.raises(DecompileError, match=r"_TwoInputs.forward takes more than one input \(x, y\)"):
        compiler.to_spec(_TwoInputs(), (4,))


def test_an_input_that_does_not_fit_a_graph_model_is_refused():
    with pytest.raises(DecompileError, match=r"input shape \[3, 64, 64\] does not fit"):
        compiler.to_spec(_small_vit(), (3, 64, 64))  # ViT asserts its image size


# --------------------------------------------------------------------------- several inputs at the top level


class _ImageAndFeatures(nn.Module):
    """A forward of two tensors: an image's features joined to a vector's."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(8, 6)
        self.head = nn.Linear(22, 3)

    def forward(self, image, features):
        return self.head(torch.cat([self.conv(image), torch.relu(self.fc(features))], dim=1))


class _ReadsOne(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, y):
        return self.fc(x)


def _reproduces_inputs(model: nn.Module, text: str, shapes: dict[str, tuple[int, ...]]) -> nn.Module:
    """As ``_reproduces``, for a model of several inputs: one tensor each, in order."""
    rebuilt = compiler.build_model(_quiet_spec(text))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(2)
    xs = [torch.randn(3, *shape, generator=generator) for shape in shapes.values()]
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(*xs), model.eval()(*xs))
    return rebuilt


def test_a_siamese_model_of_two_inputs_decompiles_to_input_names_and_a_shared_encoder():
    spec = compiler.load_spec(ROOT / "specs" / "siamese_digits.yaml")
    torch.manual_seed(0)
    model = _randomised(compiler.build_model(spec))
    text = compiler.to_spec(model, spec.input, name=spec.name)
    assert "\ninput: {left: [1, 28, 28], right: [1, 28, 28]}\n" in text
    assert "{call: encoder, from: left," in text and "{call: encoder, from: right," in text
    assert "inputs:" not in text  # `input:` names the top-level graph's values
    rebuilt = _reproduces_inputs(model, text, spec.input)
    assert list(rebuilt.state_dict()) == list(model.state_dict())


def test_a_hand_written_model_of_two_inputs_decompiles_and_verifies():
    torch.manual_seed(0)
    model = _randomised(_ImageAndFeatures())
    shapes = {"image": (3, 16, 16), "features": (8,)}
    text = compiler.to_spec(model, shapes, name="two_inputs")
    assert "\ninput: {image: [3, 16, 16], features: [8]}\n" in text
    assert "from: image" in text and "from: features" in text
    _reproduces_inputs(model, text, shapes)
    assert compiler.to_spec(model, {"a": (3, 16, 16), "b": (8,)}).count("from: a") == 1  # names are input's


def test_specc_import_takes_one_named_input_each(tmp_path, capsys):
    out = tmp_path / "two.yaml"
    argv = ["import", f"{__name__}:_ImageAndFeatures", "--input", "image=3,16,16", "--input", "features=8"]
    assert main([*argv, "-o", str(out)]) == 0, capsys.readouterr().err
    assert "input: {image: [3, 16, 16], features: [8]}" in out.read_text()
    capsys.readouterr()
    for extra, words in (
        (["--input", "3,16,16", "--input", "features=8"], "several --input name each input"),
        (["--input", "image=3,16,16", "--input", "image=8"], "--input names image twice"),
    ):
        assert main(["import", f"{__name__}:_ImageAndFeatures", *extra]) == 1
        err = capsys.readouterr().err
        assert err.startswith("specc import: ") and words in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("module", "shapes", "words"),
    [
        (_ImageAndFeatures(), {"features": (8,), "image": (3, 16, 16)}, "in the forward's argument order"),
        (
            _TwoInputs(),
            {"a": (4,), "b": (4,), "c": (4,)},
            "_TwoInputs.forward takes 2 inputs (x, y), but input names 3",
        ),
        (_ImageAndFeatures(), {"fc": (3, 16, 16), "features": (8,)}, "also _ImageAndFeatures's attribute self.fc"),
        (_ReadsOne(), {"x": (4,), "y": (4,)}, "never reads its input y"),
        (nn.Sequential(nn.Linear(4, 4)), {"a": (4,), "b": (4,)}, "takes 1 input (input), but input names 2"),
        (_TwoInputs(), {"x": (4,), "y": (0,)}, "input y (0,) is not a shape"),
        (_TwoInputs(), {"x": (4,), "y": (5,)}, "does not fit"),
    ],
)
def test_several_inputs_that_do_not_fit_the_forward_are_refused(module, shapes, words):
    with pytest.raises(DecompileError) as err:
        compiler.to_spec(module, shapes)
    assert words in str(err.value), str(err.value)
