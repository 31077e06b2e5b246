"""The engine: a DiffusionGemma resident on one device, fed token ids, returning token ids.

It deals only in token ids (text belongs to `prompt.py` and `postprocess.py`). One
generation runs at a time (a lock guards the model); the scheduler's single worker
thread is its only caller in the server. Each generation chains canvases
block-autoregressively: encode the prompt into the KV cache, denoise a canvas with
`sampler.denoise_canvas`, commit its argmax, encode it, and go on until EOS or
`max_canvases`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache, PreTrainedTokenizerBase

from dglsp.config import DEFAULT_MAX_STEPS, LatencySettings, SamplerSettings
from dglsp.errors import DeviceOutOfMemoryError
from dglsp.model.backend import CanvasCallback, Generation, GenerationStats
from dglsp.model.kvcache import PrefixCache, cache_mark, dynamic_layers, rollback
from dglsp.model.loading import ModelBundle
from dglsp.model.sampler import CanvasResult, denoise_canvas

log = logging.getLogger(__name__)
MIN_OOM_CANVAS = 4  # out-of-memory retries halve the canvas down to this many tokens, then give up
# End-of-turn tokens of chat templates: a chat model's reply ends there even where its generation config
# lists only EOS (Gemma 4's `<turn|>` is id 106 in the 26B).
END_OF_TURN_TOKENS = ("<turn|>", "<end_of_turn>", "<|im_end|>", "<|eot_id|>")


class Engine:
    """Owns the model on its device; one generation at a time."""

    def __init__(self, bundle: ModelBundle, latency: LatencySettings | None = None, prompt_tokens: int = 1280):
        self.bundle = bundle
        assert bundle.model is not None, "the engine runs a local model (a remote bundle holds none)"
        self.model: DiffusionGemmaForBlockDiffusion = bundle.model
        self.device = bundle.device
        text_config = self.model.config.get_text_config()
        self.vocab_size: int = text_config.vocab_size
        self.eos_ids: set[int] = _eos_ids(bundle.tokenizer, self.model)
        self._eos_frozen = frozenset(self.eos_ids)
        self.pad_id: int | None = bundle.tokenizer.pad_token_id
        self._lock = threading.Lock()
        latency = latency or LatencySettings()
        self.kv_bytes_per_token = self._kv_bytes_per_token()
        self.prefix_cache = PrefixCache(self.model.config, 0)
        self.prefix_cache.kv_bytes_per_token = self.kv_bytes_per_token
        self.apply_latency(latency, prompt_tokens)
        # GPU path: fused sampling math, and a compiled decoder step (eager again if compiling fails).
        # The CPU keeps the reference path, bit-exact with transformers' generate().
        self.fused_sampling = self.device.type == "cuda"
        self._decoder_step: Callable[..., Any] = self.model
        if self.device.type == "cuda" and latency.compile_decoder:
            self._decoder_step = torch.compile(self.model, dynamic=True)

    def apply_latency(self, latency: LatencySettings, prompt_tokens: int) -> None:
        """Size the prefix cache: `latency.prefix_cache_documents` prompts of `prompt_tokens`, under the MB cap."""
        cap_mb = latency.prefix_cache_cpu_mb if self.device.type == "cpu" else latency.prefix_cache_gpu_mb
        budget = min(cap_mb << 20, latency.prefix_cache_documents * prompt_tokens * self.kv_bytes_per_token)
        self.prefix_cache.resize(budget if latency.prefix_cache else 0)

    @torch.inference_mode()
    def _kv_bytes_per_token(self) -> int:
        """What one token costs in a kept prefix cache: every layer's K and V (sliding layers too, as kept)."""
        cache = self.new_cache()
        self.encode(cache, [self.pad_id or 0])
        return sum(t.numel() * t.element_size() for layer in dynamic_layers(cache) if layer.is_initialized
                   for t in (layer.keys, layer.values) if t is not None)

    @property
    def default_canvas_length(self) -> int:
        length = self.model.config.canvas_length
        assert length is not None, "the model's config sets no canvas_length"
        return int(length)

    @property
    def default_steps(self) -> int:
        """The model's own denoising steps, for `sampler.max_steps` 0: its dglsp.json (our models), else its
        generation config (48 for the 26B), else DEFAULT_MAX_STEPS."""
        ours = self.bundle.meta.get("sampler", {}).get("max_steps")
        theirs = getattr(self.model.generation_config, "max_denoising_steps", None)
        return int(ours or theirs or DEFAULT_MAX_STEPS)

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.model.config.get_text_config(decoder=True))

    @torch.inference_mode()
    def encode(self, cache: DynamicCache, token_ids: list[int]) -> torch.Tensor:
        """Run the causal encoder over `token_ids`, appending them to `cache`; returns hidden states [1, T, H]."""
        start = cache.get_seq_length()
        ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        positions = torch.arange(start, start + len(token_ids), device=self.device).unsqueeze(0)
        out = self.model.model.encoder(input_ids=ids, past_key_values=cache, position_ids=positions)
        return out.last_hidden_state

    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: list[int],
        sampler: SamplerSettings,
        should_stop: Callable[[], bool] = lambda: False,
        on_canvas: CanvasCallback | None = None,
        deadline: float | None = None,
        cache_key: str | None = None,
    ) -> Generation:
        """Block-diffusion generation: canvases of `sampler.canvas_length` until EOS or `max_canvases`.

        `cache_key` (a document URI) reuses and keeps that document's prompt KV cache (`kvcache.py`).
        """
        assert prompt_ids, "the prompt must not be empty"
        sampler = self.resolved(sampler)
        with self._lock:
            run = self._generate_verified if sampler.verify else self._generate
            while True:  # out of device memory: retry with half the canvas, down to MIN_OOM_CANVAS
                try:
                    return run(prompt_ids, sampler, should_stop, on_canvas, deadline, cache_key)
                except torch.OutOfMemoryError as exc:
                    sampler = self._smaller_after_oom(sampler, cache_key, exc)

    @property
    def own_schedule(self) -> dict[str, float | None]:
        """The model's diffusion schedule: its dglsp.json (our models), else its generation config."""
        config = self.model.generation_config
        sampler_config = getattr(config, "sampler_config", None)
        bound = (sampler_config.get("entropy_bound") if isinstance(sampler_config, dict)
                 else getattr(sampler_config, "entropy_bound", None))
        theirs = {"entropy_bound": bound, "t_max": getattr(config, "t_max", None),
                  "t_min": getattr(config, "t_min", None)}
        ours = self.bundle.meta.get("sampler", {})
        return {name: ours.get(name) or value for name, value in theirs.items()}

    def resolved(self, sampler: SamplerSettings) -> SamplerSettings:
        """`sampler` with every "the model's own" value (0 or None) taken from the model: its dglsp.json
        `sampler` section (our models), else its generation config, else the defaults in config.py."""
        own = self.bundle.meta.get("sampler", {})
        return replace(
            sampler.with_schedule(self.own_schedule),
            max_steps=sampler.max_steps or self.default_steps,
            verify=bool(own.get("verify")) if sampler.verify is None else sampler.verify,
            verify_steps=sampler.verify_steps or int(own.get("verify_steps") or 0),
            settle_steps=int(own.get("settle_steps") or 0) if sampler.settle_steps is None else sampler.settle_steps,
        )

    def _smaller_after_oom(self, sampler: SamplerSettings, cache_key: str | None,
                           exc: torch.OutOfMemoryError) -> SamplerSettings:
        """The settings to retry with after an out-of-memory error; a last failure becomes
        `DeviceOutOfMemoryError` (a user-facing error), never a dead worker."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # hand cached blocks back so the retry starts from a clean slate
        if cache_key:  # the failed pass may have left a half-written entry
            self.prefix_cache.drop(cache_key)
        smaller = sampler.canvas_length // 2
        if smaller < MIN_OOM_CANVAS:
            raise DeviceOutOfMemoryError(
                f"the device ran out of memory even with a {sampler.canvas_length}-token canvas; lower "
                "context.max_prefix_tokens or sampler.canvas_length, or run on the CPU (--device cpu)"
            ) from exc
        log.warning("out of memory at canvas_length %d; retrying with %d", sampler.canvas_length, smaller)
        return replace(sampler, canvas_length=smaller)

    def take_notices(self) -> list[tuple[str, str]]:
        return []  # a local model has no remote state to report

    def prompt_mismatch(self, prompt_ids: list[int]) -> str | None:
        return None  # the ids go to the model as they are

    def close(self) -> None:
        self.prefix_cache.clear()

    def prefill(self, prompt_ids: list[int], stats: GenerationStats, cache_key: str | None = None,
                keep_last: bool = False, should_stop: Callable[[], bool] = lambda: False,
                last_hidden: list[torch.Tensor] | None = None) -> DynamicCache | None:
        """A cache holding the prompt: reused up to the first changed token when `cache_key` has one.
        None when `should_stop` ended the prefill (checked between chunks of the prompt). With `last_hidden`
        (a list to fill), the prompt's last token is always encoded and its hidden state [1, H] put there."""
        begin = time.perf_counter()

        def encode(cache: DynamicCache, token_ids: list[int]) -> torch.Tensor:
            hidden = self.encode(cache, token_ids)
            if last_hidden is not None:
                last_hidden[:] = [hidden[:, -1]]
            return hidden

        cache, stats.cached_tokens = self.prefix_cache.prepare(
            cache_key, prompt_ids, encode, keep_last or last_hidden is not None, should_stop)
        stats.encoder_passes += int(stats.cached_tokens < len(prompt_ids))
        stats.prefill_ms = (time.perf_counter() - begin) * 1000
        return cache

    def _generate(self, prompt_ids, sampler, should_stop, on_canvas, deadline, cache_key) -> Generation:
        stats = GenerationStats(prefill_tokens=len(prompt_ids))
        begin = time.perf_counter()
        cache = self.prefill(prompt_ids, stats, cache_key, should_stop=should_stop)
        if cache is None:
            stats.stopped = True
            stats.total_ms = (time.perf_counter() - begin) * 1000
            return Generation([], False, stats)
        generator = self._generator(sampler.seed)
        output: list[int] = []
        logprobs: list[float] = []
        block: list[int] = []
        finished = False
        for index in range(sampler.max_canvases):
            if should_stop():
                stats.stopped = True
                break
            if index:  # commit the previous canvas into the cache before denoising the next
                self.encode(cache, block)
                stats.encoder_passes += 1
            canvas = self._denoise(cache, sampler, stats, generator, should_stop, on_canvas, output, deadline)
            if canvas.stopped:
                stats.stopped = True
                break
            block = canvas.tokens[0].tolist()
            eos_at = next((i for i, t in enumerate(block) if t in self.eos_ids), None)
            output.extend(block if eos_at is None else block[:eos_at])
            if canvas.logprobs is not None:
                logprobs.extend(canvas.logprobs[0, : len(block) if eos_at is None else eos_at].tolist())
            finished = eos_at is not None
            # A committed-canvas callback returning True ends the generation (e.g. the block is closed).
            if on_canvas is not None and on_canvas(stats.steps, list(output), True):
                finished = True
            past_deadline = deadline is not None and time.monotonic() >= deadline
            if finished or past_deadline:
                # Cut short: the canvas was still denoising, or more canvases were wanted.
                stats.hit_deadline = past_deadline and not (finished and canvas.converged)
                break
        stats.generated_tokens = len(output)
        stats.total_ms = (time.perf_counter() - begin) * 1000
        return Generation(output, finished, stats, logprobs)

    def _generate_verified(self, prompt_ids, sampler, should_stop, on_canvas, deadline, cache_key) -> Generation:
        """Verified decoding: each canvas is a draft whose first position holds the pending greedy token; one
        causal encoder pass over it predicts every next token, the agreeing prefix is kept (its K/V stay in the
        cache, the rest is rolled back) and the encoder's token at the first disagreement becomes the next
        draft's pending token. The kept text is exactly greedy token-by-token decoding."""
        stats = GenerationStats(prefill_tokens=len(prompt_ids))
        begin = time.perf_counter()
        last_hidden: list[torch.Tensor] = []
        cache = self.prefill(prompt_ids, stats, cache_key, should_stop=should_stop, last_hidden=last_hidden)
        if cache is None:
            stats.stopped = True
            stats.total_ms = (time.perf_counter() - begin) * 1000
            return Generation([], False, stats)
        draft_sampler = replace(sampler, max_steps=sampler.verify_steps or sampler.max_steps)
        budget = sampler.canvas_length * sampler.max_canvases
        generator = self._generator(sampler.seed)
        pending_logprobs = torch.log_softmax(self._lm_logits(last_hidden[0]), dim=-1)  # [1, V]
        pending = int(pending_logprobs.argmax(-1))
        output: list[int] = []
        logprobs: list[float] = [float(pending_logprobs.max())]
        finished = False
        while not finished and len(output) < budget:
            if pending in self.eos_ids:
                finished = True
                break
            if should_stop():
                stats.stopped = True
                break
            length = min(sampler.canvas_length, budget - len(output))
            canvas = self._denoise(cache, replace(draft_sampler, canvas_length=length), stats, generator,
                                   should_stop, on_canvas, output, deadline, fixed=[pending])
            if canvas.stopped:
                stats.stopped = True
                break
            draft = [pending, *canvas.tokens[0, 1:].tolist()]
            kept, pending, step_logprobs = self._verify(cache, draft)
            stats.verifications += 1
            stats.encoder_passes += 1
            stats.accepted_tokens += len(kept)
            eos_at = next((i for i, token in enumerate(kept) if token in self.eos_ids), None)
            finished = eos_at is not None
            output.extend(kept[:eos_at])
            logprobs.extend(step_logprobs)  # logprobs[j] is the j-th greedy token's, the pending one's last
            if on_canvas is not None and on_canvas(stats.steps, list(output), True):
                finished = True
            if deadline is not None and time.monotonic() >= deadline:
                stats.hit_deadline = not finished
                break
        output = output[:budget]
        logprobs = logprobs[: len(output)]
        stats.generated_tokens = len(output)
        stats.total_ms = (time.perf_counter() - begin) * 1000
        return Generation(output, finished, stats, logprobs)

    def _denoise(self, cache: DynamicCache, sampler: SamplerSettings, stats: GenerationStats,
                 generator: torch.Generator, should_stop: Callable[[], bool], on_canvas: CanvasCallback | None,
                 output: list[int], deadline: float | None, fixed: list[int] | None = None) -> CanvasResult:
        """One canvas denoised after what `cache` holds, counted in `stats`; `on_canvas` sees each step's
        canvas after the `output` so far."""
        canvas = denoise_canvas(
            self._denoiser(cache, cache.get_seq_length(), sampler.canvas_length), sampler, self.vocab_size,
            self.device, generator=generator, should_stop=should_stop, on_step=_step_reporter(on_canvas, output),
            deadline=deadline, fused_sampling=self.fused_sampling, fixed=fixed, eos_ids=self._eos_frozen,
        )
        stats.canvases += 1
        stats.steps += canvas.steps
        stats.decode_ms += canvas.ms
        return canvas

    def _verify(self, cache: DynamicCache, draft: list[int]) -> tuple[list[int], int, list[float]]:
        """One encoder pass over `draft` (its first token is the greedy one already): the longest prefix the
        encoder's greedy predictions agree with, the encoder's token after it, and the log-probabilities of
        the kept tokens after the first and of that next token. The cache keeps the K/V of the kept tokens."""
        mark = cache_mark(cache)
        hidden = self.encode(cache, draft)  # [1, L, H]
        log_probs = torch.log_softmax(self._lm_logits(hidden[0]), dim=-1)  # [L, V]: position i predicts i + 1
        best, predicted = log_probs.max(dim=-1)
        predicted_ids = predicted.tolist()
        kept = 1
        while kept < len(draft) and draft[kept] == predicted_ids[kept - 1]:
            kept += 1
        rollback(cache, mark, appended=len(draft), keep=kept)
        return draft[:kept], predicted_ids[kept - 1], best[:kept].tolist()

    def _denoiser(self, cache: DynamicCache, position: int, canvas_length: int):
        positions = torch.arange(position, position + canvas_length, device=self.device).unsqueeze(0)
        embed_dtype = self.model.model.decoder.embed_tokens.weight.dtype

        def denoise(canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
            if self_conditioning is not None:
                self_conditioning = self_conditioning.to(embed_dtype)
            out = self._decoder_forward(
                decoder_input_ids=canvas,
                past_key_values=cache,
                self_conditioning_logits=self_conditioning,
                decoder_position_ids=positions,
            )
            return out.logits

        return denoise

    def _decoder_forward(self, **inputs):
        if self._decoder_step is self.model:
            return self.model(**inputs)
        try:
            return self._decoder_step(**inputs)
        except Exception:  # torch.compile can fail on a driver/toolchain it does not support: stay correct
            log.warning("compiled decoder step failed; using eager mode from now on", exc_info=True)
            self._decoder_step = self.model
            return self.model(**inputs)

    def _generator(self, seed: int | None) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return generator

    @torch.inference_mode()
    def generate_autoregressive(
        self,
        prompt_ids: list[int],
        max_new_tokens: int,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Generation:
        """Greedy token-by-token decoding through the encoder and the shared LM head (the baseline)."""
        with self._lock:
            stats = GenerationStats(prefill_tokens=len(prompt_ids))
            begin = time.perf_counter()
            cache = self.new_cache()
            hidden = self.encode(cache, prompt_ids)
            stats.encoder_passes = 1
            stats.prefill_ms = (time.perf_counter() - begin) * 1000
            output: list[int] = []
            logprobs: list[float] = []
            finished = False
            for index in range(max_new_tokens):
                best, chosen = torch.log_softmax(self._lm_logits(hidden[:, -1]), dim=-1).max(dim=-1)
                next_id = int(chosen)
                logprobs.append(float(best))
                if next_id in self.eos_ids:
                    finished = True
                    break
                output.append(next_id)
                if index == max_new_tokens - 1:
                    break
                if should_stop():
                    stats.stopped = True
                    break
                hidden = self.encode(cache, [next_id])
                stats.encoder_passes += 1
            stats.generated_tokens = len(output)
            stats.total_ms = (time.perf_counter() - begin) * 1000
            stats.decode_ms = stats.total_ms - stats.prefill_ms
            return Generation(output, finished, stats, logprobs[: len(output)])

    def _lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.lm_head(hidden).float()
        cap = self.model.final_logit_softcapping
        return torch.tanh(logits / cap) * cap if cap else logits


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


def _step_reporter(on_canvas: CanvasCallback | None, committed: list[int]):
    if on_canvas is None:
        return None

    def report(step: int, argmax_canvas: torch.Tensor) -> None:
        on_canvas(step, committed + argmax_canvas[0].tolist(), False)

    return report
