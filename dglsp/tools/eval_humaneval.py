"""`dglsp eval`: HumanEval-Infilling pass@1 by execution, for the three decodings of the same weights.

Contract: `run(args)` loads a model directory through `dglsp.model.loading.load_engine` (the serving path),
builds each problem's prompt with `PromptBuilder`, and completes the middle with each named decoding of
`dglsp.model.decoding` (block diffusion through the canvas, verified and speculative decoding, greedy
token-by-token decoding through the encoder), every unset schedule value the model's own. Prompt +
completion + suffix + tests then run in the sandbox of
`dglsp.tools.humaneval`. Rows report pass@1, exact match, forward passes and milliseconds per completion.
Scoring reads outputs from a `Source`: the model (`model_source`), or the outputs an earlier run saved with
`--save-outputs` (`recorded_source`, `--rescore`), so a change to post-processing is measured again on the
same generations without running a model. `--record` writes the result into the model directory: eval.json,
and the pass@1 of its training log and model card (`dglsp.tools.model_card`).

The completion is post-processed the way an editor would insert it, and only that way: cut
at EOS (the engine already does), single-line problems keep the first line, and a
completion that ends mid-line gets its newline back (the suffix starts at a line start).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import cast

import torch

from dglsp.completion.completer import Completer
from dglsp.completion.confidence import confidence, covering_count
from dglsp.completion.edits import Edit
from dglsp.completion.postprocess import FILTERS, postprocess_edit
from dglsp.completion.prompt import CursorContext, PromptBuilder
from dglsp.config import ContextSettings, Decoding, EngineSettings, PostprocessSettings, SamplerSettings
from dglsp.model.decoding import DECODINGS
from dglsp.model.engine import Engine
from dglsp.model.loading import load_engine
from dglsp.model.schedule import Schedule
from dglsp.tools.corpus import HUMAN_EVAL_DIR
from dglsp.tools.humaneval import Problem, check_completion, is_exact, load_problems
from dglsp.tools.model_card import record_eval, write_model_card

PROBLEM_PATH = "solution.py"  # the `<|file|>` header every problem is shown under


@dataclass
class Row:
    decoding: str
    benchmark: str
    problems: int = 0
    passed: int = 0
    exact: int = 0
    forward_passes: float = 0.0
    ms_per_completion: float = 0.0
    steps_per_canvas: float = 0.0  # denoising steps per canvas (per draft, when verified)
    # How many completions averaged each number of denoising steps per canvas (rounded): the stop rule at work.
    steps_distribution: dict[int, int] = field(default_factory=dict)
    accepted_per_verification: float = 0.0  # verified decoding: tokens each encoder check committed
    tokens_per_pass: float = 0.0  # generated tokens per forward pass after the prompt's (all problems pooled)

    @property
    def pass_at_1(self) -> float:
        return self.passed / self.problems if self.problems else 0.0

    @property
    def exact_match(self) -> float:
        return self.exact / self.problems if self.problems else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "pass_at_1": self.pass_at_1, "exact_match": self.exact_match}


# ---------------------------------------------------------------------------------------------------------------
# Post-processing


def postprocess(text: str, problem: Problem, single_line: bool) -> str:
    """Shape the decoded middle as the editor would insert it (see the module docstring)."""
    if single_line:
        text = text.split("\n", 1)[0]
    if problem.prompt.endswith("\n") and not text.endswith("\n"):
        text += "\n"
    return text


def pipeline_completion(decoded: str, problem: Problem, variant: str = "pipeline") -> str:
    """The completion as `dglsp serve` would show it (`postprocess.postprocess_edit`), for a user who
    opened a blank line at the gap: the cursor is on that line, the problem's suffix starts below it.
    `variant` "pipeline-NAME" switches the filter NAME off."""
    skip = frozenset({variant.removeprefix("pipeline-")}) if variant.startswith("pipeline-") else frozenset()
    context = CursorContext(problem.prompt, "\n" + problem.suffix, PROBLEM_PATH, "python")
    edit = postprocess_edit(decoded, context, PostprocessSettings(), skip=skip)
    return (edit.text if isinstance(edit, Edit) else "") + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Running the model


@dataclass(frozen=True)
class EvalOptions:
    benchmarks: tuple[str, ...] = ("single-line", "multi-line")
    decodings: tuple[str, ...] = ("diffusion", "autoregressive", "verified")  # names in the decoding registry
    limit: int = 0
    data_dir: Path = HUMAN_EVAL_DIR
    max_canvases_multi_line: int = 2
    timeout_s: float = 10.0
    seed: int = 0
    pipeline: bool = False  # also score dglsp's post-processing (and each filter switched off) on the same outputs
    calibrate: bool = False  # record (confidence of the pipeline's text, its outcome) per completion


def schedules(engine: Engine, sampler: SamplerSettings, benchmark: str, decoding: str,
              options: EvalOptions) -> Schedule:
    """The schedule a (benchmark, decoding) runs with: the user's overrides, else the model's own; a single line
    gets the line canvas, as ghost text does."""
    if decoding not in DECODINGS:
        raise SystemExit(f"dglsp eval: unknown decoding {decoding!r} (known: {', '.join(DECODINGS)})")
    canvases = 1 if benchmark == "single-line" else options.max_canvases_multi_line
    schedule = engine.schedule(replace(sampler, decoding=cast(Decoding, decoding), max_canvases=canvases,
                                       seed=options.seed))
    line = sampler.line_canvas_length or engine.defaults.line_canvas_length
    return schedule.with_canvas(min(line, schedule.canvas_length)) if line and benchmark == "single-line" \
        else schedule


@dataclass(frozen=True)
class Output:
    """One problem's decoded middle, and what producing it cost."""

    text: str
    forward_passes: float
    ms: float
    steps: int = 0
    canvases: int = 0
    verifications: int = 0
    accepted: int = 0
    logprobs: list[float] | None = None  # per generated token (see completion/confidence.py)
    text_lengths: list[int] | None = None  # [k]: length of the first k tokens' text, trailing space stripped
    tokens: int = 0  # generated tokens
    decoding_passes: int = 0  # forward passes after the prompt's


