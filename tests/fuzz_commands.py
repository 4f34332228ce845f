"""A fuzzer for the commands after validation: ``--set`` overrides (with ``init:`` path globs by the thousand),
checkpoints (eval, predict, export), prediction inputs (images, folders, CSV files), and the generated script's
checks before any work (a torchrun environment with hostile values, ``--out`` onto folders in every state).

Each target mutates real seeds -- the shipped specs with random overrides; a checkpoint trained by the compiled
backend, mutated in its bytes (with the checksum recomputed half the time, as an attacker would) or in its
contents (keys dropped, values swapped for hostile ones, tensors reshaped or recast); PNG and CSV files with
flipped bytes, huge declared sizes, short rows, NaN and control characters, FIFOs and folders in their place.
The contract: only the documented error leaves the command (``SpecError`` located at the override or the file
for ``--set``; ``ValueError`` or ``ExportError`` of one line naming the file for the others), every input
finishes within ``BOUND_SECONDS``, and the process stays under ``MEMORY_BYTES`` (``RLIMIT_AS``). Anything else
is an escape, printed with its input's description and traceback.

    python tests/fuzz_commands.py --target set --seconds 120 --seed 1
    python tests/fuzz_commands.py --target checkpoint --seconds 120 --seed 1
    python tests/fuzz_commands.py --target predict --seconds 120 --seed 1
    python tests/fuzz_commands.py --target environment --seconds 60 --seed 1
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import os
import random
import resource
import struct
import sys
import tempfile
import time
import traceback
import zlib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_specs import _hostile_value

import compiler
from compiler.interop.exporting import ExportError, _state_dict
from compiler.runtime import helpers as runtime
from compiler.workflow.runs import _predictor

BOUND_SECONDS = 5.0
_NUMBERS = itertools.count()
MEMORY_BYTES = 6 << 30
SPEC = """
name: fz
input: [1, 8, 8]
model: [Flatten, {Linear: {out_features: 4}}, ReLU, {Linear: {out_features: 3}}]
data:
  dataset: {FakeData: {size: 16, image_size: [1, 8, 8], num_classes: 3}}
  transforms: [ToTensor]
  batch_size: 8
