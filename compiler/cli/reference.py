"""Reference docs from the registry: ``specc list KIND`` and the checked-in docs/reference.md."""

from __future__ import annotations

import inspect

from compiler.common.literal import literal
from compiler.facts.registry import REGISTRY, Entry
from compiler.lower.bind import parameters

KINDS = {
    "layers": "layer",
    "losses": "loss",
    "optimizers": "optimizer",
    "schedulers": "scheduler",
    "datasets": "dataset",
    "transforms": "transform",
    "inits": "init",
    "train": "",  # the `train:` options: read from the spec's own model, not the registry
}
_TITLES = {
    "layers": "Layers (`model:`)",
    "losses": "Losses (`loss:`)",
    "optimizers": "Optimizers (`optimizer:`)",
    "schedulers": "Schedulers (`scheduler:`)",
    "datasets": "Datasets (`data.dataset:`)",
    "transforms": "Transforms (`data.transforms:`)",
    "inits": "Init functions (`init:` rules)",
    "train": "Training options (`train:`)",
}


def arguments(entry: Entry) -> str:
    """``in_features (inferred), out_features, bias=True``: every argument a spec may give, with defaults."""
    parts = []
    for p in parameters(entry):
        text = p.name
        if p.name == entry.infer:
            text += " (inferred)"
        elif entry.params is not None and p.default is None:  # static torchvision signatures carry no defaults
            text += " (optional)"
        elif p.default is not inspect.Parameter.empty:
            try:
                text += "=" + literal(p.default)
            except TypeError:
                text += "=" + type(p.default).__name__
        parts.append(text)
    return ", ".join(parts)


def notes(entry: Entry) -> str:
    """The entry's traits in words (what validation and the backends do differently for it)."""
    said = []
    if entry.module and entry.module.startswith("torch"):
        said.append(f"`{entry.module}.{entry.class_name}`")
    elif entry.module == "compiler.runtime.layers":
        said.append("specc's own (copied into scripts)")
    elif not entry.module or entry.module == "compiler.runtime.helpers":
        said.append("specc's own")
    traits = {
        "returns_tuple": "returns (output, state): follow with `TupleItem: 0`",
        "takes_indices": "takes integer indices",
        "random": "random: left out of eval transforms",
        "fusable": "`speed: auto` fuses it",
        "graph_safe": "CUDA-graph safe",
        "test_split": "has a test split (validation set)",
        "norm": "normalisation: `train.no_decay: [norm]` names it",
    }
    said += [text for name, text in traits.items() if getattr(entry, name)]
    if entry.kind == "scheduler":
        said.append(
            {"epoch": "steps per epoch", "batch": "steps per batch", "loss": "steps on the validation loss"}[
                entry.steps
            ]
        )
    if entry.targets:
        said.append(
            {
                "classes": "targets: class labels",
                "values": "targets: values of the output's shape",
                "probabilities": "targets: probabilities of the output's shape",
            }[entry.targets]
        )
    if entry.replaced_by:
        said.append(f"old name of {entry.replaced_by}")
    return "; ".join(said)


def rows(kind: str) -> list[tuple[str, str, str]]:
    if kind == "train":
        return train_rows()
    return [(e.name, arguments(e), notes(e)) for e in REGISTRY.entries(KINDS[kind])]


def train_rows() -> list[tuple[str, str, str]]:
    """(key, default, what it does) of every `train:` option, from ``TrainSpec`` itself."""
    from compiler.front.spec import TrainSpec

    table = []
    for name, field in TrainSpec.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "off" if default is None else str(default).lower() if isinstance(default, bool) else literal(default)
        table.append((name, f"default {shown}", field.description or ""))
    return table


def listing(kind: str) -> str:
    """Plain text for ``specc list KIND``."""
    table = rows(kind)
    width = max(len(name) for name, _, _ in table)
    lines = [_TITLES[kind].split(" (")[0] + ":"]
    for name, args, note in table:
        lines.append(f"  {name:<{width}}  ({args})" + (f"  -- {note}" if note else ""))
    return "\n".join(lines)


def markdown() -> str:
    """docs/reference.md: every name a spec may use, its arguments and defaults, what is inferred."""
    out = [
        "# Reference",
        "",
        (
            "Every name a spec may use, generated from specc's registry (`python -m compiler.cli.reference > "
            "docs/reference.md`; a test keeps it in sync). Arguments are the class's own, in torch's order, with "
            "their defaults; `(inferred)` marks the size shape inference fills when it is left out. "
            "`specc list KIND` prints the same in a terminal."
        ),
        "",
    ]
    for kind in KINDS:
        out += [f"## {_TITLES[kind]}", "", "| name | arguments | notes |", "| --- | --- | --- |"]
        out += [f"| `{n}` | {a.replace('|', '/')} | {t} |" for n, a, t in rows(kind)]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
