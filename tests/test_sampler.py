"""The denoising loop: exactness against transformers, determinism, stop flag, deadline, stats."""

from __future__ import annotations

import math
import time

import pytest
import torch

from dglsp.config import EngineSettings, SamplerSettings
from dglsp.model.diffusion import entropy_bounded_accept
from dglsp.model.engine import Engine
from dglsp.model.loading import load_engine
from dglsp.model.sampler import denoise_canvas
from dglsp.model.schedule import ModelDefaults, Schedule, resolve
from dglsp.tools import modelzoo

VOCAB = 11


def schedule(**settings) -> Schedule:
    """A schedule for a scripted decoder: these settings, DiffusionGemma's rule for the rest."""
    return resolve(SamplerSettings(**settings), ModelDefaults())


def scripted_denoiser(target: list[int], confidence: float = 30.0):
    """A scripted decoder: always predicts `target` with the given logit margin."""

    def denoise(canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
        logits = torch.zeros(1, canvas.shape[1], VOCAB)
        logits[0, torch.arange(len(target)), torch.tensor(target)] = confidence
        return logits

    return denoise


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return load_engine(EngineSettings(model=str(tiny_model_dir)))[1]


@pytest.mark.parametrize("seed,steps", [(0, 6), (1, 24), (7, 48)])
def test_matches_transformers_generate_token_for_token(engine, seed, steps):
    tokenizer = engine.bundle.tokenizer
    prompt = tokenizer.encode("def add(a, b):\n    return a +", add_special_tokens=False)
    # A model without a dglsp.json decoding of its own keeps DiffusionGemma's rule: exactly `generate()`.
    settings = SamplerSettings(canvas_length=engine.defaults.canvas_length, max_steps=steps, seed=seed,
                               sampling="reference")
    ran = engine.schedule(settings)
    assert (ran.decoding, ran.policy, ran.sampling) == ("diffusion", "entropy_bound", "reference")
    ours = engine.generate(prompt, ran)

    torch.manual_seed(seed)
    reference = engine.model.generate(
        torch.tensor([prompt]), generation_config=modelzoo.generation_config_for(ran, tokenizer)
    )
    expected = reference.sequences[0, len(prompt):].tolist()
    eos = tokenizer.eos_token_id
    expected = expected[: expected.index(eos)] if eos in expected else expected
    assert ours.token_ids == expected
    assert ours.stats.steps >= 1


def test_a_canvas_settled_up_to_its_eos_stops_early():
    target = [3, 4, 1, 7, 8]  # EOS (1) at index 2: what follows it never matters
    settings = schedule(canvas_length=5, max_steps=24, settle_steps=2, confidence_threshold=1e-9)
    result = denoise_canvas(scripted_denoiser(target, 5.0), settings, VOCAB, torch.device("cpu"),
                            generator=torch.Generator().manual_seed(0), eos_ids=frozenset({1}))
    assert result.converged and result.steps == 3  # the same head three steps running: settled for 2
    assert result.tokens[0].tolist()[:3] == [3, 4, 1]
    off = denoise_canvas(scripted_denoiser(target, 5.0), schedule(canvas_length=5, max_steps=24, settle_steps=0,
                                                                  confidence_threshold=1e-9),
                         VOCAB, torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                         eos_ids=frozenset({1}))
    assert off.steps == 24


def test_fixed_positions_hold_their_token_throughout():
    seen: list[list[int]] = []
    result = denoise_canvas(scripted_denoiser([5, 5, 5, 5]), schedule(canvas_length=4, max_steps=3),
                            VOCAB, torch.device("cpu"), generator=torch.Generator().manual_seed(0), fixed=[9],
                            on_step=lambda step, canvas: seen.append(canvas[0].tolist()))
    assert result.tokens[0].tolist() == [9, 5, 5, 5]
    assert all(canvas[0] == 9 for canvas in seen)


def test_same_seed_same_tokens_other_seed_differs(engine):
    prompt = engine.bundle.tokenizer.encode("import os\n", add_special_tokens=False)
    first = engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=16, max_steps=8, seed=3)))
    again = engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=16, max_steps=8, seed=3)))
    other = engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=16, max_steps=8, seed=4)))
    assert first.token_ids == again.token_ids
    assert first.token_ids != other.token_ids


def test_stop_flag_is_checked_after_every_step():
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 3

    result = denoise_canvas(scripted_denoiser([1] * 8, confidence=0.0), schedule(canvas_length=8, max_steps=50),
                            VOCAB, torch.device("cpu"), should_stop=should_stop)
    assert result.stopped
    assert result.steps == 3


def test_confident_scripted_model_converges_early_to_its_target():
    target = [3, 1, 4, 1, 5, 9, 2, 6]
    seen = []
    result = denoise_canvas(scripted_denoiser(target), schedule(canvas_length=8, max_steps=40),
                            VOCAB, torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                            on_step=lambda step, canvas: seen.append(step))
    assert result.tokens[0].tolist() == target
    assert result.converged and not result.stopped
    # stability_threshold=1: step 1 fills the history, step 2 sees the same argmax and stops.
    assert result.steps == 2
    assert seen == [1, 2]


