from __future__ import annotations

from dglsp.config import SamplerSettings, Settings


def test_valid_settings_apply():
    settings, warnings = Settings().updated({"sampler": {"canvas_length": 64, "t_min": 0.3}})
    assert warnings == []
    assert settings.sampler.canvas_length == 64 and settings.sampler.t_min == 0.3


def test_bad_values_are_reported_and_previous_values_kept():
    base, _ = Settings().updated({"sampler": {"max_steps": 10}})
    settings, warnings = base.updated({
        "sampler": {"max_steps": -1, "canvas_length": "long", "seed": True, "nope": 1},
        "context": 5,
        "unknown": {},
    })
    assert settings.sampler.max_steps == 10
    assert settings.sampler.canvas_length == SamplerSettings().canvas_length
    assert settings.sampler.seed is None
    joined = " ".join(warnings)
    for fragment in ("max_steps", "canvas_length", "seed", "nope", "context", "unknown"):
        assert fragment in joined
    assert len(warnings) == 6


def test_non_object_settings_keep_defaults():
    settings, warnings = Settings().updated(["not", "a", "dict"])
    assert settings == Settings() and len(warnings) == 1


def test_ints_are_accepted_for_floats_and_none_for_optional():
    settings, warnings = Settings().updated({"sampler": {"entropy_bound": 1, "seed": 5}})
    assert warnings == [] and settings.sampler.entropy_bound == 1
    settings, warnings = settings.updated({"sampler": {"seed": None}})
    assert warnings == [] and settings.sampler.seed is None


def test_the_documented_settings_block_is_config_py():
    import dataclasses
    import json
    import re
    from pathlib import Path

    settings_doc = (Path(__file__).resolve().parent.parent / "docs" / "settings.md").read_text()
    block = re.search(r"sections that mirror `dglsp/config.py`:\n\n```json\n(.*?)\n```", settings_doc, re.S)
    assert block, "docs/settings.md lost its settings block"
    documented = json.loads(block.group(1))
    defaults = dataclasses.asdict(Settings())
    defaults.pop("remote")  # documented in its own table
    assert documented == defaults


def test_a_section_is_validated_as_a_whole_so_a_consistent_pair_applies_together():
    base, _ = Settings().updated({"sampler": {"t_min": 0.5, "t_max": 0.8}})
    both, warnings = base.updated({"sampler": {"t_max": 0.3, "t_min": 0.1}})  # t_max alone would be below t_min
    assert warnings == [] and (both.sampler.t_max, both.sampler.t_min) == (0.3, 0.1)
    wrong, warnings = base.updated({"sampler": {"t_min": 0.9, "canvas_length": 64}})
    assert wrong.sampler.t_min == 0.5 and wrong.sampler.canvas_length == 64  # only the value at fault is refused
    assert len(warnings) == 1 and "t_min" in warnings[0]


def test_choices_are_literals_and_none_is_the_models_own():
    settings, warnings = Settings().updated({"sampler": {"decoding": "verified", "policy": "prefix"}})
    assert warnings == [] and settings.sampler.decoding == "verified"
    _, warnings = Settings().updated({"sampler": {"decoding": "magic"}, "engine": {"backend": "cloud"}})
    assert len(warnings) == 2 and "one of diffusion" in warnings[0] and "one of local, remote" in warnings[1]
    back, warnings = settings.updated({"sampler": {"decoding": None}})
    assert warnings == [] and back.sampler.decoding is None
