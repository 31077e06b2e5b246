"""The engine: a DiffusionGemma resident on one device, fed token ids, returning token ids.

It deals only in token ids (text belongs to `prompt.py` and `postprocess.py`). One generation runs
at a time (a lock guards the model); the scheduler's single worker thread is its only caller in the
server. The engine owns the model's operations — prefill into the prefix KV cache, one canvas
denoised (`sampler.denoise_canvas`), one encoder pass that checks a draft — and `generate` runs the
named decoding (`decoding.py`) over them, retrying with a smaller canvas when the device runs out
of memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache, PreTrainedTokenizerBase

from dglsp.config import LatencySettings, SamplerSettings
from dglsp.errors import DeviceOutOfMemoryError
from dglsp.model import decoding
from dglsp.model.backend import CanvasCallback, Generation, GenerationStats, ModelBundle
from dglsp.model.diffusion import lm_logits
from dglsp.model.kvcache import PrefixCache, cache_mark, dynamic_layers, rollback
from dglsp.model.lean import LeanDecoder, LeanEncoder, supports
from dglsp.model.sampler import CanvasResult, denoise_canvas
from dglsp.model.schedule import ModelDefaults, Sampling, Schedule, resolve

log = logging.getLogger(__name__)
MIN_OOM_CANVAS = 4  # out-of-memory retries halve the canvas down to this many tokens, then give up
# End-of-turn tokens of chat templates: a chat model's reply ends there even where its generation config
# lists only EOS (Gemma 4's `<turn|>` is id 106 in the 26B).
END_OF_TURN_TOKENS = ("<turn|>", "<end_of_turn>", "<|im_end|>", "<|eot_id|>")


@dataclass
class Verdict:
    """What one encoder pass over a draft says (`Engine.verify`)."""

    kept: list[int]  # the draft's longest prefix the acceptance rule agrees with (its first token always)
    next_token: int  # the token after it: the rule's choice at the first disagreement
    logprobs: list[float]  # the encoder's log-probability of each kept token after the first, then of next_token
    predictions: list[int]  # the encoder's greedy prediction after each draft position (position i predicts i + 1)


class Engine:
    """Owns the model on its device; one generation at a time."""

    def __init__(self, model: DiffusionGemmaForBlockDiffusion, bundle: ModelBundle,
                 latency: LatencySettings | None = None, prompt_tokens: int = 1280):
        self.model = model
        self.bundle = bundle
        self.defaults: ModelDefaults = bundle.defaults
        self.device: torch.device = bundle.device
        self.vocab_size: int = model.config.get_text_config().vocab_size
        self.eos_ids: frozenset[int] = frozenset(_eos_ids(bundle.tokenizer, model))
        self.pad_id: int = bundle.tokenizer.pad_token_id or 0
        self._lock = threading.Lock()
        self._lean: LeanDecoder | None = None  # the lean passes, where the model and device take them (below)
        self._lean_encoder: LeanEncoder | None = None
        latency = latency or LatencySettings()
        self.kv_bytes_per_token = self._kv_bytes_per_token()
        self.prefix_cache = PrefixCache(model.config, 0)
        self.prefix_cache.kv_bytes_per_token = self.kv_bytes_per_token
        self.apply_latency(latency, prompt_tokens)
        # The serving path samples the cheap way: fused (one pass, no host sync) on the GPU, Gumbel-max on the CPU,
        # where `torch.multinomial` costs more than a step's attention. `sampler.sampling` "reference" keeps
        # transformers' math, bit-exact with generate(). The GPU compiles the decoder step (eager again if that fails).
        self.sampling: Sampling = "fused" if self.device.type == "cuda" else "fast"
        self._decoder_step: Callable[..., Any] = model
        if latency.compile_decoder == "on" or (latency.compile_decoder == "auto" and self.device.type == "cuda"):
            self._decoder_step = torch.compile(model, dynamic=True)
        elif latency.lean_passes and self.device.type == "cpu":
            unsupported = supports(model)
            if unsupported is None:
                self._lean, self._lean_encoder = LeanDecoder(model), LeanEncoder(model)
            else:
                log.info("transformers' passes: the lean ones do not cover this model (%s)", unsupported)

    # -- settings ------------------------------------------------------------------------------
    def schedule(self, settings: SamplerSettings) -> Schedule:
        return replace(resolve(settings, self.defaults), sampling=settings.sampling or self.sampling)

    def apply_latency(self, latency: LatencySettings, prompt_tokens: int) -> None:
        """Size the prefix cache: `latency.prefix_cache_documents` prompts of `prompt_tokens`, under the MB cap."""
        cap_mb = latency.prefix_cache_cpu_mb if self.device.type == "cpu" else latency.prefix_cache_gpu_mb
        budget = min(cap_mb << 20, latency.prefix_cache_documents * prompt_tokens * self.kv_bytes_per_token)
        self.prefix_cache.resize(budget if latency.prefix_cache else 0)

    @torch.inference_mode()
    def _kv_bytes_per_token(self) -> int:
        """What one token costs in a kept prefix cache: every layer's K and V (sliding layers too, as kept)."""
        cache = self.new_cache()
        self.encode(cache, [self.pad_id])
        return sum(t.numel() * t.element_size() for layer in dynamic_layers(cache) if layer.is_initialized
                   for t in (layer.keys, layer.values) if t is not None)

    # -- the backend's surface ---------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: list[int],
        schedule: Schedule,
        should_stop: Callable[[], bool] = lambda: False,
        on_canvas: CanvasCallback | None = None,
        deadline: float | None = None,
        cache_key: str | None = None,
        seed_ids: list[int] | None = None,
    ) -> Generation:
        """Run `schedule.decoding` after the prompt. `cache_key` (a document URI) reuses and keeps that
        document's prompt KV cache (`kvcache.py`); `seed_ids` start the canvases instead of noise."""
        assert prompt_ids, "the prompt must not be empty"
        with self._lock:
            while True:  # out of device memory: retry with half the canvas, down to MIN_OOM_CANVAS
                try:
                    return decoding.decode(self, prompt_ids, schedule, should_stop, on_canvas, deadline, cache_key,
                                           seed_ids)
                except torch.OutOfMemoryError as exc:
                    schedule = self._smaller_after_oom(schedule, cache_key, exc)

    def _smaller_after_oom(self, schedule: Schedule, cache_key: str | None, exc: torch.OutOfMemoryError) -> Schedule:
        """The schedule to retry with after an out-of-memory error; a last failure becomes
        `DeviceOutOfMemoryError` (a user-facing error), never a dead worker."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # hand cached blocks back so the retry starts from a clean slate
        if cache_key:  # the failed pass may have left a half-written entry
            self.prefix_cache.drop(cache_key)
        smaller = schedule.canvas_length // 2
        if smaller < MIN_OOM_CANVAS:
            raise DeviceOutOfMemoryError(
                f"the device ran out of memory even with a {schedule.canvas_length}-token canvas; lower "
                "context.max_prefix_tokens or sampler.canvas_length, or run on the CPU (--device cpu)"
            ) from exc
        log.warning("out of memory at canvas_length %d; retrying with %d", schedule.canvas_length, smaller)
        return schedule.with_canvas(smaller)

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int], cache_key: str, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Encode `prompt_ids` into `cache_key`'s prefix cache ahead of a request; returns the tokens encoded."""
        stats = GenerationStats()
        with self._lock:
            self.prepare_prompt(prompt_ids, stats, cache_key, should_stop=should_stop)
        return len(prompt_ids) - stats.cached_tokens

    def take_notices(self) -> list[tuple[str, str]]:
        return []  # a local model has no remote state to report

    def prompt_mismatch(self, prompt_ids: list[int]) -> str | None:
        return None  # the ids go to the model as they are

    def forget(self, key: str) -> None:
        self.prefix_cache.drop(key)

    def cache_stats(self) -> dict[str, Any]:
        return {**asdict(self.prefix_cache.stats), "hit_rate": self.prefix_cache.stats.hit_rate,
                "bytes": self.prefix_cache.nbytes, "budget_bytes": self.prefix_cache.budget_bytes,
                "kv_bytes_per_token": self.kv_bytes_per_token}

    def close(self) -> None:
        self.prefix_cache.clear()

    # -- the model's operations (the decodings' vocabulary) -------------------------------------------
    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.model.config.get_text_config(decoder=True))

    def encode(self, cache: DynamicCache, token_ids: list[int], exact: bool = True) -> torch.Tensor:
        """Run the causal encoder over `token_ids`, appending them to `cache`; returns hidden states [1, T, H].
        `exact` runs transformers' own forward; otherwise the lean pass where the engine has one (equal to
        rounding): the decodings' short passes after the prompt, never the prompt's prefill, which every path's
        cache shares."""
        start = cache.get_seq_length()
        ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        positions = torch.arange(start, start + len(token_ids), device=self.device).unsqueeze(0)
        if self._lean_encoder is not None and not exact:
            return self._lean_encoder(cache, ids, positions)
        out = self.model.model.encoder(input_ids=ids, past_key_values=cache, position_ids=positions)
        return out.last_hidden_state

    def prepare_prompt(self, prompt_ids: list[int], stats: GenerationStats, cache_key: str | None = None,
                       keep_last: bool = False, should_stop: Callable[[], bool] = lambda: False
                       ) -> tuple[DynamicCache | None, torch.Tensor | None]:
        """A cache holding the prompt (reused up to the first changed token when `cache_key` has one), and with
        `keep_last` the prompt's last hidden state [1, H] (its last token is then always encoded). The cache is
        None when `should_stop` ended the prefill (checked between chunks of the prompt)."""
        begin = time.perf_counter()
        last: list[torch.Tensor] = []

        def encode(cache: DynamicCache, token_ids: list[int]) -> torch.Tensor:
            hidden = self.encode(cache, token_ids)
            last[:] = [hidden[:, -1]]
            return hidden

        cache, stats.cached_tokens = self.prefix_cache.prepare(cache_key, prompt_ids, encode, keep_last, should_stop)
        stats.prefill_passes = int(stats.cached_tokens < len(prompt_ids))
        stats.encoder_passes += stats.prefill_passes
        stats.prefill_ms = (time.perf_counter() - begin) * 1000
        return cache, (last[0] if keep_last and last else None)

    def denoise(self, cache: DynamicCache, schedule: Schedule, generator: torch.Generator,
                should_stop: Callable[[], bool], on_step: Callable[[int, torch.Tensor], None] | None,
                deadline: float | None, fixed: list[int] | None = None,
                seed_tokens: list[int] | None = None) -> CanvasResult:
        """One canvas denoised after what `cache` holds."""

        def forward(canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
            return self.decoder_logits(cache, canvas, self_conditioning, exact=schedule.exact)

        return denoise_canvas(forward, schedule, self.vocab_size, self.device, generator=generator,
                              should_stop=should_stop, on_step=on_step, deadline=deadline, fixed=fixed,
                              eos_ids=self.eos_ids, pad_id=self.pad_id, seed_tokens=seed_tokens)

    def decoder_logits(self, cache: DynamicCache, canvas: torch.Tensor,
                       self_conditioning: torch.Tensor | None = None, exact: bool = True) -> torch.Tensor:
        """One bidirectional decoder forward over `canvas` [1, L] at the positions after what `cache` holds: raw
        logits [1, L, V]. The cache is read, never written. `exact` runs transformers' own forward (bit-exact with
        `generate()`); otherwise the lean step where the engine has one (equal to rounding)."""
        start = cache.get_seq_length()
        positions = torch.arange(start, start + canvas.shape[1], device=self.device).unsqueeze(0)
        if self_conditioning is not None:
            self_conditioning = self_conditioning.to(self.model.model.decoder.embed_tokens.weight.dtype)
        if self._lean is not None and not exact:
            return self._lean(cache, canvas, self_conditioning, positions)
        return self._decoder_forward(decoder_input_ids=canvas, past_key_values=cache,
                                     self_conditioning_logits=self_conditioning, decoder_position_ids=positions).logits

    def verify(self, cache: DynamicCache, draft: list[int], canvas_logits: torch.Tensor | None = None,
               mix: float = 0.0, exact: bool = True) -> Verdict:
        """One encoder pass over `draft` (its first token is already accepted): keep its longest prefix whose
        every token is the acceptance rule's choice, given the tokens before it. The rule is the encoder's
        greedy prediction (exactly token-by-token decoding) or, with `mix` > 0 and the draft canvas's own
        logits [L, V], the argmax of mix * canvas + (1 - mix) * encoder log-probabilities (APD's dial, arXiv
        2506.00413). The cache keeps the K/V of the kept tokens only."""
        mark = cache_mark(cache)
        hidden = self.encode(cache, draft, exact)  # [1, L, H]
        encoder = torch.log_softmax(self.lm_logits(hidden[0]), dim=-1)  # [L, V]: position i predicts i + 1
        scores = encoder
        if mix > 0 and canvas_logits is not None:  # canvas position i + 1 against the encoder's position i
            canvas = torch.log_softmax(canvas_logits.float(), dim=-1)
            shifted = torch.cat([canvas[1:], encoder[-1:]], dim=0)  # past the draft only the encoder speaks
            scores = mix * shifted + (1 - mix) * encoder
        chosen = scores.argmax(dim=-1).tolist()
        kept = 1
        while kept < len(draft) and draft[kept] == chosen[kept - 1]:
            kept += 1
        rollback(cache, mark, appended=len(draft), keep=kept)
        next_token = chosen[kept - 1]
        picked = draft[1:kept] + [next_token]
        logprobs = encoder[torch.arange(kept), torch.tensor(picked)].tolist()
        return Verdict(draft[:kept], next_token, logprobs, encoder.argmax(dim=-1).tolist())

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return lm_logits(self.model, hidden)

    def generator(self, seed: int | None) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return generator

    def _decoder_forward(self, **inputs):
        if self._decoder_step is self.model:
            return self.model(**inputs)
        try:
            return self._decoder_step(**inputs)
        except Exception:  # torch.compile can fail on a driver/toolchain it does not support: stay correct
            log.warning("compiled decoder step failed; using eager mode from now on", exc_info=True)
            self._decoder_step = self.model
            return self.model(**inputs)


def _eos_ids(tokenizer: PreTrainedTokenizerBase, model: DiffusionGemmaForBlockDiffusion) -> set[int]:
    """Where a generation ends: the generation config's EOS ids, the tokenizer's, and an end-of-turn token."""
    ids: set[int] = set()
    for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list):
            ids.update(source)
    vocabulary = tokenizer.get_vocab()
    ids.update(vocabulary[token] for token in END_OF_TURN_TOKENS if token in vocabulary)
    return ids
