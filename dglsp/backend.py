"""The seam between the completer and whatever generates: the local `Engine` or the remote client.

Contract: `generate(prompt_ids, sampler, should_stop, on_canvas=, deadline=, cache_key=)` takes the
prompt as token ids (built by `prompt.py`, the same for both) and returns a `Generation` whose
token ids the completer decodes and post-processes itself, so stop rules and post-processing never
depend on where the model runs. `should_stop` is polled between canvases or denoising steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from dglsp.config import SamplerSettings
from dglsp.engine import CanvasCallback, Generation


class Backend(Protocol):
    device: Any  # a torch.device for the local engine; a description of the server for the remote one
    prefix_cache: Any  # `kvcache.PrefixCache` (or a no-op stand-in where the server keeps the cache)

    @property
    def default_canvas_length(self) -> int: ...

    def generate(
        self,
        prompt_ids: list[int],
        sampler: SamplerSettings,
        should_stop: Callable[[], bool] = ...,
        on_canvas: CanvasCallback | None = None,
        deadline: float | None = None,
        cache_key: str | None = None,
    ) -> Generation: ...
