"""What a model recommends, read once, and the schedule a generation runs with, resolved once.

`ModelDefaults.read(meta, generation_config, text_config)` turns a model directory's records into one
typed value when the model loads: its `dglsp.json` (models we trained) first, then its
`generation_config.json` (DiffusionGemma's own schedule, e.g. the 26B's), then DiffusionGemma's
published defaults. `resolve(settings, defaults)` then fills every setting the user left at None
("the model's own") and returns a `Schedule` of plain values: the decoding loop and the sampler take
nothing else, so no layer below reads `dglsp.json` or guesses a sentinel again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from dglsp.config import DECODINGS, EDIT_PREDICTORS, POLICIES, Decoding, EditPredictor, Policy, SamplerSettings

Sampling = Literal["reference", "fused", "fast"]

# DiffusionGemma's schedule (the 26B's generation config), for a model that records none of its own.
DIFFUSIONGEMMA_STEPS = 48
DIFFUSIONGEMMA_SCHEDULE = {"entropy_bound": 0.1, "t_max": 0.8, "t_min": 0.4}
DEFAULT_CANVAS_LENGTH = 32
POSTPROCESS_KEYS = ("min_confidence", "gate", "edit_min_confidence", "edit_predictor")  # dglsp.json's section


@dataclass(frozen=True)
class ModelDefaults:
    """A model's recommended decoding, from its own files. Models we did not train keep DiffusionGemma's
    rule (`entropy_bound`, plain diffusion, no settle rule, no gate), so their reference path stays `generate()`."""

    canvas_length: int = DEFAULT_CANVAS_LENGTH  # the canvas the model was trained at (256 for the 26B)
    max_steps: int = DIFFUSIONGEMMA_STEPS
    entropy_bound: float = DIFFUSIONGEMMA_SCHEDULE["entropy_bound"]
    t_max: float = DIFFUSIONGEMMA_SCHEDULE["t_max"]
    t_min: float = DIFFUSIONGEMMA_SCHEDULE["t_min"]
    decoding: Decoding = "diffusion"
    policy: Policy = "entropy_bound"
    prefix_threshold: float = 0.9  # the prefix policy's bound: an argmax probability (temperature 1)
    eos_freeze: bool = False  # after a confident EOS, the tail is padding and never denoised again
    line_canvas_length: int | None = None  # the canvas of a single-line request (None: the ghost text's)
    verify_steps: int = 1  # denoising steps per draft when verifying
    verify_mix: float = 0.0  # self-speculation's dial: the canvas's share of the acceptance logits
    settle_steps: int = 0
    min_confidence: float = 0.0  # the gate's calibrated threshold (0: no gate)
    edit_min_confidence: float = 0.0  # ... and next-edit suggestions' (0: no gate)
    # Who proposes next edits: the model rewrites the region, or the last edit's substitution is repeated at its
    # next occurrence (no model run). A model not trained on edits recommends the substitution.
    edit_predictor: EditPredictor = "model"
    gate: Literal["canvas", "encoder"] = "canvas"  # whose probability of the shown tokens the gate reads

    @classmethod
    def read(cls, meta: dict, generation: dict | None = None, canvas_length: int | None = None) -> ModelDefaults:
        """From `dglsp.json` (`meta`: its `sampler` and `postprocess` sections), else `generation_config.json`
        (`generation`, as a dict), else DiffusionGemma's defaults; `canvas_length` from `config.json`."""
        theirs = _from_generation_config(generation or {})
        if canvas_length:
            theirs["canvas_length"] = int(canvas_length)
        known = {spec.name for spec in fields(cls)}
        ours = {key: value for key, value in _from_meta(meta).items() if value is not None and key in known}
        defaults = cls(**{**theirs, **ours})
        defaults.check()
        return defaults

    def to_meta(self) -> dict[str, dict[str, Any]]:
        """The `sampler` and `postprocess` sections of `dglsp.json` that `read` reads back."""
        values = asdict(self)
        postprocess = {key: values.pop(key) for key in POSTPROCESS_KEYS}
        return {"sampler": values, "postprocess": postprocess}

    def check(self) -> None:
        if self.decoding not in DECODINGS:
            raise ValueError(f"unknown decoding {self.decoding!r} (known: {', '.join(DECODINGS)})")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown sampler policy {self.policy!r} (known: {', '.join(POLICIES)})")
        if self.edit_predictor not in EDIT_PREDICTORS:
            raise ValueError(f"unknown edit predictor {self.edit_predictor!r} (known: {', '.join(EDIT_PREDICTORS)})")


