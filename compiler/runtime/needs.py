"""What each runtime helper needs: the other helpers it calls and the imports it reads (as a script spells them).

The renderer copies a helper into a generated script together with everything it needs (the closure over this
table), once each, in helpers.py's order, and writes the imports they read. The table is declared, not derived,
so that a reader sees the structure; tests/test_script_size.py holds every row to its helper's source.
"""

from __future__ import annotations

from typing import NamedTuple


class Needs(NamedTuple):
    helpers: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()


NEEDS: dict[str, Needs] = {
    # datasets and loaders
    "GradientDescent": Needs((), ("torch",)),
    "synthetic_dataset": Needs((), ("TensorDataset", "torch")),
    "read_csv": Needs(("csv_targets",), ("csv", "os", "torch")),
    "csv_targets": Needs((), ("torch",)),
    "csv_datasets": Needs(
        ("TargetsDataset", "apply_scaling", "fit_scaling", "read_csv", "split_indices"), ("TensorDataset",)
    ),
    "csv_image_datasets": Needs(("ImageRowsDataset", "csv_datasets")),
    "PairDataset": Needs(("dataset_labels",), ("torch",)),
    "pair_sets": Needs(("PairDataset",)),
    "TargetsDataset": Needs((), ("torch",)),
    "ImageRowsDataset": Needs(("open_image", "row_file"), ("torch",)),
    "row_file": Needs((), ("os",)),
    "open_image": Needs(("read_regular",), ("importlib", "io")),
    "OutputLosses": Needs((), ("torch",)),
    "to_device": Needs(),
    "metrics_text": Needs(),
    "evaluate_outputs": Needs(("over_ranks", "to_device", "unwrap"), ("torch",)),
    "text_datasets": Needs(
        ("build_vocab", "encode_texts", "read_texts", "split_indices", "text_tokens"), ("TensorDataset", "torch")
    ),
    "read_texts": Needs(("class_order", "folder_texts", "text_rows"), ("os",)),
    "class_order": Needs(),
    "folder_texts": Needs(("read_text",), ("os",)),
    "read_text": Needs(("read_regular",)),
    "text_rows": Needs(("read_text",), ("csv", "io")),
    "text_tokens": Needs((), ("re",)),
    "build_vocab": Needs(),
    "encode_texts": Needs(("text_tokens",), ("torch",)),
    "class_weights": Needs(("dataset_labels",), ("torch",)),
    "dataset_labels": Needs((), ("TensorDataset", "torch")),
    "fit_scaling": Needs(),
    "apply_scaling": Needs((), ("torch",)),
    "split_indices": Needs((), ("torch",)),
    "make_loaders": Needs((), ("DataLoader", "torch")),
    # speed (docs/spec-language.md §10)
    "DeviceLoader": Needs(("rank_part",), ("torch",)),
    "preload": Needs((), ("DataLoader", "torch")),
    "make_device_loaders": Needs(("DeviceLoader", "preload"), ("torch",)),
    "cpu_bf16": Needs((), ("torch",)),
    "reuse_freed_memory": Needs((), ("ctypes", "os")),
    "resolve_speed": Needs(("cpu_bf16",), ("torch",)),
    "GraphedStep": Needs((), ("torch",)),
    "record_losses": Needs((), ("torch",)),
    # loop options (issue 24)
    "check_finite": Needs((), ("os",)),
    "check_schedule_length": Needs(),
    "ema_weights": Needs(),
    # torchrun
    "torchrun_environment": Needs(("printable",), ("os",)),
    "setup_distributed": Needs(
        ("leave_process_group", "torchrun_environment"), ("atexit", "datetime", "os", "signal", "sys", "torch")
    ),
    "leave_process_group": Needs((), ("torch",)),
    "leader_first": Needs((), ("os", "torch")),
    "rank_part": Needs(),
    "RankBatches": Needs(("rank_part",)),
    "distribute": Needs(("RankBatches",), ("DataLoader", "random", "torch")),
    "unwrap": Needs((), ("torch",)),
    "over_ranks": Needs((), ("torch",)),
    "gather_ranks": Needs(("over_ranks", "random_states"), ("torch",)),
    "random_states": Needs((), ("random", "torch")),
    "own_random_states": Needs(("random_states",), ("torch",)),
    # runs and checkpoints
    "Run": Needs(
        (
            "check_state",
            "ema_weights",
            "gather_ranks",
            "identity",
            "identity_difference",
            "own_random_states",
            "random_states",
            "resume_optimizer",
            "save_checkpoint",
            "unwrap",
            "weights_difference",
            "write_metrics",
        ),
        ("os", "random", "torch"),
    ),
    "resume_optimizer": Needs(),
    # run options (issue 24): early stopping, the best checkpoint, parameter groups, fine-tuning
    "early_stopped": Needs(),
    "is_best": Needs(),
    "save_best": Needs((), ("os",)),
    "matches": Needs((), ("fnmatch",)),
    "param_groups": Needs(("matches",)),
    "freeze": Needs(("matches",), ("torch",)),
    "zip_entries": Needs((), ("io", "zipfile")),
    "read_weights": Needs(("read_regular", "zip_entries"), ("io", "pickle", "torch", "zipfile")),
    "load_weights": Needs(("read_weights", "weights_report")),
    "weights_report": Needs(),
    "identity": Needs(),
    "identity_difference": Needs(),
    "data_info": Needs(),
    "write_atomic": Needs((), ("os", "tempfile")),
    "save_checkpoint": Needs(("mark_latest", "write_atomic"), ("hashlib", "io", "os", "torch")),
    "load_checkpoint": Needs(("read_regular", "zip_entries"), ("hashlib", "io", "torch", "zipfile")),
    "save_weights": Needs(("unwrap", "write_atomic"), ("io", "torch")),
    "write_metrics": Needs(("write_atomic",), ("csv", "io", "json", "os")),
    "write_tensorboard": Needs((), ("sys",)),
    "require_mlflow": Needs((), ("importlib",)),
    "log_mlflow": Needs(("require_mlflow",), ("os",)),
    "new_run_folder": Needs((), ("os",)),
    "check_out_folder": Needs(("printable",), ("os",)),
    "read_regular": Needs((), ("os", "stat")),
    "check_state": Needs(("text_info_ok",), ("torch",)),
    "text_info_ok": Needs(),
    "weights_difference": Needs(),
    "latest_run": Needs(("read_regular",), ("os",)),
    "mark_latest": Needs(("latest_run", "write_atomic"), ("importlib", "os")),
    "find_checkpoint": Needs(("latest_run",), ("os",)),
    "progress_bar": Needs((), ("importlib", "sys")),
    # prediction, errors, devices
    "predict": Needs(("model_inputs", "predictions")),
    "model_inputs": Needs(("csv_inputs", "image_inputs", "text_inputs")),
    "predictions": Needs(("label_rows", "printable")),
    "printable": Needs(),
    "predict_rows": Needs(("label_rows", "model_inputs")),
    "label_rows": Needs(("label_outputs",), ("torch",)),
    "label_outputs": Needs((), ("torch",)),
    "image_inputs": Needs(("image_sample",), ("datasets", "os")),
    "csv_inputs": Needs(("csv_samples",)),
    "text_inputs": Needs(("encode_texts", "read_text", "text_rows"), ("os",)),
    "image_sample": Needs(("open_image",), ("torch",)),
    "csv_samples": Needs(("apply_scaling", "csv_row", "read_regular", "row_image"), ("csv", "io", "os", "torch")),
    "row_image": Needs(("image_sample", "row_file")),
    "csv_row": Needs(),
    "explain": Needs(("failure",), ("sys",)),
    "failure": Needs((), ("errno", "os", "signal", "sys", "torch")),
    "pick_device": Needs((), ("torch",)),
}


def closure(roots) -> set[str]:
    """The helpers ``roots`` name, with every helper they need, transitively."""
    wanted, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += NEEDS[name].helpers
    return wanted
