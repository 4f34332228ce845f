"""Issue 10, the second hardening round: each reproducer refused with a located error, fast, never a traceback.

Files the spec names (symlinks, devices, FIFOs, test_path), spec files that are not regular files, huge
integers, NaN and infinity, terminal escape sequences in messages, bounded did-you-mean and expression
evaluation, one identifier check for every name, and atomic `specc generate`.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_within, load_factor

import compiler
from compiler.cli.commands import main as cli_main
from compiler.common import paths
from compiler.errors import Problem, SpecError, visible
from compiler.front import names
from compiler.front.load import MAX_BYTES, MAX_EXPRESSIONS, load_file, load_text
from compiler.render.emit import class_names

ROOT = Path(__file__).resolve().parent.parent
IRIS = (ROOT / "data" / "iris.csv").read_text(encoding="utf-8")

CSV_SPEC = (
    "name: t\ninput: [4]\nmodel: [{{Linear: {{out_features: 3}}}}]\n"
    "data:\n  dataset: {{CSV: {{{csv}}}}}\n"
    "loss: CrossEntropyLoss\noptimizer: {{SGD: {{lr: 0.1}}}}\ntrain: {{epochs: 1}}\n"
)


@pytest.fixture(autouse=True)
def _no_hang():
    """A FIFO that blocks would hang the suite: fail instead, after 20 s."""

    def expire(signum, frame):
        raise TimeoutError("blocked: a FIFO or device was opened without O_NONBLOCK")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder with data/iris.csv, as the folder specc runs in."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "iris.csv").write_text(IRIS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refused(text: str, filename: str = "t.yaml") -> SpecError:
    with pytest.raises(SpecError) as info:
        compiler.parse_spec(text, filename)
    err = info.value
    for problem in err.problems:
        assert problem.line >= 1 and problem.col >= 1 and problem.fix, str(problem)
        assert "\n" not in str(problem)
    return err


# --------------------------------------------------------------------------- 1, 2: paths a spec names


def test_csv_symlink_to_environ_is_refused_without_echo(project: Path) -> None:
    os.symlink("/proc/self/environ", project / "data" / "env.csv")
    err = _refused(CSV_SPEC.format(csv="path: data/env.csv, target: label"))
    assert "leaves the folder specc runs in" in str(err) and "symbolic link" in str(err)
    assert (err.problems[0].line, err.problems[0].col) == (5, 19)
    assert "PATH=" not in str(err) and "HOME=" not in str(err)


def test_csv_path_through_a_symlinked_folder_is_refused(project: Path, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.csv").write_text("TOKEN=abc123,x\n1,2\n", encoding="utf-8")
    os.symlink(outside, project / "data" / "elsewhere")
    err = _refused(CSV_SPEC.format(csv="path: data/elsewhere/secret.csv, target: label"))
    assert "leaves the folder specc runs in" in str(err) and "TOKEN" not in str(err)


def test_a_symlink_that_stays_inside_is_fine(project: Path) -> None:
    os.symlink("iris.csv", project / "data" / "alias.csv")
    compiler.parse_spec(CSV_SPEC.format(csv="path: data/alias.csv, target: label"), "t.yaml")


@pytest.mark.parametrize("test_path", ["/etc/passwd", "/dev/zero", "../outside.csv", "data/env.csv", "data/fifo.csv"])
def test_test_path_is_checked_like_path(project: Path, test_path: str) -> None:
    os.symlink("/proc/self/environ", project / "data" / "env.csv")
    os.mkfifo(project / "data" / "fifo.csv")
    started = time.perf_counter()
    err = _refused(CSV_SPEC.format(csv=f"path: data/iris.csv, target: label, test_path: {test_path}"))
    assert_within(started, 10)
    problem = err.problems[0]
    assert problem.path == "data.dataset.CSV.test_path" and (problem.line, problem.col) == (5, 55)
    expected = "a FIFO (named pipe), not a regular file" if "fifo" in test_path else "leaves the folder specc runs in"
    assert expected in problem.message
    assert "root:" not in str(err) and "PATH=" not in str(err)


def test_test_path_columns_are_checked(project: Path) -> None:
    (project / "data" / "test.csv").write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    err = _refused(CSV_SPEC.format(csv="path: data/iris.csv, target: label, test_path: data/test.csv"))
    assert "CSV test file 'data/test.csv' has no column 'label'" in str(err)
    spec = compiler.parse_spec(CSV_SPEC.format(csv="path: data/iris.csv, target: label, test_path: data/iris.csv"))
    assert spec.data is not None


def test_missing_column_lists_few_clipped_escaped_names(project: Path) -> None:
    header = ",".join(f"col{i}_" + "x" * 60 + "\x1b[2J" for i in range(50))
    (project / "data" / "wide.csv").write_text(header + "\n" + ",".join("1" * 50) + "\n", encoding="utf-8")
    err = _refused(CSV_SPEC.format(csv="path: data/wide.csv, target: label"))
    text = str(err)
    assert "no column 'label'" in text and "(50 in all)" in text
    assert text.count("'col") == 5  # five listed, no did-you-mean for a name this far off
    assert "x" * 41 not in text and "\x1b" not in text
    assert "col5_" not in text


def test_csv_prefix_is_read_with_a_bound(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation reads at most CSV_SCAN_BYTES (+1) of a CSV file, whatever its size."""
    monkeypatch.setattr(paths, "CSV_SCAN_BYTES", 64)
    monkeypatch.setattr("compiler.lower.training.CSV_SCAN_BYTES", 64)
    requested = []
    real_read = os.read

    def counting_read(fd, n):
        requested.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(paths.os, "read", counting_read)
    with contextlib.suppress(SpecError):  # 64 bytes hold no data row: the targets then look like regression values
        compiler.parse_spec(CSV_SPEC.format(csv="path: data/iris.csv, target: label"), "t.yaml")
    assert requested and sum(requested) <= 65


