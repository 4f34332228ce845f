"""The ``specc`` command. Prints problems as ``file:line:col: message``; never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
from pathlib import Path

from compiler.errors import SpecError, visible


def _parse_bytes(text: str) -> int:
    units = {
        "": 1,
        "b": 1,
        "k": 1 << 10,
        "kb": 1 << 10,
        "kib": 1 << 10,
        "m": 1 << 20,
        "mb": 1 << 20,
        "mib": 1 << 20,
        "g": 1 << 30,
        "gb": 1 << 30,
        "gib": 1 << 30,
        "t": 1 << 40,
        "tb": 1 << 40,
        "tib": 1 << 40,
    }
    stripped = text.strip().lower()
    number = stripped.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = stripped[len(number) :].strip()
    try:
        if unit not in units:
            raise ValueError
        return int(float(number) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 8GiB, 500MB)") from None


def _report(err: SpecError) -> None:
    for problem in err.problems:
        print(problem, file=sys.stderr)
        excerpt = err.excerpt(problem)
        if excerpt:
            print(excerpt, file=sys.stderr)


def _warn(spec) -> None:
    from compiler.pipeline import lower_spec

    for problem in lower_spec(spec).warnings:
        print(problem, file=sys.stderr)


def _load(path: str, args: argparse.Namespace):
    import warnings

    from compiler.pipeline import load_spec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the CLI prints them itself, located
        spec = load_spec(path, max_bytes=getattr(args, "max_memory", None), overrides=getattr(args, "set", None) or ())
    _warn(spec)
    return spec


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.specs:
        try:
            _load(path, args)
        except SpecError as err:
            _report(err)
            failed += 1
    n = len(args.specs)
    if failed:
        print(f"{failed} of {n} spec{'s' if n > 1 else ''} invalid", file=sys.stderr)
        return 1
    print(f"OK: {n} spec{'s' if n > 1 else ''} valid")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from compiler.cli.summary import print_summary
    from compiler.pipeline import lower_spec

    spec = _load(args.spec, args)
    print_summary(lower_spec(spec).model, title=f"{spec.name} ({args.spec})")
    return 0


class OutputError(Exception):
    """An output file specc will not or cannot write; the message is one line naming the path."""


def write_atomically(path: Path, text: str, confine: bool = False) -> None:
    """Write ``text`` to ``path`` by a temporary file in the same folder, fsync and ``os.replace``.

    Never through a symbolic link (a link at ``path`` is refused, not followed), never over a
    directory or a device (``/dev/full``), and with ``confine`` never outside the folder specc runs
    in. On any failure (full disk, read-only folder) the old file is left as it was and the
    temporary file is removed. Raises ``OutputError``.
    """
    from compiler.common.paths import file_kind, inside

    name = visible(str(path))
    if confine and not inside(path.parent if str(path.parent) else "."):
        raise OutputError(f"cannot write {name}: its folder leaves the folder specc runs in (a symbolic link)")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as err:
        raise OutputError(f"cannot write {name}: {err.strerror}") from None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise OutputError(f"cannot write {name}: it is a symbolic link (specc does not write through links)")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise OutputError(f"cannot write {name}: it is {file_kind(info.st_mode)}, not a regular file")
    folder = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as file:
            file.write(text.encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (info.st_mode & 0o7777) if info is not None else 0o666 & ~umask)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise OutputError(f"cannot write {name}: {reason}; the old file, if any, is unchanged") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    with contextlib.suppress(OSError):  # make the rename durable; best effort where folders cannot be opened
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def cmd_generate(args: argparse.Namespace) -> int:
    from compiler.pipeline import render_script

    spec = _load(args.spec, args)
    out = Path(args.output) if args.output else Path("generated", "lean" if args.lean else "") / f"{spec.name}.py"
    if args.output and (args.output.endswith(("/", os.sep)) or (out.is_dir() and not out.is_symlink())):
        out = out / f"{spec.name}.py"  # `-o gen/`: the script goes into the folder, named after the spec
    text = render_script(spec, lean=args.lean)
    try:
        write_atomically(out, text, confine=not args.output)
    except OutputError as err:
        print(f"specc: {err}", file=sys.stderr)
        return 1
    print(f"wrote {visible(str(out))} ({len(text.splitlines())} lines)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from compiler.workflow.runs import train_from_spec

    if args.epochs is not None:  # validated like the file: `--epochs 0` is an error, not an empty run
        args.set = [*(args.set or []), f"train.epochs={args.epochs}"]
    spec = _load(args.spec, args)
    if spec.train is None:
        raise SpecError(
            [
                spec.source.problem(
                    (),
                    "this spec has no training sections, so there is nothing to train",
                    "add data, loss, optimizer and train (docs/spec-language.md §4-6), or "
                    "use `specc generate` for the model's module",
                )
            ],
            spec.source.text,
            spec.source.texts,
        )
    if args.debug:
        os.environ["SPECC_DEBUG"] = "1"
    return train_from_spec(spec, args)


def _checkpoint_errors(work, args: argparse.Namespace) -> int:
    """Run ``work()``: a bad checkpoint or input is one line and exit 1, never a traceback (unless --debug)."""
    try:
        return work()
    except (ValueError, OSError) as err:
        if args.debug:
            raise
        print(f"specc {args.command}: {err}", file=sys.stderr)
        return 1


def cmd_eval(args: argparse.Namespace) -> int:
    from compiler.workflow.runs import evaluate

    spec = _load(args.spec, args)

    def work() -> int:
        result = evaluate(spec, args.checkpoint, args.split, args.device)
        print(
            f"{args.split} loss {result['loss']:.6f}"
            + (f", {args.split} accuracy {result['accuracy']:.2%}" if "accuracy" in result else "")
        )
        return 0

    return _checkpoint_errors(work, args)


def cmd_predict(args: argparse.Namespace) -> int:
    from compiler.runtime.helpers import write_atomic
    from compiler.workflow.runs import predict

    spec = _load(args.spec, args)

    def work() -> int:
        rows = predict(spec, args.checkpoint, args.inputs, args.device)
        for name, prediction in rows:
            print(f"{name}: {prediction}")
        if args.output:
            lines = ["input,prediction"] + [f'"{n.replace(chr(34), chr(34) * 2)}","{p}"' for n, p in rows]
            write_atomic(args.output, ("\n".join(lines) + "\n").encode())
            print(f"wrote {args.output} ({len(rows)} predictions)")
        return 0

    return _checkpoint_errors(work, args)


# `specc check` builds the data, and CI may run it on specs from pull requests: it downloads nothing, reads
# nothing outside the folder it runs in, and builds no dataset larger than this many values.
CHECK_MAX_VALUES = 1 << 26


def cmd_check(args: argparse.Namespace) -> int:
    from compiler.workflow.check import run_checks

    spec = _load(args.spec, args)
    if spec.data is not None and spec.data.dataset.kwargs.get("download"):
        # the same spec, with download off: both backends then read only files already here
        args.set = [*(args.set or []), f"data.dataset.{spec.data.dataset.type}.download=false"]
        spec = _load(args.spec, args)
    _check_untrusted_data(spec)
    return run_checks(spec, steps=args.steps)


def _check_untrusted_data(spec) -> None:
    """The data `specc check` would build stays inside the project and small (located errors otherwise)."""
    import math

    from compiler.common.paths import inside

    if spec.data is None:
        return
    dataset = spec.data.dataset
    where = dataset.yaml_path + (dataset.type,)
    root = dataset.kwargs.get("root")
    problems = []
    if isinstance(root, str) and not inside(root):
        problems.append(
            spec.source.problem(
                where + ("root",),
                f"specc check reads no data outside the folder it runs in, but root {root!r} resolves outside it",
                "put the dataset under this folder (symbolic links are followed)",
            )
        )
    if dataset.type == "Synthetic":
        size, inputs = dataset.kwargs.get("size", 0), dataset.kwargs.get("inputs", ())
        values = size * math.prod(inputs) if isinstance(size, int) and all(isinstance(i, int) for i in inputs) else 0
        if values > CHECK_MAX_VALUES:
            problems.append(
                spec.source.problem(
                    where,
                    f"specc check builds at most {CHECK_MAX_VALUES:,} input "
                    f"values, but this Synthetic dataset has {values:,}",
                    "use a smaller `size:` to check the spec",
                )
            )
    if problems:
        raise SpecError(problems, spec.source.text, spec.source.texts)


def cmd_list(args: argparse.Namespace) -> int:
    from compiler.cli.reference import KINDS, listing

    for i, kind in enumerate([args.kind] if args.kind else list(KINDS)):
        print(("\n" if i else "") + listing(kind))
    return 0


# --------------------------------------------------------------------------- interop: import, export, schema, plugins


def _fail(command: str, message: str) -> int:
    print(f"specc {command}: {message}", file=sys.stderr)
    return 1


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape: sizes of one sample, e.g. 3,224,224")
    return shape


def cmd_import(args: argparse.Namespace) -> int:
    import warnings

    from compiler.interop.decompile import DecompileError, load_factory, to_spec

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = load_factory(args.factory)
            name = args.name or args.factory.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
            text = to_spec(module, args.input, name=_identifier(name), source=args.factory)
    except DecompileError as err:
        return _fail("import", f"{args.factory}: {err}")
    if args.output and args.output != "-":
        _write_atomic(Path(args.output), text.encode("utf-8"))
        print(f"wrote {args.output} ({len(text.splitlines())} lines)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.weights:
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        _write_atomic(Path(args.weights), buffer.getvalue())
        print(
            f"wrote {args.weights} (state dict: load it into compiler.build_model(spec) with strict=True)",
            file=sys.stderr,
        )
    return 0


def _identifier(name: str) -> str:
    import re

    name = re.sub(r"\W", "_", name)
    return name if name.isidentifier() else f"model_{name}"


def _write_atomic(path: Path, data: bytes) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_export(args: argparse.Namespace) -> int:
    spec = _load(args.spec, args)
    from compiler.interop.exporting import ExportError, export

    out = Path(args.output) if args.output else Path(f"{spec.name}.{args.format}")
    try:
        result = export(spec, out, format=args.format, checkpoint=args.checkpoint)
    except ExportError as err:
        return _fail("export", str(err))
    print(
        f"wrote {result.path} ({result.format}; checked against torch on a batch of 3: max |difference| "
        f"{result.max_abs_diff:.3g}, tolerance rtol={result.rtol}, atol={result.atol})"
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from compiler.cli.schema import schema_text

    sys.stdout.write(schema_text())
    return 0


def _load_plugins(names: list[str]) -> str | None:
    """``--plugin`` modules and the ``specc.layers`` entry points: each registers layers when imported."""
    import importlib
    from importlib.metadata import entry_points

    for point in entry_points(group="specc.layers"):
        try:
            point.load()
        except Exception as err:
            return f"plugin {point.name} ({point.value}, entry point specc.layers): {type(err).__name__}: {err}"
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:
            return f"--plugin {name}: {type(err).__name__}: {err}"
    return None


def _add_interop_commands(sub) -> None:
    p = sub.add_parser(
        "import",
        help="write the spec of a PyTorch model (e.g. torchvision.models:resnet18)",
        description="Decompile a model into a spec: FACTORY is MODULE:CALLABLE, called with no "
        "arguments (or MODULE:MODEL). The spec is verified: the model's state dict loads with "
        "strict=True and the outputs are equal.",
    )
    p.add_argument("factory", metavar="FACTORY")
    p.add_argument("--input", type=_shape, required=True, metavar="SHAPE", help="one sample's shape, e.g. 3,224,224")
    p.add_argument("-o", "--output", metavar="FILE", help="the spec file (default: stdout)")
    p.add_argument("--weights", metavar="FILE", help="also save the model's state dict here (torch.save)")
    p.add_argument("--name", help="the spec's name (default: the factory's)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="write the model as ONNX or a torch.export program, checked against torch")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--format", choices=["onnx", "pt2"], default="onnx")
    p.add_argument("--checkpoint", metavar="PATH", help="weights: a specc checkpoint or a state dict file")
    p.add_argument("-o", "--output", metavar="FILE", help="default: <name>.onnx or <name>.pt2")
    _overridable(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("schema", help="print the JSON Schema of spec files (for editors)")
    p.set_defaults(func=cmd_schema)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"specc {version('specc')}"
    except PackageNotFoundError:
        return "specc (not installed)"


def _overridable(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a spec value, validated like the file (repeatable), "
        "e.g. --set train.epochs=3 --set optimizer.Adam.lr=3e-4",
    )


_EXAMPLES = {
    "validate": "specc validate specs/*.yaml",
    "summary": "specc summary specs/resnet18.yaml",
    "generate": "specc generate specs/mnist_cnn.yaml -o generated/",
    "train": "specc train specs/mnist_cnn.yaml --epochs 2 --set optimizer.Adam.lr=3e-4\n"
    "  specc train specs/mnist_cnn.yaml --resume runs/mnist_cnn/1",
    "eval": "specc eval specs/resnet_mnist.yaml --checkpoint runs/resnet_mnist/1",
    "predict": "specc predict specs/resnet_mnist.yaml digits/ -o predictions.csv",
    "check": "specc check specs/mnist_cnn.yaml --steps 3",
    "list": "specc list layers",
    "import": "specc import torchvision.models:resnet18 --input 3,224,224 -o resnet18.yaml",
    "export": "specc export specs/mnist_cnn.yaml --checkpoint runs/mnist_cnn/1 --format onnx",
    "schema": "specc schema > specc.schema.json",
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written, and every option's default shown."""


