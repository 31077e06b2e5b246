"""The confidence gate: a suggestion carries the model's confidence, and only those below the threshold hide."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from scripted import ScriptedModel

from dglsp.cli import main as cli_main
from dglsp.completion.completer import Completer
from dglsp.completion.confidence import shown_token_count
from dglsp.completion.prompt import CursorContext
from dglsp.config import EngineSettings, Settings
from dglsp.model.loading import load_local
from dglsp.tools.gate import curve, pick_threshold

CONTEXT = CursorContext("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", "calc.py", "python")


@pytest.fixture(scope="module")
def bundle(tiny_model_dir):
    return load_local(EngineSettings(model=str(tiny_model_dir), device="cpu"))[0]


def scripted(bundle, text: str, probability: float, tail: str = "", tail_probability: float = 1.0) -> Completer:
    ids = bundle.tokenizer.encode(text, add_special_tokens=False)
    rest = bundle.tokenizer.encode(tail, add_special_tokens=False) if tail else []
    logprobs = [math.log(probability)] * len(ids) + [math.log(tail_probability)] * len(rest)
    return Completer(bundle, ScriptedModel(ids + rest, logprobs))


def settings(min_confidence: float | None) -> Settings:
    updated, warnings = Settings().updated({"postprocess": {"min_confidence": min_confidence}})
    assert not warnings
    return updated


def test_a_suggestion_carries_the_probability_of_its_shown_tokens(bundle):
    suggestion = scripted(bundle, "a + b", 0.5, tail="\n\nzzz qqq (((", tail_probability=0.01).complete(
        CONTEXT, settings(0.0))
    assert suggestion.text == "a + b"
    assert suggestion.confidence == pytest.approx(0.5)  # the hidden tail does not count


@pytest.mark.parametrize("probability, threshold, shown", [(0.9, 0.5, True), (0.3, 0.5, False), (0.3, 0.0, True),
                                                           (0.5, 0.5, True)])
def test_the_gate_hides_only_what_falls_below_the_threshold(bundle, probability, threshold, shown):
    suggestion = scripted(bundle, "a + b", probability).complete(CONTEXT, settings(threshold))
    assert (suggestion.text == "a + b") is shown
    assert suggestion.gated is (not shown)
    assert suggestion.raw == "a + b" and suggestion.confidence == pytest.approx(probability)


def test_the_models_own_threshold_applies_unless_the_user_sets_one(bundle):
    completer = scripted(bundle, "a + b", 0.3)
    completer.backend.defaults = replace(completer.backend.defaults, min_confidence=0.5)
    assert completer.complete(CONTEXT, settings(None)).gated
    assert not completer.complete(CONTEXT, settings(0.1)).gated


def test_shown_token_count_covers_the_shown_text(bundle):
    ids = bundle.tokenizer.encode("x = 1\ny = 2\n", add_special_tokens=False)
    count = shown_token_count(ids, "x = 1", lambda part: bundle.tokenizer.decode(part))
    assert bundle.tokenizer.decode(ids[:count]).rstrip() == "x = 1"


def test_precision_coverage_curve_and_the_chosen_threshold():
    # 10 requests: 6 shown (confidence, passed), 4 with nothing shown.
    points = [[0.9, True], [0.8, True], [0.7, False], [0.4, True], [0.2, False], [0.1, False]] + [[None, False]] * 4
    line = {p.threshold: p for p in curve(points)}
    assert line[0.0].coverage == pytest.approx(0.6) and line[0.0].precision == pytest.approx(0.5)
    assert line[0.7].coverage == pytest.approx(0.3) and line[0.7].precision == pytest.approx(2 / 3)
    pick = pick_threshold(list(line.values()))
    assert pick.threshold == pytest.approx(0.4)  # precision 0.75 for a third of the coverage: the best trade


def test_plot_gate_writes_a_png_from_calibration_runs(tmp_path, capsys):
    run = {"calibration": {"verified": {"single-line": [[0.9, True, True], [0.2, False, False], [None, False, False]]}}}
    source = tmp_path / "eval.json"
    source.write_text(json.dumps(run))
    png = tmp_path / "gate.png"
    assert cli_main(["eval", "--plot-gate", str(source), str(png), "--json"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chosen = json.loads(capsys.readouterr().out)
    assert list(chosen) == ["verified single-line (eval)"]


def test_plot_gate_pools_each_decoding_over_its_benchmarks(tmp_path, capsys):
    run = {"calibration": {
        "diffusion": {"single-line": [[0.9, True, True], [0.5, False, False]],
                      "multi-line": [[0.8, False, False], [None, False, False]]},
        "verified": {"single-line": [[0.7, True, True]]},
    }}
    source = tmp_path / "eval.json"
    source.write_text(json.dumps(run))
    assert cli_main(["eval", "--plot-gate", str(source), str(tmp_path / "gate.png"), "--json"]) == 0
    chosen = json.loads(capsys.readouterr().out)
    assert "diffusion pooled" in chosen and "verified pooled" not in chosen  # one series: nothing to pool
    assert chosen["diffusion pooled"]["ungated"] == {"coverage": 0.75, "precision": pytest.approx(0.3333, abs=1e-4)}
    assert chosen["diffusion pooled"]["threshold"] == 0.8  # 0.9 would keep under half the coverage
