r"""Prompt building: the text around the cursor, trimmed to a token budget, in the model's format.

Two formats, chosen by the model directory (never by the server):

* ``fim`` — our own models (`dglsp.json` says so). Token layout::

      <bos> <|file|> path \n [<|snippet|> path \n SNIPPET]... <|suffix|> SUFFIX <|prefix|> PREFIX <|middle|>

  and the canvas holds the middle, then EOS, then padding. Training builds its examples
  with the same `PromptBuilder`, so training and serving cannot drift apart.
* ``chat`` — instruction-tuned models such as `google/diffusiongemma-26B-A4B-it`: the
  suffix, then the prefix ending at a cursor marker, inside a user turn that asks
  for only the code at the cursor, rendered with the tokenizer's chat template.

Snippets (code from other open documents and recent edits, picked by `snippets.py`) are
optional and have a token budget of their own; with none, the ids are exactly the plain
layout above. A FIM model gets them only if its `dglsp.json` says it was trained with them
(`"snippets": true` in `prompt_format`) or the user sets `context.snippets` to "on". The
file's path (and for an untitled buffer an extension from the language) heads the prompt.

In both, the suffix comes *before* the prefix: typing at the cursor only appends to
the prompt, so an encoder KV cache of the previous prompt stays valid up to the
first changed token.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from dglsp.config import ContextSettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CURSOR_MARKER = "<CURSOR>"
# An untitled buffer still tells the model its language, the way a path's extension does.
EXTENSIONS = {"python": ".py", "javascript": ".js", "javascriptreact": ".jsx", "typescript": ".ts",
              "typescriptreact": ".tsx", "go": ".go", "rust": ".rs", "c": ".c", "cpp": ".cpp", "java": ".java",
              "lua": ".lua"}
EDIT_INSTRUCTION = (
    "You are a code editing engine. The user is editing the file below; their recent edits are given as unified "
    "diffs. Predict their next edit in the region between {start} and {end}: reply with only the region's new "
    "text (all of it, unchanged lines included), no explanation, no code fences. If no edit belongs there, reply "
    "with the region unchanged."
)
REGION_MARKERS = ("<REGION>", "</REGION>")
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
    # The prefix's token ids when whoever cut the window already tokenized it (`PrefixAnchors`): the prompt
    # then reuses them instead of tokenizing the prefix again.
    prefix_ids: tuple[int, ...] | None = None
    offset: int | None = None  # the cursor's offset in the document (None: the windows are the whole document)
    # A next-edit request: the region's current text, which the middle rewrites (the prefix ends and the suffix
    # starts at the region's edges; the recent edits come as snippets). None: complete at the cursor.
    rewrite: str | None = None

    @property
    def cursor(self) -> int:
        """Where edits at the cursor start, in document offsets."""
        return len(self.prefix) if self.offset is None else self.offset


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
        self._anchors: OrderedDict[str, tuple[int, str, str]] = OrderedDict()  # key -> (start, head, header)

    def windows(self, key: str, text: str, offset: int, settings: ContextSettings
                ) -> tuple[str, str, tuple[int, ...]]:
        """`cursor_windows`, with the prefix already cut to its token budget from the document's anchor, and
        the prefix's token ids (tokenized once here, reused by the prompt)."""
        prefix, suffix = cursor_windows(text, offset, settings)
        window_start = offset - len(prefix)
        budget = settings.max_prefix_tokens
        anchor = self._anchors.get(key)
        if anchor is not None:
            start, head, header = anchor
            if window_start <= start <= offset and text.startswith(head, start):
                ids = self._encode(header + text[start:offset])
                if len(ids) <= budget:
                    self._anchors.move_to_end(key)
                    return header + text[start:offset], suffix, ids
        header = ""
        ids = self._encode(prefix)
        if len(ids) > budget:
            above = text[max(0, window_start - HEADER_SCAN_CHARS):window_start]
            header, prefix = trim_prefix(self.tokenizer, encodable(prefix),
                                         max(1, int(budget * (1 - settings.prefix_slack))), above)
            ids = self._encode(header + prefix)
        start = offset - len(prefix)
        self._anchors[key] = (start, text[start:start + self.HEAD_CHARS], header)
        self._anchors.move_to_end(key)
        while len(self._anchors) > self.capacity:
            self._anchors.popitem(last=False)
        return header + prefix, suffix, ids

    def forget(self, key: str) -> None:
        self._anchors.pop(key, None)

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(encodable(text), add_special_tokens=False)) if text else ()


class PromptBuilder:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, settings: ContextSettings):
        self.tokenizer = tokenizer
        self.format = fmt
        self.settings = settings

    def build(self, context: CursorContext) -> Prompt:
        reuse = context.prefix_ids is not None and len(context.prefix_ids) <= self.settings.max_prefix_tokens
        if reuse:
            prefix, prefix_ids = context.prefix, context.prefix_ids
        else:
            prefix = "".join(trim_prefix(self.tokenizer, context.prefix, self.settings.max_prefix_tokens))
            prefix_ids = None
        suffix = trim_to_tokens(self.tokenizer, context.suffix, self.settings.max_suffix_tokens, keep="start")
        snippets = self._fit_snippets(context.snippets) if snippets_enabled(self.format, self.settings) else ()
        trimmed = CursorContext(prefix, suffix, context.path, context.language_id, snippets, prefix_ids,
                                rewrite=context.rewrite)
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


