"""Next-edit data: real edits mined from git histories and synthetic edits, split, decontaminated, recorded.

An example is one moment of an editing session in one Python file: the file before the session (a window of
it), the edits made so far (the history, oldest first), the cursor at the end of the last edit, and the next
edit (the target), or none when the change is complete (a "no next edit" moment: the model should stay quiet).

Real edits come from the commit histories of permissively licensed public Python projects. The mirrors are bare
git directories (`/work/.mirror/OWNER+NAME/repo`, as the session's `fetch` of public GitHub repositories leaves
them; nothing here touches the network). A project is used when its own licence file at HEAD (`LICENSE*`,
`LICENCE*`, `COPYING*`) is recognised as permissive by `classify_license` (MIT, BSD-2/3, Apache-2.0, ISC, PSF,
Unlicense, an SPDX line; dual offers joined with OR); any copyleft text, or no recognised licence, skips the
whole project. The HEAD licence is taken to cover the history. A commit is used when it is not a merge, modifies
exactly one `.py` file (other files, such as a changelog, may change too; added, deleted and renamed files are
not edits of a file), and its line diff (`difflib`, no context) has `MIN_HUNKS`..`MAX_HUNKS` hunks, at most
`MAX_CHANGED_LINES` changed lines, no hunk that only changes whitespace, hunks at most `MAX_GAP_LINES` apart and
all within `MAX_SPAN_LINES`; the file is not vendored or generated (`corpus.is_vendored`,
`corpus.looks_generated_or_minified`), is valid UTF-8 within the corpus's size bounds, and the same change was
not seen before. The hunks are taken as typed top to bottom: for k = 1..n-1 the history is hunks 1..k and the
target hunk k+1; the state after all n hunks is the commit's "no next edit" moment.

Synthetic edits teach the common moves, from any Python sources (`SourceText`: package, path, text, licence;
the command line takes the standard library, or a corpus file written by `corpus.save_files`), with `ast` and
`tokenize` so that every state parses, deterministic in a seed:

* `rename`: a parameter or local variable renamed at its first use; the target is the same rename at the next
  use (one example per further use);
* `parameter`: a new parameter added to a function's definition; the target is the next call site in the same
  file (in file order from the definition, wrapping) gaining the argument (positional when the signature and
  every call are plain, else a keyword with a default);
* `sibling`: one of several similar consecutive lines (single-line calls of the same callee) changed, by a keyword
  argument added, the first argument wrapped in a call, or a string prefix (`r`, `b`) added; the target is the
  next sibling line with the same change.

Split: a real project is held out when the stable hash (sha256) of `owner/name` falls in the first
`PROJECT_HELDOUT_FRACTION` of the range, unless its released code is in the code corpus (`never_heldout`: the
command line matches the projects against the embedded model's MANIFEST.json), so that held-out edits are of code
the model has not read; a synthetic example is held out by the same hash of `package/path` (`HELDOUT_FRACTION`).

Decontamination, as the code corpus does it (`corpus.line_runs` against HumanEval-Infilling,
`corpus.heldout_window_hashes` against `data/decontam/`, dropped at `corpus.HELDOUT_DROP_AT` windows): applied
to the whole file before and after the commit (synthetic: before and after all of the chain's edits), and an
offending commit or file gives no example.

Format: JSON lines, gzip-compressed when the name ends in `.gz`, one `EditExample` a line:

    {"kind": "real" | "rename" | "parameter" | "sibling", "split": "train" | "heldout",
     "project": "owner/name" (synthetic: the package), "commit": sha ("" for synthetic),
     "license": "MIT", "license_file": "LICENSE" (synthetic: ""), "path": "src/pkg/mod.py",
     "window_start": 0-based line of the whole file where `before` starts, "before": text of the window,
     "history": [{"start": line, "old": [lines], "new": [lines]}, ...],
     "target": {"start": ..., "old": [...], "new": [...]} or null,
     "cursor": [line, column], "step": k, "steps": n, "detail": what a synthetic edit did}

Lines carry no newline characters (files are read with CRLF line ends as LF). Each hunk's `start` is a 0-based line
of the text it applies to: history hunk i of the window after hunks 1..i-1; the target, and the cursor (at the
end of the last history hunk), of the window after the whole history. `EditExample.current()`, `.after()` and
`.history_diffs()` rebuild the texts and the unified diffs a prompt shows. Only a window of the file is stored:
at least `WINDOW_LINES` lines around the edits (`WINDOW_MARGIN` beyond the outermost ones when they span more),
which is what a prompt's editable region and context use, and keeps the shipped evaluation set small.

Command line (mirrors already fetched; nothing is downloaded):

    python -m dglsp.tools.edit_corpus --out DIR [--repos owner/name,...] [--mirror-dir /work/.mirror]
        [--sources stdlib|CORPUS.jsonl.gz|none] [--ship dglsp/tools/data/edits]

writes DIR/train.jsonl.gz, DIR/heldout.jsonl.gz and DIR/MANIFEST.json; with `--ship`, the small held-out
evaluation set (`SHIP_REAL` real targets, `SHIP_NO_EDIT` no-edit moments, `SHIP_SYNTHETIC` rename and parameter
examples) and its MANIFEST.json go there.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import difflib
import functools
import gzip
import hashlib
import io
import json
import keyword
import random
import re
import subprocess
import sys
import time
import tokenize
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, NamedTuple

from dglsp.tools import corpus

# Real commits
MIN_HUNKS, MAX_HUNKS = 2, 6
MAX_CHANGED_LINES = 40  # removed + added lines of the commit's one file
MAX_GAP_LINES = 60  # between consecutive edits of a chain
MAX_SPAN_LINES = 150  # from the first edited line to the last
# Windows stored per example
WINDOW_LINES = 120
WINDOW_MARGIN = 10
# Split: held-out real edits must be of code the model has not read, so the projects whose releases are in the
# code corpus (about half of those mined) are never held out, and twice the fraction of the others is: ~15% overall.
HELDOUT_FRACTION = 0.15  # of the synthetic source files
PROJECT_HELDOUT_FRACTION = 0.3  # of the projects outside the code corpus
MAX_COMMITS_PER_PROJECT = 500  # newest first: the largest histories would otherwise dominate
# Synthetic edits: at most this many chains of a kind per file, and history steps per chain
MAX_CHAINS_PER_FILE = 2
MAX_SYNTHETIC_STEPS = 4
MIN_SIBLINGS = 3
# The shipped held-out evaluation set
SHIP_REAL, SHIP_NO_EDIT, SHIP_SYNTHETIC = 300, 100, 100
SHIP_KINDS = ("rename", "parameter")
KINDS = ("real", "rename", "parameter", "sibling")
LICENSE_NAME = re.compile(r"^(licen[cs]e|copying)([._-][\w.-]*)?$", re.IGNORECASE)
# Why a commit gives no example, each counted in the manifest under the first check the commit fails.
COMMIT_DROPS = ("not_one_py_file", "not_a_modification", "vendored", "missing_blob", "size_or_encoding",
                "generated_or_minified", "hunk_count", "too_large", "whitespace_only", "spread", "duplicate",
                "eval_overlap", "heldout_windows")
SYNTHETIC_DROPS = ("syntax", "eval_overlap", "heldout_windows", "no_chain")


# ---------------------------------------------------------------------------------------------------------------
# Examples and their format


@dataclass(frozen=True)
class Hunk:
    """Lines `old` at line `start` (0-based) of the text the hunk applies to, replaced by `new`."""

    start: int
    old: tuple[str, ...]
    new: tuple[str, ...]

    @property
    def end(self) -> int:
        return self.start + len(self.old)


@dataclass
class EditExample:
    kind: str  # one of KINDS
    split: str  # "train" or "heldout"
    project: str  # owner/name of a mined repository; the package of a synthetic example
    commit: str  # the mined commit's sha; "" for synthetic edits
    license: str
    license_file: str  # the repository's file the licence was read from; "" for synthetic edits
    path: str
    window_start: int  # the line of the whole pre-edit file where `before` starts
    before: str  # the window before any edit of the session: its lines joined by "\n" (`before.split("\n")`)
    history: list[Hunk]  # oldest first; each applies to the window after the ones before it
    target: Hunk | None  # applies to the window after the whole history; None: no next edit
    cursor: tuple[int, int]  # (line, column) in the window after the history: the end of its last edit
    step: int = 0  # k: edits in the history
    steps: int = 0  # n: edits in the whole change
    detail: str = ""  # synthetic: the change made ("total -> count")

    def current(self) -> str:
        """The window as the editor shows it: `before` with the history applied."""
        return "\n".join(apply_hunks(self.before.split("\n"), self.history))

    def after(self) -> str:
        """The window once the target is made too (`current()` when there is no next edit)."""
        lines = apply_hunks(self.before.split("\n"), self.history)
        return "\n".join(apply_hunk(lines, self.target) if self.target else lines)

    def history_diffs(self, context: int = 3) -> list[str]:
        """One unified diff per history edit, oldest first, each against the text before it (the first against
        the pre-edit file), with line numbers of the whole file."""
        lines, diffs = self.before.split("\n"), []
        for hunk in self.history:
            edited = apply_hunk(lines, hunk)
            diffs.append(unified_diff(lines, edited, self.path, context, self.window_start))
            lines = edited
        return diffs

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["history"] = [_hunk_json(h) for h in self.history]
        row["target"] = _hunk_json(self.target) if self.target else None
        row["cursor"] = list(self.cursor)
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> EditExample:
        row = dict(row)
        row["history"] = [_hunk_from(h) for h in row["history"]]
        row["target"] = _hunk_from(row["target"]) if row["target"] else None
        row["cursor"] = tuple(row["cursor"])
        return cls(**row)


def _hunk_json(hunk: Hunk) -> dict[str, Any]:
    return {"start": hunk.start, "old": list(hunk.old), "new": list(hunk.new)}


def _hunk_from(row: dict[str, Any]) -> Hunk:
    return Hunk(row["start"], tuple(row["old"]), tuple(row["new"]))


def _open(path: Path, write: bool) -> IO[str]:
    if str(path).endswith(".gz"):
        return gzip.open(path, "wt" if write else "rt", encoding="utf-8")
    return open(path, "w" if write else "r", encoding="utf-8")


def save_examples(examples: Iterable[EditExample], path: Path) -> int:
    """Write JSON lines (gzip when the name ends in .gz); the number written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with _open(path, write=True) as handle:
        for example in examples:
            handle.write(json.dumps(example.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


def load_examples(path: Path) -> list[EditExample]:
    with _open(path, write=False) as handle:
        return [EditExample.from_json(json.loads(line)) for line in handle if line.strip()]


# ---------------------------------------------------------------------------------------------------------------
# Lines and hunks


def split_lines(text: str) -> list[str]:
    """Lines without their newlines; a final newline ends the last line rather than starting an empty one."""
    lines = text.replace("\r\n", "\n").split("\n")
    return lines[:-1] if lines and lines[-1] == "" and len(lines) > 1 else lines


def apply_hunk(lines: list[str], hunk: Hunk) -> list[str]:
    if tuple(lines[hunk.start:hunk.end]) != hunk.old:
        raise ValueError(f"hunk at line {hunk.start} does not match the text it is applied to")
    return lines[:hunk.start] + list(hunk.new) + lines[hunk.end:]


def apply_hunks(lines: list[str], hunks: Iterable[Hunk]) -> list[str]:
    for hunk in hunks:
        lines = apply_hunk(lines, hunk)
    return lines


def common_ends(old: Sequence[str], new: Sequence[str]) -> tuple[int, int]:
    """(lines equal at the start, lines equal at the end, not overlapping the start)."""
    prefix = 0
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    return prefix, suffix


def diff_hunks(old: Sequence[str], new: Sequence[str]) -> list[Hunk]:
    """The line hunks (no context) turning `old` into `new`, in `old`'s line numbers, top to bottom."""
    prefix, suffix = common_ends(old, new)  # the matcher then sees only the changed stretch of a long file
    a, b = old[prefix:len(old) - suffix], new[prefix:len(new) - suffix]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    hunks: list[Hunk] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            floor = hunks[-1].end if hunks else 0
            hunks.append(_slide_up(Hunk(prefix + i1, tuple(a[i1:i2]), tuple(b[j1:j2])), old, floor))
    return hunks


def _slide_up(hunk: Hunk, old: Sequence[str], floor: int) -> Hunk:
    """An inserted block that ends with the blank line found just above it, moved up to end on its code instead
    (the same insertion; git's diff prefers it too), so that the cursor after it rests on what was typed."""
    while (not hunk.old and hunk.new and hunk.start > floor and not hunk.new[-1].strip()
           and old[hunk.start - 1] == hunk.new[-1]):
        hunk = Hunk(hunk.start - 1, (), (old[hunk.start - 1], *hunk.new[:-1]))
    return hunk


def in_sequence(chain: Sequence[Hunk]) -> list[Hunk]:
    """Hunks given in the original text's line numbers, renumbered for applying them one after another in the
    chain's order (each against the text the earlier ones left)."""
    placed = []
    for index, hunk in enumerate(chain):
        shift = sum(len(p.new) - len(p.old) for p in chain[:index] if p.end <= hunk.start)
        placed.append(replace(hunk, start=hunk.start + shift))
    return placed


def end_of(hunk: Hunk) -> tuple[int, int]:
    """Where the cursor rests after typing the hunk: the end of its last new line (a deletion: where it was)."""
    return (hunk.start + len(hunk.new) - 1, len(hunk.new[-1])) if hunk.new else (hunk.start, 0)


def unified_diff(old: list[str], new: list[str], path: str, context: int = 3, first_line: int = 0) -> str:
    body = list(difflib.unified_diff(old, new, f"a/{path}", f"b/{path}", n=context, lineterm=""))
    if first_line:  # the window's numbers are shifted to the whole file's
        body = [_shift_header(line, first_line) if line.startswith("@@") else line for line in body]
    return "\n".join(body)


_HEADER = re.compile(r"^@@ -(\d+)((?:,\d+)?) \+(\d+)((?:,\d+)?) @@")


def _shift_header(line: str, offset: int) -> str:
    match = _HEADER.match(line)
    if not match:
        return line
    old, new = int(match.group(1)) + offset, int(match.group(3)) + offset
    return f"@@ -{old}{match.group(2)} +{new}{match.group(4)} @@" + line[match.end():]


def is_whitespace_only(hunk: Hunk) -> bool:
    return "".join("".join(hunk.old).split()) == "".join("".join(hunk.new).split())


def gap(first: Hunk, second: Hunk) -> int:
    """Lines between two hunks given in the same text's numbers (0 when they touch)."""
    return max(0, second.start - first.end, first.start - second.end)


def fitting_prefix(chain: Sequence[Hunk]) -> list[Hunk]:
    """The longest prefix of the chain (original line numbers) with each edit near the one before and all of
    them within a span: edits far apart are another task (a jump), and windows stay small."""
    kept: list[Hunk] = []
    for hunk in chain:
        if kept:
            span = max(h.end for h in [*kept, hunk]) - min(h.start for h in [*kept, hunk])
            if gap(kept[-1], hunk) > MAX_GAP_LINES or span > MAX_SPAN_LINES:
                break
        kept.append(hunk)
    return kept


def window_bounds(total: int, first: int, last: int) -> tuple[int, int]:
    """Lines [lo, hi) of a file of `total` lines holding lines [first, last) with room around them."""
    if last - first + 2 * WINDOW_MARGIN >= WINDOW_LINES:
        return max(0, first - WINDOW_MARGIN), min(total, last + WINDOW_MARGIN)
    lo = max(0, first - (WINDOW_LINES - (last - first)) // 2)
    hi = min(total, lo + WINDOW_LINES)
    return max(0, hi - WINDOW_LINES), hi


class Provenance(NamedTuple):
    kind: str
    split: str
    project: str
    commit: str
    license: str
    license_file: str
    path: str


def chain_examples(origin: Provenance, lines: list[str], chain: Sequence[Hunk], steps: Iterable[int],
                   no_edit: bool = False, detail: str = "") -> list[EditExample]:
    """Examples from one change: `chain` holds its edits in the order typed, numbered as in `lines` (the file
    before the change); for each k in `steps` the first k are the history and edit k+1 the target, and with
    `no_edit` the state after every edit is a moment with no next edit."""
    lo, hi = window_bounds(len(lines), min(h.start for h in chain), max(h.end for h in chain))
    placed = [replace(h, start=h.start - lo) for h in in_sequence(chain)]
    before = "\n".join(lines[lo:hi])
    examples = []
    for k in [*steps, *([len(chain)] if no_edit else [])]:
        if not 1 <= k <= len(chain):
            continue
        target = placed[k] if k < len(chain) else None
        examples.append(EditExample(origin.kind, origin.split, origin.project, origin.commit, origin.license,
                                    origin.license_file, origin.path, lo, before, placed[:k], target,
                                    end_of(placed[k - 1]), k, len(chain), detail))
    return examples


# ---------------------------------------------------------------------------------------------------------------
# Licences, from a repository's own files

# Phrases of each licence's text (matched lower-case, whitespace flattened), most specific first.
LICENSE_PHRASES = (
    ("permission is hereby granted, free of charge, to any person obtaining a copy", "MIT"),
    ("licensed under the apache license, version 2.0", "Apache-2.0"),
    ("apache license version 2.0, january 2004", "Apache-2.0"),
    ("permission to use, copy, modify, and/or distribute this software for any purpose", "ISC"),
    ("permission to use, copy, modify, and distribute this software for any purpose with or without fee", "ISC"),
    ("python software foundation license version 2", "PSF-2.0"),
    ("this is free and unencumbered software released into the public domain", "Unlicense"),
)
BSD_PHRASE = "redistribution and use in source and binary forms, with or without modification, are permitted"
BSD3_PHRASES = ("neither the name", "to endorse or promote products")  # the third clause, however worded
COPYLEFT_PHRASES = ("gnu general public license", "gnu lesser general public license",
                    "gnu library general public license", "gnu affero general public license",
                    "mozilla public license", "eclipse public license", "european union public licence",
                    "server side public license", "common development and distribution license")
DUAL_PHRASES = ("either of the licenses", "either of the licences", "at your option")
_SPDX = re.compile(r"SPDX-License-Identifier:\s*([\w.+() -]+)")


@dataclass(frozen=True)
class LicenseVerdict:
    license: str  # an SPDX-like expression ("MIT", "Apache-2.0 OR BSD-3-Clause"); "" when none recognised
    files: tuple[str, ...]  # the files it was read from
    permissive: bool
    reason: str = ""  # why not permissive


def classify_license_text(text: str) -> tuple[list[str], bool]:
    """(the licences a licence file's text states, whether it has copyleft text)."""
    flat = " ".join(text.lower().replace("*", " ").split())
    copyleft = any(phrase in flat for phrase in COPYLEFT_PHRASES)
    found = [spdx for phrase, spdx in LICENSE_PHRASES if phrase in flat]
    if BSD_PHRASE in flat:
        found.append("BSD-3-Clause" if any(p in flat for p in BSD3_PHRASES) else "BSD-2-Clause")
    found += [match.strip() for match in _SPDX.findall(text) if corpus.is_permissive(match.strip())]
    return list(dict.fromkeys(found)), copyleft


def classify_license(files: dict[str, str]) -> LicenseVerdict:
    """The licence of a project from its top-level licence files (name -> text): permissive only when some file
    states a permissive licence and none has copyleft text; a file offering a choice joins them with OR."""
    names: dict[str, list[str]] = {}
    dual = False
    for name in sorted(files):
        found, copyleft = classify_license_text(files[name])
        if copyleft:
            return LicenseVerdict("", (name,), False, f"copyleft text in {name}")
        flat = " ".join(files[name].lower().replace("*", " ").split())
        dual |= any(phrase in flat for phrase in DUAL_PHRASES)
        if found:
            names[name] = found
    licences = list(dict.fromkeys(spdx for found in names.values() for spdx in found))
    if not licences:
        return LicenseVerdict("", tuple(sorted(files)), False, "no recognised licence")
    expression = (" OR " if dual else " AND ").join(licences)
    return LicenseVerdict(expression, tuple(names), corpus.is_permissive(expression))


# ---------------------------------------------------------------------------------------------------------------
# Git (bare mirrors, read with the git command)


class GitRepo:
    """A git directory read with `git`; blobs through one long-lived `git cat-file --batch`."""

    def __init__(self, git_dir: Path):
        self.git_dir = Path(git_dir)
        self._batch: subprocess.Popen[bytes] | None = None

    def run(self, *args: str) -> str:
        result = subprocess.run(["git", f"--git-dir={self.git_dir}", *args], capture_output=True, check=True)
        return result.stdout.decode("utf-8", "replace")

    def blob(self, revision: str) -> bytes | None:
        """The object `revision` names (`SHA:path`, `SHA^:path`), or None when there is none."""
        if self._batch is None:
            self._batch = subprocess.Popen(["git", f"--git-dir={self.git_dir}", "cat-file", "--batch"],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._batch.stdin is not None and self._batch.stdout is not None
        self._batch.stdin.write(revision.encode() + b"\n")
        self._batch.stdin.flush()
        header = self._batch.stdout.readline().split()
        if len(header) != 3:  # "<name> missing" (or ambiguous)
            return None
        data = self._batch.stdout.read(int(header[2]) + 1)[:-1]
        return data if header[1] == b"blob" else None

    def close(self) -> None:
        if self._batch is not None:
            assert self._batch.stdin is not None
            self._batch.stdin.close()
            self._batch.wait()
            self._batch = None

    def __enter__(self) -> GitRepo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def head_license(repo: GitRepo) -> LicenseVerdict:
    names = [n for n in repo.run("ls-tree", "--name-only", "HEAD").splitlines() if LICENSE_NAME.match(n)]
    texts = {name: (repo.blob(f"HEAD:{name}") or b"").decode("utf-8", "replace") for name in names}
    return classify_license(texts)


class Candidate(NamedTuple):
    sha: str
    path: str  # the one .py file the commit changes
    status: str  # git's: M (modified), A, D, T, ...
    old_blob: str
    new_blob: str


def log_candidates(repo: GitRepo, dropped: Counter[str]) -> tuple[int, list[Candidate]]:
    """(non-merge commits with a parent on HEAD's history, those changing exactly one .py file), newest first.

    `--raw` names the blobs without reading them: a mirror may lack its largest files.
    """
    log = repo.run("log", "--no-merges", "--no-renames", "--no-abbrev", "--format=%x01%H %P", "--raw", "HEAD")
    seen, found = 0, []
    for block in log.split("\x01")[1:]:
        header, *rows = block.strip("\n").split("\n")
        sha, *parents = header.split()
        if len(parents) != 1:
            continue
        seen += 1
        python = [row for row in rows if row.startswith(":") and row.endswith(".py") and "\t" in row]
        if len(python) != 1:
            dropped["not_one_py_file"] += 1
            continue
        fields, path = python[0].split("\t", 1)
        _, _, old_blob, new_blob, status = fields.split()
        found.append(Candidate(sha, path, status, old_blob, new_blob))
    return seen, found


def commit_chain(before: str, after: str) -> list[Hunk] | str:
    """The commit's hunks (original line numbers, top to bottom), or why the commit is not used."""
    old, new = split_lines(before), split_lines(after)
    if abs(len(old) - len(new)) > MAX_CHANGED_LINES:
        return "too_large"
    prefix, suffix = common_ends(old, new)
    if len(old) - prefix - suffix > MAX_SPAN_LINES:  # a rewrite: not worth diffing line by line
        return "spread"
    hunks = diff_hunks(old, new)
    if not MIN_HUNKS <= len(hunks) <= MAX_HUNKS:
        return "hunk_count"
    if sum(len(h.old) + len(h.new) for h in hunks) > MAX_CHANGED_LINES:
        return "too_large"
    if any(is_whitespace_only(h) for h in hunks):
        return "whitespace_only"
    if len(fitting_prefix(hunks)) < len(hunks):
        return "spread"
    return hunks


def _decode(data: bytes | None) -> str | None:
    if data is None or not corpus.MIN_BYTES <= len(data) <= corpus.MAX_BYTES:
        return None
    try:
        return data.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        return None


class Decontaminator:
    """The code corpus's decontamination (`corpus.CorpusFilter`'s two checks) applied to whole file texts."""

    def __init__(self, heldout_hashes: frozenset[str] | set[str] | None = None,
                 eval_runs: set[tuple[str, ...]] | None = None):
        self.heldout = corpus.load_heldout_hashes() if heldout_hashes is None else heldout_hashes
        self.eval_runs = corpus.eval_line_runs() if eval_runs is None else eval_runs

    def reason(self, *texts: str) -> str | None:
        """"eval_overlap" or "heldout_windows" when a text is contaminated, else None."""
        for text in texts:
            if self.eval_runs & corpus.line_runs(text):
                return "eval_overlap"
            if self.heldout and len(self.heldout & corpus.heldout_window_hashes(text)) >= corpus.HELDOUT_DROP_AT:
                return "heldout_windows"
        return None


@dataclass
class ProjectReport:
    project: str
    split: str = ""
    license: str = ""
    license_file: str = ""
    head: str = ""
    commits_seen: int = 0
    commits_used: int = 0
    examples: int = 0
    no_edit: int = 0
    seconds: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)
    skipped: str = ""  # why the project gave nothing (its licence, not a git directory)


def mine_repository(git_dir: Path, project: str, split: str, decontaminator: Decontaminator,
                    max_commits: int | None = None, log: Callable[[str], None] = print
                    ) -> tuple[list[EditExample], ProjectReport]:
    """Every example of one mirror (commits newest first, at most `max_commits` used), and its report."""
    started = time.monotonic()
    report = ProjectReport(project, split)
    examples: list[EditExample] = []
    with GitRepo(git_dir) as repo:
        try:
            report.head = repo.run("rev-parse", "HEAD").strip()
        except subprocess.CalledProcessError:
            report.skipped = "not a git directory with a HEAD"
            return examples, report
        verdict = head_license(repo)
        report.license, report.license_file = verdict.license, ", ".join(verdict.files)
        if not verdict.permissive:
            report.skipped = f"licence: {verdict.reason or verdict.license}"
            log(f"edits: {project}: skipped ({report.skipped})")
            return examples, report
        dropped: Counter[str] = Counter()
        try:
            report.commits_seen, candidates = log_candidates(repo, dropped)
        except subprocess.CalledProcessError as error:
            report.skipped = f"git log failed: {error.stderr.decode('utf-8', 'replace').strip()[:200]}"
            log(f"edits: {project}: skipped ({report.skipped})")
            return examples, report
        seen_changes: set[str] = set()
        for candidate in candidates:
            if max_commits is not None and report.commits_used >= max_commits:
                break
            reason, chain, texts = _check_commit(repo, candidate, seen_changes, decontaminator)
            if reason:
                dropped[reason] += 1
                continue
            assert chain is not None and texts is not None
            origin = Provenance("real", split, project, candidate.sha, verdict.license, report.license_file,
                                candidate.path)
            made = chain_examples(origin, split_lines(texts[0]), chain, range(1, len(chain)), no_edit=True)
            examples += made
            report.commits_used += 1
    report.dropped = {reason: dropped[reason] for reason in COMMIT_DROPS if dropped[reason]}
    report.examples = sum(1 for e in examples if e.target is not None)
    report.no_edit = len(examples) - report.examples
    report.seconds = round(time.monotonic() - started, 1)
    log(f"edits: {project} [{report.license}] {split}: {report.commits_used} of {report.commits_seen} commits, "
        f"{report.examples} examples + {report.no_edit} no-edit moments in {report.seconds:.0f} s")
    return examples, report


def _check_commit(repo: GitRepo, candidate: Candidate, seen_changes: set[str], decontaminator: Decontaminator
                  ) -> tuple[str | None, list[Hunk] | None, tuple[str, str] | None]:
    if candidate.status != "M":
        return "not_a_modification", None, None
    if corpus.is_vendored(candidate.path):
        return "vendored", None, None
    old, new = repo.blob(candidate.old_blob), repo.blob(candidate.new_blob)
    if old is None or new is None:
        return "missing_blob", None, None
    before, after = _decode(old), _decode(new)
    if before is None or after is None:
        return "size_or_encoding", None, None
    if corpus.looks_generated_or_minified(before):
        return "generated_or_minified", None, None
    chain = commit_chain(before, after)
    if isinstance(chain, str):
        return chain, None, None
    digest = hashlib.sha256(f"{candidate.path}\0{before}\0{after}".encode()).hexdigest()
    if digest in seen_changes:
        return "duplicate", None, None
    seen_changes.add(digest)
    contaminated = decontaminator.reason(before, after)
    if contaminated:
        return contaminated, None, None
    return None, chain, (before, after)


# ---------------------------------------------------------------------------------------------------------------
# Split


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by the key (sha256), the same on every machine and run."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16) / 16**15


def split_of(key: str, fraction: float = HELDOUT_FRACTION, never_heldout: Iterable[str] = ()) -> str:
    if key in set(never_heldout):
        return "train"
    return "heldout" if stable_fraction(key) < fraction else "train"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().removeprefix("python-").rstrip("0123456789")


def projects_in_code_corpus(projects: Iterable[str], packages: Iterable[str]) -> set[str]:
    """The owner/name projects whose released code the code corpus holds (matched by name: `pallets/jinja` is
    `jinja2`, `dateutil/dateutil` is `python-dateutil`)."""
    known = {_normal(package) for package in packages}
    return {project for project in projects if _normal(project.split("/")[-1]) in known}


# ---------------------------------------------------------------------------------------------------------------
# Synthetic edits


class SourceText(NamedTuple):
    package: str
    path: str
    text: str
    license: str


# Realistic renames: abbreviations spelled out and the reverse; other names take a suffix or prefix.
RENAMES = {"i": "index", "idx": "index", "n": "count", "num": "number", "s": "text", "e": "error", "exc": "error",
           "err": "error", "f": "handle", "fp": "stream", "fh": "handle", "k": "key", "v": "value", "val": "value",
           "x": "item", "obj": "instance", "res": "result", "ret": "result", "tmp": "temp", "msg": "message",
           "cb": "callback", "fn": "func", "cfg": "config", "conf": "config", "d": "mapping", "lst": "items",
           "buf": "buffer", "ctx": "context", "req": "request", "resp": "response", "p": "path", "src": "source",
           "dst": "destination", "dest": "destination", "pos": "position", "cnt": "count", "c": "char",
           "m": "match", "t": "delta", "ts": "timestamp", "l": "values", "a": "first", "b": "second",
           "index": "idx", "value": "val", "result": "res", "message": "msg", "count": "total",
           "config": "cfg", "callback": "handler", "items": "entries", "data": "payload", "name": "label",
           "path": "filename", "text": "content", "key": "name_key", "node": "tree_node", "line": "row"}
RENAME_SUFFIXES = ("value", "list", "obj", "data", "result", "info")
RENAME_PREFIXES = ("new", "current", "local", "the")
# (name, default, value at the call site) of a parameter added to a definition
NEW_PARAMETERS = (("verbose", "False", "True"), ("strict", "False", "True"), ("timeout", "None", "30"),
                  ("encoding", "None", '"utf-8"'), ("limit", "None", "100"), ("retries", "0", "3"),
                  ("quiet", "False", "True"), ("prefix", '""', '"tmp"'), ("scale", "1.0", "2.0"),
                  ("debug", "False", "True"))
SIBLING_KEYWORDS = (("required", "True"), ("default", "None"), ("strict", "True"), ("stacklevel", "2"),
                    ("check", "False"), ("sep", '""'), ("flush", "True"))
SIBLING_WRAPPERS = ("str", "list", "tuple", "repr", "sorted")
NESTED_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
                 ast.DictComp, ast.GeneratorExp)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_BUILTINS = set(dir(builtins))


class Insertion(NamedTuple):
    line: int  # 0-based
    column: int  # UTF-8 byte offset, as `ast` gives it
    width: int  # bytes replaced
    text: str


class Parsed(NamedTuple):
    """A source file read once for every synthesizer."""

    text: str
    lines: list[str]
    tree: ast.Module
    names: set[str]  # every NAME token: a new name must be none of them


class SynthChain(NamedTuple):
    detail: str
    chain: list[Hunk]  # single-line hunks in the order typed, numbered as in the original file
    check: Callable[[str], bool]  # is the file with the whole chain applied what the move should give?


def parse_source(text: str) -> Parsed:
    text = text.replace("\r\n", "\n")
    names = {t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.NAME}
    return Parsed(text, split_lines(text), ast.parse(text), names)


def edit_lines(lines: list[str], insertions: Iterable[Insertion]) -> dict[int, str]:
    """Each touched line after its insertions (applied right to left so that offsets stay valid)."""
    by_line: dict[int, list[Insertion]] = defaultdict(list)
    for insertion in insertions:
        by_line[insertion.line].append(insertion)
    edited = {}
    for number, items in by_line.items():
        raw = lines[number].encode()
        for item in sorted(items, key=lambda i: i.column, reverse=True):
            raw = raw[:item.column] + item.text.encode() + raw[item.column + item.width:]
        edited[number] = raw.decode()
    return edited


def line_chain(lines: list[str], groups: Sequence[Sequence[Insertion]]) -> list[Hunk] | None:
    """One single-line hunk per group of insertions (a group is one line's part of the change), in the given
    order; None when groups share a line."""
    numbers = [group[0].line for group in groups]
    if len(set(numbers)) != len(numbers) or any(i.line != group[0].line for group in groups for i in group):
        return None
    return [Hunk(number, (lines[number],), (edit_lines(lines, group)[number],))
            for number, group in zip(numbers, groups, strict=True)]


def edited_text(lines: list[str], chain: Sequence[Hunk]) -> str:
    return "\n".join(apply_hunks(lines, in_sequence(chain))) + "\n"


def parses(text: str) -> bool:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def _byte_text(lines: list[str], line: int, column: int, width: int) -> str:
    return lines[line].encode()[column:column + width].decode("utf-8", "replace")


def _fresh(name: str, taken: set[str], rng: random.Random) -> str | None:
    choices = [RENAMES[name]] if name in RENAMES else []
    choices += [f"{name}_{rng.choice(RENAME_SUFFIXES)}", f"{rng.choice(RENAME_PREFIXES)}_{name.lstrip('_')}"]
    for choice in choices:
        if choice not in taken and not keyword.iskeyword(choice) and choice not in _BUILTINS:
            return choice
    return None


def _scope(function: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[list[ast.AST], set[str]]:
    """(nodes of the function's own scope below its signature, names used in the scopes nested in it)."""
    own: list[ast.AST] = []
    nested: set[str] = set()
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, NESTED_SCOPES):
            nested.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
            nested.update(n.arg for n in ast.walk(node) if isinstance(n, ast.arg))
            if isinstance(node, (*FUNCTIONS, ast.ClassDef)):
                nested.add(node.name)
            continue
        own.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return own, nested


def _bound_otherwise(nodes: Iterable[ast.AST]) -> set[str]:
    """Names bound where `ast` gives no Name node to rename (except ... as, imports, global, match captures)."""
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return names


def _local_uses(function: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, list[Insertion]]:
    """Each parameter and local variable that only plain Name nodes use, with those uses (in no order)."""
    own, nested = _scope(function)
    excluded = nested | _bound_otherwise(own) | {"self", "cls"}
    arguments = function.args
    params = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
              *[a for a in (arguments.vararg, arguments.kwarg) if a]]
    uses: dict[str, list[Insertion]] = defaultdict(list)
    for param in params:
        uses[param.arg].append(Insertion(param.lineno - 1, param.col_offset, len(param.arg.encode()), ""))
    stored = {n.id for n in own if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    for node in own:
        if isinstance(node, ast.Name) and (node.id in stored or node.id in uses):
            uses[node.id].append(Insertion(node.lineno - 1, node.col_offset, len(node.id.encode()), ""))
    return {name: found for name, found in uses.items() if name not in excluded and not name.startswith("__")}


def rename_chains(source: Parsed, rng: random.Random) -> list[SynthChain]:
    """Parameters and locals renamed use by use, in source order, one line an edit."""
    chains = []
    for function in (node for node in ast.walk(source.tree) if isinstance(node, FUNCTIONS)):
        for name, found in sorted(_local_uses(function).items()):
            if len({use.line for use in found}) < 2:
                continue
            if any(_byte_text(source.lines, u.line, u.column, u.width) != name for u in found):
                continue  # a position `ast` reports oddly (inside an f-string): leave the name alone
            new = _fresh(name, source.names, rng)
            if new is None:
                continue
            by_line: dict[int, list[Insertion]] = defaultdict(list)
            for use in found:
                by_line[use.line].append(use._replace(text=new))
            chain = line_chain(source.lines, [by_line[number] for number in sorted(by_line)])
            if chain:
                chains.append(SynthChain(f"{name} -> {new}", chain, functools.partial(_renamed, name, new, found)))
    return chains


def _renamed(old: str, new: str, uses: list[Insertion], text: str) -> bool:
    """The renamed file parses and names the new name exactly where the old one was."""
    if not parses(text):
        return False
    lines = split_lines(text)
    shifts: Counter[int] = Counter()  # bytes added on a line by the uses before this one
    for use in sorted(uses, key=lambda u: (u.line, u.column)):
        column = use.column + shifts[use.line]
        if _byte_text(lines, use.line, column, len(new.encode())) != new:
            return False
        shifts[use.line] += len(new.encode()) - len(old.encode())
    return True


def _call_index(tree: ast.Module) -> dict[tuple[int, str], list[ast.Call]]:
    """Calls by (0, name) for plain names, and by (id of the class, name) for self/cls methods of its class."""
    index: dict[tuple[int, str], list[ast.Call]] = defaultdict(list)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            index[(0, node.func.id)].append(node)
    for owner in (node for node in tree.body if isinstance(node, ast.ClassDef)):
        for node in ast.walk(owner):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("self", "cls")):
                index[(id(owner), node.func.attr)].append(node)
    return index


def _after_open_paren(lines: list[str], line: int, column: int) -> int | None:
    """The byte column just after the first "(" at or after `column` on the line."""
    found = lines[line].encode().find(b"(", column)
    return None if found < 0 else found + 1


def _argument_insertion(lines: list[str], call: ast.Call, text: str) -> Insertion | None:
    """Where a new last argument goes: after the last one, or inside empty parentheses."""
    ends = [(n.end_lineno, n.end_col_offset) for n in call.args]
    ends += [(k.end_lineno, k.end_col_offset) for k in call.keywords]
    line, column = max(ends, key=lambda end: (end[0] or 0, end[1] or 0), default=(None, None))
    if line is not None and column is not None:
        return Insertion(line - 1, column, 0, ", " + text)
    func = call.func
    if func.end_lineno is None or func.end_col_offset is None:
        return None
    column = _after_open_paren(lines, func.end_lineno - 1, func.end_col_offset)
    return None if column is None else Insertion(func.end_lineno - 1, column, 0, text)


def _parameter_insertion(lines: list[str], function: ast.FunctionDef | ast.AsyncFunctionDef, text: str
                         ) -> Insertion | None:
    """Where a new parameter goes: after the last positional one (and its default), before any `**kwargs`."""
    args = function.args.args
    if args:
        ends = [(args[-1].end_lineno, args[-1].end_col_offset)]
        if function.args.defaults:
            default = function.args.defaults[-1]
            ends.append((default.end_lineno, default.end_col_offset))
        line, column = max(ends, key=lambda end: (end[0] or 0, end[1] or 0))
        if line is None or column is None:
            return None
        return Insertion(line - 1, column, 0, ", " + text)
    column = _after_open_paren(lines, function.lineno - 1, function.col_offset)
    if column is None:
        return None
    return Insertion(function.lineno - 1, column, 0, text + (", " if function.args.kwarg else ""))


def _functions(tree: ast.Module) -> Iterator[tuple[ast.FunctionDef | ast.AsyncFunctionDef, ast.ClassDef | None]]:
    """Module-level functions, and methods of module-level classes, with their class."""
    for node in tree.body:
        if isinstance(node, FUNCTIONS):
            yield node, None
        elif isinstance(node, ast.ClassDef):
            yield from ((item, node) for item in node.body if isinstance(item, FUNCTIONS))


def parameter_chains(source: Parsed, rng: random.Random) -> list[SynthChain]:
    """A parameter added to a definition, then its call sites in file order from the definition (wrapping)."""
    calls_of = _call_index(source.tree)
    parameters = [p for p in NEW_PARAMETERS if p[0] not in source.names]
    chains = []
    for function, owner in _functions(source.tree):
        arguments = function.args
        calls = calls_of.get((id(owner) if owner else 0, function.name), [])
        if (not calls or not parameters or arguments.posonlyargs or arguments.vararg or arguments.kwonlyargs
                or function.name.startswith("__")):
            continue
        name, default, value = rng.choice(parameters)
        expected = len(arguments.args) - (owner is not None)
        positional = (not arguments.defaults and not arguments.kwarg and not function.decorator_list
                      and all(not c.keywords and len(c.args) == expected
                              and not any(isinstance(a, ast.Starred) for a in c.args) for c in calls))
        definition = _parameter_insertion(source.lines, function, name if positional else f"{name}={default}")
        sites = [_argument_insertion(source.lines, call, value if positional else f"{name}={value}")
                 for call in calls]
        if definition is None or None in sites:
            continue
        by_line: dict[int, list[Insertion]] = defaultdict(list)
        for site in sites:
            if site is not None:
                by_line[site.line].append(site)
        below = sorted(n for n in by_line if n > definition.line)
        above = sorted(n for n in by_line if n < definition.line)
        groups = [[definition, *by_line.pop(definition.line, [])]] + [by_line[n] for n in below + above]
        chain = line_chain(source.lines, groups)
        if chain:
            form = "positional" if positional else "keyword"
            chains.append(SynthChain(f"{form} parameter {name} added to {function.name}", chain,
                                     functools.partial(_parameter_added, function.name, name, positional)))
    return chains


def _parameter_added(function: str, parameter: str, positional: bool, text: str) -> bool:
    """The edited file parses, the definition has the parameter and every call passes it."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    calls_of = _call_index(tree)
    for definition, owner in _functions(tree):
        if definition.name != function or parameter not in [a.arg for a in definition.args.args]:
            continue
        expected = len(definition.args.args) - (owner is not None)
        calls = calls_of.get((id(owner) if owner else 0, function), [])
        return all(len(c.args) == expected if positional else parameter in [k.arg for k in c.keywords]
                   for c in calls)
    return False


def _single_line_call(statement: ast.stmt) -> ast.Call | None:
    value = statement.value if isinstance(statement, (ast.Expr, ast.Assign, ast.AnnAssign)) else None
    if isinstance(value, ast.Call) and statement.lineno == statement.end_lineno:
        return value
    return None


def sibling_runs(tree: ast.Module) -> list[list[ast.Call]]:
    """Runs of at least `MIN_SIBLINGS` consecutive single-line statements calling the same callee."""
    runs: list[list[ast.Call]] = []
    for node in ast.walk(tree):
        for body in (getattr(node, name, None) for name in ("body", "orelse", "finalbody")):
            if not isinstance(body, list):
                continue
            run: list[tuple[ast.stmt, ast.Call]] = []
            for statement in body:
                call = _single_line_call(statement) if isinstance(statement, ast.stmt) else None
                if call is not None and run and _same_sibling(run[-1], statement, call):
                    run.append((statement, call))
                    continue
                if len(run) >= MIN_SIBLINGS:
                    runs.append([c for _, c in run])
                run = [(statement, call)] if call is not None else []
            if len(run) >= MIN_SIBLINGS:
                runs.append([c for _, c in run])
    return runs


def _same_sibling(previous: tuple[ast.stmt, ast.Call], statement: ast.stmt, call: ast.Call) -> bool:
    return (statement.lineno == previous[0].lineno + 1 and statement.col_offset == previous[0].col_offset
            and type(statement) is type(previous[0]) and ast.dump(call.func) == ast.dump(previous[1].func))


def _string_prefix(lines: list[str], run: list[ast.Call], rng: random.Random) -> tuple[str, list[Insertion]] | None:
    """An `r` (backslashes) or `b` (ASCII) prefix on each call's plain first-argument string."""
    strings = []
    for call in run:
        first = call.args[0] if call.args else None
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str) and first.end_col_offset):
            return None
        if _byte_text(lines, first.lineno - 1, first.col_offset, 1) not in ("'", '"'):
            return None  # already prefixed
        strings.append(_byte_text(lines, first.lineno - 1, first.col_offset, first.end_col_offset - first.col_offset))
    prefix = "r" if any("\\" in s for s in strings) else "b" if all(s.isascii() for s in strings) else ""
    if not prefix:
        return None
    return f"string prefix {prefix}", [Insertion(c.args[0].lineno - 1, c.args[0].col_offset, 0, prefix) for c in run]


