"""Deadlines: when the time budget runs out, the best draft so far is answered, cut at a line boundary."""

from __future__ import annotations

import time

from dglsp.completion.completer import cut_at_line_boundary
from dglsp.config import EngineSettings, SamplerSettings
from dglsp.model.loading import load_engine


def test_cut_keeps_whole_lines_only():
    assert cut_at_line_boundary("a = 1\nb = 2\nc = g(") == "a = 1\nb = 2"
    assert cut_at_line_boundary("a = 1\n") == "a = 1\n"  # one complete line: nothing to cut
    assert cut_at_line_boundary("x + 1") == "x + 1"  # a single line is the draft
    assert cut_at_line_boundary("\n   \nfoo(") is None


def test_an_expired_deadline_answers_after_one_step_with_a_draft(tiny_model_dir):
    engine = load_engine(EngineSettings(model=str(tiny_model_dir), device="cpu"))[1]
    prompt = engine.bundle.tokenizer.encode("def f(x):\n    return", add_special_tokens=False)
    never_converges = engine.schedule(SamplerSettings(canvas_length=16, max_steps=64, confidence_threshold=1e-9,
                                                      seed=0))
    generation = engine.generate(prompt, never_converges, deadline=time.monotonic() - 1)
    assert generation.stats.steps == 1 and generation.stats.hit_deadline
    assert len(generation.token_ids) > 0 or generation.finished  # the argmax draft, not nothing
    unbounded = engine.generate(prompt, never_converges)
    assert unbounded.stats.steps == 64 and not unbounded.stats.hit_deadline