HEADER = re.compile(r"^([ \t]*)(?:async[ \t]+def|def|class)[ \t]")
HEADER_SCAN_CHARS = 20_000  # how far above the window an enclosing definition is looked for
MAX_HEADER_LINES = 12  # a signature and its docstring; a longer one is cut there


def enclosing_header(before: str, window: str) -> str:
    """The `def`/`class` lines (signature and docstring) that enclose the end of `window` but lie in `before`,
    the text cut off above it; "" when the definition is inside the window or there is none (Python-style
    indentation). A prompt cut inside a long function then still says which function it is."""
    lines = window.split("\n")
    body = [line for line in lines if line.strip()]
    indent = min((len(line) - len(line.lstrip()) for line in body), default=0)
    if not indent or any((match := HEADER.match(line)) and len(match.group(1)) < indent for line in body):
        return ""
    above = before[-HEADER_SCAN_CHARS:].split("\n")
    level = indent  # the indentation a line must be under to enclose the window
    for index in range(len(above) - 1, -1, -1):
        line = above[index]
        stripped = line.strip()
        depth = len(line) - len(line.lstrip())
        if not stripped or stripped.startswith("#") or depth >= level or _continues(above, index):
            continue
        if HEADER.match(line):
            return "\n".join(_signature_and_docstring(above[index:])) + "\n"
        level = depth  # an enclosing block (if, for, with...): its own enclosing definition is further up
        if not level:
            return ""
    return ""


def _continues(lines: list[str], index: int) -> bool:
    """A dedented line that is part of a longer statement above it (a wrapped call, a decorator's argument)."""
    previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
    return previous.rstrip().endswith(("(", "[", "{", ",", "\\"))


def _signature_and_docstring(lines: list[str]) -> list[str]:
    """The header's lines up to its closing colon, then its docstring if one follows."""
    kept: list[str] = []
    for line in lines[:MAX_HEADER_LINES]:
        kept.append(line)
        if line.rstrip().endswith(":"):
            break
    rest = lines[len(kept):MAX_HEADER_LINES]
    first = rest[0].strip() if rest else ""
    if first[:3] in ('"""', "'''"):
        quote = first[:3]
        for count, line in enumerate(rest, 1):
            if quote in (line.strip()[3:] if count == 1 else line):
                return kept + rest[:count]
    return kept


def trim_prefix(tokenizer: PreTrainedTokenizerBase, text: str, budget: int, above: str = "") -> tuple[str, str]:
    """`trim_to_tokens` for the prefix, as (header, window): the window is the end of `text`, and when the cut
    falls inside a definition the header is its signature and docstring, to go on top (else ""). `above` is
    document text before `text`, where the definition may start."""
    window = trim_to_tokens(tokenizer, text, budget, keep="end")
    if len(window) == len(text) and not above:
        return "", text
    header = enclosing_header(above + text[: len(text) - len(window)], window)
    if not header:
        return "", window
    cost = len(tokenizer.encode(header, add_special_tokens=False))
    if cost >= budget // 2:  # a header that would crowd out the code near the cursor is not worth it
        return "", window
    return header, trim_to_tokens(tokenizer, window, budget - cost, keep="end")


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
        return [cast(int, tokenizer.convert_tokens_to_ids(special[name]))]  # one token in: one id out

    def text(value: str) -> list[int]:
        return tokenizer.encode(value, add_special_tokens=False) if value else []

    header = f"{context.path or 'untitled' + EXTENSIONS.get(context.language_id, '')}\n"
    snippets: list[int] = []
    for snippet in context.snippets:
        snippets += token("snippet") + text(f"{snippet.path}\n{snippet.text}")
    prefix = list(context.prefix_ids) if context.prefix_ids is not None else text(context.prefix)
    return (
        token("bos") + token("file") + text(header) + snippets
        + token("suffix") + text(context.suffix)
        + token("prefix") + prefix
        + token("middle")
    )


def encode_chat(tokenizer: PreTrainedTokenizerBase, context: CursorContext) -> list[int]:
    language = context.language_id or "code"
    related = "".join(f"\n\nRelated code from {s.path}:\n```\n{s.text}\n```" for s in context.snippets)
    if context.rewrite is not None:  # a next edit: the file with the region marked, the history among the snippets
        start, end = REGION_MARKERS
        content = (
            EDIT_INSTRUCTION.format(start=start, end=end) + related
            + f"\n\nFile: {context.path or 'untitled'} ({language})\n```\n{context.prefix}{start}{context.rewrite}"
            + f"{end}{context.suffix}\n```"
        )
    else:
        content = (
            CHAT_INSTRUCTION.format(cursor=CURSOR_MARKER) + related
            + f"\n\nFile: {context.path or 'untitled'} ({language})"
            + f"\n\nCode after the cursor:\n```\n{context.suffix}\n```"
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


def encodable(text: str) -> str:
    """`text` with lone surrogates (JSON allows them, tokenizers refuse them) replaced, one character for one."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
