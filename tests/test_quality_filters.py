"""Syntax-aware post-processing (issue 5): each filter, across the languages dglsp supports.

Each test states the bug it guards against; the `skip=` tests show the filter is what fixes it.
"""

from __future__ import annotations

import pytest

from dglsp.completion.edits import Edit
from dglsp.completion.postprocess import Dropped, indentation_unit, postprocess_edit
from dglsp.completion.prompt import CursorContext
from dglsp.completion.syntax import LANGUAGES, Lexer, error_count, has_grammar, in_literal, language_spec
from dglsp.config import PostprocessSettings

SETTINGS = PostprocessSettings()


def edit(raw: str, prefix: str, suffix: str, language: str, skip: frozenset[str] = frozenset(),
         **settings) -> Edit | None:
    found = postprocess_edit(raw, CursorContext(prefix, suffix, "x", language), PostprocessSettings(**settings), skip)
    return None if isinstance(found, Dropped) else found


def at(prefix: str, text: str, replace_chars: int = 0) -> Edit:
    """The edit of `text` at a cursor after `prefix`, typing over `replace_chars` characters."""
    return Edit(len(prefix), len(prefix) + replace_chars, text)


def apply(prefix: str, suffix: str, result: Edit | None) -> str:
    return prefix + suffix if result is None else result.apply(prefix + suffix)


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_every_language_has_its_grammar_installed(language):
    assert has_grammar(language_spec(language))


# -- brackets: the `def foo(bar: str):)` bug ------------------------------------------------------
def test_python_auto_closed_paren_is_typed_over_with_a_range():
    prefix, suffix = "def foo(", ")\n    pass\n"
    result = edit("bar: str) -> int:", prefix, suffix, "python")
    assert result == at(prefix, "bar: str) -> int:", 1)
    assert apply(prefix, suffix, result) == "def foo(bar: str) -> int:\n    pass\n"


def test_python_duplicate_closer_is_cut_when_the_suffix_is_real_code():
    prefix, suffix = "total = add(", "x, y) + 1\n"
    result = edit("a, b))", prefix, suffix, "python")
    assert apply(prefix, suffix, result).count(")") == 1
    # Without the filter the line over-closes: the bug this filter exists for.
    unfiltered = edit("a, b))", prefix, suffix, "python", frozenset({"brackets", "syntax"}))
    assert apply(prefix, suffix, unfiltered).count(")") == 3


def test_mid_line_suggestion_running_on_through_the_suffix_is_cut():
    prefix, suffix = "value = compute(", "items, limit=10)\n"
    assert edit("source, items, limit=10)", prefix, suffix, "python") == at(prefix, "source, ")
    assert edit("source, items, limit=10)", prefix, suffix, "python", frozenset({"repeat", "brackets", "syntax"})) == \
        at(prefix, "source, items, limit=10)")


def test_a_call_spread_over_lines_is_completed_to_its_closing_bracket():
    raw = "compute(\n    first,\n    second,\n)\nprint(result)"
    assert edit(raw, "result = ", "\n", "python").text == "compute(\n    first,\n    second,\n)"
    assert edit("compute(\n    first,", "result = ", "\n", "python").text == "compute(\n    first,"  # not yet closed


def test_insert_only_mode_cuts_the_duplicate():
    result = postprocess_edit("bar: str):", CursorContext("def foo(", "):\n    pass\n", "x.py", "python"),
                              SETTINGS, allow_replace=False)
    assert result == at("def foo(", "bar: str")


@pytest.mark.parametrize("language,prefix,raw,suffix", [
    ("javascript", "console.log(", "items.map((x) => x * 2));", ");\n"),
    ("typescript", "const total: number = sum(", "values, 0);", ");\n"),
    ("go", "fmt.Println(", "strings.Join(parts, \", \"))", ")\n"),
    ("rust", "let n = v.iter().map(", "|x| x * 2).sum::<i32>();", ")\n"),
    ("c", "printf(", "\"%d\\n\", count);", ");\n"),
    ("cpp", "std::vector<int> v(", "n, 0);", ");\n"),
    ("java", "System.out.println(", "name.length());", ");\n"),
    ("lua", "print(", "string.format(\"%d\", n))", ")\n"),
])
def test_no_language_gets_a_duplicated_closing_bracket(language, prefix, raw, suffix):
    spec = language_spec(language)
    result = edit(raw, prefix, suffix, language)
    document = apply(prefix, suffix, result)
    assert Lexer(spec).feed(document).excess == 0, document
    assert result is not None and result.text.strip()


