"""`dglsp eval edits`: chrF, the moment an example stands for, exact match and quiet rate with the baselines, and
a run through the command line on the tiny model."""

from __future__ import annotations

import json

import pytest

from dglsp.cli import main as cli_main
from dglsp.completion.edits import Edit
from dglsp.completion.next_edit import candidate_regions, substitution_of
from dglsp.tools.edit_corpus import EditExample, Hunk
from dglsp.tools.eval_edits import changed_lines, chrf, evaluate, moment_of, no_edit, repeat, score

LINES = ["def area(w, h):", "    return w * h", "", "", "print(area(2, 3))", "print(area(4, 5))",
         "# area is width times height", "done = True"]
RENAME = Hunk(0, ("def area(w, h):",), ("def surface(w, h):",))
FIRST_USE = Hunk(4, ("print(area(2, 3))",), ("print(surface(2, 3))",))
SECOND_USE = Hunk(5, ("print(area(4, 5))",), ("print(surface(4, 5))",))
COMMENT = Hunk(6, ("# area is width times height",), ("# surface is width times height",))


def example(history: list[Hunk], target: Hunk | None, cursor: tuple[int, int], kind: str = "rename",
            lines: list[str] = LINES) -> EditExample:
    return EditExample(kind=kind, split="heldout", project="python-stdlib", commit="", license="PSF-2.0",
                       license_file="", path="shapes.py", window_start=0, before="\n".join(lines),
                       history=history, target=target, cursor=cursor, step=len(history), steps=len(history) + 1)


def after_rename() -> EditExample:
    """The moment after renaming the definition: the next edit is its first use."""
    return example([RENAME], FIRST_USE, (0, len("def surface")))


# ---- chrF ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hypothesis, reference, expected", [
    # sacrebleu 2.x `CHRF().sentence_score(hypothesis, [reference]).score` on the same strings
    ("ab", "abc", 63.636363636363626),
    ("def surface(w, h):", "def area(w, h):", 42.60618732666205),
    ("    return first >= b", "    return first >= b_value", 70.24576524102069),
    ("x = compute(a, b)", "y = compute(b, a)", 60.286472786472785),
    ("print(surface(2, 3))", "print(surface(4, 5))", 72.92367970580045),
])
def test_chrf_agrees_with_sacrebleu(hypothesis, reference, expected):
    assert chrf(hypothesis, reference) == pytest.approx(expected)


def test_chrf_edges():
    assert chrf("same text", "same text") == 100.0
    assert chrf("a  b\n", "ab") == 100.0  # whitespace is not counted, as in sacrebleu
    assert chrf("", "") == 100.0  # two empty texts are equal (sacrebleu says 0)
    assert chrf("", "abc") == 0.0 and chrf("xyz", "abc") == 0.0


def test_changed_lines_drop_the_equal_ends():
    assert changed_lines("a\nb\nc", "a\nB\nc") == ("b", "B")
    assert changed_lines("a\nc", "a\nb\nc") == ("", "b")


# ---- the moment ----------------------------------------------------------------------------------------------------

def test_the_moment_has_the_history_as_edithistory_records_it():
    moment = moment_of(after_rename())
    assert moment.text.startswith("def surface(w, h):\n") and moment.cursor == len("def surface")
    assert len(moment.history) == 1
    recorded = moment.history[0]
    assert (recorded.start_line, recorded.old_lines, recorded.new_lines) == (0, ["def area(w, h):"],
                                                                             ["def surface(w, h):"])
    substitution = substitution_of(recorded)
    assert substitution is not None and (substitution.old, substitution.new) == ("area", "surface")
    assert moment.diffs == [recorded.diff(after_rename().path)]  # the diffs as the server writes them
    regions = candidate_regions(moment.text, moment.cursor, moment.history, radius=0)
    assert moment.text[regions[0].start:regions[0].end] == "print(area(2, 3))\n"


def test_later_edits_are_separate_and_keep_their_lines():
    moment = moment_of(example([RENAME, FIRST_USE], SECOND_USE, (4, len("print(surface"))))
    assert [edit.start_line for edit in moment.history] == [0, 4]
    assert moment_of(example([RENAME, FIRST_USE], SECOND_USE, (4, 13)), history_edits=1).history[0].start_line == 4


