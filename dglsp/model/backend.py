"""The seam between the completer and whatever generates: the local `Engine` or the remote client.

Contract: `generate(prompt_ids, schedule, should_stop, on_canvas=, deadline=, cache_key=)` takes the
prompt as token ids (built by `completion.prompt`, the same for both) and a `Schedule` the backend
resolved from the user's settings and the model's own defaults (`schedule(settings)`), and returns a
`Generation` whose token ids the completer decodes and post-processes itself, so stop rules and
post-processing never depend on where the model runs. `should_stop` is polled between canvases or
denoising steps. `take_notices()` hands over changes of state the user must hear about (a remote
server going down), each once; `forget(key)` drops what is kept for a closed document; `close()`
releases what the backend holds (connections, threads). This module imports neither torch nor an
implementation: the types here are what the layers above see, and what the loaders hand out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dglsp.config import LatencySettings, SamplerSettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from dglsp.model.schedule import ModelDefaults, Schedule

# (forward passes spent after the prefill, token ids so far, committed) -> True to end the generation after a
# committed block. Called after every denoising step (committed False) and every committed block (True).
CanvasCallback = Callable[[int, list[int], bool], bool | None]
ProgressFn = Callable[[str, int], None]  # (message, percent)


@dataclass
class ModelBundle:
    """What a model directory holds besides the weights: the tokenizer, dglsp metadata and the model's defaults."""

    tokenizer: PreTrainedTokenizerBase
    meta: dict  # dglsp.json (prompt format, training record); {} for models we did not train
    path: Path
    device: Any  # torch.device locally; a description of the server for the remote backend
    defaults: ModelDefaults  # what the model recommends (its dglsp.json, else its generation config)


@dataclass
class GenerationStats:
    prefill_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the document's prefix KV cache (not encoded)
    prefill_ms: float = 0.0
    canvases: int = 0
    steps: int = 0  # decoder forward passes over canvases
    encoder_passes: int = 0
    decode_ms: float = 0.0
    total_ms: float = 0.0
    generated_tokens: int = 0
    stopped: bool = False
    hit_deadline: bool = False
    verifications: int = 0  # verified decoding: encoder passes that checked a draft
    accepted_tokens: int = 0  # tokens those checks committed (the draft's agreed prefix + the encoder's own)
    prefill_passes: int = 0  # encoder passes over the prompt (0 when the cache held all of it)

    @property
    def forward_passes(self) -> int:
        return self.steps + self.encoder_passes

    @property
    def ms_per_step(self) -> float:
        return self.decode_ms / self.steps if self.steps else 0.0

    @property
    def accepted_per_verification(self) -> float:
        return self.accepted_tokens / self.verifications if self.verifications else 0.0

    @property
    def tokens_per_forward(self) -> float:
        """Generated tokens per forward pass of any kind (prefill and committed canvases included)."""
        return self.generated_tokens / self.forward_passes if self.forward_passes else 0.0

    @property
    def decoding_passes(self) -> int:
        """Forward passes after the prompt's: what a decoding spends per token it writes."""
        return self.forward_passes - self.prefill_passes

    def summary(self) -> str:
        # Token-by-token decoding runs no decoder step: its passes are the encoder's, one per token.
        encoder = self.encoder_passes - self.prefill_passes
        passes = f"{self.steps} steps" + (f" + {encoder} encoder passes" if encoder else "")
        # The time after the prompt's prefill, per pass: the decoder's steps and the encoder's passes alike.
        per_pass = (self.total_ms - self.prefill_ms) / self.decoding_passes if self.decoding_passes else 0.0
        return (
            f"prefill {self.prefill_tokens} tok{f' ({self.cached_tokens} cached)' if self.cached_tokens else ''} "
            f"{self.prefill_ms:.0f} ms, {passes} "
            f"({per_pass:.1f} ms/pass, {self.tokens_per_forward:.2f} tok/forward), "
            f"{f'{self.canvases} canvases, ' if self.canvases > 1 else ''}"
            f"{f'{self.accepted_per_verification:.1f} tok/verification, ' if self.verifications else ''}"
            f"total {self.total_ms:.0f} ms{' [stopped]' if self.stopped else ''}"
            f"{' [deadline]' if self.hit_deadline else ''}"
        )


@dataclass
class Generation:
    token_ids: list[int]  # generated ids, EOS and what follows it removed
    finished: bool  # the model ended the block with EOS
    stats: GenerationStats = field(default_factory=GenerationStats)
    # The model's log-probability of each generated token (the decoder's at the canvas's last step; the
    # encoder's for verified and token-by-token decoding); None where the backend cannot tell (remote).
    token_logprobs: list[float] | None = None


class Backend(Protocol):
    device: Any  # a torch.device for the local engine; a description of the server for the remote one
    defaults: ModelDefaults

    def schedule(self, settings: SamplerSettings) -> Schedule:
        """`settings` resolved against the model's defaults, for this backend's device."""
        ...

    def generate(
        self,
        prompt_ids: list[int],
        schedule: Schedule,
        should_stop: Callable[[], bool] = ...,
        on_canvas: CanvasCallback | None = None,
        deadline: float | None = None,
        cache_key: str | None = None,
        seed_ids: list[int] | None = None,
    ) -> Generation:
        """`seed_ids`: where the canvases start instead of noise (a region's current text, for a rewrite); a
        backend that cannot seed ignores them."""
        ...

    def prefill(self, prompt_ids: list[int], cache_key: str, should_stop: Callable[[], bool] = ...) -> int:
        """Encode a prompt into `cache_key`'s prefix cache ahead of a request; returns the tokens encoded."""
        ...

    def take_notices(self) -> list[tuple[str, str]]: ...

    def prompt_mismatch(self, prompt_ids: list[int]) -> str | None: ...

    def apply_latency(self, latency: LatencySettings, prompt_tokens: int) -> None:
        """Latency settings that changed after loading (the prefix cache's budget)."""
        ...

    def forget(self, key: str) -> None:
        """Drop what is kept for `key` (a closed document's prefix cache)."""
        ...

    def cache_stats(self) -> dict[str, Any] | None:
        """The prefix cache's counters for `dglsp.stats`, or None where the server keeps the cache."""
        ...

    def close(self) -> None: ...
