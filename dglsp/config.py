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

DEFAULT_MAX_STEPS = 24  # denoising steps for a model that recommends none
# DiffusionGemma's schedule (the 26B's generation config): for a model that records none of its own.
DIFFUSIONGEMMA_SCHEDULE = {"entropy_bound": 0.1, "t_max": 0.8, "t_min": 0.4}


@dataclass(frozen=True)
class SamplerSettings:
    """The block-diffusion schedule (DiffusionGemma's rule, see `sampler.py`)."""

    canvas_length: int = 32  # autocomplete wants short canvases; the 26B was trained at 256
    # Upper bound (the stable-and-confident stop usually ends earlier). 0: the model's own, from its
    # dglsp.json (8 for the embedded model), else DEFAULT_MAX_STEPS.
    max_steps: int = 0
    # The entropy a step may accept in all, and the temperature at the first and at the last step. None = the
    # model's own: its dglsp.json, else its generation config, else DIFFUSIONGEMMA_SCHEDULE.
    entropy_bound: float | None = None
    t_max: float | None = None
    t_min: float | None = None
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    max_canvases: int = 1  # >1 chains canvases block-autoregressively (drafting)
    seed: int | None = None  # fixed seed for reproducible suggestions
    # Our stop rule beside DiffusionGemma's (whose mean-entropy bound a small model never reaches): the canvas
    # is done once its argmax up to and including the first EOS has not changed for `settle_steps` steps
    # (the tail after EOS is never shown). 0 = off; None = the model's own (its dglsp.json; off for others).
    settle_steps: int | None = None
    # Verified decoding: each canvas is a draft that one causal encoder pass checks; the longest prefix the
    # encoder's greedy predictions agree with is kept, plus the encoder's own token at the first disagreement.
    # The text is then exactly greedy token-by-token decoding, at fewer forward passes when drafts are good.
    # None = the model's own choice (its dglsp.json; plain diffusion for models we did not train).
    verify: bool | None = None
    verify_steps: int = 0  # denoising steps per draft when verifying (0: the model's, else max_steps)

    def with_schedule(self, own: dict[str, Any] | None = None) -> SamplerSettings:
        """These settings with each schedule value left to the model (None) taken from `own`, else from
        DIFFUSIONGEMMA_SCHEDULE."""
        own = own or {}

        def pick(name: str, mine: float | None) -> float:
            return float(mine if mine is not None else own.get(name) or DIFFUSIONGEMMA_SCHEDULE[name])

        return dataclasses.replace(self, entropy_bound=pick("entropy_bound", self.entropy_bound),
                                   t_max=pick("t_max", self.t_max), t_min=pick("t_min", self.t_min))

    def validate(self) -> None:
        _require(1 <= self.canvas_length <= 1024, "canvas_length must be in 1..1024")
        _require(0 <= self.max_steps <= 512, "max_steps must be in 0..512 (0: the model's default)")
        _require(self.entropy_bound is None or self.entropy_bound > 0, "entropy_bound must be > 0")
        _require(all(t is None or t > 0 for t in (self.t_min, self.t_max)), "temperatures must be > 0")
        _require(self.t_min is None or self.t_max is None or self.t_min <= self.t_max, "need t_min <= t_max")
        _require(self.stability_threshold >= 0, "stability_threshold must be >= 0")
        _require(self.confidence_threshold > 0, "confidence_threshold must be > 0")
        _require(1 <= self.max_canvases <= 64, "max_canvases must be in 1..64")
        _require(self.settle_steps is None or 0 <= self.settle_steps <= 64, "settle_steps must be in 0..64")
        _require(0 <= self.verify_steps <= 512, "verify_steps must be in 0..512")


@dataclass(frozen=True)
class ContextSettings:
    """How much of the buffer around the cursor goes into the prompt."""

    max_prefix_tokens: int = 768
    max_suffix_tokens: int = 256
    # Snippets from other open documents and recent edits, in a budget of their own. "auto": only for
    # models whose prompt format was trained with them (dglsp.json `"snippets": true`) and chat models.
    snippets: str = "auto"
    max_snippet_tokens: int = 256
    snippet_lines: int = 12  # lines per chunk of another document
    max_snippets: int = 4
    # Windows are cut in characters before tokenizing so a 10 MB file is never tokenized whole.
    chars_per_token: int = 8
    # A prefix over budget is cut this fraction deeper, and that start line is kept while typing fills the
    # slack: cutting exactly at the budget moves the start every line typed and misses the prefix KV cache.
    prefix_slack: float = 0.25

    @property
    def prompt_tokens(self) -> int:
        """The most tokens a prompt holds: what one document's prefix cache can grow to."""
        return self.max_prefix_tokens + self.max_suffix_tokens + self.max_snippet_tokens

    def validate(self) -> None:
        _require(16 <= self.max_prefix_tokens <= 131072, "max_prefix_tokens must be in 16..131072")
        _require(0 <= self.max_suffix_tokens <= 131072, "max_suffix_tokens must be in 0..131072")
        _require(1 <= self.chars_per_token <= 64, "chars_per_token must be in 1..64")
        _require(0 <= self.prefix_slack < 1, "prefix_slack must be in [0, 1)")
        _require(self.snippets in ("auto", "on", "off"), "snippets must be auto, on or off")
        _require(0 <= self.max_snippet_tokens <= 32768, "max_snippet_tokens must be in 0..32768")
        _require(1 <= self.snippet_lines <= 200, "snippet_lines must be in 1..200")
        _require(0 <= self.max_snippets <= 64, "max_snippets must be in 0..64")


