"""`dglsp eval --repo PATH`: suggestion quality on a real repository, through the full serving path.

Contract: `main(argv)` walks PATH for source files of the languages in `syntax.LANGUAGES`,
cuts holes at syntactically meaningful points found with tree-sitter (`find_holes`):

* rest-of-line — from the start of a node in the middle of a line to the line's end;
* whole-line   — a statement line, after its indentation (the editor has auto-indented);
* block        — the body of a function/loop/if, right after its opener (`:` or `{`);
* random-span  — one whole syntax node of a few to a few hundred characters.

Each hole is completed by `Completer.complete` (prompt -> engine -> post-processing, what
`dglsp serve` answers), and the same raw canvas text is then scored with post-processing
off (`raw`), fully on (`full`), and with each filter switched off (`-brackets`, ...), so
each filter's value is measured on the same generations. Metrics: exact match (the
document comes back as it was, trailing spaces aside), edit similarity, and two bug counts:
suggestions that over-close brackets the suffix closes, and suggestions that repeat the
next line. With `--test-cmd`, up to `--test-limit` holes are also checked by running the
repository's tests in a scratch copy with the completion in place (pass rate).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dglsp.completion.edits import Edit
from dglsp.completion.postprocess import FILTERS, Dropped, postprocess_edit
from dglsp.completion.prompt import CursorContext, cursor_windows
from dglsp.completion.syntax import LANGUAGES, LanguageSpec, excess_closers, language_spec, parse_tree
from dglsp.config import Settings

KINDS = ("rest-of-line", "whole-line", "block", "random-span")
EXTENSIONS = {".py": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".ts": "typescript",
              ".go": "go", ".rs": "rust", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp",
              ".java": "java", ".lua": "lua"}
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", "build", "dist", "target", ".tox"}
MAX_FILE_BYTES = 200_000
MAX_BLOCK_LINES = 8
# Statement-level node types whose line makes a whole-line hole, and block bodies, per grammar.
BLOCK_BODIES = {"block", "compound_statement", "statement_block", "constructor_body"}
SPAN_MIN, SPAN_MAX = 4, 300


@dataclass(frozen=True)
class Hole:
    path: str  # relative to the repository
    language_id: str
    kind: str
    start: int  # offsets into the original text: the hole is text[start:end]
    end: int


@dataclass
class Score:
    holes: int = 0
    exact: int = 0
    similarity: float = 0.0
    over_closing: int = 0  # suggestions that close brackets the suffix already closes
    next_line_repeats: int = 0  # suggestions that repeat the line below the hole
    empty: int = 0
    tests_run: int = 0
    tests_passed: int = 0

    def row(self) -> dict:
        n = max(self.holes, 1)
        return {"holes": self.holes, "exact_match": round(self.exact / n, 4),
                "edit_similarity": round(self.similarity / n, 4), "over_closing": self.over_closing,
                "next_line_repeats": self.next_line_repeats, "empty": self.empty,
                "test_pass_rate": round(self.tests_passed / self.tests_run, 4) if self.tests_run else None}


@dataclass
class Report:
    scores: dict[str, dict[str, Score]] = field(default_factory=dict)  # variant -> kind ("all" too) -> score
    ms_per_hole: float = 0.0
    # Per hole: [confidence of the full pipeline's suggestion (None: nothing shown), exact, exact] — the
    # confidence gate's calibration points (`dglsp eval --plot-gate`), exact match standing for "passed".
    calibration: list[list] = field(default_factory=list)

    def add(self, variant: str, kind: str, update) -> None:
        for key in (kind, "all"):
            update(self.scores.setdefault(variant, {}).setdefault(key, Score()))


# -- holes ----------------------------------------------------------------------------------------
def source_files(repo: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(repo.rglob("*")):
        if any(part in SKIP_DIRS or part.startswith(".") for part in path.relative_to(repo).parts[:-1]):
            continue
        language = EXTENSIONS.get(path.suffix)
        if language and path.is_file() and 0 < path.stat().st_size <= MAX_FILE_BYTES:
            yield path, language


def find_holes(text: str, path: str, language_id: str, rng: random.Random, per_kind: int) -> list[Hole]:
    """Up to `per_kind` holes of each kind in one file, at node boundaries of its tree-sitter parse."""
    tree = parse_tree(language_spec(language_id), text)
    if tree is None:
        return []
    data = text.encode("utf-8")
    candidates: dict[str, list[tuple[int, int]]] = {kind: [] for kind in KINDS}
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.has_error or node.is_missing:
            continue
        start, end = _char(data, node.start_byte), _char(data, node.end_byte)
        _collect(text, node, start, end, candidates)
    holes = []
    for kind in KINDS:
        chosen = rng.sample(candidates[kind], min(per_kind, len(candidates[kind])))
        holes += [Hole(path, language_id, kind, start, end) for start, end in sorted(chosen)]
    return holes


def _char(data: bytes, byte_offset: int) -> int:
    return len(data[:byte_offset].decode("utf-8", errors="replace"))


def _literal(node) -> bool:
    while node is not None:
        if "comment" in node.type or "string" in node.type:
            return True
        node = node.parent
    return False


def _collect(text: str, node, start: int, end: int, candidates: dict[str, list[tuple[int, int]]]) -> None:
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", start)
    line_end = len(text) if line_end == -1 else line_end
    line = text[line_start:line_end]
    code_start = line_start + len(line) - len(line.lstrip())
    if _literal(node):
        return
    parent = node.parent.type if node.parent is not None else None
    # whole line: a statement that fills its line, directly in a block or at top level
    if node.is_named and start == code_start and end == line_end and len(line.strip()) >= 6 \
            and parent in BLOCK_BODIES | {"module", "program", "source_file", "translation_unit", "chunk"}:
        candidates["whole-line"].append((start, line_end))
    # rest of line: from a token boundary after an operator, bracket, comma or dot
    if node.child_count == 0 and code_start < start < line_end - 1 and text[start - 1] in " (=[,.:":
        candidates["rest-of-line"].append((start, line_end))
    if node.type in BLOCK_BODIES and parent is not None and text.count("\n", start, end) < MAX_BLOCK_LINES:
        _collect_block(text, start, end, candidates["block"])
    if node.is_named and parent is not None and SPAN_MIN <= end - start <= SPAN_MAX:
        candidates["random-span"].append((start, end))


def _collect_block(text: str, start: int, end: int, found: list[tuple[int, int]]) -> None:
    """A block body from right after its opener: `{ ... }` keeps its closing line, `:` blocks end at the body."""
    if text[start] == "{":
        close_line = text.rfind("\n", start, end)
        if close_line > start and text[close_line:end].strip() == "}" and text[start + 1:close_line].strip():
            found.append((start + 1, close_line))
        return
    colon = text.rfind(":", 0, start)
    if colon != -1 and not text[colon + 1:start].strip() and "\n" in text[colon:start]:
        found.append((colon + 1, end))


# -- scoring --------------------------------------------------------------------------------------
def apply_edit(document: str, edit: Edit | None) -> str:
    return document if edit is None else edit.apply(document)


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip()


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / longer length (CodeXGLUE's measure), on the first 600 characters."""
    a, b = a[:600], b[:600]
    if not a and not b:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return 1.0 - previous[-1] / max(len(a), len(b))


