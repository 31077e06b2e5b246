"""Settings: dataclasses with every default in one place.

Editors send settings as `initializationOptions` and `workspace/didChangeConfiguration`
in the shape ``{"sampler": {...}, "context": {...}, ...}`` (section names are the
fields of `Settings`). `Settings.updated()` checks each value's type with cattrs (the
choices are `Literal`s), merges a section and validates it once, so a consistent pair
such as `t_min`/`t_max` applies together; a bad value is reported and the previous value
kept, so one typo never takes the server down. `None` is the only value that means "the
model's own" (resolved once, from the model's files, by `dglsp.model.schedule`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import cattrs

# The named decodings (`dglsp.model.decoding`'s registry has one entry each) and the sampler's acceptance rules.
Decoding = Literal["diffusion", "verified", "speculative", "autoregressive", "lookup"]
Policy = Literal["entropy_bound", "prefix"]
DECODINGS: tuple[str, ...] = typing.get_args(Decoding)
POLICIES: tuple[str, ...] = typing.get_args(Policy)
EditPredictor = Literal["model", "substitution"]
EDIT_PREDICTORS: tuple[str, ...] = typing.get_args(EditPredictor)


@dataclass(frozen=True)
class SamplerSettings:
    """How ghost text is decoded. Every None is the model's own value (its dglsp.json, else its generation
    config, else DiffusionGemma's rule): see `dglsp.model.schedule`."""

    # Autocomplete wants short canvases (the 26B was trained at 256). None: the model's own.
    canvas_length: int | None = 32
    # The canvas of a request whose answer is one line (the rest of a line, or one line under the cursor's scope):
    # a line is ~7-14 tokens. None: the model's own, else `canvas_length`.
    line_canvas_length: int | None = None
    # diffusion: the canvas as denoised; verified: each canvas is a draft one causal encoder pass checks, keeping
    # the longest prefix its greedy predictions agree with (exactly greedy token-by-token text); speculative:
    # verified, with each check seeding the next draft and `verify_mix` as the acceptance dial; autoregressive:
    # one encoder pass per token; lookup: verified, drafting from the prompt and the output (what followed the
    # last place the latest tokens occurred) instead of a canvas: greedy text, no decoder pass.
    decoding: Decoding | None = None
    # Which canvas positions a denoising step keeps: entropy_bound (DiffusionGemma's: the lowest-entropy
    # positions anywhere, within `entropy_bound`) or prefix (the longest leading run whose argmax probability is
    # at least `prefix_threshold`, held fixed while the rest is denoised again).
    policy: Policy | None = None
    max_steps: int | None = None  # an upper bound per canvas; the stop rules usually end earlier
    entropy_bound: float | None = None
    t_max: float | None = None  # sampling temperature at the first step ...
    t_min: float | None = None  # ... and at the last
    prefix_threshold: float | None = None
    eos_freeze: bool | None = None  # after a confident EOS the tail is padding, never denoised again
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    max_canvases: int = 1  # >1 chains canvases block-autoregressively (drafting)
    seed: int | None = None  # fixed seed for reproducible suggestions
    # Our stop rule beside DiffusionGemma's (whose mean-entropy bound a small model never reaches): the canvas
    # is done once its argmax up to and including the first EOS has not changed for `settle_steps` steps. 0: off.
    settle_steps: int | None = None
    verify_steps: int | None = None  # denoising steps per draft when verifying
    verify_mix: float | None = None  # speculative: the canvas's weight in the acceptance logits (0: exactly greedy)
    # Whose probability of the shown tokens the confidence gate reads: the canvas's own (the decoder is sure of
    # its canvas, right or wrong), or the encoder's, one pass over the committed text. None: the model's own.
    gate: Literal["canvas", "encoder"] | None = None
    # How a step samples: reference (transformers' math: bit-exact with generate()), fast (Gumbel-max: the same
    # distribution at a fraction of the cost on the CPU) or fused (one pass, no host sync: the GPU's). None: the
    # device's fast path.
    sampling: Literal["reference", "fast", "fused"] | None = None

    def validate(self) -> None:
        _require(self.canvas_length is None or 1 <= self.canvas_length <= 1024, "canvas_length must be in 1..1024")
        _require(self.line_canvas_length is None or 1 <= self.line_canvas_length <= 1024,
                 "line_canvas_length must be in 1..1024")
        _require(self.max_steps is None or 1 <= self.max_steps <= 512, "max_steps must be in 1..512")
        _require(self.entropy_bound is None or self.entropy_bound > 0, "entropy_bound must be > 0")
        _require(all(t is None or t > 0 for t in (self.t_min, self.t_max)), "temperatures must be > 0")
        _require(self.t_min is None or self.t_max is None or self.t_min <= self.t_max, "need t_min <= t_max")
        _require(self.prefix_threshold is None or 0 < self.prefix_threshold <= 1, "prefix_threshold must be in (0, 1]")
        _require(self.stability_threshold >= 0, "stability_threshold must be >= 0")
        _require(self.confidence_threshold > 0, "confidence_threshold must be > 0")
        _require(1 <= self.max_canvases <= 64, "max_canvases must be in 1..64")
        _require(self.settle_steps is None or 0 <= self.settle_steps <= 64, "settle_steps must be in 0..64")
        _require(self.verify_steps is None or 0 <= self.verify_steps <= 512, "verify_steps must be in 0..512")
        _require(self.verify_mix is None or 0 <= self.verify_mix <= 1, "verify_mix must be in [0, 1]")


