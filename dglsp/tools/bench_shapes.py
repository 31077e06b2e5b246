"""`dglsp bench --random-weights CONFIG.json`: what a model of these shapes costs, before downloading it.

It builds the model straight on the device with random weights (bf16 on CUDA; `--scaled` shrinks the published
26B-A4B shapes in `dglsp/tools/data/diffusiongemma-26B-A4B.json` for a CPU), then times, through the serving
engine: a cold prefill of `--prefill-tokens` (2k) tokens, one denoising step at canvas 32 and at 256, eager and
(on CUDA) with the compiled decoder step, and reports peak memory. Random weights never converge, so every step
runs: the numbers are an upper bound per step. With `--oom-check` it also fills the device and checks that a
generation that runs out of memory is retried with smaller canvases and then reported, and that the engine
serves again once memory is back. One JSON line is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import DiffusionGemmaForBlockDiffusion

from dglsp.completion.metrics import memory_mb
from dglsp.config import LatencySettings, SamplerSettings
from dglsp.errors import DeviceOutOfMemoryError
from dglsp.model.backend import ModelBundle
from dglsp.model.engine import Engine
from dglsp.model.loading import pick_device, pick_dtype
from dglsp.model.schedule import ModelDefaults
from dglsp.tools import modelzoo

REPEATS = 3


def build(config_file: Path, scaled: bool, device: torch.device, dtype: torch.dtype) -> DiffusionGemmaForBlockDiffusion:
    """The model with random weights, allocated on `device` in `dtype` from the start (no host copy)."""
    config = modelzoo.hub_config(config_file, scaled=scaled)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = DiffusionGemmaForBlockDiffusion(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def engine_for(model: DiffusionGemmaForBlockDiffusion, device: torch.device, compiled: bool) -> Engine:
    tokenizer = modelzoo.gemma4_like_tokenizer(["def f(x):\n    return x + 1\n"] * 4, merges_vocab=300)
    bundle = ModelBundle(tokenizer, {}, Path("random-weights"), device, ModelDefaults(canvas_length=32))
    return Engine(model, bundle, LatencySettings(prefix_cache=False, compile_decoder="on" if compiled else "off"))


def time_prefill(engine: Engine, tokens: int, vocab: int) -> float:
    from dglsp.model.backend import GenerationStats

    prompt = torch.randint(300, vocab, (tokens,)).tolist()
    samples = []
    for _ in range(REPEATS):
        stats = GenerationStats()
        _sync(engine.device)
        engine.prepare_prompt(prompt, stats)
        _sync(engine.device)
        samples.append(stats.prefill_ms)
    return statistics.median(samples[1:] if len(samples) > 1 else samples)


def time_step(engine: Engine, canvas: int, prompt_tokens: int, vocab: int, steps: int) -> float:
    """Milliseconds per denoising step at `canvas` (after one warm-up generation of the same shape)."""
    prompt = torch.randint(300, vocab, (prompt_tokens,)).tolist()
    schedule = engine.schedule(SamplerSettings(canvas_length=canvas, max_steps=steps, seed=0, decoding="diffusion",
                                               settle_steps=0, confidence_threshold=1e-12))
    engine.generate(prompt, schedule)  # warm-up: kernel choice, compilation, allocation
    _sync(engine.device)
    generation = engine.generate(prompt, replace(schedule, seed=1))
    return generation.stats.ms_per_step


def oom_check(engine: Engine, vocab: int) -> dict:
    """Fill the device, ask for a generation (it must fail cleanly, after retries), free it, ask again."""
    if engine.device.type != "cuda":
        return {"skipped": "CUDA only"}
    free, _ = torch.cuda.mem_get_info(engine.device)
    ballast = torch.empty(int(free * 0.98), dtype=torch.uint8, device=engine.device)
    prompt = torch.randint(300, vocab, (1024,)).tolist()
    outcome = "no out-of-memory error"
    try:
        engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=256, max_steps=2, seed=0)))
    except DeviceOutOfMemoryError as exc:
        outcome = f"reported: {exc}"
    del ballast
    torch.cuda.empty_cache()
    after = engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=32, max_steps=2, seed=0)))
    return {"under_pressure": outcome, "serves_after": after.stats.steps == 2}


def run(args: argparse.Namespace) -> int:
    """`dglsp bench --random-weights CONFIG.json` (options: `dglsp.tools.options.add_bench_arguments`)."""
    device = pick_device(args.device)
    dtype = pick_dtype("auto", device)
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    begin = time.perf_counter()
    model = build(args.random_weights, args.scaled, device, dtype)
    build_s = time.perf_counter() - begin
    vocab = model.config.get_text_config().vocab_size
    result: dict = {
        "config": str(args.random_weights), "scaled": args.scaled, "device": _device_name(device), "dtype": str(dtype),
        "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3), "build_s": round(build_s, 1),
    }
    eager = engine_for(model, device, compiled=False)
    result["prefill_ms"] = {str(args.prefill_tokens): round(time_prefill(eager, args.prefill_tokens, vocab), 1)}
    context = min(args.prefill_tokens, 1024)
    canvases = [int(length) for length in args.canvas_lengths.split(",")]
    for mode in ("eager", "compiled"):
        if mode == "compiled" and device.type != "cuda":
            result["step_ms_compiled"] = "skipped: the compiled decoder step is CUDA only"
            continue
        engine = eager if mode == "eager" else engine_for(model, device, compiled=True)
        result[f"step_ms_{mode}"] = {str(canvas): round(time_step(engine, canvas, context, vocab, args.steps or 4), 2)
                                     for canvas in canvases}
    result["sampling"] = eager.sampling
    if args.oom_check:
        result["oom"] = oom_check(eager, vocab)
    result["peak_memory_gb"] = _peak_gb(device)
    print(json.dumps(result))
    return 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    return round(memory_mb()["peak_rss_mb"] / 1024, 2)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
