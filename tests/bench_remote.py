"""Benchmark (prints numbers, asserts nothing): the remote backend against the vLLM STAND-IN.

    .venv/bin/python tests/bench_remote.py [--model DIR] [--runs 20]

Measures, through `RemoteBackend` and the stand-in (`remote_standin.py`, 2 ms per denoising step,
4 steps per canvas): time to suggestion (request to the last committed canvas), and how long after
the client closes a stopped stream the server aborts it (the stand-in records the disconnect when
it checks between denoising steps, as vLLM does). Without --model it builds the tiny test model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from remote_standin import StandIn  # noqa: E402

from dglsp.completion.prompt import CursorContext, PromptBuilder, PromptFormat  # noqa: E402
from dglsp.config import RemoteSettings, SamplerSettings, Settings  # noqa: E402
from dglsp.model.remote import RemoteBackend  # noqa: E402
from dglsp.model.schedule import ModelDefaults  # noqa: E402
from dglsp.tools import modelzoo  # noqa: E402


def tiny_model(out: Path) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in sorted(stdlib.glob("*.py"))[:40]]
    tokenizer = modelzoo.train_tokenizer(texts, vocab_size=512)
    return modelzoo.save_model_dir(modelzoo.build_model(modelzoo.PRESETS["tiny"], len(tokenizer)), tokenizer, out)


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(ordered):.1f} ms, p90 {p90:.1f} ms, max {ordered[-1]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model directory whose tokenizer builds the prompts")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    model_dir = Path(args.model) if args.model else tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    builder = PromptBuilder(tokenizer, PromptFormat("fim", dict(modelzoo.SPECIAL_TOKENS)), Settings().context)
    prompt = builder.build(CursorContext("import os\n\ndef add(a, b):\n    ", "\n\nprint(add(1, 2))\n", "calc.py")).ids
    standin = StandIn()
    standin.config.step_s, standin.config.steps_per_canvas, standin.config.canvas_chars = 0.002, 4, 16
    backend = RemoteBackend(RemoteSettings(url=standin.url, reuse_ms=0), tokenizer, ModelDefaults())
    suggestion_ms, abort_ms = [], []
    for _ in range(args.runs):
        standin.config.reply = lambda prompt: "return a + b\n"
        generation = backend.generate(prompt, backend.schedule(SamplerSettings()))
        suggestion_ms.append(generation.stats.total_ms)
        standin.config.reply = lambda prompt: "x = compute(a, b)\n" * 50
        stop = threading.Event()

        def after_first_canvas(stop: threading.Event = stop) -> bool:
            if backend.last_stream is not None and backend.last_stream.chunks:
                stop.set()
            return stop.is_set()

        backend.generate(prompt, backend.schedule(SamplerSettings(max_canvases=8)), after_first_canvas)
        stream, record = backend.last_stream, standin.completions()[-1]
        standin.wait_for(lambda record=record: record.outcome != "pending")
        if record.outcome == "aborted" and stream.closed_at is not None:
            abort_ms.append((record.ended_at - stream.closed_at) * 1000)
    aborted = len(abort_ms)
    print("abort samples (ms):", " ".join(f"{v:.2f}" for v in abort_ms))
    print(f"stand-in, {args.runs} runs: time to suggestion (1 canvas of 4 steps x 2 ms) {percentiles(suggestion_ms)}")
    print(f"stand-in: stopped streams aborted on the server {aborted}/{args.runs}; "
          f"close -> server abort {percentiles(abort_ms) if abort_ms else 'n/a'}")
    backend.close()
    standin.close()


if __name__ == "__main__":
    main()
