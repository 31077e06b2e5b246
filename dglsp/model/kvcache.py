"""Per-document prefix KV cache for the encoder: re-encode only what changed since the last prompt.

Contract: the engine asks `prepare(key, prompt_ids, encode)` for a cache holding the whole
prompt. The prompt puts the suffix before the prefix (`prompt.py`), so typing at the cursor
only appends tokens: we keep, per document, the prompt's token ids and every layer's full
key/value history, find the longest common prefix with the new ids, and run the encoder
over the rest only.

Why we keep full histories instead of a `DynamicCache`: a sliding-window layer of a
`DynamicCache` keeps only its last `window - 1` tokens, so once the window is full it
cannot be cropped back (`DynamicSlidingWindowLayer.crop` raises a RuntimeError). We store
every token's K/V and build a fresh `DynamicCache` *view* per use: sliding layers get the
last `window - 1` tokens of the kept prefix (exactly what they would hold after a plain
prefill) and full layers get all of it. Views share storage with the kept tensors but
never write into them (`DynamicLayer.update` concatenates into new tensors), so chaining
canvases through a view leaves the stored cache equal to the prompt.

Eviction is LRU under a byte budget; an entry larger than the budget is simply not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from transformers import DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer


@dataclass
class _Entry:
    token_ids: list[int]
    keys: list[torch.Tensor | None]  # per layer [1, heads, T, head_dim]; None for a layer that holds nothing
    values: list[torch.Tensor | None]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values) if t is not None)


@dataclass
class PrefixCacheStats:
    lookups: int = 0
    hits: int = 0  # lookups that reused at least one token
    reused_tokens: int = 0
    encoded_tokens: int = 0
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


CHUNK_QUANTUM = 32  # prefill chunks below the limit are multiples of this, then powers of two


def chunk_size(remaining: int, limit: int) -> int:
    """The next prefill chunk: `limit`, else a multiple of 32, else a power of two (at most 13 sizes).

    oneDNN keeps a compiled kernel, with its own buffers, for every input shape it meets: measured on
    the embedded model, ~2.5 MB more resident memory per new chunk length, and a remainder can take any
    of 256 lengths. A few chunk sizes keep that to a few shapes; a prompt pays at most 5 extra passes.
    """
    if remaining >= limit:
        return limit
    if remaining >= CHUNK_QUANTUM:
        return remaining - remaining % CHUNK_QUANTUM
    return 1 << (remaining.bit_length() - 1)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    limit = min(len(a), len(b))
    for index in range(limit):
        if a[index] != b[index]:
            return index
    return limit


EncodeFn = Callable[[DynamicCache, list[int]], object]  # appends ids to the cache (the engine's encoder)


def dynamic_layers(cache: DynamicCache) -> list[DynamicLayer]:
    """The cache's layers: a `DynamicCache` built from a config holds `DynamicLayer`s (sliding ones among them),
    though `cache.layers` is typed as any kind of cache layer."""
    return cast(list[DynamicLayer], cache.layers)


def _sliding(layer: DynamicLayer) -> DynamicSlidingWindowLayer | None:
    """The layer as a sliding-window layer, or None for a full-attention one (`is_sliding` says which)."""
    return cast(DynamicSlidingWindowLayer, layer) if layer.is_sliding else None


class PrefixCache:
    """LRU of per-document encoder caches under `budget_bytes` (0 disables keeping anything)."""

    def __init__(self, config: PretrainedConfig, budget_bytes: int):
        self.config = config.get_text_config(decoder=True)
        self.budget_bytes = budget_bytes
        self.kv_bytes_per_token = 0  # set by the engine, which measures it
        self.stats = PrefixCacheStats()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def drop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def resize(self, budget_bytes: int) -> None:
        """A new budget; the least recently used caches go until the rest fit."""
        with self._lock:
            self.budget_bytes = budget_bytes
            self._evict()

    def prepare(self, key: str | None, prompt_ids: list[int], encode: EncodeFn, keep_last: bool = False,
                should_stop: Callable[[], bool] = lambda: False, chunk_tokens: int = 256) -> tuple[
            DynamicCache | None, int]:
        """A cache holding `prompt_ids`, and how many of them were reused rather than encoded.

        `keep_last=True` always re-encodes the last token (callers that need its hidden state).
        With `key=None` nothing is looked up or kept: a plain prefill. New tokens are encoded
        `chunk_tokens` at a time with `should_stop` checked in between, so a cancel during a cold
        prefill frees the device within one chunk; the cache is then None, but the part encoded so
        far is kept, and the next request for the document starts from it.
        """
        with self._lock:
            entry = self._entries.get(key) if key is not None else None
            if entry is not None and key is not None:
                self._entries.move_to_end(key)
        reused = common_prefix_length(entry.token_ids, prompt_ids) if entry is not None else 0
        if keep_last:
            reused = min(reused, len(prompt_ids) - 1)
        work = self._view(entry, reused, record_past=True)
        new_ids = prompt_ids[reused:]
        encoded = 0
        while encoded < len(new_ids):
            size = chunk_size(len(new_ids) - encoded, chunk_tokens)
            encode(work, new_ids[encoded:encoded + size])
            encoded += size
            if encoded < len(new_ids) and should_stop():
                break
        merged = self._merge(entry, reused, work, encoded, prompt_ids[:reused + encoded])
        if key is not None:
            self._record(reused, encoded)
            self._keep(key, merged)
        if encoded < len(new_ids):
            return None, reused
        return self._view(merged, len(prompt_ids), record_past=False), reused

    def _record(self, reused: int, encoded: int) -> None:
        self.stats.lookups += 1
        self.stats.hits += reused > 0
        self.stats.reused_tokens += reused
        self.stats.encoded_tokens += encoded

    def _keep(self, key: str, entry: _Entry) -> None:
        with self._lock:
            self._entries.pop(key, None)
            if entry.nbytes > self.budget_bytes:
                return
            self._entries[key] = entry
            self._evict()

    def _evict(self) -> None:
        """Drop the least recently used caches until the rest fit the budget (the caller holds the lock)."""
        while self._entries and sum(e.nbytes for e in self._entries.values()) > self.budget_bytes:
            self._entries.popitem(last=False)
            self.stats.evictions += 1

    def _view(self, entry: _Entry | None, length: int, record_past: bool) -> DynamicCache:
        """A `DynamicCache` holding the first `length` tokens of `entry`, as a plain prefill would leave it."""
        cache = DynamicCache(config=self.config)
        for index, layer in enumerate(dynamic_layers(cache)):
            sliding = _sliding(layer)
            if sliding is not None and record_past:
                # Keep every new token's K/V in the layer so `_merge` can read them back.
                sliding.activate_past_recording()
            if entry is None or length == 0:
                continue
            kept_keys, kept_values = entry.keys[index], entry.values[index]
            if kept_keys is None:
                continue
            assert kept_values is not None  # a layer's keys and values are kept together
            keys, values = kept_keys[:, :, :length], kept_values[:, :, :length]
            if sliding is not None:
                start = max(0, length - (sliding.sliding_window - 1))
                keys, values = keys[:, :, start:], values[:, :, start:]
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
            if sliding is not None:
                sliding.cumulative_length = length
        return cache

    @staticmethod
    def _merge(entry: _Entry | None, reused: int, work: DynamicCache, new: int, prompt_ids: list[int]) -> _Entry:
        """The kept prefix of `entry` followed by the K/V the encoder just wrote into `work`."""
        keys: list[torch.Tensor | None] = []
        values: list[torch.Tensor | None] = []
        for index, layer in enumerate(dynamic_layers(work)):
            old_keys = entry.keys[index] if entry is not None and reused else None
            old_values = entry.values[index] if entry is not None and reused else None
            layer_keys, layer_values = layer.keys, layer.values
            if not layer.is_initialized or layer_keys is None or layer_keys.numel() == 0:
                keys.append(old_keys[:, :, :reused] if old_keys is not None else None)
                values.append(old_values[:, :, :reused] if old_values is not None else None)
                continue
            assert layer_values is not None  # set together with the keys
            held = layer_keys.shape[-2]  # [1, heads, held, head_dim]: the new tokens are the last `new`
            new_keys, new_values = layer_keys[:, :, held - new:], layer_values[:, :, held - new:]
            if old_keys is not None:
                assert old_values is not None  # kept together with the keys
                new_keys = torch.cat([old_keys[:, :, :reused], new_keys], dim=-2)
                new_values = torch.cat([old_values[:, :, :reused], new_values], dim=-2)
            keys.append(new_keys)
            values.append(new_values)
        return _Entry(list(prompt_ids), keys, values)


# -- rolling back tokens appended to a cache ------------------------------------------------------------

CacheMark = list[tuple[torch.Tensor | None, torch.Tensor | None, int]]


def cache_mark(cache: DynamicCache) -> CacheMark:
    """What each layer holds now, so tokens appended after this can be partly taken back (`rollback`).
    Appending never writes into these tensors: a layer's update concatenates into new ones."""
    return [(layer.keys, layer.values, layer.get_seq_length() if layer.is_initialized else 0)
            for layer in dynamic_layers(cache)]


