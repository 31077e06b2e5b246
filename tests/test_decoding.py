"""The decodings and the sampler's policies: the registry, the prefix policy's left-to-right commits, the EOS
tail, seeded canvases, and the encoder's score of a diffusion canvas."""

from __future__ import annotations

import pytest
import torch

from dglsp.config import EngineSettings, SamplerSettings
from dglsp.model.decoding import decoding_named
from dglsp.model.diffusion import prefix_accept
from dglsp.model.engine import Engine
from dglsp.model.loading import load_engine
from dglsp.model.sampler import denoise_canvas
from dglsp.model.schedule import ModelDefaults, resolve

VOCAB = 11
EOS = 1


def schedule(**settings):
    return resolve(SamplerSettings(**settings), ModelDefaults())


def denoiser(target: list[int], sure: list[float]):
    """A scripted decoder: position i predicts target[i] with probability about sure[i]."""

    def denoise(canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
        logits = torch.zeros(1, canvas.shape[1], VOCAB)
        for i, (token, p) in enumerate(zip(target, sure, strict=True)):
            logits[0, i, token] = torch.log(torch.tensor(p * (VOCAB - 1) / (1 - p))) if p < 1 else 50.0
        return logits

    return denoise


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return load_engine(EngineSettings(model=str(tiny_model_dir), device="cpu", dtype="float32"))[1]


def test_an_unknown_decoding_is_an_error():
    with pytest.raises(ValueError, match="unknown decoding 'magic'"):
        decoding_named("magic")


def test_prefix_acceptance_takes_the_sure_leading_run_and_at_least_one():
    assert prefix_accept([0.95, 0.99, 0.5, 0.99], 0, 0.9) == 2
    assert prefix_accept([0.95, 0.99, 0.5, 0.99], 2, 0.9) == 3  # unsure: one position anyway
    assert prefix_accept([0.2, 0.2], 0, 0.9) == 1
    assert prefix_accept([0.99, 0.99], 2, 0.9) == 2  # nothing left


def test_the_prefix_policy_commits_left_to_right_and_freezes_the_tail_after_eos():
    target = [3, 4, 5, EOS, 7, 8]
    seen: list[list[int]] = []
    result = denoise_canvas(denoiser(target, [0.99, 0.99, 0.5, 0.99, 0.99, 0.99]),
                            schedule(canvas_length=6, max_steps=10, policy="prefix", prefix_threshold=0.9),
                            VOCAB, torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                            eos_ids=frozenset({EOS}), pad_id=0, on_step=lambda step, c: seen.append(c[0].tolist()))
    # Step 1 commits the sure run [3, 4]; step 2 the unsure 5 alone (at least one a step); step 3 the sure EOS,
    # and the canvas is done: what follows EOS is never committed from the decoder.
    assert result.tokens[0].tolist()[:4] == [3, 4, 5, EOS]
    assert result.tokens[0].tolist()[4:] == [0, 0]  # the tail past EOS is padding, never denoised again
    assert result.converged and result.steps == 3
    assert seen[0][:2] == [3, 4]


def test_after_a_frozen_eos_the_decoder_runs_over_the_live_canvas_only():
    target = [3, EOS, 5, 6, 7, 8]
    lengths: list[int] = []

    def denoise(canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
        length = canvas.shape[1]
        lengths.append(length)
        assert self_conditioning is None or self_conditioning.shape[1] == length
        return denoiser(target[:length], [0.999] * length)(canvas, self_conditioning)

    result = denoise_canvas(denoise, schedule(canvas_length=6, max_steps=4, eos_freeze=True, entropy_bound=10.0,
                                              t_max=0.01, t_min=0.01),
                            VOCAB, torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                            eos_ids=frozenset({EOS}), pad_id=0)
    assert lengths[0] == 6 and lengths[1:] and set(lengths[1:]) == {2}  # the EOS committed at step 1 ends it
    assert result.tokens[0].tolist() == [3, EOS, 0, 0, 0, 0]
    assert result.logprobs is not None and result.logprobs[0, 2:].abs().max() < 1e-6  # the tail: padding, certain


def test_a_seeded_canvas_starts_from_its_seed():
    firsts: list[list[int]] = []

    def denoise(canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
        firsts.append(canvas[0].tolist())
        return torch.zeros(1, canvas.shape[1], VOCAB)

    denoise_canvas(denoise, schedule(canvas_length=4, max_steps=1), VOCAB, torch.device("cpu"),
                   generator=torch.Generator().manual_seed(0), seed_tokens=[5, 6, 7, 8])
    assert firsts[0] == [5, 6, 7, 8]


def test_the_encoder_scores_a_diffusion_canvas_as_token_by_token_decoding_would(engine):
    prompt = engine.bundle.tokenizer.encode("def f(x):\n    return", add_special_tokens=False)
    scored = engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=8, max_steps=3, seed=0,
                                                                     gate="encoder")))
    plain = engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=8, max_steps=3, seed=0)))
    assert scored.token_ids == plain.token_ids  # the same canvas; only whose probabilities differ
    assert scored.stats.encoder_passes == plain.stats.encoder_passes + 1  # one pass reads the committed canvas
    with torch.inference_mode():
        hidden = engine.encode(engine.new_cache(), prompt + scored.token_ids)
        log_probs = torch.log_softmax(engine.lm_logits(hidden[0, len(prompt) - 1:-1]), dim=-1)
    expected = log_probs[torch.arange(len(scored.token_ids)), torch.tensor(scored.token_ids)].tolist()
    assert scored.token_logprobs == pytest.approx(expected, abs=1e-4)


def test_the_timing_line_counts_encoder_passes_as_passes():
    from dglsp.model.backend import GenerationStats

    token_by_token = GenerationStats(prefill_ms=40.0, total_ms=100.0, encoder_passes=4, prefill_passes=1,
                                     generated_tokens=3).summary()
    assert "0 steps + 3 encoder passes (20.0 ms/pass" in token_by_token
    diffusion = GenerationStats(prefill_ms=40.0, total_ms=100.0, steps=4, encoder_passes=1, prefill_passes=1).summary()
    assert "4 steps (15.0 ms/pass" in diffusion and "encoder passes" not in diffusion