def test_brackets_inside_strings_do_not_count():
    prefix, suffix = "print(", ")\n"
    result = edit("'a)b'", prefix, suffix, "python")
    assert result == at(prefix, "'a)b'")


# -- scope: single line vs block ------------------------------------------------------------------
def test_after_a_block_opener_the_suggestion_is_a_block():
    raw = "\n    total = 0\n    return total"
    assert edit(raw, "def add(xs):", "\n", "python").text == raw


def test_mid_expression_gets_the_rest_of_the_line_only():
    raw = "compute(a, b)\nprint(x)\nprint(y)"
    assert edit(raw, "x = ", "\n", "python").text == "compute(a, b)"
    assert edit(raw, "x = ", "\n", "python", frozenset({"scope"})).text == raw  # the filter did it


def test_colon_of_a_dict_is_not_a_block_opener():
    assert edit("1,\n    'b': 2}", "d = {'a':", "\n", "python").text == "1,"


def test_inside_a_comment_only_the_line_is_completed():
    assert edit("the total\nx = 1", "# compute", "\n", "python").text == "the total"
    assert edit("the total\nx = 1", "x = 1  // compute", "\n", "javascript").text == "the total"


def test_brace_opener_gives_a_block_in_c_family():
    raw = "\n    return a + b;\n}"
    result = edit(raw, "int add(int a, int b) {", "\n", "c")
    assert result.text == raw  # the suffix does not close the function: the `}` stays


def test_lua_then_opens_a_block():
    raw = "\n  return 1\nend"
    assert edit(raw, "if x then", "\n", "lua").text.startswith("\n  return 1")


# -- block end ------------------------------------------------------------------------------------
@pytest.mark.parametrize("language,prefix,raw,suffix,expected", [
    ("javascript", "function f(a) {\n", "  return a;\n}\nfunction g() {", "}\n", "  return a;"),
    ("go", "func f(a int) int {\n", "\treturn a\n}\n", "}\n", "\treturn a"),
    ("rust", "fn f(a: i32) -> i32 {\n", "    a + 1\n}\n\nfn g() {}", "}\n", "    a + 1"),
    ("java", "int f(int a) {\n", "    return a;\n}\n", "}\n", "    return a;"),
    ("cpp", "int f(int a) {\n", "    return a;\n}\n", "}\n", "    return a;"),
])
def test_block_stops_before_the_closer_the_suffix_already_has(language, prefix, raw, suffix, expected):
    assert edit(raw, prefix, suffix, language).text == expected


def test_python_block_stops_at_dedent():
    raw = "\n    return a\n\ndef other():\n    pass"
    assert edit(raw, "def f(a):", "\n", "python").text == "\n    return a"


# -- repetition -----------------------------------------------------------------------------------
def test_suggestion_that_is_the_next_line_is_dropped():
    prefix, suffix = "def f():\n    ", "\n    return x\n"
    assert edit("return x", prefix, suffix, "python") is None
    assert edit("return x", prefix, suffix, "python", frozenset({"repeat"})) is not None


def test_block_stops_before_repeating_the_code_below():
    raw = "x = 1;\n  y = 2;\n  return x + y;"
    result = edit(raw, "function f() {\n  ", "\n  return x + y;\n}\n", "javascript", mid_block=True)
    assert result.text == "x = 1;\n  y = 2;"


# -- scope: a block where the block is empty or ends, one line between code of the same block ----------------------
@pytest.mark.parametrize("language, prefix, suffix", [
    ("python", "def f(xs):\n    total = 0\n    ", "\n    return total\n"),
    ("javascript", "function f(xs) {\n  let total = 0;\n  ", "\n  return total;\n}\n"),
    ("go", "func f(xs []int) int {\n\ttotal := 0\n\t", "\n\treturn total\n}\n"),
])
def test_a_blank_line_between_code_of_one_block_gets_one_line(language, prefix, suffix):
    # Copilot's rule: inserting between two lines of a block, a multi-line guess mostly adds wrong lines.
    raw = "for x in xs:\n        total += x" if language == "python" else "total += xs[0];\n  total += xs[1];"
    assert edit(raw, prefix, suffix, language).text == raw.split("\n")[0]
    assert "\n" in edit(raw, prefix, suffix, language, mid_block=True).text
    assert "\n" in edit(raw, prefix, suffix, language, frozenset({"scope"})).text


