"""`dglsp bench edit`: how long one next-edit proposal takes, cold and warm, on a real file.

Each proposal is the moment after a rename: at a line of the file (--files, default the standard library's
argparse.py), the line's first name is renamed, as a `didChange` recorded by `EditHistory`, and the server's
`NextEditor.propose` is asked for the next edit with the cursor after the new name. The rename's diff is in
the prompt, but the history passed to `propose` is empty, so the cursor's region (its line and `--radius` lines
either side: 21 lines at the default 10) is the one region rewritten: the number is a region's latency, not
that of a second region tried after a first that needed no edit. No prefix KV cache is reused (the server
passes none for edits). The first proposal after loading is the cold one (nothing warmed up: allocation and
kernel selection included); the next `--prompts`, each at another place of the file, give the warm p50/p95.
Printed with the thread count and the load average, which a shared machine's timings depend on.
"""

from __future__ import annotations

import argparse
import json
import keyword
import os
import re
import statistics
import sys
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dglsp.completion.edits import DocumentChange, EditHistory
from dglsp.config import Settings
from dglsp.tools.bench_typing import percentile
from dglsp.tools.eval_edits import edit_settings_from

NAME = re.compile(r"\b[a-z_][a-z0-9_]{2,}\b")
SKIP = frozenset(keyword.kwlist) | {"self", "cls", "print"}  # not names a rename would pick
URI = "file:///bench/edit.py"


@dataclass
class Place:
    """One moment: the document after a rename at `line`, the cursor after the new name, the rename's diff."""

    line: int
    text: str
    cursor: int
    diffs: list[str]


def places(source: str, count: int, radius: int, path: str) -> list[Place]:
    """`count` moments at lines spread evenly over the file (away from its ends, so each region has its full
    2 x radius + 1 lines), each after renaming the first name on its line to NAME_value."""
    lines = source.split("\n")
    candidates = [index for index, line in enumerate(lines[radius:len(lines) - radius], radius)
                  if any(match.group() not in SKIP for match in NAME.finditer(line))]
    if not candidates:
        raise SystemExit("dglsp bench edit: the file has no line with a name to rename")
    picked = [candidates[i * len(candidates) // count] for i in range(count)] if count < len(candidates) \
        else candidates
    return [rename_at(source, line, path) for line in picked]


def rename_at(source: str, line: int, path: str) -> Place:
    line_start = sum(len(text) + 1 for text in source.split("\n")[:line])
    match = next(m for m in NAME.finditer(source.split("\n")[line]) if m.group() not in SKIP)
    end = line_start + match.end()
    history = EditHistory()
    history.record(DocumentChange(URI, 2, end, end, "", "_value", source))
    text = source[:end] + "_value" + source[end:]
    return Place(line, text, end + len("_value"), [edit.diff(path) for edit in history.edits(URI)])


@dataclass
class Timing:
    ms: float
    forward_passes: int
    canvases: int
    steps: int
    prefill_tokens: int
    region_tokens: int
    generated_tokens: int  # fewer than the region's: the model ended its rewrite early
    shown: bool


def bench_settings(args: argparse.Namespace) -> Settings:
    return edit_settings_from(args, "dglsp bench edit", warmup=False)


def measure(editor, place: Place, settings: Settings, path: str) -> Timing:
    from dglsp.completion.next_edit import line_region

    proposal = editor.propose(place.text, place.cursor, [], place.diffs, settings, path, "python")
    region = line_region(place.text, place.cursor, settings.next_edit.radius)
    tokens = len(editor.completer.tokenizer.encode(place.text[region.start:region.end], add_special_tokens=False))
    stats = proposal.stats
    return Timing(proposal.total_ms, stats.forward_passes, stats.canvases, stats.steps, stats.prefill_tokens, tokens,
                  stats.generated_tokens, proposal.edit is not None)


def summary(cold: Timing, warm: list[Timing]) -> dict[str, Any]:
    ms = [t.ms for t in warm]
    return {
        "cold_ms": round(cold.ms, 1),
        "warm_p50_ms": round(statistics.median(ms), 1) if ms else None,
        "warm_p95_ms": round(percentile(ms, 0.95) or 0.0, 1) if ms else None,
        "warm_mean_ms": round(statistics.fmean(ms), 1) if ms else None,
        "forward_passes": round(statistics.fmean(t.forward_passes for t in warm), 1) if warm else None,
        "canvases": round(statistics.fmean(t.canvases for t in warm), 1) if warm else None,
        "region_tokens": round(statistics.fmean(t.region_tokens for t in warm), 1) if warm else None,
        "generated_tokens": round(statistics.fmean(t.generated_tokens for t in warm), 1) if warm else None,
        "prompt_tokens": round(statistics.fmean(t.prefill_tokens for t in warm), 1) if warm else None,
        "ms_per_forward": round(statistics.fmean(t.ms / max(1, t.forward_passes) for t in warm), 2) if warm else None,
        "shown": sum(t.shown for t in warm),
    }


def render(result: dict[str, Any]) -> str:
    s = result["summary"]
    return "\n".join([
        f"# dglsp bench edit: {result['file']}, regions of {result['region_lines']} lines, model {result['model']} "
        f"on {result['device']}, load average {result['load_average']}",
        f"cold (first after loading): {s['cold_ms']} ms",
        f"warm over {result['runs']} places: p50 {s['warm_p50_ms']} ms, p95 {s['warm_p95_ms']} ms, mean "
        f"{s['warm_mean_ms']} ms",
        f"per proposal: {s['forward_passes']} forward passes in {s['canvases']} canvases ({s['ms_per_forward']} ms "
        f"each), region {s['region_tokens']} tokens ({s['generated_tokens']} written), prompt {s['prompt_tokens']} "
        f"tokens; an edit shown in "
        f"{s['shown']} of {result['runs']}",
        f"seed_canvas {result['next_edit']['seed_canvas']}, policy {result['next_edit']['policy']}, max_steps "
        f"{result['next_edit']['max_steps']}",
    ])


def run(args: argparse.Namespace) -> int:
    """`dglsp bench edit` (options: `dglsp.tools.options.add_bench_arguments`)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from dglsp.completion.completer import Completer
    from dglsp.completion.next_edit import NextEditor
    from dglsp.model.loading import load_engine
    from dglsp.tools.eval_edits import device_name

    settings = bench_settings(args)
    file = args.files[0] if args.files else Path(sysconfig.get_paths()["stdlib"]) / "argparse.py"
    source = file.read_text(encoding="utf-8")
    path = file.name
    moments = places(source, args.prompts + 1, args.radius, path)
    bundle, engine = load_engine(settings)
    editor = NextEditor(Completer(bundle, engine))
    cold = measure(editor, moments[0], settings, path)
    warm = [measure(editor, place, settings, path) for place in moments[1:]]
    result = {"command": "dglsp " + " ".join(sys.argv[1:]), "file": str(file), "model": str(bundle.path),
              "device": device_name(bundle.device), "region_lines": 2 * args.radius + 1, "runs": len(warm),
              "load_average": [round(x, 2) for x in os.getloadavg()], "next_edit": asdict(settings.next_edit),
              "summary": summary(cold, warm), "cold": asdict(cold), "warm": [asdict(t) for t in warm],
              "lines": [place.line + 1 for place in moments]}
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0