def _keyword(lines: list[str], run: list[ast.Call], rng: random.Random) -> tuple[str, list[Insertion]] | None:
    """The same keyword argument added to each call."""
    if any(k.arg is None for call in run for k in call.keywords):
        return None  # a `**mapping` may already carry it
    used = {k.arg for call in run for k in call.keywords}
    choices = [kw for kw in SIBLING_KEYWORDS if kw[0] not in used]
    if not choices:
        return None
    name, value = rng.choice(choices)
    sites = [_argument_insertion(lines, call, f"{name}={value}") for call in run]
    return None if None in sites else (f"keyword {name}={value}", [s for s in sites if s is not None])


def _wrap(lines: list[str], run: list[ast.Call], rng: random.Random) -> tuple[str, list[Insertion]] | None:
    """Each call's first argument wrapped in the same call."""
    firsts = [call.args[0] if call.args and not isinstance(call.args[0], ast.Starred) else None for call in run]
    if any(first is None or first.end_col_offset is None for first in firsts):
        return None
    wrapper = rng.choice(SIBLING_WRAPPERS)
    insertions = []
    for first in firsts:
        assert first is not None and first.end_col_offset is not None  # checked above; single-line statements
        width = first.end_col_offset - first.col_offset
        inner = _byte_text(lines, first.lineno - 1, first.col_offset, width)
        insertions.append(Insertion(first.lineno - 1, first.col_offset, width, f"{wrapper}({inner})"))
    return f"first argument wrapped in {wrapper}()", insertions


