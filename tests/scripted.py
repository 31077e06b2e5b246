"""A backend whose output is scripted: the model layer replaced, everything above it real."""

from __future__ import annotations

from dglsp.model.backend import Generation, GenerationStats


class ScriptedModel:
    def __init__(self, token_ids: list[int], logprobs: list[float] | None = None):
        self.token_ids, self.logprobs = token_ids, logprobs
        self.device, self.prefix_cache = "scripted", None
        self.default_canvas_length, self.default_steps = 32, 2

    def generate(self, prompt_ids, sampler, should_stop=lambda: False, on_canvas=None, deadline=None,
                 cache_key=None) -> Generation:
        stats = GenerationStats(steps=1, generated_tokens=len(self.token_ids))
        return Generation(list(self.token_ids), True, stats, self.logprobs)

    def resolved(self, sampler):
        return sampler

    def take_notices(self):
        return []

    def prompt_mismatch(self, prompt_ids):
        return None

    def close(self):
        pass
