"""The tutorial's networks, compiled from specs, against the same networks written by hand."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

import compiler


def tutorial_mlp():
    input_data, hidden_layer, output_data = 1000, 100, 10
    return nn.Sequential(nn.Linear(input_data, hidden_layer), nn.ReLU(), nn.Linear(hidden_layer, output_data))


def tutorial_mlp_named():
    return nn.Sequential(
        OrderedDict([("Line1", nn.Linear(1000, 100)), ("Relu1", nn.ReLU()), ("Line2", nn.Linear(100, 10))])
    )


def tutorial_cnn():
    conv1 = nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 128, kernel_size=3, stride=1, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(stride=2, kernel_size=2),
    )
    dense = nn.Sequential(nn.Linear(14 * 14 * 128, 1024), nn.ReLU(), nn.Dropout(p=0.5), nn.Linear(1024, 10))
    return nn.Sequential(OrderedDict([("conv1", conv1), ("flatten", nn.Flatten()), ("dense", dense)]))


CASES = [
    ("specs/mlp.yaml", tutorial_mlp, (1000,)),
    ("specs/mlp_named.yaml", tutorial_mlp_named, (1000,)),
    ("specs/mlp_gd.yaml", tutorial_mlp, (1000,)),
    ("specs/mnist_cnn.yaml", tutorial_cnn, (1, 28, 28)),
]


@pytest.mark.parametrize(("path", "by_hand", "shape"), CASES, ids=[c[0] for c in CASES])
def test_same_as_hand_written(path, by_hand, shape):
    torch.manual_seed(0)
    expected = by_hand()
    torch.manual_seed(0)
    model = compiler.build_model(path)
    assert str(model) == str(expected)
    a, b = model.state_dict(), expected.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(5, *shape)
    model.eval(), expected.eval()
    assert torch.equal(model(x), expected(x))
    model.train(), expected.train()
    torch.manual_seed(3)
    y1 = model(x)
    torch.manual_seed(3)
    assert torch.equal(y1, expected(x))


def test_build_model_draws_like_hand_written_code_and_never_reseeds():
    spec = compiler.load_spec("specs/mlp.yaml")
    torch.manual_seed(5)
    compiler.build_model(spec)
    after_ours = torch.get_rng_state()
    torch.manual_seed(5)
    tutorial_mlp()
    assert torch.equal(after_ours, torch.get_rng_state())


def test_validation_draws_no_random_numbers():
    torch.manual_seed(1)
    state = torch.get_rng_state()
    compiler.load_spec("specs/vgg_cifar.yaml")
    assert torch.equal(state, torch.get_rng_state())


def test_mlp_renders_with_the_tutorials_variable_names():
    script = compiler.render_script("specs/mlp.yaml")
    assert "nn.Linear(input_data, hidden_layer)" in script
    assert "input_data = 1000" in script


def test_cnn_in_features_inferred_as_14_14_128():
    spec = compiler.load_spec("specs/mnist_cnn.yaml")
    model = compiler.build_model(spec)
    assert model.dense[0].in_features == 14 * 14 * 128


def test_torchvision_alexnet_state_dict_loads_strict_and_outputs_match():
    from torchvision.models import alexnet

    torch.manual_seed(0)
    reference = alexnet(weights=None).eval()
    model = compiler.build_model("specs/alexnet.yaml").eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