@pytest.mark.parametrize("language, prefix, suffix", [
    ("python", "def f(xs):\n    ", "\n\nprint(f([1]))\n"),  # an empty body
    ("python", "def f(xs):\n    total = 0\n    ", "\n\nprint(f([1]))\n"),  # the end of the block
    ("python", "def f(xs):\n    total = 0\n    ", ""),  # the end of the file
    ("javascript", "function f(xs) {\n  let total = 0;\n  ", "\n}\n"),
    ("lua", "local function f(xs)\n  local total = 0\n  ", "\nend\n"),
    ("python", "def f(xs):\n    total = 0\n    # add them up\n    ", "\n    return total\n"),  # under a comment
    ("javascript", "function f(xs) {\n  let total = 0;\n  // add them up\n  ", "\n  log(total);\n}\n"),
])
def test_a_blank_line_at_an_empty_block_or_a_block_end_gets_a_block(language, prefix, suffix):
    raw = "for x in xs:\n        total += x" if language == "python" else "total = total + 1\n  return total"
    assert "\n" in edit(raw, prefix, suffix, language).text


def test_a_group_of_lines_repeated_in_a_row_is_cut_to_one_copy():
    raw = "if x:\n        return 1\n    if x:\n        return 1\n    if x:"
    result = edit(raw, "def f(x):\n    ", "\n", "python")
    assert result.text == "if x:\n        return 1"
    assert edit(raw, "def f(x):\n    ", "\n", "python", frozenset({"repeat"})).text.count("if x:") == 3


def test_a_line_repeated_in_a_row_is_cut():
    raw = "\n    items.append(x)\n    items.append(x)\n    items.append(x)"
    assert edit(raw, "for x in xs:", "\n", "python").text == "\n    items.append(x)"


def test_a_token_loop_within_a_line_is_cut():
    assert edit("foo(foo(foo(foo(foo(", "x = ", "\n", "python").text == "foo("


def test_repeating_the_line_above_is_dropped():
    assert edit("total = compute(a)", "total = compute(a)\n", "\n", "python") is None


# -- syntax (tree-sitter) -------------------------------------------------------------------------
def test_trailing_line_cut_mid_statement_is_dropped():
    raw = "\n    total = sum(xs)\n    return total + compute(xs, "
    assert edit(raw, "def f(xs):", "\n", "python").text == "\n    total = sum(xs)"
    assert edit(raw, "def f(xs):", "\n", "python", frozenset({"syntax"})).text == raw.rstrip()


def test_error_count_sees_incomplete_code():
    spec = language_spec("python")
    assert error_count(spec, "x = 1\n") == 0
    assert error_count(spec, "x = (1,\n") > 0


def test_in_literal_finds_docstrings_spanning_lines():
    spec = language_spec("python")
    text = 'def f():\n    """Sum the\n    values."""\n'
    assert in_literal(spec, text, text.index("values"))
    assert not in_literal(spec, text, text.index("def f") + 3)


# -- indentation ----------------------------------------------------------------------------------
def test_spaces_become_tabs_in_a_tab_indented_file():
    prefix = "func f() {\n\tif a {\n\t\treturn\n\t}\n\tfor {"
    raw = "\n        x := 1\n        y := 2"
    assert edit(raw, prefix, "\n\t}\n}\n", "go").text == "\n\t\tx := 1\n\t\ty := 2"
    assert edit(raw, prefix, "\n\t}\n}\n", "go", frozenset({"indent"})).text == raw


def test_four_space_block_becomes_two_spaces_in_a_two_space_file():
    prefix = "function f() {\n  if (a) {\n    return 1;\n  }\n  for (const x of xs) {"
    raw = "\n      total += x;\n      count += 1;"
    assert edit(raw, prefix, "\n  }\n}\n", "javascript").text == "\n    total += x;\n    count += 1;"