def test_read_file_refuses_what_is_not_a_regular_file(project: Path) -> None:
    os.mkfifo(project / "pipe")
    for target, kind in (
        ("/dev/zero", "character device"),
        (str(project / "pipe"), "FIFO"),
        (str(project), "directory"),
    ):
        with pytest.raises(paths.PathError) as info:
            paths.read_file(target, limit=10, confine=False)
        assert info.value.kind == "not_regular" and kind in info.value.message


def test_read_file_rechecks_the_open_descriptor(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO swapped in after the stat check: O_NONBLOCK keeps the open from blocking, fstat refuses it."""
    os.mkfifo(project / "pipe")
    real_stat = os.stat
    regular = real_stat(project / "data" / "iris.csv")
    monkeypatch.setattr(paths.os, "stat", lambda p, *a, **k: regular if str(p).endswith("pipe") else real_stat(p))
    with pytest.raises(paths.PathError, match="FIFO"):
        paths.read_file("pipe", limit=10)


def test_read_file_bounds_the_bytes_read(project: Path) -> None:
    data, complete = paths.read_file("data/iris.csv", limit=10)
    assert data == IRIS.encode()[:10] and not complete
    data, complete = paths.read_file("data/iris.csv", limit=1 << 20)
    assert data == IRIS.encode() and complete


# --------------------------------------------------------------------------- 2: spec files


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory"])
def test_spec_file_must_be_a_regular_file(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = {"dev_zero": "/dev/zero", "fifo": str(tmp_path / "spec.yaml"), "directory": str(tmp_path)}[kind]
    if kind == "fifo":
        os.mkfifo(target)
    started = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_file(target)
    assert_within(started, 2)
    (problem,) = info.value.problems
    assert problem.file == target and "not a spec file" in problem.message
    assert cli_main(["validate", target]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{target}: ") and "Traceback" not in err and "internal error" not in err


def test_spec_size_bound_applies_to_bytes_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"name: x\n" + b"#" * (MAX_BYTES + 10))
    monkeypatch.setattr(os, "stat", _lying_stat(os.stat, big))  # stat says 0 bytes, as /proc files do
    requested = []
    real_read = os.read
    monkeypatch.setattr(paths.os, "read", lambda fd, n: requested.append(n) or real_read(fd, n))
    with pytest.raises(SpecError, match="larger than 1024 KiB"):
        load_file(big)
    assert sum(requested) <= MAX_BYTES + 1


def _lying_stat(real, path: Path):
    def fake(p, *args, **kwargs):
        result = real(p, *args, **kwargs)
        if str(p) == str(path):
            return os.stat_result((result.st_mode, *result[1:6], 0, *result[7:]))
        return result

    return fake


# --------------------------------------------------------------------------- 3, 4: numbers


HEX = "0x" + "f" * 3700


@pytest.mark.parametrize(
    "text",
    [
        f"name: t\nseed: {HEX}\ninput: [4]\nmodel: [ReLU]\n",
        f"name: t\ninput: [4]\nmodel: [{{Linear: {{out_features: {'9' * 3700}}}}}]\n",
        f"name: t\ninput: [4]\nmodel: [{{repeat: {HEX}, body: [ReLU]}}]\n",
        f"name: t\ninput: [4]\nmodel: [{{Dropout: {{p: {HEX}}}}}]\n",
        f"name: t\ninput: [4]\nmodel:\n  ? {HEX}\n  : ReLU\n",
        f"name: {HEX}\ninput: [4]\nmodel: [ReLU]\n",
        f"name: t\nvars: {{h: {HEX}}}\ninput: [4]\nmodel: [ReLU]\n",
    ],
    ids=["seed", "out_features", "repeat", "p", "key", "name", "var"],
)
def test_huge_integers_are_located_spec_errors(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    err = _refused(text)
    assert_within(started, 1)
    assert "integer too large" in str(err) and len(str(err)) < 400
    assert "use a smaller number" in err.problems[0].fix


def test_integer_bound_is_int64() -> None:
    assert load_text(f"v: {2**63 - 1}\nw: -{2**63 - 1}\nx: 0x{2**63 - 1:x}\n")[0] == {
        "v": 2**63 - 1,
        "w": -(2**63 - 1),
        "x": 2**63 - 1,
    }
    for text in (
        f"v: {2**63}",
        f"v: -{2**63}",
        f"v: 0x{2**63:x}",
        f"v: 0o{2**63:o}",
        "v: !!int 1_000_000_000_000_000_000_000",
    ):
        with pytest.raises(SpecError, match="integer too large"):
            load_text(text + "\n")


@pytest.mark.parametrize(
    ("value", "where"),
    [("Dropout: {p: .nan}", "model"), ("Dropout: {p: -.inf}", "model"), ("Dropout: {p: 1e999}", "model")],
)
def test_non_finite_numbers_are_refused(value: str, where: str) -> None:
    err = _refused(f"name: t\ninput: [4]\nmodel:\n  - {value}\n")
    (problem,) = err.problems
    assert (problem.line, problem.col) == (4, 18) and "use a finite number" in problem.fix


def test_non_finite_optimizer_and_scheduler_arguments() -> None:
    text = (
        "name: t\ninput: [4]\nmodel: [{Linear: {out_features: 3}}]\n"
        "data:\n  dataset: {Synthetic: {size: 8, inputs: [4], classes: 3}}\nloss: CrossEntropyLoss\n"
        "optimizer: {SGD: {lr: .nan, momentum: .inf}}\nscheduler: {StepLR: {step_size: 1, gamma: .NaN}}\n"
        "train: {epochs: 1}\n"
    )
    err = _refused(text)
    assert [(p.line, p.col) for p in err.problems][:1] == [(7, 23)]  # the loader stops at the first one


# --------------------------------------------------------------------------- 5: terminal escapes


def test_visible_escapes_every_unprintable_character() -> None:
    hostile = "a\x1b[2J\x1b]0;title\x07\r\x9b\u202e\u2066\u2069\u200b\ufeff\U000e0041b"
    shown = visible(hostile)
    assert shown.isprintable() and shown.startswith("a\\x1b[2J") and shown.endswith("\\U000e0041b")
    assert visible("plain text, ｆｕｌｌ ｗｉｄｔｈ, é") == "plain text, ｆｕｌｌ ｗｉｄｔｈ, é"


def test_problems_and_excerpts_never_carry_escape_sequences(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "evil.yaml"
    spec.write_text('name: t\ninput: [4]\nmodel: [ReLU]\n"\\e[2J\\e]0;pwned\\a\\e[32mOK\\u202e": 1\n', encoding="utf-8")
    raw = tmp_path / "raw.yaml"
    raw.write_bytes(b"name: t\ninput: [4]\nmodel: [ReLU]\ndescription: x\x1b[2J\x1b[32mOK\r\n")
    for path in (spec, raw):
        assert cli_main(["validate", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.isprintable() or all(line.isprintable() for line in err.splitlines()), repr(err)
        assert "\\x1b" in err
    problem = Problem("f\x1b.yaml", 1, 1, "m\x07", "p\u202e", "fix\r")
    assert str(problem) == "f\\x1b.yaml:1:1: p\\u202e: m\\x07 Fix: fix\\x0d"


def test_excerpt_caret_follows_the_escapes() -> None:
    err = SpecError([Problem("f", 1, 3, "m")], "\x1bab")
    line, caret = err.excerpt(err.problems[0]).splitlines()
    assert line.endswith("| \\x1bab") and caret.index("^") == line.rindex("b")


# --------------------------------------------------------------------------- 6: budgets


def test_did_you_mean_over_45000_variables_is_fast() -> None:
    variables = ", ".join(f"width_{i}: {i % 7 + 1}" for i in range(45_000))
    layers = "".join(f"  - Linear: {{out_features: $widht_{i * 37}}}\n" for i in range(120))
    text = f"name: t\nvars: {{{variables}}}\ninput: [4]\nmodel:\n{layers}"
    started = time.perf_counter()
    err = _refused(text)
    elapsed = time.perf_counter() - started
    # about 1.5 s on the 2-core development machine (was 105 s)
    assert elapsed < 3 or elapsed < 3 * load_factor(), f"{elapsed:.2f} s"
    assert "unknown variable $widht_0" in str(err) and "did you mean 'width_0'?" in str(err)


def test_suggestions_still_work_on_small_sets() -> None:
    from compiler.common.suggest import closest

    layers = compiler.facts.registry.REGISTRY.names("layer")
    assert closest("Lineer", layers) == "Linear" and closest("conv2D", layers) == "Conv2d"
    assert closest("learning_rate", ["lr", "momentum"]) == "lr"
    assert closest("x" * 5000, ["x" * 4999]) is None  # too long to compare at all


def test_expression_budget_after_alias_expansion() -> None:
    expressions = ", ".join(f'"$h * {i} + 1"' for i in range(1990))
    aliases = "".join(f"  a{i}: *a\n" for i in range(99))
    text = f"name: t\nvars:\n  h: 2\n  a0x: &a [{expressions}]\n{aliases}input: [4]\nmodel: [ReLU]\n"
    started = time.perf_counter()
    err = _refused(text)
    assert_within(started, 2)  # was 8 s
    assert f"more than {MAX_EXPRESSIONS:,} `$references` and arithmetic expressions" in str(err)


# --------------------------------------------------------------------------- 7: names


@pytest.mark.parametrize(
    ("name", "clash"),
    [
        ("ｎn", "becomes 'nn' (Unicode NFKC)"),
        ("ｔorch", "becomes 'torch'"),
        ("SEED", "one of its settings"),
        ("EPOCHS", "one of its settings"),
        ("CUDNN_BENCHMARK", "one of its settings"),
        ("io", "a module or class it imports"),
        ("Subset", "a module or class it imports"),
        ("len", "a Python builtin"),
        ("print", "a Python builtin"),
        ("make_loaders", "a function or class it defines"),
        ("build_all", "a function or class it defines"),
        ("GraphedStep", "a function or class it defines"),
        ("match", "keyword"),
    ],
)
def test_variable_names_clash_checks(name: str, clash: str) -> None:
    err = _refused(f"name: t\nvars: {{{name}: 1}}\ninput: [4]\nmodel: [ReLU]\n")
    (problem,) = err.problems
    assert (problem.line, problem.col) == (2, 8) and clash in problem.message
    assert "e.g. '" in problem.fix
    suggestion = problem.fix.split("e.g. '")[1].rstrip("'")
    compiler.parse_spec(f"name: t\nvars: {{{suggestion}: 1}}\ninput: [4]\nmodel: [ReLU]\n")


def test_variable_named_seed_cannot_change_the_model() -> None:
    err = _refused("name: t\nvars: {SEED: 1}\ninput: [4]\nmodel: [{Dropout: {p: $SEED * 0.5}}]\n")
    assert "variable name 'SEED' is taken by the generated script" in str(err)


@pytest.mark.parametrize("name", ["forward", "training", "_modules", "state_dict", "cuda", "_parameters", "append"])
def test_block_names_that_are_module_attributes(name: str) -> None:
    err = _refused(f"name: t\ninput: [4]\nmodel:\n  {name}: ReLU\n  other: ReLU\n")
    (problem,) = err.problems
    assert (problem.line, problem.col) == (4, 3)
    assert "torch.nn.Module" in problem.message or "taken by the generated script" in problem.message


def test_top_level_block_named_like_a_variable_or_a_script_global(tmp_path) -> None:
    """Top-level blocks are locals of the script's build_model: the emitter renames one that would hide a
    global (a variable, `nn`, a helper), torch.fx-style, so compiled and generated models stay the same."""
    text = "name: t\nvars: {h: 4}\ninput: [4]\nmodel:\n  h: [{Linear: {out_features: $h}}]\n  nn: {Linear: [$h, 2]}\n"
    spec = compiler.parse_spec(text)
    script = compiler.render_script(spec)
    assert "h_1 = nn.Sequential(" in script and "nn_1 = nn.Linear(h, 2)" in script
    assert "nn.Sequential(OrderedDict(h=h_1, nn=nn_1))" in script
    namespace: dict = {}
    exec(compile(script, "t.py", "exec"), namespace)  # noqa: S102 - the script this test just rendered
    torch.manual_seed(0)
    generated = namespace["build_model"]()
    torch.manual_seed(0)
    assert str(generated) == str(compiler.build_model(spec))


@pytest.mark.parametrize(("name", "fix"), [("json", "json_"), ("torch", "torch_"), ("len", "len_"), ("ｍlp", "mlp")])
def test_spec_name_checks(name: str, fix: str) -> None:
    err = _refused(f"name: {name}\ninput: [4]\nmodel: [ReLU]\n")
    (problem,) = err.problems
    assert (problem.line, problem.col) == (1, 1) and problem.fix == f"e.g. `name: {fix}`"


def test_reserved_names_cover_every_name_a_script_binds() -> None:
    """Every module-level name of every shipped spec's script, other than its variables, is reserved."""
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        spec = compiler.load_spec(path)
        bound = set()
        for node in ast.parse(compiler.render_script(spec)).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.Assign):
                bound |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        model = compiler.lower_spec(spec).model
        classes = set(class_names(model.classes()).values())  # checked in lowering
        # block functions and nn.Sequential block classes: named apart as emitted
        classes |= {name for code in model.blocks.values() for name in (code.function, code.class_name) if name}
        assert bound - set(spec.vars) - classes <= names.RESERVED_NAMES, (
            path.name,
            bound - set(spec.vars) - classes - names.RESERVED_NAMES,
        )


