"""Check a model directory before loading it, so a broken one is reported with its problem and its fix.

transformers loads some broken directories without a word: a `config.json` of another
architecture builds a DiffusionGemma from random weights, and integer weights are silently
cast to floats. Others fail with messages that name neither the file nor the fix. This
module reads only small things (the JSON configs and each safetensors header, never the
tensors) and raises `ModelLoadError` naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from dglsp.errors import ModelLoadError

MODEL_TYPE = "diffusion_gemma"
FLOAT_DTYPES = {"F32", "F16", "BF16"}
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on the JSON header


def check_model_dir(path: Path) -> None:
    """Raise `ModelLoadError` if `path` cannot hold a loadable DiffusionGemma; return quietly if it can."""
    config = _read_json(path / "config.json")
    model_type = config.get("model_type")
    if model_type != MODEL_TYPE:
        raise ModelLoadError(
            f"{path / 'config.json'} describes a {model_type or 'model of unknown type'!s} model "
            f"(architectures {config.get('architectures')}); dglsp needs a DiffusionGemma "
            f"(model_type {MODEL_TYPE!r}): point --model (or the engine.model setting) at a DiffusionGemma directory"
        )
    for weights in _weight_files(path):
        _check_safetensors(weights)


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {file}: {exc.strerror}; check the file's permissions") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{file} is not valid JSON ({exc}); the file is damaged: download or save the "
                             "model again") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{file} must hold a JSON object; download or save the model again")
    return data


def _weight_files(path: Path) -> list[Path]:
    """The safetensors files the model needs: the shards an index names (all must exist), else every file."""
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        return sorted(path.glob("*.safetensors"))
    weight_map = _read_json(index).get("weight_map", {})
    shards = sorted({path / name for name in weight_map.values()}) if isinstance(weight_map, dict) else []
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise ModelLoadError(f"{index} names weight files that are missing: {', '.join(missing)}; "
                             "the download is incomplete: fetch the missing files or the whole model again")
    return shards


def weight_bytes(path: Path) -> tuple[int, int]:
    """(parameter count, bytes on disk) of the weights, from the safetensors headers alone."""
    elements = stored = 0
    for file in _weight_files(path):
        for spec in _read_header(file).values():
            count = 1
            for dim in spec.get("shape", []):
                count *= int(dim)
            elements += count
            begin, end = spec.get("data_offsets", [0, 0])
            stored += int(end) - int(begin)
    return elements, stored


def _read_header(file: Path) -> dict[str, dict]:
    """The tensor entries of a safetensors header (name -> dtype, shape, data_offsets); raises if unreadable."""
    size = file.stat().st_size
    with file.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _truncated(file, size, 8)
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > MAX_HEADER_BYTES:
            raise ModelLoadError(f"{file} is not a safetensors file (its header claims {header_length} bytes); "
                                 "replace it with the model's real model.safetensors")
        raw_header = handle.read(header_length)
    if len(raw_header) < header_length:
        raise _truncated(file, size, 8 + header_length)
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{file} has a corrupt header ({exc}); download or save the model again") from exc
    tensors = {name: spec for name, spec in header.items() if name != "__metadata__" and isinstance(spec, dict)}
    header_end = 8 + header_length
    data_end = max((int(spec.get("data_offsets", [0, 0])[1]) for spec in tensors.values()), default=0)
    if header_end + data_end > size:
        raise _truncated(file, size, header_end + data_end)
    return tensors


def _check_safetensors(file: Path) -> None:
    """Header readable, every tensor's bytes present, float weights only."""
    tensors = _read_header(file)
    odd = {name: spec.get("dtype") for name, spec in tensors.items() if spec.get("dtype") not in FLOAT_DTYPES}
    if odd:
        name, dtype = next(iter(odd.items()))
        raise ModelLoadError(
            f"{file} holds {dtype} weights ({len(odd)} tensors, e.g. {name}); dglsp loads float32, float16 or "
            "bfloat16 weights only: export the model unquantized (save_pretrained with a float dtype)"
        )


def _truncated(file: Path, size: int, needed: int) -> ModelLoadError:
    return ModelLoadError(f"{file} is truncated ({size} bytes, needs at least {needed}); the download or copy was "
                          "cut short: fetch the file again")


def fingerprint(model: str | None) -> tuple | None:
    """What a local model directory looks like on disk (names, sizes, mtimes), or None for a hub id.

    The server compares it after a failed load: a directory the user has since fixed is loaded again.
    """
    if model is None or not Path(model).expanduser().is_dir():
        return None
    files = sorted(p for p in Path(model).expanduser().iterdir() if p.is_file())
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
