"""Next-edit data: mining a real (tiny) git history, the licence gate, the split, decontamination, synthetic edits.

Offline and fast: each git repository is built in tmp with the `git` command; sources are written here.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import random
import subprocess
from pathlib import Path

import pytest

from dglsp.tools import corpus
from dglsp.tools import edit_corpus as ec

MIT = """MIT License

Copyright (c) 2024 Someone

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction.
"""
GPL = """                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>
"""
BSD3 = """Copyright (c) 2013, Someone. All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are permitted provided that
the following conditions are met: ... Neither the name of the copyright holder nor the names of its contributors
may be used to endorse or promote products derived from this software without specific prior written permission.
"""
APACHE = "                                 Apache License\n                           Version 2.0, January 2004\n"
ISC = """ISC LICENSE

    This license is approved by the OSI and FSF as GPL-compatible.

    Permission to use, copy, modify, and/or distribute this software for any
    purpose with or without fee is hereby granted, provided that the above
"""
NO_DECONTAMINATION = ec.Decontaminator(heldout_hashes=set(), eval_runs=set())

# A module of twelve small functions (three lines each); the edits below are made to it.
BASE = [line for i in range(12) for line in (f"def function_{i}(value):", f"    return value + {i}", "")]


def edited(lines: list[str]) -> list[str]:
    """Three hunks: two lines inserted in function_0, function_2's and function_4's returns changed."""
    lines = list(lines)
    lines[13] = "    return value - 4"
    lines[7] = "    return value * 2"
    lines[1:1] = ["    value = abs(value)", "    value = int(value)"]
    return lines


def text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=Test", "-c", "user.email=test@example.com",
               "-c", "commit.gpgsign=false", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, content in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def tiny_repository(root: Path, licence: str = MIT) -> tuple[Path, dict[str, str]]:
    """A repository whose history holds one usable commit and one commit for each filter; (path, shas)."""
    repo = root / "tiny"
    repo.mkdir()
    git(repo, "init", "-q")
    shas = {"base": commit(repo, {"LICENSE": licence, "pkg/mod.py": text(BASE), "pkg/other.py": text(BASE)},
                           "base")}
    shas["used"] = commit(repo, {"pkg/mod.py": text(edited(BASE)), "CHANGES.md": "edited\n"}, "three hunks")
    after = edited(BASE)
    two = [*after[:6], "    return value + 1  # two files", *after[7:]]
    shas["two_files"] = commit(repo, {"pkg/mod.py": text(two), "pkg/other.py": text(edited(BASE))}, "two")
    one = after  # the two-file commit's change undone: one hunk
    shas["one_hunk"] = commit(repo, {"pkg/mod.py": text(one)}, "one hunk")
    spaces = [line.replace("return value", "return  value") if line.endswith(("+ 1", "+ 5")) else line
              for line in one]
    shas["whitespace"] = commit(repo, {"pkg/mod.py": text(spaces)}, "whitespace only")
    shas["new_file"] = commit(repo, {"pkg/new.py": text(BASE)}, "a new file")
    return repo, shas


# ---- real edits: history, target, cursor ------------------------------------------------------------------------


def test_a_commit_becomes_history_target_pairs_and_a_no_edit_moment(tmp_path):
    repo, shas = tiny_repository(tmp_path)
    examples, report = ec.mine_repository(repo / ".git", "someone/tiny", "train", NO_DECONTAMINATION)
    assert report.license == "MIT" and report.license_file == "LICENSE" and not report.skipped
    assert report.commits_seen == 5 and report.commits_used == 1
    assert report.dropped == {"not_one_py_file": 1, "not_a_modification": 1, "hunk_count": 1, "whitespace_only": 1}
    assert [e.step for e in examples] == [1, 2, 3] and {e.steps for e in examples} == {3}
    assert {(e.commit, e.path, e.kind, e.project) for e in examples} == {(shas["used"], "pkg/mod.py", "real",
                                                                           "someone/tiny")}
    first, second, done = examples
    inserted = ec.Hunk(1, (), ("    value = abs(value)", "    value = int(value)"))
    # The target is numbered in the text after the history: two lines were inserted above it.
    assert first.history == [inserted]
    assert first.target == ec.Hunk(9, ("    return value + 2",), ("    return value * 2",))
    assert first.cursor == (2, len("    value = int(value)"))
    assert second.history == [inserted, first.target]
    assert second.target == ec.Hunk(15, ("    return value + 4",), ("    return value - 4",))
    assert second.cursor == (9, len("    return value * 2"))
    assert done.target is None and done.history == [inserted, first.target, second.target]
    assert done.current() == "\n".join(edited(BASE)) == second.after()
    assert first.before == "\n".join(BASE) and first.window_start == 0
    assert first.current().split("\n")[first.target.start] == "    return value + 2"


def test_history_diffs_are_unified_diffs_against_the_text_before_each_edit(tmp_path):
    repo, _ = tiny_repository(tmp_path)
    examples, _ = ec.mine_repository(repo / ".git", "someone/tiny", "train", NO_DECONTAMINATION)
    diffs = examples[1].history_diffs(context=1)
    assert diffs[0].splitlines() == ["--- a/pkg/mod.py", "+++ b/pkg/mod.py", "@@ -1,2 +1,4 @@",
                                     " def function_0(value):", "+    value = abs(value)", "+    value = int(value)",
                                     "     return value + 0"]
    assert "@@ -9,3 +9,3 @@" in diffs[1] and "-    return value + 2" in diffs[1]


def test_a_window_keeps_whole_file_numbers_in_diffs():
    lines = [f"line_{i} = {i}" for i in range(400)]
    chain = [ec.Hunk(200, ("line_200 = 200",), ("line_200 = -200",)),
             ec.Hunk(210, ("line_210 = 210",), ("line_210 = -210",))]
    origin = ec.Provenance("real", "train", "a/b", "sha", "MIT", "LICENSE", "m.py")
    (example,) = ec.chain_examples(origin, lines, chain, [1])
    stored = example.before.split("\n")
    assert len(stored) == ec.WINDOW_LINES and stored[example.history[0].start] == "line_200 = 200"
    assert example.window_start + example.history[0].start == 200
    assert example.target is not None and stored[example.target.start] == "line_210 = 210"
    assert "@@ -199,5 +199,5 @@" in example.history_diffs(context=2)[0]


def test_edits_far_apart_cut_the_chain():
    near = [ec.Hunk(10, ("a",), ("b",)), ec.Hunk(40, ("c",), ("d",))]
    far = ec.Hunk(40 + ec.MAX_GAP_LINES + 5, ("e",), ("f",))
    assert ec.fitting_prefix([*near, far]) == near
    before = text([f"x{i} = {i}" for i in range(200)])
    spread = before.replace("x1 = 1\n", "x1 = -1\n").replace("x150 = 150\n", "x150 = -150\n")
    assert ec.commit_chain(before, spread) == "spread"


def test_an_inserted_block_ends_on_code_not_on_a_blank_line():
    old = ["def f():", "    try:", "        work()", "", "done = True"]
    new = ["def f():", "    try:", "        work()", "", "    except OSError:", "        pass", "", "done = True"]
    (hunk,) = ec.diff_hunks(old, new)
    assert hunk == ec.Hunk(3, (), ("", "    except OSError:", "        pass"))
    assert ec.apply_hunk(old, hunk) == new and ec.end_of(hunk) == (5, len("        pass"))


def test_examples_survive_a_round_trip_through_jsonl_gz(tmp_path):
    repo, _ = tiny_repository(tmp_path)
    examples, _ = ec.mine_repository(repo / ".git", "someone/tiny", "train", NO_DECONTAMINATION)
    path = tmp_path / "out" / "edits.jsonl.gz"
    assert ec.save_examples(examples, path) == 3
    assert ec.load_examples(path) == examples
    with gzip.open(path, "rt") as handle:
        row = json.loads(handle.readline())
    assert row["target"] == {"start": 9, "old": ["    return value + 2"], "new": ["    return value * 2"]}
    assert row["cursor"] == [2, 22] and row["license"] == "MIT"


# ---- licences -------------------------------------------------------------------------------------------------


def test_a_gpl_repository_is_skipped(tmp_path):
    repo, _ = tiny_repository(tmp_path, licence=GPL)
    examples, report = ec.mine_repository(repo / ".git", "someone/tiny", "train", NO_DECONTAMINATION)
    assert examples == [] and report.skipped == "licence: copyleft text in LICENSE"


@pytest.mark.parametrize(("files", "expected"), [
    ({"LICENSE": MIT}, "MIT"),
    ({"LICENSE.txt": BSD3}, "BSD-3-Clause"),
    ({"LICENSE": BSD3.replace("Neither the name", "Nor").replace("may be used to endorse", "")}, "BSD-2-Clause"),
    ({"LICENSE": APACHE}, "Apache-2.0"),
    ({"LICENSE": ISC}, "ISC"),  # "GPL-compatible" is not a GPL licence
    ({"LICENSE": "This software is made available under the terms of *either* of the licenses found in "
                 "LICENSE.APACHE or LICENSE.BSD.", "LICENSE.APACHE": APACHE, "LICENSE.BSD": BSD3},
     "Apache-2.0 OR BSD-3-Clause"),
    ({"LICENSE-HEADER": "SPDX-License-Identifier: MIT\n"}, "MIT"),
])
def test_permissive_licences_are_recognised(files, expected):
    verdict = ec.classify_license(files)
    assert verdict.permissive and verdict.license == expected


@pytest.mark.parametrize("files", [{"LICENSE": GPL}, {"COPYING": "All rights reserved."}, {},
                                   {"LICENSE": MIT, "LICENSE.GPL": GPL},
                                   {"LICENSE": "Mozilla Public License Version 2.0\n" + MIT}])
def test_anything_not_clearly_permissive_is_refused(files):
    assert not ec.classify_license(files).permissive


# ---- split ----------------------------------------------------------------------------------------------------


def test_projects_split_by_a_stable_hash_of_owner_and_name():
    for project in ("pallets/click", "someone/tiny", "a/b"):
        expected = int(hashlib.sha256(project.encode()).hexdigest()[:15], 16) / 16**15
        assert ec.stable_fraction(project) == expected
        assert ec.split_of(project, 0.5) == ("heldout" if expected < 0.5 else "train")
    names = [f"owner{i}/project{i}" for i in range(2000)]
    share = sum(ec.split_of(name) == "heldout" for name in names) / len(names)
    assert abs(share - ec.HELDOUT_FRACTION) < 0.03
    heldout = next(name for name in names if ec.split_of(name) == "heldout")
    assert ec.split_of(heldout, never_heldout=[heldout]) == "train"


def test_projects_in_the_code_corpus_are_matched_by_name():
    projects = ["pallets/jinja", "dateutil/dateutil", "psf/requests", "someone/unknown"]
    packages = ["Jinja2", "python-dateutil", "requests", "numpy"]
    assert ec.projects_in_code_corpus(projects, packages) == {"pallets/jinja", "dateutil/dateutil", "psf/requests"}


# ---- decontamination ------------------------------------------------------------------------------------------


def test_a_commit_whose_file_holds_held_out_windows_is_dropped(tmp_path):
    repo, _ = tiny_repository(tmp_path)
    after = text(edited(BASE))
    windows = ec.Decontaminator(heldout_hashes=corpus.heldout_window_hashes(after), eval_runs=set())
    examples, report = ec.mine_repository(repo / ".git", "someone/tiny", "train", windows)
    assert examples == [] and report.dropped["heldout_windows"] == 1
    runs = ec.Decontaminator(heldout_hashes=set(), eval_runs=corpus.line_runs(text(BASE)[:400]))
    examples, report = ec.mine_repository(repo / ".git", "someone/tiny", "train", runs)
    assert examples == [] and report.dropped["eval_overlap"] == 1


def test_the_shipped_decontamination_data_flags_a_humaneval_problem():
    path = sorted(corpus.HUMAN_EVAL_DIR.glob("*.jsonl.gz"))[0]
    with gzip.open(path, "rt") as handle:
        problem = json.loads(handle.readline())
    decontaminator = ec.Decontaminator()
    solution = problem["prompt"] + problem["canonical_solution"] + problem["suffix"]
    assert decontaminator.reason("import os\n", solution) == "eval_overlap"
    assert decontaminator.reason(text(BASE)) is None


# ---- synthetic edits ------------------------------------------------------------------------------------------

RENAME_SOURCE = '''import json


def summary(path):
    tmp = json.load(open(path))
    print(tmp, "items")
    if len(tmp) > 3:
        return tmp[:3]
    return tmp
'''


def test_a_rename_is_carried_to_the_next_use():
    source = ec.SourceText("pkg", "mod.py", RENAME_SOURCE, "MIT")
    examples, edited_files = ec.synthesize_file(source, seed=0, split="train", kinds=["rename"])
    renamed = {e.detail for e in examples}
    assert "tmp -> temp" in renamed and renamed <= {"tmp -> temp", "path -> filename"}
    chain = [e for e in examples if e.detail == "tmp -> temp"]
    assert [e.step for e in chain] == [1, 2, 3, 4]
    first = chain[0]
    assert first.history == [ec.Hunk(4, ("    tmp = json.load(open(path))",), ("    temp = json.load(open(path))",))]
    assert first.target == ec.Hunk(5, ('    print(tmp, "items")',), ('    print(temp, "items")',))
    assert chain[2].target == ec.Hunk(7, ("        return tmp[:3]",), ("        return temp[:3]",))
    assert first.cursor == (4, len("    temp = json.load(open(path))"))  # a line edit's cursor: its end
    for example in examples:
        ast.parse(example.after())
    assert all("tmp" not in ast.dump(ast.parse(t)) for t in edited_files if "temp" in t)


def test_names_a_rename_cannot_follow_are_left_alone():
    source = '''def outer(values):
    try:
        result = values[0]
    except IndexError as err:
        raise ValueError(err)
    def inner():
        return result
    return inner, values
'''
    chains = ec.rename_chains(ec.parse_source(source), random.Random(0))
    assert {c.detail.split(" -> ")[0] for c in chains} == {"values"}


PARAMETER_SOURCE = '''def scale(x, factor):
    return x * factor


def main():
    a = scale(1, 2)
    b = scale(3, 4)
    return a + b
'''


def parameter_of(detail: str) -> tuple[str, str, str]:
    name = detail.split(" parameter ")[1].split()[0]
    return next(p for p in ec.NEW_PARAMETERS if p[0] == name)


def test_a_new_parameter_is_carried_to_the_next_call_site():
    source = ec.SourceText("pkg", "mod.py", PARAMETER_SOURCE, "MIT")
    examples, _ = ec.synthesize_file(source, seed=0, split="train", kinds=["parameter"])
    assert [e.step for e in examples] == [1, 2]
    name, _, value = parameter_of(examples[0].detail)
    assert examples[0].detail == f"positional parameter {name} added to scale"
    assert examples[0].history == [ec.Hunk(0, ("def scale(x, factor):",), (f"def scale(x, factor, {name}):",))]
    assert examples[0].target == ec.Hunk(5, ("    a = scale(1, 2)",), (f"    a = scale(1, 2, {value})",))
    assert examples[1].target == ec.Hunk(6, ("    b = scale(3, 4)",), (f"    b = scale(3, 4, {value})",))
    for example in examples:
        ast.parse(example.after())


def test_a_parameter_with_a_default_is_passed_by_keyword_and_methods_through_self():
    source = '''class Box:
    def area(self, width, height=1):
        return width * height

    def total(self):
        return self.area(2) + self.area(3, height=4)
'''
    examples, _ = ec.synthesize_file(ec.SourceText("pkg", "box.py", source, "MIT"), 0, "train", ["parameter"])
    (example,) = examples  # both calls are on one line: one edit
    name, default, value = parameter_of(example.detail)
    assert example.history[0].new == (f"    def area(self, width, height=1, {name}={default}):",)
    assert example.target is not None
    assert example.target.new == (f"        return self.area(2, {name}={value}) + self.area(3, height=4, "
                                  f"{name}={value})",)
    ast.parse(example.after())


SIBLING_SOURCE = '''def configure(parser):
    parser.add_argument("--alpha", type=int)
    parser.add_argument("--beta", type=int)
    parser.add_argument("--gamma", type=int)
    parser.add_argument("--delta", type=int)
'''


def expected_sibling(detail: str, line: str) -> str:
    if detail.startswith("sibling keyword "):
        return line[:-1] + ", " + detail.removeprefix("sibling keyword ") + ")"
    if detail.startswith("sibling first argument wrapped in "):
        wrapper = detail.removeprefix("sibling first argument wrapped in ").removesuffix("()")
        start, end = line.index('"'), line.index('",') + 1
        return f"{line[:start]}{wrapper}({line[start:end]}){line[end:]}"
    assert detail == "sibling string prefix b"
    return line.replace('"--', 'b"--')


def test_the_same_change_is_carried_to_the_next_sibling_line():
    lines = SIBLING_SOURCE.splitlines()
    moves = set()
    for seed in range(40):
        examples, _ = ec.synthesize_file(ec.SourceText("pkg", "cli.py", SIBLING_SOURCE, "MIT"), seed, "train",
                                         ["sibling"])
        assert [e.step for e in examples] == [1, 2, 3]
        detail = examples[0].detail
        moves.add(detail.split()[1])
        for example in examples:
            assert example.target is not None
            number = example.target.start
            assert example.target == ec.Hunk(number, (lines[number],), (expected_sibling(detail, lines[number]),))
            assert example.history[-1].new == (expected_sibling(detail, lines[number - 1]),)
            ast.parse(example.after())
    assert moves == {"keyword", "first", "string"}  # a keyword added, the first argument wrapped, a prefix


def test_synthesis_is_deterministic_and_split_by_file():
    sources = [ec.SourceText("pkg", f"m{i}.py", RENAME_SOURCE + PARAMETER_SOURCE, "MIT") for i in range(40)]
    first, report = ec.synthesize(sources, seed=3, log=lambda _: None)
    again, _ = ec.synthesize(sources, seed=3, log=lambda _: None)
    assert first == again and report.files_used == 40
    for example in first:
        assert example.split == ec.split_of(f"pkg/{example.path}")
    assert {e.split for e in first} == {"train", "heldout"}
    broken, report = ec.synthesize([ec.SourceText("pkg", "bad.py", "def (:\n", "MIT")], log=lambda _: None)
    assert broken == [] and report.dropped["syntax"] == 1


# ---- manifest, shipped subset, command line ------------------------------------------------------------------


def test_the_command_line_writes_splits_manifest_and_the_shipped_set(tmp_path):
    repo, shas = tiny_repository(tmp_path)
    mirror = tmp_path / "mirror" / "someone+tiny" / "repo"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(mirror)], check=True)
    out, ship = tmp_path / "out", tmp_path / "ship"
    assert ec.main(["--out", str(out), "--mirror-dir", str(tmp_path / "mirror"), "--sources", "none",
                    "--project-heldout-fraction", "1", "--ship", str(ship)]) == 0
    heldout = ec.load_examples(out / "heldout.jsonl.gz")
    assert len(heldout) == 3 and ec.load_examples(out / "train.jsonl.gz") == []
    full = json.loads((out / "MANIFEST.json").read_text())
    (project,) = full["projects"]
    assert project["project"] == "someone/tiny" and project["license"] == "MIT" and project["split"] == "heldout"
    assert project["commits_used"] == 1 and project["examples"] == 2 and project["no_edit"] == 1
    assert full["filters"]["dropped"]["whitespace_only"] == 1
    shipped = json.loads((ship / "MANIFEST.json").read_text())
    assert shipped["projects"][0]["commits"] == [shas["used"]] and shipped["counts"] == {"no_edit": 1, "real": 2}
    assert sorted(ec.load_examples(ship / "heldout.jsonl.gz"), key=lambda e: e.step) == heldout


def test_the_shipped_subset_takes_one_example_a_commit_first():
    origin = ec.Provenance("real", "heldout", "a/b", "", "MIT", "LICENSE", "m.py")
    lines = [f"x{i} = {i}" for i in range(30)]
    chain = [ec.Hunk(i, (lines[i],), (lines[i] + "  # changed",)) for i in (2, 5, 8, 11)]
    rows = [e for sha in ("c1", "c2", "c3")
            for e in ec.chain_examples(origin._replace(commit=sha), lines, chain, range(1, 4), no_edit=True)]
    chosen = ec.ship_subset(rows, real=3, no_edit=2, synthetic=0)
    targets = [e for e in chosen if e.target is not None]
    assert sorted(e.commit for e in targets) == ["c1", "c2", "c3"]
    assert len([e for e in chosen if e.target is None]) == 2


SHIPPED = corpus.DATA_DIR / "edits"


def test_the_shipped_evaluation_set_is_whole_small_and_recorded():
    examples = ec.load_examples(SHIPPED / "heldout.jsonl.gz")
    recorded = json.loads((SHIPPED / "MANIFEST.json").read_text())
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 1_000_000
    kinds = {kind: sum(1 for e in examples if ec.label_of(e) == kind) for kind in ("real", "no_edit", "rename",
                                                                                     "parameter")}
    assert kinds == {kind: recorded["counts"].get(kind, 0) for kind in kinds}
    assert kinds["real"] >= 200 and kinds["no_edit"] >= 100 and kinds["rename"] + kinds["parameter"] >= 100
    licences = {p["project"]: p for p in recorded["projects"]}
    for example in examples:
        assert example.split == "heldout"
        example.after()  # the history and the target apply to the stored window
        if example.kind == "real":
            assert example.commit in licences[example.project]["commits"]
            assert corpus.is_permissive(licences[example.project]["license"])