# ---- scores and baselines ------------------------------------------------------------------------------------------

def test_the_substitution_baseline_carries_a_rename_exactly():
    rename = after_rename()
    moment = moment_of(rename)
    outcome = score(rename, moment.text, repeat(moment).edit)
    assert outcome.exact and outcome.shown and outcome.chrf == 100.0
    nothing = score(rename, moment.text, no_edit(moment).edit)
    assert not nothing.exact and not nothing.shown and nothing.chrf == 0.0


def test_a_wrong_edit_scores_its_changed_lines():
    rename = after_rename()
    text = moment_of(rename).text
    start = text.index("print(area(2, 3))")
    wrong = Edit(start + len("print(area("), start + len("print(area(2, 3"), "9, 9")
    outcome = score(rename, text, wrong)
    assert outcome.shown and not outcome.exact
    assert outcome.chrf == pytest.approx(chrf("print(area(9, 9))", "print(surface(2, 3))"))


def test_a_deletion_is_scored_on_the_lines_it_removes():
    deletion = example([RENAME], Hunk(6, ("# area is width times height",), ()), (0, 11))
    text = moment_of(deletion).text
    start = text.index("# area")
    assert score(deletion, text, Edit(start, start + len(LINES[6]) + 1, "")).exact
    assert score(deletion, text, Edit(start, start + len(LINES[6]) + 1, "")).chrf == 100.0
    assert score(deletion, text, Edit(start, start + 6, "")).chrf == 0.0  # it left a line behind


def test_quiet_rate_and_exact_match_over_kinds():
    done = [RENAME, FIRST_USE, SECOND_USE, COMMENT]
    all_renamed = example(done, None, (6, len("# surface")), kind="real")
    left_over = example(done[:3], None, (5, len("print(surface")), kind="real")  # the comment still says area
    examples = [after_rename(), all_renamed, left_over]
    result = evaluate(examples, {"no-edit": no_edit, "repeat": repeat})
    rows = {(row["predictor"], row["label"]): row for row in result["rows"]}
    assert rows["repeat", "rename"]["exact"] == 1.0 and rows["repeat", "rename"]["chrf"] == 100.0
    assert rows["no-edit", "rename"]["exact"] == 0.0 and rows["no-edit", "rename"]["chrf"] == 0.0
    assert rows["no-edit", "no_edit"]["quiet"] == 1.0 and rows["no-edit", "no_edit"]["exact"] == 1.0
    # Carrying the rename into the comment when the change is complete is an edit nobody asked for.
    assert rows["repeat", "no_edit"]["quiet"] == 0.5 and rows["repeat", "no_edit"]["shown"] == 0.5
    assert rows["repeat", "all targets"]["examples"] == 1
    assert [record["label"] for record in result["examples"]] == ["rename", "no_edit", "no_edit"]


# ---- the command line ----------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("one_thread")
def test_eval_edits_runs_through_the_command_line(tiny_model_dir, capsys):
    settings = json.dumps({"next_edit": {"max_steps": 4}})
    assert cli_main(["eval", "edits", "--limit", "3", "--model", str(tiny_model_dir), "--threads", "1",
                     "--radius", "1", "--settings", settings, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    predictors = {row["predictor"] for row in result["rows"]}
    assert predictors == {"model", "no-edit", "repeat"}
    assert len(result["examples"]) == 3 and result["command"].startswith("dglsp ")
    assert len(result["load_average"]) == 3 and result["next_edit"]["radius"] == 1
    model_rows = [row for row in result["rows"] if row["predictor"] == "model"]
    assert all(row["forward_passes"] > 0 and row["ms"] > 0 for row in model_rows)
    assert cli_main(["eval", "edits", "--limit", "1", "--kind", "no_edit", "--model", str(tiny_model_dir),
                     "--radius", "0", "--no-seed", "--settings", settings]) == 0
    table = capsys.readouterr().out
    assert "no_edit" in table and "quiet" in table and "'seed_canvas': False" in table


def test_eval_edits_refuses_a_hole_kind(tiny_model_dir):
    with pytest.raises(SystemExit, match="--kind takes"):
        cli_main(["eval", "edits", "--kind", "block", "--model", str(tiny_model_dir)])
