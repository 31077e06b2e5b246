"""Client positions -> string offsets, in UTF-16 (default), UTF-8 and UTF-32."""

from __future__ import annotations

import pytest
from lsprotocol.types import Position, PositionEncodingKind

from dglsp.errors import InvalidRequestError
from dglsp.lsp.documents import Snapshot, offset_at

TEXT = "a😀b\nçé = 1\r\nlast"


@pytest.mark.parametrize("encoding,character,expected", [
    (PositionEncodingKind.Utf16, 3, 2),  # 😀 is two UTF-16 units
    (PositionEncodingKind.Utf8, 5, 2),  # ... and four UTF-8 bytes
    (PositionEncodingKind.Utf32, 2, 2),
])
def test_position_after_non_bmp_character(encoding, character, expected):
    assert offset_at(TEXT, Position(0, character), encoding) == expected
    assert TEXT[expected] == "b"


def test_position_inside_a_surrogate_pair_lands_before_the_character():
    assert offset_at(TEXT, Position(0, 2)) == 1


def test_second_and_third_lines_with_crlf():
    assert TEXT[offset_at(TEXT, Position(1, 2))] == " "
    assert offset_at(TEXT, Position(1, 2), PositionEncodingKind.Utf8) == TEXT.index("é")
    assert TEXT[offset_at(TEXT, Position(2, 0)):] == "last"


def test_character_past_line_end_means_line_end():
    assert offset_at(TEXT, Position(1, 99)) == TEXT.index("\r\n")
    assert offset_at(TEXT, Position(2, 99)) == len(TEXT)


def test_line_past_the_end_is_an_error():
    with pytest.raises(InvalidRequestError, match="past the end"):
        offset_at(TEXT, Position(3, 0))


def test_empty_document_and_trailing_newline():
    assert offset_at("", Position(0, 0)) == 0
    assert offset_at("x\n", Position(1, 0)) == 2


def test_snapshot_path_from_uri():
    assert Snapshot("file:///tmp/a%20b.py", 1, "", "python").path == "/tmp/a b.py"
    assert Snapshot("untitled:Untitled-1", 1, "", "").path == "untitled:Untitled-1"
