"""One completion, end to end below the protocol: prompt -> engine -> post-processing.

The server and `dglsp complete` both call `Completer.complete`, so the command line
shows exactly what an editor would get. It runs on the device worker thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from dglsp.completion.confidence import suggestion_confidence
from dglsp.completion.edits import Edit
from dglsp.completion.outcome import NoSuggestion, Reason
from dglsp.completion.postprocess import Dropped, answers_one_line, postprocess, postprocess_edit
from dglsp.completion.prompt import (
    CursorContext,
    PrefixAnchors,
    PromptBuilder,
    PromptFormat,
    cursor_windows,
    encodable,
)
from dglsp.config import ContextSettings, PostprocessSettings, Settings
from dglsp.model.backend import Backend, GenerationStats, ModelBundle
from dglsp.model.schedule import Schedule

log = logging.getLogger(__name__)

PreviewFn = Callable[[str], None]
# Post-processing filters a draft goes without (its final text still never over-closes: `brackets`).
DRAFT_SKIP = frozenset({"scope", "syntax", "closers"})
StepPreviewFn = Callable[[int, str], None]  # (forward passes so far, the suggestion as the canvas reads now)


@dataclass
class Suggestion:
    edit: Edit | None  # what to show; None: nothing worth showing (`hidden` says why)
    hidden: NoSuggestion | None
    raw: str  # the generated text before post-processing
    stats: GenerationStats
    prompt_ms: float
    postprocess_ms: float
    total_ms: float
    context: CursorContext | None = None  # the (trimmed) context the prompt was built from
    confidence: float | None = None  # the model's probability of the shown tokens (geometric mean), if known

    @property
    def text(self) -> str | None:
        return self.edit.text if self.edit is not None else None

    @property
    def gated(self) -> bool:
        """Hidden by the confidence gate (post-processing had kept it)."""
        return self.hidden is not None and self.hidden.reason is Reason.LOW_CONFIDENCE

    def timings(self) -> str:
        shown = "" if self.confidence is None else f", confidence {self.confidence:.3f}{' (hidden)' * self.gated}"
        return f"prompt {self.prompt_ms:.1f} ms, {self.stats.summary()}, post {self.postprocess_ms:.1f} ms{shown}"


class Completer:
    def __init__(self, bundle: ModelBundle, backend: Backend):
        self.bundle = bundle
        self.backend = backend
        self.tokenizer = bundle.tokenizer
        self.format = PromptFormat.for_model(bundle.meta, bundle.tokenizer)
        self.special_ids = set(self.tokenizer.all_special_ids)
        self.thought_ids = thought_channel_ids(self.tokenizer)
        mismatch = backend.prompt_mismatch(PromptBuilder(self.tokenizer, self.format, ContextSettings()).build(
            CursorContext("def f(x):\n    ", "\n", "a.py")).ids)
        if mismatch:
            log.warning("%s (%s)", mismatch, bundle.path)
        self.anchors = PrefixAnchors(self.tokenizer)

    def context_at(
        self, text: str, offset: int, settings: Settings, path: str = "", language_id: str = "",
        key: str | None = None,
    ) -> CursorContext:
        """The windows around the cursor; with `key` (the document URI) the prefix keeps a sticky start."""
        if key is None:
            prefix, suffix = cursor_windows(text, offset, settings.context)
            return CursorContext(encodable(prefix), encodable(suffix), path, language_id, offset=offset)
        prefix, suffix, prefix_ids = self.anchors.windows(key, text, offset, settings.context)
        return CursorContext(encodable(prefix), encodable(suffix), path, language_id, prefix_ids=prefix_ids,
                             offset=offset)

    def complete(
        self,
        context: CursorContext,
        settings: Settings,
        should_stop: Callable[[], bool] = lambda: False,
        deadline: float | None = None,
        draft: bool = False,
        on_commit: PreviewFn | None = None,
        cache_key: str | None = None,
        on_step: StepPreviewFn | None = None,
    ) -> Suggestion:
        """Complete at the cursor. `draft=True` chains canvases until the block ends or
        `settings.draft.max_tokens`, calling `on_commit(text so far)` after each committed canvas.

        `cache_key` (the document URI) reuses the document's prompt KV cache; `deadline` (a
        `time.monotonic()` value) ends denoising early and the draft so far is cut at a line
        boundary; `on_step` sees every intermediate canvas as text (the live canvas)."""
        begin = time.perf_counter()
        prompt = PromptBuilder(self.tokenizer, self.format, settings.context).build(context)
        prompt_ms = (time.perf_counter() - begin) * 1000
        post_settings = settings.postprocess
        on_canvas = None
        if draft:
            schedule = self.draft_schedule(settings)
            post_settings = replace(post_settings, multiline=True, mid_block=True,
                                    max_lines=settings.draft.max_lines)
            on_canvas = self._draft_watcher(prompt.context, post_settings, on_commit)
        else:
            schedule = self.ghost_schedule(settings, prompt.context)
            if on_step is not None:
                on_canvas = self._step_watcher(prompt.context, post_settings, on_step,
                                               settings.latency.live_canvas_interval_ms / 1000)
        generation = self.backend.generate(prompt.ids, schedule, should_stop, on_canvas=on_canvas,
                                           deadline=deadline, cache_key=cache_key)
        post_start = time.perf_counter()
        raw = self.decode(generation.token_ids)
        edit, hidden = self._shown(raw, prompt.context, post_settings, draft, generation.stats)
        score = suggestion_confidence(generation.token_ids, generation.token_logprobs,
                                      edit.text if edit else raw, self.decode)
        threshold = self.min_confidence(post_settings)
        if edit is not None and score is not None and score < threshold and not draft:
            edit, hidden = None, NoSuggestion(Reason.LOW_CONFIDENCE, f"confidence {score:.2f} < {threshold:.2f}")
        end = time.perf_counter()
        return Suggestion(edit, hidden, raw, generation.stats, prompt_ms, (end - post_start) * 1000,
                          (end - begin) * 1000, prompt.context, score)

    def _shown(self, raw: str, context: CursorContext, post_settings: PostprocessSettings, draft: bool,
               stats: GenerationStats) -> tuple[Edit | None, NoSuggestion | None]:
        """The edit post-processing keeps, or why there is none. A draft cut by its deadline is cut again at a
        line boundary: insert-only, so the cut keeps it valid. An explicit draft asked for more than the rest of
        the line (no scope filter), and shows what its progress reports showed (no syntax trim, which would cut
        a canvas that ends mid-statement)."""
        if stats.stopped:
            return None, NoSuggestion(Reason.CANCELLED, "stopped while generating")
        found = postprocess_edit(raw, context, post_settings, skip=DRAFT_SKIP if draft else frozenset(),
                                 allow_replace=not stats.hit_deadline)
        if isinstance(found, Dropped):
            return None, NoSuggestion(found.reason)
        if stats.hit_deadline:
            cut = cut_at_line_boundary(found.text)
            if cut is None:
                return None, NoSuggestion(Reason.EMPTY, "the deadline left no whole line")
            found = replace(found, text=cut)
        return found, None

    def _step_watcher(self, context: CursorContext, post_settings, on_step: StepPreviewFn, interval_s: float):
        """The live canvas: at most one step per `interval_s` is decoded and post-processed (the throttle comes
        first, so the steps nobody sees cost nothing)."""
        last = [float("-inf")]

        def on_canvas(step: int, token_ids: list[int], committed: bool) -> bool:
            now = time.monotonic()
            if not committed and now - last[0] >= interval_s:
                last[0] = now
                on_step(step, postprocess(self.decode(token_ids), context, post_settings) or "")
            return False

        return on_canvas

    def _draft_watcher(self, context: CursorContext, post_settings, on_commit: PreviewFn | None):
        """After each committed canvas: report the draft so far, and end it once post-processing cuts
        lines off (the enclosing block ended, or the draft reached the code after the cursor)."""

        def on_canvas(step: int, token_ids: list[int], committed: bool) -> bool:
            if not committed:
                return False
            raw = self.decode(token_ids)
            # Without the syntax filter: a canvas ending mid-statement must not read as the block's end.
            shown_edit = postprocess_edit(raw, context, post_settings, skip=DRAFT_SKIP, allow_replace=False)
            shown = shown_edit.text if isinstance(shown_edit, Edit) else ""
            if on_commit is not None:
                on_commit(shown)
            ended_at_special = len(token_ids) > 0 and any(t in self.special_ids for t in token_ids)
            return ended_at_special or shown.count("\n") < raw.rstrip().count("\n")

        return on_canvas

    def ghost_schedule(self, settings: Settings, context: CursorContext | None = None) -> Schedule:
        """Ghost text's decoding: the canvas sized to the request (a line needs a short one)."""
        schedule = self.backend.schedule(settings.sampler)
        if context is not None and answers_one_line(context, settings.postprocess):
            line = settings.sampler.line_canvas_length or self.backend.defaults.line_canvas_length
            if line:
                schedule = schedule.with_canvas(min(line, schedule.canvas_length))
        return schedule

    def draft_schedule(self, settings: Settings) -> Schedule:
        """An explicit draft's decoding: its own canvas length and steps (None: the model's own), canvases chained
        up to `draft.max_tokens`; the rest is the ghost text's."""
        draft = settings.draft
        canvas_length = draft.canvas_length or self.backend.defaults.canvas_length
        sampler = replace(settings.sampler, canvas_length=canvas_length, max_steps=draft.max_steps,
                          max_canvases=max(1, math.ceil(draft.max_tokens / canvas_length)))
        return self.backend.schedule(sampler)

    def schedule(self, settings: Settings) -> dict[str, Any]:
        """The decoding ghost text and drafts run with, and why (for `dglsp/status`)."""
        ghost, draft = self.ghost_schedule(settings), self.draft_schedule(settings)
        own = f"the model's own ({'its dglsp.json' if self.bundle.meta.get('sampler') else 'its generation config'})"

        def source(value: object) -> str:
            return own if value is None else "set in your settings"

        sampler = settings.sampler
        line = sampler.line_canvas_length or self.backend.defaults.line_canvas_length
        return {
            "ghost_text": {
                "canvas_length": ghost.canvas_length, "line_canvas_length": line, "max_steps": ghost.max_steps,
                "decoding": ghost.decoding, "policy": ghost.policy,
                "why": f"canvas {ghost.canvas_length} ({line or ghost.canvas_length} for one line): a line is ~7-14 "
                       f"tokens and a short canvas denoises fastest; steps: {source(sampler.max_steps)}, an upper "
                       f"bound the stop rules usually undercut; decoding {ghost.decoding} and policy {ghost.policy}: "
                       f"{source(sampler.decoding)}",
            },
            "draft": {
                "canvas_length": draft.canvas_length, "max_steps": draft.max_steps,
                "max_tokens": settings.draft.max_tokens, "decoding": draft.decoding,
                "why": ("canvas: the model's own (it was trained at it; 256 for the 26B)" if not settings.draft
                        .canvas_length else "canvas: set in your settings")
                       + f"; steps: {source(settings.draft.max_steps)}",
            },
        }

    def min_confidence(self, post_settings: PostprocessSettings) -> float:
        """The gate: the user's `postprocess.min_confidence`, else the model's calibrated one (0: none)."""
        if post_settings.min_confidence is not None:
            return post_settings.min_confidence
        return self.backend.defaults.min_confidence

    def decode(self, token_ids: list[int]) -> str:
        """Text of the generated ids without thought channels, cut at the first special token (a FIM marker
        means the middle ended)."""
        token_ids = drop_thoughts(token_ids, self.thought_ids)
        cut = next((i for i, t in enumerate(token_ids) if t in self.special_ids), len(token_ids))
        return cast(str, self.tokenizer.decode(token_ids[:cut], skip_special_tokens=True))  # ids in: one string


