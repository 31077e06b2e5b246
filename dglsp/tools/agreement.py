"""`dglsp eval agreement`: how much of the encoder's greedy text each decoding writes, and in how many passes.

Pass@1 on 100 problems moves by 3-4 points by chance; this measure moves with every token. For each prompt
the encoder's greedy text (token by token, up to EOS or the budget, EOS included) is the reference. Each
decoding runs with a hook that records, after every forward pass past the prompt's, the text it would
show at that moment: what it committed, then the current canvas's argmax, up to and including the first
EOS. Its *leading agreement* after k passes is the length of the common prefix of that text and the
reference. Reported per decoding, over all prompts: the mean leading agreement after 1, 2 and 4 passes
(after the last pass for a decoding that finished sooner), the reference tokens measured, and tokens
committed per forward pass (generated tokens / passes after the prompt's). Verified decodings write the
greedy text by construction; what they differ in is how many passes it takes.

Prompts: HumanEval-Infilling's single-line and multi-line problems (decontaminated out of the training
corpus, so held out), as `dglsp eval` builds them; `prompts_from` takes any list of prompt ids, which
training uses on its held-out examples.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import cast

from dglsp.completion.completer import Completer
from dglsp.completion.prompt import CursorContext, PromptBuilder
from dglsp.config import ContextSettings, Decoding, EngineSettings, SamplerSettings
from dglsp.model.engine import Engine
from dglsp.model.loading import load_engine
from dglsp.model.schedule import Schedule
from dglsp.tools.eval_humaneval import PROBLEM_PATH, sampler_overrides
from dglsp.tools.humaneval import load_problems

PASSES = (1, 2, 4)


@dataclass
class Agreement:
    """One decoding's totals over the prompts (means are taken when rendering)."""

    decoding: str
    prompts: int = 0
    reference_tokens: int = 0
    leading: dict[int, int] = field(default_factory=lambda: dict.fromkeys(PASSES, 0))  # k -> summed agreement
    generated: int = 0
    passes: int = 0
    exact: int = 0  # prompts whose final text is the reference

    def row(self) -> dict:
        return {"decoding": self.decoding, "prompts": self.prompts, "reference_tokens": self.reference_tokens,
                **{f"leading_after_{k}": round(self.leading[k] / max(1, self.prompts), 3) for k in PASSES},
                "tokens_per_pass": round(self.generated / self.passes, 3) if self.passes else 0.0,
                "passes_per_prompt": round(self.passes / max(1, self.prompts), 2),
                "exact": round(self.exact / max(1, self.prompts), 3)}


def cut_at_eos(ids: list[int], eos_ids: frozenset[int]) -> list[int]:
    """The tokens up to and including the first EOS."""
    end = next((i + 1 for i, token in enumerate(ids) if token in eos_ids), len(ids))
    return ids[:end]


def leading(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def reference(engine: Engine, prompt: list[int], schedule: Schedule) -> list[int]:
    """The encoder's greedy text for `prompt`, with its EOS when it ended within the budget."""
    greedy = engine.generate(prompt, replace(schedule, decoding="autoregressive"))
    return greedy.token_ids + ([min(engine.eos_ids)] if greedy.finished else [])


def measure(engine: Engine, prompt: list[int], schedule: Schedule, truth: list[int], into: Agreement) -> None:
    """Run one decoding on one prompt, and add its agreement with `truth` to `into`."""
    seen: list[tuple[int, list[int]]] = []  # (passes after the prompt's, the text it would show then)

    def on_canvas(passes: int, ids: list[int], committed: bool) -> bool:
        seen.append((passes, cut_at_eos(ids, engine.eos_ids)))
        return False

    generation = engine.generate(prompt, schedule, on_canvas=on_canvas)
    final = generation.token_ids + ([min(engine.eos_ids)] if generation.finished else [])
    seen.append((generation.stats.decoding_passes, final))
    truth = [token if token not in engine.eos_ids else min(engine.eos_ids) for token in truth]
    for k in PASSES:
        text = next((ids for passes, ids in seen if passes >= k), final)
        text = [token if token not in engine.eos_ids else min(engine.eos_ids) for token in text]
        into.leading[k] += leading(text, truth)
    into.prompts += 1
    into.reference_tokens += len(truth)
    into.generated += len(generation.token_ids)
    into.passes += generation.stats.decoding_passes
    into.exact += final == truth


def evaluate(engine: Engine, prompts: list[list[int]], schedules: dict[str, Schedule]) -> list[dict]:
    """Leading agreement and tokens per pass of each named schedule over `prompts` (see the module docstring)."""
    rows = {name: Agreement(name) for name in schedules}
    for prompt in prompts:
        truth = reference(engine, prompt, next(iter(schedules.values())))
        for name, schedule in schedules.items():
            measure(engine, prompt, schedule, truth, rows[name])
    return [row.row() for row in rows.values()]


def for_model_dir(model_dir: Path, prompts: list[list[int]], variants: dict[str, SamplerSettings]) -> list[dict]:
    """`evaluate` on a model directory as served (its own defaults under each variant's settings): what training
    logs at each export, on its held-out prompts."""
    _, engine = load_engine(EngineSettings(model=str(model_dir), device="cpu"))
    return evaluate(engine, prompts, {name: engine.schedule(settings) for name, settings in variants.items()})


def humaneval_prompts(completer: Completer, limit: int) -> list[list[int]]:
    builder = PromptBuilder(completer.tokenizer, completer.format, ContextSettings())
    problems = load_problems("single-line", limit=limit) + load_problems("multi-line", limit=limit)
    return [builder.build(CursorContext(p.prompt, p.suffix, path=PROBLEM_PATH)).ids for p in problems]


def render(rows: list[dict]) -> str:
    lines = [f"{'decoding':<16} {'prompts':>7} {'ref tok':>7} " + " ".join(f"{f'after {k}':>8}" for k in PASSES)
             + f" {'tok/pass':>8} {'passes':>7} {'exact':>6}"]
    for row in rows:
        lines.append(f"{row['decoding']:<16} {row['prompts']:>7} {row['reference_tokens']:>7} "
                     + " ".join(f"{row[f'leading_after_{k}']:>8.2f}" for k in PASSES)
                     + f" {row['tokens_per_pass']:>8.2f} {row['passes_per_prompt']:>7.1f} {row['exact']:>6.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`dglsp eval agreement` (options: `dglsp.tools.options.add_eval_arguments`)."""
    bundle, engine = load_engine(EngineSettings(model=args.model, device=args.device, threads=args.threads))
    completer = Completer(bundle, engine)
    sampler = replace(sampler_overrides(args), seed=args.seed)
    decodings = args.decoding or ["diffusion", "verified", "speculative"]
    schedules = {name: engine.schedule(replace(sampler, decoding=cast(Decoding, name))) for name in decodings}
    prompts = humaneval_prompts(completer, args.limit or 50)
    rows = evaluate(engine, prompts, schedules)
    result = {"rows": rows, "model": str(bundle.path), "command": "dglsp " + " ".join(sys.argv[1:]),
              "schedules": {name: asdict(schedule) for name, schedule in schedules.items()}}
    print(json.dumps(result, indent=2) if args.json else render(rows))
    return 0
