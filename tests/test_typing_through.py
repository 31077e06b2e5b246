"""Typing-through: typed characters that match the shown suggestion are answered from it."""

from __future__ import annotations

from dglsp.completion.typing_through import TypingThroughCache

URI = "file:///t.py"
BEFORE = "def area(r):\n    return "
AFTER = "\n\nprint(area(2))\n"


def typed(chars: str) -> tuple[str, int]:
    text = BEFORE + chars + AFTER
    return text, len(BEFORE) + len(chars)


def test_typing_the_suggestion_serves_the_rest():
    cache = TypingThroughCache(lookback=32)
    cache.remember(URI, *typed(""), "3.14159 * r * r")
    for count in range(1, 8):
        assert cache.lookup(URI, *typed("3.14159 * r * r"[:count])) == "3.14159 * r * r"[count:]
    assert cache.stats.hits == 7


def test_same_context_serves_the_whole_suggestion():
    cache = TypingThroughCache()
    cache.remember(URI, *typed(""), "r * r")
    assert cache.lookup(URI, *typed("")) == "r * r"


def test_divergence_drops_the_suggestion():
    cache = TypingThroughCache()
    cache.remember(URI, *typed(""), "3.14159 * r * r")
    assert cache.lookup(URI, *typed("3.2")) is None
    assert cache.stats.dropped == 1
    assert cache.lookup(URI, *typed("3.1")) is None  # dropped, not resurrected by going back


def test_lookback_is_bounded():
    cache = TypingThroughCache(lookback=3)
    cache.remember(URI, *typed(""), "abcdefgh")
    assert cache.lookup(URI, *typed("abcd")) is None  # four characters typed, only three looked back over


def test_typing_the_whole_suggestion_leaves_nothing_to_show():
    cache = TypingThroughCache()
    cache.remember(URI, *typed(""), "r * r")
    assert cache.lookup(URI, *typed("r * r")) is None


def test_other_documents_and_other_suffixes_do_not_match():
    cache = TypingThroughCache()
    cache.remember(URI, *typed(""), "r * r")
    assert cache.lookup("file:///other.py", *typed("r")) is None
    text = BEFORE + "r" + "\nx = 1\n"
    assert cache.lookup(URI, text, len(BEFORE) + 1) is None


def test_capacity_evicts_the_oldest():
    cache = TypingThroughCache(capacity=2)
    for index in range(3):
        cache.remember(f"file:///{index}.py", *typed(""), "x")
    assert len(cache) == 2
    assert cache.lookup("file:///0.py", *typed("")) is None
    assert cache.lookup("file:///2.py", *typed("")) == "x"


def test_forget_drops_a_document():
    cache = TypingThroughCache()
    cache.remember(URI, *typed(""), "r * r")
    cache.forget(URI)
    assert cache.lookup(URI, *typed("r")) is None


def test_after_acceptance_inserts_unless_already_applied():
    from dglsp.completion.typing_through import after_acceptance

    text, offset = typed("")
    assert after_acceptance(text, offset, "r * r") == (BEFORE + "r * r" + AFTER, offset + 5)
    applied = BEFORE + "r * r" + AFTER
    assert after_acceptance(applied, offset, "r * r") == (applied, offset + 5)