def over_closes(spec: LanguageSpec, context: CursorContext, middle: str, replaced: int) -> bool:
    """Does the suggestion close brackets that the code after it already closes (more closers without an
    opener than the document has with the hole left empty)? A suggestion that merely fails to reopen what
    the hole removed is not counted: that is a wrong completion, not a duplicated bracket."""
    return excess_closers(spec, context.prefix, middle, context.suffix[replaced:]) > excess_closers(
        spec, context.prefix, context.suffix)


def repeats_next_line(context: CursorContext, middle: str, truth: str) -> bool:
    """Does a line of the suggestion equal the next non-blank line below the hole (when the truth does not)?"""
    below = next((line.strip() for line in context.suffix.split("\n")[1:] if line.strip()), None)
    if below is None or len(below) < 2:
        return False
    line_prefix = context.prefix.rsplit("\n", 1)[-1]

    def lines(text: str) -> set[str]:
        parts = (line_prefix + text).split("\n")
        return {part.strip() for part in parts if part.strip()}

    return below in lines(middle) and below not in lines(truth)


def score_variant(report: Report, variant: str, hole: Hole, original: str, document: str, context: CursorContext,
                  edit: Edit | None) -> None:
    spec = language_spec(hole.language_id)
    truth = original[hole.start:hole.end]
    replaced = edit.end - edit.start if edit else 0
    middle = edit.text if edit else ""
    truth_middle = truth + document[hole.start: hole.start + replaced]
    exact = _normal(apply_edit(document, edit)) == _normal(original)
    similarity = edit_similarity(_normal(middle), _normal(truth_middle))
    over = bool(edit) and over_closes(spec, context, middle, replaced)
    repeat = bool(edit) and repeats_next_line(context, middle, truth)

    def update(score: Score) -> None:
        score.holes += 1
        score.exact += exact
        score.similarity += similarity
        score.over_closing += over
        score.next_line_repeats += repeat
        score.empty += edit is None

    report.add(variant, hole.kind, update)


