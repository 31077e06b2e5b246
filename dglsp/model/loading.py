"""Loading a model: the one loader the server, every command and every tool use.

`load_backend(settings, progress)` returns a `ModelBundle` (tokenizer, dglsp metadata, path, device,
the model's own decoding defaults) and the `Backend` that generates: the local `Engine` or the
`RemoteBackend` (`load_remote`: the tokenizer here, the weights on the server). The model comes from a
local directory, the Hugging Face hub (cache first; `HF_HUB_OFFLINE=1` never touches the network)
or, by default, the small model shipped in the package. Before any weights are read the directory
is checked (`modelcheck`), and the memory the weights need is set against what the device has, so
a 52 GB model that cannot fit is refused with a message instead of an out-of-memory crash. Weights
load from safetensors only, straight onto the device (no full copy in host memory first).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerBase

from dglsp.config import EngineSettings, Settings
from dglsp.errors import ModelLoadError
from dglsp.model.backend import ModelBundle, ProgressFn
from dglsp.model.modelcheck import check_model_dir, weight_bytes
from dglsp.model.schedule import ModelDefaults

if TYPE_CHECKING:
    from dglsp.model.backend import Backend
    from dglsp.model.engine import Engine

log = logging.getLogger(__name__)

EMBEDDED_MODEL_DIR = Path(__file__).parent / "embedded"
# Everything a tokenizer and its chat template need (the 26B keeps its template in chat_template.jinja),
# and the weights. `.bin`/`.pt` files are never fetched: they can run code when unpickled.
TOKENIZER_PATTERNS = ["*.json", "*.jinja", "*.model", "*.txt"]
WEIGHT_PATTERNS = ["*.safetensors"]
REQUIRED_FILES = ("config.json", "tokenizer.json")
# Beyond the weights: the KV cache, activations and the allocator's slack at the default context sizes.
MEMORY_HEADROOM = 1.15
MEMORY_HEADROOM_BYTES = 1 << 30


# -- device and dtype -------------------------------------------------------------------------------

def pick_device(requested: str) -> torch.device:
    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"device {requested!r} requested but CUDA is not available; use --device cpu")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise ModelLoadError("device 'mps' requested but MPS is not available; use --device cpu")
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16_matmuls() -> bool:
    """AVX512-BF16 or AMX (oneDNN's check): elsewhere bf16 is emulated on the CPU and slower than fp32."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda":
        return torch.bfloat16
    # On such CPUs: 40% faster prefill and 20% faster denoising steps than fp32 for the embedded model,
    # with 99% top-1 agreement.
    if device.type == "cpu" and cpu_has_bf16_matmuls():
        return torch.bfloat16
    return torch.float32


def device_free_bytes(device: torch.device) -> int | None:
    """Memory the device can still give (CUDA: free device memory; CPU: available RAM); None if unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        import psutil  # a dependency of accelerate, which loads the weights onto the device

        return int(psutil.virtual_memory().available)
    return None


def check_memory(path: Path, device: torch.device, dtype: torch.dtype) -> int:
    """The bytes the weights will take in `dtype`; raises when they cannot fit on `device`."""
    elements, _ = weight_bytes(path)
    needed = int(elements * torch.empty((), dtype=dtype).element_size())
    free = device_free_bytes(device)
    if free is not None and needed * MEMORY_HEADROOM + MEMORY_HEADROOM_BYTES > free:
        raise ModelLoadError(
            f"the model in {path} needs about {_gb(needed)} GB for its weights in {str(dtype).removeprefix('torch.')}"
            f" (plus ~{_gb(needed * (MEMORY_HEADROOM - 1) + MEMORY_HEADROOM_BYTES)} GB for the cache and"
            f" activations), but {device} has {_gb(free)} GB free: use a device with more memory, free some"
            " (close other jobs on it), or pick a smaller model"
        )
    return needed


def _gb(count: float) -> str:
    return f"{count / 1e9:.1f}" if count >= 1e8 else f"{count / 1e9:.3f}"


# -- finding the files ------------------------------------------------------------------------------

def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")


def resolve_model_dir(model: str | None, weights: bool = True, progress: ProgressFn | None = None) -> Path:
    """A local directory as it is; the embedded model for None; a Hugging Face id through the local cache,
    downloading what is missing unless offline. `weights=False` fetches only the tokenizer's files (the
    remote backend: the server has the weights)."""
    if model is None:
        path = EMBEDDED_MODEL_DIR
    elif Path(model).expanduser().is_dir():
        path = Path(model).expanduser()
    elif os.sep in model and not model.count("/") == 1:
        raise ModelLoadError(f"model directory {model!r} does not exist")
    else:
        path = download(model, weights=weights, progress=progress)
    missing = [name for name in (REQUIRED_FILES if weights else REQUIRED_FILES[1:]) if not (path / name).is_file()]
    if weights and not any(path.glob("*.safetensors")):
        missing.append("*.safetensors (weights; .bin/.pt files are refused)")
    if missing:
        raise ModelLoadError(
            f"model directory {path} is missing {', '.join(missing)}; point --model at a complete "
            "DiffusionGemma directory (config.json, model.safetensors, tokenizer.json)"
        )
    return path


def download(repo_id: str, weights: bool = True, progress: ProgressFn | None = None) -> Path:
    """The hub snapshot of `repo_id` with every file dglsp needs, fetched with progress where missing."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    patterns = TOKENIZER_PATTERNS + (WEIGHT_PATTERNS if weights else [])
    offline = hub_offline()
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline,
                                      tqdm_class=_reporting_tqdm(progress) if progress else None))
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise ModelLoadError(
            f"model {repo_id!r} is not (completely) in the local Hugging Face cache and {why}; "
            f"download it ahead of time (`dglsp download {repo_id}`) or pass a local directory"
        ) from exc
    except HFValidationError as exc:
        raise ModelLoadError(f"{repo_id!r} is neither a local directory nor a valid Hugging Face id") from exc
    except Exception as exc:  # network errors come in many types; the message matters, not the type
        raise ModelLoadError(f"could not fetch model {repo_id!r}: {exc}") from exc


