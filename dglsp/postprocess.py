"""Post-processing: turn raw generated text into the suggestion shown at the cursor.

Rules, in order (each guards against a classic ghost-text bug):
1. strip chat code fences (instruction-tuned models sometimes add them);
2. mid-line cursor (code after it on the line) or multi-line off -> keep the first line only;
3. multi-line: stop at the first line that dedents below the cursor line (end of the block);
4. stop before a line that repeats the next non-blank line of the suffix;
5. drop a tail that repeats what the suffix already has on the cursor line (the duplicated
   `)` bug), only when keeping it would over-close brackets;
6. the first line does not repeat indentation the user already typed;
7. never return only whitespace.
"""

from __future__ import annotations

from dglsp.config import PostprocessSettings
from dglsp.prompt import CursorContext

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}


def postprocess(raw: str, context: CursorContext, settings: PostprocessSettings) -> str | None:
    text = _strip_fences(raw.replace("\r\n", "\n"))
    line_prefix = context.prefix.rsplit("\n", 1)[-1]
    line_suffix = context.suffix.split("\n", 1)[0]
    lines = text.split("\n")
    if line_suffix.strip() or not settings.multiline:
        lines = lines[:1]
    else:
        lines = _cut_at_block_end(lines, line_prefix)
        lines = _cut_before_suffix_repeat(lines, context.suffix)
        lines = lines[: settings.max_lines]
    lines = [line.rstrip() for line in lines[:-1]] + [lines[-1] if len(lines) == 1 else lines[-1].rstrip()]
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    if line_prefix and not line_prefix.strip():
        lines[0] = lines[0].lstrip(" \t")
    text = "\n".join(lines)
    text = _drop_suffix_overlap(text, line_prefix, line_suffix)
    if len(lines) == 1 and not line_suffix.strip():
        text = text.rstrip()
    return text if text.strip() else None


def _strip_fences(text: str) -> str:
    stripped = text.lstrip()
    if stripped.startswith("```"):
        newline = stripped.find("\n")
        text = stripped[newline + 1:] if newline != -1 else ""
    fence = text.find("```")
    return text[:fence] if fence != -1 else text


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _cut_at_block_end(lines: list[str], line_prefix: str) -> list[str]:
    """Keep lines while they stay inside the cursor line's block (indentation >= the cursor line's)."""
    base = _indent(line_prefix) if line_prefix.strip() else len(line_prefix)
    if not line_prefix.strip() and lines and lines[0].strip():
        base = len(line_prefix) + _indent(lines[0])  # the first line sets the block's indentation
    elif lines and not lines[0].strip():
        # The completion starts a new line (cursor at a line end, e.g. after `def f():`):
        # the first non-blank line opens the block and sets its indentation.
        base = next((_indent(line) for line in lines[1:] if line.strip()), base)
    kept = lines[:1]
    for line in lines[1:]:
        if line.strip() and _indent(line) < base:
            break
        kept.append(line)
    return kept


def _cut_before_suffix_repeat(lines: list[str], suffix: str) -> list[str]:
    after_cursor_line = suffix.split("\n")[1:]
    next_line = next((line.strip() for line in after_cursor_line if line.strip()), None)
    if next_line is None:
        return lines
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == next_line:
            return lines[:index]
    return lines


def _excess_closers(text: str) -> int:
    """Closing brackets with no opener before them (string contents are not skipped: a heuristic)."""
    stack: list[str] = []
    excess = 0
    for char in text:
        if char in OPENERS:
            stack.append(char)
        elif char in CLOSERS:
            if stack and stack[-1] == CLOSERS[char]:
                stack.pop()
            else:
                excess += 1
    return excess


def _drop_suffix_overlap(text: str, line_prefix: str, line_suffix: str) -> str:
    """Remove the longest tail of `text` that the suffix repeats, if that tail over-closes brackets."""
    head = line_suffix.lstrip(" ")
    if not head.strip():
        return text
    baseline = _excess_closers(line_prefix + line_suffix)
    if _excess_closers(line_prefix + text + line_suffix) <= baseline:
        return text
    for size in range(min(len(head), len(text)), 0, -1):
        overlap = head[:size]
        if overlap.strip() and text.endswith(overlap):
            trimmed = text[: len(text) - size]
            if _excess_closers(line_prefix + trimmed + line_suffix) <= baseline:
                return trimmed
    return text
