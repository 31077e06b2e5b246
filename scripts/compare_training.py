"""The table of `scripts/compare_training.sh`: each arm's held-out losses against the CPU-hours it spent.

Reads each arm's train.log (held-out lines) and its export's dglsp.json (CPU-hours). The logged total is
canvas + ar_weight x AR, so arms with another AR weight are compared on the unweighted sum canvas + AR and on
its parts on the middle tokens: canvas middle (what diffusion decoding needs), AR middle (what token-by-token
and verified decoding need). The start is the shipped weights on the same held-out batches: the baseline's.
Arms from scratch (the shape comparison) have no start: their ends at equal CPU time are the comparison.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path


def arm_row(directory: Path) -> dict:
    log = (directory / "train.log").read_text()
    resumed = re.search(r"held-out loss of the resumed weights: ([0-9.]+)", log)  # None: from scratch
    points = [ast.literal_eval(m.group(1)) for m in re.finditer(r"held-out step \d+: (\{.*\})", log)]
    training = json.loads((directory / "export" / "dglsp.json").read_text())["training"]
    stretch = training["log"][-1]
    cpu_hours = training["cpu_hours"] - (training["log"][-2]["cpu_hours"] if len(training["log"]) > 1 else 0)
    last = points[-1]
    return {"arm": directory.name, "steps": stretch["steps"] - stretch["from_step"], "cpu_hours": cpu_hours,
            "start": float(resumed.group(1)) if resumed else None, "end": last["canvas"] + last["ar"],
            "canvas_middle": last["canvas_middle"],
            "ar_middle": last["ar_middle"]}


def main(root: Path) -> None:
    rows = [arm_row(d) for d in sorted(root.iterdir()) if (d / "export" / "dglsp.json").is_file()]
    baseline = next((r["start"] for r in rows if r["arm"] == "baseline"), None)
    print("| arm | steps | CPU-hours | canvas + AR, held out (start → end) | canvas middle | AR middle | "
          "drop per CPU-hour |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        # Arms from scratch have no common start to measure a drop from: compare their ends at equal CPU time.
        start = baseline if baseline is not None and r["start"] is not None else r["start"]
        r["drop_per_cpu_hour"] = (start - r["end"]) / r["cpu_hours"] if start and r["cpu_hours"] else None
        began = f"{start:.4f}" if start else "scratch"
        drop = f"{r['drop_per_cpu_hour']:.2f}" if r["drop_per_cpu_hour"] is not None else "—"
        print(f"| {r['arm']} | {r['steps']} | {r['cpu_hours']:.3f} | {began} → {r['end']:.4f} | "
              f"{r['canvas_middle']:.4f} | {r['ar_middle']:.4f} | {drop} |")
    (root / "table.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
