"""Next-edit suggestions: after an edit, the model rewrites the region where the next edit belongs.

Where: the region the last edit's substitution applies to next in the file (a rename carried to the other
uses, the same change to a sibling call), found from the edit history; then the cursor's own region (its
line, `next_edit.radius` lines either side). The prompt is a FIM prompt around the region, with the recent
edits as unified diffs and the region's current text as snippets (chat models get an instruction and the file
with the region marked, `prompt.encode_chat`); the middle is the region rewritten. The canvas starts from the
region's current text rather than noise (`seed_canvas`): uniform-noise diffusion learns to repair a partly
wrong canvas, and most of a region stays as it is. The answer is the smallest `Edit` that turns the region
into its rewrite, or a `NoSuggestion`: a rewrite equal to the region, or one the model is unsure of (the
gate), shows nothing. No edit is better than a wrong one.

Text in, text out: the completer's backend generates; nothing here knows LSP or tensors.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from keyword import iskeyword

from dglsp.completion.confidence import confidence, shown_token_count
from dglsp.completion.edits import Edit, HistoryEdit
from dglsp.completion.outcome import NoSuggestion, Reason
from dglsp.completion.postprocess import strip_fences
from dglsp.completion.prompt import CursorContext, PromptBuilder, Snippet, encodable
from dglsp.config import ContextSettings, Settings
from dglsp.model.backend import GenerationStats

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\S")
HISTORY_SNIPPET = "recent edits (unified diffs, oldest first)"
GROWTH_TOKENS = 4  # room a region leaves in its canvas for the rewrite to be longer than the text it replaces


@dataclass(frozen=True)
class Region:
    """Whole lines [start, end) of a document, in string offsets, and why they were picked."""

    start: int
    end: int
    why: str  # "cursor" | "substitution"


@dataclass(frozen=True)
class Substitution:
    """What the last edit replaced, as one token-level change: `old` became `new`."""

    old: str
    new: str


@dataclass
class EditProposal:
    edit: Edit | None
    hidden: NoSuggestion | None
    region: Region | None
    raw: str
    stats: GenerationStats
    confidence: float | None
    total_ms: float


def line_region(text: str, offset: int, radius: int, why: str = "cursor") -> Region:
    """The line holding `offset` and `radius` lines either side, as whole lines (with their newlines)."""
    start = text.rfind("\n", 0, offset) + 1
    for _ in range(radius):
        if start == 0:
            break
        start = text.rfind("\n", 0, start - 1) + 1
    end = offset
    for _ in range(radius + 1):
        if end >= len(text):
            break
        found = text.find("\n", end)
        end = len(text) if found == -1 else found + 1
    return Region(start, end, why)


def _one_token_change(edit: HistoryEdit) -> tuple[tuple[str, int, int, int, int], list[re.Match[str]],
                                                    list[re.Match[str]]] | None:
    """The edit's one changed run of tokens (a `SequenceMatcher` opcode) with both sides' tokens, or None when it
    changed none or several."""
    old = list(WORD.finditer("\n".join(edit.old_lines)))
    new = list(WORD.finditer("\n".join(edit.new_lines)))
    matcher = difflib.SequenceMatcher(None, [m.group() for m in old], [m.group() for m in new], autojunk=False)
    changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    return (changes[0], old, new) if len(changes) == 1 else None


def substitution_of(edit: HistoryEdit) -> Substitution | None:
    """The last edit as a single token-level replacement (`foo` -> `bar`), or None when it changed several places
    or nothing that can repeat."""
    change = _one_token_change(edit)
    if change is None:
        return None
    (_, i1, i2, j1, j2), old, new = change
    before = "".join(m.group() for m in old[i1:i2])
    after = "".join(m.group() for m in new[j1:j2])
    if not before or not re.search(r"\w", before):
        return None  # an insertion or a punctuation change has no next occurrence to look for
    return Substitution(before, after)


def next_occurrence(text: str, substitution: Substitution, after: int) -> int | None:
    """Where `substitution.old` next appears as a whole word, searching from `after` then from the top."""
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(substitution.old)}(?![A-Za-z0-9_])")
    found = pattern.search(text, after) or pattern.search(text, 0, after)
    return found.start() if found else None


def fitted_region(text: str, offset: int, radius: int, fits: Callable[[str], bool], why: str = "cursor") -> Region:
    """The line holding `offset`, grown a line at a time (below, then above) up to `radius` lines either side
    while its text still `fits` (one canvas: a rewrite cut short would delete the region's rest)."""
    region = line_region(text, offset, 0, why)
    for _ in range(radius):
        grown = False
        below = line_region(text, region.end, 0).end if region.end < len(text) else region.end
        if below != region.end and fits(text[region.start:below]):
            region, grown = Region(region.start, below, why), True
        above = line_region(text, region.start - 1, 0).start if region.start > 0 else 0
        if above != region.start and fits(text[above:region.end]):
            region, grown = Region(above, region.end, why), True
        if not grown:
            break
    return region


def candidate_regions(text: str, cursor: int, history: list[HistoryEdit], radius: int,
                      fits: Callable[[str], bool] = lambda region: True) -> list[Region]:
    """Where to look, most likely first: the last edit's substitution's next occurrence, then the cursor."""
    regions: list[Region] = []
    substitution = substitution_of(history[-1]) if history else None
    if substitution is not None:
        occurrence = next_occurrence(text, substitution, cursor)
        if occurrence is not None:
            regions.append(fitted_region(text, occurrence, radius, fits, "substitution"))
    cursor_region = fitted_region(text, cursor, radius, fits)
    if not any(region.start <= cursor < region.end for region in regions):
        regions.append(cursor_region)
    return regions


def repeat_substitution(text: str, cursor: int, history: list[HistoryEdit]) -> Edit | None:
    """The baseline: the last edit's substitution applied at its next occurrence (what a find-and-replace does)."""
    substitution = substitution_of(history[-1]) if history else None
    if substitution is None:
        return None
    at = next_occurrence(text, substitution, cursor)
    return None if at is None else Edit(at, at + len(substitution.old), substitution.new)


@dataclass(frozen=True)
class CallChange:
    """An argument the last edit added to a call (`f(a)` -> `f(a, b)`): `text` went in at the start or the end of
    the argument list of a call to `name` (`empty`: the call had no arguments before)."""

    name: str
    text: str
    at_end: bool
    empty: bool


def call_change_of(edit: HistoryEdit) -> CallChange | None:
    """The last edit as text inserted at one end of a call's arguments, or None. A definition's new parameter is
    not one: the value its callers pass cannot be read from it."""
    change = _one_token_change(edit)
    if change is None or change[0][0] != "insert":
        return None
    (_, at, _, j1, j2), old, new = change
    tokens, new_text = [m.group() for m in old], "\n".join(edit.new_lines)
    if tokens and tokens[0] in ("def", "async", "class"):
        return None
    opening = _unmatched_parenthesis(tokens, at - 1, -1)
    if opening is None or opening == 0 or not tokens[opening - 1].isidentifier() or iskeyword(tokens[opening - 1]):
        return None
    empty = opening + 1 < len(tokens) and tokens[opening + 1] == ")"
    if at < len(tokens) and tokens[at] == ")":  # before the closing parenthesis: from the previous token's end
        return CallChange(tokens[opening - 1], new_text[new[j1 - 1].end():new[j2 - 1].end()], True, empty)
    if at == opening + 1 and j2 < len(new):  # after the opening one: up to the next token's start
        return CallChange(tokens[opening - 1], new_text[new[j1].start():new[j2].start()], False, empty)
    return None


def _unmatched_parenthesis(items: str | list[str], start: int, step: int, limit: int = 2000) -> int | None:
    """The first parenthesis from `start` going `step` (1: right, -1: left) that the ones passed do not balance:
    the group's closing one going right, its opening one going left (parentheses in strings are not told apart)."""
    inner, outer = ("(", ")") if step > 0 else (")", "(")
    depth = 0
    for k in range(start, max(-1, start - limit) if step < 0 else min(len(items), start + limit), step):
        if items[k] == inner:
            depth += 1
        elif items[k] == outer:
            if depth == 0:
                return k
            depth -= 1
    return None


def repeat_call_change(text: str, cursor: int, history: list[HistoryEdit]) -> Edit | None:
    """The last edit's new argument added to the next call of the same function that lacks it (searching from the
    cursor, then from the top): one call changed, its siblings follow."""
    change = call_change_of(history[-1]) if history else None
    if change is None:
        return None
    call = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(change.name)}\s*\(")
    for found in (*call.finditer(text, cursor), *call.finditer(text, 0, cursor)):
        if re.search(r"\bdef\s+$", text[max(0, found.start() - 8):found.start()]):
            continue  # the definition, not a call
        opening = found.end() - 1
        closing = _unmatched_parenthesis(text, opening + 1, 1)
        if closing is None or (closing == opening + 1) != change.empty:
            continue
        added = re.escape(change.text.strip(" ,"))
        if re.search(rf"(?<![\w.]){added}(?![\w.])", text[opening + 1:closing]):
            continue  # this call has it already
        at = closing if change.at_end else opening + 1
        return Edit(at, at, change.text)
    return None


def _why_no_repeat(history: list[HistoryEdit]) -> str:
    """Why neither the last edit's substitution nor its new argument repeats (both already looked)."""
    if not history:
        return "no edit yet to repeat"
    substitution, change = substitution_of(history[-1]), call_change_of(history[-1])
    if change is not None:
        return f"no other call to {change.name} without {change.text.strip(' ,')!r}"
    if substitution is not None:
        return f"no {substitution.old!r} left to change"
    return "the last edit is neither one substitution nor a call's new argument"


def smallest_edit(old: str, new: str, base: int) -> Edit | None:
    """The single edit turning `old` into `new` (the span between their common head and tail), in document
    offsets (`old` starts at `base`); None when they are equal."""
    if old == new:
        return None
    head = 0
    while head < min(len(old), len(new)) and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < min(len(old), len(new)) - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    return Edit(base + head, base + len(old) - tail, new[head:len(new) - tail])


def edit_context(text: str, region: Region, path: str, language_id: str, diffs: list[str],
                 settings: ContextSettings) -> CursorContext:
    """The prompt's text: the document around the region, the recent edits and the region's current text."""
    before = text[max(0, region.start - settings.max_prefix_tokens * settings.chars_per_token):region.start]
    after = text[region.end:region.end + settings.max_suffix_tokens * settings.chars_per_token]
    current = text[region.start:region.end]
    # The newest edits that fit beside the region (the prompt drops a snippet over budget whole).
    budget = settings.max_snippet_tokens * settings.chars_per_token // 2 - len(current)
    kept: list[str] = []
    for diff in reversed(diffs):
        if sum(map(len, kept)) + len(diff) > budget:
            break
        kept.insert(0, diff)
    snippets: tuple[Snippet, ...] = (Snippet(HISTORY_SNIPPET, "\n".join(kept)),) if kept else ()
    snippets += (Snippet(f"{path or 'untitled'} (the region to rewrite)", current),)
    return CursorContext(encodable(before), encodable(after), path, language_id, snippets, offset=region.start,
                         rewrite=encodable(current))


def edit_settings(settings: Settings) -> ContextSettings:
    """The context budget of an edit prompt: the snippets carry the history and the region, so they get room."""
    context = settings.context
    return replace(context, snippets="on", max_snippets=2,
                   max_snippet_tokens=max(context.max_snippet_tokens, settings.next_edit.snippet_tokens))


class NextEditor:
    """Proposes the next edit of a document with the completer's model (its backend, tokenizer and format)."""

    def __init__(self, completer):
        self.completer = completer

    def propose(self, text: str, cursor: int, history: list[HistoryEdit], diffs: list[str], settings: Settings,
                path: str = "", language_id: str = "", should_stop: Callable[[], bool] = lambda: False,
                cache_key: str | None = None) -> EditProposal:
        begin = time.perf_counter()
        stats = GenerationStats()
        raw, confidence = "", None
        region = None
        if self.predictor(settings) == "substitution":
            edit = repeat_substitution(text, cursor, history) or repeat_call_change(text, cursor, history)
            hidden = None if edit is not None else NoSuggestion(Reason.NO_EDIT, _why_no_repeat(history))
            return EditProposal(edit, hidden, None, "", stats, None, _ms(begin))
        canvas = self.completer.backend.defaults.canvas_length
        tokenizer = self.completer.tokenizer

        def fits(region_text: str) -> bool:  # one canvas (and EOS), with room to grow
            return len(tokenizer.encode(region_text, add_special_tokens=False)) <= canvas - 1 - GROWTH_TOKENS

        for region in candidate_regions(text, cursor, history, settings.next_edit.radius, fits):
            proposal = self._rewrite(text, region, diffs, settings, path, language_id, should_stop, cache_key)
            edit, raw, confidence, stats = proposal
            if stats.stopped:
                return EditProposal(None, NoSuggestion(Reason.CANCELLED, "stopped while generating"), region, raw,
                                    stats, confidence, _ms(begin))
            if edit is None:
                continue
            threshold = self.min_confidence(settings)
            if confidence is not None and confidence < threshold:
                return EditProposal(None, NoSuggestion(Reason.LOW_CONFIDENCE,
                                                       f"confidence {confidence:.2f} < {threshold:.2f}"),
                                    region, raw, stats, confidence, _ms(begin))
            return EditProposal(edit, None, region, raw, stats, confidence, _ms(begin))
        return EditProposal(None, NoSuggestion(Reason.NO_EDIT), region, raw, stats, confidence, _ms(begin))

    def _rewrite(self, text: str, region: Region, diffs: list[str], settings: Settings, path: str,
                 language_id: str, should_stop: Callable[[], bool], cache_key: str | None
                 ) -> tuple[Edit | None, str, float | None, GenerationStats]:
        """One region rewritten: (the edit it makes, the raw rewrite, its confidence, the generation's stats)."""
        completer = self.completer
        context = edit_context(text, region, path, language_id, diffs, edit_settings(settings))
        prompt = PromptBuilder(completer.tokenizer, completer.format, edit_settings(settings)).build(context)
        current = text[region.start:region.end]
        current_ids = completer.tokenizer.encode(current, add_special_tokens=False)
        options = settings.next_edit
        canvas = completer.backend.defaults.canvas_length
        sampler = replace(settings.sampler, decoding=options.decoding, canvas_length=canvas, policy=options.policy,
                          eos_freeze=True, max_steps=options.max_steps,
                          max_canvases=max(1, -(-(len(current_ids) + 1) // canvas)))
        schedule = completer.backend.schedule(sampler)
        generation = completer.backend.generate(prompt.ids, schedule, should_stop, cache_key=cache_key,
                                                seed_ids=current_ids if options.seed_canvas else None)
        raw = completer.decode(generation.token_ids)
        rewrite = _whole_lines(strip_fences(raw), current)  # a chat model may fence its answer
        edit = smallest_edit(current, rewrite, region.start) if generation.finished else None
        if edit is not None and _drops_the_tail(current, rewrite, edit, region):
            edit = None  # a rewrite that stops early reads as deleting the region's last lines: never show that
        confidence = None
        if edit is not None and generation.token_logprobs is not None:
            head = edit.start - region.start  # the rewrite's text before the change
            confidence = span_confidence(generation.token_ids, generation.token_logprobs, rewrite[:head],
                                         rewrite[:head + len(edit.text)], completer.decode)
        return edit, raw, confidence, generation.stats

    def predictor(self, settings: Settings) -> str:
        """`next_edit.predictor`, else the model's own (its dglsp.json)."""
        return settings.next_edit.predictor or self.completer.backend.defaults.edit_predictor

    def min_confidence(self, settings: Settings) -> float:
        """The edit gate: `next_edit.min_confidence`, else the model's own (its dglsp.json), else 0."""
        if settings.next_edit.min_confidence is not None:
            return settings.next_edit.min_confidence
        return self.completer.backend.defaults.edit_min_confidence


def span_confidence(token_ids: list[int], logprobs: list[float], before: str, through: str,
                    decode: Callable[[list[int]], str]) -> float:
    """The geometric mean probability of the tokens that write the changed span (after `before`, up to the end of
    `through`): the copied rest of the region is no evidence either way."""
    first = shown_token_count(token_ids, before, decode) if before.strip() else 0
    last = max(first + 1, shown_token_count(token_ids, through, decode))
    return confidence(logprobs[first:last], last - first) or 0.0


def _drops_the_tail(current: str, rewrite: str, edit: Edit, region: Region) -> bool:
    """The rewrite is shorter by whole lines and the change runs to the region's end: a cut-off answer."""
    return edit.end == region.end and rewrite.count("\n") < current.count("\n") and current.startswith(
        rewrite.rstrip("\n"))


def _whole_lines(rewrite: str, current: str) -> str:
    """A rewrite ends its last line as the region did (with or without a newline)."""
    if current.endswith("\n") and not rewrite.endswith("\n"):
        return rewrite + "\n"
    if not current.endswith("\n") and rewrite.endswith("\n"):
        return rewrite[:-1]
    return rewrite


def _ms(begin: float) -> float:
    return (time.perf_counter() - begin) * 1000
