"""Syntax knowledge for post-processing: languages, a bracket lexer, and tree-sitter queries.

The language comes from the LSP `languageId` (never the file extension). For each known
language a `LanguageSpec` says how comments and strings look and how blocks are made
(indentation, braces, or keywords closed by `end`). Two tools read code with it:

* `Lexer` — a small scanner that skips strings and comments and tracks brackets. It works
  for every language, grammar installed or not, and on incomplete code.
* tree-sitter (`tree-sitter` plus one grammar package per language) where installed: whether
  the cursor sits in a comment or string, whether the token before the cursor opens a block,
  and how many syntax errors a candidate completion leaves in the window. Every query
  returns None when no grammar is available, and callers fall back to the lexer and
  indentation rules.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypedDict

log = logging.getLogger(__name__)

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    grammar: str | None  # module of the PyPI grammar package (tree_sitter_python, ...)
    grammar_function: str = "language"
    blocks: str = "braces"  # "indent" (Python), "braces" (C family), "end" (Lua)
    line_comments: tuple[str, ...] = ("//",)
    block_comment: tuple[str, str] | None = ("/*", "*/")
    quotes: tuple[str, ...] = ('"', "'")  # longest first: triple quotes before single
    multiline_quotes: tuple[str, ...] = ()  # quotes whose strings may span lines
    # A line ending in one of these words (or in `{`) opens a block (keyword languages).
    block_keywords: tuple[str, ...] = ()
    # tree-sitter node types (the parent of the last token) that open a block.
    block_parents: frozenset[str] = field(default_factory=frozenset)
    # tree-sitter node types (the parent of `:` etc.) that mean "mid-expression".
    expression_parents: frozenset[str] = field(default_factory=frozenset)


_PYTHON_BLOCKS = frozenset({
    "function_definition", "class_definition", "if_statement", "elif_clause", "else_clause", "for_statement",
    "while_statement", "with_statement", "try_statement", "except_clause", "finally_clause", "match_statement",
    "case_clause", "decorated_definition", "except_group_clause",
})


class _Comments(TypedDict):
    """Comment syntax shared by several languages, as `LanguageSpec` keyword arguments."""

    line_comments: tuple[str, ...]
    block_comment: tuple[str, str] | None


_C_FAMILY = _Comments(line_comments=("//",), block_comment=("/*", "*/"))

LANGUAGES: dict[str, LanguageSpec] = {
    "python": LanguageSpec(
        "python", "tree_sitter_python", blocks="indent", line_comments=("#",), block_comment=None,
        quotes=('"""', "'''", '"', "'"), multiline_quotes=('"""', "'''"), block_parents=_PYTHON_BLOCKS,
        expression_parents=frozenset({"dictionary", "pair", "slice", "lambda", "subscript", "type", "typed_parameter",
                                      "dictionary_comprehension"}),
    ),
    "javascript": LanguageSpec("javascript", "tree_sitter_javascript", quotes=('"', "'", "`"),
                               multiline_quotes=("`",), **_C_FAMILY),
    "typescript": LanguageSpec("typescript", "tree_sitter_typescript", "language_typescript",
                               quotes=('"', "'", "`"), multiline_quotes=("`",), **_C_FAMILY),
    "typescriptreact": LanguageSpec("typescriptreact", "tree_sitter_typescript", "language_tsx",
                                    quotes=('"', "'", "`"), multiline_quotes=("`",), **_C_FAMILY),
    "go": LanguageSpec("go", "tree_sitter_go", quotes=('"', "'", "`"), multiline_quotes=("`",), **_C_FAMILY),
    # Rust: `'` starts lifetimes as often as char literals, so only double quotes delimit strings.
    "rust": LanguageSpec("rust", "tree_sitter_rust", quotes=('"',), **_C_FAMILY),
    "c": LanguageSpec("c", "tree_sitter_c", **_C_FAMILY),
    "cpp": LanguageSpec("cpp", "tree_sitter_cpp", **_C_FAMILY),
    "java": LanguageSpec("java", "tree_sitter_java", **_C_FAMILY),
    "lua": LanguageSpec("lua", "tree_sitter_lua", blocks="end", line_comments=("--",), block_comment=("--[[", "]]"),
                        block_keywords=("then", "do", "else", "repeat")),
}
ALIASES = {"javascriptreact": "javascript", "c++": "cpp", "py": "python", "js": "javascript", "ts": "typescript",
           "tsx": "typescriptreact", "golang": "go", "objective-c": "c"}
# Unknown languages: C-like comments and quotes, blocks by indentation only.
GENERIC = LanguageSpec("generic", None, blocks="indent", line_comments=("//", "#"))


def language_spec(language_id: str) -> LanguageSpec:
    key = (language_id or "").lower()
    return LANGUAGES.get(ALIASES.get(key, key), GENERIC)