def test_module_attributes_match_the_installed_torch() -> None:
    """MODULE_ATTRIBUTES is generated (python -m compiler.front.names); regenerate it when this fails after an upgrade."""
    import torch

    installed = {n for n in dir(torch.nn.Sequential()) if not n.startswith("__")}
    installed |= {n for n in dir(torch.nn.Module()) if not n.startswith("__")}
    assert installed <= names.MODULE_ATTRIBUTES, sorted(installed - names.MODULE_ATTRIBUTES)
    assert names.MODULE_ATTRIBUTES == installed, "stale entries: " + ", ".join(
        sorted(names.MODULE_ATTRIBUTES - installed)
    )


def test_name_checks_do_not_import_torch() -> None:
    code = "import sys, compiler.front.names, compiler.front.spec; assert 'torch' not in sys.modules; print(len(compiler.front.names.HELPERS))"
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert {"make_loaders", "save_checkpoint", "read_csv", "GradientDescent", "build_model", "main"} <= names.HELPERS


@pytest.mark.parametrize("module", ["helpers.py", "layers.py"])
def test_the_runtime_names_scan_reads_what_python_binds(module) -> None:
    """``_runtime_names`` reads the runtime modules as text (fast); the AST's top-level bindings are the truth."""
    import ast

    tree = ast.parse((ROOT / "compiler" / "runtime" / module).read_text(encoding="utf-8"))
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(t.id for t in targets if isinstance(t, ast.Name))
    assert names._runtime_names(module) == bound - {"annotations"}


