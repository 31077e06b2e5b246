"""Shared fixtures: a real small DiffusionGemma, built from a config and saved as safetensors.

No fake model: the tokenizer is a byte-level BPE trained on a few standard-library files
and the weights are a randomly initialised `DiffusionGemmaForBlockDiffusion` of the
"tiny" preset, written and loaded through the same code as any model directory.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import torch

from dglsp.tools import modelzoo


def stdlib_texts(limit: int = 40) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"))[:limit]
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return modelzoo.train_tokenizer(stdlib_texts(), vocab_size=512)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    model = modelzoo.build_model(modelzoo.PRESETS["tiny"], len(tiny_tokenizer), seed=0)
    return modelzoo.save_model_dir(model, tiny_tokenizer, tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def hub_model_dir(tmp_path_factory) -> Path:
    """A model saved exactly like google/diffusiongemma-26B-A4B-it, scaled down: the real vocabulary and special
    ids, 128 experts top-8, five sliding layers to one full one with two global KV heads, bf16 safetensors,
    generation_config.json (EOS [1, 106, 50], 48 steps), chat_template.jinja, no dglsp.json. Random weights."""
    return modelzoo.save_hub_like_model(tmp_path_factory.mktemp("hub-model"), stdlib_texts(20))


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and on a busy machine two threads spin against each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