@cache
def _parser(name: str) -> Any | None:
    spec = LANGUAGES.get(name)
    if spec is None or spec.grammar is None:
        return None
    try:
        import tree_sitter

        module = importlib.import_module(spec.grammar)
        return tree_sitter.Parser(tree_sitter.Language(getattr(module, spec.grammar_function)()))
    except (ImportError, AttributeError, ValueError) as exc:  # grammar missing or built for another ABI
        log.info("no tree-sitter grammar for %s (%s): indentation rules only", name, exc)
        return None


def has_grammar(spec: LanguageSpec) -> bool:
    return _parser(spec.name) is not None


def _parse(spec: LanguageSpec, text: str) -> tuple[Any, bytes] | None:
    parser = _parser(spec.name)
    if parser is None:
        return None
    data = text.encode("utf-8", errors="surrogatepass")
    return parser.parse(data), data


def parse_tree(spec: LanguageSpec, text: str) -> Any | None:
    """The tree-sitter tree of `text` (None without a grammar)."""
    parsed = _parse(spec, text)
    return parsed[0] if parsed else None


def _byte_offset(text: str, offset: int) -> int:
    return len(text[:offset].encode("utf-8", errors="surrogatepass"))


_TOP_LEVEL = re.compile(r"^[^\s#/*\-)\]}]", re.MULTILINE)  # a line starting at column 0 with code


def clean_window(prefix: str, suffix: str) -> tuple[str, str] | None:
    """The top-level statement around the cursor: from the last line before it that starts at column 0
    to the first such line after it. A window cut in the middle of a docstring or a definition would
    turn the whole parse into errors; the enclosing top-level statement is whole. None when the
    prefix window holds no such line (deep inside a long definition): then no parse is trustworthy."""
    starts = [match.start() for match in _TOP_LEVEL.finditer(prefix)]
    if not starts:
        return None
    end = next((match.start() for match in _TOP_LEVEL.finditer(suffix) if match.start() > 0), None)
    return prefix[starts[-1]:], suffix if end is None else suffix[:end]