loss: CrossEntropyLoss
optimizer: {SGD: {lr: 0.1}}
train: {epochs: 1, device: cpu}
"""


# --------------------------------------------------------------------------- --set


def _keys(value, prefix=()) -> list[tuple]:
    found = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found += _keys(child, (*prefix, str(key)))
    return found


def set_input(rng: random.Random, seeds: list[tuple[str, str, list]]) -> tuple[str, list[str]]:
    _, text, keys = rng.choice(seeds)
    overrides = []
    for _ in range(rng.randint(1, 4)):
        key = list(rng.choice(keys)) if keys and rng.random() < 0.8 else ["x"]
        if rng.random() < 0.4:
            key.append(rng.choice(["every_steps", "0", "99", "lr", "Linear", "", "a" * 50, "\x1b[2J", "__class__"]))
        value = _hostile_value(rng) if rng.random() < 0.6 else rng.choice(["0", "-1", "1e400", "[", "{a: 1", "~"])
        overrides.append(f"{'.'.join(key)}={value if isinstance(value, str) else repr(value)}")
    if rng.random() < 0.1:
        overrides.append(init_override(rng))
    return text, overrides


_GLOB_PARTS = ["*", "?", "[!a]", "[0-9]", "[]]", "[", "layer", ".", "0", "1", "bn2", "\\", "(", "|", "$", "\x1b"]


def init_override(rng: random.Random) -> str:
    """``init=[...]``: rules with up to 1,500 random `path:` globs (the pattern and match bounds), on any spec."""
    rules = []
    for _ in range(rng.randint(1, 3)):
        count = rng.choice([1, 3, 50, 999, 1001, 1500])
        globs = ["".join(rng.choice(_GLOB_PARTS) for _ in range(rng.randint(1, 6))) for _ in range(count)]
        rules.append(f"{{path: {json.dumps(globs)}, {rng.choice(['weight', 'bias', 'x'])}: zeros_}}")
    return f"init=[{', '.join(rules)}]"


def check_set(text: str, overrides: list[str]) -> str:
    try:
        compiler.parse_spec(text, "fuzz.yaml", overrides=overrides, max_bytes=64 << 20)
    except compiler.SpecError as err:
        if not err.problems or not all(
            p.file in ("fuzz.yaml", *(f"--set {o}" for o in overrides)) for p in err.problems
        ):
            raise AssertionError(f"unlocated: {str(err)[:300]!r}") from err
        return "spec_error"
    return "valid"


# --------------------------------------------------------------------------- checkpoints


def trained_checkpoint(folder: Path) -> Path:
    spec = compiler.parse_spec(SPEC, "fz.yaml")
    model, _, optimizer, scheduler, train_loader, _ = compiler.build_training(spec)
    run = runtime.Run(1, checkpoint=str(folder / "run" / "checkpoint.pt"))
    run.data = runtime.data_info(train_loader.dataset, (1, 8, 8), "classes")
    run.save(model, optimizer, scheduler)
    return folder / "run" / "checkpoint.pt"


def _resum(payload: bytes) -> bytes:
    data = payload[:-77] if payload[-77:-64] == b"specc-sha256:" else payload
    return data + b"specc-sha256:" + hashlib.sha256(data).hexdigest().encode()


def _mutate_state(rng: random.Random, state: dict) -> dict:
    state = dict(state)
    key = rng.choice(list(state))
    what = rng.randrange(5)
    if what == 0:
        del state[key]
    elif what == 1:
        state[key] = _hostile_value(rng)
    elif what == 2 and state.get("model"):
        name = rng.choice(list(state["model"]))
        tensor = state["model"][name]
        state["model"] = {**state["model"], name: rng.choice([tensor.double(), tensor.flatten(), tensor[:1], "x"])}
    elif what == 3:
        state["data"] = {
            **(state.get("data") or {}),
            rng.choice(["input", "task", "classes", "csv"]): _hostile_value(rng),
        }
    else:
        state["identity"] = rng.choice([None, "x", {}, {**state.get("identity", {}), "optimizer": "Adam"}])
    return state


def checkpoint_input(rng: random.Random, good: bytes, state: dict, folder: Path) -> tuple[Path, str]:
    path = folder / f"c{next(_NUMBERS)}.pt"
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        mutated = _mutate_state(rng, state) if rng.random() < 0.9 else rng.choice([torch.zeros(3), [1], "x"])
        torch.save(mutated, buffer)
        path.write_bytes(_resum(buffer.getvalue()))
        return path, "contents"
    data = bytearray(good)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    data = bytes(data[: rng.randrange(len(data))]) if rng.random() < 0.2 else bytes(data)
    path.write_bytes(_resum(data) if rng.random() < 0.5 else data)
    return path, "bytes"


def check_checkpoint(spec, path: Path, command: str, image: Path) -> str:
    try:
        if command == "eval":
            compiler.evaluate(spec, path)
        elif command == "predict":
            compiler.predict(spec, path, [str(image)])
        else:
            _state_dict(path)
    except (ValueError, ExportError) as err:
        if "\n" in str(err).strip():
            raise AssertionError(f"a message of several lines: {str(err)[:300]!r}") from err
        return "refused"
    return "accepted"


# --------------------------------------------------------------------------- predict inputs


def _png(width: int, height: int, body: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


def predict_input(rng: random.Random, folder: Path) -> tuple[list[str], str]:
    path = folder / f"i{next(_NUMBERS)}"  # unique: a FIFO or folder never lands on an earlier input
    kind = rng.choice(["png", "bomb", "csv", "fifo", "folder", "bytes"])
    if kind == "png":
        w, h = rng.choice([1, 7, 8, 9, 300]), rng.choice([1, 8, 64])
        path = path.with_suffix(".png")
        if rng.random() < 0.5:  # a well-formed image of that size
            from PIL import Image

            Image.new(rng.choice(["L", "RGB", "RGBA", "1"]), (w, h), rng.randrange(256)).save(path, format="PNG")
        else:
            path.write_bytes(_png(w, h, bytes(rng.randrange(256) for _ in range(min(w * h + h, 5000)))))
    elif kind == "bomb":  # declared huge, a few KB of zeros deflated
        path = path.with_suffix(".png")
        path.write_bytes(_png(rng.choice([20000, 60000, 1 << 20]), rng.choice([20000, 65535]), b"\0" * 100_000))
    elif kind == "csv":
        path = path.with_suffix(".csv")
        cells = ["1", "nan", "inf", "", "\x1b[2J", "=1+1", "1e400", '"', "a,b"]
        rows = [",".join(rng.choice(cells) for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(0, 4))]
        path.write_text("\n".join(rows))
    elif kind == "fifo":
        path = path.with_suffix(rng.choice([".png", ".csv", ""]))
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
        os.mkfifo(path / "x.png")
        (path / "y.png").write_bytes(_png(8, 8, b"\x80" * 72))
    else:
        path = path.with_suffix(".png")
        data = bytearray(_png(8, 8, b"\x80" * 72))
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    return [str(path)], kind


def check_predict(predictor: tuple, inputs: list[str]) -> str:
    model, info, transform, device = predictor
    try:
        runtime.predict(model, inputs, info, transform, device, top_k=2)
    except ValueError as err:
        if "\n" in str(err).strip() or "\x1b" in str(err):
            raise AssertionError(f"an unescaped or multi-line message: {str(err)[:300]!r}") from err
        return "refused"
    return "predicted"


# --------------------------------------------------------------------------- the script's environment and --out

_ENV_VALUES = ["0", "1", "2", "7", "-1", "", " ", "1e9", "99999999999", "\x1b[2J", "²", "localhost", "0x1", "nan"]
_ENV_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SPECC_DIST_TIMEOUT")


def environment_input(rng: random.Random, folder: Path) -> tuple[dict, str, str | None]:
    """A torchrun-like environment (some variables, hostile values) and an --out folder in some state."""
    env = {name: rng.choice(_ENV_VALUES) for name in _ENV_NAMES if rng.random() < 0.6}
    out = folder / f"o{next(_NUMBERS)}"
    state = rng.choice(["none", "empty", "file", "checkpoint.pt", "model.pt", "metrics.json", "link", "fifo"])
    if state == "empty":
        out.mkdir()
    elif state == "file":
        out.write_text("x")
    elif state == "link":
        out.symlink_to(folder / "missing-target")
    elif state == "fifo":
        os.mkfifo(out)
    elif state != "none":
        out.mkdir()
        (out / state).write_bytes(b"")
    own = str(out / "checkpoint.pt") if rng.random() < 0.3 else None
    return env, str(out), own


def check_environment(env: dict, out: str, own: str | None) -> str:
    """The script's checks before any work: a bool or one line of ValueError, never anything else."""
    saved = {name: os.environ.pop(name, None) for name in _ENV_NAMES}
    os.environ.update(env)
    outcomes = []
    try:
        for check in (runtime.torchrun_environment, lambda: runtime.check_out_folder(out, own)):
            try:
                check()
                outcomes.append("ok")
            except ValueError as err:
                if "\n" in str(err) or "\x1b" in str(err):
                    raise AssertionError(f"an unescaped or multi-line message: {str(err)[:300]!r}") from err
                outcomes.append("refused")
    finally:
        for name in _ENV_NAMES:
            os.environ.pop(name, None)
            if saved[name] is not None:
                os.environ[name] = saved[name]
    return "+".join(outcomes)


