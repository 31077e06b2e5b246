"""The block-diffusion math that serving and training share, so the two cannot drift apart.

The LM head with Gemma's soft-capping, the uniform-token noise (DiffusionGemma has no mask token: noise
is random tokens), the linear temperature schedule, the entropy, three ways to sample a canvas, and
the acceptance rules a denoising step can follow, by name:

* `entropy_bound` — DiffusionGemma's (transformers' `EntropyBoundSampler`, arXiv 2505.24857): keep
  the lowest-entropy positions anywhere in the canvas while their summed entropy stays within the bound.
* `prefix` — keep the longest leading run whose argmax probability (at temperature 1) reaches a bound,
  at least one position, and hold it fixed (Fast-dLLM's threshold rule, made left to right as in
  LLaDA's semi-autoregressive decoding): a small model is rarely sure of dependent positions at once,
  and a wrong early token poisons the rest of a line.

Sampling: `reference` is transformers' math (softmax, `torch.multinomial`): bit-exact with `generate()`.
`fused` is one log-softmax and an exponential race (no host sync: the GPU path). `fast` is Gumbel-max
over uniforms, ~5x cheaper than `multinomial` on the CPU; same distribution, another random stream.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import DiffusionGemmaForBlockDiffusion

SampleFn = Callable[[torch.Tensor, torch.Generator | None], tuple[torch.Tensor, torch.Tensor]]


def lm_logits(model: DiffusionGemmaForBlockDiffusion, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head with Gemma's final soft-capping, as `DiffusionGemmaForBlockDiffusion.forward` applies it."""
    logits = model.lm_head(hidden).float()
    cap = model.final_logit_softcapping
    return torch.tanh(logits / cap) * cap if cap else logits


def uniform_noise(shape: tuple[int, ...], vocab_size: int, generator: torch.Generator | None,
                  device: torch.device) -> torch.Tensor:
    """Random tokens: the noise of uniform-state diffusion."""
    return torch.randint(0, vocab_size, shape, device=device, generator=generator)


def corrupt(canvas: torch.Tensor, vocab_size: int, t_eps: float, generator: torch.Generator) -> torch.Tensor:
    """Training's forward process: each row's positions become random tokens with probability t ~ U(eps, 1)."""
    rows = canvas.shape[0]
    t = torch.rand(rows, 1, generator=generator, device=canvas.device) * (1 - t_eps) + t_eps
    replace = torch.rand(canvas.shape, generator=generator, device=canvas.device) < t
    noise = uniform_noise(tuple(canvas.shape), vocab_size, generator, canvas.device)
    return torch.where(replace, noise, canvas)


def temperature_at(step_remaining: int, max_steps: int, t_min: float, t_max: float) -> torch.Tensor:
    """Linear schedule from t_max (first step) to t_min; steps count down N..1 as in transformers.

    Computed in float32 from an int32 step exactly as transformers does, so the division by it
    rounds the same way (a float64 Python temperature differs in the last bit).
    """
    step = torch.tensor(step_remaining, dtype=torch.int32)
    return t_min + (t_max - t_min) * (step / max_steps)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    # The same computation as torch.distributions.Categorical(logits=...).entropy(), which transformers
    # uses; reimplementing it differently would change acceptance on ties and break bit-exactness.
    return torch.distributions.Categorical(logits=logits).entropy()


def sample_reference(logits: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' sampling: [1, L, V] tempered logits -> (a token per position [1, L], entropy [1, L])."""
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    sampled = torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=generator).view(logits.shape[:-1])
    return sampled, token_entropy(logits)


def sample_fused(logits: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One log-softmax for both the sample and the entropy, sampling by an exponential race (gpt-fast's
    `multinomial_sample_one_no_sync`): no second pass over the vocabulary and no host sync."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # [1, L, V]
    probs = log_probs.exp()
    entropy = -(probs * log_probs).nan_to_num().sum(-1)  # [1, L]; 0 * -inf -> 0 like Categorical
    race = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.argmax(probs / race, dim=-1), entropy


def sample_fast(logits: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-max: argmax(log p - log(-log u)) is a sample of p. `uniform_` is far cheaper on the CPU than the
    exponential draws of `multinomial` or the race."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    uniform = torch.empty_like(log_probs).uniform_(1e-20, 1.0, generator=generator)
    entropy = -(log_probs.exp() * log_probs).nan_to_num().sum(-1)
    return torch.argmax(log_probs - torch.log(-torch.log(uniform)), dim=-1), entropy


SAMPLERS: dict[str, SampleFn] = {"reference": sample_reference, "fused": sample_fused, "fast": sample_fast}


def entropy_bounded_accept(entropy: torch.Tensor, entropy_bound: float) -> torch.Tensor:
    """Accept the k lowest-entropy positions with sum(H) - max(H) <= bound (arXiv 2505.24857)."""
    sorted_entropy, order = torch.sort(entropy, dim=-1, descending=False)
    selected = torch.cumsum(sorted_entropy, dim=-1) - sorted_entropy <= entropy_bound
    return torch.scatter(torch.zeros_like(selected), dim=-1, index=order, src=selected)


def prefix_accept(argmax_probability: list[float], committed: int, threshold: float) -> int:
    """The new length of the committed run: past `committed`, every leading position whose argmax probability
    reaches `threshold`, and at least one (so a canvas of L positions ends in at most L steps)."""
    end = committed
    while end < len(argmax_probability) and argmax_probability[end] >= threshold:
        end += 1
    return min(len(argmax_probability), max(end, committed + 1))