# A chat model may reason before it answers, inside `<|channel>thought ... <channel|>` (Gemma 4).
THOUGHT_CHANNEL = ("<|channel>", "<channel|>")


def thought_channel_ids(tokenizer) -> tuple[int, int] | None:
    vocabulary = tokenizer.get_vocab()
    if all(token in vocabulary for token in THOUGHT_CHANNEL):
        return vocabulary[THOUGHT_CHANNEL[0]], vocabulary[THOUGHT_CHANNEL[1]]
    return None


def drop_thoughts(token_ids: list[int], channel: tuple[int, int] | None) -> list[int]:
    """`token_ids` without thought channels: each open marker up to and including its close, or to the end
    when the channel is still open (the answer has not begun)."""
    if channel is None or channel[0] not in token_ids:
        return token_ids
    opened, closed = channel
    kept: list[int] = []
    inside = False
    for token in token_ids:
        if token == opened:
            inside = True
        elif token == closed and inside:
            inside = False
        elif not inside:
            kept.append(token)
    return kept


def cut_at_line_boundary(text: str) -> str | None:
    """A draft cut short by the deadline: keep whole lines only (its last line may be half-denoised)."""
    if "\n" not in text.rstrip("\n"):
        return text
    kept = text[: text.rstrip("\n").rfind("\n")].rstrip()
    return kept if kept.strip() else None