# --------------------------------------------------------------------------- the loop


def _seeds() -> list[tuple[str, str, list]]:
    import yaml

    seeds = []
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        text = path.read_text()
        seeds.append((path.name, text, _keys(yaml.safe_load(text))))
    return seeds


def _cases(target: str, rng: random.Random, folder: Path):
    """An endless stream of (description, thunk) for ``target``."""
    if target == "set":
        seeds = _seeds()
        while True:
            text, overrides = set_input(rng, seeds)
            yield repr(overrides)[:300], lambda t=text, o=overrides: check_set(t, o)
    if target == "environment":
        while True:
            env, out, own = environment_input(rng, folder)
            yield f"{env} --out {out} (resuming {own})", lambda e=env, o=out, c=own: check_environment(e, o, c)
    spec = compiler.parse_spec(SPEC, "fz.yaml")
    checkpoint = trained_checkpoint(folder)
    from PIL import Image

    image = folder / "image.png"
    Image.new("L", (8, 8), 100).save(image)
    good, state = checkpoint.read_bytes(), runtime.load_checkpoint(str(checkpoint))
    predictor = _predictor(spec, checkpoint, "cpu")  # the model once; each input through predict's own code
    while True:
        if target == "checkpoint":
            path, how = checkpoint_input(rng, good, state, folder)
            command = rng.choice(["eval", "predict", "export"])
            yield f"{command} {how} {path.name}", lambda p=path, c=command: check_checkpoint(spec, p, c, image)
        else:
            inputs, kind = predict_input(rng, folder)
            yield f"{kind} {inputs}", lambda i=inputs: check_predict(predictor, i)


def run(target: str, seconds: float, seed: int) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    rng, outcomes, escapes, slowest, count = random.Random(seed), {}, [], 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases(target, rng, Path(tmp))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            description, thunk = next(cases)
            started = time.perf_counter()
            try:
                outcome = thunk()
            except BaseException as err:  # an escape, whatever it is (MemoryError included)
                outcome = "escape"
                escapes.append(f"{description}\n{type(err).__name__}: {err}\n{traceback.format_exc()[-2000:]}")
            took = time.perf_counter() - started
            slowest, count = max(slowest, took), count + 1
            if took > BOUND_SECONDS:
                escapes.append(f"{description}\nslow: {took:.2f} s")
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(
        f"{target}, seed {seed}: {count:,} inputs in {seconds:g} s; {outcomes}; {len(escapes)} escapes; "
        f"slowest {slowest:.2f} s (bound {BOUND_SECONDS:g} s); peak memory {peak} MiB"
    )
    for escape in escapes[:10]:
        print("---\n" + escape)
    return 1 if escapes else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["set", "checkpoint", "predict", "environment"], required=True)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run(args.target, args.seconds, args.seed)


if __name__ == "__main__":
    sys.exit(main())
