"""One completion, end to end below the protocol: prompt -> engine -> post-processing.

The server and `dglsp complete` both call `Completer.complete`, so the command line
shows exactly what an editor would get. It runs on the device worker thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from dglsp.config import Settings
from dglsp.engine import Engine, GenerationStats, ModelBundle
from dglsp.postprocess import postprocess
from dglsp.prompt import CursorContext, PromptBuilder, PromptFormat, cursor_windows

PreviewFn = Callable[[str], None]


@dataclass
class Suggestion:
    text: str | None  # what to insert at the cursor; None = nothing worth showing
    raw: str  # the generated text before post-processing
    stats: GenerationStats
    prompt_ms: float
    postprocess_ms: float
    total_ms: float

    def timings(self) -> str:
        return f"prompt {self.prompt_ms:.1f} ms, {self.stats.summary()}, post {self.postprocess_ms:.1f} ms"


class Completer:
    def __init__(self, bundle: ModelBundle, engine: Engine):
        self.bundle = bundle
        self.engine = engine
        self.tokenizer = bundle.tokenizer
        self.format = PromptFormat.for_model(bundle.meta, bundle.tokenizer)
        self.special_ids = set(self.tokenizer.all_special_ids)

    def context_at(
        self, text: str, offset: int, settings: Settings, path: str = "", language_id: str = ""
    ) -> CursorContext:
        prefix, suffix = cursor_windows(text, offset, settings.context)
        return CursorContext(prefix, suffix, path, language_id)

    def complete(
        self,
        context: CursorContext,
        settings: Settings,
        should_stop: Callable[[], bool] = lambda: False,
        deadline: float | None = None,
        draft: bool = False,
        on_commit: PreviewFn | None = None,
    ) -> Suggestion:
        """Complete at the cursor. `draft=True` chains canvases until the block ends or
        `settings.draft.max_tokens`, calling `on_commit(text so far)` after each committed canvas."""
        begin = time.perf_counter()
        prompt = PromptBuilder(self.tokenizer, self.format, settings.context).build(context)
        prompt_ms = (time.perf_counter() - begin) * 1000
        sampler, post_settings = settings.sampler, settings.postprocess
        on_canvas = None
        if draft:
            canvases = max(1, math.ceil(settings.draft.max_tokens / sampler.canvas_length))
            sampler = replace(sampler, max_canvases=canvases)
            post_settings = replace(post_settings, multiline=True, max_lines=settings.draft.max_lines)
            on_canvas = self._draft_watcher(prompt.context, post_settings, on_commit)
        generation = self.engine.generate(prompt.ids, sampler, should_stop, on_canvas=on_canvas, deadline=deadline)
        post_start = time.perf_counter()
        raw = self.decode(generation.token_ids)
        text = None if generation.stats.stopped else postprocess(raw, prompt.context, post_settings)
        end = time.perf_counter()
        return Suggestion(text, raw, generation.stats, prompt_ms, (end - post_start) * 1000, (end - begin) * 1000)

    def _draft_watcher(self, context: CursorContext, post_settings, on_commit: PreviewFn | None):
        """After each committed canvas: report the draft so far, and end it once post-processing cuts
        lines off (the enclosing block ended, or the draft reached the code after the cursor)."""

        def on_canvas(step: int, token_ids: list[int], committed: bool) -> bool:
            if not committed:
                return False
            raw = self.decode(token_ids)
            shown = postprocess(raw, context, post_settings) or ""
            if on_commit is not None:
                on_commit(shown)
            ended_at_special = len(token_ids) > 0 and any(t in self.special_ids for t in token_ids)
            return ended_at_special or shown.count("\n") < raw.rstrip().count("\n")

        return on_canvas

    def decode(self, token_ids: list[int]) -> str:
        """Text of the generated ids, cut at the first special token (a FIM marker means the middle ended)."""
        cut = next((i for i, t in enumerate(token_ids) if t in self.special_ids), len(token_ids))
        return self.tokenizer.decode(token_ids[:cut], skip_special_tokens=True)
