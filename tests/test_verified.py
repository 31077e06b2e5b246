"""Verified decoding: exactly greedy token-by-token text, with its cache rolled back to the kept tokens."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dglsp.completion.completer import Completer
from dglsp.completion.prompt import CursorContext, PromptBuilder
from dglsp.config import ContextSettings, EngineSettings, SamplerSettings
from dglsp.model.backend import Generation
from dglsp.model.decoding import lookup_draft
from dglsp.model.engine import Engine
from dglsp.model.kvcache import cache_mark, rollback
from dglsp.model.loading import load_engine
from dglsp.tools import modelzoo
from dglsp.tools.humaneval import load_problems

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def narrow_window_engine_dir(tmp_path_factory, tiny_tokenizer):
    """Sliding layers with a 16-token window, far shorter than the prompt: rollback must rebuild them."""
    preset = dataclasses.replace(modelzoo.PRESETS["tiny"], num_hidden_layers=4, sliding_window=16)
    model = modelzoo.build_model(preset, len(tiny_tokenizer), seed=1)
    return modelzoo.save_model_dir(model, tiny_tokenizer, tmp_path_factory.mktemp("narrow16"))


@pytest.fixture(scope="module")
def embedded_engine() -> Engine:
    return load_engine(EngineSettings(device="cpu", dtype="float32"))[1]  # the shipped weights


def prompts(engine: Engine, count: int) -> list[list[int]]:
    builder = PromptBuilder(engine.bundle.tokenizer, Completer(engine.bundle, engine).format, ContextSettings())
    problems = load_problems("single-line", limit=count // 2) + load_problems("multi-line", limit=count // 2)
    return [builder.build(CursorContext(p.prompt, p.suffix, path="solution.py")).ids for p in problems]


@torch.inference_mode()
def naive_greedy(engine: Engine, prompt: list[int], budget: int) -> list[int]:
    """Greedy decoding the slow, obvious way: the whole text through the encoder for every token, no cache kept."""
    output: list[int] = []
    while len(output) < budget:
        hidden = engine.encode(engine.new_cache(), prompt + output)
        token = int(engine.lm_logits(hidden[:, -1]).argmax(-1))
        if token in engine.eos_ids:
            break
        output.append(token)
    return output


@pytest.fixture(scope="module")
def greedy_texts(embedded_engine) -> list[tuple[list[int], Generation]]:
    """8 prompts and their token-by-token generations, each checked once against the naive greedy text."""
    texts = []
    for prompt in prompts(embedded_engine, 8):
        greedy = embedded_engine.generate(prompt, embedded_engine.schedule(SamplerSettings(
            decoding="autoregressive", canvas_length=32)))
        assert greedy.token_ids == naive_greedy(embedded_engine, prompt, 32)
        texts.append((prompt, greedy))
    return texts


@pytest.mark.parametrize("decoding,verify_steps", [("verified", 1), ("verified", 3), ("speculative", 1),
                                                   ("speculative", 0), ("lookup", None)])
def test_verified_text_is_exactly_greedy_token_by_token_text(embedded_engine, greedy_texts, decoding, verify_steps):
    for prompt, greedy in greedy_texts:
        verified = embedded_engine.generate(prompt, embedded_engine.schedule(SamplerSettings(
            canvas_length=32, max_steps=8, decoding=decoding, verify_steps=verify_steps, seed=0)))
        assert verified.token_ids == greedy.token_ids
        assert verified.finished == greedy.finished
        assert verified.stats.verifications >= 1 or len(verified.token_ids) <= 1
        assert verified.stats.accepted_tokens >= len(verified.token_ids)  # every kept token was checked
        assert verified.token_logprobs == pytest.approx(greedy.token_logprobs, abs=1e-3)


def test_forward_passes_fall_by_what_the_drafts_got_accepted(embedded_engine):
    prompt = prompts(embedded_engine, 2)[0]
    verified = embedded_engine.generate(prompt, embedded_engine.schedule(SamplerSettings(
        canvas_length=32, max_steps=8, decoding="verified", verify_steps=1, seed=0)))
    stats = verified.stats
    # One prefill, and per draft one denoising step plus one encoder pass that committed `accepted` tokens.
    assert stats.steps == stats.verifications and stats.encoder_passes == 1 + stats.verifications
    assert stats.accepted_tokens >= stats.verifications


def test_lookup_drafts_what_followed_the_latest_longest_match():
    # The last three tokens (7, 8, 9) occurred once before: what followed them is the draft.
    assert lookup_draft([7, 8, 9, 4, 5, 6, 1, 7, 8, 9], 3) == [4, 5, 6]
    # Of the runs ending in 9, the longest that occurred earlier wins over a later, shorter one.
    assert lookup_draft([8, 9, 1, 2, 0, 9, 3, 8, 9], 2) == [1, 2]
    assert lookup_draft([5, 6, 1, 5, 6, 2, 9, 5, 6], 2) == [2, 9]  # (5, 6) occurred twice: the latest counts
    assert lookup_draft([1, 2, 3], 4) == []  # 3 never occurred before
    assert lookup_draft([3, 3], 4) == [3]  # a repeat drafts itself
    assert lookup_draft([], 4) == [] and lookup_draft([1], 4) == []


def test_lookup_spends_no_decoder_pass_and_fewer_encoder_passes_than_token_by_token(embedded_engine, greedy_texts):
    passes = {"autoregressive": 0, "lookup": 0}
    for prompt, greedy in greedy_texts:
        lookup = embedded_engine.generate(prompt, embedded_engine.schedule(SamplerSettings(
            decoding="lookup", canvas_length=32)))
        for name, generation in (("autoregressive", greedy), ("lookup", lookup)):
            assert generation.stats.steps == 0
            passes[name] += generation.stats.decoding_passes
    # Code repeats its names: some drafts get accepted, and every accepted token saves a pass.
    assert passes["lookup"] < passes["autoregressive"]


def test_rollback_leaves_the_cache_as_appending_only_the_kept_tokens(narrow_window_engine_dir):
    engine = load_engine(EngineSettings(model=str(narrow_window_engine_dir), device="cpu", dtype="float32"))[1]
    prompt = list(range(5, 5 + 40))  # past the 16-token window of the sliding layers
    extra = list(range(60, 72))
    rolled = engine.new_cache()
    engine.encode(rolled, prompt)
    mark = cache_mark(rolled)
    engine.encode(rolled, extra)
    rollback(rolled, mark, appended=len(extra), keep=5)
    direct = engine.new_cache()
    engine.encode(direct, prompt + extra[:5])
    assert rolled.get_seq_length() == direct.get_seq_length() == 45
    for kept, expected in zip(rolled.layers, direct.layers, strict=True):
        assert torch.allclose(kept.keys, expected.keys, atol=1e-5)
        assert torch.allclose(kept.values, expected.values, atol=1e-5)
    after = engine.encode(rolled, [80, 81])  # and the next tokens see exactly that history
    reference = engine.encode(direct, [80, 81])
    assert torch.allclose(after, reference, atol=1e-4)