@dataclass(frozen=True)
class ContextSettings:
    """How much of the buffer around the cursor goes into the prompt."""

    max_prefix_tokens: int = 768
    max_suffix_tokens: int = 256
    # Snippets from other open documents and recent edits, in a budget of their own. "auto": only for
    # models whose prompt format was trained with them (dglsp.json `"snippets": true`) and chat models.
    snippets: Literal["auto", "on", "off"] = "auto"
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
    # at; 32 for the embedded model) and its own step count (None: the model's), not the ghost text's short canvas.
    canvas_length: int | None = None
    max_steps: int | None = None

    def validate(self) -> None:
        _require(1 <= self.max_tokens <= 8192, "max_tokens must be in 1..8192")
        _require(self.canvas_length is None or 1 <= self.canvas_length <= 1024, "canvas_length must be in 1..1024")
        _require(self.max_steps is None or 1 <= self.max_steps <= 512, "max_steps must be in 1..512")
        _require(1 <= self.max_lines <= 10000, "max_lines must be in 1..10000")


@dataclass(frozen=True)
class NextEditSettings:
    """Next-edit suggestions (`textDocument/copilotInlineEdit`): the model rewrites the region where the next edit
    belongs, from the document's recent edits."""

    enabled: bool = True
    # model: the model rewrites the region; substitution: the last edit's substitution at its next occurrence (a
    # find-and-replace that follows the user), or the argument it added to a call at the next call lacking it (no
    # model run, deterministic; the editors' tests use it).
    # None: the model's own (its dglsp.json; a model not trained on edits recommends the substitution).
    predictor: EditPredictor | None = None
    radius: int = 3  # the cursor's region: its line and this many lines either side
    history_edits: int = 8  # recent edits (unified diffs) in the prompt
    snippet_tokens: int = 512  # the prompt's budget for the edits and the region's current text
    # The rewrite's canvas starts from the region's current text instead of noise (most of a region stays).
    seed_canvas: bool = True
    # The rewrite is a canvas whatever ghost text uses: token by token, a 21-line region takes ~200 passes.
    decoding: Decoding = "diffusion"
    policy: Policy = "prefix"  # a copied run is committed in one pass, left to right
    max_steps: int = 48  # per canvas: the prefix policy commits at least one position a step
    # Hide an edit whose changed tokens the model found less probable than this; None = the model's own.
    min_confidence: float | None = None

    def validate(self) -> None:
        _require(0 <= self.radius <= 50, "radius must be in 0..50")
        _require(0 <= self.history_edits <= 64, "history_edits must be in 0..64")
        _require(0 <= self.snippet_tokens <= 8192, "snippet_tokens must be in 0..8192")
        _require(1 <= self.max_steps <= 512, "max_steps must be in 1..512")
        _require(self.min_confidence is None or 0.0 <= self.min_confidence <= 1.0, "min_confidence must be in [0, 1]")


