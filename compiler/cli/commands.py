"""The ``specc`` command. Prints problems as ``file:line:col: message``; never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import re
import stat
import sys
import tempfile
from pathlib import Path

from compiler.errors import RenderError, SpecError, visible

MAX_SIZE = 1 << 50  # sizes from the command line or the environment: at most 1 PiB
USAGE_ERROR = 64  # a command line argparse cannot read (sysexits' EX_USAGE); 2 stays specc's internal error


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
        value = float(number) * units[unit]
        if not 0 < value <= MAX_SIZE:
            raise ValueError
        return int(value)
    except (KeyError, ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"{visible(repr(text))} is not a size between 1 byte and 1 PiB (e.g. 8GiB, 500MB)"
        ) from None


def _count(low: int, high: int):
    """An argparse type: a whole number from ``low`` to ``high``, like a spec's integer fields."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{visible(repr(text))} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {low} to {high:,}")
        return value

    return parse


DEVICES = re.compile(r"(auto|cpu|mps|cuda(:[0-9]{1,2})?)")  # the spec's `train.device` rule


def _device(text: str) -> str:
    if not DEVICES.fullmatch(text):
        raise argparse.ArgumentTypeError(f"unknown device {visible(repr(text))}: use auto, cpu, cuda, cuda:N or mps")
    return text


def _report(err: SpecError) -> None:
    for problem in err.problems:
        print(problem, file=sys.stderr)
        if problem.file.startswith("--set "):  # located on the command line: show the override, not the file
            caret = len(visible(problem.file[: max(problem.col - 1, 0)]))
            print(f"       | {visible(problem.file)}\n       | {' ' * caret}^", file=sys.stderr)
            continue
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


def cmd_expand(args: argparse.Namespace) -> int:
    import yaml

    from compiler.pipeline import expand_spec

    data = expand_spec(_load(args.spec, args))
    print(f"# {visible(args.spec)}, expanded by specc: blocks, loops, defaults and variables written out")
    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120, allow_unicode=True), end="")
    return 0


class OutputError(Exception):
    """An output file specc will not or cannot write; the message is one line naming the path."""


def write_atomically(path: Path, text: str | bytes, confine: bool = False) -> None:
    """Write ``text`` to ``path`` by a temporary file in the same folder, fsync and ``os.replace``.

    Never through a symbolic link (a link at ``path`` is refused, not followed), never over a
    directory or a device (``/dev/full``), and with ``confine`` never outside the folder specc runs
    in. On any failure (full disk, read-only folder) the old file is left as it was and the
    temporary file is removed. Raises ``OutputError``.
    """
    name, info = visible(str(path)), _writable(path, confine)
    folder = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as file:
            file.write(text.encode("utf-8") if isinstance(text, str) else text)
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


