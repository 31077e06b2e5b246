"""The block-diffusion denoising loop for one canvas: a plain loop over tensors.

With the `entropy_bound` policy and `reference` sampling it follows DiffusionGemma's rule as
transformers implements it in `generation_diffusion_gemma.py` (`_denoising_step`,
`EntropyBoundSampler`, `LinearTemperatureScheduleLogitsProcessor`, `StableAndConfidentStoppingCriteria`),
and with the same seed it reproduces `generate()` token for token. The `prefix` policy commits the
canvas left to right instead (`diffusion.prefix_accept`). What the loop adds to both: a stop flag
checked after every step, a callback that sees each intermediate canvas, pinned leading positions
(verified decoding's pending token), a seeded start (a draft to improve instead of noise), the
settle rule, an EOS tail frozen to padding (the decoder's later steps cover the canvas up to it only), and
stats.

It knows nothing about transformers: the caller passes `denoise(canvas, self_cond)`, one decoder
forward over the canvas returning raw logits `[1, L, V]`, and a resolved `Schedule`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dglsp.model.diffusion import (
    SAMPLERS,
    SampleFn,
    entropy_bounded_accept,
    prefix_accept,
    temperature_at,
    uniform_noise,
)
from dglsp.model.schedule import Schedule

DenoiseFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor], None]


@dataclass
class CanvasResult:
    tokens: torch.Tensor  # [1, L] argmax canvas: the committed block
    steps: int  # decoder forward passes spent on it
    stopped: bool  # the stop flag ended it before the schedule did
    converged: bool  # a stop rule (stable and confident, settled, fully committed) ended it
    ms: float
    # [1, L] each argmax token's log-probability at the last step, at temperature 1: the confidence gate reads
    # it, and a tempered one says every token is certain once the schedule ends near temperature 0
    logprobs: torch.Tensor | None = None
    last_logits: torch.Tensor | None = None  # [L, V] the last step's raw logits (self-speculation's dial)


@dataclass
class _Canvas:
    """The state one denoising step reads and writes."""

    tokens: torch.Tensor  # [1, L] what the decoder sees next
    argmax: torch.Tensor  # [1, L] the canvas as it reads now
    held: int  # leading positions held fixed (pinned, or committed by the prefix policy)
    end: int  # positions from here on are a frozen padding tail (after a committed EOS)


def denoise_canvas(
    denoise: DenoiseFn,
    schedule: Schedule,
    vocab_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: StepCallback | None = None,
    deadline: float | None = None,
    fixed: list[int] | None = None,
    eos_ids: frozenset[int] = frozenset(),
    pad_id: int = 0,
    seed_tokens: list[int] | None = None,
) -> CanvasResult:
    """Denoise one canvas of `schedule.canvas_length` tokens, from uniform noise or from `seed_tokens`.

    `deadline` (a `time.monotonic()` value) ends the loop like the stop flag does, but the best canvas
    so far is still returned (`stopped` stays False): callers use it as the draft. `fixed` tokens hold
    the canvas's first positions throughout. `eos_ids` let the settle rule, the prefix policy and
    `eos_freeze` find where the block ends.
    """
    length = schedule.canvas_length
    assert length > 0 and schedule.max_steps > 0
    sample = SAMPLERS[schedule.sampling]
    start = time.perf_counter()
    shape = (1, length)
    tokens = uniform_noise(shape, vocab_size, generator, device)  # [1, L]
    if seed_tokens:
        tokens[0, : min(length, len(seed_tokens))] = torch.tensor(seed_tokens[:length], device=device)
    held = len(fixed) if fixed else 0
    if fixed:
        tokens[:, :held] = torch.tensor([fixed], device=device)
    state = _Canvas(tokens, tokens.clone(), held, length)
    self_conditioning: torch.Tensor | None = None
    raw_logits: torch.Tensor | None = None
    history = torch.full((schedule.stability_threshold, *shape), -1, dtype=torch.long, device=device)
    settle = _Settle(schedule.settle_steps, eos_ids)
    pad = torch.tensor(pad_id, device=device)
    steps = 0
    converged = stopped = False
    for step_remaining in range(schedule.max_steps, 0, -1):
        temperature = temperature_at(step_remaining, schedule.max_steps, schedule.t_min, schedule.t_max).to(device)
        raw_logits = _denoise_live(denoise, state, self_conditioning, pad_id)  # [1, L, V]
        logits = raw_logits / temperature
        steps += 1
        if schedule.policy == "prefix":
            done = _prefix_step(state, raw_logits, eos_ids, schedule.prefix_threshold, generator, vocab_size, pad)
        elif schedule.policy == "entropy_bound":
            done = _entropy_bound_step(state, logits, sample, schedule, eos_ids, generator, vocab_size, history, pad)
        else:
            raise ValueError(f"unknown sampler policy {schedule.policy!r}")
        converged = settle.done(state.argmax) or done
        self_conditioning = logits
        if on_step is not None:
            on_step(steps, state.argmax)
        if converged:
            break
        if should_stop():
            stopped = True
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
    logprobs = None if raw_logits is None else torch.log_softmax(
        raw_logits.float(), dim=-1).gather(-1, state.argmax[..., None])[..., 0]  # [1, L]
    return CanvasResult(state.argmax, steps, stopped, converged, (time.perf_counter() - start) * 1000, logprobs,
                        None if raw_logits is None else raw_logits[0])


PAD_CERTAINTY = 50.0  # a frozen tail's logit for padding over every other token: log-probability ~0, entropy ~0


def _denoise_live(denoise: DenoiseFn, state: _Canvas, self_conditioning: torch.Tensor | None,
                  pad_id: int) -> torch.Tensor:
    """The decoder over the canvas up to its frozen tail only: a frozen tail is padding that no step changes
    again, so it gets no decoder work (the live positions no longer attend to it); its logits say padding,
    certainly, for the sampler, the gate and self-conditioning."""
    length = state.tokens.shape[1]
    if state.end >= length:
        return denoise(state.tokens, self_conditioning)
    live = denoise(state.tokens[:, : state.end],
                   None if self_conditioning is None else self_conditioning[:, : state.end])
    tail = live.new_zeros(1, length - state.end, live.shape[-1])
    tail[..., pad_id] = PAD_CERTAINTY
    return torch.cat([live, tail], dim=1)


def _entropy_bound_step(state: _Canvas, logits: torch.Tensor, sample: SampleFn, schedule: Schedule,
                        eos_ids: frozenset[int], generator: torch.Generator | None, vocab_size: int,
                        history: torch.Tensor, pad: torch.Tensor) -> bool:
    """DiffusionGemma's step: a sample at the accepted (lowest-entropy) positions, noise everywhere else; True
    when transformers' stable-and-confident rule ends the canvas."""
    sampled, entropy = sample(logits, generator)  # [1, L] each
    state.argmax = torch.argmax(logits, dim=-1)
    accepted = entropy_bounded_accept(entropy, schedule.entropy_bound)
    noise = uniform_noise(tuple(state.tokens.shape), vocab_size, generator, logits.device)
    pinned = state.tokens[:, : state.held].clone()
    tokens = torch.where(accepted, sampled, state.tokens)
    tokens = torch.where(~accepted, noise, tokens)
    tokens[:, : state.held] = pinned
    state.argmax[:, : state.held] = pinned
    if schedule.eos_freeze:
        ends = [i for i in (accepted[0] & _is_eos(sampled[0], eos_ids)).nonzero().flatten().tolist() if i >= state.held]
        state.end = min([state.end, *(i + 1 for i in ends)])
        tokens[:, state.end:] = pad
        state.argmax[:, state.end:] = pad
        entropy = entropy[:, : state.end]
    state.tokens = tokens
    return _stable_and_confident(history, state.argmax, entropy, schedule.stability_threshold,
                                 schedule.confidence_threshold)


