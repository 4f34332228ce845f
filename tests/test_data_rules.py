"""Transform and dataset arguments: what validation refuses is what torchvision refuses (issue 10's rule that a
bad value is a located error, not a failure in the first batch). Each case is judged twice: by specc's
validation (no torchvision import) and by torchvision itself, building the transform and applying it to a
28x28 image; they must agree, except where specc is knowingly stricter (a flip probability outside [0, 1]
flips always or never in torchvision)."""

import pytest

import compiler
from compiler.errors import SpecError

SPEC = """
name: rules
model: [{{AdaptiveAvgPool2d: 1}}, Flatten, {{Linear: {{in_features: 1, out_features: 10}}}}]
data:
  dataset: {{FakeData: {{size: 8, image_size: [1, 28, 28], num_classes: 10}}}}
  transforms: {transforms}
  batch_size: 4
loss: CrossEntropyLoss
optimizer: {{SGD: {{lr: 0.1}}}}
train: {{epochs: 1, device: cpu}}
"""

CASES = [
    # (transform as the spec writes it, its keyword arguments for torchvision)
    ("{Resize: {size: 32}}", {"size": 32}),
    ("{Resize: {size: [20, 24]}}", {"size": [20, 24]}),
    ("{Resize: {size: [32, 32, 3]}}", {"size": [32, 32, 3]}),
    ("{Resize: {size: 32, interpolation: 3}}", {"size": 32, "interpolation": 3}),
    ("{Resize: {size: 32, interpolation: 9}}", {"size": 32, "interpolation": 9}),
    ("{Resize: {size: 32, interpolation: bicubic}}", {"size": 32, "interpolation": "bicubic"}),
    ("{Resize: {size: 20, max_size: 40}}", {"size": 20, "max_size": 40}),
    ("{Resize: {size: 32, max_size: 30}}", {"size": 32, "max_size": 30}),
    ("{Resize: {size: [20, 20], max_size: 40}}", {"size": [20, 20], "max_size": 40}),
    ("{Resize: {size: big}}", {"size": "big"}),
    ("{CenterCrop: {size: 20}}", {"size": 20}),
    ("{CenterCrop: {size: [20, 24, 3]}}", {"size": [20, 24, 3]}),
    ("{RandomCrop: {size: 24}}", {"size": 24}),
    ("{RandomCrop: {size: 32}}", {"size": 32}),
    ("{RandomCrop: {size: 32, padding: 2}}", {"size": 32, "padding": 2}),
    ("{RandomCrop: {size: 32, padding: 1}}", {"size": 32, "padding": 1}),
    ("{RandomCrop: {size: 32, pad_if_needed: true}}", {"size": 32, "pad_if_needed": True}),
    ("{RandomCrop: {size: 28, padding: 2, padding_mode: edge}}", {"size": 28, "padding": 2, "padding_mode": "edge"}),
    ("{RandomCrop: {size: 28, padding: 2, padding_mode: bogus}}", {"size": 28, "padding": 2, "padding_mode": "bogus"}),
    ("{RandomCrop: {size: 28, padding: [1, 2, 3]}}", {"size": 28, "padding": [1, 2, 3]}),
    ("{RandomRotation: {degrees: 15}}", {"degrees": 15}),
    ("{RandomRotation: {degrees: -15}}", {"degrees": -15}),
    ("{RandomRotation: {degrees: [-10, 10]}}", {"degrees": [-10, 10]}),
    ("{RandomRotation: {degrees: [10, -10]}}", {"degrees": [10, -10]}),
    ("{RandomRotation: {degrees: [1, 2, 3]}}", {"degrees": [1, 2, 3]}),
    ("{RandomRotation: {degrees: 10, center: [1, 2, 3]}}", {"degrees": 10, "center": [1, 2, 3]}),
    ("{RandomRotation: {degrees: x}}", {"degrees": "x"}),
    ("{Pad: {padding: 2}}", {"padding": 2}),
    ("{Pad: {padding: [1, 2]}}", {"padding": [1, 2]}),
    ("{Pad: {padding: [1, 2, 3]}}", {"padding": [1, 2, 3]}),
    ("{Pad: {padding: 2, padding_mode: wrap}}", {"padding": 2, "padding_mode": "wrap"}),
    ("{Grayscale: {num_output_channels: 1}}", {"num_output_channels": 1}),
    ("{Grayscale: {num_output_channels: 2}}", {"num_output_channels": 2}),
    ("{Normalize: {mean: [0.5], std: [0]}}", {"mean": [0.5], "std": [0]}),
    ("{Normalize: {mean: [0.5], std: [0.5]}}", {"mean": [0.5], "std": [0.5]}),
    ("{RandomHorizontalFlip: {p: 0.3}}", {"p": 0.3}),
    ("{RandomHorizontalFlip: {p: abc}}", {"p": "abc"}),
]
STRICTER = [  # refused by specc, accepted (and meaningless) in torchvision
    ("{RandomHorizontalFlip: {p: 3}}", {"p": 3}),
    ("{RandomVerticalFlip: {p: -1}}", {"p": -1}),
]


def _on_tensors(transform: str) -> bool:
    return transform.startswith("{Normalize")  # the one that takes tensors: after ToTensor


def _specc_refuses(transform: str) -> str | None:
    transforms = f"[ToTensor, {transform}]" if _on_tensors(transform) else f"[{transform}, ToTensor]"
    try:
        compiler.parse_spec(SPEC.format(transforms=transforms), "rules.yaml")
    except SpecError as err:
        return str(err)
    return None


def _torchvision_refuses(transform: str, kwargs: dict) -> bool:
    from PIL import Image
    from torchvision import transforms

    name = transform.strip("{").split(":")[0]
    image = Image.new("L", (28, 28))
    try:
        if _on_tensors(transform):
            getattr(transforms, name)(**kwargs)(transforms.ToTensor()(image))
        else:
            transforms.ToTensor()(getattr(transforms, name)(**kwargs)(image))
    except (TypeError, ValueError, KeyError, RuntimeError):
        return True
    return False


@pytest.mark.parametrize(("transform", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_validation_refuses_what_torchvision_refuses(transform, kwargs):
    refused = _specc_refuses(transform)
    assert (refused is not None) == _torchvision_refuses(transform, kwargs), refused
    if refused:
        assert "rules.yaml:6:" in refused, refused  # located at the transform's line


@pytest.mark.parametrize(("transform", "kwargs"), STRICTER, ids=[c[0] for c in STRICTER])
def test_a_flip_probability_outside_0_1_is_refused(transform, kwargs):
    assert not _torchvision_refuses(transform, kwargs)
    assert "is a probability" in _specc_refuses(transform)


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("{FakeData: {size: 0, image_size: [1, 28, 28], num_classes: 10}}", "size must be at least 1"),
        ("{FakeData: {size: 8, image_size: [1, 28], num_classes: 10}}", "image_size is (channels, height, width)"),
        ("{FakeData: {size: 8, image_size: [1, 28, 28], num_classes: 0}}", "num_classes must be at least 1"),
        ("{MNIST: {root: data, download: maybe}}", "MNIST.download expects bool"),
    ],
)
def test_dataset_arguments_are_checked(dataset, message):
    text = SPEC.format(transforms="[RandomHorizontalFlip, ToTensor]").replace(
        "{FakeData: {size: 8, image_size: [1, 28, 28], num_classes: 10}}", dataset
    )
    with pytest.raises(SpecError, match=r"rules\.yaml:5:") as caught:
        compiler.parse_spec(text, "rules.yaml")
    assert message in str(caught.value)
