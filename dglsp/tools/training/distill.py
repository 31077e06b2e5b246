"""Self-distillation: the canvas learns the encoder's own greedy decoding.

The encoder and the decoder share every weight, and token-by-token decoding through the encoder writes
better text than a few parallel denoising steps (the canvas commits dependent tokens it is not sure of
together, each from its own marginal). So the teacher is our own greedy decoding: for each training
prompt, decoded from the prompt's KV cache of the same step (no gradient, batched, on the fly: every step
brings new prompts, the teacher is never stale, and the examples are as many as the corpus), and the
canvas learns that one mode instead of the data's many (sequence-level distillation; CLLM, DFlash,
dParallel, TiDAR train parallel decoders on their AR model's own outputs).

For `cfg.distill_canvases` of each prompt's `canvases_per_prompt` noisy canvases, the target is the
teacher's middle (then EOS, then padding) and the input is one of:

* pure noise (t = 1): the first pass of every canvas; TiDAR's fully masked draft;
* the target corrupted at t ~ U(eps, 1), as the ground-truth canvases are;
* a committed prefix of the target, then noise: the state the prefix sampler is in when it is on track
  (its own trajectory, as CLLM and dParallel train on), where only the positions after the prefix count.

The cross-entropy weights fall along the canvas from its first uncommitted position, exp(-k / gamma)
(DFlash), padding after EOS down-weighted; and a certainty term (dParallel's certainty forcing) lowers the
entropy at temperature 0.5 where the canvas's argmax is already the target, so the decoder becomes sure of
several positions at once. The ground-truth canvas loss and the encoder's next-token loss stay in the
objective (`objective.training_loss`), so the teacher does not drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dglsp.model.diffusion import corrupt, lm_logits, uniform_noise
from dglsp.model.kvcache import detached_copy

CERTAINTY_TEMPERATURE = 0.5  # dParallel's
# Shares of the distilled canvases' inputs: pure noise, corrupted target, committed prefix + noise.
INPUT_SHARES = (0.4, 0.3, 0.3)


@dataclass
class Teacher:
    targets: torch.Tensor  # [B, C]: the greedy middle, then EOS, then padding
    ends: torch.Tensor  # [B]: positions up to and including EOS (C when the middle fills the canvas)


@torch.no_grad()
def greedy_middles(model, cache, first_logits: torch.Tensor, canvas_length: int, eos_id: int, pad_id: int) -> Teacher:
    """The encoder's greedy continuation of each prompt in `cache` (its last position's logits `first_logits`
    [B, V]), up to EOS or `canvas_length` tokens, decoded from a detached copy of the cache."""
    work = detached_copy(cache, model.config)
    batch = first_logits.shape[0]
    start = cache.get_seq_length()
    token = first_logits.argmax(-1)  # [B]
    done = torch.zeros(batch, dtype=torch.bool, device=token.device)
    columns = []
    for index in range(canvas_length):
        token = torch.where(done, torch.full_like(token, pad_id), token)
        columns.append(token)
        done = done | (token == eos_id)
        if index == canvas_length - 1 or bool(done.all()):
            break
        positions = torch.full((batch, 1), start + index, device=token.device)
        hidden = model.model.encoder(input_ids=token[:, None], past_key_values=work, position_ids=positions)
        token = lm_logits(model, hidden.last_hidden_state[:, -1]).argmax(-1)
    targets = torch.full((batch, canvas_length), pad_id, dtype=torch.long, device=token.device)
    targets[:, : len(columns)] = torch.stack(columns, dim=1)
    is_eos = targets == eos_id
    first_eos = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(targets[:, 0], canvas_length - 1))
    return Teacher(targets, first_eos + 1)


def inputs_and_weights(targets: torch.Tensor, ends: torch.Tensor, vocab_size: int, t_eps: float, gamma: float,
                       pad_weight: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The distilled canvases' inputs (one of the three kinds per row, see the module docstring) and the weight
    of each position's loss: 0 on a committed prefix, exp(-k / gamma) from the first free position, times
    `pad_weight` past EOS."""
    rows, length = targets.shape
    device = targets.device
    kind = torch.multinomial(torch.tensor(INPUT_SHARES, device=device), rows, replacement=True, generator=generator)
    noise = uniform_noise((rows, length), vocab_size, generator, device)
    corrupted = corrupt(targets, vocab_size, t_eps, generator)
    committed = (torch.rand(rows, generator=generator, device=device) * ends.float()).long()  # [0, end)
    committed = torch.where(kind == 2, committed, torch.zeros_like(committed))
    position = torch.arange(length, device=device)[None, :]
    held = position < committed[:, None]
    inputs = torch.where(kind[:, None] == 1, corrupted, noise)
    inputs = torch.where(held, targets, inputs)
    distance = (position - committed[:, None]).clamp(min=0).float()
    weights = torch.exp(-distance / gamma) * (~held)
    weights = weights * torch.where(position < ends[:, None], 1.0, pad_weight)
    return inputs, weights


def distill_terms(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weighted cross-entropy toward the teacher, certainty term, per-position cross-entropy) of the decoder's
    logits [N, C, V] on the distilled canvases."""
    vocab = logits.shape[-1]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), reduction="none")
    flat = weights.reshape(-1)
    distill = (ce * flat).sum() / flat.sum().clamp(min=1e-6)
    right = (logits.argmax(-1) == targets).reshape(-1) & (flat > 0)
    log_probs = torch.log_softmax(logits.float() / CERTAINTY_TEMPERATURE, dim=-1).reshape(-1, vocab)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    certainty = (entropy * flat * right).sum() / (flat * right).sum().clamp(min=1e-6)
    return distill, certainty, ce