@dataclass(frozen=True)
class SchedulerSettings:
    debounce_ms: int = 15  # small: VS Code already waits ~50 ms, Neovim plugins debounce themselves

    def validate(self) -> None:
        _require(0 <= self.debounce_ms <= 5000, "debounce_ms must be in 0..5000")


@dataclass(frozen=True)
class PostprocessSettings:
    multiline: bool = True
    # A blank line with code of the same block below it gets one line, as Copilot does: a block is offered
    # at an empty block's start, a block's end or under a comment. True offers one anywhere (drafts do).
    mid_block: bool = False
    max_lines: int = 16
    tree_sitter: bool = True  # syntax checks with tree-sitter where a grammar is installed
    replace_suffix: bool = True  # type over auto-closed brackets after the cursor (an edit range)
    # Hide a suggestion that leaves more syntax errors than the empty gap (tree-sitter): token soup from a
    # weak model never reaches the screen. Editor tests with random weights turn it off to see suggestions.
    hide_unparsable: bool = True
    # Hide a suggestion whose tokens the model found less probable than this (the geometric mean probability
    # of the shown tokens, see completion/confidence.py). 0 shows everything; None = the model's own calibrated
    # threshold (its dglsp.json), else 0.
    min_confidence: float | None = None

    def validate(self) -> None:
        _require(1 <= self.max_lines <= 1000, "max_lines must be in 1..1000")
        _require(self.min_confidence is None or 0.0 <= self.min_confidence <= 1.0, "min_confidence must be in [0, 1]")


@dataclass(frozen=True)
class DraftSettings:
    """Explicit drafts (invoked completion, `dglsp.draft`): canvas after canvas until the block ends."""

    max_tokens: int = 384
    max_lines: int = 200  # post-processing cap for drafts (autocomplete uses postprocess.max_lines)
    # A draft is long and explicit: it takes the model's own canvas (256 tokens for the 26B, which it was trained
    # at; 32 for the embedded model) and its own step count (0: the model's), not the ghost text's short canvas.
    canvas_length: int = 0
    max_steps: int = 0

    def validate(self) -> None:
        _require(1 <= self.max_tokens <= 8192, "max_tokens must be in 1..8192")
        _require(0 <= self.canvas_length <= 1024, "canvas_length must be in 0..1024 (0: the model's)")
        _require(0 <= self.max_steps <= 512, "max_steps must be in 0..512 (0: the model's)")
        _require(1 <= self.max_lines <= 10000, "max_lines must be in 1..10000")


@dataclass(frozen=True)
class EngineSettings:
    """Which model to load and where. A change reloads the model."""

    model: str | None = None  # Hugging Face id or local directory; None = the embedded model
    device: str = "auto"  # auto = cuda > mps > cpu
    dtype: str = "auto"  # auto = bfloat16 on cuda and on CPUs with bf16 matmuls, float32 elsewhere
    threads: int = 0  # torch intra-op threads on the CPU; 0 = torch's default
    trust_remote_code: bool = False
    warmup: bool = True
    backend: str = "local"  # local = the model on this machine; remote = a server (see RemoteSettings)

    def validate(self) -> None:
        _require(self.backend in ("local", "remote"), "backend must be local or remote")
        _require(self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
                 "device must be auto, cpu, cuda, cuda:N or mps")
        _require(self.dtype in ("auto", "float32", "bfloat16", "float16"),
                 "dtype must be auto, float32, bfloat16 or float16")
        _require(self.threads >= 0, "threads must be >= 0")


