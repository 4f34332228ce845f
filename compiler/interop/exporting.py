"""Export a spec's model (optionally with trained weights) to ONNX or a ``torch.export`` program (``.pt2``).

    compiler.export("specs/mnist_cnn.yaml", "mnist_cnn.onnx", format="onnx", checkpoint="runs/mnist_cnn/checkpoint.pt")
    specc export specs/mnist_cnn.yaml --format onnx --checkpoint runs/mnist_cnn/checkpoint.pt -o mnist_cnn.onnx

Each file is checked before it is kept: the ONNX file is run with onnxruntime and the ``.pt2`` file is loaded
back with ``torch.export.load``, both on a sample whose batch size differs from the one exported with (the
batch dimension is dynamic), and compared with torch's outputs within ``RTOL``/``ATOL``. A model of several
inputs (§15) is exported with one example tensor per input, in the spec's order, their batch dimension one
shared size; a tuple or dict output is compared output by output, flattened in order. ONNX names the inputs
as the spec does (``input`` when `input:` is a plain shape) and the outputs by their dict keys or tuple value
names (``output`` for one); a nested tuple's parts get ``name.0``, ``name.1``, and a name taken already a
``_1`` suffix (ONNX names are unique in a graph). The file is written
to a temporary name beside the target and renamed into place (``os.replace``), so a failed export leaves no
partial file. This module is imported only by ``compiler.export()`` and ``specc export``: ``import compiler``
and ``specc validate`` never load it, or onnx.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import keyword
import os
import tempfile
import warnings
from dataclasses import dataclass, field
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
    max_abs_diff: float  # between torch and the exported file's outputs on the check sample (the largest)
    rtol: float = RTOL
    atol: float = ATOL
    inputs: list[str] = field(default_factory=list)  # the file's input names (pt2: the forward's arguments)
    outputs: list[str] = field(default_factory=list)  # the outputs' names, flattened in order (ONNX's names)


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


def _samples(program: Any, batch: int) -> tuple:
    """One example tensor per model input, in the forward's order: int64 zeros for a model that takes indices
    (an Embedding first), else a seeded normal sample."""
    import torch

    shapes = program.model.inputs
    if not shapes or any(shape is None for shape in shapes.values()):
        raise ExportError(f"{program.spec.source.filename}: the spec has no `input:` shape to export with")
    generator = torch.Generator().manual_seed(0)
    dtypes = program.model.input_dtypes
    return tuple(
        torch.zeros(batch, *shape, dtype=torch.int64)
        if dtypes.get(name, program.model.input_dtype) == "int64"
        else torch.randn(batch, *shape, generator=generator)
        for name, shape in shapes.items()
    )


def _input_names(program: Any) -> list[str]:
    """The spec's input names when `input:` names them, else today's single ``input``."""
    if isinstance(program.spec.input, dict):
        return list(program.model.inputs)
    return ["input"]


def _name_arguments(model: Any, names: list[str]) -> None:
    """Give this model's ``forward`` the spec's input names as its signature, which torch.export names the
    program's inputs after (the compiled model's forward of several inputs takes ``a, b, ...``)."""
    if not all(name.isidentifier() and not keyword.iskeyword(name) and name != "self" for name in names):
        return
    method = type(model).forward
    if len(inspect.signature(method).parameters) != len(names) + 1:
        return

    def forward(*args):
        return method(model, *args)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    forward.__signature__ = inspect.Signature([inspect.Parameter(name, kind) for name in names])  # type: ignore[attr-defined]
    model.forward = forward


def _returned_names(program: Any) -> list[str] | None:
    """The names of what eval mode returns when it is a tuple or a dict (`eval_output:` if given, else
    `output:`): the tuple's value names or the dict's keys; None for one value."""
    from compiler.lower.ir import GraphIR

    root = program.model.root
    if not isinstance(root, GraphIR):
        return None
    if root.eval_outputs is not None:
        return list(root.eval_outputs) if root.eval_tuple else None
    if root.outputs is not None:
        return list(root.output_keys if root.output_keys is not None else root.outputs)
    return None


def _flatten(value: Any, names: list[str] | None, prefix: str = "") -> list[tuple[str, Any]]:
    """``value`` (a tensor, or a tuple or dict of them, nested) as (name, tensor) pairs in order. At the top
    (no ``prefix``) one tensor is ``output``, a dict's parts are named by key and a tuple's by ``names``
    (``output.0``, ... if they do not fit); below, ``prefix.key`` and ``prefix.i``."""
    import torch

    if isinstance(value, torch.Tensor):
        return [(prefix or "output", value)]
    if isinstance(value, dict):
        keys, parts = [str(key) for key in value], list(value.values())
    elif isinstance(value, (tuple, list)):
        parts = list(value)
        if not prefix and names is not None and len(names) == len(parts):
            keys = list(names)
        else:
            keys = [f"{prefix or 'output'}.{i}" for i in range(len(parts))]
            prefix = ""
    else:
        raise ExportError(f"the model returns a {type(value).__name__}, not tensors; it cannot be exported")
    if prefix:
        keys = [f"{prefix}.{key}" for key in keys]
    return [pair for key, part in zip(keys, parts) for pair in _flatten(part, None, key)]


def _unique(names: list[str], taken: list[str]) -> list[str]:
    """``names`` with a ``_1``, ``_2``, ... suffix on each that ``taken`` or an earlier one already has."""
    used, out = set(taken), []
    for name in names:
        new, k = name, 0
        while new in used:
            k += 1
            new = f"{name}_{k}"
        used.add(new)
        out.append(new)
    return out


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
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; name the file to write, e.g. -o {path / program.spec.name}.{format}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=f".{format}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        x, check = _samples(program, 2), _samples(program, 3)
        with torch.no_grad():
            try:
                expected = _flatten(model(*check), _returned_names(program))
            except ExportError:
                raise
            except Exception as err:
                raise ExportError(
                    f"the model fails on its example input: {type(err).__name__}: {_first_line(err)}"
                ) from None
        inputs = _input_names(program)
        outputs = _unique([name for name, _ in expected], inputs)
        if format == "onnx":
            diff = _onnx(model, x, check, expected, tmp, opset, inputs, outputs)
        else:
            if isinstance(program.spec.input, dict):
                _name_arguments(model, inputs)
            diff = _pt2(model, x, check, expected, tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with contextlib.suppress(FileNotFoundError):
            Path(str(tmp) + ".data").unlink()
    if format == "pt2":  # the program takes the forward's arguments and returns what it returns
        inputs = list(inspect.signature(model.forward).parameters)
    return ExportResult(path, format, diff, inputs=inputs, outputs=outputs)


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


def _compare(expected: list[tuple[str, Any]], got: list[Any], what: str) -> float:
    """Each of torch's outputs against the exported file's, in order; the largest difference."""
    import numpy as np

    if len(got) != len(expected):
        raise ExportError(f"{what} gives {len(got)} outputs, torch {len(expected)}; nothing was written")
    largest = 0.0
    for (name, want), have in zip(expected, got):
        want, have = want.detach().cpu().numpy(), np.asarray(have)
        which = f"{what}, output {name!r}," if len(expected) > 1 else what
        if not np.isfinite(want).all():
            whose = f"output {name!r} holds" if len(expected) > 1 else "outputs hold"
            raise ExportError(
                f"the model's own {whose} NaN or infinity on the check sample (its weights?), so the export "
                "cannot be checked; nothing was written"
            )
        if want.shape != have.shape:
            raise ExportError(f"{which} gives shape {list(have.shape)}, torch {list(want.shape)}; nothing was written")
        diff = float(np.max(np.abs(want.astype(np.float64) - have.astype(np.float64)))) if want.size else 0.0
        if not np.allclose(have, want, rtol=RTOL, atol=ATOL):
            raise ExportError(
                f"{which} differs from torch by up to {diff:.3g} (tolerance rtol={RTOL}, atol={ATOL}); nothing was written"
            )
        largest = max(largest, diff)
    return largest


def _batch_dims(count: int) -> tuple:
    """Every input's first dimension dynamic, one shared batch size."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    return tuple({0: batch} for _ in range(count))