def test_indentation_unit_detection():
    assert indentation_unit("a:\n    b\n    c:\n        d\n") == "    "
    assert indentation_unit("a {\n\tb\n}\n") == "\t"
    assert indentation_unit("a {\n  b {\n    c\n  }\n}\n") == "  "
    assert indentation_unit("x = 1\n") is None


# -- fallback without a grammar -------------------------------------------------------------------
def test_unknown_language_falls_back_to_indentation_rules():
    raw = "\n    return 1\nother()"
    assert edit(raw, "proc f():", "\n", "nim").text == "\n    return 1"
    assert edit("a)", "f(", ")\n", "nim").text in ("a", "a)")


def test_tree_sitter_off_still_post_processes():
    raw = "\n    return 1\n\ndef g():"
    assert edit(raw, "def f():", "\n", "python", tree_sitter=False).text == "\n    return 1"


def test_mixed_tab_and_space_files_are_left_alone():
    gnu = "int f (void)\n{\n  if (a)\n    {\n\tb ();\n\tc ();\n    }\n  return 0;\n}\n"
    assert indentation_unit(gnu) is None
    raw = "\n    x = 1;\n    y = 2;"
    assert edit(raw, gnu[: gnu.index("  return")] + "  for (;;) {", "\n  }\n}\n", "c").text == raw


# -- invariants over arbitrary text ---------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CODE_ALPHABET = st.sampled_from(list("ab(){}[]:;,='\"#/ \n\t") + ["def ", "end", "    ", "return "])
CODE = st.lists(CODE_ALPHABET, max_size=30).map("".join)


@settings(max_examples=150, deadline=None)
@given(raw=CODE, prefix=CODE, suffix=CODE, language=st.sampled_from(sorted(LANGUAGES) + ["nim"]))
def test_no_suggestion_ever_over_closes_what_the_code_around_it_closes(raw, prefix, suffix, language):
    spec = language_spec(language)
    result = edit(raw, prefix, suffix, language)
    if result is None:
        return
    line_suffix = suffix.split("\n", 1)[0]
    assert 0 <= result.end - result.start <= len(line_suffix)
    assert result.text.strip()
    baseline = Lexer(spec).feed(prefix + suffix).excess
    assert Lexer(spec).feed(apply(prefix, suffix, result)).excess <= baseline


def test_a_window_starting_inside_a_docstring_does_not_confuse_the_scope():
    # The prefix window was cut inside a long class: its first lines are the tail of a docstring.
    prefix = '        of the values.\n        """\n        return self.total\n\n    def mean(self):'
    raw = "\n        return self.total / self.count\n\n    def other(self):"
    assert edit(raw, prefix, "\n", "python").text == "\n        return self.total / self.count"
    top = 'x = 1\n"""Module doc\n  spans lines.\n"""\n\ndef f():'
    assert edit("\n    return 1", top, "\n", "python").text == "\n    return 1"


# -- syntax: token soup never reaches the screen --------------------------------------------------
SOUP_CASES = {
    "python": ("def variance(values):\n    center = mean(values)\n    ", "\n\n\ndef main():\n    pass\n",
               "theNo, v wr PyLO_ the ref sup", "return center"),
    "javascript": ("function area(r) {\n  const squared = r * r;\n  ", "\n}\n",
                   "squared squared ) Math => ;; let", "return Math.PI * squared;"),
    "go": ("func area(r float64) float64 {\n\tsquared := r * r\n\t", "\n}\n",
           "squared squared ) math.Pi := ;; func", "return math.Pi * squared"),
}


@pytest.mark.parametrize("language", sorted(SOUP_CASES))
def test_a_suggestion_that_adds_syntax_errors_is_not_shown(language):
    prefix, suffix, soup, good = SOUP_CASES[language]
    assert edit(soup, prefix, suffix, language) is None
    assert edit(good, prefix, suffix, language).text == good
    # Without the filter the soup is shown as ghost text.
    assert edit(soup, prefix, suffix, language, frozenset({"syntax"})) is not None


def test_a_suggestion_in_code_that_already_has_errors_is_judged_against_them():
    # Mid-typing the statement is incomplete; a completion that does not make it worse still shows.
    prefix, suffix = "def f(xs):\n    total = sum(", "\n    return total\n"
    assert edit("xs", prefix, suffix, "python").text == "xs"