@dataclass(frozen=True)
class EngineSettings:
    """Which model to load and where. A change reloads the model."""

    model: str | None = None  # Hugging Face id or local directory; None = the embedded model
    device: str = "auto"  # auto = cuda > mps > cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto = bf16 on cuda and on CPUs with bf16
    # matmuls, float32 elsewhere
    threads: int = 0  # torch intra-op threads on the CPU; 0 = torch's default
    trust_remote_code: bool = False
    warmup: bool = True
    backend: Literal["local", "remote"] = "local"  # local = the model on this machine; remote = a server

    def validate(self) -> None:
        _require(self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
                 "device must be auto, cpu, cuda, cuda:N or mps")
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
    prefetch: bool = True  # after an accepted suggestion, compute the next one at low priority
    # Where the editor says its cursor went (a document entered, a jump: `dglsp/focus`), encode the prompt at low
    # priority, so the first keystroke there re-encodes only what it typed.
    prefill_on_focus: bool = True
    live_canvas: bool = False  # stream intermediate canvases as `dglsp/preview` notifications
    live_canvas_interval_ms: int = 50  # at most one live-canvas preview per interval
    # torch.compile the decoder step (read at start-up): "auto" on CUDA only; "on" on the CPU too, where inductor's
    # fused kernels make a step ~1.2-1.6x faster but compiling costs 80-130 s at the first request's shapes.
    compile_decoder: Literal["auto", "on", "off"] = "auto"
    # On the CPU, where the decoder step is not compiled: the decoder's steps and the encoder's short passes after
    # the prompt run lean (a fused op where transformers runs a dozen; results equal to rounding) for the models
    # they cover; off: transformers' forward. The reference sampling path always runs transformers'. At start-up.
    lean_passes: bool = True

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
    next_edit: NextEditSettings = field(default_factory=NextEditSettings)

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


def _strict(kind: type, name: str):
    """A cattrs hook that takes a value of exactly `kind` (an int also for a float; never a bool for a number):
    cattrs' defaults would turn "32" into 32 and True into 1."""

    def structure(value: Any, _: Any) -> Any:
        numeric = kind in (int, float)
        if isinstance(value, bool) and numeric or not isinstance(value, (int, float) if kind is float else kind):
            raise TypeError(f"expected {name}")
        return float(value) if kind is float else value  # type: ignore[arg-type]  # checked above

    return structure


_CONVERTER = cattrs.Converter(forbid_extra_keys=True)
for _kind, _name in ((int, "an integer"), (float, "a number"), (bool, "true or false"), (str, "a string")):
    _CONVERTER.register_structure_hook(_kind, _strict(_kind, _name))


def _type_error(kind: Any, value: Any) -> str | None:
    """Why `value` cannot be a setting of type `kind`, or None."""
    parts = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    choices = [arg for part in parts if typing.get_origin(part) is Literal for arg in typing.get_args(part)]
    optional = type(None) in parts
    if choices and value not in choices and not (value is None and optional):
        return "expected one of " + ", ".join(map(str, choices)) + (" or null" if optional else "")
    try:
        _CONVERTER.structure(value, kind)
    except Exception as exc:  # cattrs raises TypeError, ValueError or its own grouped errors
        messages = cattrs.transform_error(exc) if isinstance(exc, cattrs.BaseValidationError) else [str(exc)]
        return "; ".join(messages)
    return None


def _update_section(current: Any, section: str, values: Any, warnings: list[str]) -> Any:
    """`current` with `values` merged: each value's type checked, then the section validated once as a whole;
    when the whole is invalid, each value is tried alone so only the ones at fault are rejected."""
    if not isinstance(values, dict):
        warnings.append(f"settings section {section!r} must be an object; kept as it was")
        return current
    hints = typing.get_type_hints(type(current))
    accepted: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            warnings.append(f"unknown setting {section}.{key} ignored")
            continue
        wrong = _type_error(hints[key], value)
        if wrong:
            warnings.append(f"{section}.{key}={value!r} rejected ({wrong}); kept {getattr(current, key)!r}")
            continue
        accepted[key] = _CONVERTER.structure(value, hints[key])
    try:
        return _validated(current, accepted)
    except SettingsError:
        pass
    for key, value in accepted.items():
        try:
            current = _validated(current, {key: value})
        except SettingsError as exc:
            warnings.append(f"{section}.{key}={value!r} rejected: {exc}; kept {getattr(current, key)!r}")
    return current


def _validated(current: Any, changes: dict[str, Any]) -> Any:
    candidate = dataclasses.replace(current, **changes)
    candidate.validate()
    return candidate