SIBLING_MOVES = (_keyword, _wrap, _string_prefix)


def sibling_chains(source: Parsed, rng: random.Random) -> list[SynthChain]:
    """The same change made to each of several similar consecutive lines, top to bottom."""
    chains = []
    for run in sibling_runs(source.tree):
        options = [made for move in SIBLING_MOVES if (made := move(source.lines, run, rng)) is not None]
        if not options:
            continue
        detail, insertions = rng.choice(options)
        chain = line_chain(source.lines, [[i] for i in insertions])
        if chain:
            chains.append(SynthChain(f"sibling {detail}", chain, parses))
    return chains


SYNTHESIZERS: dict[str, Callable[[Parsed, random.Random], list[SynthChain]]] = {
    "rename": rename_chains, "parameter": parameter_chains, "sibling": sibling_chains}


@dataclass
class SyntheticReport:
    files_read: int = 0
    files_used: int = 0
    examples: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> split -> count
    dropped: dict[str, int] = field(default_factory=dict)  # SYNTHETIC_DROPS (files)
    seconds: float = 0.0


def _rng(seed: int, *keys: str) -> random.Random:
    return random.Random(int(hashlib.sha256(":".join([str(seed), *keys]).encode()).hexdigest()[:16], 16))


def synthesize_file(source: SourceText, seed: int, split: str, kinds: Iterable[str] = tuple(SYNTHESIZERS)
                    ) -> tuple[list[EditExample], list[str]]:
    """Synthetic examples of one file, and the whole file after each chain used (for decontamination).

    Per kind, chains are tried in a seeded random order until `MAX_CHAINS_PER_FILE` pass their check (the whole
    chain applied gives what the move should) and, cut to the edits near each other, still parse. Raises
    SyntaxError (or tokenize's errors) when the file does not parse.
    """
    parsed = parse_source(source.text)
    examples: list[EditExample] = []
    edited: list[str] = []
    for kind in kinds:
        rng = _rng(seed, source.package, source.path, kind)
        found = SYNTHESIZERS[kind](parsed, rng)
        rng.shuffle(found)
        used = 0
        for detail, chain, check in found:
            near = fitting_prefix(chain)
            if used >= MAX_CHAINS_PER_FILE or len(near) < 2 or not check(edited_text(parsed.lines, chain)):
                continue
            text = edited_text(parsed.lines, near)
            if len(near) < len(chain) and not parses(text):
                continue
            used += 1
            edited.append(text)
            origin = Provenance(kind, split, source.package, "", source.license, "", source.path)
            steps = range(1, min(len(near), MAX_SYNTHETIC_STEPS + 1))
            examples += chain_examples(origin, parsed.lines, near, steps, detail=detail)
    return examples, edited


