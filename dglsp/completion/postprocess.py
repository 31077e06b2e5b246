"""Post-processing: turn raw generated text into the edit shown at the cursor.

`postprocess_edit(raw, context, settings)` returns an `Edit` at the cursor (`context.cursor`, in
document offsets): the text, over the characters after the cursor on its line that it replaces,
so a completion can type over auto-closed brackets instead of inserting before them; or a
`Dropped` naming the filter that left nothing worth showing (the reason the editor is told).
`postprocess` is the insert-only view of the same pipeline (no replacement), for callers that insert.

The filters run in this order; each guards against a classic ghost-text bug and has a
name, so `skip={...}` can switch it off to measure what it is worth (`dglsp eval --repo`):

* fences     — strip chat code fences (always on);
* scope      — single line or block, from the cursor's syntactic position: code after the
               cursor, a comment or string, or the middle of a statement -> the rest of the
               line; after a block opener (`def f():`, `{`, `then`) or on a blank line -> a block;
* block_end  — a block stops at the first line that dedents below it;
* closers    — ... or at the line that closes a bracket the suffix already closes (`}` of the
               enclosing function);
* repeat     — drop lines that repeat the code below the cursor or the line above, and
               text that repeats itself (a line twice in a row, `foo(foo(foo(`);
* syntax     — tree-sitter: drop trailing lines that leave more syntax errors than without
               them (a canvas cut mid-statement), then drop a suggestion that still leaves more
               errors than the code without it (token soup never reaches the screen);
* indent     — re-indent a block to the file's style (tabs or spaces, and width);
* brackets   — never over-close what the suffix closes: replace over auto-closed pairs
               (`def foo(|)` + `bar: str) -> int:`), or cut the duplicate (`bar: str):` -> `bar: str`).

Finally trailing whitespace goes, the first line does not repeat indentation the user typed,
and a suggestion that is only whitespace is none. Languages come from `syntax.py`; without a
grammar the tree-sitter checks fall back to the lexer and indentation rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dglsp.completion.edits import Edit
from dglsp.completion.outcome import Reason
from dglsp.completion.prompt import CursorContext
from dglsp.completion.syntax import (
    CLOSERS,
    BracketBalance,
    LanguageSpec,
    Lexer,
    clean_window,
    error_count,
    in_literal,
    language_spec,
    opens_block,
)
from dglsp.config import PostprocessSettings

FILTERS = ("scope", "block_end", "closers", "repeat", "syntax", "indent", "brackets")
# Characters an editor typically inserts by itself after the cursor (auto-pairs) or that end a line.
AUTO_CLOSED = set(")]}\"'`;:, ")
_SELF_LOOP = re.compile(r"(.{4,}?)\1{3,}")  # a unit of 4+ chars four times in a row


@dataclass(frozen=True)
class Dropped:
    """Nothing worth showing, and the filter that found so."""

    reason: Reason


def postprocess(raw: str, context: CursorContext, settings: PostprocessSettings) -> str | None:
    """The text to insert at the cursor (insert-only: over-closing tails are cut, never replaced)."""
    edit = postprocess_edit(raw, context, settings, allow_replace=False)
    return edit.text if isinstance(edit, Edit) else None


def postprocess_edit(
    raw: str,
    context: CursorContext,
    settings: PostprocessSettings,
    skip: frozenset[str] = frozenset(),
    allow_replace: bool = True,
) -> Edit | Dropped:
    """The edit to offer at the cursor, or why there is none."""
    found = _shaped(raw, context, settings, skip, allow_replace)
    if isinstance(found, Dropped):
        return found
    text, replace_chars = found
    return Edit(context.cursor, context.cursor + replace_chars, text)


def answers_one_line(context: CursorContext, settings: PostprocessSettings) -> bool:
    """Whether the cursor's scope takes one line at most (code after the cursor on its line, a comment or string,
    the middle of a statement, a blank line inside a block), so a short canvas suffices."""
    line_prefix, line_suffix = context.prefix.rsplit("\n", 1)[-1], context.suffix.split("\n", 1)[0]
    if not settings.multiline or line_suffix.strip():
        return True
    spec = language_spec(context.language_id)
    return not _block_scope(context, spec, line_prefix, line_suffix, settings.tree_sitter, settings.mid_block)


def _shaped(raw: str, context: CursorContext, settings: PostprocessSettings, skip: frozenset[str],
            allow_replace: bool) -> tuple[str, int] | Dropped:
    """The pipeline: (the text, the characters after the cursor it replaces), or why nothing is left."""
    spec = language_spec(context.language_id)
    use_tree = settings.tree_sitter
    text = strip_fences(raw.replace("\r\n", "\n"))
    line_prefix = context.prefix.rsplit("\n", 1)[-1]
    line_suffix = context.suffix.split("\n", 1)[0]
    if "scope" in skip:
        block = settings.multiline and not line_suffix.strip()
    else:
        block = settings.multiline and _block_scope(context, spec, line_prefix, line_suffix, use_tree,
                                                    settings.mid_block)
    lines: list[str] | None = _scoped_lines(text.split("\n"), context, spec, settings, skip, block)
    if lines and "repeat" not in skip:
        lines = _cut_repeats(lines, context, line_prefix)
        if lines is None:
            return Dropped(Reason.REPEAT)
    if not lines or not "".join(lines).strip():
        return Dropped(Reason.BRACKETS if text.strip() and block and "closers" not in skip else Reason.EMPTY)
    if block and "syntax" not in skip and use_tree:
        lines = _trim_unparsable_tail(lines, context, spec)
    lines = _tidy_whitespace(lines, line_prefix)
    if block and "indent" not in skip:
        lines = _normalise_indentation(lines, context, line_prefix)
    text = "\n".join(lines)
    if "repeat" not in skip:
        text = _drop_line_suffix_repeat(text, line_suffix)
        if not text.strip() and "\n".join(lines).strip():
            return Dropped(Reason.REPEAT)
    if len(lines) == 1 and not line_suffix.strip():
        text = text.rstrip()
    if not text.strip():
        return Dropped(Reason.EMPTY)
    if "brackets" in skip:
        found: tuple[str, int] | None = (text, 0)
    else:
        found = _balance_against_suffix(text, context, spec, line_suffix, allow_replace and settings.replace_suffix)
    if found is None:
        return Dropped(Reason.BRACKETS)
    hide = settings.hide_unparsable and "syntax" not in skip and use_tree
    if hide and _adds_errors(found, context, spec):
        return Dropped(Reason.UNPARSABLE)
    return found


def _scoped_lines(lines: list[str], context: CursorContext, spec: LanguageSpec, settings: PostprocessSettings,
                  skip: frozenset[str], block: bool) -> list[str]:
    """The lines the cursor's scope allows: the rest of the line (through a bracket it opens), or a block."""
    line_suffix = context.suffix.split("\n", 1)[0]
    if not block:
        rest_of_line = settings.multiline and not line_suffix.strip() and "scope" not in skip
        return _through_open_brackets(lines, context, spec, settings.max_lines) if rest_of_line else lines[:1]
    if "block_end" not in skip:
        lines = _cut_at_block_end(lines, context.prefix.rsplit("\n", 1)[-1], spec)
    if "closers" not in skip:
        lines = _cut_at_enclosing_closer(lines, context, spec)
    return lines[: settings.max_lines]