def _reporting_tqdm(progress: ProgressFn) -> type:
    """A tqdm class for `snapshot_download` that reports the byte counts to `progress` instead of a terminal."""

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "file": io.StringIO(), "disable": False, "mininterval": 0.5})

        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            if self.unit == "B" and self.total:
                percent = int(100 * self.n / self.total)
                progress(f"downloading {_gb(self.n)} of {_gb(self.total)} GB", min(99, percent))
            return True

    return Reporting


def read_meta(path: Path) -> dict:
    """dglsp.json (prompt format, sampler defaults, training record), or {} for models we did not train."""
    return _read_json(path / "dglsp.json", "restore the file")


def read_defaults(path: Path, meta: dict) -> ModelDefaults:
    """The model's own decoding: its dglsp.json, else its generation_config.json, else DiffusionGemma's."""
    config = _read_json(path / "config.json", "restore the model's config.json")
    canvas = config.get("canvas_length") or (config.get("text_config") or {}).get("canvas_length")
    try:
        return ModelDefaults.read(meta, _read_json(path / "generation_config.json", "restore the file"), canvas)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"the decoding settings recorded in {path} are not usable ({exc}); restore "
                             "dglsp.json or generation_config.json") from exc


def _read_json(file: Path, fix: str) -> dict:
    try:
        found = json.loads(file.read_text()) if file.is_file() else {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{file} is not readable JSON ({exc}); {fix}") from exc
    if not isinstance(found, dict):
        raise ModelLoadError(f"{file} does not hold a JSON object; {fix}")
    return found


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer, and the prompt format's requirement: dglsp.json or a chat template, named if missing."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {path}: {exc}") from exc
    if not (path / "dglsp.json").is_file() and not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            f"{path} has no chat template ({path / 'chat_template.jinja'} is missing, and tokenizer_config.json"
            " has none) and no dglsp.json prompt format, so dglsp cannot build prompts for it: fetch the model's"
            " chat_template.jinja into the directory (`dglsp download MODEL` fetches every file it needs)"
        )
    return tokenizer


# -- loading ----------------------------------------------------------------------------------------

