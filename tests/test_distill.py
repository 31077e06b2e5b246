"""Self-distillation: the teacher is exactly greedy decoding, the inputs and weights are what the recipe says,
and the distilled objective trains (and leaves the ground-truth objective bit for bit alone when off)."""

from __future__ import annotations

import random
import sysconfig
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dglsp.completion.prompt import PromptFormat
from dglsp.model.diffusion import lm_logits
from dglsp.tools import corpus, modelzoo
from dglsp.tools.options import TrainConfig
from dglsp.tools.training.distill import distill_terms, greedy_middles, inputs_and_weights
from dglsp.tools.training.examples import collate, make_example
from dglsp.tools.training.objective import _encode_prompt, training_loss

FMT = PromptFormat("fim", dict(modelzoo.SPECIAL_TOKENS))
STDLIB = Path(sysconfig.get_paths()["stdlib"])
CANVAS = 16


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return modelzoo.build_model(modelzoo.PRESETS["tiny"], len(tiny_tokenizer), seed=0).train()


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    rng = random.Random(0)
    files = [corpus.SourceFile("python-stdlib", name, (STDLIB / name).read_text())
             for name in ("textwrap.py", "bisect.py", "heapq.py", "colorsys.py")]
    examples = [make_example(f, rng, tiny_tokenizer, FMT, CANVAS, 48, 24) for f in files]
    return collate(examples, CANVAS, tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id, pad_weight=0.1)


def test_the_teacher_is_greedy_decoding_from_the_prompt(model, batch, tiny_tokenizer):
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    with torch.no_grad():
        cache, logits = _encode_prompt(model, batch)
        teacher = greedy_middles(model, cache, logits[:, -1], CANVAS, eos, pad)
    for row, prompt in enumerate(batch.prompt_ids.tolist()):
        expected: list[int] = []  # the slow way: the whole text through the encoder for each token
        while len(expected) < CANVAS:
            from transformers import DynamicCache

            fresh = DynamicCache(config=model.config.get_text_config(decoder=True))
            with torch.no_grad():
                hidden = model.model.encoder(input_ids=torch.tensor([prompt + expected]), past_key_values=fresh)
            token = int(lm_logits(model, hidden.last_hidden_state[:, -1]).argmax(-1))
            expected.append(token)
            if token == eos:
                break
        got = teacher.targets[row].tolist()
        assert got[: len(expected)] == expected
        assert all(token == pad for token in got[len(expected):])
        assert int(teacher.ends[row]) == len(expected)
    # The prompt's cache is left as it was: the teacher decodes on a detached copy.
    assert cache.get_seq_length() == batch.prompt_ids.shape[1]


def test_inputs_hold_a_committed_prefix_and_weights_fall_from_the_first_free_position():
    generator = torch.Generator().manual_seed(0)
    targets = torch.arange(10, 10 + 64 * 8).reshape(64, 8)
    ends = torch.full((64,), 5)  # EOS at index 4
    inputs, weights = inputs_and_weights(targets, ends, 1000, 1e-3, gamma=2.0, pad_weight=0.1, generator=generator)
    for row in range(64):
        held = int((weights[row] == 0).sum())
        assert inputs[row, :held].tolist() == targets[row, :held].tolist()  # a committed prefix is the target
        free = weights[row, held:]
        expected = torch.exp(-torch.arange(8 - held).float() / 2.0)
        expected[max(0, 5 - held):] *= 0.1  # past EOS: padding's weight
        torch.testing.assert_close(free, expected)
    # All three kinds of input occur: pure noise shares no position with the target, held prefixes do.
    assert (weights[:, 0] == 0).any() and (weights[:, 0] == 1).any()


def test_the_certainty_term_counts_only_positions_already_right():
    targets = torch.tensor([[1, 2, 3]])
    logits = torch.zeros(1, 3, 5)
    logits[0, 0, 1] = 5.0  # right and fairly sure
    logits[0, 1, 4] = 5.0  # wrong
    logits[0, 2, 3] = 0.5  # right, unsure
    weights = torch.ones(1, 3)
    _, certainty, _ = distill_terms(logits, targets, weights)
    log_probs = torch.log_softmax(logits[0, [0, 2]] / 0.5, dim=-1)
    expected = -(log_probs.exp() * log_probs).sum(-1).mean()
    torch.testing.assert_close(certainty, expected)


def test_the_distilled_objective_adds_its_terms_and_trains(model, batch, tiny_tokenizer):
    cfg = TrainConfig(canvases_per_prompt=4, distill_weight=1.0, distill_canvases=2)
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    loss, stats = training_loss(model, batch, cfg, torch.Generator().manual_seed(0), eos, pad)
    assert {"distill", "certainty", "teacher_tokens"} <= set(stats) and stats["distill"] > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad()
    # Off, the ground-truth objective is computed exactly as before (the same random draws, the same loss).
    plain = replace(cfg, distill_weight=0.0)
    first, _ = training_loss(model, batch, plain, torch.Generator().manual_seed(1), eos, pad)
    again, _ = training_loss(model, batch, plain, torch.Generator().manual_seed(1), eos, pad)
    assert torch.equal(first, again) and "distill" not in training_loss(
        model, batch, plain, torch.Generator().manual_seed(1), eos, pad)[1]
