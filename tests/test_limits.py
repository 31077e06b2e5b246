"""Limits: 10 MB documents, a 1 MB line, binary, NUL and lone surrogates: bounded prompts, answered requests.

The prompt is built from character windows around the cursor (`prompt.cursor_windows`), so no
request tokenizes the whole file; these tests check that the windows and the prompt stay within
the configured budgets whatever the document looks like, in-process and through the server.
"""

from __future__ import annotations

import json
import re

import pytest
from lsp_raw import QUICK_SAMPLER, RawServer

from dglsp.completion.completer import Completer
from dglsp.completion.prompt import PromptBuilder
from dglsp.config import ContextSettings, EngineSettings, SamplerSettings, Settings
from dglsp.model.loading import load_engine

BUDGET = ContextSettings(max_prefix_tokens=192, max_suffix_tokens=64)
TEN_MB = ("def handler(event, context):\n    return process(event)\n\n" * 200_000)[:10_000_000]
ONE_MB_LINE = "x = [" + "1, " * 333_332 + "]\n"
BINARY = bytes(range(256)).decode("latin-1") * 64
DOCUMENTS = {
    "10 MB, cursor in the middle": (TEN_MB, len(TEN_MB) // 2),
    "10 MB, cursor at the end": (TEN_MB, len(TEN_MB)),
    "1 MB single line, cursor in the middle": (ONE_MB_LINE, len(ONE_MB_LINE) // 2),
    "binary": (BINARY, len(BINARY) // 3),
    "NUL bytes": ("a = 1\x00\x00\n" * 5_000, 20_000),
    "lone surrogates": ("s = '\ud800'\nt = '\udfff'\n" * 100, 700),
}


@pytest.fixture(scope="module")
def completer(tiny_model_dir) -> Completer:
    return Completer(*load_engine(EngineSettings(model=str(tiny_model_dir), warmup=False)))


def prompt_overhead(completer: Completer, path: str) -> int:
    """Tokens of the FIM frame around prefix and suffix (special tokens and the file header), plus a few:
    a window cut at a token boundary can re-tokenize a token or two longer at its cut."""
    return len(completer.tokenizer.encode(f"{path}\n", add_special_tokens=False)) + 4 + 4


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_prompt_stays_within_budget_whatever_the_document(completer, name):
    text, offset = DOCUMENTS[name]
    # Small budgets: what is checked is that they hold, and small ones keep the prefill cheap.
    settings = Settings(sampler=SamplerSettings(canvas_length=8, max_steps=1, seed=0), context=BUDGET)
    budget = settings.context
    context = completer.context_at(text, offset, settings, "big.py", "python")
    assert len(context.prefix) <= budget.max_prefix_tokens * budget.chars_per_token
    assert len(context.suffix) <= budget.max_suffix_tokens * budget.chars_per_token
    prompt = PromptBuilder(completer.tokenizer, completer.format, budget).build(context)
    limit = budget.max_prefix_tokens + budget.max_suffix_tokens + prompt_overhead(completer, "big.py")
    assert len(prompt.ids) <= limit
    suggestion = completer.complete(context, settings)
    assert suggestion.stats.prefill_tokens == len(prompt.ids)


@pytest.mark.e2e
def test_server_answers_on_huge_and_hostile_documents(tiny_model_dir, tmp_path):
    server = RawServer(tiny_model_dir, stderr_path=tmp_path / "stderr.log")
    budget = BUDGET
    try:
        server.initialize({"sampler": QUICK_SAMPLER, "context": {"max_prefix_tokens": budget.max_prefix_tokens,
                                                                 "max_suffix_tokens": budget.max_suffix_tokens}})
        cases = {
            "big.py": (TEN_MB, 100_000, 10),  # (text, line, character) of the cursor
            "line.py": (ONE_MB_LINE, 0, 500_000),
            "binary.bin": (BINARY, 0, 5_000),
            "surrogates.py": (DOCUMENTS["lone surrogates"][0], 7, 6),
        }
        for name, (text, line, character) in cases.items():
            uri = f"file:///limits/{name}"
            server.open(uri, text)
            response = server.inline(uri, line, character, timeout=120)
            assert "result" in response, (name, response)
            server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [
                {"range": {"start": {"line": line, "character": character},
                           "end": {"line": line, "character": character}}, "text": "z"}]})
            assert "result" in server.inline(uri, line, character + 1, timeout=120)
        prefills = [int(n) for n in re.findall(r"prefill (\d+) tok", json.dumps(server.messages("window/logMessage")))]
        assert prefills and max(prefills) <= budget.max_prefix_tokens + budget.max_suffix_tokens + 32
        assert server.process.poll() is None
    finally:
        server.shutdown()
