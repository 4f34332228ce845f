"""Training a model of several outputs (§15): a loss per output by name, their weights, the target each reads.

The data gives one target a sample, which every output is compared with (GoogLeNet's auxiliary heads learn the
label too), or one per output (a CSV's `target: [species, petal_width]`, in the outputs' order). Each output's
loss is checked against its output's shape and its target as §5 checks one loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from compiler.common.suggest import did_you_mean
from compiler.front.spec import Spec
from compiler.lower.ir import CallIR, DataIR, ModelIR, OutputLossIR, OutputsIR


def lower_outputs(spec: Spec, model: ModelIR, data: DataIR, bind: Callable, checker: Any) -> OutputsIR | None:
    """The per-output losses of ``spec`` for ``model``'s outputs; None when a problem is reported."""
    problems = checker.problems
    outputs = model.outputs or {}
    names = list(outputs)
    if not spec.losses:
        problems.fail(
            ("loss",),
            f"the model has {len(names)} outputs ({', '.join(names)}); `loss:` gives one loss per output, by name",
            f"write `loss: {{{', '.join(f'{n}: CrossEntropyLoss' for n in names)}}}`",
        )
        return None
    given = dict(spec.losses)
    before = problems.count()
    _names_match(problems, given, spec.loss_weights or {}, names)
    eval_names = _eval_names(problems, model, names)
    columns = data.target_classes
    if columns is not None and len(columns) != len(names):
        problems.fail(
            data.dataset.yaml_path + ("target",),
            f"`target:` names {len(columns)} columns, but the model has {len(names)} outputs ({', '.join(names)})",
            "give one target column per output, in the outputs' order",
        )
    if problems.count() > before:
        return None
    losses = []
    for k, name in enumerate(names):
        loss = bind(given[name])
        if loss is None:
            return None
        kind = _targets(checker, data, loss, outputs[name], columns[k] if columns is not None else None)
        weight = (spec.loss_weights or {}).get(name, 1.0)
        losses.append(OutputLossIR(name, loss, float(weight), kind == "classes"))
    _kinds(problems, data, losses, columns)
    return OutputsIR(losses, eval_names) if problems.count() == before else None


def _names_match(problems: Any, given: dict, weights: dict, names: list[str]) -> None:
    for what, mapping in (("loss", given), ("loss_weights", weights)):
        for name in mapping:
            if name not in names:
                problems.fail(
                    (what, name),
                    f"the model has no output {name!r}",
                    did_you_mean(name, names, f"its outputs: {', '.join(names)}"),
                )
    missing = [n for n in names if n not in given]
    if missing:
        problems.fail(
            ("loss",),
            f"`loss:` gives no loss for output {missing[0]!r}",
            f"add `{missing[0]}: <a loss>` (a weight of 0 in `loss_weights:` leaves it out of the sum)",
        )


def _eval_names(problems: Any, model: ModelIR, names: list[str]) -> list[str]:
    """The outputs eval mode returns, by output name; each must be one of training mode's (it has a loss)."""
    root = model.root
    values = list(root.outputs or [])  # type: ignore[union-attr]
    evaluated = root.eval_outputs if root.eval_outputs is not None else values  # type: ignore[union-attr]
    out = []
    for value in evaluated:
        if value not in values:
            problems.fail(
                ("model", "eval_output"),
                f"eval mode returns {value!r}, which is not one of the outputs the losses name",
                "return outputs of training mode in eval mode too (they have a loss, and validation reads it)",
            )
            continue
        out.append(names[values.index(value)])
    return out


def _targets(checker: Any, data: DataIR, loss: CallIR, out: tuple | None, classes: int | None | str) -> str:
    """Check one output's loss against its target: the data's one target, or its own column's (``classes``)."""
    if classes is None and data.target_classes is None:
        target = data
    else:  # the column's own classes, as a one-target CSV's
        target = dataclasses.replace(data, num_classes=classes, targets="classes")
    if loss.entry.targets == "classes":
        checker.class_targets(target, loss, out)
    elif loss.entry.targets in ("values", "probabilities"):
        checker.value_targets(target, loss, out)
    return target.targets


def _kinds(problems: Any, data: DataIR, losses: list[OutputLossIR], columns: tuple | None) -> None:
    """The targets' kinds the script reads: one per column, or the one every output shares (which must agree)."""
    kinds = ["classes" if item.accuracy else "values" for item in losses]
    if columns is not None:
        data.target_kinds = kinds
        return
    if len(set(kinds)) > 1:
        problems.fail(
            ("loss",),
            f"the outputs share the data's one target, but {losses[kinds.index('values')].loss.name} compares "
            f"values with it while {losses[kinds.index('classes')].loss.name} takes class labels",
            "give every output a classification loss, or one target column per output (CSV `target: [a, b]`)",
        )
    data.targets = kinds[0]