def _prefix_step(state: _Canvas, raw_logits: torch.Tensor, eos_ids: frozenset[int], threshold: float,
                 generator: torch.Generator | None, vocab_size: int, pad: torch.Tensor) -> bool:
    """Commit the leading run the decoder is sure of (`prefix_accept`) and hold it; noise the rest. The block
    ends at a committed EOS: the tail becomes padding. True once every position is committed."""
    best_probability, best = torch.softmax(raw_logits.float(), dim=-1).max(dim=-1)  # [1, L] each
    committed = prefix_accept(best_probability[0].tolist(), state.held, threshold)
    run = best[0, state.held:committed].tolist()
    eos_at = next((state.held + i for i, token in enumerate(run) if token in eos_ids), None)
    if eos_at is not None:
        committed = state.end = eos_at + 1
    tokens = state.tokens.clone()
    tokens[0, state.held:committed] = best[0, state.held:committed]
    tokens[0, state.end:] = pad
    noise = uniform_noise((1, state.end - committed), vocab_size, generator, raw_logits.device)
    tokens[0, committed:state.end] = noise
    state.argmax = tokens.clone()
    state.argmax[0, committed:state.end] = best[0, committed:state.end]
    state.tokens, state.held = tokens, committed
    return state.held >= state.end


def _is_eos(tokens: torch.Tensor, eos_ids: frozenset[int]) -> torch.Tensor:
    return torch.isin(tokens, torch.tensor(sorted(eos_ids), dtype=tokens.dtype, device=tokens.device))


class _Settle:
    """The canvas has settled when its argmax up to and including the first EOS (all of it when there is none)
    is the same for `steps` steps in a row; 0 never settles."""

    def __init__(self, steps: int, eos_ids: frozenset[int]):
        self.steps, self.eos_ids = steps, eos_ids
        self.last: list[int] | None = None
        self.unchanged = 0

    def done(self, argmax_canvas: torch.Tensor) -> bool:
        if not self.steps:
            return False
        tokens = argmax_canvas[0].tolist()
        cut = next((i + 1 for i, token in enumerate(tokens) if token in self.eos_ids), len(tokens))
        head = tokens[:cut]
        self.unchanged = self.unchanged + 1 if head == self.last else 0
        self.last = head
        return self.unchanged >= self.steps


def _stable_and_confident(history: torch.Tensor, argmax_canvas: torch.Tensor, entropy: torch.Tensor,
                          stability_threshold: int, confidence_threshold: float) -> bool:
    """transformers' StableAndConfidentStoppingCriteria; `history` is updated in place."""
    if stability_threshold == 0:
        stable = True
    else:
        stable = bool((history == argmax_canvas[None]).all())
        history[:-1] = history[1:].clone()
        history[-1] = argmax_canvas
    return stable and bool(entropy.mean() < confidence_threshold)
