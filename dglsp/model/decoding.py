"""The decodings, by name: one loop that alternates *propose* and *accept* over the engine's operations.

* `diffusion` — propose: denoise a canvas after what is committed; accept: its argmax up to EOS. Canvases
  chain block-autoregressively (the committed block is encoded before the next canvas).
* `verified` — propose: a canvas whose first position holds the pending token (the encoder's choice);
  accept: one encoder pass over it keeps the longest prefix the encoder's greedy predictions agree with,
  and the encoder's token at the first disagreement becomes the next pending token. The text is exactly
  greedy token-by-token decoding.
* `speculative` — `verified`, where each check also seeds the next draft with the encoder's predictions
  past the first disagreement (at no extra pass; Jacobi decoding's "recycling"), and accepts under
  `verify_mix` (the canvas's weight in the acceptance logits; 0 keeps the text exactly greedy). With
  `verify_steps` 0 those guesses are the draft itself (Jacobi iteration: one encoder pass a round).
* `autoregressive` — propose nothing but the pending token; accept: one encoder pass, one token.
* `lookup` — `verified`, whose draft is what followed the latest earlier occurrence of the last few tokens in
  the prompt and the output (prompt lookup decoding): code repeats its names and phrases, the draft costs no
  decoder pass, and the check keeps the text greedy (in bf16 a pass over several tokens can round a near-tie
  differently from a pass over one).

Every decoding returns its stats (forward passes, steps, tokens per check) with the token ids.
An unknown name is an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol

import torch

from dglsp.config import DECODINGS as NAMES
from dglsp.model.backend import CanvasCallback, Generation, GenerationStats
from dglsp.model.sampler import CanvasResult

if TYPE_CHECKING:
    from transformers import DynamicCache

    from dglsp.model.engine import Engine
    from dglsp.model.schedule import Schedule


@dataclass
class Run:
    """One generation's state, which the decodings read and advance."""

    engine: Engine
    schedule: Schedule
    cache: DynamicCache
    generator: torch.Generator
    should_stop: Callable[[], bool]
    on_canvas: CanvasCallback | None
    deadline: float | None
    stats: GenerationStats
    output: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finished: bool = False  # the model ended the block (EOS), or the caller's callback did
    pending: int | None = None  # the next token, already chosen (verified and token-by-token decoding)
    unencoded: list[int] = field(default_factory=list)  # committed tokens the cache does not hold yet
    seed_tokens: list[int] | None = None  # a draft to start the next canvas from (speculative)
    seed_source: list[int] | None = None  # a text the canvases start from, aligned with the output (a rewrite)
    context: list[int] = field(default_factory=list)  # the prompt's ids (lookup drafts come from them)
    last_hidden: torch.Tensor | None = None  # the encoder's state after what the cache holds (encoder scoring)

    def step_reporter(self) -> Callable[[int, torch.Tensor], None] | None:
        """The live canvas: after each denoising step of the canvas about to start, the output so far and the
        canvas's argmax, with the forward passes spent after the prompt's by then."""
        if self.on_canvas is None:
            return None
        on_canvas, committed = self.on_canvas, list(self.output)
        passes = self.stats.decoding_passes

        def report(step: int, argmax_canvas: torch.Tensor) -> None:
            on_canvas(passes + step, committed + argmax_canvas[0].tolist(), False)

        return report

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


class Decoding(Protocol):
    needs_last_hidden: bool  # the prefill must return the prompt's last hidden state

    def start(self, run: Run, last_hidden: torch.Tensor | None) -> None: ...

    def more(self, run: Run) -> bool:
        """Whether another round may run (the budget)."""
        ...

    def round(self, run: Run) -> bool:
        """Propose and accept once; False when the stop flag ended the round before anything was accepted."""
        ...


