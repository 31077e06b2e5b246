"""The block-diffusion denoising loop for one canvas: a plain loop over tensors.

It follows DiffusionGemma's rule as transformers implements it in
`generation_diffusion_gemma.py` (`_denoising_step`, `EntropyBoundSampler`,
`LinearTemperatureScheduleLogitsProcessor`, `StableAndConfidentStoppingCriteria`),
and with the same seed it reproduces `generate()` token for token. What it adds:
a stop flag checked after every denoising step, a callback that sees each
intermediate canvas, and stats.

It knows nothing about transformers: the caller passes `denoise(canvas, self_cond)`,
one decoder forward over the canvas returning raw logits `[1, L, V]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dglsp.config import SamplerSettings

DenoiseFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor], None]


@dataclass
class CanvasResult:
    tokens: torch.Tensor  # [1, L] argmax canvas: the committed block
    steps: int  # decoder forward passes spent on it
    stopped: bool  # the stop flag ended it before the schedule did
    converged: bool  # the stable-and-confident criterion (or the settle rule) ended it
    ms: float
    # [1, L] each argmax token's log-probability at the last step, at temperature 1: the confidence gate reads
    # it, and a tempered one says every token is certain once the schedule ends near temperature 0
    logprobs: torch.Tensor | None = None


def temperature_at(step_remaining: int, settings: SamplerSettings) -> torch.Tensor:
    """Linear schedule from t_max (first step) to t_min; steps count down N..1 as in transformers.

    Computed in float32 from an int32 step exactly as transformers does, so the division by it
    rounds the same way (a float64 Python temperature differs in the last bit).
    """
    step = torch.tensor(step_remaining, dtype=torch.int32)
    t_min, t_max = settings.t_min, settings.t_max
    assert t_min is not None and t_max is not None, "resolve the schedule first (SamplerSettings.with_schedule)"
    return t_min + (t_max - t_min) * (step / settings.max_steps)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    # The same computation as torch.distributions.Categorical(logits=...).entropy(), which transformers
    # uses; reimplementing it differently would change acceptance on ties and break bit-exactness.
    return torch.distributions.Categorical(logits=logits).entropy()


def fused_sample(logits: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One log-softmax for both the sample and the entropy, sampling by an exponential race (gpt-fast's
    `multinomial_sample_one_no_sync`): no second pass over the vocabulary and no host sync. The GPU path:
    at 262k tokens the softmax/entropy passes cost more than the decoder step. Not bit-exact with
    transformers' `generate()` (a different random stream), so the CPU path keeps the reference math."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # [1, L, V]
    probs = log_probs.exp()
    entropy = -(probs * log_probs).nan_to_num().sum(-1)  # [1, L]; 0 * -inf -> 0 like Categorical
    race = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.argmax(probs / race, dim=-1), entropy


def entropy_bounded_accept(entropy: torch.Tensor, entropy_bound: float) -> torch.Tensor:
    """Accept the k lowest-entropy positions with sum(H) - max(H) <= bound (arXiv 2505.24857)."""
    sorted_entropy, order = torch.sort(entropy, dim=-1, descending=False)
    selected = torch.cumsum(sorted_entropy, dim=-1) - sorted_entropy <= entropy_bound
    return torch.scatter(torch.zeros_like(selected), dim=-1, index=order, src=selected)


def denoise_canvas(
    denoise: DenoiseFn,
    settings: SamplerSettings,
    vocab_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: StepCallback | None = None,
    deadline: float | None = None,
    fused_sampling: bool = False,
    fixed: list[int] | None = None,
    eos_ids: frozenset[int] = frozenset(),
) -> CanvasResult:
    """Denoise one canvas of `settings.canvas_length` tokens from uniform noise.

    `deadline` (a `time.monotonic()` value) ends the loop like the stop flag does, but the
    best canvas so far is still returned (`stopped` stays False): callers use it as the draft.
    `fused_sampling` takes `fused_sample` instead of the reference math (the engine sets it on GPUs).
    `fixed` tokens hold the canvas's first positions throughout (verified decoding's pending token).
    `eos_ids` let `settings.settle_steps` end the canvas once it has settled up to its first EOS.
    """
    assert settings.canvas_length > 0 and settings.max_steps > 0
    settings = settings.with_schedule()
    assert settings.entropy_bound is not None
    start = time.perf_counter()
    shape = (1, settings.canvas_length)
    canvas = torch.randint(0, vocab_size, shape, device=device, generator=generator)  # [1, L]
    pinned = torch.tensor([fixed], device=device) if fixed else None  # [1, F]
    if pinned is not None:
        canvas[:, : pinned.shape[1]] = pinned
    argmax_canvas = canvas
    self_conditioning: torch.Tensor | None = None
    raw_logits: torch.Tensor | None = None
    history = torch.full((settings.stability_threshold, *shape), -1, dtype=torch.long, device=device)
    settle = _Settle(settings.settle_steps, eos_ids)
    steps = 0
    converged = stopped = False
    for step_remaining in range(settings.max_steps, 0, -1):
        temperature = temperature_at(step_remaining, settings).to(device)
        raw_logits = denoise(canvas, self_conditioning)  # [1, L, V]
        logits = raw_logits / temperature
        steps += 1
        if fused_sampling:
            sampled, entropy = fused_sample(logits, generator)
        else:
            probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
            sampled = torch.multinomial(probs.view(-1, vocab_size), 1, generator=generator).view(shape)
            entropy = token_entropy(logits)  # [1, L]
        argmax_canvas = torch.argmax(logits, dim=-1)
        accepted = entropy_bounded_accept(entropy, settings.entropy_bound)
        noise = torch.randint(0, vocab_size, shape, device=device, generator=generator)
        canvas = torch.where(accepted, sampled, canvas)
        canvas = torch.where(~accepted, noise, canvas)
        if pinned is not None:
            canvas[:, : pinned.shape[1]] = pinned
            argmax_canvas[:, : pinned.shape[1]] = pinned
        converged = _stable_and_confident(history, argmax_canvas, entropy, settings)
        converged = settle.done(argmax_canvas) or converged
        self_conditioning = logits
        if on_step is not None:
            on_step(steps, argmax_canvas)
        if converged:
            break
        if should_stop():
            stopped = True
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
    logprobs = None if raw_logits is None else torch.log_softmax(
        raw_logits.float(), dim=-1).gather(-1, argmax_canvas[..., None])[..., 0]  # [1, L]
    return CanvasResult(argmax_canvas, steps, stopped, converged, (time.perf_counter() - start) * 1000, logprobs)


class _Settle:
    """The canvas has settled when its argmax up to and including the first EOS (all of it when there is none)
    is the same for `steps` steps in a row; 0 (or None, unresolved) never settles."""

    def __init__(self, steps: int | None, eos_ids: frozenset[int]):
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


def _stable_and_confident(
    history: torch.Tensor, argmax_canvas: torch.Tensor, entropy: torch.Tensor, settings: SamplerSettings
) -> bool:
    """transformers' StableAndConfidentStoppingCriteria; `history` is updated in place."""
    if settings.stability_threshold == 0:
        stable = True
    else:
        stable = bool((history == argmax_canvas[None]).all())
        history[:-1] = history[1:].clone()
        history[-1] = argmax_canvas
    return stable and bool(entropy.mean() < settings.confidence_threshold)
