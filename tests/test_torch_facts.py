"""Validation without torch: the checked-in table is torch's, and the fast path says what the live one says.

- the table equals one generated now from the installed torch (regenerate: ``python -m compiler.facts.make_table``);
- every signature read from it equals torch's own, and its annotations accept and refuse the same values;
- every shipped spec and every invalid-corpus file gives the same problems, warnings, summary, per-layer
  counts and script on the fast path (table and arithmetic rules) as on the live path (torch constructing
  every layer on the meta device) -- with spies proving each path ran as it says;
- a table for another torch falls back to the live path and says so once;
- ``specc validate`` and ``specc summary`` import neither torch nor torchvision (nor jinja2).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import compiler
from compiler.cli.summary import print_summary
from compiler.facts import make_table, param_rules, registry, torch_facts
from compiler.facts.registry import REGISTRY
from compiler.facts.torch_facts import live_signature
from compiler.lower import model as lower
from compiler.pipeline import lower_spec, render_script

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
CORPUS = sorted((ROOT / "tests" / "invalid").glob("*.yaml"))
TABLE_ENTRIES = [
    e
    for kind in ("layer", "loss", "optimizer", "scheduler", "init")
    for e in REGISTRY.entries(kind)
    if e.params is None
]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("SPECC_MAX_MODEL_BYTES", raising=False)
    monkeypatch.delenv("SPECC_LIVE_TORCH", raising=False)
    yield
    torch_facts.set_live(None)


def test_the_table_is_generated_from_the_installed_torch() -> None:
    shipped = json.loads(torch_facts.TABLE.read_text(encoding="utf-8"))
    fresh = make_table.generate()
    assert shipped["versions"] == fresh["versions"], "torch changed: run `python -m compiler.facts.make_table`"
    assert shipped == fresh, "compiler/facts/torch_facts.json is stale: run `python -m compiler.facts.make_table`"
    assert torch_facts.TABLE.read_text(encoding="utf-8") == make_table.table_text(fresh)
    assert len(fresh["entries"]) == len(TABLE_ENTRIES) > 100


@pytest.mark.parametrize("entry", TABLE_ENTRIES, ids=[f"{e.kind}:{e.name}" for e in TABLE_ENTRIES])
def test_table_signatures_are_torchs(entry) -> None:
    torch_facts.set_live(False)
    fast, live = torch_facts.signature(entry), live_signature(entry)
    assert fast is not None
    assert list(fast.parameters) == list(live.parameters)
    for a, b in zip(fast.parameters.values(), live.parameters.values()):
        assert a.kind == b.kind, a.name
        if inspect.isfunction(b.default):  # F.relu: a stand-in of the same name and type
            assert inspect.isfunction(a.default) and a.default.__name__ == b.default.__name__
        else:
            assert type(a.default) is type(b.default) and a.default == b.default, a.name
        assert repr(a.annotation) == repr(b.annotation), a.name
        _same_verdicts(a.annotation, b.annotation, f"{entry.name}.{a.name}")


STATIC = [e for kind in ("layer", "transform", "dataset") for e in REGISTRY.entries(kind) if e.params is not None]


@pytest.mark.parametrize("entry", STATIC, ids=[f"{e.kind}:{e.name}" for e in STATIC])
def test_static_torchvision_parameters_are_torchvisions(entry) -> None:
    """Entries spelt statically (``Entry.params``: what validation reads for torchvision) name torchvision's own
    arguments, required exactly where torchvision requires them (the table's torchvision section, checked
    against the installed torchvision by the regeneration test above)."""
    if not entry.module.startswith("torchvision"):
        assert entry.module == "" and entry.kind == "dataset"  # Synthetic and CSV: specc's own
        return
    table = json.loads(torch_facts.TABLE.read_text(encoding="utf-8"))
    theirs = {p["name"]: "default" not in p for p in table["torchvision"][f"{entry.kind}:{entry.name}"]["parameters"]}
    assert table["torchvision"][f"{entry.kind}:{entry.name}"]["class"] == f"{entry.module}.{entry.class_name}"
    for name in entry.params:
        assert name.rstrip("!") in theirs, f"{entry.name} has no argument {name.rstrip('!')!r} in torchvision"
        assert theirs[name.rstrip("!")] == name.endswith("!"), f"{entry.name}.{name}: required differs"
    supplied = {"transform", "target_transform", "train", "loader", "is_valid_file"}  # specc sets or never offers
    assert {n for n, required in theirs.items() if required} <= {p.rstrip("!") for p in entry.params} | supplied


_PROBES = [None, True, 0, 3, -1, 2.5, "relu", "same", [1, 2], [1, 2, 3], [0.9, 0.99], [[1], [2]], {"a": 1}, [1.5]]


def _same_verdicts(fast, live, what: str) -> None:
    """The rebuilt annotation accepts and refuses what torch's does (bind checks values with it)."""
    from pydantic import ConfigDict, TypeAdapter

    def verdicts(annotation):
        if annotation is inspect.Parameter.empty or isinstance(annotation, str):
            return None
        try:
            adapter = TypeAdapter(annotation, config=ConfigDict(strict=True, arbitrary_types_allowed=True))
        except Exception:
            return "no adapter"
        out = []
        for value in _PROBES:
            try:
                adapter.validate_python(value)
                out.append(True)
            except Exception:
                out.append(False)
        return out

    assert verdicts(fast) == verdicts(live), what


