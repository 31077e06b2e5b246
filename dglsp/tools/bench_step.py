"""`dglsp bench step`: where a denoising step's time goes, against the floor the hardware sets.

Three passes are timed on the loaded model, as serving runs them: one denoising step of a ghost-text canvas
after a cached prompt, the encoder's one-token pass (token-by-token and verified decoding are made of them),
and one prefill chunk. Each is split by phase with torch's profiler: matrix products, attention, sampling math
(the step's sampling and acceptance, timed alone on the step's logits) and the rest (norms, rotary
embeddings, casts, small ops: dispatch overhead). The *floor* is the same matrix products, with the same
shapes and dtype, run back to back with nothing else: what the pass would cost if it were only its matrix
products. The ratio pass / floor is the number to drive down; the table is printed before and after each
change of the hot path.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from dglsp.config import EngineSettings, SamplerSettings, Settings
from dglsp.model.diffusion import SAMPLERS, entropy_bounded_accept
from dglsp.model.engine import Engine
from dglsp.model.loading import load_engine
from dglsp.model.schedule import Sampling

MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::_grouped_mm", "aten::linear_backward", "aten::baddbmm"}
ATTENTION = {"aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
             "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_flash_attention"}
REPEATS = 5
PRODUCTS: dict[str, Callable[..., torch.Tensor]] = {"aten::addmm": torch.addmm, "aten::bmm": torch.bmm,
                                                    "aten::mm": torch.mm}


def profile_pass(run: Callable[[], object], repeats: int) -> tuple[float, dict[str, float], list]:
    """Wall ms per call (median), self CPU ms per call by phase, and the matrix products' (shapes, dtype, count)."""
    run()  # warm: kernel choice and allocation are not the pass
    walls = []
    for _ in range(repeats):
        begin = time.perf_counter()
        run()
        walls.append((time.perf_counter() - begin) * 1000)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(repeats):
            run()
    phases: dict[str, float] = defaultdict(float)
    products = []
    for event in prof.key_averages(group_by_input_shape=True):
        phase = "matmul" if event.key in MATMUL else "attention" if event.key in ATTENTION else "rest"
        phases[phase] += event.self_cpu_time_total / 1000 / repeats
        if phase == "matmul" and event.input_shapes and event.key in ("aten::mm", "aten::addmm", "aten::bmm"):
            products.append((event.key, event.input_shapes, event.count / repeats))
    return statistics.median(walls), dict(phases), products


def floor_ms(products: list, dtype: torch.dtype, repeats: int = REPEATS) -> float:
    """The matrix products alone, back to back, with the pass's shapes and dtype: ms per pass."""
    calls: list[Callable[[], torch.Tensor]] = []
    for name, shapes, count in products:
        operands = [torch.randn(*shape, dtype=dtype) for shape in shapes[:3 if name == "aten::addmm" else 2]]
        operation = PRODUCTS.get(name, torch.mm)
        calls += [functools.partial(operation, *operands)] * round(count)
    for call in calls:
        call()
    samples = []
    for _ in range(repeats):
        begin = time.perf_counter()
        for call in calls:
            call()
        samples.append((time.perf_counter() - begin) * 1000)
    return statistics.median(samples)


def sampling_ms(engine: Engine, canvas: int, sampling: str, repeats: int = 20) -> float:
    """The sampling math of one step alone: tempering, sampling with its entropy, and acceptance."""
    logits = torch.randn(1, canvas, engine.vocab_size)
    generator = torch.Generator().manual_seed(0)

    def run() -> None:
        tempered = logits / 0.5
        _, entropy = SAMPLERS[sampling](tempered, generator)
        entropy_bounded_accept(entropy, 4.0)
        torch.argmax(tempered, dim=-1)

    run()
    begin = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - begin) * 1000 / repeats


