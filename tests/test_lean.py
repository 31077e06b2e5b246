"""The lean decoder step computes what transformers' decoder computes: the same logits, to rounding, on the
embedded model, on a hub-shaped one (Gemma 4's layer mix, partial rotary, values equal to keys on full
attention) and on a prompt past the sliding window; and the engine uses it only off the reference path."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dglsp.config import EngineSettings, LatencySettings, SamplerSettings
from dglsp.model.engine import Engine
from dglsp.model.lean import LeanDecoder, supports
from dglsp.model.loading import load_engine
from dglsp.tools import modelzoo


def _engine(path: str | None, dtype: str = "float32", lean: bool = True) -> Engine:
    bundle, engine = load_engine(EngineSettings(model=path, device="cpu", dtype=dtype))
    return Engine(engine.model, bundle, LatencySettings(lean_passes=lean))


def _logits(engine: Engine, prompt: int, self_conditioned: bool, exact: bool, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        cache = engine.new_cache()
        engine.encode(cache, torch.randint(0, engine.vocab_size, (prompt,), generator=generator).tolist())
        canvas = torch.randint(0, engine.vocab_size, (1, 16), generator=generator)
        signal = torch.randn(1, 16, engine.vocab_size, generator=generator) * 4 if self_conditioned else None
        return engine.decoder_logits(cache, canvas, signal, exact=exact)


@pytest.mark.parametrize("self_conditioned", [False, True])
@pytest.mark.parametrize("prompt", [1, 40])
def test_the_lean_step_gives_transformers_logits_on_the_embedded_model(prompt, self_conditioned):
    engine = _engine(None)
    assert engine._lean is not None
    lean = _logits(engine, prompt, self_conditioned, exact=False)
    torch.testing.assert_close(lean, _logits(engine, prompt, self_conditioned, exact=True), atol=2e-4, rtol=1e-4)


def test_in_bfloat16_the_lean_step_picks_the_same_tokens():
    engine = _engine(None, dtype="bfloat16")
    lean, reference = (_logits(engine, 60, True, exact) for exact in (False, True))
    assert (lean - reference).abs().max() < 0.25  # bf16 rounding of a few intermediate sums
    assert (lean.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.95


@pytest.mark.parametrize("self_conditioned", [False, True])
def test_the_lean_step_gives_transformers_logits_on_a_hub_shaped_model(hub_model_dir, self_conditioned):
    engine = _engine(str(hub_model_dir))
    assert supports(engine.model) is None
    lean = _logits(engine, 30, self_conditioned, exact=False)
    torch.testing.assert_close(lean, _logits(engine, 30, self_conditioned, exact=True), atol=2e-4, rtol=1e-4)


def test_past_the_sliding_window_the_lean_step_reads_what_the_window_keeps(tmp_path, tiny_tokenizer):
    preset = dataclasses.replace(modelzoo.PRESETS["tiny"], num_hidden_layers=3, sliding_window=8)
    model = modelzoo.build_model(preset, len(tiny_tokenizer), seed=2)
    directory = modelzoo.save_model_dir(model, tiny_tokenizer, tmp_path / "narrow")
    engine = _engine(str(directory))
    lean = _logits(engine, 50, True, exact=False)
    torch.testing.assert_close(lean, _logits(engine, 50, True, exact=True), atol=2e-4, rtol=1e-4)


def test_the_engine_runs_transformers_forward_on_the_reference_path_and_when_told_to():
    engine = _engine(None)
    calls = []
    lean = engine._lean
    assert isinstance(lean, LeanDecoder)
    engine._lean = lambda *args: calls.append(args) or lean(*args)  # type: ignore[assignment]
    for sampling in ("reference", "fast"):
        schedule = engine.schedule(SamplerSettings(decoding="diffusion", max_steps=2, seed=0, sampling=sampling))
        engine.generate([2, 5, 7], schedule)
        assert len(calls) == (0 if sampling == "reference" else 2)
    assert _engine(None, lean=False)._lean is None


def _encoded(engine: Engine, prompt: int, tokens: int, exact: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's hidden states for `tokens` tokens after a `prompt`-token prefill (always transformers'), and
    the logits of a decoder step (always transformers') reading the cache the pass left."""
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(0, engine.vocab_size, (prompt + tokens,), generator=generator).tolist()
    canvas = torch.randint(0, engine.vocab_size, (1, 8), generator=generator)
    with torch.inference_mode():
        cache = engine.new_cache()
        engine.encode(cache, ids[:prompt])
        hidden = engine.encode(cache, ids[prompt:], exact=exact)
        return hidden, engine.decoder_logits(cache, canvas, exact=True)


@pytest.mark.parametrize("tokens", [1, 6])
def test_the_lean_encoder_pass_gives_transformers_states_and_cache(tokens):
    engine = _engine(None)
    lean, reference = (_encoded(engine, 30, tokens, exact) for exact in (False, True))
    torch.testing.assert_close(lean[0], reference[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lean[1], reference[1], atol=2e-4, rtol=1e-4)  # the cache it wrote reads the same


@pytest.mark.parametrize("tokens", [1, 5])
def test_the_lean_encoder_keeps_its_sliding_window_past_the_window(tmp_path, tiny_tokenizer, tokens):
    preset = dataclasses.replace(modelzoo.PRESETS["tiny"], num_hidden_layers=3, sliding_window=8)
    model = modelzoo.build_model(preset, len(tiny_tokenizer), seed=4)
    engine = _engine(str(modelzoo.save_model_dir(model, tiny_tokenizer, tmp_path / "narrow")))
    lean, reference = (_encoded(engine, 20, tokens, exact) for exact in (False, True))
    torch.testing.assert_close(lean[0], reference[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lean[1], reference[1], atol=2e-4, rtol=1e-4)


def test_the_lean_encoder_on_a_hub_shaped_model(hub_model_dir):
    engine = _engine(str(hub_model_dir))
    lean, reference = (_encoded(engine, 12, 4, exact) for exact in (False, True))
    torch.testing.assert_close(lean[0], reference[0], atol=1e-4, rtol=1e-4)
