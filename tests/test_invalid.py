"""The invalid-spec corpus: every bad input gets located, explained errors -- never a traceback, never ignored.

Each ``tests/invalid/*.yaml`` starts with one ``# expect: LINE:COL: TEXT`` line per problem it must
produce (TEXT is a substring of ``str(problem)``: the message and its fix), optionally a
``# xfail: REASON`` line for a known bug outside the loader, and a ``# mistake:`` line saying what
the user did wrong.
"""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path

import pytest
import yaml
from conftest import assert_within, load_factor

import compiler
from compiler.cli.commands import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "invalid"
FILES = sorted(CORPUS.glob("*.yaml"))
_EXPECT = re.compile(r"^# expect: (\d+):(\d+): (.+)$")
_XFAIL = re.compile(r"^# xfail: (.+)$")


def _header(path: Path) -> tuple[list[tuple[int, int, str]], str | None]:
    """The `# expect:` lines (line, col, text) and the `# xfail:` reason at the top of a corpus file."""
    expects: list[tuple[int, int, str]] = []
    xfail = None
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        if not line.startswith("#"):
            break
        if m := _EXPECT.match(line):
            expects.append((int(m.group(1)), int(m.group(2)), m.group(3).rstrip()))
        elif m := _XFAIL.match(line):
            xfail = m.group(1)
    return expects, xfail


def _cases() -> list:
    cases = []
    for path in FILES:
        _, xfail = _header(path)
        marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
        cases.append(pytest.param(path, id=path.stem, marks=marks))
    return cases


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative data paths resolve from the repository root, and the memory budget is the default one."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("SPECC_MAX_MODEL_BYTES", raising=False)


@pytest.fixture(scope="module", autouse=True)
def _torch_imported() -> None:
    """Import torch once up front, so the timing checks below measure validation only."""
    import torch  # noqa: F401


def _problems(path: Path) -> list[compiler.Problem]:
    with pytest.raises(compiler.SpecError) as info:
        compiler.load_spec(path)
    return info.value.problems


def test_corpus_is_large_and_annotated() -> None:
    assert len(FILES) >= 40
    for path in FILES:
        expects, _ = _header(path)
        assert expects, f"{path.name} has no `# expect: LINE:COL: text` line at the top"


@pytest.mark.parametrize("path", _cases())
def test_load_spec_reports_expected_problems(path: Path) -> None:
    expects, _ = _header(path)
    start = time.perf_counter()
    problems = _problems(path)
    elapsed = time.perf_counter() - start
    assert elapsed < 5 or elapsed < 5 * load_factor(), f"refusing {path.name} took {elapsed:.1f} s"
    assert problems
    rendered = [str(p) for p in problems]
    for problem, text in zip(problems, rendered):
        assert problem.line >= 1 and problem.col >= 1, text
        assert text.startswith(f"{path}:{problem.line}:{problem.col}: "), text
        assert "\n" not in text, text
        assert problem.fix, f"no fix offered: {text}"
        assert "Traceback" not in text and "Value error," not in text, text
    for line, col, wanted in expects:
        hits = [t for p, t in zip(problems, rendered) if (p.line, p.col) == (line, col) and wanted in t]
        assert hits, f"expected {line}:{col}: {wanted!r}; got:\n" + "\n".join(rendered)


@pytest.mark.parametrize("path", _cases())
def test_cli_validate_fails_cleanly(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expects, _ = _header(path)
    code = cli_main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "Traceback" not in err and "internal error" not in err, err
    assert "1 of 1 spec invalid" in err
    for line, col, wanted in expects:
        assert f"{path}:{line}:{col}: " in err, err
        assert wanted in err, err


def test_one_pass_collects_several_problems() -> None:
    """Three unrelated mistakes in one file give three problems, not one per run."""
    problems = _problems(CORPUS / "three_mistakes.yaml")
    messages = [p.message for p in problems]
    assert len(problems) == 3, messages
    assert any("unknown key 'descripton'" in m for m in messages)
    assert any("unknown variable $hiden" in m for m in messages)
    assert any("unknown layer type 'ReLu6x'" in m for m in messages)


def test_lowering_collects_several_problems() -> None:
    """Argument mistakes in several layers are all reported together too."""
    text = """\
name: several
input: [1, 28, 28]
model:
  - Conv2d: {out_channel: 8, kernel_size: 3}
  - ReLU
  - MaxPool2d
  - Flatten
  - Linear: {out_features: 10, biass: false}
"""
    with pytest.raises(compiler.SpecError) as info:
        compiler.parse_spec(text, "several.yaml")
    got = [(p.line, p.col) for p in info.value.problems]
    assert got == [(4, 14), (6, 5), (8, 32)], str(info.value)
    assert "did you mean 'out_channels'?" in str(info.value)
    assert "did you mean 'bias'?" in str(info.value)


def test_huge_file_refused_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "huge.yaml"
    filler = "# " + "x" * 1022 + "\n"
    path.write_text("name: huge\nmodel: [ReLU]\n" + filler * 1100, encoding="utf-8")
    assert path.stat().st_size > 1 << 20
    start = time.perf_counter()
    problems = _problems(path)
    assert_within(start, 1)
    assert len(problems) == 1 and "larger than 1024 KiB" in str(problems[0])
    assert str(problems[0]).startswith(f"{path}:1:1: ")
    assert cli_main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "larger than 1024 KiB" in err and "Traceback" not in err
    with pytest.raises(compiler.SpecError, match="larger than 1024 KiB"):
        compiler.parse_spec(path.read_text(encoding="utf-8"), "huge.yaml")


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(compiler.SpecError, match="no such file"):
        compiler.load_spec(tmp_path / "nope.yaml")
    with pytest.raises(compiler.SpecError, match="is a directory"):
        compiler.load_spec(tmp_path)
    assert cli_main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------- no key is ever ignored


def _mapping_paths(data, path=()):
    """Paths of every mapping in the data, except `vars:` (its keys are the user's own names)."""
    if isinstance(data, dict):
        if path != ("vars",):
            yield path
        for key, value in data.items():
            yield from _mapping_paths(value, path + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _mapping_paths(value, path + (i,))


def _get(data, path):
    for part in path:
        data = data[part]
    return data


@pytest.mark.parametrize("spec", ["mnist_cnn.yaml", "mlp_gd.yaml", "alexnet.yaml"])
def test_an_unknown_key_anywhere_is_an_error(spec: str) -> None:
    """Adding a stray key to any mapping of a valid spec makes it invalid, with the key named."""
    text = (ROOT / "specs" / spec).read_text(encoding="utf-8")
    compiler.parse_spec(text, spec)  # valid as it is
    data = yaml.safe_load(text)
    paths = list(_mapping_paths(data))
    assert len(paths) > 5
    for path in paths:
        broken = copy.deepcopy(data)
        _get(broken, path)["zz_stray"] = 1
        with pytest.raises(compiler.SpecError) as info:
            compiler.parse_spec(yaml.safe_dump(broken, sort_keys=False), spec)
        assert "zz_stray" in str(info.value), f"a stray key at {path} was not reported"


# --------------------------------------------------------------------------- recurrent layers


def test_recurrent_layers_accept_torch_arguments() -> None:
    spec = compiler.parse_spec("name: rnn\ninput: [10, 8]\nmodel:\n  - LSTM: {hidden_size: 16, batch_first: true}\n")
    model = compiler.build_model(spec)
    output, _ = model(__import__("torch").zeros(2, 10, 8))
    assert tuple(output.shape) == (2, 10, 16)
    assert compiler.lower_spec(spec).model.output_shape == (10, 16)
