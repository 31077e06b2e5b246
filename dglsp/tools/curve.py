"""The training curve: held-out loss and pass@1 against CPU-hours, from a model's training log.

`dglsp eval --plot-training [MODEL_DIR] PNG` reads `training.log` from MODEL_DIR's dglsp.json (default: the
embedded model): one row per stretch of training, with its CPU-hours and tokens seen so far, its held-out loss
and, once `dglsp eval --record` has run, its pass@1. Held-out losses are comparable only within one metric:
a row may name its own (`held_out_metric`), and a row that changed the metric may give its starting weights'
loss on the new one (`from_held_out_loss`), so each metric's line starts where the change happened.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CURRENT_METRIC = "canvas + AR, unweighted"
BENCHMARK = "single-line"


def loss_series(log: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """{metric: [(cpu_hours, held-out loss), ...]} in log order."""
    series: dict[str, list[tuple[float, float]]] = {}
    previous: dict | None = None
    for row in log:
        if row.get("held_out_loss") is None:
            continue  # a stretch not exported yet
        line = series.setdefault(row.get("held_out_metric", CURRENT_METRIC), [])
        if not line and previous is not None and "from_held_out_loss" in row:
            line.append((previous["cpu_hours"], row["from_held_out_loss"]))
        line.append((row["cpu_hours"], row["held_out_loss"]))
        previous = row
    return series


def pass_series(log: list[dict], benchmark: str = BENCHMARK) -> dict[str, list[tuple[float, float]]]:
    """{decoding: [(cpu_hours, pass@1), ...]} over the rows that were evaluated."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in log:
        for decoding, rate in row.get("pass_at_1", {}).get(benchmark, {}).items():
            series.setdefault(decoding, []).append((row["cpu_hours"], rate))
    return series


def plot(log: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, pass_axes) = plt.subplots(2, 1, figsize=(7, 6), dpi=120, sharex=True)
    for metric, points in loss_series(log).items():
        loss_axes.plot(*_xy(points), marker="o", label=metric)
    for row in log:
        loss_axes.annotate(f"{row['tokens_seen'] / 1e6:.1f}M tok", (row["cpu_hours"], row["held_out_loss"]),
                           textcoords="offset points", xytext=(4, 4), fontsize=7)
    loss_axes.set_ylabel("held-out loss")
    loss_axes.set_title("dglsp embedded model: the training curve (one point per stretch)")
    for decoding, points in pass_series(log).items():
        # Verified decoding is exact: its line lies on token-by-token's, so it is drawn dashed on top.
        style = {"linestyle": "--", "marker": "x"} if decoding == "verified" else {"marker": "o"}
        pass_axes.plot(*_xy(points), label=decoding, **style)
    pass_axes.set_ylabel(f"HumanEval-Infilling {BENCHMARK} pass@1")
    pass_axes.set_xlabel("CPU-hours of training (all threads)")
    for axes in (loss_axes, pass_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(png)
    plt.close(figure)


def _xy(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [x for x, _ in points], [y for _, y in points]


def run(args: argparse.Namespace) -> int:
    """`dglsp eval --plot-training [MODEL_DIR] PNG`."""
    from dglsp.errors import DglspError
    from dglsp.model.loading import EMBEDDED_MODEL_DIR, read_meta

    *model, png = args.plot_training
    if len(model) > 1:
        raise SystemExit("dglsp eval --plot-training: give at most one model directory, then the PNG to write")
    directory = Path(model[0] if model else EMBEDDED_MODEL_DIR)
    try:
        log = read_meta(directory).get("training", {}).get("log", [])
    except DglspError as exc:
        raise SystemExit(f"dglsp eval --plot-training: {exc}") from None
    if not log:
        raise SystemExit(f"dglsp eval --plot-training: no training log in {directory / 'dglsp.json'}")
    plot(log, png)
    last = log[-1]
    summary = {"stretches": len(log), "cpu_hours": last["cpu_hours"], "tokens_seen": last["tokens_seen"],
               "held_out_loss": last["held_out_loss"], "losses": loss_series(log), "pass_at_1": pass_series(log)}
    print(json.dumps(summary, indent=2) if args.json else
          f"{png}: {len(log)} stretches, {last['cpu_hours']} CPU-hours, {last['tokens_seen']:,} tokens, "
          f"held-out loss {last['held_out_loss']}")
    return 0
