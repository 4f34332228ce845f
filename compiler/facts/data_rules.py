"""The values torchvision's transforms and datasets refuse, checked at validation without importing torchvision.

The binder has already checked each argument's type (``registry.TORCHVISION_TYPES``); the rules here repeat
what the constructors check (``Resize``'s size of 1 or 2 values, ``Grayscale``'s 1 or 3 channels, the padding
modes) and what would only fail in the first batch, or never (a flip probability of 3, an interpolation code
Pillow lacks). Each rule takes the arguments by name and yields ``(argument, problem, fix)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

Problem = tuple[str, str, str]  # (argument, problem, fix)

# Pillow's resampling constants, which torchvision takes for `interpolation` (its InterpolationMode cannot be spelt)
INTERPOLATION = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "lanczos", 4: "box", 5: "hamming"}
PADDING_MODES = ("constant", "edge", "reflect", "symmetric")
_CODES = ", ".join(f"{code} ({name})" for code, name in INTERPOLATION.items())


def _values(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _size(name: str, a: dict, lengths: tuple[int, ...]) -> Iterator[Problem]:
    size = a.get("size")
    if isinstance(size, (list, tuple)) and len(size) not in lengths:
        counts = " or ".join(str(n) for n in lengths)
        yield "size", f"{name} size takes {counts} values (height, width), got {len(size)}", "e.g. size: [32, 32]"
    elif any(v <= 0 for v in _values(size)):
        yield "size", f"{name} size must be positive, got {size!r}", "e.g. size: 32"


def _interpolation(name: str, a: dict) -> Iterator[Problem]:
    code = a.get("interpolation")
    names = {mode: number for number, mode in INTERPOLATION.items()}
    if isinstance(code, str):
        number = names.get(code.lower().replace("interpolationmode.", ""))
        fix = f"write {number} (Pillow's code for {code.lower()})" if number is not None else f"use one of {_CODES}"
        yield "interpolation", f"{name} interpolation takes Pillow's integer code, not the name {code!r}", fix
    elif code is not None and code not in INTERPOLATION:
        yield "interpolation", f"{name} interpolation {code!r} is not one of Pillow's codes", f"use one of {_CODES}"


def _padding(name: str, a: dict) -> Iterator[Problem]:
    padding = a.get("padding")
    if isinstance(padding, (list, tuple)) and len(padding) not in (1, 2, 4):
        yield (
            "padding",
            f"{name} padding takes 1, 2 or 4 values, got {len(padding)}",
            "give one for every side, [left/right, top/bottom], or [left, top, right, bottom]",
        )
    mode = a.get("padding_mode")
    if mode is not None and mode not in PADDING_MODES:
        yield (
            "padding_mode",
            f"{name} padding_mode {mode!r} is not one of {PADDING_MODES}",
            "e.g. padding_mode: constant",
        )


def _resize(name: str, a: dict) -> Iterator[Problem]:
    yield from _size(name, a, (1, 2))
    yield from _interpolation(name, a)
    size, max_size = a.get("size"), a.get("max_size")
    if max_size is not None:
        edge = _values(size)
        if len(edge) != 1:
            yield (
                "max_size",
                f"{name} max_size bounds the longer edge when size is one number (the shorter edge), not {size!r}",
                "give size as one number, or remove max_size",
            )
        elif max_size <= edge[0]:
            yield "max_size", f"{name} max_size must be more than size ({edge[0]}), got {max_size}", "raise max_size"


def _crop(name: str, a: dict) -> Iterator[Problem]:
    yield from _size(name, a, (1, 2))
    if name == "RandomCrop":
        yield from _padding(name, a)


def _flip(name: str, a: dict) -> Iterator[Problem]:
    p = a.get("p")
    if p is not None and not 0 <= p <= 1:
        yield "p", f"{name} p is a probability, got {p!r}", "use a value from 0 to 1, e.g. p: 0.5"


def _rotation(name: str, a: dict) -> Iterator[Problem]:
    degrees = a.get("degrees")
    if isinstance(degrees, (list, tuple)) and len(degrees) != 2:
        yield (
            "degrees",
            f"{name} degrees takes one number or 2 (min, max), got {len(degrees)}",
            "e.g. degrees: [-15, 15]",
        )
    elif isinstance(degrees, (list, tuple)) and degrees[0] > degrees[1]:
        yield "degrees", f"{name} degrees must be (min, max), got {list(degrees)}", f"write {sorted(degrees)}"
    elif not isinstance(degrees, (list, tuple)) and degrees is not None and degrees < 0:
        yield "degrees", f"{name} degrees as one number must not be negative, got {degrees}", f"write {-degrees}"
    center = a.get("center")
    if center is not None and len(center) != 2:
        yield "center", f"{name} center takes 2 values (x, y), got {len(center)}", "e.g. center: [14, 14]"
    yield from _interpolation(name, a)


def _grayscale(name: str, a: dict) -> Iterator[Problem]:
    channels = a.get("num_output_channels")
    if channels not in (None, 1, 3):
        yield "num_output_channels", f"{name} num_output_channels must be 1 or 3, got {channels}", "use 1 (or 3)"


def _normalize(name: str, a: dict) -> Iterator[Problem]:
    for key in ("mean", "std"):
        if isinstance(a.get(key), (list, tuple)) and not a[key]:
            yield key, f"{name} {key} is empty", f"give one {key} per channel, e.g. {key}: [0.5]"
    if any(v == 0 for v in _values(a.get("std"))):  # torchvision: "std evaluated to zero", in the first batch
        yield "std", f"{name} divides by std, which holds a 0: {a['std']!r}", "e.g. std: [0.5]"


def _fake_data(name: str, a: dict) -> Iterator[Problem]:
    for key in ("size", "num_classes"):
        if a.get(key) is not None and a[key] < 1:
            yield key, f"{name} {key} must be at least 1, got {a[key]}", f"e.g. {key}: 10"
    image_size = a.get("image_size")
    if image_size is not None and (len(image_size) != 3 or any(v < 1 for v in image_size)):
        yield (
            "image_size",
            f"{name} image_size is (channels, height, width), got {list(image_size)}",
            ("e.g. image_size: [3, 32, 32]"),
        )


TOKENIZERS = ("word", "char")
PADDINGS = ("end", "start")
_TEXT_STRINGS = ("path", "text", "label", "test_path")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(name: str, a: dict) -> Iterator[Problem]:
    """Text's options: strings, a tokenizer it has, positive whole numbers, a padding side."""
    for key in _TEXT_STRINGS:
        if a.get(key) is not None and not isinstance(a[key], str):
            yield key, f"{name} {key} must be a string, got {a[key]!r}", f"e.g. {key}: {_TEXT_EXAMPLES[key]}"
    for key, allowed in (("tokenize", TOKENIZERS), ("padding", PADDINGS)):
        if a.get(key) is not None and a[key] not in allowed:
            yield key, f"{name} {key} {a[key]!r} is not one of {', '.join(allowed)}", f"e.g. {key}: {allowed[0]}"
    for key, least in (("max_length", 1), ("min_freq", 1), ("max_vocab", 3)):
        value = a.get(key)
        if value is not None and (not _whole(value) or not least <= value <= 1 << 24):
            why = " (it holds <pad> and <unk>, then the tokens)" if key == "max_vocab" else ""
            yield (
                key,
                f"{name} {key} must be a whole number from {least} to {1 << 24}{why}, got {value!r}",
                (f"e.g. {key}: {_TEXT_EXAMPLES[key]}"),
            )
    if a.get("lowercase") is not None and not isinstance(a["lowercase"], bool):
        yield "lowercase", f"{name} lowercase must be true or false, got {a['lowercase']!r}", "e.g. lowercase: true"


