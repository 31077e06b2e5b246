"""Prompt building: the text around the cursor, trimmed to a token budget, in the model's format.

Two formats, chosen by the model directory (never by the server):

* ``fim`` — our own models (`dglsp.json` says so). Token layout::

      <bos> <|file|> path \\n [<|snippet|> path \\n SNIPPET]... <|suffix|> SUFFIX <|prefix|> PREFIX <|middle|>

  and the canvas holds the middle, then EOS, then padding. `train.py` builds its
  examples with `encode_fim` below, so training and serving cannot drift apart.
* ``chat`` — instruction-tuned models such as `google/diffusiongemma-26B-A4B-it`: the
  suffix, then the prefix ending at a cursor marker, inside a user turn that asks
  for only the code at the cursor, rendered with the tokenizer's chat template.

Snippets (code from other open documents and recent edits, picked by `neighbors.py`) are
optional and have a token budget of their own; with none, the ids are exactly the plain
layout above. A FIM model gets them only if its `dglsp.json` says it was trained with them
(`"snippets": true` in `prompt_format`) or the user sets `context.snippets` to "on". The
file's path (and for an untitled buffer an extension from the language) heads the prompt.

In both, the suffix comes *before* the prefix: typing at the cursor only appends to
the prompt, so an encoder KV cache of the previous prompt stays valid up to the
first changed token.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dglsp.config import ContextSettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CURSOR_MARKER = "<CURSOR>"
# An untitled buffer still tells the model its language, the way a path's extension does.
EXTENSIONS = {"python": ".py", "javascript": ".js", "javascriptreact": ".jsx", "typescript": ".ts",
              "typescriptreact": ".tsx", "go": ".go", "rust": ".rs", "c": ".c", "cpp": ".cpp", "java": ".java",
              "lua": ".lua"}
CHAT_INSTRUCTION = (
    "You are a code completion engine. Below is a source file split at the cursor: first the code "
    "after the cursor, then the code before it, ending at {cursor}. Reply with only the code to insert "
    "at {cursor}: no explanation, no code fences, nothing that is already there."
)


@dataclass(frozen=True)
class PromptFormat:
    kind: str  # "fim" | "chat"
    tokens: dict[str, str]
    trained_with_snippets: bool = False

    @classmethod
    def for_model(cls, meta: dict, tokenizer: PreTrainedTokenizerBase) -> PromptFormat:
        spec = meta.get("prompt_format")
        if spec:
            if spec.get("kind") not in ("fim", "chat"):
                raise ValueError(f"unknown prompt format {spec.get('kind')!r} in dglsp.json")
            return cls(spec["kind"], dict(spec.get("tokens", {})), bool(spec.get("snippets", False)))
        if getattr(tokenizer, "chat_template", None):
            return cls("chat", {}, trained_with_snippets=True)
        raise ValueError("the model has neither a dglsp.json prompt format nor a chat template")


@dataclass(frozen=True)
class Snippet:
    """A piece of another document (or a recently edited region) that looks like the code at the cursor."""

    path: str
    text: str


@dataclass(frozen=True)
class CursorContext:
    """The text the prompt is built from: windows of the document around the cursor."""

    prefix: str  # text before the cursor (a window ending at the cursor)
    suffix: str  # text after the cursor (a window starting at the cursor)
    path: str = ""
    language_id: str = ""
    snippets: tuple[Snippet, ...] = ()  # most similar last (nearest the cursor in the prompt)


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    context: CursorContext  # the (possibly trimmed) text the ids were built from


def cursor_windows(text: str, offset: int, settings: ContextSettings) -> tuple[str, str]:
    """Character windows around `offset`, cut at line boundaries, sized from the token budgets.

    Works on slices only, so a huge document costs nothing beyond the windows.
    """
    if not 0 <= offset <= len(text):
        raise ValueError(f"cursor offset {offset} outside the document (length {len(text)})")
    prefix_chars = settings.max_prefix_tokens * settings.chars_per_token
    suffix_chars = settings.max_suffix_tokens * settings.chars_per_token
    start = max(0, offset - prefix_chars)
    if start > 0:
        newline = text.find("\n", start, offset)
        start = newline + 1 if newline != -1 else start
    end = min(len(text), offset + suffix_chars)
    if end < len(text):
        newline = text.rfind("\n", offset, end)
        end = newline + 1 if newline != -1 else end
    return text[start:offset], text[offset:end]


class PrefixAnchors:
    """Sticky prefix windows for long documents, one start line per document (LRU-bounded).

    The prefix ends at the cursor, so in a file longer than the budget a window cut exactly at the
    budget starts one line later every line or so of typing, and the prompt's KV cache misses from
    there on. Cut `prefix_slack` deeper instead and keep that start while the prefix still fits: typing
    only appends, until the slack is used up.
    """

    HEAD_CHARS = 64  # text checked at the anchor: an edit above it moves the text and drops the anchor

    def __init__(self, tokenizer: PreTrainedTokenizerBase, capacity: int = 256):
        self.tokenizer = tokenizer
        self.capacity = capacity
        self._anchors: OrderedDict[str, tuple[int, str]] = OrderedDict()

    def windows(self, key: str, text: str, offset: int, settings: ContextSettings) -> tuple[str, str]:
        """`cursor_windows`, with the prefix already cut to its token budget from the document's anchor."""
        prefix, suffix = cursor_windows(text, offset, settings)
        window_start = offset - len(prefix)
        budget = settings.max_prefix_tokens
        anchor = self._anchors.get(key)
        if anchor is not None:
            start, head = anchor
            if (window_start <= start <= offset and text.startswith(head, start)
                    and self._count(text[start:offset]) <= budget):
                self._anchors.move_to_end(key)
                return text[start:offset], suffix
        if self._count(prefix) > budget:
            prefix = trim_to_tokens(self.tokenizer, prefix, max(1, int(budget * (1 - settings.prefix_slack))),
                                    keep="end")
        start = offset - len(prefix)
        self._anchors[key] = (start, text[start:start + self.HEAD_CHARS])
        self._anchors.move_to_end(key)
        while len(self._anchors) > self.capacity:
            self._anchors.popitem(last=False)
        return prefix, suffix

    def forget(self, key: str) -> None:
        self._anchors.pop(key, None)

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


