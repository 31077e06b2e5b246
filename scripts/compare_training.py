"""The table of `scripts/compare_training.sh`: each arm's held-out losses against the CPU-hours it spent.

Reads each arm's train.log (held-out lines) and its export's dglsp.json (CPU-hours). The logged total is
canvas + ar_weight x AR, so arms with another AR weight are compared on the unweighted sum canvas + AR and on
its parts on the middle tokens: canvas middle (what diffusion decoding needs), AR middle (what token-by-token
and verified decoding need). The start is the shipped weights on the same held-out batches: the baseline's.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path


def arm_row(directory: Path) -> dict:
    log = (directory / "train.log").read_text()
    start = float(re.search(r"held-out loss of the resumed weights: ([0-9.]+)", log).group(1))
    points = [ast.literal_eval(m.group(1)) for m in re.finditer(r"held-out step \d+: (\{.*\})", log)]
    training = json.loads((directory / "export" / "dglsp.json").read_text())["training"]
    stretch = training["log"][-1]
    cpu_hours = training["cpu_hours"] - (training["log"][-2]["cpu_hours"] if len(training["log"]) > 1 else 0)
    last = points[-1]
    return {"arm": directory.name, "steps": stretch["steps"] - stretch["from_step"], "cpu_hours": cpu_hours,
            "start": start, "end": last["canvas"] + last["ar"], "canvas_middle": last["canvas_middle"],
            "ar_middle": last["ar_middle"]}


def main(root: Path) -> None:
    rows = [arm_row(d) for d in sorted(root.iterdir()) if (d / "export" / "dglsp.json").is_file()]
    start = next(r["start"] for r in rows if r["arm"] == "baseline")
    print("| arm | steps | CPU-hours | canvas + AR, held out (start → end) | canvas middle | AR middle | "
          "drop per CPU-hour |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        r["drop_per_cpu_hour"] = (start - r["end"]) / r["cpu_hours"] if r["cpu_hours"] else 0.0
        print(f"| {r['arm']} | {r['steps']} | {r['cpu_hours']:.3f} | {start:.4f} → {r['end']:.4f} | "
              f"{r['canvas_middle']:.4f} | {r['ar_middle']:.4f} | {r['drop_per_cpu_hour']:.2f} |")
    (root / "table.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
