"""Every registered optimizer and scheduler trains a small spec, and the compiled and generated backends agree on it
at every level of spec-language.md §8 (types, hyperparameters, first batches, the weights after training steps).

Registering an optimizer or a scheduler (one `Entry` in compiler/facts/registry.py) makes these tests ask for a row in the
table below: the arguments it needs, if any. Nothing else is needed for it to be checked end to end.
"""

from __future__ import annotations

import pytest

import compiler
from compiler.facts.registry import REGISTRY
from compiler.workflow.check import compare

SPEC = """\
name: registry_{kind}
seed: 3
input: [6]
model:
  - Linear: {{out_features: 8}}
  - ReLU
  - Linear: {{out_features: 3}}
data:
  dataset: {{Synthetic: {{size: 40, inputs: [6], classes: 3}}}}
  batch_size: 8
  val_split: 0.25
loss: CrossEntropyLoss
optimizer: {optimizer}
{scheduler}train: {{epochs: 2, device: cpu}}
"""

# the arguments each one needs (the rest keep torch's defaults)
OPTIMIZERS = {
    "SGD": "{SGD: {lr: 0.1, momentum: 0.9}}",
    "Adam": "{Adam: {lr: 0.01}}",
    "AdamW": "{AdamW: {lr: 0.01}}",
    "Adagrad": "{Adagrad: {lr: 0.1}}",
    "RMSprop": "{RMSprop: {lr: 0.01}}",
    "Adadelta": "Adadelta",
    "Adamax": "Adamax",
    "NAdam": "NAdam",
    "RAdam": "RAdam",
    "ASGD": "ASGD",
    "Rprop": "Rprop",
    "Adafactor": "Adafactor",
    "GradientDescent": "{GradientDescent: {lr: 0.1}}",
}
SCHEDULERS = {
    "StepLR": "{StepLR: {step_size: 1}}",
    "MultiStepLR": "{MultiStepLR: {milestones: [1]}}",
    "ExponentialLR": "{ExponentialLR: {gamma: 0.5}}",
    "CosineAnnealingLR": "{CosineAnnealingLR: {T_max: 2}}",
    "CosineAnnealingWarmRestarts": "{CosineAnnealingWarmRestarts: {T_0: 1}}",
    "LinearLR": "LinearLR",
    "ConstantLR": "ConstantLR",
    "PolynomialLR": "{PolynomialLR: {total_iters: 2}}",
    "ReduceLROnPlateau": "ReduceLROnPlateau",
    "CyclicLR": "{CyclicLR: {base_lr: 0.01, max_lr: 0.1, step_size_up: 2}}",
    "OneCycleLR": "{OneCycleLR: {max_lr: 0.1, total_steps: 10}}",
}


def test_every_registered_optimizer_and_scheduler_has_a_row():
    assert set(OPTIMIZERS) == set(REGISTRY.names("optimizer"))
    assert set(SCHEDULERS) == set(REGISTRY.names("scheduler"))


def _agree(kind: str, optimizer: str, scheduler: str = "") -> None:
    text = SPEC.format(kind=kind, optimizer=optimizer, scheduler=f"scheduler: {scheduler}\n" if scheduler else "")
    spec = compiler.parse_spec(text, f"{kind}.yaml")
    checks = compare(spec, steps=3)
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed, failed
    assert len(checks) == 6  # every level ran, training steps included


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_trains_the_same_in_both_backends(name):
    _agree(name.lower(), OPTIMIZERS[name])


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_trains_the_same_in_both_backends(name):
    _agree(name.lower(), "{SGD: {lr: 0.1}}", SCHEDULERS[name])