def row(name: str, wall: float, phases: dict[str, float], sampling: float, floor: float) -> dict:
    rest = max(0.0, wall - phases.get("matmul", 0.0) - phases.get("attention", 0.0) - sampling)
    return {"pass": name, "ms": round(wall, 2), "matmul_ms": round(phases.get("matmul", 0.0), 2),
            "attention_ms": round(phases.get("attention", 0.0), 2), "sampling_ms": round(sampling, 2),
            "rest_ms": round(rest, 2), "floor_ms": round(floor, 2), "ratio": round(wall / floor, 2) if floor else None}


def measure(engine: Engine, prompt_tokens: int, canvas: int, sampling: Sampling) -> list[dict]:
    """The three passes' rows (see the module docstring)."""
    prompt = torch.randint(300, engine.vocab_size, (prompt_tokens,), generator=torch.Generator().manual_seed(0))
    ids = prompt.tolist()
    dtype = next(engine.model.parameters()).dtype
    schedule = replace(engine.schedule(SamplerSettings(canvas_length=canvas, max_steps=1, seed=0,
                                                       decoding="diffusion")), sampling=sampling)
    engine.generate(ids, schedule, cache_key="bench")  # the prompt is cached: a step is what is timed
    rows = []
    with torch.inference_mode():
        cache, _ = engine.prepare_prompt(ids, _stats(), cache_key="bench")
        assert cache is not None
        canvas_ids = torch.randint(0, engine.vocab_size, (1, canvas))
        exact = schedule.exact  # the passes serving runs with this sampling
        step = lambda: engine.decoder_logits(cache, canvas_ids, exact=exact)  # noqa: E731
        wall, phases, products = profile_pass(step, REPEATS)
        sampled = sampling_ms(engine, canvas, sampling)
        rows.append(row(f"denoising step (canvas {canvas}, {prompt_tokens} cached)", wall + sampled, phases, sampled,
                        floor_ms(products, dtype)))
        token = [ids[-1]]

        def one_token() -> None:
            work, _ = engine.prepare_prompt(ids, _stats(), cache_key="bench")
            assert work is not None
            engine.lm_logits(engine.encode(work, token, exact)[:, -1])

        wall, phases, products = profile_pass(one_token, REPEATS)
        rows.append(row("encoder one-token pass", wall, phases, 0.0, floor_ms(products, dtype)))
        chunk = ids[:256]
        wall, phases, products = profile_pass(lambda: engine.encode(engine.new_cache(), chunk), REPEATS)
        rows.append(row("prefill chunk (256 tokens)", wall, phases, 0.0, floor_ms(products, dtype)))
    return rows


def _stats():
    from dglsp.model.backend import GenerationStats

    return GenerationStats()


def render(result: dict) -> str:
    lines = [f"# dglsp bench step: {result['model']} ({result['dtype']}, {result['threads']} threads, sampling "
             f"{result['sampling']}, lean passes {result['lean_passes']}, load average {result['load_average']})", "",
             "| pass | ms | matmul | attention | sampling | rest | floor | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for item in result["rows"]:
        lines.append(f"| {item['pass']} | {item['ms']} | {item['matmul_ms']} | {item['attention_ms']} | "
                     f"{item['sampling_ms']} | {item['rest_ms']} | {item['floor_ms']} | {item['ratio']} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`dglsp bench step` (options: `dglsp.tools.options.add_bench_arguments`)."""
    settings, warnings = Settings().updated(json.loads(args.settings or "{}"))  # its latency: e.g. lean_passes off
    for warning in warnings:
        print(f"# {warning}", file=sys.stderr)
    settings = replace(settings, engine=EngineSettings(model=args.model, device="cpu", threads=args.threads))
    bundle, engine = load_engine(settings)
    sampling = args.sampling or engine.sampling
    rows = measure(engine, args.prefill_tokens, int(args.canvas_lengths.split(",")[0]), sampling)
    result = {"model": bundle.path.name, "dtype": str(next(engine.model.parameters()).dtype).removeprefix("torch."),
              "threads": torch.get_num_threads(), "sampling": sampling, "lean_passes": settings.latency.lean_passes,
              "load_average": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0