class Diffusion:
    """Canvases as denoised; their argmax is committed up to EOS. With `schedule.gate` "encoder", the encoder then
    reads each committed block (the pass a next canvas needs anyway) and its log-probabilities of the block's
    tokens are the ones reported, for the confidence gate."""

    def __init__(self) -> None:
        self.canvases = 0
        self.needs_last_hidden = False

    def start(self, run: Run, last_hidden: torch.Tensor | None) -> None:
        self.canvases = 0
        run.last_hidden = last_hidden

    def more(self, run: Run) -> bool:
        return self.canvases < run.schedule.max_canvases

    def round(self, run: Run) -> bool:
        if run.unencoded:  # commit the previous canvas into the cache before denoising the next
            run.engine.encode(run.cache, run.unencoded, run.schedule.exact)
            run.stats.encoder_passes += 1
            run.unencoded = []
        if run.seed_source is not None:  # the part of the text this canvas rewrites, aligned by the output so far
            run.seed_tokens = run.seed_source[len(run.output):len(run.output) + run.schedule.canvas_length]
        canvas = _denoise(run, run.schedule)
        self.canvases += 1
        if canvas.stopped:
            return False
        block = canvas.tokens[0].tolist()
        eos_at = next((i for i, token in enumerate(block) if token in run.engine.eos_ids), None)
        kept = block if eos_at is None else block[:eos_at]
        run.output.extend(kept)
        if run.schedule.gate == "encoder":
            run.logprobs.extend(_encoder_scores(run, block if eos_at is None else block[:eos_at + 1])[: len(kept)])
        else:
            if canvas.logprobs is not None:
                run.logprobs.extend(canvas.logprobs[0, : len(kept)].tolist())
            run.unencoded = block
        run.finished = eos_at is not None
        if run.past_deadline():  # cut short: the canvas was still denoising, or more canvases were wanted
            run.stats.hit_deadline = not (run.finished and canvas.converged)
        return True


def _encoder_scores(run: Run, block: list[int]) -> list[float]:
    """One encoder pass over a committed block: its K/V join the cache (the next canvas needs them), and the
    encoder's log-probability of each block token given all before it is returned."""
    assert run.last_hidden is not None, "scoring with the encoder needs the prompt's last hidden state"
    hidden = run.engine.encode(run.cache, block, run.schedule.exact)  # [1, B, H]
    run.stats.encoder_passes += 1
    states = torch.cat([run.last_hidden.reshape(1, -1), hidden[0, :-1]], dim=0)  # position i predicts token i
    log_probs = torch.log_softmax(run.engine.lm_logits(states), dim=-1)
    run.last_hidden = hidden[:, -1]
    return log_probs[torch.arange(len(block)), torch.tensor(block)].tolist()


# Lookup drafts: the longest run of latest tokens matched (shorter runs are tried after it), and the most tokens
# drafted. On HumanEval-Infilling's greedy texts runs of 2-4 accept the same (1.8 tokens per check), and drafts
# past 8 tokens add almost nothing while every drafted token costs encoder work.
LOOKUP_NGRAM = 3
LOOKUP_TOKENS = 8

DraftSource = Literal["canvas", "lookup", "none"]


def lookup_draft(context: list[int], length: int, ngram: int = LOOKUP_NGRAM) -> list[int]:
    """Up to `length` tokens that followed the latest earlier occurrence of the context's last n tokens, for the
    longest n <= `ngram` that occurs; [] when even the last token does not occur earlier."""
    for n in range(min(ngram, len(context) - 1), 0, -1):
        tail = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start:start + n] == tail:
                return context[start + n:start + n + length]
    return []