# -- running --------------------------------------------------------------------------------------
def variants_of(raw: str, context: CursorContext, settings: Settings, full: Edit | None) -> dict[str, Edit | None]:
    """The same generation seen through post-processing off, on, and on without each filter."""
    variants: dict[str, Edit | None] = {
        "raw": Edit(context.cursor, context.cursor, raw) if raw.strip() else None, "full": full}
    for name in FILTERS:
        variants[f"-{name}"] = _edit(postprocess_edit(raw, context, settings.postprocess, skip=frozenset({name})))
    return variants


def _edit(found: Edit | Dropped) -> Edit | None:
    return found if isinstance(found, Edit) else None


def evaluate_repo(completer, repo: Path, settings: Settings, limit: int, per_kind: int, seed: int,
                  kinds: tuple[str, ...] = KINDS, test_cmd: str | None = None, test_limit: int = 0,
                  test_timeout: float = 120.0, log=lambda message: None, oracle_overrun: int | None = None) -> Report:
    """Complete every hole with `completer` (or, with `oracle_overrun`, with no model: the raw text is the
    hole's truth followed by that many characters of the code after it — a model that writes the right
    middle and keeps going, the classic FIM failure the filters must cut) and score every variant."""
    rng = random.Random(seed)
    files = list(source_files(repo))
    rng.shuffle(files)
    holes: list[tuple[Hole, str]] = []
    for path, language in files:
        if len(holes) >= limit:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        found = [h for h in find_holes(text, str(path.relative_to(repo)), language, rng, per_kind) if h.kind in kinds]
        holes += [(hole, text) for hole in found]
    holes = holes[:limit]
    report = Report()
    tester = _Tester(repo, test_cmd, test_timeout) if test_cmd and test_limit else None
    begin = time.perf_counter()
    for index, (hole, original) in enumerate(holes):
        document = original[:hole.start] + original[hole.end:]
        if oracle_overrun is not None:
            context = CursorContext(*cursor_windows(document, hole.start, settings.context), hole.path,
                                    hole.language_id, offset=hole.start)
            raw = original[hole.start: hole.end + oracle_overrun]
            full = _edit(postprocess_edit(raw, context, settings.postprocess))
        else:
            context = completer.context_at(document, hole.start, settings, hole.path, hole.language_id)
            suggestion = completer.complete(context, settings)
            raw, context = suggestion.raw, suggestion.context or context
            full = suggestion.edit
            exact = full is not None and _normal(apply_edit(document, full)) == _normal(original)
            report.calibration.append([suggestion.confidence if full else None, exact, exact])
        variants = variants_of(raw, context, settings, full)
        for variant, edit in variants.items():
            score_variant(report, variant, hole, original, document, context, edit)
        if tester is not None and index < test_limit and tester.baseline_ok:
            for variant in ("raw", "full"):
                passed = tester.passes(hole.path, apply_edit(document, variants[variant]))

                def count(score: Score, passed: bool = passed) -> None:
                    score.tests_run += 1
                    score.tests_passed += passed

                report.add(variant, hole.kind, count)
        log(f"{hole.path}:{hole.kind} truth={original[hole.start:hole.end][:60]!r} "
            f"full={full.text[:60] if full else None!r} raw={raw[:60]!r}")
    report.ms_per_hole = (time.perf_counter() - begin) * 1000 / max(len(holes), 1)
    if tester is not None:
        tester.close()
    return report


