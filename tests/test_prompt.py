from __future__ import annotations

import pytest

from dglsp.config import ContextSettings
from dglsp.modelzoo import fim_format_spec
from dglsp.prompt import CursorContext, PromptBuilder, PromptFormat, cursor_windows, trim_to_tokens


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