@pytest.mark.parametrize("t_min", [0.05, 1.0])
def test_the_confidence_is_read_at_temperature_one_whatever_the_schedule(t_min):
    # Margin 2 over 10 others: p = e^2 / (e^2 + 10) = 0.425 at temperature 1, but ~1.0 at temperature 0.05.
    target = [3, 1, 4, 1, 5]
    settings = schedule(canvas_length=5, max_steps=3, t_max=t_min, t_min=t_min)
    result = denoise_canvas(scripted_denoiser(target, confidence=2.0), settings, VOCAB, torch.device("cpu"),
                            generator=torch.Generator().manual_seed(0))
    expected = math.log(math.exp(2.0) / (math.exp(2.0) + VOCAB - 1))
    assert result.tokens[0].tolist() == target
    assert result.logprobs is not None
    assert result.logprobs[0].tolist() == pytest.approx([expected] * 5, abs=1e-5)


def test_uncertain_model_runs_the_full_schedule():
    result = denoise_canvas(scripted_denoiser([0] * 8, confidence=0.0), schedule(canvas_length=8, max_steps=7),
                            VOCAB, torch.device("cpu"))
    assert result.steps == 7 and not result.converged


def test_deadline_returns_the_draft_instead_of_nothing():
    result = denoise_canvas(scripted_denoiser([2] * 8, confidence=0.0), schedule(canvas_length=8, max_steps=500),
                            VOCAB, torch.device("cpu"), deadline=time.monotonic() - 1)
    assert result.steps == 1 and not result.stopped
    assert result.tokens.shape == (1, 8)


def test_entropy_bound_accepts_lowest_entropy_positions_within_bound():
    entropy = torch.tensor([[0.5, 0.01, 0.02, 3.0]])
    accepted = entropy_bounded_accept(entropy, 0.1)
    # sorted: 0.01, 0.02, 0.5, 3.0 -> cumsum minus max: 0, 0.01, 0.03, 0.53 -> accept first three
    assert accepted.tolist() == [[True, True, True, False]]


def test_multi_canvas_generation_chains_blocks(engine):
    prompt = engine.bundle.tokenizer.encode("x = 1\n", add_special_tokens=False)
    result = engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=8, max_steps=3, max_canvases=3,
                                                                     seed=0)))
    assert 1 <= result.stats.canvases <= 3
    if not result.finished:
        assert result.stats.canvases == 3 and len(result.token_ids) == 24
        assert result.stats.encoder_passes == 3  # the prompt, then the two committed canvases


def test_autoregressive_baseline_counts_one_forward_per_token(engine):
    prompt = engine.bundle.tokenizer.encode("def f():\n", add_special_tokens=False)
    result = engine.generate(prompt, engine.schedule(SamplerSettings(decoding="autoregressive", canvas_length=6)))
    assert len(result.token_ids) <= 6
    # The prefill yields the first token; each later token costs one more encoder pass.
    expected = len(result.token_ids) + 1 if result.finished else len(result.token_ids)
    assert result.stats.encoder_passes == expected


def test_unset_max_steps_takes_the_models_own_step_count(tiny_model_dir, tmp_path):
    import json
    import shutil

    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    meta = json.loads((model_dir / "dglsp.json").read_text())
    meta["sampler"]["max_steps"] = 3
    (model_dir / "dglsp.json").write_text(json.dumps(meta))
    engine = load_engine(EngineSettings(model=str(model_dir), device="cpu"))[1]
    assert engine.defaults.max_steps == 3
    prompt = engine.bundle.tokenizer.encode("def f(x):\n", add_special_tokens=False)
    # Random weights never become confident, so the schedule's length is what ends each canvas.
    assert engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=8, seed=0))).stats.steps == 3
    assert engine.generate(prompt, engine.schedule(SamplerSettings(canvas_length=8, max_steps=5, seed=0))
                           ).stats.steps == 5


def test_the_schedule_is_the_models_own_unless_the_user_sets_it(tiny_model_dir, tmp_path):
    import json
    import shutil

    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    meta = json.loads((model_dir / "dglsp.json").read_text())
    meta["sampler"].update(t_max=0.3, t_min=0.1, entropy_bound=2.0)
    (model_dir / "dglsp.json").write_text(json.dumps(meta))
    engine = load_engine(EngineSettings(model=str(model_dir), device="cpu"))[1]
    ran = engine.schedule(SamplerSettings())
    assert (ran.t_max, ran.t_min, ran.entropy_bound) == (0.3, 0.1, 2.0)
    mine = engine.schedule(SamplerSettings(t_max=0.9, entropy_bound=0.5))
    assert (mine.t_max, mine.t_min, mine.entropy_bound) == (0.9, 0.1, 0.5)