# (benchmark, decoding, problem) -> its output; a model run, or outputs recorded by an earlier run.
Source = Callable[[str, str, Problem], Output]


def model_source(engine: Engine, builder: PromptBuilder, sampler: SamplerSettings, options: EvalOptions,
                 decode: Callable[[list[int]], str]) -> Source:
    """Outputs of the model: each decoding warmed up once (untimed: first calls allocate)."""
    warmed: set[tuple[str, str]] = set()

    def generate(benchmark: str, decoding: str, problem: Problem) -> Output:
        schedule = schedules(engine, sampler, benchmark, decoding, options)
        prompt_ids = builder.build(CursorContext(problem.prompt, problem.suffix, path=PROBLEM_PATH)).ids
        if (benchmark, decoding) not in warmed:
            engine.generate(prompt_ids, schedule)
            warmed.add((benchmark, decoding))
        begin = time.perf_counter()
        generation = engine.generate(prompt_ids, schedule)
        ms = (time.perf_counter() - begin) * 1000
        ids, stats = generation.token_ids, generation.stats
        lengths = [len(decode(ids[:count]).rstrip()) for count in range(len(ids) + 1)] if options.calibrate else None
        return Output(decode(ids), stats.forward_passes, ms, stats.steps, stats.canvases, stats.verifications,
                      stats.accepted_tokens, generation.token_logprobs, lengths, len(ids), stats.decoding_passes)

    return generate


def recorded_source(path: Path) -> Source:
    """Outputs saved by `--save-outputs`: scoring post-processing again needs no model."""
    recorded = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        fields = {name: entry[name] for name in Output.__dataclass_fields__ if name in entry}
        recorded[(entry["benchmark"], entry["decoding"], entry["task_id"])] = Output(**fields)

    def generate(benchmark: str, decoding: str, problem: Problem) -> Output:
        try:
            return recorded[(benchmark, decoding, problem.task_id)]
        except KeyError:
            raise SystemExit(f"dglsp eval: {path} has no {decoding} output for {problem.task_id}") from None

    return generate