def _outcome(path: Path) -> str:
    """Everything validation reports about one spec: problems or warnings, summary, per-layer facts, script."""
    out = io.StringIO()
    try:
        spec = compiler.load_spec(path)
    except compiler.SpecError as err:
        return f"problems:\n{err}"
    program = lower_spec(spec)
    out.write("warnings:\n" + "\n".join(str(w) for w in program.warnings) + "\n")
    with contextlib.redirect_stdout(out):
        print_summary(program.model, title=str(path))
    for layer in program.model.layers():
        out.write(f"{layer.path} {layer.type} {layer.in_shape} {layer.out_shape} {layer.params} {layer.nbytes} ")
        out.write(f"{layer.param_slots} {layer.none_params} {layer.param_shapes}\n")
    out.write(render_script(spec))
    return out.getvalue()


class _Spies:
    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.rules = self.live = self.signatures = 0
        rules, live, sig = param_rules.construct, lower._Lowerer.construct_live, torch_facts.signature

        def count_rules(*args, **kwargs):
            self.rules += 1
            return rules(*args, **kwargs)

        def count_live(*args, **kwargs):
            self.live += 1
            return live(*args, **kwargs)

        def count_signatures(entry):
            found = sig(entry)
            self.signatures += found is not None
            return found

        monkeypatch.setattr(param_rules, "construct", count_rules)
        monkeypatch.setattr(lower._Lowerer, "construct_live", count_live)
        monkeypatch.setattr(torch_facts, "signature", count_signatures)


def _both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, _Spies, _Spies]:
    results = []
    for live in (False, True):
        with monkeypatch.context() as patch:
            spies = _Spies(patch)
            torch_facts.set_live(live)
            results.append((_outcome(path), spies))
    (fast, fast_spies), (live, live_spies) = results
    return fast, live, fast_spies, live_spies


@pytest.mark.parametrize("path", SPECS + CORPUS, ids=[f"{p.parent.name}/{p.stem}" for p in SPECS + CORPUS])
def test_fast_and_live_validation_agree(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, live, fast_spies, live_spies = _both(path, monkeypatch)
    assert fast == live
    assert fast_spies.live == 0, "the fast path constructed a layer with torch"
    assert live_spies.rules == 0 and live_spies.signatures == 0, "the live path read the table or the rules"
    if path.parent.name == "specs":  # a valid spec: layers were counted, by the rules on one path, torch on the other
        assert fast.startswith("warnings:") and "Total params" in fast
        assert fast_spies.rules > 0 and fast_spies.signatures > 0 and live_spies.live > 0


def test_the_comparison_covers_refusals_and_models() -> None:
    """Not vacuous: the corpus holds torch refusals and budget refusals, and the specs have real parameters."""
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in CORPUS)
    assert "is refused by torch" in text and "exceeds what validation checks" in text
    assert len(SPECS) >= 15 and len(CORPUS) >= 100