def synthesize(sources: Iterable[SourceText], seed: int = 0, decontaminator: Decontaminator | None = None,
               fraction: float = HELDOUT_FRACTION, log: Callable[[str], None] = print
               ) -> tuple[list[EditExample], SyntheticReport]:
    """Synthetic examples of every source, held out by the hash of package/path; decontaminated when asked."""
    started = time.monotonic()
    report = SyntheticReport()
    dropped: Counter[str] = Counter()
    examples: list[EditExample] = []
    for source in sources:
        report.files_read += 1
        split = split_of(f"{source.package}/{source.path}", fraction)
        try:
            made, edited = synthesize_file(source, seed, split)
        except (SyntaxError, ValueError, tokenize.TokenError, RecursionError):
            dropped["syntax"] += 1
            continue
        if not made:
            dropped["no_chain"] += 1
            continue
        reason = decontaminator.reason(source.text, *edited) if decontaminator is not None else None
        if reason:
            dropped[reason] += 1
            continue
        report.files_used += 1
        examples += made
    for example in examples:
        counts = report.examples.setdefault(example.kind, {"train": 0, "heldout": 0})
        counts[example.split] += 1
    report.dropped = {reason: dropped[reason] for reason in SYNTHETIC_DROPS}
    report.seconds = round(time.monotonic() - started, 1)
    log(f"edits: synthetic from {report.files_read} files ({report.files_used} used): {report.examples}; "
        f"dropped {report.dropped} in {report.seconds:.0f} s")
    return examples, report