def load_local(settings: EngineSettings, progress: ProgressFn | None = None
               ) -> tuple[ModelBundle, DiffusionGemmaForBlockDiffusion]:
    """Tokenizer and weights (safetensors only), loaded straight onto the chosen device."""
    report = progress or (lambda message, percent: None)
    report("resolving model", 5)
    path = resolve_model_dir(settings.model, progress=report)
    check_model_dir(path)  # wrong architecture, truncated or integer weights: say so before loading
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    needed = check_memory(path, device, dtype)
    if settings.threads and device.type == "cpu":
        torch.set_num_threads(settings.threads)
    report(f"loading tokenizer from {path}", 15)
    tokenizer = load_tokenizer(path, settings.trust_remote_code)
    meta = read_meta(path)
    defaults = read_defaults(path, meta)
    report(f"loading {_gb(needed)} GB of weights ({str(dtype).removeprefix('torch.')}) onto {device}", 35)
    try:
        model = DiffusionGemmaForBlockDiffusion.from_pretrained(
            path, dtype=dtype, use_safetensors=True, trust_remote_code=settings.trust_remote_code,
            device_map=str(device),  # each tensor goes to the device as it is read
        )
    except torch.OutOfMemoryError as exc:
        raise ModelLoadError(f"{device} ran out of memory loading {path}: free memory on it or use a "
                             "smaller model") from exc
    except Exception as exc:
        raise ModelLoadError(f"cannot load DiffusionGemma weights from {path}: {exc}") from exc
    report("model loaded", 80)
    return ModelBundle(tokenizer, meta, path, device, defaults), model.eval()


def load_remote(settings: Settings, progress: ProgressFn | None = None, strict: bool = False) -> tuple[ModelBundle,
                                                                                                      Backend]:
    """The tokenizer (local) and a backend for `settings.remote`. The server check runs here; a failure
    is raised when `strict` (the command line), else queued as a notice so the language server keeps
    serving (empty completions) and tries again on later requests."""
    from dglsp.model.remote import RemoteBackend, RemoteError

    report = progress or (lambda message, percent: None)
    if not settings.remote.url:
        raise ModelLoadError("the remote backend needs a server URL: --url http://host:8000 (or remote.url)")
    # The tokenizer and its chat template only: the weights live on the server.
    path = resolve_model_dir(settings.engine.model, weights=False, progress=report)
    report(f"loading tokenizer from {path}", 20)
    tokenizer = load_tokenizer(path, settings.engine.trust_remote_code)
    meta = read_meta(path)
    defaults = dataclasses.replace(read_defaults(path, meta), canvas_length=settings.sampler.canvas_length or 32)
    backend = RemoteBackend(settings.remote, tokenizer, defaults, chat="prompt_format" not in meta)
    report(f"checking the completion server at {backend.client.base}", 60)
    try:
        report(f"remote: {backend.check()}", 90)
    except RemoteError as exc:
        if strict:
            backend.close()
            raise
        log.warning("remote backend not ready at start-up: %s", exc)
    return ModelBundle(tokenizer, meta, path, backend.device, defaults), backend


def load_backend(settings: Settings, progress: ProgressFn | None = None,
                 strict: bool = False) -> tuple[ModelBundle, Backend]:
    """The bundle and the backend `settings.engine.backend` names. `strict` (the command line) raises a remote
    server's failure at once; the language server instead keeps serving and retries on later requests."""
    if settings.engine.backend == "remote":
        return load_remote(settings, progress, strict=strict)
    return load_engine(settings, progress)


def load_engine(settings: Settings | EngineSettings, progress: ProgressFn | None = None) -> tuple[ModelBundle, Engine]:
    """The local engine, whatever `engine.backend` says: the tools that decode token by token need the weights
    here."""
    from dglsp.model.engine import Engine

    if isinstance(settings, EngineSettings):
        settings = Settings(engine=settings)
    bundle, model = load_local(settings.engine, progress)
    return bundle, Engine(model, bundle, settings.latency, settings.context.prompt_tokens)


def warm_up(backend: Backend, bundle: ModelBundle, settings: Settings) -> None:
    """One generation in the shapes requests use (a prompt at the context budget, the canvas length), so the
    first suggestion pays for no kernel selection, compilation or allocation. Local backend only: a remote
    server's start-up check is its warm-up."""
    if settings.engine.backend == "remote":
        return
    context = settings.context
    length = max(16, min(1024, context.max_prefix_tokens + context.max_suffix_tokens))
    text_ids = bundle.tokenizer.encode("def f(x):\n    return x + 1\n\n", add_special_tokens=False)
    assert text_ids, "the tokenizer encodes nothing"
    prompt = (text_ids * (length // len(text_ids) + 1))[:length]
    schedule = backend.schedule(dataclasses.replace(settings.sampler, max_steps=2, seed=0))
    line = settings.sampler.line_canvas_length or backend.defaults.line_canvas_length
    for canvas in {schedule.canvas_length, min(line or schedule.canvas_length, schedule.canvas_length)}:
        backend.generate(prompt, schedule.with_canvas(canvas))  # both shapes a ghost-text canvas comes in
