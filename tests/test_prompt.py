from __future__ import annotations

import pytest

from dglsp.completion.prompt import (
    CursorContext,
    PrefixAnchors,
    PromptBuilder,
    PromptFormat,
    cursor_windows,
    trim_to_tokens,
)
from dglsp.config import ContextSettings
from dglsp.tools.modelzoo import fim_format_spec


def test_windows_cut_at_line_boundaries_and_stay_bounded():
    text = "".join(f"line {i}\n" for i in range(10_000))
    offset = text.index("line 5000")
    prefix, suffix = cursor_windows(text, offset, ContextSettings(max_prefix_tokens=16, max_suffix_tokens=16,
                                                                  chars_per_token=4))
    assert len(prefix) <= 64 and len(suffix) <= 64
    assert prefix.startswith("line ") and prefix.endswith("\n")
    assert suffix.startswith("line 5000\n") and suffix.endswith("\n")


def test_cursor_outside_document_is_rejected():
    with pytest.raises(ValueError):
        cursor_windows("abc", 4, ContextSettings())


def test_trim_to_tokens_keeps_whole_lines_nearest_the_cursor(tiny_tokenizer):
    text = "".join(f"value_{i} = compute({i})\n" for i in range(200))
    kept = trim_to_tokens(tiny_tokenizer, text, 50, keep="end")
    assert len(tiny_tokenizer.encode(kept, add_special_tokens=False)) <= 50
    assert text.endswith(kept) and kept.startswith("value_")
    head = trim_to_tokens(tiny_tokenizer, text, 50, keep="start")
    assert text.startswith(head) and head.endswith("\n")
    assert len(tiny_tokenizer.encode(head, add_special_tokens=False)) <= 50


