"""`dglsp bench --draft`: long drafts, block diffusion against token-by-token decoding, same weights.

Two measurements, both decodings in one run on the same prompts:

* speed — drafts forced to 128/256/512 tokens (EOS ignored, so both decodings produce the same
  number of tokens): tokens per second, time to the first committed canvas (for token-by-token:
  time until the same number of tokens exists), forward passes;
* quality — HumanEval function bodies drafted from the signature and docstring (the original
  HumanEval prompt, which is the prefix of each single-line-infilling problem at line 0), cut at
  the end of the function's block by the same post-processing the server uses, and executed
  against the tests with `humaneval.run_program` (subprocess, timeout, resource limits).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch

from dglsp.completion.completer import Completer
from dglsp.completion.prompt import CursorContext, PromptBuilder
from dglsp.config import EngineSettings, SamplerSettings, Settings
from dglsp.model.engine import Engine
from dglsp.model.loading import load_engine
from dglsp.tools.humaneval import Problem, load_problems, program_for, run_program

LENGTHS = (128, 256, 512)


@dataclass
class SpeedRow:
    decoding: str
    tokens: int
    runs: int
    tokens_per_s: float
    first_canvas_ms: float
    total_ms: float
    forward_passes: float


@dataclass
class QualityRow:
    decoding: str
    problems: int
    passed: int
    forward_passes: float
    ms_per_draft: float

    @property
    def pass_rate(self) -> float:
        return self.passed / self.problems if self.problems else 0.0


def body_problems(limit: int) -> list[Problem]:
    """One problem per HumanEval task: the signature and docstring, with the body to draft."""
    line_zero = [p for p in load_problems("single-line") if p.task_id.endswith("/L0")]
    if limit and limit < len(line_zero):
        stride = len(line_zero) / limit
        line_zero = [line_zero[int(i * stride)] for i in range(limit)]
    return [replace(p, suffix="\n") for p in line_zero]


def speed(engine: Engine, builder: PromptBuilder, prompts: list[str], length: int, sampler: SamplerSettings
          ) -> list[SpeedRow]:
    canvas_length = sampler.canvas_length or engine.defaults.canvas_length
    canvases = max(1, length // canvas_length)
    forced = engine.schedule(replace(sampler, decoding="diffusion", max_canvases=canvases))
    token_by_token = engine.schedule(replace(sampler, decoding="autoregressive", canvas_length=canvas_length,
                                             max_canvases=canvases))
    diffusion, autoregressive = [], []
    for prompt in prompts:
        ids = builder.build(CursorContext(prompt, "\n", "solution.py", "python")).ids
        commits: list[float] = []

        def on_canvas(step: int, token_ids: list[int], committed: bool, commits: list[float] = commits) -> None:
            if committed:
                commits.append(time.perf_counter())

        begin = time.perf_counter()
        result = engine.generate(ids, forced, on_canvas=on_canvas)
        diffusion.append((result, (commits[0] - begin) * 1000 if commits else result.stats.total_ms))
        baseline = engine.generate(ids, token_by_token)
        per_token = (baseline.stats.total_ms - baseline.stats.prefill_ms) / max(1, len(baseline.token_ids))
        first_ms = baseline.stats.prefill_ms + per_token * min(canvas_length, len(baseline.token_ids))
        autoregressive.append((baseline, first_ms))
    return [_speed_row("block diffusion", canvases * canvas_length, diffusion),
            _speed_row("token-by-token", canvases * canvas_length, autoregressive)]


def _speed_row(decoding: str, tokens: int, runs: list) -> SpeedRow:
    total_tokens = sum(len(r.token_ids) for r, _ in runs)
    total_ms = sum(r.stats.total_ms for r, _ in runs)
    return SpeedRow(decoding, tokens, len(runs), total_tokens / (total_ms / 1000) if total_ms else 0.0,
                    statistics.mean(first for _, first in runs), total_ms / len(runs),
                    statistics.mean(r.stats.forward_passes for r, _ in runs))


def quality(completer: Completer, settings: Settings, problems: list[Problem], timeout_s: float
            ) -> list[QualityRow]:
    rows = []
    for decoding in ("block diffusion", "token-by-token"):
        row = QualityRow(decoding, 0, 0, 0.0, 0.0)
        for problem in problems:
            context = CursorContext(problem.prompt, problem.suffix, "solution.py", "python")
            begin = time.perf_counter()
            if decoding == "block diffusion":
                suggestion = completer.complete(context, settings, draft=True)
                text, passes = suggestion.text or "", suggestion.stats.forward_passes
            else:
                text, passes = _autoregressive_draft(completer, settings, context)
            row.ms_per_draft += (time.perf_counter() - begin) * 1000
            row.forward_passes += passes
            row.problems += 1
            row.passed += run_program(program_for(problem, text), timeout_s).passed
        row.ms_per_draft /= max(1, row.problems)
        row.forward_passes /= max(1, row.problems)
        rows.append(row)
    return rows


def _autoregressive_draft(completer: Completer, settings: Settings, context: CursorContext) -> tuple[str, int]:
    from dglsp.completion.postprocess import postprocess

    prompt = PromptBuilder(completer.tokenizer, completer.format, settings.context).build(context)
    schedule = completer.backend.schedule(replace(settings.sampler, decoding="autoregressive",
                                                  canvas_length=settings.draft.max_tokens))
    result = completer.backend.generate(prompt.ids, schedule)
    post = replace(settings.postprocess, multiline=True, mid_block=True, max_lines=settings.draft.max_lines)
    return postprocess(completer.decode(result.token_ids), prompt.context, post) or "", result.stats.forward_passes


def render(speed_rows: list[SpeedRow], quality_rows: list[QualityRow], device: str) -> str:
    lines = [f"# dglsp bench --draft ({device})", "",
             "| draft tokens | decoding | tokens/s | first canvas ms | total ms | forward passes |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for row in speed_rows:
        lines.append(f"| {row.tokens} | {row.decoding} | {row.tokens_per_s:.0f} | {row.first_canvas_ms:.0f} | "
                     f"{row.total_ms:.0f} | {row.forward_passes:.0f} |")
    by_length: dict[int, dict[str, SpeedRow]] = {}
    for row in speed_rows:
        by_length.setdefault(row.tokens, {})[row.decoding] = row
    for tokens, pair in by_length.items():
        if len(pair) == 2 and pair["token-by-token"].tokens_per_s:
            ratio = pair["block diffusion"].tokens_per_s / pair["token-by-token"].tokens_per_s
            lines.append(f"\n{tokens} tokens: block diffusion is {ratio:.2f}x the tokens/s of token-by-token")
    if quality_rows:
        lines += ["", "| HumanEval bodies | decoding | pass rate | forward passes | ms per draft |",
                  "| ---: | --- | ---: | ---: | ---: |"]
        for quality_row in quality_rows:
            lines.append(f"| {quality_row.problems} | {quality_row.decoding} | "
                         f"{quality_row.passed}/{quality_row.problems} ({quality_row.pass_rate:.1%}) | "
                         f"{quality_row.forward_passes:.0f} | {quality_row.ms_per_draft:.0f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`dglsp bench --draft` (options: `dglsp.tools.options.add_bench_arguments`)."""
    bundle, engine = load_engine(EngineSettings(model=args.model, device=args.device, threads=args.threads))
    options: dict = {"sampler": {"seed": args.seed}, "draft": {"max_tokens": args.max_tokens}}
    if args.steps:
        options["sampler"]["max_steps"] = args.steps
    settings, warnings = Settings().updated(options)
    if warnings:
        raise SystemExit("; ".join(warnings))
    canvas_length = engine.defaults.canvas_length  # the model's config's canvas_length
    settings = replace(settings, sampler=replace(settings.sampler, canvas_length=canvas_length))
    completer = Completer(bundle, engine)
    # Speed is measured at fixed lengths: an engine that does not stop at EOS (like vLLM's ignore_eos).
    forced = Engine(engine.model, bundle)
    forced.eos_ids = frozenset()
    builder = PromptBuilder(bundle.tokenizer, completer.format, settings.context)
    problems = body_problems(max(args.prompts, args.problems))
    prompts = [p.prompt for p in problems[: args.prompts]]
    speed_rows: list[SpeedRow] = []
    for length in (int(x) for x in args.lengths.split(",")):
        speed_rows += speed(forced, builder, prompts, length, settings.sampler)
    quality_rows = quality(completer, settings, problems[: args.problems], args.timeout) if args.problems else []
    device = f"{bundle.device}, {torch.get_num_threads()} threads, model {bundle.path.name}"
    if args.json:
        print(json.dumps({"device": device, "speed": [asdict(r) for r in speed_rows],
                          "quality": [{**asdict(r), "pass_rate": r.pass_rate} for r in quality_rows]}, indent=2))
    else:
        print(render(speed_rows, quality_rows, device))
    return 0

