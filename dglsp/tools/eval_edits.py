"""`dglsp eval edits`: next-edit suggestions on held-out edits, against two baselines in the same run.

Contract: `run(args)` loads a model through `dglsp.model.loading.load_engine` (the serving path), reads edit
examples (`dglsp.tools.edit_corpus`: the shipped held-out set, or `--data FILE`), rebuilds each example's moment
as the server would hold it (`moment_of`: the window's text with the history applied, the cursor, the history
replayed through `EditHistory` as `didChange`s, the unified diffs), and scores three predictors on it:

* `model`: `NextEditor.propose`, exactly as `textDocument/copilotInlineEdit` calls it;
* `no-edit`: never shows anything (the floor a quiet model gets for free on no-edit moments);
* `repeat`: the last edit's substitution at its next occurrence (`next_edit.repeat_substitution`), what a
  find-and-replace does.

Metrics, per predictor and per kind of example (real / rename / parameter / no_edit; `edit_corpus.label_of`):

* exact: the document after the predicted edit is the document after the true one; on a no-edit moment,
  exact means nothing was shown;
* chrF of the changed lines (`chrf`: character n-grams up to 6, beta 2, whitespace ignored, as sacrebleu's
  CHRF): the predicted edit's new lines against the true hunk's new lines (a deletion: the lines each removes);
  nothing shown scores 0. The measure Zed and cursortab report ("delta-chrF on changed regions");
* shown: the share of moments where something was shown; on no-edit moments 1 - shown is the quiet rate.

The model's rows also carry its latency (ms per proposal) and forward passes per proposal, counted over every
region it rewrote (`CountingBackend`: `EditProposal.stats` holds only the last region's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dglsp.completion.edits import COALESCE_SECONDS, DocumentChange, Edit, EditHistory, HistoryEdit
from dglsp.completion.next_edit import repeat_substitution, smallest_edit
from dglsp.config import Settings
from dglsp.tools.edit_corpus import EditExample, apply_hunk, common_ends, label_of, load_examples
from dglsp.tools.options import EDIT_KINDS

SHIPPED_EDITS = Path(__file__).parent / "data" / "edits" / "heldout.jsonl.gz"
LABELS = EDIT_KINDS  # edit_corpus.KINDS and "no_edit" (edit_corpus.label_of)
PREDICTORS = ("model", "no-edit", "repeat")
LANGUAGE_ID = "python"  # every mined and synthetic edit is of a Python file
CHRF_ORDER, CHRF_BETA = 6, 2.0


# ---------------------------------------------------------------------------------------------------------------
# The moment an example stands for


@dataclass
class Moment:
    """What the server holds when the user has made the example's history: the document, the cursor, the
    recorded edits and the diffs the prompt shows."""

    text: str
    cursor: int
    history: list[HistoryEdit]
    diffs: list[str]
    path: str
    uri: str


def moment_of(example: EditExample, history_edits: int = 8) -> Moment:
    """The example's moment: `current()` as the document, the cursor at the end of the last edit, the history's
    hunks recorded by an `EditHistory` as the `didChange`s that typed them (so `substitution_of` and
    `candidate_regions` see what they see when serving), and their diffs as the server writes them."""
    uri = f"file:///{example.project}/{example.path}"
    text = example.current()
    lines = text.split("\n")
    line, column = example.cursor
    cursor = min(len(text), sum(len(before) + 1 for before in lines[:line]) + column)
    history = recorded_history(example, uri)[-history_edits:] if history_edits else []
    diffs = [edit.diff(example.path) for edit in history]
    return Moment(text, cursor, history, diffs, example.path, uri)


def recorded_history(example: EditExample, uri: str) -> list[HistoryEdit]:
    """The history's hunks as `EditHistory` records them: each hunk typed as the smallest character change that
    makes it (a rename types the new name's tail, not the whole line), the changes apart in time so that each
    hunk stays one edit, as the corpus counts them."""
    history = EditHistory()
    lines = example.before.split("\n")
    for index, hunk in enumerate(example.history):
        before = "\n".join(lines)
        lines = apply_hunk(lines, hunk)
        change = smallest_edit(before, "\n".join(lines), 0)
        if change is None:
            continue
        history.record(DocumentChange(uri, index + 1, change.start, change.end, before[change.start:change.end],
                                      change.text, before, at=index * (COALESCE_SECONDS + 1.0)))
    return history.edits(uri)


# ---------------------------------------------------------------------------------------------------------------
# Scores


def chrf(hypothesis: str, reference: str, order: int = CHRF_ORDER, beta: float = CHRF_BETA) -> float:
    """Character n-gram F-score (Popović 2015), 0..100, as sacrebleu's CHRF computes a sentence by default
    (chrF++.py's averaging: precision and recall averaged over the orders both strings have n-grams of, then
    F-beta; whitespace removed). Two identical strings score 100, even empty ones (sacrebleu gives 0)."""
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    if hyp == ref:
        return 100.0
    precision = recall = 0.0
    orders = 0
    for n in range(1, order + 1):
        hyp_grams = Counter(hyp[i:i + n] for i in range(len(hyp) - n + 1))
        ref_grams = Counter(ref[i:i + n] for i in range(len(ref) - n + 1))
        if not hyp_grams or not ref_grams:
            continue
        matches = sum((hyp_grams & ref_grams).values())
        precision += matches / sum(hyp_grams.values())
        recall += matches / sum(ref_grams.values())
        orders += 1
    if not orders:
        return 0.0
    precision, recall = precision / orders, recall / orders
    if not precision + recall:
        return 0.0
    factor = beta ** 2
    return 100 * (1 + factor) * precision * recall / (factor * precision + recall)


def changed_lines(before: str, after: str) -> tuple[str, str]:
    """(removed lines, added lines) between two texts: the lines left once equal lines at both ends are dropped."""
    old, new = before.split("\n"), after.split("\n")
    head, tail = common_ends(old, new)
    return "\n".join(old[head:len(old) - tail]), "\n".join(new[head:len(new) - tail])


@dataclass(frozen=True)
class Outcome:
    """One predictor on one example."""

    shown: bool
    exact: bool
    chrf: float | None  # None on a no-edit moment


def score(example: EditExample, text: str, predicted: Edit | None) -> Outcome:
    """How `predicted` (an edit of the moment's `text`, or None for nothing shown) does on `example`."""
    result = predicted.apply(text) if predicted is not None else None
    if example.target is None:
        return Outcome(result is not None, result is None, None)
    if result is None:
        return Outcome(False, False, 0.0)
    true_old, true_new = changed_lines(text, example.after())
    old, new = changed_lines(text, result)
    if true_new:
        similarity = chrf(new, true_new)
    else:  # a deletion: which lines were removed, by an edit that adds nothing
        similarity = 0.0 if new else chrf(old, true_old)
    return Outcome(True, result == example.after(), similarity)


@dataclass
class Row:
    """A predictor's totals on one kind of example (means are taken when reporting)."""

    predictor: str
    label: str
    examples: int = 0
    exact: int = 0
    shown: int = 0
    chrf_total: float = 0.0
    ms_total: float = 0.0
    forward_passes: int = 0
    regions: int = 0

    def add(self, outcome: Outcome, ms: float = 0.0, forward_passes: int = 0, regions: int = 0) -> None:
        self.examples += 1
        self.exact += outcome.exact
        self.shown += outcome.shown
        self.chrf_total += outcome.chrf or 0.0
        self.ms_total += ms
        self.forward_passes += forward_passes
        self.regions += regions

    def as_dict(self) -> dict[str, Any]:
        n = max(1, self.examples)
        row: dict[str, Any] = {"predictor": self.predictor, "label": self.label, "examples": self.examples,
                               "exact": round(self.exact / n, 4), "shown": round(self.shown / n, 4)}
        if self.label == "no_edit":
            row["quiet"] = round(1 - self.shown / n, 4)
        else:
            row["chrf"] = round(self.chrf_total / n, 2)
        if self.predictor == "model":
            row.update(ms=round(self.ms_total / n, 1), forward_passes=round(self.forward_passes / n, 2),
                       regions=round(self.regions / n, 2))
        return row


# ---------------------------------------------------------------------------------------------------------------
# Predictors and the run


@dataclass
class Prediction:
    edit: Edit | None
    ms: float = 0.0
    forward_passes: int = 0
    regions: int = 0
    detail: str = ""  # the model's raw rewrite, or why it showed nothing


Predictor = Callable[[Moment], Prediction]


def no_edit(moment: Moment) -> Prediction:
    return Prediction(None)


def repeat(moment: Moment) -> Prediction:
    return Prediction(repeat_substitution(moment.text, moment.cursor, moment.history))


class CountingBackend:
    """The engine, counting the forward passes and generations of each proposal (all of its regions)."""

    def __init__(self, backend):
        self.backend = backend
        self.forward_passes = self.generations = 0

    def generate(self, *args, **kwargs):
        generation = self.backend.generate(*args, **kwargs)
        self.forward_passes += generation.stats.forward_passes
        self.generations += 1
        return generation

    def take(self) -> tuple[int, int]:
        counts = (self.forward_passes, self.generations)
        self.forward_passes = self.generations = 0
        return counts

    def __getattr__(self, name: str):
        return getattr(self.backend, name)


def model_predictor(editor, counter: CountingBackend, settings: Settings) -> Predictor:
    """`NextEditor.propose` as the server calls it (`editor` wraps a completer whose backend is `counter`)."""

    def predict(moment: Moment) -> Prediction:
        counter.take()
        begin = time.perf_counter()
        proposal = editor.propose(moment.text, moment.cursor, moment.history, moment.diffs, settings, moment.path,
                                  LANGUAGE_ID)
        ms = (time.perf_counter() - begin) * 1000
        passes, regions = counter.take()
        why = f"{proposal.hidden.reason.value}: {proposal.hidden.detail}" if proposal.hidden else ""
        return Prediction(proposal.edit, ms, passes, regions, why or proposal.raw)

    return predict


def evaluate(examples: Sequence[EditExample], predictors: dict[str, Predictor], history_edits: int = 8,
             log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Every predictor on every example: rows per (predictor, kind), rows over all targets, and per example."""
    rows: dict[tuple[str, str], Row] = {}
    records = []
    for index, example in enumerate(examples):
        label = label_of(example)
        moment = moment_of(example, history_edits)
        record: dict[str, Any] = {"index": index, "label": label, "project": example.project, "path": example.path,
                                  "commit": example.commit, "step": example.step}
        for name, predict in predictors.items():
            prediction = predict(moment)
            outcome = score(example, moment.text, prediction.edit)
            for bucket in (label, "all targets") if label != "no_edit" else (label,):
                rows.setdefault((name, bucket), Row(name, bucket)).add(outcome, prediction.ms,
                                                                       prediction.forward_passes, prediction.regions)
            record[name] = {**asdict(outcome), "edit": asdict(prediction.edit) if prediction.edit else None}
            if name == "model":
                record[name].update(ms=round(prediction.ms, 1), forward_passes=prediction.forward_passes,
                                    detail=prediction.detail)
            log(f"{index} {label} {example.project}/{example.path} {name}: exact={outcome.exact} "
                f"chrf={outcome.chrf} edit={prediction.edit}")
        records.append(record)
    order = {label: position for position, label in enumerate((*LABELS, "all targets"))}
    ordered = sorted(rows.values(), key=lambda r: (PREDICTORS.index(r.predictor) if r.predictor in PREDICTORS
                                                   else len(PREDICTORS), order.get(r.label, 99)))
    return {"rows": [row.as_dict() for row in ordered], "examples": records}


def render(result: dict[str, Any]) -> str:
    lines = [f"{'predictor':<9} {'kind':<12} {'n':>4} {'exact':>6} {'chrF':>6} {'shown':>6} {'quiet':>6} "
             f"{'ms':>7} {'fwd':>6} {'regions':>7}"]
    for row in result["rows"]:
        chrf_text = f"{row['chrf']:>6.1f}" if "chrf" in row else f"{'-':>6}"
        quiet = f"{row['quiet']:>6.3f}" if "quiet" in row else f"{'-':>6}"
        timing = (f"{row['ms']:>7.0f} {row['forward_passes']:>6.1f} {row['regions']:>7.2f}" if "ms" in row
                  else f"{'':>7} {'':>6} {'':>7}")
        lines.append(f"{row['predictor']:<9} {row['label']:<12} {row['examples']:>4} {row['exact']:>6.3f} "
                     f"{chrf_text} {row['shown']:>6.3f} {quiet} {timing}")
    lines.append("exact: the document after the edit is the true one (no_edit: nothing shown); chrF: of the changed "
                 "lines, 0-100; quiet: no_edit moments with nothing shown")
    if "model" in result:
        lines.append(f"model {result['model']} on {result['device']}; next_edit {result['next_edit']}; "
                     f"load average {result['load_average']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Command line


def chosen(examples: list[EditExample], kinds: Sequence[str] | None, limit: int | None) -> list[EditExample]:
    """The examples of `kinds` (labels), `limit` of them evenly spaced (the set is ordered by kind)."""
    if kinds:
        examples = [e for e in examples if label_of(e) in kinds]
    if limit and limit < len(examples):
        examples = [examples[i * len(examples) // limit] for i in range(limit)]
    return examples


def edit_settings_from(args: argparse.Namespace, command: str = "dglsp eval edits", warmup: bool = True) -> Settings:
    """`Settings()` with `--settings` JSON, the engine the command line names, and `--no-seed` / `--radius`."""
    options = json.loads(args.settings) if args.settings else {}
    options.setdefault("engine", {}).update(model=args.model, device=args.device, threads=args.threads,
                                            warmup=warmup)
    options.setdefault("sampler", {}).setdefault("seed", args.seed)
    next_edit = options.setdefault("next_edit", {})
    next_edit.setdefault("predictor", "model")  # the model row is the model's; the baselines run beside it
    if args.no_seed:
        next_edit["seed_canvas"] = False
    if args.radius is not None:
        next_edit["radius"] = args.radius
    settings, warnings = Settings().updated(options)
    if warnings:
        raise SystemExit(f"{command}: " + "; ".join(warnings))
    return settings


def run(args: argparse.Namespace) -> int:
    """`dglsp eval edits` (options: `dglsp.tools.options.add_eval_arguments`)."""
    unknown = [kind for kind in args.kind or () if kind not in LABELS]
    if unknown:
        raise SystemExit(f"dglsp eval edits: --kind takes {', '.join(LABELS)}; not {', '.join(unknown)}")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from dglsp.completion.completer import Completer
    from dglsp.completion.next_edit import NextEditor
    from dglsp.model.loading import load_engine

    settings = edit_settings_from(args)
    data = args.data or SHIPPED_EDITS
    if data.is_dir():
        raise SystemExit(f"dglsp eval edits: --data takes an edit examples file (.jsonl.gz), not a directory: {data}")
    examples = chosen(load_examples(data), args.kind, args.limit)
    if not examples:
        raise SystemExit(f"dglsp eval edits: no examples of {args.kind} in {data}")
    bundle, engine = load_engine(settings)
    counter = CountingBackend(engine)
    editor = NextEditor(Completer(bundle, counter))
    model = model_predictor(editor, counter, settings)
    history_edits = settings.next_edit.history_edits
    model(moment_of(examples[0], history_edits))  # warm-up, untimed: the first calls allocate
    log = (lambda message: print(message, file=sys.stderr)) if args.verbose else (lambda message: None)
    result = evaluate(examples, {"model": model, "no-edit": no_edit, "repeat": repeat}, history_edits, log)
    result.update(command="dglsp " + " ".join(sys.argv[1:]), data=str(data), model=str(bundle.path),
                  device=device_name(bundle.device), next_edit=asdict(settings.next_edit),
                  min_confidence=editor.min_confidence(settings),
                  load_average=[round(x, 2) for x in os.getloadavg()])
    if not args.json:
        result = {key: value for key, value in result.items() if key != "examples"}
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


def device_name(device) -> str:
    """The device, with the CPU's thread count (what a CPU latency depends on)."""
    import torch

    return f"cpu ({torch.get_num_threads()} threads)" if str(device) == "cpu" else str(device)
