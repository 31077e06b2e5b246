"""The confidence gate's calibration: precision against coverage, from `dglsp eval --calibrate` runs.

Each calibration point is one request: the confidence of the text the pipeline would show (None when it
shows nothing) and whether that text passed. For a threshold t, coverage is the share of requests that get a
suggestion (shown, and confidence >= t) and precision the share of those that pass. The default threshold is
where precision rises most per unit of coverage given up: the largest (precision gain) / (coverage lost) over
thresholds that keep at least half of the ungated coverage.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GatePoint:
    threshold: float
    coverage: float
    precision: float
    shown: int


def curve(points: list[list], thresholds: list[float] | None = None) -> list[GatePoint]:
    """Precision and coverage at each threshold (by default: 0 and every distinct confidence seen)."""
    scored = [(c, bool(p)) for c, p, *_ in points if c is not None]
    candidates = thresholds if thresholds is not None else sorted({0.0, *(c for c, _ in scored)})
    out = []
    for threshold in candidates:
        kept = [passed for confidence, passed in scored if confidence >= threshold]
        precision = sum(kept) / len(kept) if kept else 0.0
        out.append(GatePoint(threshold, len(kept) / len(points) if points else 0.0, precision, len(kept)))
    return out


def pick_threshold(points: list[GatePoint], min_coverage_share: float = 0.5) -> GatePoint:
    """The threshold with the best precision gain per coverage lost, keeping `min_coverage_share` of coverage."""
    base = next(point for point in points if point.threshold == 0.0)
    best, best_gain = base, 0.0
    for point in points:
        lost = base.coverage - point.coverage
        if lost <= 0 or point.coverage < base.coverage * min_coverage_share:
            continue
        gain = (point.precision - base.precision) / lost
        if gain > best_gain:
            best, best_gain = point, gain
    return best


def load_points(files: list[Path]) -> dict[str, list[list]]:
    """{"decoding benchmark (file stem)": points} from `dglsp eval --calibrate --json` outputs."""
    series: dict[str, list[list]] = {}
    for file in files:
        result = json.loads(file.read_text())
        for decoding, by_benchmark in result.get("calibration", {}).items():
            for benchmark, points in by_benchmark.items():
                series.setdefault(f"{decoding} {benchmark} ({file.stem})", []).extend(points)
    if not series:
        raise SystemExit("dglsp eval --plot-gate: no calibration points (run dglsp eval --calibrate --json first)")
    return series


def pooled(series: dict[str, list[list]]) -> dict[str, list[list]]:
    """Each decoding's points over all its benchmarks and runs, where it has more than one series: the
    threshold a server uses has to serve every kind of request at once."""
    by_decoding: dict[str, list[str]] = {}
    for name in series:
        by_decoding.setdefault(name.split(" ", 1)[0], []).append(name)
    return {f"{decoding} pooled": [point for name in names for point in series[name]]
            for decoding, names in by_decoding.items() if len(names) > 1}


def plot(series: dict[str, list[list]], png: Path) -> dict[str, dict]:
    """Draw every series' precision-coverage curve into `png`; return each one's chosen threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    chosen: dict[str, dict] = {}
    for name, points in series.items():
        line = curve(points)
        axes.plot([p.coverage for p in line], [p.precision for p in line], marker=".", label=name)
        pick = pick_threshold(line)
        axes.annotate(f"t={pick.threshold:.2f}", (pick.coverage, pick.precision), textcoords="offset points",
                      xytext=(4, 4), fontsize=8)
        chosen[name] = {"threshold": round(pick.threshold, 4), "coverage": round(pick.coverage, 4),
                        "precision": round(pick.precision, 4), "ungated": _ungated(line)}
    axes.set_xlabel("coverage (share of requests shown a suggestion)")
    axes.set_ylabel("precision (share of shown suggestions that pass)")
    axes.set_title("dglsp confidence gate: precision against coverage")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(png)
    plt.close(figure)
    return chosen


def _ungated(line: list[GatePoint]) -> dict:
    base = next(point for point in line if point.threshold == 0.0)
    return {"coverage": round(base.coverage, 4), "precision": round(base.precision, 4)}


def run(args: argparse.Namespace) -> int:
    """`dglsp eval --plot-gate EVAL_JSON... PNG`."""
    *files, png = args.plot_gate
    if not files:
        raise SystemExit("dglsp eval --plot-gate: give one or more eval JSON files, then the PNG to write")
    series = load_points(files)
    chosen = plot({**series, **pooled(series)}, png)
    print(json.dumps(chosen, indent=2) if args.json else "\n".join(
        f"{name}: threshold {c['threshold']} keeps coverage {c['coverage']:.3f} (of {c['ungated']['coverage']:.3f})"
        f" at precision {c['precision']:.3f} (ungated {c['ungated']['precision']:.3f})" for name, c in chosen.items()))
    return 0