def error_count(spec: LanguageSpec, text: str) -> int | None:
    """ERROR and MISSING nodes in the parse of `text` (None without a grammar)."""
    parsed = _parse(spec, text)
    if parsed is None:
        return None
    count = 0
    stack = [parsed[0].root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        if node.has_error:  # only subtrees holding an error are worth walking
            stack.extend(node.children)
    return count


def in_literal(spec: LanguageSpec, text: str, offset: int) -> bool | None:
    """Whether `offset` lies strictly inside a comment or string of `text` (None without a grammar)."""
    parsed = _parse(spec, text)
    if parsed is None:
        return None
    at = _byte_offset(text, offset)
    node = parsed[0].root_node.descendant_for_byte_range(at, at)
    while node is not None:
        kind = node.type
        if ("comment" in kind or "string" in kind) and node.start_byte < at < node.end_byte:
            return True
        node = node.parent
    return False


def opens_block_tree(spec: LanguageSpec, text: str, offset: int) -> bool | None:
    """Whether the last token before `offset` opens a block, judged by tree-sitter; None when the
    parse cannot tell (no grammar, or the token sits in an ERROR node, as incomplete code often does)."""
    head = text[:offset].rstrip()
    if not head:
        return None
    parsed = _parse(spec, text)
    if parsed is None:
        return None
    at = _byte_offset(text, len(head))
    leaf = parsed[0].root_node.descendant_for_byte_range(at - 1, at)
    parent = leaf.parent if leaf is not None else None
    if parent is None or parent.type == "ERROR" or leaf.type == "ERROR":
        return None
    if parent.type in spec.block_parents:
        return True
    if parent.type in spec.expression_parents:
        return False
    return None


_LINE_HEADER = {
    "indent": re.compile(r"^\s*(async\s+)?(def|class|if|elif|else|for|while|with|try|except|finally|match|case)\b.*:$"),
}


def opens_block(spec: LanguageSpec, line_prefix: str, window: str, offset: int) -> bool:
    """Does the code before the cursor end with something that opens a block (`def f():`, `{`, `then`)?"""
    stripped = line_prefix.rstrip()
    if not stripped:
        return False
    judged = opens_block_tree(spec, window, offset)
    if judged is not None:
        return judged
    if stripped.endswith("{"):
        # `x = {`, `f({`, `const {`: an object literal or pattern, completed like an expression.
        before = stripped[:-1].rstrip()
        return not (before.endswith(("=", "(", ",", ":", "[", "?")) or re.search(r"\b(const|let|var|return)$", before))
    if spec.blocks == "indent":
        # Python's compound statements; any other indentation language: a trailing `:` at bracket depth 0.
        header = _LINE_HEADER["indent"].match(stripped) if spec.name == "python" else stripped.endswith(":")
        return bool(header) and Lexer(spec).feed(stripped).depth == 0
    if spec.blocks == "end":
        words = re.findall(r"[A-Za-z_]\w*", stripped)
        if words and words[-1] in spec.block_keywords:
            return True
        return bool(re.match(r"^\s*(local\s+)?function\b", stripped) or re.search(r"=\s*function\b", stripped)) \
            and stripped.endswith(")")
    return False


class Lexer:
    """Brackets outside strings and comments, fed text piece by piece (state carries across pieces).

    `excess` counts closing brackets that close nothing fed so far (or the wrong kind): the
    signal of a duplicated `)`. `stack` holds the unclosed openers.
    """

    def __init__(self, spec: LanguageSpec):
        self.spec = spec
        self.stack: list[str] = []
        self.excess = 0
        self.mode = "code"  # code | string | line_comment | block_comment
        self.closing = ""  # the quote or comment end that ends the current mode
        self._escape = False
        # (index, "open" | "close" | "excess") for each bracket in code, in the last `feed` only.
        self.events: list[tuple[int, str]] = []

    @property
    def depth(self) -> int:
        return len(self.stack)

    def copy(self) -> Lexer:
        other = Lexer(self.spec)
        other.stack = list(self.stack)
        other.excess, other.mode, other.closing, other._escape = self.excess, self.mode, self.closing, self._escape
        return other

    def feed(self, text: str) -> Lexer:
        self.events = []
        index, length = 0, len(text)
        while index < length:
            index = self._step(text, index)
        return self

    def _step(self, text: str, index: int) -> int:
        char = text[index]
        if self.mode == "line_comment":
            if char == "\n":
                self.mode = "code"
            return index + 1
        if self.mode == "block_comment":
            if text.startswith(self.closing, index):
                self.mode = "code"
                return index + len(self.closing)
            return index + 1
        if self.mode == "string":
            if self._escape:
                self._escape = False
            elif char == "\\":
                self._escape = True
            elif text.startswith(self.closing, index):
                self.mode = "code"
                return index + len(self.closing)
            elif char == "\n" and self.closing not in self.spec.multiline_quotes:
                self.mode = "code"  # an unterminated one-line string ends with its line
            return index + 1
        return self._step_code(text, index)

    def _step_code(self, text: str, index: int) -> int:
        spec = self.spec
        if spec.block_comment and text.startswith(spec.block_comment[0], index):
            self.mode, self.closing = "block_comment", spec.block_comment[1]
            return index + len(spec.block_comment[0])
        for marker in spec.line_comments:
            if text.startswith(marker, index):
                self.mode = "line_comment"
                return index + len(marker)
        for quote in spec.quotes:
            if text.startswith(quote, index):
                self.mode, self.closing = "string", quote
                return index + len(quote)
        char = text[index]
        if char in OPENERS:
            self.stack.append(char)
            self.events.append((index, "open"))
        elif char in CLOSERS:
            if self.stack and self.stack[-1] == CLOSERS[char]:
                self.stack.pop()
                self.events.append((index, "close"))
            else:
                self.excess += 1
                self.events.append((index, "excess"))
        return index + 1


def excess_closers(spec: LanguageSpec, *pieces: str) -> int:
    lexer = Lexer(spec)
    for piece in pieces:
        lexer.feed(piece)
    return lexer.excess


class BracketBalance:
    """Excess closers of prefix + text + suffix for many candidate texts, at the cost of the text only.

    The prefix is lexed once; the suffix once, keeping only its closers that arrive with nothing of
    its own open — the only ones that can meet the prefix's or the candidate's openers.
    """

    def __init__(self, spec: LanguageSpec, prefix: str, suffix: str):
        self.spec = spec
        self.prefix_state = Lexer(spec).feed(prefix)
        self.suffix = suffix
        suffix_lexer = Lexer(spec)
        self.suffix_closers: list[str] = []
        self.suffix_fixed_excess = 0
        for char in self._closers_reaching_out(suffix, suffix_lexer):
            self.suffix_closers.append(char)
        self.baseline = self.excess("")

    def _closers_reaching_out(self, suffix: str, lexer: Lexer) -> list[str]:
        found = []
        depth_before = 0
        for index, kind in lexer.feed(suffix).events:
            if kind == "open":
                depth_before += 1
            elif kind == "close":
                depth_before -= 1
            elif depth_before == 0:
                found.append(suffix[index])
            else:
                self.suffix_fixed_excess += 1  # closes the wrong kind inside the suffix itself
        return found

    def state_after(self, text: str) -> Lexer:
        return self.prefix_state.copy().feed(text)

    def excess(self, text: str) -> int:
        lexer = self.state_after(text)
        if lexer.mode != "code":  # the candidate leaves a string or comment open: the suffix reads differently
            return lexer.feed(self.suffix).excess
        stack, excess = list(lexer.stack), lexer.excess + self.suffix_fixed_excess
        for char in self.suffix_closers:
            if stack and stack[-1] == CLOSERS[char]:
                stack.pop()
            else:
                excess += 1
        return excess