def _count(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def _type_along(anchors: PrefixAnchors, text: str, offset: int, typed: str, settings: ContextSettings):
    """Type `typed` at `offset` one character at a time; the prefix window after each keystroke."""
    prefixes = []
    for i in range(1, len(typed) + 1):
        doc = text[:offset] + typed[:i] + text[offset:]
        prefix, suffix, ids = anchors.windows("file:///a.py", doc, offset + i, settings)
        assert list(ids) == anchors.tokenizer.encode(prefix, add_special_tokens=False)
        assert doc[:offset + i].endswith(prefix) and doc[offset + i:].startswith(suffix)
        prefixes.append(prefix)
    return prefixes


def test_sticky_prefix_keeps_its_start_line_while_typing_so_the_prompt_only_appends(tiny_tokenizer):
    settings = ContextSettings(max_prefix_tokens=120, max_suffix_tokens=32)
    text = "".join(f"value_{i} = compute({i})\n" for i in range(400))
    offset = text.index("value_300")
    typed = "result = combine(value_1, value_2, value_3)\nother = combine(value_4)\n"
    sticky = _type_along(PrefixAnchors(tiny_tokenizer), text, offset, typed, settings)
    assert all(_count(tiny_tokenizer, p) <= settings.max_prefix_tokens for p in sticky)
    # Each prefix extends the one before: its first line never moves while the slack lasts.
    assert all(later.startswith(earlier) for earlier, later in zip(sticky, sticky[1:], strict=False))
    # Cutting at the exact budget instead moves the start line as the typing goes on (the cache would miss).
    exact = [trim_to_tokens(tiny_tokenizer, cursor_windows(text[:offset] + typed[:i] + text[offset:], offset + i,
                                                               settings)[0], 120, keep="end")
             for i in range(1, len(typed) + 1)]
    assert len({p.split("\n", 1)[0] for p in exact}) > 1


def test_sticky_prefix_moves_when_the_slack_is_used_up_or_the_text_above_changes(tiny_tokenizer):
    settings = ContextSettings(max_prefix_tokens=60, max_suffix_tokens=16, prefix_slack=0.25)
    text = "".join(f"value_{i} = compute({i})\n" for i in range(400))
    offset = text.index("value_300")
    anchors = PrefixAnchors(tiny_tokenizer)
    typed = "".join(f"extra_{i} = {i}\n" for i in range(12))  # far more than the slack
    prefixes = _type_along(anchors, text, offset, typed, settings)
    assert all(_count(tiny_tokenizer, p) <= 60 for p in prefixes)
    assert len({p.split("\n", 1)[0] for p in prefixes}) > 1
    # A line inserted above the window shifts the anchor's offset: the window is recomputed, never stale.
    edited = "import os\n" + text
    prefix, _, _ = anchors.windows("file:///a.py", edited, offset + 10, settings)
    assert edited[:offset + 10].endswith(prefix) and _count(tiny_tokenizer, prefix) <= 60
    # A short document is never cut, anchored or not.
    short = "def f(x):\n    return x\n"
    assert anchors.windows("file:///b.py", short, len(short), settings)[0] == short


def test_fim_prompt_puts_suffix_before_prefix_so_typing_only_appends(tiny_tokenizer):
    fmt = PromptFormat.for_model({"prompt_format": fim_format_spec()}, tiny_tokenizer)
    builder = PromptBuilder(tiny_tokenizer, fmt, ContextSettings())
    before = builder.build(CursorContext("def f(x):\n    return x", "\n\nprint(f(2))\n", "/a/b.py", "python")).ids
    after = builder.build(CursorContext("def f(x):\n    return x +", "\n\nprint(f(2))\n", "/a/b.py", "python")).ids
    middle = tiny_tokenizer.convert_tokens_to_ids("<|middle|>")
    assert before[-1] == middle and after[-1] == middle
    common = next(i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b)
    assert common >= len(before) - 3  # only the tokens at the cursor differ
    decoded = tiny_tokenizer.decode(before)
    assert decoded.index("print(f(2))") < decoded.index("def f(x)")


def test_a_prompt_reuses_the_prefix_ids_the_window_cut_gave_it(tiny_tokenizer):
    fmt = PromptFormat.for_model({"prompt_format": fim_format_spec()}, tiny_tokenizer)
    settings = ContextSettings(max_prefix_tokens=120, max_suffix_tokens=32)
    text = "".join(f"value_{i} = compute({i})\n" for i in range(400))
    anchors = PrefixAnchors(tiny_tokenizer)
    prefix, suffix, ids = anchors.windows("file:///a.py", text, len(text) // 2, settings)
    builder = PromptBuilder(tiny_tokenizer, fmt, settings)
    reused = builder.build(CursorContext(prefix, suffix, "a.py", prefix_ids=ids))
    fresh = builder.build(CursorContext(prefix, suffix, "a.py"))
    assert reused.ids == fresh.ids
    calls: list[str] = []
    counting = tiny_tokenizer.encode

    def encode(text, *args, **kwargs):
        calls.append(text)
        return counting(text, *args, **kwargs)

    tiny_tokenizer.encode = encode
    try:
        builder.build(CursorContext(prefix, suffix, "a.py", prefix_ids=ids))
    finally:
        del tiny_tokenizer.encode
    assert prefix not in calls  # the prefix was not tokenized again


def test_a_prefix_cut_inside_a_function_keeps_its_signature_and_docstring(tiny_tokenizer):
    body = "".join(f"        total += weight_{i} * values[{i}]\n" for i in range(120))
    source = ('import os\n\n\nclass Scale:\n    def weighted(self, values):\n        """Weight the values.\n\n'
              '        Returns their sum.\n        """\n        total = 0\n' + body + "        return ")
    fmt = PromptFormat.for_model({"prompt_format": fim_format_spec()}, tiny_tokenizer)
    settings = ContextSettings(max_prefix_tokens=200, max_suffix_tokens=16)
    prompt = PromptBuilder(tiny_tokenizer, fmt, settings).build(CursorContext(source, "\n", "scale.py"))
    kept = prompt.context.prefix
    assert kept.startswith('    def weighted(self, values):\n        """Weight the values.\n\n'
                           '        Returns their sum.\n        """\n')
    assert kept.endswith("        return ") and "total = 0" not in kept  # the middle of the body was cut
    assert len(tiny_tokenizer.encode(kept, add_special_tokens=False)) <= 200
    anchors = PrefixAnchors(tiny_tokenizer)
    prefix, _, ids = anchors.windows("file:///scale.py", source + "\n", len(source), settings)
    assert prefix.startswith("    def weighted(self, values):\n") and len(ids) <= 200
    typed, _, _ = anchors.windows("file:///scale.py", source + "x\n", len(source) + 1, settings)
    assert typed == prefix + "x"  # the header stays while typing: the prompt only appends