class PromptBuilder:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, settings: ContextSettings):
        self.tokenizer = tokenizer
        self.format = fmt
        self.settings = settings

    def build(self, context: CursorContext) -> Prompt:
        prefix = trim_to_tokens(self.tokenizer, context.prefix, self.settings.max_prefix_tokens, keep="end")
        suffix = trim_to_tokens(self.tokenizer, context.suffix, self.settings.max_suffix_tokens, keep="start")
        snippets = self._fit_snippets(context.snippets) if snippets_enabled(self.format, self.settings) else ()
        trimmed = CursorContext(prefix, suffix, context.path, context.language_id, snippets)
        if self.format.kind == "fim":
            ids = encode_fim(self.tokenizer, self.format, trimmed)
        else:
            ids = encode_chat(self.tokenizer, trimmed)
        return Prompt(ids, trimmed)

    def _fit_snippets(self, snippets: tuple[Snippet, ...]) -> tuple[Snippet, ...]:
        """Keep the most similar snippets (the last ones) that fit the snippet budget together."""
        budget = self.settings.max_snippet_tokens
        kept: list[Snippet] = []
        for snippet in reversed(snippets[-self.settings.max_snippets:] if self.settings.max_snippets else ()):
            cost = len(self.tokenizer.encode(f"{snippet.path}\n{snippet.text}", add_special_tokens=False)) + 1
            if cost <= budget:
                kept.append(snippet)
                budget -= cost
        return tuple(reversed(kept))


def snippets_enabled(fmt: PromptFormat, settings: ContextSettings) -> bool:
    if settings.snippets == "off" or settings.max_snippet_tokens <= 0:
        return False
    return settings.snippets == "on" or fmt.trained_with_snippets


def trim_to_tokens(tokenizer: PreTrainedTokenizerBase, text: str, budget: int, keep: str) -> str:
    """Drop whole lines from the far end of `text` until it fits in `budget` tokens.

    `keep="end"` keeps the end (the prefix: nearest the cursor); `keep="start"` keeps the start
    (the suffix). A single line longer than the budget is cut mid-line as a last resort.
    """
    if budget <= 0 or not text:
        return ""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    if len(offsets) <= budget:
        return text
    if keep == "end":
        cut = offsets[len(offsets) - budget][0]
        newline = text.find("\n", cut)
        return text[newline + 1:] if newline != -1 and newline + 1 < len(text) else text[cut:]
    cut = offsets[budget][0]
    newline = text.rfind("\n", 0, cut)
    return text[:newline + 1] if newline > 0 else text[:cut]


def encode_fim(tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, context: CursorContext) -> list[int]:
    special = fmt.tokens

    def token(name: str) -> list[int]:
        return [tokenizer.convert_tokens_to_ids(special[name])]

    def text(value: str) -> list[int]:
        return tokenizer.encode(value, add_special_tokens=False) if value else []

    header = f"{context.path or 'untitled' + EXTENSIONS.get(context.language_id, '')}\n"
    snippets: list[int] = []
    for snippet in context.snippets:
        snippets += token("snippet") + text(f"{snippet.path}\n{snippet.text}")
    return (
        token("bos") + token("file") + text(header) + snippets
        + token("suffix") + text(context.suffix)
        + token("prefix") + text(context.prefix)
        + token("middle")
    )


def encode_chat(tokenizer: PreTrainedTokenizerBase, context: CursorContext) -> list[int]:
    language = context.language_id or "code"
    related = "".join(f"\n\nRelated code from {s.path}:\n```\n{s.text}\n```" for s in context.snippets)
    content = (
        CHAT_INSTRUCTION.format(cursor=CURSOR_MARKER) + related
        + f"\n\nFile: {context.path or 'untitled'} ({language})\n\nCode after the cursor:\n```\n{context.suffix}\n```"
        + f"\n\nCode before the cursor:\n```\n{context.prefix}{CURSOR_MARKER}"
    )
    messages = [{"role": "user", "content": content}]
    # transformers 5 returns a BatchEncoding (a Mapping, not a dict) for tokenize=True unless told otherwise;
    # iterating one yields its keys, so the ids are taken out explicitly whatever comes back.
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    ids = rendered["input_ids"] if isinstance(rendered, Mapping) else rendered
    if not all(isinstance(token, int) for token in ids):
        raise TypeError(f"the chat template did not give token ids: {type(rendered).__name__}")
    return list(ids)