def _from_generation_config(config: dict) -> dict[str, Any]:
    sampler_config = config.get("sampler_config")
    found = {"entropy_bound": sampler_config.get("entropy_bound") if isinstance(sampler_config, dict) else None,
             "t_max": config.get("t_max"), "t_min": config.get("t_min"), "max_steps": config.get("max_denoising_steps")}
    return {key: value for key, value in found.items() if value is not None}


def _from_meta(meta: dict) -> dict[str, Any]:
    """dglsp.json's `sampler` and `postprocess` sections, including the shape exports had before decodings
    were named (`verify: true` for verified decoding)."""
    sampler = dict(meta.get("sampler") or {})
    if "decoding" not in sampler and "verify" in sampler:
        sampler["decoding"] = "verified" if sampler["verify"] else "diffusion"
    postprocess = meta.get("postprocess") or {}
    return {**sampler, **{key: postprocess[key] for key in POSTPROCESS_KEYS if key in postprocess}}


@dataclass(frozen=True)
class Schedule:
    """One generation's decoding, every value resolved: what the decoding loop and the sampler run with."""

    canvas_length: int
    max_steps: int
    entropy_bound: float
    t_max: float
    t_min: float
    decoding: Decoding = "diffusion"
    policy: Policy = "entropy_bound"
    prefix_threshold: float = 0.9
    eos_freeze: bool = False
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    max_canvases: int = 1
    seed: int | None = None
    settle_steps: int = 0
    verify_steps: int = 1
    verify_mix: float = 0.0
    gate: Literal["canvas", "encoder"] = "canvas"
    sampling: Sampling = "reference"  # the engine picks it for its device

    def __post_init__(self) -> None:
        assert self.canvas_length > 0 and self.max_steps > 0, "a canvas needs positions and steps"
        assert self.decoding in DECODINGS, f"unknown decoding {self.decoding!r}"
        assert self.policy in POLICIES, f"unknown sampler policy {self.policy!r}"

    @property
    def exact(self) -> bool:
        """Run transformers' own passes, bit-exact with `generate()` (the reference path), not the engine's lean
        ones."""
        return self.sampling == "reference"

    def with_canvas(self, length: int) -> Schedule:
        return replace(self, canvas_length=length)


def resolve(settings: SamplerSettings, defaults: ModelDefaults) -> Schedule:
    """`settings` with each value left at None taken from `defaults`."""

    def pick(name: str) -> Any:
        mine = getattr(settings, name)
        return getattr(defaults, name) if mine is None else mine

    return Schedule(
        canvas_length=settings.canvas_length or defaults.canvas_length,
        max_steps=pick("max_steps"), entropy_bound=pick("entropy_bound"), t_max=pick("t_max"), t_min=pick("t_min"),
        decoding=pick("decoding"), policy=pick("policy"), prefix_threshold=pick("prefix_threshold"),
        eos_freeze=pick("eos_freeze"), stability_threshold=settings.stability_threshold,
        confidence_threshold=settings.confidence_threshold, max_canvases=settings.max_canvases, seed=settings.seed,
        settle_steps=pick("settle_steps"), verify_steps=pick("verify_steps"), verify_mix=pick("verify_mix"),
        gate=pick("gate"),
    )