def _with_examples(sub: argparse._SubParsersAction) -> None:
    for name, parser in sub.choices.items():
        parser.formatter_class = _HelpFormatter
        if name in _EXAMPLES:
            parser.epilog = "example:\n  " + _EXAMPLES[name]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specc", description="Compile YAML model specs into PyTorch models and scripts."
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--max-memory",
        type=_parse_bytes,
        default=None,
        metavar="SIZE",
        help="refuse models whose parameters and buffers exceed SIZE (default: physical memory)",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it registers layers with compiler.register_layer); repeatable",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check specs; print file:line:col: message for each problem")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    _overridable(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("summary", help="print the layer table: path, type, output shape, parameters")
    p.add_argument("spec", metavar="SPEC")
    _overridable(p)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("generate", help="write the standalone training script")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("-o", "--output", metavar="FILE", help="default: generated/<name>.py (--lean: generated/lean/)")
    p.add_argument("--lean", action="store_true", help="the nanoGPT-style script: one loop, a plain checkpoint")
    _overridable(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="train with the generated script: progress, checkpoint, metrics, loss plot")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--device", help="override train.device (cpu, cuda, cuda:N, mps, auto)")
    p.add_argument("--out", metavar="DIR", help="the run folder (default: a new runs/<name>/N)")
    p.add_argument(
        "--resume", metavar="PATH", help="continue from a checkpoint or a run folder, writing into its folder"
    )
    p.add_argument("--max-steps", type=int, help="stop after this many updates (smoke runs)")
    p.add_argument(
        "--nproc", type=int, metavar="N", help="N processes through torchrun (DDP); batch_size stays the global batch"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _overridable(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="loss and metrics of a checkpoint on the validation (or training) split",
        description="Example: specc eval specs/mnist_cnn.yaml --checkpoint runs/mnist_cnn/1",
    )
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--checkpoint", metavar="PATH", help="a checkpoint or run folder (default: the latest run)")
    p.add_argument("--split", choices=("val", "train"), default="val", help="default: val")
    p.add_argument("--device", default="cpu", help="default: cpu")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _overridable(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "predict",
        help="predict classes (or values) for images, folders of images or CSV rows",
        description="Example: specc predict specs/mnist_cnn.yaml --checkpoint runs/mnist_cnn/1 digit.png",
    )
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, CSV files")
    p.add_argument("--checkpoint", metavar="PATH", help="a checkpoint or run folder (default: the latest run)")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the predictions as CSV")
    p.add_argument("--device", default="cpu", help="default: cpu")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _overridable(p)
    p.set_defaults(func=cmd_predict)

    from compiler.cli.reference import KINDS

    p = sub.add_parser(
        "list",
        help="the names a spec may use, with their arguments and defaults",
        description="List layers, losses, optimizers, schedulers, datasets, transforms or init "
        "functions with their arguments and defaults. Example: specc list layers",
    )
    p.add_argument("kind", nargs="?", choices=list(KINDS), help="one kind (default: all)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", help="prove the compiled objects and the generated script agree")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--steps", type=int, default=3, help="training steps to compare (default 3)")
    _overridable(p)
    p.set_defaults(func=cmd_check)
    _add_interop_commands(sub)
    _with_examples(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:  # building the parser imports the registry (and so pydantic): Ctrl-C there exits quietly too
        args = build_parser().parse_args(argv)
        failed = _load_plugins(args.plugin)
        if failed:
            return _fail(args.command, failed)
        return args.func(args)
    except SpecError as err:
        _report(err)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # never a traceback for users; SPECC_DEBUG=1 shows it
        if os.environ.get("SPECC_DEBUG"):
            raise
        print(
            f"specc: internal error: {type(err).__name__}: {visible(str(err))} (set SPECC_DEBUG=1 for details; "
            "please report it with the spec)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