def evaluate(source: Source, options: EvalOptions, log: Callable[[str], None] = lambda message: None,
             outputs: list[dict] | None = None) -> dict:
    """Score every (benchmark, decoding) on `source`'s outputs; `outputs`, if given, collects them."""
    rows: list[Row] = []
    calibration: dict[str, dict[str, list]] = {}
    blank_floor = None
    for benchmark in options.benchmarks:
        problems = load_problems(benchmark, options.data_dir, limit=options.limit)
        single_line = benchmark == "single-line"
        if single_line:
            blank = sum(check_completion(p, "\n", options.timeout_s).passed for p in problems)
            blank_floor = blank / len(problems)
        for decoding in options.decodings:
            row = Row(decoding, benchmark, problems=len(problems))
            tokens = passes = 0
            names = ("pipeline", *(f"pipeline-{name}" for name in FILTERS)) if options.pipeline else ()
            extra = {name: Row(f"{decoding}+{name}", benchmark, problems=len(problems)) for name in names}
            for problem in problems:
                output = source(benchmark, decoding, problem)
                if outputs is not None:
                    outputs.append({"benchmark": benchmark, "decoding": decoding, "task_id": problem.task_id,
                                    **asdict(output)})
                row.ms_per_completion += output.ms / len(problems)
                row.forward_passes += output.forward_passes / len(problems)
                row.steps_per_canvas += output.steps / max(1, output.canvases) / len(problems)
                if output.canvases:
                    bucket = round(output.steps / output.canvases)
                    row.steps_distribution[bucket] = row.steps_distribution.get(bucket, 0) + 1
                row.accepted_per_verification += output.accepted / max(1, output.verifications) / len(problems)
                tokens, passes = tokens + output.tokens, passes + output.decoding_passes
                if options.calibrate:
                    calibration.setdefault(decoding, {}).setdefault(benchmark, []).append(
                        calibration_point(output, problem, options.timeout_s))
                for variant, variant_row in extra.items():
                    piped = pipeline_completion(output.text, problem, variant)
                    variant_row.passed += check_completion(problem, piped, options.timeout_s).passed
                    variant_row.exact += is_exact(piped, problem)
                text = postprocess(output.text, problem, single_line)
                result = check_completion(problem, text, options.timeout_s)
                row.passed += result.passed
                row.exact += is_exact(text, problem)
                log(f"{decoding} {problem.task_id} {result.status}: {text!r}")
            row.tokens_per_pass = tokens / passes if passes else 0.0
            rows.append(row)
            for variant_row in extra.values():
                variant_row.forward_passes, variant_row.ms_per_completion = row.forward_passes, row.ms_per_completion
                rows.append(variant_row)
    report: dict = {"rows": [r.as_dict() for r in rows], "blank_floor": blank_floor}
    if options.calibrate:
        report["calibration"] = calibration
    return report


def calibration_point(output: Output, problem: Problem, timeout_s: float) -> list:
    """[confidence of the text the pipeline would show, passed, exact] (confidence None: nothing shown)."""
    shown = pipeline_completion(output.text, problem)
    lengths = output.text_lengths
    if not shown.strip() or output.logprobs is None or lengths is None:
        return [None, False, False]
    count = covering_count(lambda k: lengths[k], len(lengths) - 1, shown)
    return [confidence(output.logprobs, count), check_completion(problem, shown, timeout_s).passed,
            is_exact(shown, problem)]