def _tidy_whitespace(lines: list[str], line_prefix: str) -> list[str]:
    """No trailing spaces or blank lines, and no repeat of indentation the user already typed."""
    lines = [line.rstrip() for line in lines[:-1]] + [lines[-1] if len(lines) == 1 else lines[-1].rstrip()]
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    if line_prefix and not line_prefix.strip():
        lines[0] = lines[0].lstrip(" \t")
    return lines


# -- fences and scope -----------------------------------------------------------------------------
def strip_fences(text: str) -> str:
    stripped = text.lstrip()
    if stripped.startswith("```"):
        newline = stripped.find("\n")
        text = stripped[newline + 1:] if newline != -1 else ""
    fence = text.find("```")
    return text[:fence] if fence != -1 else text


def _block_scope(context: CursorContext, spec: LanguageSpec, line_prefix: str, line_suffix: str,
                 use_tree: bool, mid_block: bool) -> bool:
    """True when a multi-line suggestion fits the cursor: the end of a block opener, or a blank line at
    an empty block's start or a block's end (anywhere blank, with `mid_block`)."""
    if line_suffix.strip():
        return False  # code after the cursor on its line: complete the rest of the line only
    clean = clean_window(context.prefix, context.suffix) if use_tree else None
    window, offset = (clean[0] + clean[1], len(clean[0])) if clean else ("", 0)
    literal = in_literal(spec, window, offset) if clean else None
    if literal is None:  # no trustworthy parse: the lexer over the cursor's line only
        literal = Lexer(spec).feed(line_prefix).mode != "code"
    if literal:
        return False
    if not line_prefix.strip():
        return mid_block or _at_block_edge(context, spec)
    return opens_block(spec, line_prefix, window, offset)


