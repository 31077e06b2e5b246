"""The tokenizer: byte-level BPE that round-trips corpus files byte for byte, with the FIM special tokens."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from dglsp.model.loading import EMBEDDED_MODEL_DIR
from dglsp.tools import modelzoo
from dglsp.tools.corpus import read_text

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Files with non-ASCII text, tabs, CRLF-free odd whitespace and long lines: the cases that break lossy tokenizers.
ROUND_TRIP_FILES = ["unicodedata.py", "tokenize.py", "textwrap.py", "email/_header_value_parser.py",
                    "encodings/cp1252.py", "stringprep.py", "locale.py"]


def corpus_texts() -> list[str]:
    texts = [read_text(STDLIB / name) or "" for name in ROUND_TRIP_FILES]
    return [t for t in texts if t] + ["tab\there\n\r\nwindows line\r\n", "emoji 🐍 and ünïcödé\n", "   \n\n\t\n"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tokenizer = modelzoo.train_tokenizer(corpus_texts(), vocab_size=600)
    out = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(out)
    return out


def test_round_trips_corpus_files_byte_exactly(trained):
    tokenizer = AutoTokenizer.from_pretrained(trained)
    for text in corpus_texts():
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids).encode("utf-8") == text.encode("utf-8")


def test_round_trips_text_it_never_saw(trained):
    tokenizer = AutoTokenizer.from_pretrained(trained)
    unseen = "def f(x):\n    return 'Ω≈ç√∫' + \"\\x00\" * 3  # 日本語\n\u00a0\u200b\n"
    assert tokenizer.decode(tokenizer.encode(unseen, add_special_tokens=False)) == unseen


def test_special_tokens_have_the_ids_diffusiongemma_expects(trained):
    tokenizer = PreTrainedTokenizerFast.from_pretrained(trained)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    for token in modelzoo.SPECIAL_TOKENS.values():
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token
    assert (trained / "tokenizer.json").is_file()


def test_shipped_tokenizer_round_trips_the_stdlib():
    if not (EMBEDDED_MODEL_DIR / "tokenizer.json").is_file():
        pytest.skip("no embedded model yet (dglsp train ships one)")
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_MODEL_DIR)
    assert len(tokenizer) <= 8192, "the embedded vocabulary is meant to stay small"
    for text in corpus_texts():
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
