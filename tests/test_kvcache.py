"""Prefix KV reuse: a reused cache must give the logits of a fresh prefill, across append/delete/rewrite edits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dglsp.config import EngineSettings, LatencySettings, SamplerSettings, Settings
from dglsp.model.backend import GenerationStats
from dglsp.model.engine import Engine
from dglsp.model.kvcache import PrefixCache, chunk_size, common_prefix_length
from dglsp.model.loading import load_engine
from dglsp.tools import modelzoo

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return load_engine(EngineSettings(model=str(tiny_model_dir), device="cpu", dtype="float32"))[1]


@pytest.fixture(scope="module")
def narrow_window_engine(tmp_path_factory, tiny_tokenizer) -> Engine:
    """Three sliding layers with an 8-token window, far shorter than the prompts."""
    preset = dataclasses.replace(modelzoo.PRESETS["tiny"], num_hidden_layers=4, sliding_window=8)
    model = modelzoo.build_model(preset, len(tiny_tokenizer), seed=1)
    directory = modelzoo.save_model_dir(model, tiny_tokenizer, tmp_path_factory.mktemp("narrow"))
    return load_engine(EngineSettings(model=str(directory), device="cpu", dtype="float32"))[1]


def decoder_logits(engine: Engine, cache, prompt_length: int) -> torch.Tensor:
    """Logits of one decoder forward over a fixed canvas (what every denoising step reads from the cache)."""
    generator = torch.Generator().manual_seed(0)
    canvas = torch.randint(0, engine.vocab_size, (1, engine.defaults.canvas_length), generator=generator)
    with torch.inference_mode():
        assert cache.get_seq_length() == prompt_length
        return engine.decoder_logits(cache, canvas)


def fresh_logits(engine: Engine, prompt: list[int]) -> torch.Tensor:
    cache = engine.new_cache()
    engine.encode(cache, prompt)
    return decoder_logits(engine, cache, len(prompt))


def reused_logits(engine: Engine, key: str, prompt: list[int]) -> tuple[torch.Tensor, int]:
    stats = GenerationStats()
    with torch.inference_mode():
        cache, _ = engine.prepare_prompt(prompt, stats, cache_key=key)
    return decoder_logits(engine, cache, len(prompt)), stats.cached_tokens


def edits(vocab: int) -> list[tuple[str, list[int]]]:
    """A typing session over token ids: appends, a deletion, a rewrite in the middle, a shorter prompt."""
    generator = torch.Generator().manual_seed(5)
    base = torch.randint(3, vocab, (150,), generator=generator).tolist()
    extra = torch.randint(3, vocab, (40,), generator=generator).tolist()
    rewritten = base[:60] + extra[:25] + base[90:]
    return [
        ("cold", base),
        ("append one", base + extra[:1]),
        ("append many", base + extra),
        ("same again", base + extra),
        ("delete", base + extra[:10]),
        ("rewrite middle", rewritten),
        ("shrink", rewritten[:20]),
        ("grow past window", rewritten[:20] + extra + base),
    ]


@pytest.mark.parametrize("engine_name", ["engine", "narrow_window_engine"])
def test_reused_cache_matches_fresh_prefill(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    engine.prefix_cache.clear()
    previous: list[int] = []
    for name, prompt in edits(engine.vocab_size):
        expected = fresh_logits(engine, prompt)
        got, reused = reused_logits(engine, "file:///doc.py", prompt)
        assert reused == common_prefix_length(previous, prompt), name
        torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=TOLERANCE, msg=name)
        previous = prompt


def test_narrow_window_model_really_slides(narrow_window_engine):
    # The point of the fixture: its sliding layers hold fewer tokens than the prompt.
    layers = narrow_window_engine.new_cache().layers
    assert any(layer.is_sliding for layer in layers) and not all(layer.is_sliding for layer in layers)


def test_generation_leaves_the_stored_cache_equal_to_the_prompt(engine):
    engine.prefix_cache.clear()
    prompt = edits(engine.vocab_size)[0][1]
    sampler = engine.schedule(SamplerSettings(canvas_length=8, max_steps=2, max_canvases=3, seed=0))
    engine.generate(prompt, sampler, cache_key="file:///a.py")  # commits canvases into the cache it decodes with
    got, reused = reused_logits(engine, "file:///a.py", prompt)
    assert reused == len(prompt)
    torch.testing.assert_close(got, fresh_logits(engine, prompt), atol=TOLERANCE, rtol=TOLERANCE)


def test_generation_with_a_reused_cache_gives_the_same_tokens(engine):
    engine.prefix_cache.clear()
    prompt = edits(engine.vocab_size)[0][1]
    sampler = engine.schedule(SamplerSettings(canvas_length=8, max_steps=4, seed=3))
    cold = engine.generate(prompt, sampler)
    engine.generate(prompt[:-5], sampler, cache_key="k")
    warm = engine.generate(prompt, sampler, cache_key="k")
    assert warm.stats.cached_tokens == len(prompt) - 5
    assert warm.token_ids == cold.token_ids


def test_lru_eviction_keeps_the_budget(engine):
    prompt = edits(engine.vocab_size)[0][1]
    probe = PrefixCache(engine.model.config, budget_bytes=1 << 40)
    probe.prepare("one", prompt, engine.encode)
    one_entry = probe.nbytes
    cache = PrefixCache(engine.model.config, budget_bytes=int(one_entry * 2.5))
    with torch.inference_mode():
        for key in ("a", "b", "c"):
            cache.prepare(key, prompt, engine.encode)
        assert len(cache) == 2 and cache.nbytes <= cache.budget_bytes
        assert cache.stats.evictions == 1
        _, reused = cache.prepare("a", prompt, engine.encode)  # "a" was least recently used: evicted
    assert reused == 0
    cache.resize(int(one_entry * 1.5))  # a smaller budget drops the least recently used ("c") at once
    assert len(cache) == 1 and cache.nbytes <= cache.budget_bytes and cache.stats.evictions == 3
    with torch.inference_mode():
        assert cache.prepare("a", prompt, engine.encode)[1] > 0
    cache.resize(0)
    assert len(cache) == 0


def test_disabled_prefix_cache_keeps_nothing(tiny_model_dir):
    engine = load_engine(Settings(engine=EngineSettings(model=str(tiny_model_dir), device="cpu"),
                                  latency=LatencySettings(prefix_cache=False)))[1]
    prompt = edits(engine.vocab_size)[0][1]
    sampler = engine.schedule(SamplerSettings(canvas_length=8, max_steps=1, seed=0))
    engine.generate(prompt, sampler, cache_key="k")
    again = engine.generate(prompt, sampler, cache_key="k")
    assert again.stats.cached_tokens == 0 and len(engine.prefix_cache) == 0


@pytest.mark.parametrize("engine_name", ["engine", "narrow_window_engine"])
def test_chunked_prefill_matches_and_a_stop_keeps_what_was_encoded(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    cache = PrefixCache(engine.model.config, budget_bytes=1 << 30)
    prompt = edits(engine.vocab_size)[-1][1]  # 210 tokens
    calls: list[int] = []
    with torch.inference_mode():
        stopped, _ = cache.prepare("doc", prompt, engine.encode, should_stop=lambda: bool(calls.append(1)) or
                                   len(calls) >= 3, chunk_tokens=32)
        assert stopped is None  # stopped after the third chunk of 32
        resumed, reused = cache.prepare("doc", prompt, engine.encode, chunk_tokens=32)
    assert reused == 96
    torch.testing.assert_close(decoder_logits(engine, resumed, len(prompt)), fresh_logits(engine, prompt),
                               atol=TOLERANCE, rtol=TOLERANCE)


def test_a_stop_during_prefill_stops_the_generation(engine):
    engine.prefix_cache.clear()
    prompt = edits(engine.vocab_size)[0][1] * 3  # 450 tokens: two chunks
    generation = engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=8, max_steps=4, seed=0)),
                                 should_stop=lambda: True, cache_key="doc")
    assert generation.stats.stopped and generation.stats.steps == 0 and generation.token_ids == []
    assert engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=8, max_steps=1, seed=0)),
                           cache_key="doc").stats.cached_tokens == 256


def test_prefill_chunks_come_in_a_few_sizes_whatever_the_prompt_length():
    sizes: set[int] = set()
    for length in range(1, 2000):
        chunks, left = [], length
        while left:
            chunks.append(chunk_size(left, 256))
            left -= chunks[-1]
        assert sum(chunks) == length and len(chunks) <= length // 256 + 6
        sizes.update(chunks)
    assert sizes == {1, 2, 4, 8, 16, *range(32, 257, 32)}