# --------------------------------------------------------------------------- 8: specc generate


def _generate(capsys, *argv) -> tuple[int, str]:
    code = cli_main(["generate", str(ROOT / "specs" / "mlp.yaml"), *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err


def test_generate_refuses_a_symlink_target(tmp_path: Path, capsys) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    link = tmp_path / "mlp.py"
    link.symlink_to(victim)
    code, err = _generate(capsys, "-o", str(link))
    assert code == 1 and "symbolic link" in err and len(err.strip().splitlines()) == 1
    assert victim.read_text(encoding="utf-8") == "precious" and link.is_symlink()


@pytest.mark.parametrize("target", ["directory", "/dev/full", "file_as_folder"])
def test_generate_one_line_errors(tmp_path: Path, capsys, target: str) -> None:
    """`-o DIR` writes DIR/<name>.py; where that is itself a folder (or the target a device), one line."""
    (tmp_path / "plain").write_text("x", encoding="utf-8")
    (tmp_path / "mlp.py").mkdir()
    out = {"directory": str(tmp_path), "/dev/full": "/dev/full", "file_as_folder": str(tmp_path / "plain" / "x.py")}
    code, err = _generate(capsys, "-o", out[target])
    assert code == 1 and err.startswith("specc: cannot write ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_generate_failures_leave_the_old_file(tmp_path: Path, capsys, monkeypatch, failure: int) -> None:
    out = tmp_path / "mlp.py"
    out.write_text("old", encoding="utf-8")
    if failure == errno.ENOSPC:  # the disk fills while the new file is written

        def fsync(fd):
            raise OSError(failure, os.strerror(failure))

        monkeypatch.setattr(os, "fsync", fsync)
    else:  # a read-only file system or folder (as root, chmod does not stop writes)

        def mkstemp(*args, **kwargs):
            raise OSError(failure, os.strerror(failure))

        monkeypatch.setattr("tempfile.mkstemp", mkstemp)
    code, err = _generate(capsys, "-o", str(out))
    assert code == 1 and os.strerror(failure) in err and "the old file, if any, is unchanged" in err
    assert out.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.py"]  # no temporary file left


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_generate_into_a_read_only_folder(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, err = _generate(capsys, "-o", str(folder / "mlp.py"))
    finally:
        folder.chmod(0o700)
    assert code == 1 and "Permission denied" in err


def test_generate_writes_atomically_and_keeps_the_mode(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mlp.py"
    out.write_text("old", encoding="utf-8")
    out.chmod(0o640)
    code, _ = _generate(capsys, "-o", str(out))
    assert code == 0 and "def build_model():" in out.read_text(encoding="utf-8")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.py"]


def test_generate_default_folder_must_stay_inside(project: Path, tmp_path_factory, capsys) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (project / "generated").symlink_to(outside)
    code, err = _generate(capsys)
    assert code == 1 and "leaves the folder specc runs in" in err
    assert list(outside.iterdir()) == []
