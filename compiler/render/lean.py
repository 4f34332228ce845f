"""The lean flavour of the generated script (``specc generate --lean``, ``render_script(spec, lean=True)``).

nanoGPT-style: settings on top, the model, the data, one straight training loop with evaluation, and a plain
``torch.save`` checkpoint that the next run resumes from. It shares the full flavour's model and data code
(``script.py``) and copies only the runtime helpers the spec's data or optimizer need, so it builds the same
model, initialisation and batches as the compiled objects (docs/spec-language.md §8; tests/test_lean.py).
What only the full flavour does (speed options, TensorBoard, mid-epoch checkpoints, torchrun) is named in the
script's docstring rather than silently dropped.
"""

from __future__ import annotations

from compiler.common.literal import literal
from compiler.front.spec import RESERVED_NAMES
from compiler.lower.ir import Program, TrainingIR
from compiler.render import script
from compiler.render.emit import emit_model


def render_lean(program: Program) -> str:
    """The lean script; a spec without training sections gets the model file, which is lean already."""
    spec, training = program.spec, program.training
    if training is None:
        return script.render(program)
    if training.outputs is not None or training.data.several_inputs:
        from compiler.errors import SpecError

        several = "outputs" if training.outputs is not None else "inputs"
        problem = spec.source.problem(
            ("model",),
            f"the lean script trains a model of one input and one output; this one has several {several}",
            "generate the full script (without --lean), which trains it",
        )
        raise SpecError([problem])
    code = emit_model(program.model, RESERVED_NAMES | frozenset(spec.vars))
    data, steps = training.data, training.scheduler_steps
    context = {
        "docstring": _docstring(program),
        "variables": script._variables(spec),
        "model": code,
        "settings": script._align(_settings(program)),
        "transforms_code": script._transforms_function(data, False),
        "data_code": script._data_function(data, False),
        "train_loader": _train_loader(training),
        "loss_code": script.loss_source(training, "DEVICE"),
        "optimizer_code": script._call(training.optimizer, _parameters(training)),
        **script._loop_context(training),
        "scheduler_code": _scheduler_code(training),
        "freeze": bool(training.run.freeze),
        "early_stop": training.run.early_stop is not None,
        "best": training.run.best is not None,
        "history": training.run.early_stop is not None or training.run.best is not None,
        "scheduler_per_step": steps == "batch",
        "scheduler_per_epoch": steps == "epoch",
        "scheduler_on_loss": steps == "loss",
        "validation": bool(data.validation),
        "accuracy": "accuracy" in training.train.metrics,
        "val_message": script._training_context(spec, training)["val_message"],
        "helpers_line": script.HELPERS_LINE,
    }
    loads = ("load_weights",) if program.model.load else ()  # init: - {from: PATH}
    return script._render("lean.py.j2", context, code, _helper_roots(training) + loads)


def _scheduler_code(training: TrainingIR) -> str:
    """The scheduler's construction ("" without one): the full flavour's, with no scheduler left as ""."""
    code = script._loop_context(training)["scheduler_code"]
    return "" if code == "None" else code


def _helper_roots(training: TrainingIR) -> tuple[str, ...]:
    """Only what the data and the optimizer call: the lean loop itself is plain torch."""
    data = training.data
    roots = [*data.dataset.entry.runtime, *training.optimizer.entry.runtime, *script.run_roots(training)]
    roots += ["check_schedule_length"] if training.loop.fixed_length else []
    roots += ["class_weights"] if data.class_weights is not None else []
    return (*roots, "split_indices") if data.validation == "val_split" else tuple(roots)


def _parameters(training: TrainingIR) -> str:
    """What the optimizer updates (no torchrun here: the model is never wrapped)."""
    return script.parameters_source(training).replace("param_groups(unwrap(model)", "param_groups(model")


def full_only(training: TrainingIR) -> list[str]:
    """The spec's features the lean script leaves to the full flavour, in words (empty: none)."""
    train, speed, checkpoint = training.train, training.speed, training.train.checkpoint
    left = []
    if speed.fast or speed.reuse_memory or speed.cudnn_benchmark:
        left.append("the speed options (this loop runs in fp32)")
    if "tensorboard" in train.log:
        left.append("TensorBoard logging")
    if "mlflow" in train.log:
        left.append("MLflow tracking")
    if checkpoint and (checkpoint.every != 1 or checkpoint.every_steps):
        left.append("checkpoint.every/every_steps (this one saves after every epoch)")
    if train.sync_batchnorm:
        left.append("sync_batchnorm (torchrun)")
    return left


def _docstring(program: Program) -> str:
    spec, name = program.spec, program.spec.name
    title = f"{spec.name}: " + (spec.description or "a network compiled by specc")
    source = script._display_path(spec.source.filename)
    lines = [
        script._safe_doc(title),
        "",
        f"Generated by specc from {script._safe_doc(source)} (--lean); edit it freely.",
    ]
    left = full_only(program.training)
    if left:
        lines.append(script._safe_doc("Left to the full flavour (specc generate without --lean): " + "; ".join(left)))
    return "\n".join([*lines, f"Train, or resume from {name}.pt: python {name}.py"])


def _settings(program: Program) -> list[tuple[str, str, str]]:
    spec, training = program.spec, program.training
    data, train = training.data, training.train

    def value(path: tuple, default) -> str:  # symbolic where the spec wrote `$var` or arithmetic
        return spec.symbols.get(path, literal(default))

    device = '"cuda" if torch.cuda.is_available() else "cpu"' if train.device == "auto" else literal(train.device)
    settings = [
        ("SEED", value(("seed",), spec.seed), ""),
        ("EPOCHS", value(("train", "epochs"), train.epochs), ""),
        ("BATCH_SIZE", value(("data", "batch_size"), data.batch_size), _BATCH_COMMENT[train.mode]),
        ("SHUFFLE", literal(data.shuffle), ""),
        ("LOG_EVERY", value(("train", "log_every"), train.log_every), "steps between loss lines"),
        ("DEVICE", device, ""),
        ("CHECKPOINT", literal(f"{spec.name}.pt"), "written after every epoch; train() resumes from it"),
    ]
    if training.run.best is not None:
        settings.append(("BEST_CHECKPOINT", literal(f"{spec.name}_best.pt"), "the best epoch's state"))
    settings += script.run_settings(training)
    if data.num_workers:
        settings.insert(4, ("NUM_WORKERS", value(("data", "num_workers"), data.num_workers), "loader processes"))
    if data.val_split:
        settings.insert(4, ("VAL_SPLIT", value(("data", "val_split"), data.val_split), "held-out fraction"))
    return settings + script.loop_settings(spec, training.loop, training.scheduler_steps)


_BATCH_COMMENT = {
    "minibatch": "",
    "batch": "for evaluation: each update sees the whole training set (mode: batch)",
    "online": "for evaluation: each update sees one sample (mode: online)",
}


def _train_loader(training: TrainingIR) -> str:
    """The training DataLoader as ``runtime.make_loaders`` builds it: the same batches in the same order."""
    mode, generator = training.train.mode, "generator=torch.Generator().manual_seed(SEED)"  # seeded shuffling
    if mode == "batch":
        return f"DataLoader(train_set, len(train_set), shuffle=False, {generator})"
    size = "1" if mode == "online" else "BATCH_SIZE"
    workers = "num_workers=NUM_WORKERS, " if training.data.num_workers and mode == "minibatch" else ""
    return f"DataLoader(train_set, {size}, shuffle=SHUFFLE, {workers}{generator})"