def stdlib_sources(limit: int | None = None) -> Iterator[SourceText]:
    """The standard library's files (PSF licence), as the code corpus reads them."""
    for count, (relative, path) in enumerate(corpus.stdlib_files()):
        if limit is not None and count >= limit:
            return
        text = corpus.read_text(path)
        if text is not None and not corpus.is_vendored(relative):
            yield SourceText(corpus.STDLIB, relative, text, "PSF-2.0")


def corpus_sources(path: Path, licenses: dict[str, str], limit: int | None = None) -> Iterator[SourceText]:
    """The files of a corpus file written by `corpus.save_files`, with each package's licence."""
    for count, file in enumerate(corpus.load_files(path)):
        if limit is not None and count >= limit:
            return
        yield SourceText(file.package, file.path, file.text, licenses.get(file.package, ""))


# ---------------------------------------------------------------------------------------------------------------
# Manifest and the shipped evaluation set


def filter_rules() -> dict[str, Any]:
    return {
        "commits": "non-merge commits on HEAD's history modifying exactly one .py file (other files may change)",
        "hunks": [MIN_HUNKS, MAX_HUNKS], "max_changed_lines": MAX_CHANGED_LINES,
        "max_gap_lines": MAX_GAP_LINES, "max_span_lines": MAX_SPAN_LINES,
        "diff": "difflib line diff, no context; hunks taken as typed top to bottom",
        "file": f"not vendored or generated; UTF-8, {corpus.MIN_BYTES}..{corpus.MAX_BYTES} bytes",
        "whitespace": "a commit with a whitespace-only hunk is dropped",
        "dedupe": "sha256 of path, text before and after",
        "decontamination": f"file before and after: HumanEval-Infilling runs of {corpus.OVERLAP_RUN} lines; "
                           f">= {corpus.HELDOUT_DROP_AT} windows of decontam/heldout-6line-windows.txt.gz",
        "licence": "the project's own licence files at HEAD; copyleft text or no recognised licence: skipped",
        "window": f">= {WINDOW_LINES} lines around the edits ({WINDOW_MARGIN} beyond the outermost)",
        "synthetic": f"at most {MAX_CHAINS_PER_FILE} chains of a kind a file, {MAX_SYNTHETIC_STEPS} steps a chain",
    }


