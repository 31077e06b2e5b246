"""`dglsp eval --repo` (issue 5): holes at syntactic points, scoring, and a run on a tiny repository."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from dglsp.cli import main as cli_main
from dglsp.completion.completer import Completer
from dglsp.completion.edits import Edit
from dglsp.completion.postprocess import FILTERS
from dglsp.completion.prompt import CursorContext
from dglsp.config import EngineSettings, Settings
from dglsp.model.loading import load_engine
from dglsp.tools.eval_repo import KINDS, Report, evaluate_repo, find_holes, score_variant, source_files

PYTHON = '''import math


def area(radius):
    """Area of a circle."""
    squared = radius * radius
    return math.pi * squared


def total(values):
    result = 0
    for value in values:
        result += value
    return result
'''
JAVASCRIPT = '''function add(a, b) {
  const sum = a + b;
  return sum;
}

function scale(items, factor) {
  return items.map((x) => x * factor);
}
'''


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "geometry.py").write_text(PYTHON)
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "add.js").write_text(JAVASCRIPT)
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "skip.js").write_text(JAVASCRIPT)
    (tmp_path / "test_geometry.py").write_text("import geometry\nassert geometry.total([1, 2]) == 3\n")
    return tmp_path


def test_source_files_skip_vendored_directories(repo):
    found = {str(path.relative_to(repo)) for path, _ in source_files(repo)}
    assert found == {"geometry.py", "web/add.js", "test_geometry.py"}


@pytest.mark.parametrize("text,language", [(PYTHON, "python"), (JAVASCRIPT, "javascript")])
def test_holes_of_every_kind_sit_at_syntactic_points(text, language):
    holes = find_holes(text, "f", language, random.Random(0), per_kind=50)
    assert {hole.kind for hole in holes} == set(KINDS)
    for hole in holes:
        truth = text[hole.start:hole.end]
        assert truth.strip(), hole
        if hole.kind == "whole-line":
            assert "\n" not in truth and text[:hole.start].rsplit("\n", 1)[-1].strip() == ""
        if hole.kind == "rest-of-line":
            assert text[hole.end:hole.end + 1] in ("\n", "")
        if hole.kind == "block":
            assert truth.startswith("\n") and text[hole.start - 1] in ":{"


def test_scoring_counts_exact_matches_and_both_bug_kinds():
    original = "def f(a):\n    return g(a)\n\nprint(f(1))\n"
    start = original.index("a):")
    end = start + 1
    document = original[:start] + original[end:]
    context = CursorContext(document[:start], document[start:], "x.py", "python")
    report = Report()
    from dglsp.tools.eval_repo import Hole

    hole = Hole("x.py", "python", "rest-of-line", start, end)
    score_variant(report, "truth", hole, original, document, context, Edit(start, start, "a"))
    score_variant(report, "over", hole, original, document, context, Edit(start, start, "a):"))
    score_variant(report, "typed-over", hole, original, document, context, Edit(start, start + 2, "a):"))
    rows = {variant: by_kind["all"].row() for variant, by_kind in report.scores.items()}
    assert rows["truth"]["exact_match"] == 1.0 and rows["truth"]["over_closing"] == 0
    assert rows["over"]["exact_match"] == 0.0 and rows["over"]["over_closing"] == 1
    assert rows["typed-over"]["exact_match"] == 1.0 and rows["typed-over"]["over_closing"] == 0

    below = original.index("    return")
    hole = Hole("x.py", "python", "whole-line", below, below)  # an empty hole: the truth is ""
    context = CursorContext(original[:below], original[below:], "x.py", "python")
    score_variant(report, "repeat", hole, original, original, context, Edit(below, below, "return g(a)\n    "))
    assert report.scores["repeat"]["all"].next_line_repeats == 0  # it is the cursor's own line, not the next
    line_end = original.index("\n", below)
    hole = Hole("x.py", "python", "rest-of-line", line_end, line_end)
    context = CursorContext(original[:line_end], original[line_end:], "x.py", "python")
    score_variant(report, "repeat2", hole, original, original, context, Edit(line_end, line_end, "\nprint(f(1))"))
    assert report.scores["repeat2"]["all"].next_line_repeats == 1


def test_a_run_on_a_tiny_repository_reports_every_variant(repo, tiny_model_dir):
    completer = Completer(*load_engine(EngineSettings(model=str(tiny_model_dir), device="cpu")))
    settings, _ = Settings().updated({"sampler": {"max_steps": 2, "seed": 0}})
    test_cmd = f"{sys.executable} test_geometry.py"
    report = evaluate_repo(completer, repo, settings, limit=6, per_kind=1, seed=0, test_cmd=test_cmd, test_limit=1)
    assert set(report.scores) == {"raw", "full", *(f"-{name}" for name in FILTERS)}
    assert report.scores["full"]["all"].holes == 6
    assert all(by_kind["all"].holes == 6 for by_kind in report.scores.values())
    assert report.scores["full"]["all"].tests_run == 1
    assert report.scores["full"]["all"].over_closing == 0


def test_cli_routes_eval_repo(repo, tiny_model_dir, capsys):
    assert cli_main(["eval", "--repo", str(repo), "--model", str(tiny_model_dir), "--limit", "2",
                     "--settings", '{"sampler": {"max_steps": 2}}']) == 0
    out = capsys.readouterr().out
    assert "full" in out and "raw" in out and "edit-sim" in out
    assert cli_main(["eval", "--repo", str(repo), "--model", str(tiny_model_dir), "--limit", "3", "--calibrate",
                     "--json", "--settings", '{"sampler": {"max_steps": 2}, "postprocess": {"hide_unparsable": false}}'
                     ]) == 0
    points = json.loads(capsys.readouterr().out)["calibration"]["diffusion"][f"{repo.name} exact match"]
    assert len(points) == 3
    assert all(confidence is None or 0.0 < confidence <= 1.0 for confidence, _, _ in points)


def test_humaneval_pipeline_completion_is_what_the_editor_would_insert():
    from dglsp.tools.eval_humaneval import pipeline_completion
    from dglsp.tools.humaneval import Problem

    problem = Problem("t/0", "def f(x):\n    y = x + 1\n", "    return y\n", "    z = y\n", "", "f")
    decoded = "    z = y\n    return y\n"
    # Between two lines of the function: one line, as the editor shows there.
    assert pipeline_completion("    z = y\n    w = z\n", problem) == "    z = y\n"
    assert pipeline_completion("    z = y\n    w = z\n", problem, "pipeline-scope") == "    z = y\n    w = z\n"
    # Offered a block anyway, it stops before repeating the line below.
    assert pipeline_completion(decoded, problem, "pipeline-scope") == "    z = y\n"
    assert pipeline_completion("", problem) == "\n"
