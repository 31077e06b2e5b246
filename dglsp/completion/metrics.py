"""Latency counters the server keeps and `dglsp.stats` reports (read by `dglsp bench`).

Plain counters, no LSP and no tensors: where the forward passes went (suggestions shown,
work thrown away, work done ahead), how often typing-through answered, and the process's memory.
Why requests ended empty is counted per `Reason` in `outcome.OutcomeCounts`.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass


@dataclass
class LatencyMetrics:
    requests: int = 0  # automatic completion requests
    shown: int = 0  # requests answered with a suggestion (model or typing-through)
    typing_through_served: int = 0
    forward_passes_shown: int = 0  # spent on suggestions that reached the editor
    forward_passes_empty: int = 0  # finished runs whose output post-processing threw away
    forward_passes_wasted: int = 0  # spent on work cancelled before it could be shown
    forward_passes_prefetch: int = 0  # spent computing the suggestion after an accepted one
    prefetch_runs: int = 0
    prefill_tokens: int = 0  # prompt tokens encoded ahead, where the editor's cursor went
    deadline_hits: int = 0
    hidden_by_gate: int = 0  # suggestions post-processing kept but the confidence gate hid
    finished_with_text: int = 0  # finished runs that post-processing kept (shown, or hidden by the gate)

    @property
    def gate_hidden_share(self) -> float:
        """The share of suggestions that survived post-processing but fell below `postprocess.min_confidence`."""
        return self.hidden_by_gate / self.finished_with_text if self.finished_with_text else 0.0

    def count_run(self, forward_passes: int, outcome: str) -> None:
        """`outcome`: shown | empty | wasted | prefetch."""
        field = f"forward_passes_{outcome}"
        setattr(self, field, getattr(self, field) + forward_passes)

    def as_dict(self) -> dict:
        return {**asdict(self), "gate_hidden_share": round(self.gate_hidden_share, 4)}


def memory_mb() -> dict[str, float]:
    """Resident memory of this process in MiB now (psutil), and its peak (getrusage: KiB on Linux)."""
    import psutil  # a dependency of accelerate, which loads the weights

    return {"rss_mb": psutil.Process().memory_info().rss / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
