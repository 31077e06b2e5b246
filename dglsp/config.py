"""Settings: dataclasses with every default in one place.

Editors send settings as `initializationOptions` and `workspace/didChangeConfiguration`
in the shape ``{"sampler": {...}, "context": {...}, ...}`` (section names are the
fields of `Settings`). `Settings.updated()` validates them field by field: a bad value
is reported and the previous value kept, so one typo never takes the server down.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplerSettings:
    """The block-diffusion schedule (DiffusionGemma's rule, see `sampler.py`)."""

    canvas_length: int = 32  # autocomplete wants short canvases; the 26B was trained at 256
    max_steps: int = 24  # upper bound; the stable-and-confident stop usually ends earlier
    entropy_bound: float = 0.1
    t_max: float = 0.8  # temperature at the first step
    t_min: float = 0.4  # temperature at the last step
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    max_canvases: int = 1  # >1 chains canvases block-autoregressively (drafting)
    seed: int | None = None  # fixed seed for reproducible suggestions

    def validate(self) -> None:
        _require(1 <= self.canvas_length <= 1024, "canvas_length must be in 1..1024")
        _require(1 <= self.max_steps <= 512, "max_steps must be in 1..512")
        _require(self.entropy_bound > 0, "entropy_bound must be > 0")
        _require(0 < self.t_min <= self.t_max, "need 0 < t_min <= t_max")
        _require(self.stability_threshold >= 0, "stability_threshold must be >= 0")
        _require(self.confidence_threshold > 0, "confidence_threshold must be > 0")
        _require(1 <= self.max_canvases <= 64, "max_canvases must be in 1..64")


@dataclass(frozen=True)
class ContextSettings:
    """How much of the buffer around the cursor goes into the prompt."""

    max_prefix_tokens: int = 768
    max_suffix_tokens: int = 256
    # Windows are cut in characters before tokenizing so a 10 MB file is never tokenized whole.
    chars_per_token: int = 8

    def validate(self) -> None:
        _require(16 <= self.max_prefix_tokens <= 131072, "max_prefix_tokens must be in 16..131072")
        _require(0 <= self.max_suffix_tokens <= 131072, "max_suffix_tokens must be in 0..131072")
        _require(1 <= self.chars_per_token <= 64, "chars_per_token must be in 1..64")


@dataclass(frozen=True)
class SchedulerSettings:
    debounce_ms: int = 15  # small: VS Code already waits ~50 ms, Neovim plugins debounce themselves

    def validate(self) -> None:
        _require(0 <= self.debounce_ms <= 5000, "debounce_ms must be in 0..5000")


@dataclass(frozen=True)
class PostprocessSettings:
    multiline: bool = True
    max_lines: int = 16

    def validate(self) -> None:
        _require(1 <= self.max_lines <= 1000, "max_lines must be in 1..1000")


@dataclass(frozen=True)
class DraftSettings:
    """Explicit drafts (invoked completion, `dglsp.draft`): canvas after canvas until the block ends."""

    max_tokens: int = 384
    max_lines: int = 200  # post-processing cap for drafts (autocomplete uses postprocess.max_lines)

    def validate(self) -> None:
        _require(1 <= self.max_tokens <= 8192, "max_tokens must be in 1..8192")
        _require(1 <= self.max_lines <= 10000, "max_lines must be in 1..10000")


@dataclass(frozen=True)
class EngineSettings:
    """Which model to load and where. Only read at start-up (a change needs a restart)."""

    model: str | None = None  # Hugging Face id or local directory; None = the embedded model
    device: str = "auto"  # auto = cuda > mps > cpu
    dtype: str = "auto"  # auto = bfloat16 on cuda, float32 elsewhere
    threads: int = 0  # torch intra-op threads on the CPU; 0 = torch's default
    trust_remote_code: bool = False
    warmup: bool = True

    def validate(self) -> None:
        _require(self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
                 "device must be auto, cpu, cuda, cuda:N or mps")
        _require(self.dtype in ("auto", "float32", "bfloat16", "float16"),
                 "dtype must be auto, float32, bfloat16 or float16")
        _require(self.threads >= 0, "threads must be >= 0")


@dataclass(frozen=True)
class Settings:
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    context: ContextSettings = field(default_factory=ContextSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    postprocess: PostprocessSettings = field(default_factory=PostprocessSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    draft: DraftSettings = field(default_factory=DraftSettings)

    def updated(self, options: Any) -> tuple[Settings, list[str]]:
        """Apply a client's settings dict; returns the new settings and one warning per rejected value."""
        warnings: list[str] = []
        if options is None:
            return self, warnings
        if not isinstance(options, dict):
            return self, [f"settings must be an object, got {type(options).__name__}; defaults kept"]
        sections = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in options.items():
            if name not in sections:
                warnings.append(f"unknown settings section {name!r} ignored")
                continue
            sections[name] = _update_section(sections[name], name, value, warnings)
        return Settings(**sections), warnings


class SettingsError(ValueError):
    pass


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SettingsError(message)


def _update_section(current: Any, section: str, values: Any, warnings: list[str]) -> Any:
    if not isinstance(values, dict):
        warnings.append(f"settings section {section!r} must be an object; kept as it was")
        return current
    types = {f.name: f.type for f in dataclasses.fields(current)}
    for key, value in values.items():
        if key not in types:
            warnings.append(f"unknown setting {section}.{key} ignored")
            continue
        if not _type_ok(value, str(types[key])):
            kept = getattr(current, key)
            warnings.append(f"{section}.{key}={value!r} has the wrong type ({types[key]}); kept {kept!r}")
            continue
        candidate = dataclasses.replace(current, **{key: value})
        try:
            candidate.validate()
        except SettingsError as exc:
            warnings.append(f"{section}.{key}={value!r} rejected: {exc}; kept {getattr(current, key)!r}")
            continue
        current = candidate
    return current


def _type_ok(value: Any, annotation: str) -> bool:
    allowed: list[type] = []
    for part in annotation.replace(" ", "").split("|"):
        if part == "None":
            if value is None:
                return True
        elif part == "bool":
            allowed.append(bool)
        elif part == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif part == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif part == "str":
            allowed.append(str)
    return any(isinstance(value, t) for t in allowed)