def _writable(path: Path, confine: bool) -> os.stat_result | None:
    """What is at ``path`` now (None: nothing), or OutputError where specc will not write."""
    from compiler.common.paths import file_kind, inside

    name = visible(str(path))
    if confine and not inside(path.parent if str(path.parent) else "."):
        raise OutputError(f"cannot write {name}: its folder leaves the folder specc runs in (a symbolic link)")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise OutputError(f"cannot write {name}: {err.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise OutputError(f"cannot write {name}: it is a symbolic link (specc does not write through links)")
    if not stat.S_ISREG(info.st_mode):
        raise OutputError(f"cannot write {name}: it is {file_kind(info.st_mode)}, not a regular file")
    return info


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

    for key, value in (("epochs", args.epochs), ("device", args.device)):
        if value is not None:  # validated like the file: `--epochs 0` or `--device gpu` is a located error
            args.set = [*(args.set or []), f"train.{key}={value}"]
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
        message = str(err) if isinstance(err, ValueError) or not err.strerror else f"{err.filename}: {err.strerror}"
        print(f"specc {args.command}: {visible(message)}", file=sys.stderr)
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
        outputs = [key for key in result if key not in ("loss", "accuracy")]  # a model of several outputs: each one's
        if outputs:
            print(
                "  "
                + ", ".join(
                    f"{k} {result[k]:.2%}" if k.endswith("accuracy") else f"{k} {result[k]:.6f}" for k in outputs
                )
            )
        return 0

    return _checkpoint_errors(work, args)


def cmd_predict(args: argparse.Namespace) -> int:
    from compiler.workflow.runs import predict_table

    spec = _load(args.spec, args)

    def work() -> int:
        header, rows = predict_table(spec, args.checkpoint, args.inputs, args.device, args.top_k)
        for row in rows:
            print(f"{visible(row[0])}: {_shown(header, row)}")
        if args.output:
            write_atomically(Path(args.output), _csv_text(header, rows))
            print(f"wrote {visible(args.output)} ({len(rows)} predictions)")
        return 0

    return _checkpoint_errors(work, args)


def _shown(header: list[str], row: list[str]) -> str:
    """A prediction for the terminal: the class, or the top classes with their probabilities, or the values."""
    if header[1:] in (["prediction"], ["prediction", "probability"]):
        return visible(row[1])
    if not header[1].startswith("prediction"):  # a model of several outputs: a column each, by name
        return ", ".join(f"{visible(name)} {visible(value)}" for name, value in zip(header[1:], row[1:]))
    return ", ".join(f"{visible(row[i])} ({row[i + 1]})" for i in range(1, len(row), 2))


def _csv_cell(text: str) -> str:
    """A text cell that a spreadsheet shows as text: control characters escaped, and a leading quote before one
    that starts like a formula (= + - @, or a tab or return)."""
    text = visible(text)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    """The CSV file: names and classes escaped (``_csv_cell``); numbers as written."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    texts = {i for i, name in enumerate(header) if name == "input" or name.startswith("prediction")}
    numeric = header[1:] == ["prediction"]  # values of a regression, written by specc itself
    for row in rows:
        writer.writerow([_csv_cell(c) if i in texts and not (numeric and i) else c for i, c in enumerate(row)])
    return out.getvalue()


# `specc check` builds the data, and CI may run it on specs from pull requests: it downloads nothing, reads
# nothing outside the folder it runs in, and builds no dataset larger than this many values.
CHECK_MAX_VALUES = 1 << 26


# `specc check` holds the model four times (compiled and the script's, each trained once): each copy gets a quarter
# of the budget `specc train` gives the one it builds; images it decodes are bounded like predict's inputs.
CHECK_COPIES = 4
CHECK_MAX_PIXELS = 1 << 25


class CheckTimeout(BaseException):
    """``specc check`` ran past ``--max-seconds``. A BaseException, as KeyboardInterrupt is: the checks catch
    Exception to report a failing level, and the alarm can land inside one of those (it did, once in a full run)."""


def cmd_check(args: argparse.Namespace) -> int:
    from compiler.lower.model import memory_budget
    from compiler.workflow.check import run_checks
    from compiler.workflow.runs import DataMissing, data_present

    budget = args.max_memory or memory_budget()
    args.max_memory = budget // CHECK_COPIES
    spec = _load(args.spec, args)
    if spec.data is not None and spec.data.dataset.kwargs.get("download"):
        # the same spec, with download off: both backends then read only files already here
        args.set = [*(args.set or []), f"data.dataset.{spec.data.dataset.type}.download=false"]
        spec = _load(args.spec, args)
    _check_untrusted_data(spec)
    _check_memory(spec, budget)
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = CHECK_MAX_PIXELS  # a small PNG in an ImageFolder cannot decode to gigabytes
    try:
        with data_present(spec, "check"), _deadline(args.max_seconds) as expired:
            code = run_checks(spec, steps=args.steps)
        if expired:  # the alarm's exception can land where Python ignores it (a finalizer): still over time
            raise CheckTimeout
        return code
    except DataMissing as err:
        return _fail("check", visible(str(err)))
    except CheckTimeout:
        return _fail("check", f"stopped after {args.max_seconds:,} s (--max-seconds): the spec takes longer to check")


@contextlib.contextmanager
def _deadline(seconds: int):
    """CheckTimeout in the main thread once ``seconds`` have passed (between torch operations); yields a list that
    is non-empty once they have."""

    expired: list[bool] = []  # truthy once the time is up, whatever became of the exception

    def expire(signum, frame):
        expired.append(True)
        raise CheckTimeout

    import signal

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield expired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _check_memory(spec, budget: int) -> None:
    """The memory `specc check` takes (CHECK_COPIES models and a training step's activations) within ``budget``,
    refused before anything is allocated (a located error at the model)."""
    from compiler.lower.model import format_bytes
    from compiler.pipeline import lower_spec
    from compiler.workflow.check import step_bytes

    program = lower_spec(spec)
    batch, activations = step_bytes(program, spec)
    models = CHECK_COPIES * program.model.nbytes
    if models + activations > budget:
        problem = spec.source.problem(
            ("model",),
            f"specc check would need about {format_bytes(models + activations)} ({CHECK_COPIES} copies of the model, "
            f"{format_bytes(models)}, and a training step's activations for a batch of {batch:,}, "
            f"{format_bytes(activations)}), more than the {format_bytes(budget)} allowed",
            "check it with a smaller batch or input (--set data.batch_size=...), or raise the limit "
            "(--max-memory, or SPECC_MAX_MODEL_BYTES)",
        )
        raise SpecError([problem], spec.source.text, spec.source.texts)


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
    if dataset.type in ("Synthetic", "FakeData"):
        size = dataset.kwargs.get("size", 1000 if dataset.type == "FakeData" else 0)
        inputs = dataset.kwargs.get("inputs" if dataset.type == "Synthetic" else "image_size", (3, 224, 224))
        values = size * math.prod(inputs) if isinstance(size, int) and all(isinstance(i, int) for i in inputs) else 0
        if values > CHECK_MAX_VALUES:
            problems.append(
                spec.source.problem(
                    where,
                    f"specc check builds at most {CHECK_MAX_VALUES:,} input "
                    f"values, but this {dataset.type} dataset has {values:,}",
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


def _named_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``specc import --input``: ``3,224,224`` (the one input), or ``NAME=1,28,28`` (one of several, by name)."""
    name, sep, shape = text.partition("=")
    if not sep:
        return "", _shape(text)
    if not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(
            f"{text!r}: NAME=SHAPE names an input by a Python identifier, e.g. left=1,28,28"
        )
    return name.strip(), _shape(shape)


def _import_input(given: list[tuple[str, tuple[int, ...]]]) -> tuple[int, ...] | dict[str, tuple[int, ...]]:
    """One shape, or several inputs' ``{name: shape}`` in the order given (the forward's); ValueError says why not."""
    names = [name for name, _ in given]
    if len(given) == 1 and not names[0]:
        return given[0][1]
    if not all(names):
        raise ValueError("several --input name each input: --input left=1,28,28 --input right=1,28,28")
    twice = [name for name in names if names.count(name) > 1]
    if twice:
        raise ValueError(f"--input names {twice[0]} twice")
    return dict(given)


def _factory_arg(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` for ``specc import --arg``: VALUE a Python literal (``10``, ``'x'``, ``(1, 2)``), never code."""
    import ast

    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"{visible(repr(text))} is not NAME=VALUE, e.g. num_classes=10")
    if len(value) > 10_000:
        raise argparse.ArgumentTypeError(f"the value of {name.strip()} is longer than 10,000 characters")
    try:
        return name.strip(), ast.literal_eval(value.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return name.strip(), value.strip()  # a bare word: the text itself, as YAML would read it


def cmd_import(args: argparse.Namespace) -> int:
    import warnings

    from compiler.interop.decompile import DecompileError, load_factory, to_spec

    kwargs = dict(args.arg or [])
    try:
        shape = _import_input(args.input)
    except ValueError as err:
        return _fail("import", str(err))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = load_factory(args.factory, kwargs)
            name = _identifier(args.name or args.factory.rsplit(":", 1)[-1].rsplit(".", 1)[-1])
            text = to_spec(module, shape, name=name, source=_source(args.factory, kwargs), flat=args.flat)
    except DecompileError as err:
        return _fail("import", f"{visible(args.factory)}: {visible(str(err))}")
    try:
        _write_import(args, module, name, text)
    except OutputError as err:
        return _fail("import", str(err))
    return 0


def _source(factory: str, kwargs: dict) -> str:
    return factory + "".join(f" --arg {key}={value!r}" for key, value in kwargs.items())


def _write_import(args: argparse.Namespace, module, name: str, text: str) -> None:
    """The spec to ``-o`` (a file, or a folder: ``<name>.yaml`` in it) or stdout; ``--weights`` beside."""
    if args.output and args.output != "-":
        out = Path(args.output)
        if args.output.endswith(("/", os.sep)) or (out.is_dir() and not out.is_symlink()):
            out = out / f"{name}.yaml"
        write_atomically(out, text)
        print(f"wrote {visible(str(out))} ({len(text.splitlines())} lines)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.weights:
        import torch

        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        write_atomically(Path(args.weights), buffer.getvalue())
        print(
            f"wrote {visible(args.weights)} (state dict: load it into compiler.build_model(spec) with strict=True)",
            file=sys.stderr,
        )


def _identifier(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    return name if name.isidentifier() else f"model_{name}"


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
        "arguments but those given with --arg (or MODULE:MODEL). Repeated structure is written as parameterised "
        "blocks, loops and layer defaults (--flat: every module written out). The spec is verified: the model's "
        "state dict loads with strict=True and the outputs are equal.",
    )
    p.add_argument("factory", metavar="FACTORY")
    p.add_argument(
        "--input",
        type=_named_shape,
        action="append",
        required=True,
        metavar="SHAPE",
        help="one sample's shape, e.g. 3,224,224; a model of several inputs: one NAME=SHAPE each, in the forward's "
        "order (--input left=1,28,28 --input right=1,28,28)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="the spec file (default: stdout)")
    p.add_argument("--weights", metavar="FILE", help="also save the model's state dict here (torch.save)")
    p.add_argument("--name", help="the spec's name (default: the factory's)")
    p.add_argument(
        "--arg",
        action="append",
        type=_factory_arg,
        metavar="NAME=VALUE",
        help="an argument for FACTORY, a Python literal (repeatable), e.g. --arg num_classes=10",
    )
    p.add_argument(
        "--flat",
        action="store_true",
        help="no blocks:, loops or defaults: every module written out, as the model's own tree",
    )
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
    "expand": "specc expand specs/resnet.yaml --set vars.depth=50",
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
    "sweep": "specc sweep specs/iris_mlp.yaml --set optimizer.SGD.lr=0.3,0.1,0.03 --set data.batch_size=8,16\n"
    "  specc sweep specs/iris_mlp.yaml --search 6 --set optimizer.SGD.lr=0.001:1:log",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one escaped line and exits with USAGE_ERROR (README), not 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {visible(message)}\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written, and every option's default shown."""


def _with_examples(sub: argparse._SubParsersAction) -> None:
    for name, parser in sub.choices.items():
        parser.formatter_class = _HelpFormatter
        if name in _EXAMPLES:
            parser.epilog = "example:\n  " + _EXAMPLES[name]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="specc", description="Compile YAML model specs into PyTorch models and scripts.")
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
    _add_spec_commands(sub)
    _add_run_commands(sub)
    _add_interop_commands(sub)
    _add_sweep_command(sub)
    _with_examples(sub)
    return parser


def _add_spec_commands(sub) -> None:
    """validate, summary, generate, list, check: the commands that read a spec and train nothing."""
    p = sub.add_parser("validate", help="check specs; print file:line:col: message for each problem")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    _overridable(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("summary", help="print the layer table: path, type, output shape, parameters")
    p.add_argument("spec", metavar="SPEC")
    _overridable(p)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("expand", help="print the spec with blocks, loops, defaults and variables written out")
    p.add_argument("spec", metavar="SPEC")
    _overridable(p)
    p.set_defaults(func=cmd_expand)

    p = sub.add_parser("generate", help="write the standalone training script")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("-o", "--output", metavar="FILE", help="default: generated/<name>.py (--lean: generated/lean/)")
    p.add_argument("--lean", action="store_true", help="the nanoGPT-style script: one loop, a plain checkpoint")
    _overridable(p)
    p.set_defaults(func=cmd_generate)
    from compiler.cli.reference import KINDS

    p = sub.add_parser(
        "list",
        help="the names a spec may use, with their arguments and defaults",
        description="List layers, losses, optimizers, schedulers, datasets, transforms or init "
        "functions with their arguments and defaults, or the `train:` options. Example: specc list layers",
    )
    p.add_argument("kind", nargs="?", choices=list(KINDS), help="one kind (default: all)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("check", help="prove the compiled objects and the generated script agree")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--steps", type=_count(1, 1000), default=3, help="training steps to compare")
    p.add_argument(
        "--max-seconds", type=_count(1, 1_000_000), default=600, metavar="S", help="stop the check after S seconds"
    )
    _overridable(p)
    p.set_defaults(func=cmd_check)


def _add_run_commands(sub) -> None:
    """train, eval, predict."""
    p = sub.add_parser("train", help="train with the generated script: progress, checkpoint, metrics, loss plot")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--epochs", type=_count(1, 1_000_000), help="override train.epochs")
    p.add_argument("--device", help="override train.device (cpu, cuda, cuda:N, mps, auto)")
    p.add_argument("--out", metavar="DIR", help="the run folder (default: a new runs/<name>/N)")
    p.add_argument(
        "--resume", metavar="PATH", help="continue from a checkpoint or a run folder, writing into its folder"
    )
    p.add_argument("--max-steps", type=_count(1, 1 << 40), help="stop after this many updates (smoke runs)")
    p.add_argument(
        "--nproc",
        type=_count(1, 1024),
        metavar="N",
        help="N processes through torchrun (DDP); batch_size stays the global batch",
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
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _overridable(p)
    p.set_defaults(func=cmd_eval)
    _add_predict(sub)


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict classes (or values) for images, folders of images or CSV rows",
        description="Example: specc predict specs/mnist_cnn.yaml --checkpoint runs/mnist_cnn/1 digit.png",
    )
    p.add_argument("spec", metavar="SPEC")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders of images, CSV files; for a text model: text files, folders of .txt files, CSV files (their text column)",
    )
    p.add_argument("--checkpoint", metavar="PATH", help="a checkpoint or run folder (default: the latest run)")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the predictions as CSV (with probabilities)")
    p.add_argument(
        "--top-k", type=_count(1, 1000), default=1, metavar="K", help="show the K likeliest classes with probabilities"
    )
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _overridable(p)
    p.set_defaults(func=cmd_predict)


def _environment_problem() -> str | None:
    """A setting from the environment that specc would misread, in words (None: all are well formed)."""
    checks = {"SPECC_MAX_MODEL_BYTES": _parse_bytes, "SPECC_DIST_TIMEOUT": _count(1, 1_000_000)}
    for name, parse in checks.items():
        value = os.environ.get(name)
        if value is not None:
            try:
                parse(value)
            except argparse.ArgumentTypeError as err:
                return f"{name}={visible(value)} in the environment: {err}"
    return None


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    problem = _environment_problem() or _load_plugins(args.plugin)
    if problem:
        return _fail(args.command, problem)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a full disk or closed pipe at the end is this command's failure, told here
    except Exception:
        if getattr(args, "debug", False):
            os.environ["SPECC_DEBUG"] = "1"  # --debug: the traceback, from main
        raise
    return code


def cmd_sweep(args: argparse.Namespace) -> int:
    from compiler.workflow.sweep import SweepError, sweep

    try:
        return sweep(args.spec, args)
    except SweepError as err:
        print(f"specc sweep: {err}", file=sys.stderr)
        return 1


def _add_sweep_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train over a grid of --set values (or --search N Optuna trials); a table and plot of the results",
    )
    p.add_argument("spec", metavar="SPEC")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=V1,V2",
        help="values to sweep (KEY=A,B,C), a range for --search (KEY=LOW:HIGH or LOW:HIGH:log), or one fixed value",
    )
    p.add_argument(
        "--search", type=_count(1, 1000), metavar="N", help="sample N trials with Optuna instead of the whole grid"
    )
    p.add_argument("--metric", help="what ranks the trials (default: val_accuracy, else val_loss, else loss)")
    p.add_argument("--epochs", type=_count(1, 1_000_000), help="override train.epochs in every trial")
    p.add_argument("--max-steps", type=_count(1, 10**12), help="stop each trial after this many updates")
    p.add_argument("--device", help="override train.device")
    p.set_defaults(func=cmd_sweep)


def main(argv: list[str] | None = None) -> int:
    try:  # building the parser imports the registry (and so pydantic): Ctrl-C there exits quietly too
        return _run(argv)
    except SpecError as err:
        _report(err)
        return 1
    except RenderError as err:  # a plugin layer the script cannot import
        print(f"specc: {visible(str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        with contextlib.suppress(OSError):  # nothing more reaches the closed pipe, not even at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        if os.environ.get("SPECC_DEBUG"):
            raise
        where = visible(str(err.filename)) if err.filename else "the output"
        print(f"specc: {where}: {err.strerror or type(err).__name__}", file=sys.stderr)
        return 1
    except Exception as err:  # never a traceback for users; SPECC_DEBUG=1 (or --debug) shows it
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