def test_a_table_for_another_torch_falls_back_to_live_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    table = json.loads(torch_facts.TABLE.read_text(encoding="utf-8"))
    table["versions"]["torch"] = "0.0.1"
    monkeypatch.setattr(torch_facts, "_TABLE", table)
    monkeypatch.setattr(torch_facts, "_WARNED", False)
    torch_facts.set_live(None)
    spies = _Spies(monkeypatch)
    first = _outcome(ROOT / "specs" / "mnist_cnn.yaml")
    second = _outcome(ROOT / "specs" / "lenet5.yaml")
    err = capsys.readouterr().err
    assert err.count("torch_facts.json was generated for torch 0.0.1") == 1, err
    assert "regenerate it with `python -m compiler.facts.make_table`" in err
    assert spies.live > 0 and spies.signatures == 0 and spies.rules == 0
    torch_facts.set_live(False)
    assert _outcome(ROOT / "specs" / "mnist_cnn.yaml") == first and "Total params" in second


def test_live_is_forced_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    torch_facts.set_live(None)
    assert torch_facts.live() is False
    monkeypatch.setenv("SPECC_LIVE_TORCH", "1")
    assert torch_facts.live() is True
    assert torch_facts.signature(REGISTRY.get("layer", "Linear")) is None


def test_plugins_keep_live_signatures() -> None:
    from torch import nn

    class Scale(nn.Module):
        def __init__(self, factor: float = 2.0):
            super().__init__()
            self.factor = factor

    entry = registry.Entry("ScaleForFacts", "layer", __name__, attr="Scale", cls_object=Scale)
    torch_facts.set_live(False)
    assert list(entry.signature().parameters) == ["factor"]


@pytest.mark.filterwarnings("ignore:.*FactsProbe has no shape rule")
def test_a_plugin_layer_is_constructed_by_torch_beside_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the fast path a plugin (no rules) is constructed on the meta device; the built-in layers beside it
    are counted by the rules; the counts are torch's either way."""
    from torch import nn

    class FactsProbe(nn.Module):
        def __init__(self, width: int = 3):
            super().__init__()
            self.scale = nn.Parameter(nn.init.ones_(__import__("torch").empty(width)))

        def forward(self, x):
            return x * self.scale

    monkeypatch.setitem(REGISTRY._by_kind, "layer", dict(REGISTRY._by_kind["layer"]))  # undone after the test
    compiler.register_layer(FactsProbe)
    text = "name: t\ninput: [4]\nmodel:\n  - {Linear: {out_features: 3}}\n  - {FactsProbe: {width: 3}}\n"
    counts = {}
    for live in (False, True):
        with monkeypatch.context() as patch:
            spies = _Spies(patch)
            torch_facts.set_live(live)
            program = lower_spec(compiler.parse_spec(text, "t.yaml"))
            counts[live] = [
                (layer.params, layer.nbytes, layer.param_slots, layer.param_shapes) for layer in program.model.layers()
            ]
            if not live:
                assert spies.live == 1 and spies.rules == 1  # FactsProbe by torch, Linear by its rule
    linear = (15, 60, ("weight", "bias"), (("weight", (3, 4)), ("bias", (3,))))
    assert counts[False] == counts[True] == [linear, (3, 12, ("scale",), (("scale", (3,)),))]


_NO_TORCH = """
import sys
from compiler.cli.commands import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "torchvision", "jinja2", "numpy") if m in sys.modules)
print("IMPORTED", heavy)
sys.exit(rc)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "specs/mnist_cnn.yaml"],
        ["summary", "specs/mnist_cnn.yaml"],
        ["validate", *[f"specs/{p.name}" for p in SPECS]],
        ["validate", "tests/invalid/dropout_p_out_of_range.yaml"],
    ],
    ids=["validate", "summary", "validate-all", "validate-refused"],
)
def test_validate_and_summary_import_neither_torch_nor_torchvision(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, *argv],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**_env(), "PYTHONPATH": str(ROOT)},
    )
    assert "IMPORTED []" in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if argv[1].startswith("tests/invalid"):
        assert result.returncode == 1 and "is refused by torch: dropout probability" in result.stderr
    else:
        assert result.returncode == 0, result.stderr


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("SPECC_LIVE_TORCH", "SPECC_MAX_MODEL_BYTES")}