def rollback(cache: DynamicCache, mark: CacheMark, appended: int, keep: int) -> None:
    """Of the `appended` tokens added since `mark`, keep the first `keep` and forget the rest.

    A sliding layer holds only its last `window - 1` tokens, so `DynamicCache.crop` cannot undo an append
    once the window is full; here the kept tokens' K/V (the new ones are the layer's last `appended`) are
    re-joined to what the layer held at the mark, exactly as appending only them would have left it.
    """
    assert 0 <= keep <= appended
    for layer, (keys, values, length) in zip(dynamic_layers(cache), mark, strict=True):
        held_keys, held_values = layer.keys, layer.values
        assert held_keys is not None and held_values is not None, "rollback of a layer that holds nothing"
        assert appended <= held_keys.shape[-2], "appended more tokens than a sliding window holds"
        new_keys = held_keys[:, :, held_keys.shape[-2] - appended:][:, :, :keep]
        new_values = held_values[:, :, held_values.shape[-2] - appended:][:, :, :keep]
        if keys is not None and length:
            assert values is not None  # marked together with the keys
            new_keys, new_values = torch.cat([keys, new_keys], dim=-2), torch.cat([values, new_values], dim=-2)
        sliding = _sliding(layer)
        if sliding is not None:
            window = sliding.sliding_window - 1
            new_keys, new_values = new_keys[:, :, -window:], new_values[:, :, -window:]
            sliding.cumulative_length = length + keep
        layer.keys, layer.values = new_keys, new_values


def detached_copy(cache: DynamicCache, config: PretrainedConfig) -> DynamicCache:
    """A cache holding what `cache` holds, cut from its autograd graph: a no-gradient pass can append to it
    (training's teacher decodes greedily after the prompt) without touching the original."""
    copy = DynamicCache(config=config.get_text_config(decoder=True))
    for source, target in zip(dynamic_layers(cache), dynamic_layers(copy), strict=True):
        if not source.is_initialized or source.keys is None or source.values is None:
            continue
        keys, values = source.keys.detach(), source.values.detach()
        target.lazy_initialization(keys, values)
        target.keys, target.values = keys, values
        sliding, original = _sliding(target), _sliding(source)
        if sliding is not None and original is not None:
            sliding.cumulative_length = original.cumulative_length
    return copy
