"""Export a spec's model (optionally with trained weights) to ONNX or a ``torch.export`` program (``.pt2``).

    compiler.export("specs/mnist_cnn.yaml", "mnist_cnn.onnx", format="onnx", checkpoint="runs/mnist_cnn/checkpoint.pt")
    specc export specs/mnist_cnn.yaml --format onnx --checkpoint runs/mnist_cnn/checkpoint.pt -o mnist_cnn.onnx

Each file is checked before it is kept: the ONNX file is run with onnxruntime and the ``.pt2`` file is loaded
back with ``torch.export.load``, both on a sample whose batch size differs from the one exported with (the
batch dimension is dynamic), and compared with torch's outputs within ``RTOL``/``ATOL``. The file is written
to a temporary name beside the target and renamed into place (``os.replace``), so a failed export leaves no
partial file. This module is imported only by ``compiler.export()`` and ``specc export``: ``import compiler``
and ``specc validate`` never load it, or onnx.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("onnx", "pt2")
RTOL, ATOL = 1e-4, 1e-5  # onnxruntime's kernels differ from torch's in rounding; torch.export's run torch's own
MISSING = "ONNX export needs the optional packages onnx, onnxruntime and onnxscript: pip install 'specc[export]'"


class ExportError(RuntimeError):
    """An export that could not be done or did not check out; ``str`` is one line for the user."""


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # between torch and the exported file's outputs on the check sample
    rtol: float = RTOL
    atol: float = ATOL


def _state_dict(path: str | Path) -> dict:
    """The state dict a ``--checkpoint`` names -- a checkpoint file, a run folder, a folder of runs or its
    ``latest`` file, as for eval -- from specc's checksummed checkpoint or a plain ``torch.save`` file, read
    with the same bounds (a regular file, its size, no compressed entries) and tensors-only unpickling."""
    from compiler.runtime.helpers import find_checkpoint, load_checkpoint

    try:
        path = find_checkpoint(str(path))
        data = load_checkpoint(path)
    except ValueError as err:
        if "not a specc checkpoint" not in str(err):
            raise ExportError(str(err)) from None
        data = _plain_state(path)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not (isinstance(data, dict) and all(isinstance(k, str) for k in data)):
        raise ExportError(f"{path}: not a state dict or a checkpoint with a 'model' state dict")
    return data


def _plain_state(path: str, max_bytes: int = 1 << 36) -> Any:
    """A plain ``torch.save`` file: bounded like a checkpoint, and refused if an entry is compressed."""
    import zipfile

    import torch

    from compiler.runtime.helpers import read_regular, zip_entries

    try:
        data = read_regular(path, max_bytes, "checkpoint file")
    except ValueError as err:
        raise ExportError(str(err)) from None
    entries = zip_entries(data)
    if entries is None:
        raise ExportError(f"{path}: not a checkpoint or a torch.save file (no readable zip archive)")
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or sum(e.file_size for e in entries) > len(data):
        raise ExportError(f"{path}: compressed entries larger than the file (refused: a decompression bomb)")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ExportError(
            f"{path}: cannot read the checkpoint ({type(err).__name__}; only tensors and plain data)"
        ) from None


def _chosen(spec: Any, checkpoint: str | Path) -> str:
    """As eval and predict choose: a run folder's ``best.pt`` when the spec keeps one, else the file or last."""
    from compiler.pipeline import chosen_checkpoint

    try:
        return chosen_checkpoint(spec, checkpoint)
    except ValueError as err:
        raise ExportError(str(err)) from None


def _model(spec: Any, checkpoint: str | Path | None):
    import torch

    from compiler.pipeline import build_model, lower_spec

    program = lower_spec(spec)
    torch.manual_seed(program.spec.seed)
    model = build_model(program.spec)
    if checkpoint is not None:
        from compiler.interop.verify import state_dict_mismatch

        state = _state_dict(_chosen(program.spec, checkpoint))
        problem = state_dict_mismatch(model, state)
        if problem:
            raise ExportError(f"{checkpoint}: does not fit the spec's model: {problem}")
        model.load_state_dict(state, strict=True)
    return model.eval(), program


def _sample(program: Any, batch: int):
    import torch

    shape = program.model.input_shape
    if shape is None:
        raise ExportError(f"{program.spec.source.path}: the spec has no `input:` shape to export with")
    generator = torch.Generator().manual_seed(0)
    if program.model.input_dtype == "int64":
        return torch.zeros(batch, *shape, dtype=torch.int64)
    return torch.randn(batch, *shape, generator=generator)


def export(
    spec: Any, path: str | Path, format: str = "onnx", checkpoint: str | Path | None = None, opset: int | None = None
) -> ExportResult:
    """Write ``spec``'s model (with ``checkpoint``'s weights if given) to ``path``, checked, atomically."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}: use onnx or pt2")
    if format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ExportError(MISSING) from None
    import torch

    model, program = _model(spec, checkpoint)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=f".{format}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        x, check = _sample(program, 2), _sample(program, 3)
        with torch.no_grad():
            expected = model(check)
        if format == "onnx":
            diff = _onnx(model, x, check, expected, tmp, opset)
        else:
            diff = _pt2(model, x, check, expected, tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with contextlib.suppress(FileNotFoundError):
            Path(str(tmp) + ".data").unlink()
    return ExportResult(path, format, diff)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _quiet():
    """torch.onnx and torch.export print progress and warnings; the CLI prints one line instead."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def _compare(expected: Any, got: Any, what: str) -> float:
    import numpy as np

    expected = expected.detach().cpu().numpy()
    got = np.asarray(got)
    if not np.isfinite(expected).all():
        raise ExportError(
            "the model's own outputs hold NaN or infinity on the check sample (its weights?), so the export "
            "cannot be checked; nothing was written"
        )
    if expected.shape != got.shape:
        raise ExportError(f"{what} gives shape {list(got.shape)}, torch {list(expected.shape)}")
    diff = float(np.max(np.abs(expected.astype(np.float64) - got.astype(np.float64)))) if expected.size else 0.0
    if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
        raise ExportError(
            f"{what} differs from torch by up to {diff:.3g} (tolerance rtol={RTOL}, atol={ATOL}); nothing was written"
        )
    return diff


def _onnx(model, x, check, expected, tmp: Path, opset: int | None) -> float:
    import onnxruntime
    import torch

    try:
        with _quiet():
            kwargs = {"opset_version": opset} if opset else {}
            program = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},),
                **kwargs,
            )
            program.save(str(tmp))
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"torch.onnx.export failed: {type(err).__name__}: {_first_line(err)}") from None
    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: check.numpy()})
    return _compare(expected, got, "the ONNX model (onnxruntime)")


def _pt2(model, x, check, expected, tmp: Path) -> float:
    import torch

    try:
        with _quiet():
            try:
                program = torch.export.export(
                    model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},)
                )
            except Exception:
                program = torch.export.export(model, (check,))
            torch.export.save(program, str(tmp))
            loaded = torch.export.load(str(tmp))
            with torch.no_grad():
                got = loaded.module()(check)
    except Exception as err:
        raise ExportError(f"torch.export failed: {type(err).__name__}: {_first_line(err)}") from None
    return _compare(expected, got, "the torch.export program loaded back")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