def _width(line: str) -> int:
    """Indentation in columns (tabs to 8), so tab- and space-indented lines compare."""
    return len(line[: _indent(line)].expandtabs(8))


def _at_block_edge(context: CursorContext, spec: LanguageSpec) -> bool:
    """A blank cursor line with no code of its own block below it: the line above opens a block whose
    body is empty, or the next line dedents (a block's end, `}`, `end`), or nothing follows. Or the line
    above is a comment: written just before, it usually describes the block wanted below it."""
    above = next((line for line in reversed(context.prefix.split("\n")[:-1]) if line.strip()), None)
    below = next((line for line in context.suffix.split("\n")[1:] if line.strip()), None)
    if above is None or below is None or above.lstrip().startswith(spec.line_comments):
        return True
    if opens_block(spec, above, "", 0):
        return _width(below) <= _width(above)
    return _width(below) < _width(above)


def _through_open_brackets(lines: list[str], context: CursorContext, spec: LanguageSpec,
                           max_lines: int) -> list[str]:
    """The rest of the line — and, when it opens a bracket (a call spread over lines), the lines up to
    the one that closes it. Not closed yet (the canvas ended first, or a draft goes on): all of them."""
    lexer = Lexer(spec).feed(context.prefix)
    base = lexer.depth
    lexer.feed(lines[0])
    if lexer.depth <= base or lexer.mode != "code":
        return lines[:1]
    for index in range(1, min(len(lines), max_lines)):
        lexer.feed("\n" + lines[index])
        if lexer.depth <= base:
            return lines[: index + 1]
    return lines[:max_lines]


# -- block end ------------------------------------------------------------------------------------
def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _cut_at_block_end(lines: list[str], line_prefix: str, spec: LanguageSpec) -> list[str]:
    """Keep lines while they stay inside the cursor line's block (indentation >= the cursor line's).
    In brace languages the dedented line that closes the block is kept (`_cut_at_enclosing_closer`
    drops it again when the suffix has that closer already)."""
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
            closes = line.strip()[0] in CLOSERS if spec.blocks == "braces" else line.strip().startswith("end")
            if closes and spec.blocks != "indent":
                kept.append(line)
            break
        kept.append(line)
    return kept


def _cut_at_enclosing_closer(lines: list[str], context: CursorContext, spec: LanguageSpec) -> list[str]:
    """Stop before the line that closes a bracket opened before the cursor which the suffix closes
    already (the enclosing function's `}`); a closer the suffix lacks is kept, and ends the block."""
    below = next((line.rstrip() for line in context.suffix.split("\n")[1:] if line.strip()), None)
    for index, line in enumerate(lines[1:], start=1):
        if below and line.rstrip() == below and not re.search(r"\w", line):
            return lines[:index]  # the closing line the suffix already has (`}` at the same indentation)
    balance = BracketBalance(spec, context.prefix, context.suffix)
    base_depth = balance.prefix_state.depth
    for index, line in enumerate(lines):
        text = "\n".join(lines[: index + 1])
        if balance.excess(text) > balance.baseline:
            if index == 0:
                head = _cut_before_over_close(line, balance)
                return [head] if head.strip() else []
            return lines[:index]
        if _dips_below(balance.state_after(text), base_depth):
            return lines[: index + 1]  # it closed the block the cursor was in: the suffix lacks that closer
    return lines


def _dips_below(lexer: Lexer, depth: int) -> bool:
    """Did the last feed close a bracket that was open before it, leaving fewer than `depth` open?"""
    current = depth
    for _, kind in lexer.events:
        current += 1 if kind == "open" else -1 if kind == "close" else 0
        if current < depth:
            return True
    return False


def _cut_before_over_close(text: str, balance: BracketBalance) -> str:
    """`text` up to its first closer that leaves more excess closers than the code had without it."""
    for index, char in enumerate(text):
        if char in CLOSERS and balance.excess(text[: index + 1]) > balance.baseline:
            return text[:index]
    return text