def cold_latency_ms(engine: Engine, builder: PromptBuilder, schedule: Schedule, prompt_tokens: int = 1000
                    ) -> dict:
    """One single-canvas completion with a ~1k-token context, on a fresh cache (nothing reused)."""
    import sysconfig

    source = (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()
    settings = ContextSettings(max_prefix_tokens=prompt_tokens * 3 // 4, max_suffix_tokens=prompt_tokens // 4)
    cursor = source.index("    def parse_known_args")
    prompt = PromptBuilder(builder.tokenizer, builder.format, settings).build(
        CursorContext(source[:cursor], source[cursor:], path="argparse.py"))
    engine.generate(prompt.ids, replace(schedule, max_canvases=1, seed=0))  # warm-up
    generation = engine.generate(prompt.ids, replace(schedule, max_canvases=1, seed=1))
    return {"prompt_tokens": len(prompt.ids), "ms": round(generation.stats.total_ms, 1),
            "steps": generation.stats.steps}


def render(result: dict) -> str:
    lines = [f"{'decoding':<28} {'benchmark':<12} {'n':>5} {'pass@1':>7} {'exact':>6} {'fwd':>6} {'ms':>8} "
             f"{'steps/canvas':>12} {'tok/verify':>10} {'tok/pass':>8}"]
    for row in result["rows"]:
        lines.append(f"{row['decoding']:<28} {row['benchmark']:<12} {row['problems']:>5} {row['pass_at_1']:>7.3f} "
                     f"{row['exact_match']:>6.3f} {row['forward_passes']:>6.1f} {row['ms_per_completion']:>8.0f} "
                     f"{row.get('steps_per_canvas', 0):>12.2f} {row.get('accepted_per_verification', 0):>10.2f} "
                     f"{row.get('tokens_per_pass', 0):>8.2f}")
    if result.get("blank_floor") is not None:
        lines.append(f"blank-line floor (single-line): {result['blank_floor']:.3f}")
    if result.get("cold_latency"):
        latency = result["cold_latency"]
        lines.append(f"cold completion, {latency['prompt_tokens']}-token context: {latency['ms']} ms "
                     f"({latency['steps']} steps)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Command line


def run(args: argparse.Namespace) -> int:
    """`dglsp eval` on HumanEval-Infilling (options: `dglsp.tools.options.add_eval_arguments`)."""
    if args.rescore and (args.record or args.save_outputs or args.model):
        raise SystemExit("dglsp eval: --rescore scores saved outputs: --model, --record and --save-outputs need a "
                         "model run")
    options = EvalOptions(
        benchmarks=tuple(args.benchmark or ("single-line", "multi-line")),
        decodings=tuple(args.decoding or EvalOptions.decodings),
        limit=args.limit or 0, data_dir=args.data or HUMAN_EVAL_DIR, max_canvases_multi_line=args.max_canvases,
        timeout_s=args.timeout, seed=args.seed, calibrate=args.calibrate,
        pipeline=args.pipeline,
    )
    log = (lambda message: print(message, file=sys.stderr)) if args.verbose else (lambda message: None)
    command = "dglsp " + " ".join(sys.argv[1:])
    if args.rescore:
        result = evaluate(recorded_source(args.rescore), options, log=log)
        result.update(command=command, outputs=str(args.rescore))
        print(json.dumps(result, indent=2) if args.json else render(result))
        return 0
    bundle, engine = load_engine(EngineSettings(model=args.model, device=args.device, threads=args.threads))
    completer = Completer(bundle, engine)  # the serving path's prompt format and decoding of the output
    builder = PromptBuilder(bundle.tokenizer, completer.format, ContextSettings())
    sampler = sampler_overrides(args)
    outputs: list[dict] | None = [] if args.save_outputs else None
    result = evaluate(model_source(engine, builder, sampler, options, completer.decode), options, log=log,
                      outputs=outputs)
    if outputs is not None:
        args.save_outputs.write_text("".join(json.dumps(entry) + "\n" for entry in outputs), encoding="utf-8")
    # The schedule diffusion ran with (the model's own where unset), so eval.json records what ran.
    schedule = schedules(engine, sampler, "multi-line", "diffusion", replace(options, max_canvases_multi_line=1))
    if not args.no_latency:
        result["cold_latency"] = cold_latency_ms(engine, builder, schedule)
    # The load average says how far the timings can be trusted on a shared machine.
    result.update(command=command, model=str(bundle.path), device=_device_name(bundle.device, args.threads),
                  sampler=asdict(schedule), load_average=[round(x, 1) for x in os.getloadavg()])
    print(json.dumps(result, indent=2) if args.json else render(result))
    if args.record:
        (bundle.path / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        if (bundle.path / "MANIFEST.json").is_file():
            record_eval(bundle.path, result)
            write_model_card(bundle.path)
    return 0


SAMPLER_OVERRIDES = ("canvas_length", "line_canvas_length", "max_steps", "policy", "prefix_threshold", "eos_freeze",
                     "verify_steps", "verify_mix", "settle_steps", "entropy_bound", "t_max", "t_min", "gate",
                     "sampling")


def sampler_overrides(args: argparse.Namespace) -> SamplerSettings:
    """The schedule values the command line sets; every other one (None) is the model's own."""
    sampler = SamplerSettings(canvas_length=None)
    for name in SAMPLER_OVERRIDES:
        if getattr(args, name, None) is not None:
            sampler = replace(sampler, **{name: getattr(args, name)})
    return sampler


def _device_name(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({threads or torch.get_num_threads()} threads)"