@dataclass(frozen=True)
class LatencySettings:
    """Time-to-suggestion: prefix KV reuse, typing-through, deadlines, speculation, live canvas."""

    prefix_cache: bool = True  # keep each document's encoder KV cache; re-encode only what changed
    # The LRU budget for kept caches (applied when changed): this many documents' prompts at the context budget, at
    # the model's KV bytes per token (3 KB for the embedded model: 8 documents ~ 32 MB; ~225 KB for the 26B:
    # ~2.4 GB), capped by the MB limits below. One document is typed in at a time; a few more are switched to.
    prefix_cache_documents: int = 8
    prefix_cache_cpu_mb: int = 512  # cap when the model is on the CPU
    prefix_cache_gpu_mb: int = 4096  # ... on a GPU
    typing_through: bool = True  # typing what the shown suggestion says is answered without the model
    typing_through_lookback: int = 64  # how many just-typed characters to look back over (llama.vim: 32+)
    deadline_ms: int = 0  # per-request budget; when it runs out the best draft so far is shown (0 = none)
    speculative: bool = True  # after an accepted suggestion, precompute the next one at low priority
    live_canvas: bool = False  # stream intermediate canvases as `dglsp/canvas` notifications
    live_canvas_interval_ms: int = 50  # at most one `dglsp/canvas` notification per interval
    compile_decoder: bool = True  # CUDA only: torch.compile the decoder step (read at start-up)

    def validate(self) -> None:
        _require(0 <= self.prefix_cache_documents <= 1024, "prefix_cache_documents must be in 0..1024")
        _require(0 <= self.prefix_cache_cpu_mb <= 1 << 20, "prefix_cache_cpu_mb must be in 0..1048576")
        _require(0 <= self.prefix_cache_gpu_mb <= 1 << 20, "prefix_cache_gpu_mb must be in 0..1048576")
        _require(0 <= self.typing_through_lookback <= 4096, "typing_through_lookback must be in 0..4096")
        _require(0 <= self.deadline_ms <= 600000, "deadline_ms must be in 0..600000")
        _require(0 <= self.live_canvas_interval_ms <= 10000, "live_canvas_interval_ms must be in 0..10000")


@dataclass(frozen=True)
class RemoteSettings:
    """An OpenAI-compatible server (vLLM serving DiffusionGemma) used when `engine.backend` is remote.

    `engine.model` still names the local tokenizer (and prompt format) the prompt is rendered with;
    `model` here is the name the server serves. Read at start-up (a change reloads the backend).
    """

    url: str = ""  # base URL; may carry a path (KServe: http://host/openai/v1); /v1 is added when missing
    api_key: str | None = None  # bearer key; None = the DGLSP_API_KEY environment variable, if set
    model: str | None = None  # served model name; None = the only model the server serves
    headers: str = ""  # extra headers, "Name: value" separated by newlines or ";" ({document} = a hash of the URI)
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 30.0  # longest wait for the next committed canvas
    retry_after_s: float = 2.0  # after a failure, answer empty at once for this long before trying again
    reuse_ms: int = 150  # a stopped stream is kept this long for the next keystroke's request to continue

    def validate(self) -> None:
        _require(self.url == "" or self.url.startswith(("http://", "https://")), "url must start with http(s)://")
        _require(0 < self.connect_timeout_s <= 600, "connect_timeout_s must be in (0, 600]")
        _require(0 < self.read_timeout_s <= 3600, "read_timeout_s must be in (0, 3600]")
        _require(0 <= self.retry_after_s <= 600, "retry_after_s must be in 0..600")
        _require(0 <= self.reuse_ms <= 10000, "reuse_ms must be in 0..10000")
        for line in _header_lines(self.headers):
            _require(":" in line and bool(line.split(":", 1)[0].strip()), f"header {line!r} is not 'Name: value'")

    def header_pairs(self) -> list[tuple[str, str]]:
        return [(name.strip(), value.strip()) for name, value in
                (line.split(":", 1) for line in _header_lines(self.headers))]


def _header_lines(headers: str) -> list[str]:
    return [line.strip() for line in headers.replace(";", "\n").split("\n") if line.strip()]


@dataclass(frozen=True)
class ServeSettings:
    """How the server process meets its client. Command line only: a client can never change these."""

    tcp_host: str = "127.0.0.1"  # loopback only: a completion server reads your code
    token: str | None = None  # over TCP, the first message must be `initialize` carrying initializationOptions.token
    debug_requests: bool = False  # answer `dglsp/documentText` (document-sync tests); never on in editors
    allow_remote_code: bool = False  # only `--trust-remote-code` may turn engine.trust_remote_code on
    max_message_mb: int = 256  # a larger Content-Length ends the session (a 10 MB file is ~11 MB of JSON)
    # Hosts a client's `remote.url` may name (besides loopback): `--url`'s host and `--allow-remote-host`.
    # A workspace's settings must not send the code and the API key to a server of its choosing.
    remote_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Settings:
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    context: ContextSettings = field(default_factory=ContextSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    postprocess: PostprocessSettings = field(default_factory=PostprocessSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    draft: DraftSettings = field(default_factory=DraftSettings)
    latency: LatencySettings = field(default_factory=LatencySettings)
    remote: RemoteSettings = field(default_factory=RemoteSettings)

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