def label_of(example: EditExample) -> str:
    """The example's kind, or "no_edit" for a moment with no next edit."""
    return "no_edit" if example.target is None else example.kind


def manifest(examples: Sequence[EditExample], reports: Sequence[ProjectReport] = (),
             synthetic: SyntheticReport | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per project: licence, licence file, split, commits used, examples (and, with its report, the commits seen
    and what each filter dropped); per kind (`label_of`) and split: counts; the filters; the build's `settings`."""
    real = [e for e in examples if e.kind == "real"]
    by_project: dict[str, list[EditExample]] = defaultdict(list)
    for example in real:
        by_project[example.project].append(example)
    by_report = {r.project: r for r in reports}
    projects = [_project_row(project, by_project.get(project, []), by_report.get(project))
                for project in sorted(set(by_project) | {r.project for r in reports if not r.skipped})]
    counts: dict[str, dict[str, int]] = {label: {"train": 0, "heldout": 0} for label in (*KINDS, "no_edit")}
    for example in examples:
        counts[label_of(example)][example.split] += 1
    dropped: Counter[str] = Counter()
    for report in reports:
        dropped.update(report.dropped)
    result: dict[str, Any] = {
        "description": "Next-edit examples for the embedded dglsp model: edits mined from the commit histories of "
                       "permissively licensed public Python projects, and synthetic edits (rename, parameter, "
                       "sibling) of permissively licensed Python files. Format: dglsp/tools/edit_corpus.py.",
        "settings": settings or {},
        "split": {"method": "sha256 of owner/name (synthetic: package/path) below the held-out fraction; projects "
                            "whose released code is in the code corpus are never held out",
                  "heldout_projects": sorted(p["project"] for p in projects if p["split"] == "heldout")},
        "filters": {**filter_rules(), "dropped": {r: dropped[r] for r in COMMIT_DROPS}},
        "totals": {"examples": len(examples), "by_kind": counts, "projects": len(projects),
                   "commits": len({(e.project, e.commit) for e in real})},
        "projects": projects,
        "skipped_projects": [{"project": r.project, "reason": r.skipped, "license_file": r.license_file}
                             for r in reports if r.skipped],
    }
    if synthetic is not None:
        result["synthetic"] = asdict(synthetic)
    return result


def _project_row(project: str, rows: list[EditExample], report: ProjectReport | None) -> dict[str, Any]:
    known = report or (rows[0] if rows else None)
    row: dict[str, Any] = {
        "project": project, "split": known.split if known else "", "license": known.license if known else "",
        "license_file": known.license_file if known else "", "head": report.head if report else "",
        "commits_used": len({e.commit for e in rows}), "examples": sum(1 for e in rows if e.target is not None),
        "no_edit": sum(1 for e in rows if e.target is None)}
    if report:
        row.update(commits_seen=report.commits_seen, dropped=report.dropped)
    return row


def ship_subset(heldout: Sequence[EditExample], seed: int = 0, real: int = SHIP_REAL, no_edit: int = SHIP_NO_EDIT,
                synthetic: int = SHIP_SYNTHETIC, kinds: Sequence[str] = SHIP_KINDS) -> list[EditExample]:
    """A small, spread evaluation set: real targets one commit at a time, taking projects in turn (a commit's
    steps are alike); no-edit moments likewise; synthetic examples of `kinds`, one file at a time."""
    rng = random.Random(seed)
    real_rows = [e for e in heldout if e.kind == "real"]
    targets = _spread([e for e in real_rows if e.target is not None], lambda e: e.project,
                      lambda e: e.commit, real, rng)
    quiet = _spread([e for e in real_rows if e.target is None], lambda e: e.project, lambda e: e.commit,
                    no_edit, rng)
    made = _spread([e for e in heldout if e.kind in kinds], lambda e: e.kind, lambda e: e.path, synthetic, rng)
    return targets + quiet + made


def _spread(rows: list[EditExample], group: Callable[[EditExample], str], unit: Callable[[EditExample], str],
            count: int, rng: random.Random) -> list[EditExample]:
    """Up to `count` rows, taking the groups in turn and, within a group, one row of each unit before any unit
    gives a second."""
    units: dict[str, dict[str, list[EditExample]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        units[group(row)][unit(row)].append(row)
    queues: list[deque[list[EditExample]]] = []
    for name in sorted(units):
        keys = sorted(units[name])
        rng.shuffle(keys)
        for key in keys:
            rng.shuffle(units[name][key])
        queues.append(deque(units[name][key] for key in keys))
    chosen: list[EditExample] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                bucket = queue.popleft()
                chosen.append(bucket.pop())
                if bucket:
                    queue.append(bucket)
    return chosen


def shipped_manifest(examples: Sequence[EditExample], full: dict[str, Any]) -> dict[str, Any]:
    """The shipped set's own manifest: what it holds, each project's licence and commits, each synthetic source."""
    known = {p["project"]: p for p in full["projects"]}
    commits: dict[str, set[str]] = defaultdict(set)
    files: dict[tuple[str, str], set[str]] = defaultdict(set)
    for example in examples:
        if example.kind == "real":
            commits[example.project].add(example.commit)
        else:
            files[(example.project, example.license)].add(example.path)
    return {
        "description": "Held-out next-edit evaluation set (dglsp/tools/edit_corpus.py): real edits of held-out "
                       "projects, moments with no next edit, synthetic rename and parameter edits of held-out "
                       "files. Each example stores a window of its file, not the whole file.",
        "counts": dict(sorted(Counter(label_of(e) for e in examples).items())),
        "projects": [{"project": project, **{key: known.get(project, {}).get(key, "")
                                             for key in ("license", "license_file", "head")},
                      "commits": sorted(shas)} for project, shas in sorted(commits.items())],
        "synthetic_sources": [{"package": package, "license": licence, "files": sorted(paths)}
                              for (package, licence), paths in sorted(files.items())],
        "split": full["split"], "settings": full["settings"], "filters": full["filters"],
    }


# ---------------------------------------------------------------------------------------------------------------
# Command line


def mirror_dirs(mirror_dir: Path, repos: Sequence[str] | None) -> list[tuple[str, Path]]:
    """(owner/name, git directory) of each mirror: `MIRROR/owner+name/repo` (or a bare `owner+name`)."""
    found = []
    names = [r.replace("/", "+") for r in repos] if repos else sorted(p.name for p in mirror_dir.iterdir()
                                                                         if "+" in p.name and p.is_dir())
    for name in names:
        base = mirror_dir / name
        git_dir = base / "repo" if (base / "repo").is_dir() else base
        found.append((name.replace("+", "/", 1), git_dir))
    return found


def code_corpus_packages(path: Path = corpus.DATA_DIR.parent.parent / "model" / "embedded" / "MANIFEST.json"
                         ) -> dict[str, str]:
    """Package -> licence of the code corpus the embedded model was trained on (empty when absent)."""
    if not path.is_file():
        return {}
    return {p["package"]: p["license"] for p in json.loads(path.read_text(encoding="utf-8")).get("packages", [])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dglsp.tools.edit_corpus", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where train/heldout .jsonl.gz and MANIFEST.json go")
    parser.add_argument("--repos", default="", help="owner/name,... (default: every mirror in --mirror-dir)")
    parser.add_argument("--mirror-dir", type=Path, required=True,
                        help="bare git mirrors of public repositories, as OWNER+NAME/repo")
    parser.add_argument("--max-commits", type=int, default=MAX_COMMITS_PER_PROJECT,
                        help="commits used per project, newest first")
    parser.add_argument("--sources", default="stdlib",
                        help="synthetic edits from: stdlib, a corpus file (corpus.save_files), or none")
    parser.add_argument("--max-files", type=int, default=None, help="source files read for synthetic edits")
    parser.add_argument("--project-heldout-fraction", type=float, default=PROJECT_HELDOUT_FRACTION,
                        help="of the projects outside the code corpus")
    parser.add_argument("--heldout-fraction", type=float, default=HELDOUT_FRACTION, help="of synthetic source files")
    parser.add_argument("--heldout-any", action="store_true",
                        help="let projects whose code is in the code corpus be held out too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ship", type=Path, default=None,
                        help="also write the small held-out evaluation set here (dglsp/tools/data/edits)")
    args = parser.parse_args(argv)
    decontaminator = Decontaminator()
    packages = code_corpus_packages()
    mirrors = mirror_dirs(args.mirror_dir, [r.strip() for r in args.repos.split(",") if r.strip()] or None)
    never = set() if args.heldout_any else projects_in_code_corpus([p for p, _ in mirrors], packages)
    examples: list[EditExample] = []
    reports = []
    for project, git_dir in mirrors:
        split = split_of(project, args.project_heldout_fraction, never)
        mined, report = mine_repository(git_dir, project, split, decontaminator, args.max_commits)
        examples += mined
        reports.append(report)
    synthetic_report = None
    if args.sources != "none":
        sources = (stdlib_sources(args.max_files) if args.sources == "stdlib"
                   else corpus_sources(Path(args.sources), packages, args.max_files))
        made, synthetic_report = synthesize(sources, args.seed, decontaminator, args.heldout_fraction)
        examples += made
    settings = {"project_heldout_fraction": args.project_heldout_fraction, "file_heldout_fraction":
                args.heldout_fraction, "never_heldout": sorted(never), "max_commits_per_project": args.max_commits,
                "synthetic_sources": args.sources, "max_files": args.max_files, "seed": args.seed}
    full = manifest(examples, reports, synthetic_report, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "heldout"):
        written = save_examples((e for e in examples if e.split == split), args.out / f"{split}.jsonl.gz")
        print(f"edits: {written} {split} examples -> {args.out / f'{split}.jsonl.gz'}")
    (args.out / "MANIFEST.json").write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    if args.ship is not None:
        shipped = ship_subset([e for e in examples if e.split == "heldout"], args.seed)
        save_examples(shipped, args.ship / "heldout.jsonl.gz")
        (args.ship / "MANIFEST.json").write_text(json.dumps(shipped_manifest(shipped, full), indent=2) + "\n",
                                                 encoding="utf-8")
        print(f"edits: shipped {len(shipped)} held-out examples -> {args.ship}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