class Verified:
    """Drafts checked by the encoder (see the module docstring). `draft` is where a draft comes from: a denoised
    canvas, the text already there (`lookup_draft`), or nothing (token-by-token decoding); `speculative` seeds
    each canvas from the last check and accepts under `schedule.verify_mix`."""

    needs_last_hidden = True

    def __init__(self, draft: DraftSource = "canvas", speculative: bool = False):
        self.draft, self.speculative = draft, speculative

    def start(self, run: Run, last_hidden: torch.Tensor | None) -> None:
        assert last_hidden is not None, "verified decoding needs the prompt's last hidden state"
        best, chosen = torch.log_softmax(run.engine.lm_logits(last_hidden), dim=-1).max(dim=-1)
        run.pending = int(chosen)
        run.logprobs.append(float(best))
        run.finished = run.pending in run.engine.eos_ids

    def more(self, run: Run) -> bool:
        return len(run.output) < self._budget(run)

    def _budget(self, run: Run) -> int:
        return run.schedule.canvas_length * run.schedule.max_canvases

    def round(self, run: Run) -> bool:
        assert run.pending is not None
        length = min(run.schedule.canvas_length, self._budget(run) - len(run.output))
        if length == 1:  # the budget's last token: the pending one is the encoder's choice already, no pass needed
            run.output.append(run.pending)
            return True
        canvas: CanvasResult | None = None
        draft = [run.pending]
        if self.draft == "lookup":
            draft += lookup_draft([*run.context, *run.output, run.pending], min(length - 1, LOOKUP_TOKENS))
        elif self.speculative and run.schedule.verify_steps == 0 and run.seed_tokens:
            draft = [run.pending, *run.seed_tokens[1:length]]  # Jacobi: the last check's guesses, no decoder pass
        elif self.draft == "canvas":
            schedule = replace(run.schedule, canvas_length=length, max_steps=run.schedule.verify_steps or 1)
            canvas = _denoise(run, schedule, fixed=[run.pending])
            if canvas.stopped:
                return False
            draft = [run.pending, *canvas.tokens[0, 1:].tolist()]
        mix = run.schedule.verify_mix if self.speculative else 0.0
        verdict = run.engine.verify(run.cache, draft, canvas.last_logits if canvas else None, mix, run.schedule.exact)
        run.stats.encoder_passes += 1
        if self.draft != "none":
            run.stats.verifications += 1
            run.stats.accepted_tokens += len(verdict.kept)
        eos_at = next((i for i, token in enumerate(verdict.kept) if token in run.engine.eos_ids), None)
        run.output.extend(verdict.kept[:eos_at])
        run.logprobs.extend(verdict.logprobs)  # logprobs[j] is the j-th token's, the pending one's last
        run.pending = verdict.next_token
        run.finished = eos_at is not None or run.pending in run.engine.eos_ids
        if self.speculative:  # the encoder's guesses past the disagreement: where the next draft starts
            run.seed_tokens = verdict.predictions[len(verdict.kept) - 1:]
        if run.past_deadline():
            run.stats.hit_deadline = not run.finished
        return True


def _denoise(run: Run, schedule: Schedule, fixed: list[int] | None = None) -> CanvasResult:
    """One canvas after what the cache holds, counted in the run's stats."""
    canvas = run.engine.denoise(run.cache, schedule, run.generator, run.should_stop, run.step_reporter(),
                                run.deadline, fixed=fixed, seed_tokens=run.seed_tokens)
    run.stats.canvases += 1
    run.stats.steps += canvas.steps
    run.stats.decode_ms += canvas.ms
    return canvas


DECODINGS: dict[str, Callable[[], Decoding]] = {
    "diffusion": Diffusion,
    "verified": Verified,
    "speculative": lambda: Verified(speculative=True),
    "autoregressive": lambda: Verified(draft="none"),
    "lookup": lambda: Verified(draft="lookup"),
}


assert set(DECODINGS) == set(NAMES), "one registry entry per name `sampler.decoding` accepts"


def decoding_named(name: str) -> Decoding:
    try:
        return DECODINGS[name]()
    except KeyError:
        raise ValueError(f"unknown decoding {name!r} (known: {', '.join(DECODINGS)})") from None


def decode(engine: Engine, prompt_ids: list[int], schedule: Schedule, should_stop: Callable[[], bool],
           on_canvas: CanvasCallback | None, deadline: float | None, cache_key: str | None,
           seed_ids: list[int] | None = None) -> Generation:
    """Prefill, then rounds of the named decoding until EOS, the budget, the stop flag or the deadline."""
    decoding = decoding_named(schedule.decoding)
    needs_last_hidden = decoding.needs_last_hidden or schedule.gate == "encoder"
    stats = GenerationStats(prefill_tokens=len(prompt_ids))
    begin = time.perf_counter()
    cache, last_hidden = engine.prepare_prompt(prompt_ids, stats, cache_key, keep_last=needs_last_hidden,
                                               should_stop=should_stop)
    if cache is None:
        stats.stopped = True
        stats.total_ms = (time.perf_counter() - begin) * 1000
        return Generation([], False, stats)
    run = Run(engine, schedule, cache, engine.generator(schedule.seed), should_stop, on_canvas, deadline, stats,
              seed_source=seed_ids, context=prompt_ids)
    decoding.start(run, last_hidden)
    while not run.finished and decoding.more(run):
        if should_stop() or not decoding.round(run):
            stats.stopped = True
            break
        # A committed-block callback returning True ends the generation (e.g. the block is closed).
        if on_canvas is not None and on_canvas(stats.decoding_passes, list(run.output), True):
            run.finished = True
        if run.past_deadline():
            break
    budget = schedule.canvas_length * schedule.max_canvases
    output = run.output[:budget]
    stats.generated_tokens = len(output)
    stats.total_ms = (time.perf_counter() - begin) * 1000
    return Generation(output, run.finished, stats, run.logprobs[: len(output)])
