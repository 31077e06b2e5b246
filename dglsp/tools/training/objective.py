"""The training objective: DiffusionGemma's recipe (NeMo Automodel), on a `Batch` of FIM examples.

Written on the model's encoder and decoder calls because `forward()` returns no loss. One step:

1. The causal encoder reads the FIM prompt (built exactly as served) and writes the KV cache; the same pass
   gives a next-token loss on every prompt token.
2. The canvas (middle, EOS, padding) is corrupted with uniform random tokens at rate t ~ U(eps, 1); the
   bidirectional decoder denoises it against the cache, at positions continuing after the prompt, as at
   inference. `canvases_per_prompt` noisy copies share one encoder pass (the decoder is cheap next to the
   encoder).
3. Self-conditioning: a first decoder pass without gradient; its logits are fed to the second pass for a
   random half of the canvases.
4. The encoder continues over middle + EOS from the cache (how token-by-token decoding runs), adding
   next-token loss on the clean middle.

Canvas cross-entropy is weighted: middle tokens and EOS 1, padding `pad_weight`, so easy padding does not
dominate. The loss is canvas + `ar_weight` x AR; the held-out loss is their unweighted sum.

With `distill_weight` > 0, `distill_canvases` of each prompt's noisy canvases learn the encoder's own greedy
middle instead of the data's (`distill.py`), adding `distill_weight` x that cross-entropy and
`certainty_weight` x its certainty term; the ground-truth canvases and the AR loss stay.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache

from dglsp.model.diffusion import corrupt, lm_logits
from dglsp.model.loading import cpu_has_bf16_matmuls
from dglsp.tools.options import TrainConfig
from dglsp.tools.training.distill import Teacher, distill_terms, greedy_middles, inputs_and_weights
from dglsp.tools.training.examples import Batch


@dataclass
class _Loss:
    """One of the two losses, with the per-token cross-entropy and the weights it averages."""

    value: torch.Tensor  # []
    per_token: torch.Tensor  # [N]: flat cross-entropy, one per target
    weights: torch.Tensor  # the targets' shape: canvas weights, or the AR mask


@dataclass
class _Distilled:
    """The distillation terms of a step (`distill.distill_terms`), and how long the teacher's middles were."""

    value: torch.Tensor
    certainty: torch.Tensor
    teacher_tokens: float  # the teacher's mean middle length, EOS included
    canvas_tokens: int  # positions of the distilled canvases (through the model, under a loss)


