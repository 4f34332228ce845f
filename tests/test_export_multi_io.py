"""`specc export` of models of several inputs and outputs (§15): one example tensor per input, ONNX inputs and
outputs named as the spec names them, every output checked; each file loaded back and compared with the
compiled model at another batch size than the one exported with."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from test_multi_io import PYRAMID, SIAMESE

import compiler
from compiler.cli.commands import main

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
FORMATS = ["onnx", "pt2"] if HAS_ONNX else ["pt2"]

# PYRAMID without its training-only steps: eval mode returns the dict {"0": total, "aux": drop} too
DICT = PYRAMID.replace("\n      when: training", "").replace("  eval_output: total\n", "")


def _spec(text: str, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def _compiled(path):
    torch.manual_seed(compiler.parse_spec(path.read_text(), str(path)).seed)  # as export builds it
    return compiler.build_model(path).eval()


def _flat(value) -> list[torch.Tensor]:
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flat(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    return [value]


def _reloaded(path, fmt: str, names: list[str], inputs: tuple[torch.Tensor, ...]) -> list:
    """The exported file's outputs on ``inputs``, run by onnxruntime (fed by input name) or torch.export."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == names
        return [torch.from_numpy(a) for a in session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})]
    return _flat(torch.export.load(str(path)).module()(*inputs))


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_inputs_one_shared_encoder(tmp_path, fmt):
    spec = _spec(SIAMESE, tmp_path)
    out = tmp_path / f"siamese.{fmt}"
    result = compiler.export(spec, out, format=fmt)
    assert result.inputs == ["left", "right"] and result.outputs == ["output"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.yaml", out.name])  # no temporary file
    left, right = torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8)  # exported at batch 2, checked at 3
    (got,) = _reloaded(out, fmt, ["left", "right"], (left, right))
    with torch.no_grad():
        want = _compiled(spec)(left, right)
    assert got.shape == (5, 2) and torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    (same,) = _reloaded(out, fmt, ["left", "right"], (left, left))
    assert torch.allclose(same, _compiled(spec).head(torch.zeros(5, 5)), atol=1e-6)  # equal inputs cancel
    if fmt == "pt2":
        assert torch.export.load(str(out)).graph_signature.user_inputs == ("left", "right")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_dict_output_is_every_output_by_key(tmp_path, fmt):
    spec = _spec(DICT, tmp_path)
    out = tmp_path / f"pyramid.{fmt}"
    result = compiler.export(spec, out, format=fmt)
    assert result.outputs == ["0", "aux"] and result.inputs == (["input"] if fmt == "onnx" else ["x"])
    x = torch.randn(4, 4, 8, 8)
    got = _reloaded(out, fmt, result.inputs, (x,))
    with torch.no_grad():
        want = _compiled(spec)(x)
    assert list(want) == ["0", "aux"] and len(got) == 2
    for a, b in zip(got, want.values()):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["0", "aux"]
    else:
        assert list(torch.export.load(str(out)).module()(x)) == ["0", "aux"]  # still a dict


def test_eval_output_is_what_is_exported(tmp_path):
    spec = _spec(PYRAMID, tmp_path)  # training mode returns a dict, eval mode `total` alone
    result = compiler.export(spec, tmp_path / "p.pt2", format="pt2")
    assert result.outputs == ["output"]
    x = torch.randn(2, 4, 8, 8)
    got = torch.export.load(str(tmp_path / "p.pt2")).module()(x)
    assert isinstance(got, torch.Tensor) and torch.allclose(got, _compiled(spec)(x), atol=1e-6)


@pytest.mark.skipif(not HAS_ONNX, reason="needs onnx, onnxruntime and onnxscript")
def test_onnx_names_are_unique_and_follow_the_tuple(tmp_path):
    import onnxruntime

    text = "name: t\ninput: {left: [4], right: [4]}\nmodel:\n  graph:\n    - {sub: [left, right], as: d}\n"
    spec = _spec(text + "  output: [d, left]\n", tmp_path)  # (a value is returned once: §15)
    result = compiler.export(spec, tmp_path / "t.onnx")
    assert result.outputs == ["d", "left_1"]  # an output named as an input is renamed
    session = onnxruntime.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["d", "left_1"]
    left, right = torch.randn(3, 4), torch.randn(3, 4)
    d, same = session.run(None, {"left": left.numpy(), "right": right.numpy()})
    assert torch.allclose(torch.from_numpy(d), left - right) and torch.equal(torch.from_numpy(same), left)


def test_cli_export_summary_and_errors_are_one_line(tmp_path, capsys):
    spec = _spec(SIAMESE, tmp_path)
    assert main(["export", str(spec), "--format", "pt2", "-o", str(tmp_path / "s.pt2")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"wrote {tmp_path / 's.pt2'} (pt2; checked against torch") and err == ""
    assert main(["summary", str(spec)]) == 0
    assert "Inputs: left (1, 8, 8), right (1, 8, 8)" in capsys.readouterr().out
    assert main(["summary", str(_spec(DICT, tmp_path))]) == 0
    assert "Outputs: 0 (6, 8, 8), aux (2, 8, 8)" in capsys.readouterr().out
    spec = _spec(SIAMESE, tmp_path)
    torch.save({"encoder.1.weight": torch.zeros(5, 64)}, tmp_path / "bad.pt")
    for argv, words in [
        (["--checkpoint", str(tmp_path / "bad.pt"), "-o", str(tmp_path / "x.pt2")], "does not fit the spec's model"),
        (["-o", str(tmp_path)], "is a folder; name the file to write, e.g. -o"),
    ]:
        assert main(["export", str(spec), "--format", "pt2", *argv]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("specc export: ") and words in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x.pt2").exists()