# -- repetition -----------------------------------------------------------------------------------
def _next_line(suffix: str) -> str | None:
    return next((line.strip() for line in suffix.split("\n")[1:] if line.strip()), None)


def _cut_repeats(lines: list[str], context: CursorContext, line_prefix: str) -> list[str] | None:
    """Cut where the suggestion starts repeating the code below, the line above, or itself.
    None: the suggestion's first line is itself a repeat (nothing worth showing)."""
    next_line = _next_line(context.suffix) if not context.suffix.split("\n", 1)[0].strip() else None
    if next_line is not None and not re.search(r"\w", next_line):
        next_line = None  # a bare `}` or `)` below is no evidence of repetition (the bracket filters judge it)
    previous = next((line.strip() for line in reversed(context.prefix.split("\n")[:-1]) if line.strip()), None)
    first = (line_prefix + lines[0]).strip()
    first_is_new_line = not first or not lines[0].strip()
    if first and lines[0].strip() and (first == next_line or (len(first) >= 8 and first == previous)):
        return None
    kept: list[str] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if index > 0 and stripped and next_line and (stripped == next_line or (
                index == len(lines) - 1 and len(stripped) >= 8 and next_line.startswith(stripped))):
            break  # the code below, possibly cut short at the end of the canvas
        if kept and stripped and len(stripped) >= 4 and stripped == kept[-1].strip() and not _only_closers(stripped):
            break  # the same line twice in a row: the model is looping
        period = _loop_period(kept + [line])
        if period:
            kept = kept[: len(kept) + 1 - period]  # one copy of the group stays
            break
        loop = _SELF_LOOP.search(line)
        if loop and re.search(r"\w", loop.group(1)):
            kept.append(line[: loop.start() + len(loop.group(1))])
            break
        kept.append(line)
    if first_is_new_line and len(kept) <= 1 and len(lines) > 1:
        return None  # the only new line was a repeat of the code below
    return kept or None


def _loop_period(lines: list[str], longest: int = 4) -> int:
    """The length of a group of 2..`longest` lines that `lines` ends with twice in a row (0: none)."""
    stripped = [line.strip() for line in lines]
    for period in range(2, longest + 1):
        group = stripped[-period:]
        if len(stripped) >= 2 * period and group == stripped[-2 * period:-period] \
                and any(re.search(r"\w", line) for line in group):
            return period
    return 0


def _drop_line_suffix_repeat(text: str, line_suffix: str) -> str:
    """A mid-line suggestion that runs on through the code already after the cursor: cut that copy."""
    head = line_suffix.rstrip()
    if not head.strip() or set(head) <= set(")]} "):
        return text  # only closers after the cursor: the bracket filter types over or cuts them
    body = text.rstrip()
    if body.endswith(head):
        return body[: len(body) - len(head)]
    if head.strip() and body.endswith(head.strip()):
        return body[: len(body) - len(head.strip())].rstrip()
    return text


def _only_closers(text: str) -> bool:
    return all(char in ")]};, " for char in text)


# -- syntax ---------------------------------------------------------------------------------------
def _trim_unparsable_tail(lines: list[str], context: CursorContext, spec: LanguageSpec) -> list[str]:
    """Drop trailing lines while that lowers the syntax errors of prefix + completion + suffix.
    Keeps the longest candidate among those with the fewest errors."""
    if len(lines) < 2:
        return lines
    best, best_errors = len(lines), None
    clean = clean_window(context.prefix, context.suffix)
    if clean is None:
        return lines
    prefix, suffix = clean
    for count in range(len(lines), 0, -1):
        if count < len(lines) and not lines[count - 1].strip():
            continue
        errors = error_count(spec, prefix + "\n".join(lines[:count]) + suffix)
        if errors is None:
            return lines
        if best_errors is None or errors < best_errors:
            best, best_errors = count, errors
    return lines[:best]


def _adds_errors(found: tuple[str, int], context: CursorContext, spec: LanguageSpec) -> bool:
    """Does the text (replacing `found[1]` characters after the cursor) leave more syntax errors in its
    top-level statement than leaving the gap empty? False when there is no grammar or no trustworthy window."""
    clean = clean_window(context.prefix, context.suffix)
    if clean is None:
        return False
    prefix, suffix = clean
    text, replace_chars = found
    before = error_count(spec, prefix + suffix)
    after = error_count(spec, prefix + text + suffix[replace_chars:])
    return before is not None and after is not None and after > before


