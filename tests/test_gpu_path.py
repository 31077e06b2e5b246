"""The GPU path: fused sampling math (checked on the CPU too), bf16 + compiled decoder on CUDA (gpu marker); and
the fast CPU sampling (Gumbel-max), checked the same way."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from dglsp.config import EngineSettings, SamplerSettings
from dglsp.model.diffusion import sample_fast, sample_fused, token_entropy
from dglsp.model.loading import load_engine
from dglsp.model.sampler import denoise_canvas
from dglsp.model.schedule import ModelDefaults, resolve


@pytest.mark.parametrize("sample", [sample_fused, sample_fast])
def test_fast_entropy_matches_the_reference(sample):
    logits = torch.randn(1, 16, 300) * 4
    logits[0, 3] = -float("inf")
    logits[0, 3, 7] = 0.0  # a one-hot position: entropy 0, no NaN from 0 * log 0
    _, entropy = sample(logits, torch.Generator().manual_seed(0))
    torch.testing.assert_close(entropy, token_entropy(logits), atol=1e-4, rtol=1e-4)
    assert entropy[0, 3] == 0


@pytest.mark.parametrize("sample", [sample_fused, sample_fast])
def test_fast_sampling_follows_the_distribution(sample):
    # Two tokens at log-odds log(3): the exponential race and Gumbel-max must pick them 3:1.
    logits = torch.full((1, 4000, 5), -float("inf"))
    logits[..., 0], logits[..., 1] = torch.log(torch.tensor(3.0)), 0.0
    sampled, _ = sample(logits, torch.Generator().manual_seed(1))
    share = (sampled == 0).float().mean().item()
    assert set(sampled.unique().tolist()) <= {0, 1} and 0.72 < share < 0.78


@pytest.mark.parametrize("sampling", ["fused", "fast"])
def test_fast_sampling_is_deterministic_under_a_seed(tiny_model_dir, sampling):
    engine = load_engine(EngineSettings(model=str(tiny_model_dir), device="cpu"))[1]
    engine.sampling = sampling
    prompt = engine.bundle.tokenizer.encode("def f(x):\n    return", add_special_tokens=False)
    schedule = engine.schedule(SamplerSettings(canvas_length=16, max_steps=6, seed=5))
    assert schedule.sampling == sampling
    first, again = engine.generate(prompt, schedule), engine.generate(prompt, schedule)
    assert first.token_ids == again.token_ids and first.stats.steps >= 1


def test_cpu_engine_samples_the_fast_way_unless_asked_for_the_reference(tiny_model_dir):
    engine = load_engine(EngineSettings(model=str(tiny_model_dir), device="cpu"))[1]
    assert engine.sampling == "fast" and engine._decoder_step is engine.model
    assert engine.schedule(SamplerSettings(sampling="reference")).sampling == "reference"


@pytest.mark.gpu
def test_cuda_engine_runs_bf16_compiled_and_fused(tiny_model_dir):
    engine = load_engine(EngineSettings(model=str(tiny_model_dir), device="cuda"))[1]
    assert engine.model.dtype == torch.bfloat16 and engine.sampling == "fused"
    prompt = engine.bundle.tokenizer.encode("import os\n", add_special_tokens=False)
    settings = engine.schedule(SamplerSettings(canvas_length=16, max_steps=4, seed=0))
    first = engine.generate(prompt, settings, cache_key="a")
    again = engine.generate(prompt, settings, cache_key="a")
    assert again.stats.cached_tokens == len(prompt)
    assert first.token_ids == again.token_ids


@pytest.mark.gpu
def test_cuda_denoise_canvas_stays_on_the_device():
    device = torch.device("cuda")

    def denoise(canvas, self_conditioning):
        return torch.randn(1, canvas.shape[1], 1000, device=device)

    schedule = replace(resolve(SamplerSettings(canvas_length=8, max_steps=3), ModelDefaults()), sampling="fused")
    result = denoise_canvas(denoise, schedule, 1000, device, generator=torch.Generator(device=device).manual_seed(0))
    assert result.tokens.device.type == "cuda" and result.steps == 3
