"""The table of `scripts/compare_training.sh`: each arm's held-out loss against the CPU-hours it spent.

Reads each arm's train.log (held-out lines) and its export's dglsp.json (CPU-hours); the first held-out loss is
the shared starting point (the shipped weights, measured on the arm's own held-out batches).
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
    last = points[-1] if points else {"loss": start, "canvas_middle": None, "ar_middle": None}
    return {"arm": directory.name, "steps": stretch["steps"] - stretch["from_step"], "cpu_hours": cpu_hours,
            "start": start, "end": last["loss"], "canvas_middle": last.get("canvas_middle"),
            "ar_middle": last.get("ar_middle"),
            "drop_per_cpu_hour": (start - last["loss"]) / cpu_hours if cpu_hours else 0.0}


def main(root: Path) -> None:
    rows = [arm_row(d) for d in sorted(root.iterdir()) if (d / "export" / "dglsp.json").is_file()]
    print("| arm | steps | CPU-hours | held-out loss start → end | canvas middle | AR middle | drop per CPU-hour |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r['steps']} | {r['cpu_hours']:.3f} | {r['start']:.4f} → {r['end']:.4f} | "
              f"{r['canvas_middle']} | {r['ar_middle']} | {r['drop_per_cpu_hour']:.3f} |")
    (root / "table.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