# -- indentation ----------------------------------------------------------------------------------
def indentation_unit(text: str) -> str | None:
    r"""The file's indentation: "\t", or N spaces (the most common step between indented lines);
    None when the text is mixed or shows too few steps to tell."""
    tabs = spaces = 0
    steps: dict[int, int] = {}
    previous: int | None = None  # the window's first line may start at any depth: it sets no step
    for line in text.split("\n"):
        if not line.strip():
            continue
        lead = line[: _indent(line)]
        if lead.startswith("\t"):
            tabs += 1
            continue
        width = len(lead)
        if width:
            spaces += 1
        if previous is not None and width > previous:
            steps[width - previous] = steps.get(width - previous, 0) + 1
        previous = width
    if tabs and spaces and min(tabs, spaces) > 0.1 * max(tabs, spaces):
        return None  # mixed (GNU style: tabs for 8 columns, spaces below): no single unit to follow
    if tabs > spaces:
        return "\t"
    candidates = {step: count for step, count in steps.items() if step in (2, 3, 4, 8)}
    if not candidates:
        return None
    step = max(candidates, key=lambda step: (candidates[step], -step))
    return " " * step if candidates[step] >= 2 else None


def _normalise_indentation(lines: list[str], context: CursorContext, line_prefix: str) -> list[str]:
    """Re-indent lines after the first to the file's unit, keeping their nesting relative to the cursor."""
    unit = indentation_unit(context.prefix + context.suffix)
    if unit is None or len(lines) < 2:
        return lines
    base_lead = line_prefix[: _indent(line_prefix)] if line_prefix.strip() else line_prefix
    leads = [line[: _indent(line)] for line in lines[1:] if line.strip()]
    if unit == "\t":
        if not any(" " in lead for lead in leads):
            return lines
        widths = [len(lead.expandtabs(4)) for lead in leads]
        step = 4 if all(width % 4 == 0 for width in widths) else 2  # the model's own width, usually 4
        return lines[:1] + [_retab(line, step) for line in lines[1:]]
    base = len(base_lead.expandtabs(len(unit)))
    relative = [len(lead.expandtabs(len(unit))) - base for lead in leads]
    positive = [width for width in relative if width > 0]
    step = min(positive) if positive else len(unit)
    if step == len(unit) and not any("\t" in lead for lead in leads):
        return lines
    if any(width % step for width in relative if width > 0):
        return lines  # irregular nesting: leave it as the model wrote it
    out = lines[:1]
    for line in lines[1:]:
        if not line.strip():
            out.append(line)
            continue
        width = len(line[: _indent(line)].expandtabs(len(unit))) - base
        levels = width // step if width > 0 else 0
        lead = base_lead + unit * levels if width >= 0 else line[: _indent(line)]
        out.append(lead + line.lstrip(" \t"))
    return out


def _retab(line: str, step: int) -> str:
    lead = line[: _indent(line)].expandtabs(step)
    return "\t" * (len(lead) // step) + " " * (len(lead) % step) + line.lstrip(" \t")


# -- brackets -------------------------------------------------------------------------------------
def _is_subsequence(needle: str, haystack: str) -> bool:
    chars = iter(haystack)
    return all(char in chars for char in needle)


def _balance_against_suffix(
    text: str, context: CursorContext, spec: LanguageSpec, line_suffix: str, allow_replace: bool
) -> tuple[str, int] | None:
    """Make sure the completion does not close what the suffix already closes: (the text, the characters after
    the cursor it types over), or None when nothing is left."""
    prefix, suffix = context.prefix, context.suffix
    balance = BracketBalance(spec, prefix, suffix)
    if balance.excess(text) <= balance.baseline:
        return text, 0
    head = line_suffix.rstrip()
    # Type over what the editor auto-closed: `foo(|)` + `a, b)` -> replace `)`, keeping the rest of the text.
    if allow_replace and "\n" not in text and head and set(head) <= AUTO_CLOSED and _is_subsequence(head, text):
        if BracketBalance(spec, prefix, suffix[len(head):]).excess(text) <= balance.baseline:
            return text, len(head)
    # Otherwise cut the completion before its first over-closing bracket.
    trimmed = _cut_before_over_close(text, balance)
    if "\n" in trimmed:
        trimmed = trimmed.rstrip()
    while trimmed and balance.excess(trimmed) > balance.baseline:
        trimmed = trimmed[:-1]
    return (trimmed, 0) if trimmed.strip() else None