def training_loss(
    model: DiffusionGemmaForBlockDiffusion, batch: Batch, cfg: TrainConfig, generator: torch.Generator,
    eos_id: int = 1, pad_id: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The step's loss, canvas + `ar_weight` x AR (the module docstring's four parts) and the distillation terms
    when on, and its statistics."""
    cache, prompt_logits = _encode_prompt(model, batch)
    teacher = None
    if cfg.distill_weight > 0 and cfg.distill_canvases > 0:
        teacher = greedy_middles(model, cache, prompt_logits[:, -1].detach(), batch.canvas_ids.shape[1], eos_id,
                                 pad_id)
    canvas, distilled = _canvas_loss(model, batch, cache, cfg, generator, teacher)
    ar = _continuation_loss(model, batch, cache, prompt_logits, cfg.canvases_per_prompt)
    loss = canvas.value + cfg.ar_weight * ar.value
    stats = _stats(batch, canvas, ar)
    if distilled is not None:
        loss = loss + cfg.distill_weight * distilled.value + cfg.certainty_weight * distilled.certainty
        stats.update(distill=distilled.value.item(), certainty=distilled.certainty.item(),
                     teacher_tokens=distilled.teacher_tokens, tokens=stats["tokens"] + distilled.canvas_tokens,
                     loss_tokens=stats["loss_tokens"] + distilled.canvas_tokens)
    return loss, stats


def _encode_prompt(model: DiffusionGemmaForBlockDiffusion, batch: Batch) -> tuple[DynamicCache, torch.Tensor]:
    """1. The encoder over the prompt: the KV cache for the decoder, and the logits of its next-token loss."""
    batch_size, prompt_length = batch.prompt_ids.shape
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    positions = torch.arange(prompt_length, device=batch.prompt_ids.device).unsqueeze(0).expand(batch_size, -1)
    encoded = model.model.encoder(input_ids=batch.prompt_ids, past_key_values=cache, position_ids=positions)
    return cache, lm_logits(model, encoded.last_hidden_state)  # [B, L, V]


def _canvas_loss(model: DiffusionGemmaForBlockDiffusion, batch: Batch, cache: DynamicCache, cfg: TrainConfig,
                 generator: torch.Generator, teacher: Teacher | None = None) -> tuple[_Loss, _Distilled | None]:
    """2-3. The decoder over `canvases_per_prompt` noisy copies of each canvas, sharing the prompt's cache
    (repeated in place), with two-pass self-conditioning. With a `teacher`, the last `distill_canvases` copies
    of each prompt are the distilled ones (their own targets, inputs and weights): one decoder call for both."""
    vocab = model.config.get_text_config().vocab_size
    prompt_length, canvas_length = batch.prompt_ids.shape[1], batch.canvas_ids.shape[1]
    repeats = cfg.canvases_per_prompt
    cache.batch_repeat_interleave(repeats)
    clean = batch.canvas_ids.repeat_interleave(repeats, 0)  # [B*R, C]
    weights = batch.canvas_weights.repeat_interleave(repeats, 0)
    noisy = corrupt(clean, vocab, cfg.t_eps, generator)
    distilled_rows = torch.zeros(clean.shape[0], dtype=torch.bool, device=clean.device)
    distill_weights = None
    if teacher is not None:
        copy = torch.arange(clean.shape[0], device=clean.device) % repeats
        distilled_rows = copy >= repeats - min(cfg.distill_canvases, repeats)
        targets = teacher.targets.repeat_interleave(repeats, 0)[distilled_rows]
        ends = teacher.ends.repeat_interleave(repeats, 0)[distilled_rows]
        inputs, distill_weights = inputs_and_weights(targets, ends, vocab, cfg.t_eps, cfg.distill_gamma,
                                                     cfg.pad_weight, generator)
        clean, noisy = clean.clone(), noisy.clone()
        clean[distilled_rows], noisy[distilled_rows] = targets, inputs
    canvas_positions = torch.arange(prompt_length, prompt_length + canvas_length, device=clean.device)
    canvas_positions = canvas_positions.unsqueeze(0).expand(clean.shape[0], -1)

    def decode(self_conditioning: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        out = model(decoder_input_ids=noisy, past_key_values=cache, decoder_position_ids=canvas_positions,
                    self_conditioning_logits=self_conditioning, self_conditioning_mask=mask)
        return out.logits

    # The first pass is not trained, as in the recipe.
    with torch.no_grad():
        first = decode(None, None)
    use_sc = torch.rand(clean.shape[0], generator=generator, device=clean.device) < cfg.self_conditioning_prob
    canvas_logits = decode(first.detach(), use_sc)
    truth = ~distilled_rows
    canvas_ce = F.cross_entropy(canvas_logits[truth].reshape(-1, vocab), clean[truth].reshape(-1), reduction="none")
    truth_weights = weights[truth]
    canvas = _Loss((canvas_ce * truth_weights.reshape(-1)).sum() / truth_weights.sum(), canvas_ce, truth_weights)
    if teacher is None or distill_weights is None:
        return canvas, None
    value, certainty, _ = distill_terms(canvas_logits[distilled_rows], clean[distilled_rows], distill_weights)
    return canvas, _Distilled(value, certainty, float(teacher.ends.float().mean()), int(distill_weights.numel()))


def _continuation_loss(model: DiffusionGemmaForBlockDiffusion, batch: Batch, cache: DynamicCache,
                       prompt_logits: torch.Tensor, repeats: int) -> _Loss:
    """4. The encoder continues over middle + EOS from the cache (token-by-token decoding's view): the
    next-token loss on the prompt and the clean middle."""
    vocab = model.config.get_text_config().vocab_size
    batch_size, prompt_length = batch.prompt_ids.shape
    device = batch.prompt_ids.device
    # One cache row per prompt again: the first of its `repeats` copies.
    cache.batch_select_indices(torch.arange(0, batch_size * repeats, repeats, device=device))
    width = batch.continuation_ids.shape[1]
    continuation_positions = torch.arange(prompt_length, prompt_length + width, device=device)
    continued = model.model.encoder(
        input_ids=batch.continuation_ids, past_key_values=cache,
        position_ids=continuation_positions.unsqueeze(0).expand(batch_size, -1),
    )
    continuation_logits = lm_logits(model, continued.last_hidden_state)
    # Targets: prompt[1:], then the first continuation token from the last prompt position, then the rest.
    ar_logits = torch.cat([prompt_logits, continuation_logits[:, :-1]], dim=1)
    ar_targets = torch.cat([batch.prompt_ids[:, 1:], batch.continuation_ids], dim=1)
    ar_mask = torch.cat([torch.ones_like(batch.prompt_ids[:, 1:], dtype=torch.bool), batch.continuation_mask], 1)
    ar_ce = F.cross_entropy(ar_logits.reshape(-1, vocab), ar_targets.reshape(-1), reduction="none")
    return _Loss((ar_ce * ar_mask.reshape(-1)).sum() / ar_mask.sum(), ar_ce, ar_mask)


def _stats(batch: Batch, canvas: _Loss, ar: _Loss) -> dict[str, float]:
    """Both losses, each also on the middle tokens alone, and the tokens through the model and under a loss."""
    batch_size, prompt_length = batch.prompt_ids.shape
    middle_mask = canvas.weights == 1.0
    canvas_ce, ar_ce = canvas.per_token.detach(), ar.per_token.detach()
    canvas_tokens = canvas.weights.numel()
    return {
        "canvas": canvas.value.item(), "ar": ar.value.item(),
        "canvas_middle": ((canvas_ce * middle_mask.reshape(-1)).sum() / middle_mask.sum()).item(),
        "ar_middle": ((ar_ce.reshape(batch_size, -1)[:, prompt_length - 1:] * batch.continuation_mask).sum()
                      / batch.continuation_mask.sum()).item(),
        "tokens": batch_size * (prompt_length + batch.continuation_ids.shape[1]) + canvas_tokens,
        "loss_tokens": int(ar.weights.sum()) + canvas_tokens,
    }


@torch.no_grad()
def held_out_loss(model: DiffusionGemmaForBlockDiffusion, batches: list[Batch], cfg: TrainConfig) -> dict[str, float]:
    device = batches[0].prompt_ids.device
    generator = torch.Generator(device=device).manual_seed(0)
    amp = autocast_dtype(cfg, device)
    totals: dict[str, float] = {}
    model.eval()
    plain = replace(cfg, distill_weight=0.0)  # held-out loss is the base objective's: comparable across runs
    for batch in batches:
        with autocast(amp, device):
            _, stats = training_loss(model, batch, plain, generator)
        for key in ("canvas", "ar", "canvas_middle", "ar_middle"):
            totals[key] = totals.get(key, 0.0) + stats[key] / len(batches)
        # Unweighted canvas + AR: comparable across runs whatever their --ar-weight.
        totals["loss"] = totals.get("loss", 0.0) + (stats["canvas"] + stats["ar"]) / len(batches)
    model.train()
    return {k: round(v, 4) for k, v in totals.items()}


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `cfg.precision` on `device`, or None for plain fp32."""
    if cfg.precision == "fp32":
        return None
    if cfg.precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16_matmuls() else None


def autocast(dtype: torch.dtype | None, device: torch.device):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(*(getattr(batch, f).to(device) for f in batch.__dataclass_fields__))