class _Tester:
    """Runs the repository's tests in a scratch copy with one file replaced (then restored)."""

    def __init__(self, repo: Path, command: str, timeout: float):
        self.scratch = Path(tempfile.mkdtemp(prefix="dglsp-repo-eval-"))
        self.root = self.scratch / repo.name
        shutil.copytree(repo, self.root, ignore=shutil.ignore_patterns(*SKIP_DIRS))
        self.command, self.timeout = command, timeout
        self.baseline_ok = self._run()
        if not self.baseline_ok:
            print(f"dglsp eval --repo: `{command}` fails on the unmodified repository; no test pass rates",
                  file=sys.stderr)

    def _run(self) -> bool:
        try:
            result = subprocess.run(self.command, shell=True, cwd=self.root, timeout=self.timeout,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def passes(self, relative: str, text: str) -> bool:
        target = self.root / relative
        original = target.read_text(encoding="utf-8", errors="replace")
        target.write_text(text, encoding="utf-8")
        try:
            return self._run()
        finally:
            target.write_text(original, encoding="utf-8")

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def render(report: Report, kinds: tuple[str, ...]) -> str:
    header = f"{'variant':<12} {'kind':<13} {'holes':>5} {'exact':>6} {'edit-sim':>8} {'over-close':>10} " \
             f"{'next-line':>9} {'empty':>5} {'tests':>6}"
    lines = [header]
    for kind in ("all", *kinds):
        for variant, by_kind in report.scores.items():
            if kind not in by_kind:
                continue
            row = by_kind[kind].row()
            tests = "" if row["test_pass_rate"] is None else f"{row['test_pass_rate']:.3f}"
            lines.append(f"{variant:<12} {kind:<13} {row['holes']:>5} {row['exact_match']:>6.3f} "
                         f"{row['edit_similarity']:>8.3f} {row['over_closing']:>10} {row['next_line_repeats']:>9} "
                         f"{row['empty']:>5} {tests:>6}")
    lines.append(f"{report.ms_per_hole:.0f} ms per hole (generation and all variants)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`dglsp eval --repo PATH` (options: `dglsp.tools.options.add_eval_arguments`)."""
    if not args.repo.is_dir():
        raise SystemExit(f"dglsp eval --repo: {args.repo} is not a directory")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no progress bars in the report
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from dglsp.completion.completer import Completer
    from dglsp.model.loading import load_engine

    options = json.loads(args.settings) if args.settings else {}
    options.setdefault("engine", {}).update(model=args.model, device=args.device, threads=args.threads)
    options.setdefault("sampler", {}).setdefault("seed", args.seed)
    if args.calibrate:  # every suggestion is needed with its confidence: the gate is what is being calibrated
        options.setdefault("postprocess", {})["min_confidence"] = 0.0
    settings, warnings = Settings().updated(options)
    if warnings:
        raise SystemExit("dglsp eval --repo: " + "; ".join(warnings))
    completer, model = None, "oracle (truth + overrun)"
    if args.oracle_overrun is None:
        bundle, engine = load_engine(settings)
        completer, model = Completer(bundle, engine), str(bundle.path)
    kinds = tuple(args.kind or KINDS)
    log = (lambda message: print(message, file=sys.stderr)) if args.verbose else (lambda message: None)
    limit = 60 if args.limit is None else args.limit
    report = evaluate_repo(completer, args.repo, settings, limit, args.per_kind, args.seed, kinds,
                           args.test_cmd, args.test_limit, args.test_timeout, log, args.oracle_overrun)
    if args.json:
        decoding = "oracle" if completer is None else completer.ghost_schedule(settings).decoding
        calibration = {"calibration": {decoding: {f"{args.repo.name} exact match": report.calibration}}
                       } if args.calibrate else {}
        print(json.dumps({"repo": str(args.repo), "model": model, "ms_per_hole": report.ms_per_hole,
                          "scores": {v: {k: s.row() for k, s in by.items()} for v, by in report.scores.items()},
                          **calibration}, indent=2))
    else:
        print(f"# dglsp eval --repo {args.repo}  model {model}  ({len(LANGUAGES)} languages known)")
        print(render(report, kinds))
    return 0