def _onnx(model, x, check, expected, tmp: Path, opset: int | None, inputs: list[str], outputs: list[str]) -> float:
    import onnxruntime
    import torch

    try:
        with _quiet():
            kwargs = {"opset_version": opset} if opset else {}
            program = torch.onnx.export(
                model,
                x,
                dynamo=True,
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=_batch_dims(len(x)),
                **kwargs,
            )
            program.save(str(tmp))
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"torch.onnx.export failed: {type(err).__name__}: {_first_line(err)}") from None
    try:
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        if names != inputs:
            raise ExportError(f"the ONNX model takes inputs {names}, not {inputs}; nothing was written")
        got = session.run(None, {name: t.numpy() for name, t in zip(names, check)})
        written = [o.name for o in session.get_outputs()]
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"onnxruntime cannot run the ONNX model: {type(err).__name__}: {_first_line(err)}") from None
    if len(written) == len(outputs) and written != outputs:
        raise ExportError(f"the ONNX model names its outputs {written}, not {outputs}; nothing was written")
    return _compare(expected, got, "the ONNX model (onnxruntime)")


def _pt2(model, x, check, expected, tmp: Path) -> float:
    import torch

    try:
        with _quiet():
            try:
                program = torch.export.export(model, x, dynamic_shapes=_batch_dims(len(x)))
            except Exception:
                program = torch.export.export(model, check)
            torch.export.save(program, str(tmp))
            loaded = torch.export.load(str(tmp))
            with torch.no_grad():
                got = loaded.module()(*check)
    except Exception as err:
        raise ExportError(f"torch.export failed: {type(err).__name__}: {_first_line(err)}") from None
    return _compare(expected, [t for _, t in _flatten(got, None)], "the torch.export program loaded back")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