_TEXT_EXAMPLES = {
    "path": "data/text/train.csv",
    "text": "text",
    "label": "label",
    "test_path": "data/text/test.csv",
    "max_length": 64,
    "min_freq": 2,
    "max_vocab": 20000,
}


RULES: dict[str, Callable[[str, dict], Iterator[Problem]]] = {
    "Resize": _resize,
    "CenterCrop": _crop,
    "RandomCrop": _crop,
    "RandomHorizontalFlip": _flip,
    "RandomVerticalFlip": _flip,
    "RandomRotation": _rotation,
    "Grayscale": _grayscale,
    "Pad": _padding,
    "Normalize": _normalize,
    "FakeData": _fake_data,
    "Text": _text,
}


def check(class_name: str, arguments: dict[str, Any]) -> list[Problem]:
    """What torchvision would refuse in these arguments (the class's name as torchvision spells it)."""
    rule = RULES.get(class_name)
    return list(rule(class_name, arguments)) if rule else []


def crop_too_large(size: Any, padding: Any, height: int, width: int) -> tuple[int, int] | None:
    """RandomCrop without pad_if_needed: the crop (h, w) when it exceeds the padded image (torchvision fails in the
    first batch: "Required crop size ... is larger than input image size"), else None."""
    crop = _values(size) * (2 if len(_values(size)) == 1 else 1)
    pad = _values(padding if padding is not None else 0)
    left, top, right, bottom = (pad * 4)[:4] if len(pad) == 1 else (pad * 2 if len(pad) == 2 else pad)
    if crop[0] > height + top + bottom or crop[1] > width + left + right:
        return crop[0], crop[1]
    return None
