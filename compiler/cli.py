"""The ``specc`` command. Prints problems as ``file:line:col: message``; never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import SpecError


def _parse_bytes(text: str) -> int:
    units = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
             "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}
    stripped = text.strip().lower()
    number = stripped.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = stripped[len(number):].strip()
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
    from . import lower_spec

    for problem in lower_spec(spec).warnings:
        print(problem, file=sys.stderr)


def _load(path: str, args: argparse.Namespace):
    import warnings

    from . import load_spec

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
    from ._api import lower_spec
    from .summary import print_summary

    spec = _load(args.spec, args)
    print_summary(lower_spec(spec).model, title=f"{spec.name} ({args.spec})")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from . import render_script

    spec = _load(args.spec, args)
    out = Path(args.output) if args.output else Path("generated") / f"{spec.name}.py"
    text = render_script(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(text.splitlines())} lines)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train_from_spec

    if args.epochs is not None:  # validated like the file: `--epochs 0` is an error, not an empty run
        args.set = [*(args.set or []), f"train.epochs={args.epochs}"]
    spec = _load(args.spec, args)
    if spec.train is None:
        raise SpecError([spec.source.problem((), "this spec has no training sections, so there is nothing to train",
                                             "add data, loss, optimizer and train (docs/spec-language.md §4-6), or "
                                             "use `specc generate` for the model's module")], spec.source.text)
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
    from .train import evaluate

    spec = _load(args.spec, args)

    def work() -> int:
        result = evaluate(spec, args.checkpoint, args.split, args.device)
        print(f"{args.split} loss {result['loss']:.6f}"
              + (f", {args.split} accuracy {result['accuracy']:.2%}" if "accuracy" in result else ""))
        return 0

    return _checkpoint_errors(work, args)


def cmd_predict(args: argparse.Namespace) -> int:
    from .runtime import write_atomic
    from .train import predict

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


def cmd_check(args: argparse.Namespace) -> int:
    from .check import run_checks

    spec = _load(args.spec, args)
    return run_checks(spec, steps=args.steps)


def cmd_list(args: argparse.Namespace) -> int:
    from .reference import KINDS, listing

    for i, kind in enumerate([args.kind] if args.kind else list(KINDS)):
        print(("\n" if i else "") + listing(kind))
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"specc {version('specc')}"
    except PackageNotFoundError:
        return "specc (not installed)"


def _overridable(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a spec value, validated like the file (repeatable), "
                   "e.g. --set train.epochs=3 --set optimizer.Adam.lr=3e-4")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specc", description="Compile YAML model specs into PyTorch models and scripts.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--max-memory", type=_parse_bytes, default=None, metavar="SIZE",
                        help="refuse models whose parameters and buffers exceed SIZE (default: physical memory)")
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
    p.add_argument("-o", "--output", metavar="FILE", help="default: generated/<name>.py")
    _overridable(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="train with the generated script: progress, checkpoint, metrics, loss plot")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--device", help="override train.device (cpu, cuda, cuda:N, mps, auto)")
    p.add_argument("--out", metavar="DIR", help="the run folder (default: a new runs/<name>/N)")
    p.add_argument("--resume", metavar="PATH", help="continue from a checkpoint or a run folder, writing into its folder")
    p.add_argument("--max-steps", type=int, help="stop after this many updates (smoke runs)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _overridable(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="loss and metrics of a checkpoint on the validation (or training) split",
                       description="Example: specc eval specs/mnist_cnn.yaml --checkpoint runs/mnist_cnn/1")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--checkpoint", metavar="PATH", help="a checkpoint or run folder (default: the latest run)")
    p.add_argument("--split", choices=("val", "train"), default="val", help="default: val")
    p.add_argument("--device", default="cpu", help="default: cpu")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _overridable(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="predict classes (or values) for images, folders of images or CSV rows",
                       description="Example: specc predict specs/mnist_cnn.yaml --checkpoint runs/mnist_cnn/1 digit.png")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, CSV files")
    p.add_argument("--checkpoint", metavar="PATH", help="a checkpoint or run folder (default: the latest run)")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the predictions as CSV")
    p.add_argument("--device", default="cpu", help="default: cpu")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _overridable(p)
    p.set_defaults(func=cmd_predict)

    from .reference import KINDS

    p = sub.add_parser("list", help="the names a spec may use, with their arguments and defaults",
                       description="List layers, losses, optimizers, schedulers, datasets, transforms or init "
                       "functions with their arguments and defaults. Example: specc list layers")
    p.add_argument("kind", nargs="?", choices=list(KINDS), help="one kind (default: all)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", help="prove the compiled objects and the generated script agree")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--steps", type=int, default=3, help="training steps to compare (default 3)")
    _overridable(p)
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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
        print(f"specc: internal error: {type(err).__name__}: {err} (set SPECC_DEBUG=1 for details; "
              "please report it with the spec)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
