"""A backend whose output is scripted: the model layer replaced, everything above it real."""

from __future__ import annotations

from dglsp.model.backend import Generation, GenerationStats
from dglsp.model.schedule import ModelDefaults, Schedule, resolve


class ScriptedModel:
    def __init__(self, token_ids: list[int], logprobs: list[float] | None = None):
        self.token_ids, self.logprobs = token_ids, logprobs
        self.device = "scripted"
        self.defaults = ModelDefaults(canvas_length=32, max_steps=2)

    def schedule(self, settings) -> Schedule:
        return resolve(settings, self.defaults)

    def generate(self, prompt_ids, schedule, should_stop=lambda: False, on_canvas=None, deadline=None,
                 cache_key=None, seed_ids=None) -> Generation:
        stats = GenerationStats(steps=1, generated_tokens=len(self.token_ids))
        return Generation(list(self.token_ids), True, stats, self.logprobs)

    def prefill(self, prompt_ids, cache_key, should_stop=lambda: False) -> int:
        return 0

    def take_notices(self):
        return []

    def prompt_mismatch(self, prompt_ids):
        return None

    def forget(self, key):
        pass

    def cache_stats(self):
        return None

    def apply_latency(self, latency, prompt_tokens):
        pass

    def close(self):
        pass
