"""The core post-processing rules (issue 2): EOS is cut before this; here the text rules."""

from __future__ import annotations

from dglsp.completion.postprocess import postprocess
from dglsp.completion.prompt import CursorContext
from dglsp.config import PostprocessSettings

SETTINGS = PostprocessSettings()


def run(raw: str, prefix: str, suffix: str = "", **kw) -> str | None:
    return postprocess(raw, CursorContext(prefix, suffix, "x.py", "python"), PostprocessSettings(**kw))


def test_duplicated_closing_bracket_is_dropped():
    assert run("bar: str):", "def foo(", "):\n    pass\n") == "bar: str"


def test_closing_bracket_needed_by_an_inner_call_is_kept():
    # print(len(|) — the completion closes len, the suffix closes print.
    assert run("x)", "print(len(", ")\n") == "x)"


def test_mid_line_cursor_keeps_the_first_line_only():
    assert run("a, b\n    more = 1", "f(", ")\n") == "a, b"


def test_multiline_stops_at_the_end_of_the_block():
    raw = "\n    total = 0\n    for x in xs:\n        total += x\n    return total\n\ndef other():\n    pass"
    text = run(raw, "def add(xs):", "\n")
    assert text == "\n    total = 0\n    for x in xs:\n        total += x\n    return total"


def test_block_started_on_an_indented_empty_line():
    text = run("return a + b\nprint('done')", "def add(a, b):\n    ", "\n")
    assert text == "return a + b"


def test_stops_before_repeating_the_next_line_of_the_suffix():
    text = run("x = 1\n    y = 2\n    z = 3", "def f():\n    ", "\n    z = 3\n    return z\n", mid_block=True)
    assert text == "x = 1\n    y = 2"


def test_only_whitespace_is_no_suggestion():
    assert run("   \n\n  ", "x = ", "") is None
    assert run("", "x = ", "") is None


def test_indentation_the_user_typed_is_not_repeated():
    assert run("    return 1", "def f():\n    ", "") == "return 1"


def test_code_fences_from_chat_models_are_stripped():
    assert run("```python\nreturn 1\n```", "def f():\n    ", "") == "return 1"


def test_multiline_off_keeps_one_line_and_max_lines_caps():
    assert run("a\nb\nc", "", "", multiline=False) == "a"
    assert run("a\nb\nc\nd", "", "", max_lines=2) == "a\nb"
