"""`dglsp train`: from the corpus on this machine to a shipped model directory, resumable.

Contract: `main_train(argv)` builds (or reuses, from `--work-dir`) the corpus, the tokenizer
and a pre-split file list; then trains a DiffusionGemma of a size preset and exports a model
directory that `engine.load_bundle` loads. Everything the run needs to go on — checkpoint,
log, corpus cache — lives in `--work-dir`, so running the same command again resumes.

One training step follows DiffusionGemma's recipe (NeMo Automodel), written on the model's
encoder and decoder calls because `forward()` returns no loss:

1. The causal encoder reads the FIM prompt (built with `prompt.encode_fim`, exactly as served)
   and writes the KV cache; the same pass gives a next-token loss on every prompt token.
2. The canvas (middle, EOS, padding) is corrupted with uniform random tokens at rate
   t ~ U(eps, 1); the bidirectional decoder denoises it against the cache, at positions
   continuing after the prompt, as at inference. `--canvases-per-prompt` noisy copies share
   one encoder pass (the decoder is cheap next to the encoder).
3. Self-conditioning: a first decoder pass without gradient; its logits are fed to the second
   pass for a random half of the canvases.
4. The encoder continues over middle + EOS from the cache (how token-by-token decoding runs),
   adding next-token loss on the clean middle.

Canvas cross-entropy is weighted: middle tokens and EOS 1, padding `--pad-weight`, so easy
padding does not dominate.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion, DynamicCache, PreTrainedTokenizerBase

from dglsp.completion.prompt import CursorContext, PromptBuilder, PromptFormat
from dglsp.completion.snippets import OpenDocument, pick_snippets
from dglsp.config import ContextSettings, SamplerSettings
from dglsp.model.loading import EMBEDDED_MODEL_DIR, cpu_has_bf16_matmuls
from dglsp.tools import corpus, modelzoo, options
from dglsp.tools.options import TrainConfig

# What an editor asks for, most often first: the line after the indent an editor just inserted (cursor after
# the indent, the suffix opens with the newline), a whole line from its start, the rest of a line, a block,
# a random span. The first two are whole single lines: more than half of all middles.
MIDDLE_KINDS = ("line_after_indent", "whole_line", "rest_of_line", "block", "span")
MIDDLE_KIND_WEIGHTS = (0.35, 0.2, 0.2, 0.15, 0.1)
Log = Callable[[str], None]
HELD_OUT_EVERY = 97  # one file in ~100 (by a stable hash of its path) is held out
PAUSE_FILE = "PAUSE"  # while this file exists in the work dir, training sleeps (after a checkpoint)
SIBLINGS_PER_EXAMPLE = 4  # other files of the package an example's snippets may come from
SNIPPETS_PER_EXAMPLE = 2
SNIPPET_LINES = 8  # shorter chunks than the server's 12: two fit the training prompt's smaller snippet budget
MAX_SIBLING_CHARS = 50_000  # scanning larger files for snippets costs more than it teaches


@dataclass
class TrainState:
    step: int = 0
    tokens_seen: int = 0  # prompt + canvas tokens through the model
    loss_tokens_seen: int = 0  # tokens that carried a loss
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the training process, all threads: what the model card counts
    best_held_out: float = math.inf
    history: list[dict] = field(default_factory=list)
    cooldown_start: int = 0  # the decay this checkpoint is on (its planned first step); 0 at the peak rate
    warmup_start: int = 0  # the step the last learning-rate warm-up began at: 0, or where a fresh optimizer began
    # One row per stretch of training (a run of `dglsp train`): the model card's training log.
    stretches: list[dict] = field(default_factory=list)


@dataclass
class Example:
    """One FIM example: the prompt ids as served, the middle ids (no EOS), and what kind of gap it is."""

    header: list[int]  # <bos> <|file|> path\n <|suffix|>
    suffix: list[int]
    prefix_marker: int
    prefix: list[int]
    middle_marker: int
    middle: list[int]
    kind: str

    def prompt(self) -> list[int]:
        return self.header + self.suffix + [self.prefix_marker] + self.prefix + [self.middle_marker]

    def trimmable(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def trim_prompt(self, excess: int) -> None:
        """Drop `excess` tokens: first from the far end of the prefix, then from the far end of the suffix."""
        assert excess <= self.trimmable(), "cannot trim the prompt below its fixed tokens"
        from_prefix = min(excess, len(self.prefix))
        self.prefix = self.prefix[from_prefix:]
        rest = excess - from_prefix
        self.suffix = self.suffix[: len(self.suffix) - rest]


# ---------------------------------------------------------------------------------------------------------------
# Examples


def choose_gap(text: str, rng: random.Random) -> tuple[int, int, str]:
    """A (start, end) character span to blank out, shaped like a real completion."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    candidates = [i for i, line in enumerate(lines) if line.strip()]
    kind = rng.choices(MIDDLE_KINDS, MIDDLE_KIND_WEIGHTS)[0]
    if not candidates:
        return 0, len(text), "span"
    index = rng.choice(candidates)
    line_start, line_end = starts[index], starts[index + 1]
    if kind == "rest_of_line":
        body = lines[index].rstrip("\n")
        indent = len(body) - len(body.lstrip())
        cut = rng.randint(indent, max(indent, len(body) - 1))
        return line_start + cut, line_start + len(body), kind
    if kind == "line_after_indent":
        body = lines[index].rstrip("\r\n")
        return line_start + len(body) - len(body.lstrip()), line_start + len(body), kind
    if kind == "whole_line":
        return line_start, line_end, kind
    if kind == "block":
        count = rng.randint(2, 6)
        return line_start, starts[min(len(lines), index + count)], kind
    start = rng.randint(line_start, line_end - 1)
    return start, min(len(text), start + rng.randint(1, 120)), kind


def make_example(
    file: corpus.SourceFile, rng: random.Random, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
    canvas_length: int, max_prefix_tokens: int, max_suffix_tokens: int,
    siblings: list[corpus.SourceFile] | None = None, max_snippet_tokens: int = 0,
) -> Example:
    """One FIM example, its prompt built by the serving path's `PromptBuilder` (the same trimming, the enclosing
    definition kept on top of a cut prefix); with `siblings`, snippets of them picked as the server picks
    snippets of the other open files."""
    text = file.text
    start, end, kind = choose_gap(text, rng)
    middle = tokenizer.encode(text[start:end], add_special_tokens=False)
    if len(middle) > canvas_length - 1:  # keep room for EOS; the cut end becomes the start of the suffix
        middle = middle[: canvas_length - 1]
        end = start + len(tokenizer.decode(middle))
    settings = ContextSettings(max_prefix_tokens=max_prefix_tokens, max_suffix_tokens=max_suffix_tokens,
                               snippets="on" if siblings else "off", max_snippet_tokens=max_snippet_tokens,
                               max_snippets=SNIPPETS_PER_EXAMPLE, snippet_lines=SNIPPET_LINES)
    context = CursorContext(text[max(0, start - 8 * max_prefix_tokens):start], text[end:end + 8 * max_suffix_tokens],
                            path=file.path, language_id="python")
    if siblings:
        documents = [OpenDocument(f"{s.package}/{s.path}", s.path, "python", s.text) for s in siblings]
        context = replace(context, snippets=pick_snippets(f"{file.package}/{file.path}", context, documents, settings))
    ids = PromptBuilder(tokenizer, fmt, settings).build(context).ids
    prefix_at = ids.index(token_id(tokenizer, fmt.tokens["prefix"]))
    suffix_at = ids.index(token_id(tokenizer, fmt.tokens["suffix"]))
    return Example(
        header=ids[: suffix_at + 1], suffix=ids[suffix_at + 1:prefix_at], prefix_marker=ids[prefix_at],
        prefix=ids[prefix_at + 1:-1], middle_marker=ids[-1], middle=middle, kind=kind,
    )


@dataclass
class Batch:
    prompt_ids: torch.Tensor  # [B, L]: equal lengths, so no attention mask is needed anywhere
    canvas_ids: torch.Tensor  # [B, C]: middle, EOS, padding
    canvas_weights: torch.Tensor  # [B, C]
    continuation_ids: torch.Tensor  # [B, M+1]: middle + EOS, right-padded (padding only attends to itself)
    continuation_mask: torch.Tensor  # [B, M+1]


def collate(examples: list[Example], canvas_length: int, pad_id: int, eos_id: int, pad_weight: float) -> Batch:
    """Trim every prompt to the shortest in the batch (examples arrive grouped by length, so little is lost)."""
    length = min(len(e.prompt()) for e in examples)
    # A long file path can make an example's fixed tokens longer than the shortest prompt: leave it out.
    examples = [e for e in examples if len(e.prompt()) - e.trimmable() <= length]
    for example in examples:
        example.trim_prompt(len(example.prompt()) - length)
    prompts = torch.tensor([e.prompt() for e in examples], dtype=torch.long)
    canvas = torch.full((len(examples), canvas_length), pad_id, dtype=torch.long)
    weights = torch.full((len(examples), canvas_length), pad_weight)
    width = max(len(e.middle) for e in examples) + 1
    continuation = torch.full((len(examples), width), pad_id, dtype=torch.long)
    continuation_mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, example in enumerate(examples):
        clean = example.middle + ([eos_id] if len(example.middle) < canvas_length else [])
        canvas[row, : len(clean)] = torch.tensor(clean)
        weights[row, : len(clean)] = 1.0
        continuation[row, : len(example.middle) + 1] = torch.tensor(example.middle + [eos_id])
        continuation_mask[row, : len(example.middle) + 1] = True
    return Batch(prompts, canvas, weights, continuation, continuation_mask)


class ExampleStream:
    """Batches of examples grouped by prompt length, deterministic in (seed, step) so a resumed run goes on."""

    def __init__(self, files: list[corpus.SourceFile], tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
                 cfg: TrainConfig, canvas: int):
        self.files = files
        self.weights = [len(f.text) ** 0.5 for f in files]  # sqrt: long files matter more, without dominating
        self.tokenizer, self.fmt, self.cfg, self.canvas = tokenizer, fmt, cfg, canvas
        self.pool: list[Example] = []
        self.by_package: dict[str, list[corpus.SourceFile]] = {}
        for file in files:
            if len(file.text) <= MAX_SIBLING_CHARS:
                self.by_package.setdefault(file.package, []).append(file)

    def batch(self, step: int) -> Batch:
        if len(self.pool) < self.cfg.batch_size:
            self.pool = self._fill(step)
        examples, self.pool = self.pool[: self.cfg.batch_size], self.pool[self.cfg.batch_size:]
        return collate(examples, self.canvas, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id,
                       self.cfg.pad_weight)

    def _fill(self, step: int) -> list[Example]:
        rng = random.Random(self.cfg.seed * 1_000_003 + step)
        chosen = rng.choices(self.files, self.weights, k=self.cfg.batch_size * 8)
        examples = [self._example(f, rng) for f in chosen]
        examples.sort(key=lambda e: len(e.prompt()))
        batches = [examples[i:i + self.cfg.batch_size] for i in range(0, len(examples), self.cfg.batch_size)]
        rng.shuffle(batches)
        return [e for b in batches for e in b]

    def _example(self, file: corpus.SourceFile, rng: random.Random) -> Example:
        siblings = self._siblings(file, rng) if rng.random() < self.cfg.snippet_prob else []
        return make_example(file, rng, self.tokenizer, self.fmt, self.canvas, self.cfg.max_prefix_tokens,
                            self.cfg.max_suffix_tokens, siblings, self.cfg.max_snippet_tokens)

    def _siblings(self, file: corpus.SourceFile, rng: random.Random) -> list[corpus.SourceFile]:
        """Up to SIBLINGS_PER_EXAMPLE other files of its package, from its own directory first: the files a
        programmer has open beside it."""
        group = self.by_package.get(file.package, [])
        directory = file.path.rsplit("/", 1)[0] if "/" in file.path else ""
        near = [f for f in group if f is not file and f.path.startswith(directory)]
        pool = near if len(near) >= 2 else [f for f in group if f is not file]
        return rng.sample(pool, min(SIBLINGS_PER_EXAMPLE, len(pool)))


# ---------------------------------------------------------------------------------------------------------------
# A pre-tokenized shard: examples made here, trained on a machine with no corpus and no network (a GPU)

SHARD_VERSION = 1


def token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    found = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(found, int), token
    return found


def split_prompt(prompt: list[int], middle: list[int], kind: str, suffix_id: int, prefix_id: int) -> Example:
    """The `Example` a prompt (as `PromptBuilder` made it) and its middle came from."""
    suffix_at, prefix_at = prompt.index(suffix_id), prompt.index(prefix_id)
    return Example(header=prompt[: suffix_at + 1], suffix=prompt[suffix_at + 1:prefix_at], prefix_marker=prefix_id,
                   prefix=prompt[prefix_at + 1:-1], middle_marker=prompt[-1], middle=middle, kind=kind)


def pack(examples: list[Example]) -> dict:
    """Examples as flat int16 token arrays (a 4,096-token vocabulary fits) with their lengths."""
    flat = [token for e in examples for token in (*e.prompt(), *e.middle)]
    return {"ids": torch.tensor(flat, dtype=torch.int16),
            "prompt_lengths": torch.tensor([len(e.prompt()) for e in examples], dtype=torch.int32),
            "middle_lengths": torch.tensor([len(e.middle) for e in examples], dtype=torch.int32),
            "kinds": [e.kind for e in examples]}


def unpack(packed: dict, suffix_id: int, prefix_id: int) -> list[Example]:
    ids = packed["ids"].to(torch.int32).tolist()
    examples, at = [], 0
    for prompt_length, middle_length, kind in zip(packed["prompt_lengths"].tolist(), packed["middle_lengths"].tolist(),
                                                  packed["kinds"], strict=True):
        prompt, middle = ids[at:at + prompt_length], ids[at + prompt_length:at + prompt_length + middle_length]
        examples.append(split_prompt(prompt, middle, kind, suffix_id, prefix_id))
        at += prompt_length + middle_length
    return examples


def make_shard(path: Path, count: int, work_dir: Path, cfg: TrainConfig, log: Log) -> None:
    """`count` training examples and the held-out ones, made from this machine's corpus exactly as a run would."""
    train_files, held_out, tokenizer, manifest = prepare(work_dir, cfg, log)
    fmt = PromptFormat("fim", dict(modelzoo.SPECIAL_TOKENS))
    canvas = cfg.canvas_length or modelzoo.PRESETS[cfg.preset].canvas_length
    stream = ExampleStream(train_files, tokenizer, fmt, cfg, canvas)
    examples: list[Example] = []
    step = 0
    while len(examples) < count:
        examples += stream._fill(step)
        step += 1
    evaluation = ExampleStream(held_out, tokenizer, fmt, TrainConfig(**{**asdict(cfg), "seed": 12345}), canvas)
    held = evaluation._fill(0)[: cfg.eval_examples]
    torch.save({"version": SHARD_VERSION, "canvas_length": canvas, "manifest": manifest,
                "train": pack(examples[:count]), "held_out": pack(held)}, path)
    log(f"shard: {count:,} training and {len(held)} held-out examples in {path} "
        f"({path.stat().st_size / 1e6:.1f} MB)")


class ShardStream:
    """`ExampleStream` over a shard's ready examples: random draws, grouped by prompt length, deterministic in
    (seed, step)."""

    def __init__(self, examples: list[Example], tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig, canvas: int):
        self.examples, self.tokenizer, self.cfg, self.canvas = examples, tokenizer, cfg, canvas
        self.pool: list[Example] = []

    def batch(self, step: int) -> Batch:
        if len(self.pool) < self.cfg.batch_size:
            rng = random.Random(self.cfg.seed * 1_000_003 + step)
            drawn = sorted((copy.copy(e) for e in rng.choices(self.examples, k=self.cfg.batch_size * 8)),
                           key=lambda e: len(e.prompt()))
            batches = [drawn[i:i + self.cfg.batch_size] for i in range(0, len(drawn), self.cfg.batch_size)]
            rng.shuffle(batches)
            self.pool = [e for b in batches for e in b]
        examples, self.pool = self.pool[: self.cfg.batch_size], self.pool[self.cfg.batch_size:]
        return collate(examples, self.canvas, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id,
                       self.cfg.pad_weight)


def data(work_dir: Path, cfg: TrainConfig, canvas: int, log: Log) -> tuple[ExampleStream | ShardStream, list[Batch],
                                                                           PreTrainedTokenizerBase, dict, str]:
    """The training stream, the held-out batches, the tokenizer, the manifest and a line for the log: from the
    corpus on this machine, or from `cfg.shard`."""
    fmt = PromptFormat("fim", dict(modelzoo.SPECIAL_TOKENS))
    if not cfg.shard:
        train_files, held_out, tokenizer, manifest = prepare(work_dir, cfg, log)
        return (ExampleStream(train_files, tokenizer, fmt, cfg, canvas),
                held_out_batches(held_out, tokenizer, fmt, cfg, canvas), tokenizer, manifest,
                f"{len(train_files)} training files, {len(held_out)} held out")
    shard = torch.load(cfg.shard, weights_only=False)
    assert shard["version"] == SHARD_VERSION and shard["canvas_length"] == canvas, "a shard of another kind"
    shard_tokenizer = prepare_tokenizer(work_dir, cfg, log)
    assert shard_tokenizer is not None, "training on a shard needs the shipped model's tokenizer (--resume-from)"
    tokenizer = shard_tokenizer
    suffix_id, prefix_id = (token_id(tokenizer, modelzoo.SPECIAL_TOKENS[name]) for name in ("suffix", "prefix"))
    examples, held = unpack(shard["train"], suffix_id, prefix_id), unpack(shard["held_out"], suffix_id, prefix_id)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    held_batches = [collate(held[i:i + 8], canvas, pad, eos, cfg.pad_weight) for i in range(0, len(held), 8)]
    return (ShardStream(examples, tokenizer, cfg, canvas), held_batches, tokenizer, shard["manifest"],
            f"{len(examples):,} shard examples ({cfg.shard}), {len(held)} held out")


# ---------------------------------------------------------------------------------------------------------------
# The loss


def lm_logits(model: DiffusionGemmaForBlockDiffusion, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head with Gemma's final soft-capping, as `DiffusionGemmaForBlockDiffusion.forward` applies it."""
    logits = model.lm_head(hidden).float()
    cap = model.final_logit_softcapping
    return torch.tanh(logits / cap) * cap if cap else logits


def corrupt(canvas: torch.Tensor, vocab_size: int, t_eps: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform-token noise: each position is replaced by a random token with probability t ~ U(eps, 1)."""
    rows = canvas.shape[0]
    t = torch.rand(rows, 1, generator=generator, device=canvas.device) * (1 - t_eps) + t_eps
    replace = torch.rand(canvas.shape, generator=generator, device=canvas.device) < t
    noise = torch.randint(0, vocab_size, canvas.shape, generator=generator, device=canvas.device)
    return torch.where(replace, noise, canvas)


def training_loss(
    model: DiffusionGemmaForBlockDiffusion, batch: Batch, cfg: TrainConfig, generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    text_config = model.config.get_text_config()
    vocab = text_config.vocab_size
    batch_size, prompt_length = batch.prompt_ids.shape
    canvas_length = batch.canvas_ids.shape[1]
    repeats = cfg.canvases_per_prompt
    # 1. Encoder over the prompt: the KV cache for the decoder, and next-token loss on the prompt.
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    positions = torch.arange(prompt_length, device=batch.prompt_ids.device).unsqueeze(0).expand(batch_size, -1)
    encoded = model.model.encoder(input_ids=batch.prompt_ids, past_key_values=cache, position_ids=positions)
    prompt_logits = lm_logits(model, encoded.last_hidden_state)
    # 2. Decoder over `repeats` noisy copies of each canvas, sharing the prompt's cache.
    cache.batch_repeat_interleave(repeats)
    clean = batch.canvas_ids.repeat_interleave(repeats, 0)
    weights = batch.canvas_weights.repeat_interleave(repeats, 0)
    noisy = corrupt(clean, vocab, cfg.t_eps, generator)
    canvas_positions = torch.arange(prompt_length, prompt_length + canvas_length, device=clean.device)
    canvas_positions = canvas_positions.unsqueeze(0).expand(clean.shape[0], -1)

    def decode(self_conditioning: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        out = model(decoder_input_ids=noisy, past_key_values=cache, decoder_position_ids=canvas_positions,
                    self_conditioning_logits=self_conditioning, self_conditioning_mask=mask)
        return out.logits

    # 3. Self-conditioning (two-pass): the first pass is not trained, as in the recipe.
    with torch.no_grad():
        first = decode(None, None)
    use_sc = torch.rand(clean.shape[0], generator=generator, device=clean.device) < cfg.self_conditioning_prob
    canvas_logits = decode(first.detach(), use_sc)
    canvas_ce = F.cross_entropy(canvas_logits.reshape(-1, vocab), clean.reshape(-1), reduction="none")
    canvas_loss = (canvas_ce * weights.reshape(-1)).sum() / weights.sum()
    # 4. Encoder continues over middle + EOS from the cache (token-by-token decoding's view).
    cache.batch_select_indices(torch.arange(0, clean.shape[0], repeats, device=clean.device))
    width = batch.continuation_ids.shape[1]
    continuation_positions = torch.arange(prompt_length, prompt_length + width, device=clean.device)
    continued = model.model.encoder(
        input_ids=batch.continuation_ids, past_key_values=cache,
        position_ids=continuation_positions.unsqueeze(0).expand(batch_size, -1),
    )
    continuation_logits = lm_logits(model, continued.last_hidden_state)
    # Targets: prompt[1:], then the first continuation token from the last prompt position, then the rest.
    ar_logits = torch.cat([prompt_logits, continuation_logits[:, :-1]], dim=1)
    ar_targets = torch.cat([batch.prompt_ids[:, 1:], batch.continuation_ids], dim=1)
    ar_mask = torch.cat([torch.ones_like(batch.prompt_ids[:, 1:], dtype=torch.bool), batch.continuation_mask], 1)
    ar_ce = F.cross_entropy(ar_logits.reshape(-1, vocab), ar_targets.reshape(-1), reduction="none")
    ar_loss = (ar_ce * ar_mask.reshape(-1)).sum() / ar_mask.sum()
    middle_mask = weights == 1.0
    canvas_ce, ar_ce = canvas_ce.detach(), ar_ce.detach()
    stats = {
        "canvas": canvas_loss.item(), "ar": ar_loss.item(),
        "canvas_middle": ((canvas_ce * middle_mask.reshape(-1)).sum() / middle_mask.sum()).item(),
        "ar_middle": ((ar_ce.reshape(batch_size, -1)[:, prompt_length - 1:] * batch.continuation_mask).sum()
                      / batch.continuation_mask.sum()).item(),
        "tokens": batch_size * (prompt_length + width) + clean.numel(),
        "loss_tokens": int(ar_mask.sum()) + clean.numel(),
    }
    return canvas_loss + cfg.ar_weight * ar_loss, stats


# ---------------------------------------------------------------------------------------------------------------
# Data preparation (cached in the work dir)


def prepare(work_dir: Path, cfg: TrainConfig, log: Log) -> tuple[list[corpus.SourceFile], list[corpus.SourceFile],
                                                             PreTrainedTokenizerBase, dict]:
    files_path, manifest_path, tokenizer_dir = work_dir / "corpus.jsonl.gz", work_dir / "MANIFEST.json", \
        work_dir / "tokenizer"
    tokenizer = prepare_tokenizer(work_dir, cfg, log)
    if files_path.is_file() and manifest_path.is_file() and tokenizer is not None:
        files = corpus.load_files(files_path)
        manifest = json.loads(manifest_path.read_text())
        log(f"reusing corpus ({len(files)} files) and tokenizer from {work_dir}")
    else:
        built = corpus.build(work_dir / "packages", max_package_bytes=cfg.max_package_bytes or None, log=log)
        files, entries = built.files, built.entries
        if tokenizer is None:
            log(f"training the tokenizer (vocab {cfg.vocab_size})")
            # The stdlib whole plus a third of the rest: BPE merges settle long before the corpus ends.
            sample = [f.text for i, f in enumerate(files) if f.package == corpus.STDLIB or i % 3 == 0]
            tokenizer = modelzoo.train_tokenizer(sample, cfg.vocab_size)
            tokenizer.save_pretrained(tokenizer_dir)
        corpus.count_tokens(files, entries, tokenizer)
        manifest = built.manifest()
        corpus.save_files(files, files_path)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    train_files = [f for f in files if not is_held_out(f)]
    held_out = [f for f in files if is_held_out(f)] or train_files[:2]  # a toy corpus may hold none out
    return train_files, held_out, tokenizer, manifest


def prepare_tokenizer(work_dir: Path, cfg: TrainConfig, log: Log) -> PreTrainedTokenizerBase | None:
    """The run's tokenizer: the work dir's, else the shipped model's (never retrained: its weights are tied to
    the ids); None when there is neither and one must be trained from the corpus."""
    tokenizer_dir = work_dir / "tokenizer"
    if (tokenizer_dir / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(tokenizer_dir)
    shipped = shipped_model(cfg)
    if shipped is None:
        return None
    tokenizer = AutoTokenizer.from_pretrained(shipped)
    tokenizer.save_pretrained(tokenizer_dir)
    log(f"tokenizer: the shipped model's, from {shipped}")
    return tokenizer


def shipped_model(cfg: TrainConfig) -> Path | None:
    """The model directory a run with no checkpoint goes on from, if there is one."""
    if not cfg.resume_from:
        return None
    directory = EMBEDDED_MODEL_DIR if cfg.resume_from == options.EMBEDDED else Path(cfg.resume_from).expanduser()
    if not all((directory / name).is_file() for name in ("dglsp.json", "tokenizer.json")):
        return None
    return directory


def is_held_out(file: corpus.SourceFile) -> bool:
    import zlib

    return zlib.crc32(f"{file.package}/{file.path}".encode()) % HELD_OUT_EVERY == 0


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and export


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState,
                    cfg: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": asdict(state),
                "config": asdict(cfg)}, tmp)
    os.replace(tmp, path)  # atomic: a run killed mid-save leaves the previous checkpoint intact


def export_model(model: DiffusionGemmaForBlockDiffusion, tokenizer: PreTrainedTokenizerBase, out_dir: Path,
                 manifest: dict, state: TrainState, cfg: TrainConfig, command: str) -> Path:
    """Write a loadable model directory with fp16 weights, the corpus manifest and a model card."""
    frozen = copy.deepcopy(model).eval()
    biggest = max(p.detach().abs().max().item() for p in frozen.parameters())
    dtype = torch.float16 if biggest < 60_000 else torch.bfloat16  # fp16 keeps more mantissa when it fits
    if out_dir.exists():
        shutil.rmtree(out_dir)
    sampler = SamplerSettings(canvas_length=int(model.config.canvas_length or 32), max_steps=cfg.serve_steps,
                              verify=cfg.serve_verify, verify_steps=cfg.serve_verify_steps,
                              settle_steps=cfg.serve_settle_steps, t_max=cfg.serve_t_max, t_min=cfg.serve_t_min,
                              entropy_bound=cfg.serve_entropy_bound)
    training = {
        "preset": cfg.preset, "steps": state.step, "tokens_seen": state.tokens_seen,
        "loss_tokens_seen": state.loss_tokens_seen, "train_hours": round(state.train_seconds / 3600, 3),
        "cpu_hours": round(state.cpu_seconds / 3600, 5), "log": state.stretches,
        "best_held_out_loss": state.best_held_out if math.isfinite(state.best_held_out) else None,
        "last": state.history[-1] if state.history else None,
        "device": cfg.device, "threads": cfg.threads, "weights_dtype": str(dtype).removeprefix("torch."),
        "compute": str(autocast_dtype(cfg, next(model.parameters()).device) or torch.float32).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.parameters()), "command": command, "config": asdict(cfg),
    }
    modelzoo.save_model_dir(frozen, tokenizer, out_dir, sampler=sampler, dtype=dtype, snippets=cfg.snippet_prob > 0,
                            extra={"training": training,
                                   "postprocess": {"min_confidence": cfg.serve_min_confidence}})
    (out_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    write_model_card(out_dir)
    return out_dir


def write_model_card(model_dir: Path) -> None:
    """MODEL_CARD.md from what the directory records: dglsp.json (training), MANIFEST.json, eval.json."""
    meta = json.loads((model_dir / "dglsp.json").read_text())
    training = meta.get("training", {})
    manifest = json.loads((model_dir / "MANIFEST.json").read_text())
    evaluation = json.loads((model_dir / "eval.json").read_text()) if (model_dir / "eval.json").is_file() else None
    totals = manifest["totals"]
    licenses = sorted({p["license"] for p in manifest["packages"]})
    size_mb = sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file()) / 1e6
    lines = [
        "# dglsp embedded model",
        "",
        "A small DiffusionGemma (`DiffusionGemmaForBlockDiffusion`) trained from scratch for code infilling,",
        "in dglsp's FIM format: the encoder reads `<bos> <|file|> path\\n <|suffix|> SUFFIX <|prefix|> PREFIX",
        "<|middle|>`; the canvas holds the middle, then `<eos>`, then `<pad>`.",
        "",
        "## Training",
        "",
        f"- Parameters: {training.get('parameters', 0):,} (preset `{training.get('preset')}`), weights stored as"
        f" {training.get('weights_dtype')}; directory size {size_mb:.1f} MB.",
        f"- Steps: {training.get('steps')}, tokens through the model: {training.get('tokens_seen', 0):,}"
        f" ({training.get('loss_tokens_seen', 0):,} carried a loss), training time"
        f" {training.get('train_hours')} h on `{training.get('device')}` ({training.get('threads')} thread(s)),"
        f" {_tokens_per_second(training):,.0f} tokens/s over all runs; the last run computed in"
        f" {training.get('compute') or training.get('config', {}).get('precision', 'float32')}.",
        f"- Learning rate: {_schedule(training.get('config', {}))}.",
        f"- Best held-out loss (canvas + AR): {training.get('best_held_out_loss')}; last eval: {training.get('last')}.",
        "- Objective: uniform-token corruption of the canvas (t ~ U(eps, 1)), weighted canvas cross-entropy"
        " (middle and EOS 1, padding down-weighted), two-pass self-conditioning (p = 0.5), and the encoder's"
        " next-token loss on the whole prompt and the clean middle.",
        f"- Command: `{training.get('command')}`",
        "",
        "### Training log",
        "",
        "One row per stretch of training (CPU-hours and tokens are totals at the stretch's end; rows marked ~ were",
        "reconstructed from session notes, their CPU-hours counting both cores busy throughout).",
        "`dglsp eval --plot-training PNG` draws it: held-out loss and pass@1 against CPU-hours.",
        "",
        *training_log_table(training.get("log", [])),
        *extra_sections(model_dir),
        "",
        "## Data",
        "",
        f"- {totals['files']:,} Python files, {totals['bytes']:,} bytes, {totals['tokens']:,} tokens from"
        f" {len(manifest['packages'])} packages (`MANIFEST.json`: package, version, licence, files, bytes, tokens).",
        f"- Licences of the sources: {', '.join(licenses)}. Only permissive licences were admitted; the model is"
        " released under Apache-2.0, like dglsp.",
        f"- Filters: {json.dumps(manifest.get('filters', {}))}",
        "",
        "## Evaluation",
        "",
    ]
    if evaluation:
        lines += render_eval_table(evaluation)
        lines += ["", "## Status against the targets", ""] + status_lines(evaluation)
    else:
        lines.append("Not evaluated yet: run `dglsp eval --model DIR --record`.")
    (model_dir / "MODEL_CARD.md").write_text("\n".join(lines) + "\n")


def training_log_table(rows: list[dict]) -> list[str]:
    lines = ["| stretch | steps | tokens seen | CPU-hours | held-out loss | single-line pass@1 (diffusion / "
             "token-by-token / verified) | multi-line pass@1 |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        scores = row.get("pass_at_1", {})
        mark = "~" if row.get("cpu_hours_estimated") else ""
        loss = row.get("held_out_loss")
        lines.append(f"| {row.get('date')} | {row.get('from_step', 0)}–{row.get('steps')} | "
                     f"{row.get('tokens_seen', 0):,} | {mark}{row.get('cpu_hours', 0):.2f} | "
                     f"{'-' if loss is None else f'{loss:.4f}'} | {_scores(scores, 'single-line')} | "
                     f"{_scores(scores, 'multi-line')} |")
    notes = [f"- {row.get('date')}, steps {row.get('from_step', 0)}–{row.get('steps')}: {prefix}{row[key]}"
             for row in rows for key, prefix in (("held_out_metric", "held-out loss: "), ("held_out_note", ""),
                                                 ("note", "")) if row.get(key)]
    return lines + ([""] + notes if notes else [])


def _scores(scores: dict, benchmark: str) -> str:
    found = scores.get(benchmark, {})
    return " / ".join(f"{found[d]:.2f}" if d in found else "-" for d in ("diffusion", "autoregressive", "verified"))


def extra_sections(model_dir: Path) -> list[str]:
    """Hand-written sections kept beside the generated card (`MODEL_CARD.extra.md`: comparisons, calibration)."""
    extra = model_dir / "MODEL_CARD.extra.md"
    return ["", *extra.read_text().rstrip().splitlines()] if extra.is_file() else []


def record_eval(model_dir: Path, result: dict) -> None:
    """Put an eval's pass@1 into the training log row of the weights it evaluated (dglsp.json)."""
    meta_file = model_dir / "dglsp.json"
    meta = json.loads(meta_file.read_text())
    training = meta.get("training", {})
    rows = training.get("log") or []
    if not rows or rows[-1].get("steps") != training.get("steps"):
        return
    scores = rows[-1].setdefault("pass_at_1", {})
    for row in result["rows"]:
        if "+" not in row["decoding"]:
            scores.setdefault(row["benchmark"], {})[row["decoding"]] = round(row["pass_at_1"], 4)
    meta_file.write_text(json.dumps(meta, indent=2) + "\n")


def _schedule(config: dict) -> str:
    """The last run's learning-rate schedule in words (earlier runs held the peak rate)."""
    peak = config.get("lr", TrainConfig.lr)
    steps, cooldown = config.get("max_steps", 0), config.get("cooldown_steps", 0)
    words = f"AdamW, {config.get('warmup_steps', TrainConfig.warmup_steps)} warmup steps, then {peak:g}"
    if not (steps and cooldown):
        return words + " constant"
    floor = peak * config.get("min_lr_ratio", TrainConfig.min_lr_ratio)
    start = cooldown_start(TrainConfig(max_steps=steps, cooldown_steps=cooldown))
    return words + f" until step {start}, then linearly down to {floor:g} at step {steps}"


def _tokens_per_second(training: dict) -> float:
    hours = training.get("train_hours") or 0
    return training.get("tokens_seen", 0) / (hours * 3600) if hours else 0.0


def render_eval_table(evaluation: dict) -> list[str]:
    lines = [f"HumanEval-Infilling, command: `{evaluation.get('command')}` on {evaluation.get('device')}.", "",
             "| decoding | benchmark | problems | pass@1 | exact match | forward passes | ms / completion |",
             "|---|---|---|---|---|---|---|"]
    for row in evaluation["rows"]:
        lines.append(f"| {row['decoding']} | {row['benchmark']} | {row['problems']} | {row['pass_at_1']:.3f} |"
                     f" {row['exact_match']:.3f} | {row['forward_passes']:.1f} | {row['ms_per_completion']:.0f} |")
    if evaluation.get("sampler"):
        sampler = evaluation["sampler"]
        lines += ["", f"Diffusion decoding: {sampler['max_steps']} steps at most per {sampler['canvas_length']}-token"
                      f" canvas, entropy bound {sampler['entropy_bound']}, temperature {sampler['t_max']} to"
                      f" {sampler['t_min']} (the model's serving default, `sampler` in `dglsp.json`)."]
    if evaluation.get("blank_floor") is not None:
        lines += ["", f"Blank-middle floor (single-line, same problems): {evaluation['blank_floor']:.3f}."]
    if evaluation.get("cold_latency"):
        latency = evaluation["cold_latency"]
        lines += ["", f"Cold completion (fresh cache, {latency['prompt_tokens']}-token context, one canvas):"
                      f" {latency['ms']} ms, {latency['steps']} denoising steps."]
    return lines


def status_lines(evaluation: dict) -> list[str]:
    """Plain statements computed from eval.json: what the numbers do and do not show."""
    rows = {(r["decoding"], r["benchmark"]): r for r in evaluation["rows"]}
    lines = []
    floor = evaluation.get("blank_floor")
    single = [r for (d, b), r in rows.items() if b == "single-line" and "+" not in d]
    if single and floor is not None:
        best = max(single, key=lambda r: r["pass_at_1"])
        verdict = "clearly above" if best["pass_at_1"] >= max(2 * floor, floor + 0.05) else "not clearly above"
        lines.append(f"- Single-line pass@1: best {best['pass_at_1']:.3f} ({best['decoding']}, {best['problems']}"
                     f" problems) is {verdict} the blank-line floor {floor:.3f}; the goal is 0.15.")
    for benchmark in ("single-line", "multi-line"):
        diffusion, autoregressive = rows.get(("diffusion", benchmark)), rows.get(("autoregressive", benchmark))
        if diffusion and autoregressive and autoregressive["forward_passes"]:
            ratio = diffusion["forward_passes"] / autoregressive["forward_passes"]
            lines.append(f"- {benchmark}: diffusion uses {ratio:.2f}x the forward passes of token-by-token decoding"
                         f" (target <= 0.25){'' if ratio <= 1 / 4 else ': not met'}.")
    latency = evaluation.get("cold_latency")
    if evaluation.get("notes"):
        lines.append(f"- Note: {evaluation['notes']}")
    if latency:
        load = evaluation.get("load_average")
        lines.append(f"- Cold ~1k-token completion: {latency['ms']} ms (target <= 200 ms)"
                     f"{'' if latency['ms'] <= 200 else ': not met'}"
                     f"{f', measured at load average {load[0]}' if load else ''}.")
    return lines


def ship(export_dir: Path, ship_dir: Path) -> None:
    """Replace `ship_dir` with a copy of the export, swapping whole directories.

    A server starting meanwhile sees the old directory or the new one, never half of each.
    """
    staging = ship_dir.with_name(ship_dir.name + ".new")
    retired = ship_dir.with_name(ship_dir.name + ".old")
    for leftover in (staging, retired):
        if leftover.exists():
            shutil.rmtree(leftover)
    shutil.copytree(export_dir, staging)
    for file in staging.iterdir():
        file.chmod(0o644)  # safetensors writes 0600; the package must be readable by whoever installs it
    if ship_dir.exists():
        ship_dir.rename(retired)
    staging.rename(ship_dir)
    if retired.exists():
        shutil.rmtree(retired)


# ---------------------------------------------------------------------------------------------------------------
# The loop


def held_out_batches(files: list[corpus.SourceFile], tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
                     cfg: TrainConfig, canvas: int) -> list[Batch]:
    eval_cfg = TrainConfig(**{**asdict(cfg), "seed": 12345, "batch_size": 8})
    stream = ExampleStream(files, tokenizer, fmt, eval_cfg, canvas)
    return [stream.batch(i) for i in range(max(1, cfg.eval_examples // 8))]


@torch.no_grad()
def held_out_loss(model: DiffusionGemmaForBlockDiffusion, batches: list[Batch], cfg: TrainConfig) -> dict[str, float]:
    device = batches[0].prompt_ids.device
    generator = torch.Generator(device=device).manual_seed(0)
    amp = autocast_dtype(cfg, device)
    totals: dict[str, float] = {}
    model.eval()
    for batch in batches:
        with autocast(amp, device):
            _, stats = training_loss(model, batch, cfg, generator)
        for key in ("canvas", "ar", "canvas_middle", "ar_middle"):
            totals[key] = totals.get(key, 0.0) + stats[key] / len(batches)
        # Unweighted canvas + AR: comparable across runs whatever their --ar-weight.
        totals["loss"] = totals.get("loss", 0.0) + (stats["canvas"] + stats["ar"]) / len(batches)
    model.train()
    return {k: round(v, 4) for k, v in totals.items()}


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `cfg.precision` on `device`, or None for plain fp32."""
    if cfg.precision == "fp32":
        return None
    if cfg.precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16_matmuls() else None


def autocast(dtype: torch.dtype | None, device: torch.device):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def cooldown_start(cfg: TrainConfig) -> int:
    """The step the decay begins at, or 0 when the run has none (constant rate after warmup)."""
    if not (cfg.cooldown_steps and cfg.max_steps):
        return 0
    return max(1, cfg.max_steps - cfg.cooldown_steps)


def learning_rate(step: int, cfg: TrainConfig, warmup_start: int = 0) -> float:
    warm = cfg.lr * min(1.0, (step - warmup_start + 1) / cfg.warmup_steps)
    start = cooldown_start(cfg)
    if not start or step < start:
        return warm
    done = min(1.0, (step - start + 1) / (cfg.max_steps - start))
    return warm * (1.0 - done * (1.0 - cfg.min_lr_ratio))


def resume_path(work_dir: Path, cfg: TrainConfig, saved_cooldown_start: int) -> Path:
    """checkpoint.pt, unless it is part-way down a decay this run does not share: then the stable phase's end."""
    stable = work_dir / "checkpoint-stable.pt"
    if saved_cooldown_start and saved_cooldown_start != cooldown_start(cfg) and stable.is_file():
        return stable
    return work_dir / "checkpoint.pt"


def to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(*(getattr(batch, f).to(device) for f in batch.__dataclass_fields__))


def train(cfg: TrainConfig, work_dir: Path, export_dir: Path, ship_dir: Path | None, command: str,
          log: Log = print, progress: bool = True) -> TrainState:
    work_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    preset = replace(modelzoo.PRESETS[cfg.preset], canvas_length=cfg.canvas_length or
                     modelzoo.PRESETS[cfg.preset].canvas_length)
    stream, held_batches, tokenizer, manifest, source = data(work_dir, cfg, preset.canvas_length, log)
    model = modelzoo.build_model(preset, len(tokenizer), seed=cfg.seed)
    model = model.to(device).train()  # type: ignore[arg-type]  # transformers' @wraps types `to` wrongly
    optimizer = make_optimizer(model, cfg)
    state = _resume(model, optimizer, work_dir, cfg, device, log)
    amp = autocast_dtype(cfg, device)
    log(f"model: preset {cfg.preset}, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{source}, {amp or torch.float32} compute on {device}")
    eval_batches = [to_device(b, device) for b in held_batches]
    if state.step and not math.isfinite(state.best_held_out):  # resumed weights: the bar an export must beat
        state.best_held_out = held_out_loss(model, eval_batches, cfg)["loss"]
        log(f"held-out loss of the resumed weights: {state.best_held_out:.4f}")
    _open_stretch(state)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + state.step)
    checkpoint = work_dir / "checkpoint.pt"
    begin = time.monotonic()
    last_checkpoint = last_export = begin
    if not export_dir.exists():  # the first export comes early, so a default model exists within minutes
        last_export = begin - max(0.0, cfg.export_minutes - 3) * 60
    bar = _progress_bar(cfg, state, progress)
    window: list[dict] = []
    stop = _stop_on_signals()
    while not _done(cfg, state, begin) and not stop:
        if (work_dir / PAUSE_FILE).exists():
            _pause(work_dir, model, optimizer, state, cfg, stop, log)
            continue
        if cooldown_start(cfg) and state.step >= cooldown_start(cfg) and not state.cooldown_start:
            save_checkpoint(work_dir / "checkpoint-stable.pt", model, optimizer, state, cfg)
            state.cooldown_start = cooldown_start(cfg)
            log(f"decay begins at step {state.step}: the stable phase is saved as checkpoint-stable.pt")
        stats = _train_step(model, optimizer, stream, cfg, state, generator, amp, device)
        window.append(stats)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(canvas=f"{stats['canvas']:.3f}", ar=f"{stats['ar']:.3f}", refresh=False)
        if state.step % 20 == 0:
            log(_window_summary(state, window))
            window = []
        if state.step % cfg.eval_every == 0:
            held = held_out_loss(model, eval_batches, cfg)
            held["step"] = state.step
            held["tokens_seen"] = state.tokens_seen
            state.history.append(held)
            log(f"held-out step {state.step}: {held}")
        now = time.monotonic()
        if now - last_checkpoint >= cfg.checkpoint_minutes * 60:
            save_checkpoint(checkpoint, model, optimizer, state, cfg)
            last_checkpoint = now
        if now - last_export >= cfg.export_minutes * 60:
            _export_and_ship(model, tokenizer, export_dir, ship_dir, manifest, state, cfg, command, eval_batches, log)
            save_checkpoint(checkpoint, model, optimizer, state, cfg)
            last_export = last_checkpoint = time.monotonic()
    if stop:
        log(f"signal {stop[0]} received: checkpointing and exporting at step {state.step}")
    save_checkpoint(checkpoint, model, optimizer, state, cfg)
    _export_and_ship(model, tokenizer, export_dir, ship_dir, manifest, state, cfg, command, eval_batches, log)
    if bar is not None:
        bar.close()
    return state


def _pause(work_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState,
           cfg: TrainConfig, stop: list[int], log: Log) -> None:
    """Checkpoint, then sleep while the pause file exists (or until a signal): the cores are free meanwhile."""
    save_checkpoint(work_dir / "checkpoint.pt", model, optimizer, state, cfg)
    log(f"paused at step {state.step} ({work_dir / PAUSE_FILE} exists)")
    while (work_dir / PAUSE_FILE).exists() and not stop:
        time.sleep(2)
    log(f"resumed at step {state.step}")


def _open_stretch(state: TrainState) -> None:
    """A row of the training log for this run, or the day's row when the same day's run goes on.

    A row `dglsp eval --record` has scored is closed: its pass@1 belongs to the weights at its end.
    """
    today = time.strftime("%Y-%m-%d")
    last = state.stretches[-1] if state.stretches else {}
    if last.get("date") != today or "pass_at_1" in last:
        state.stretches.append({"date": today, "from_step": state.step})
    _update_stretch(state)


def _update_stretch(state: TrainState) -> None:
    state.stretches[-1].update({
        "steps": state.step, "tokens_seen": state.tokens_seen, "cpu_hours": round(state.cpu_seconds / 3600, 3),
        "held_out_loss": state.best_held_out if math.isfinite(state.best_held_out) else None,
    })


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or Muon for the hidden weight matrices with AdamW for the rest (embeddings, norms, biases)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 betas=(0.9, cfg.adam_beta2))
    # The embedding (tied to the LM head) is a lookup table, not a transform: it stays with AdamW.
    named = list(model.named_parameters())
    matrices = [p for name, p in named if p.ndim == 2 and "embed" not in name and "lm_head" not in name]
    others = [p for name, p in named if not (p.ndim == 2 and "embed" not in name and "lm_head" not in name)]
    return _Combined([
        # match_rms_adamw scales Muon's update to AdamW's size, so the same learning rate serves both.
        torch.optim.Muon(matrices, lr=cfg.lr, weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw"),
        torch.optim.AdamW(others, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, cfg.adam_beta2)),
    ])


class _Combined(torch.optim.Optimizer):
    """Several optimizers over disjoint parameters, stepped and checkpointed as one."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers
        self.param_groups = [group for optimizer in optimizers for group in optimizer.param_groups]
        self.defaults: dict = {}

    def step(self, closure=None):
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for optimizer, saved in zip(self.optimizers, state_dict["optimizers"], strict=True):
            optimizer.load_state_dict(saved)


def _resume(model: torch.nn.Module, optimizer: torch.optim.Optimizer, work_dir: Path, cfg: TrainConfig,
            device: torch.device, log: Log) -> TrainState:
    """Load the run's checkpoint into `model` and `optimizer` (a fresh state when there is none)."""
    checkpoint = work_dir / "checkpoint.pt"
    state = TrainState()
    shipped = shipped_model(cfg)
    if not checkpoint.is_file() and shipped is not None:
        state = _resume_from_shipped(model, shipped, cfg, log)
    elif checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        source = resume_path(work_dir, cfg, saved["state"].get("cooldown_start", 0))
        if source != checkpoint:
            log(f"{checkpoint} is part-way down another decay: going on from {source} instead")
            spent = saved["state"]  # the abandoned decay's time was spent all the same: the card counts it
            saved = torch.load(source, map_location=device, weights_only=False)
            saved["state"].update(train_seconds=spent["train_seconds"], cpu_seconds=spent["cpu_seconds"])
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for group in optimizer.param_groups:  # this run's settings, not the checkpoint's (the rate: the schedule)
            group["weight_decay"] = cfg.weight_decay
            if "betas" in group:
                group["betas"] = (group["betas"][0], cfg.adam_beta2)
        state = TrainState(**saved["state"])
        log(f"resumed from {source} at step {state.step} ({state.tokens_seen:,} tokens seen)")
    if cooldown_start(cfg):
        log(f"learning rate decays from step {cooldown_start(cfg)} to {cfg.max_steps}, "
            f"down to {cfg.lr * cfg.min_lr_ratio:g}")
    return state


def _resume_from_shipped(model: torch.nn.Module, shipped: Path, cfg: TrainConfig, log: Log) -> TrainState:
    """Weights and counters of a shipped model directory; the optimizer starts fresh, so the rate warms up again."""
    training = json.loads((shipped / "dglsp.json").read_text()).get("training") or {}
    if training.get("preset") != cfg.preset:
        log(f"{shipped} holds preset {training.get('preset')!r}, not {cfg.preset!r}: starting from random weights")
        return TrainState()
    loaded = DiffusionGemmaForBlockDiffusion.from_pretrained(shipped, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    step = int(training.get("steps", 0))
    # Models shipped before CPU time was counted record wall hours only: count every thread busy throughout.
    cpu_hours = training.get("cpu_hours", training.get("train_hours", 0.0) * max(1, training.get("threads") or 1))
    state = TrainState(
        step=step, tokens_seen=int(training.get("tokens_seen", 0)),
        loss_tokens_seen=int(training.get("loss_tokens_seen", 0)),
        train_seconds=float(training.get("train_hours", 0.0)) * 3600, cpu_seconds=float(cpu_hours) * 3600,
        history=[training["last"]] if training.get("last") else [], warmup_start=step,
        stretches=list(training.get("log", [])),
    )
    log(f"resumed from the shipped model {shipped} at step {step} ({state.tokens_seen:,} tokens seen); "
        f"fresh optimizer state, {cfg.warmup_steps} warm-up steps")
    return state


def _train_step(model: DiffusionGemmaForBlockDiffusion, optimizer: torch.optim.Optimizer,
                stream: ExampleStream | ShardStream,
                cfg: TrainConfig, state: TrainState, generator: torch.Generator, amp: torch.dtype | None,
                device: torch.device) -> dict:
    """One optimizer step at the schedule's rate (its batch's making counted in the time); advances `state`
    and returns the step's losses."""
    step_begin, cpu_begin = time.monotonic(), time.process_time()
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(state.step, cfg, state.warmup_start)
    batch = to_device(stream.batch(state.step), device)
    with autocast(amp, device):
        loss, stats = training_loss(model, batch, cfg, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    state.step += 1
    state.tokens_seen += int(stats["tokens"])
    state.loss_tokens_seen += int(stats["loss_tokens"])
    state.train_seconds += time.monotonic() - step_begin
    state.cpu_seconds += time.process_time() - cpu_begin
    return stats


def _export_and_ship(model: DiffusionGemmaForBlockDiffusion, tokenizer: PreTrainedTokenizerBase, export_dir: Path,
                     ship_dir: Path | None, manifest: dict, state: TrainState, cfg: TrainConfig, command: str,
                     eval_batches: list[Batch], log: Log) -> None:
    held = held_out_loss(model, eval_batches, cfg)
    improved = held["loss"] < state.best_held_out
    if improved:
        state.best_held_out = held["loss"]
    _update_stretch(state)
    export_model(model, tokenizer, export_dir, manifest, state, cfg, command)
    log(f"exported step {state.step} to {export_dir} (held-out {held['loss']:.4f})")
    if ship_dir is not None and improved:
        ship(export_dir, ship_dir)
        log(f"shipped step {state.step} to {ship_dir}")


def _stop_on_signals() -> list[int]:
    """SIGTERM/SIGINT end the loop after the current step, so the run checkpoints and exports before exiting."""
    import signal
    import threading

    received: list[int] = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, frame: received.append(number))
    return received


def _done(cfg: TrainConfig, state: TrainState, begin: float) -> bool:
    if cfg.max_steps and state.step >= cfg.max_steps:
        return True
    if cfg.minutes and time.monotonic() - begin >= cfg.minutes * 60:
        return True
    return False  # neither bound: train until stopped (the background run), checkpointing as it goes


def _window_summary(state: TrainState, window: list[dict]) -> str:
    mean = {k: sum(w[k] for w in window) / len(window) for k in ("canvas", "ar", "canvas_middle", "ar_middle")}
    rate = state.tokens_seen / state.train_seconds if state.train_seconds else 0.0
    return (f"step {state.step} tokens {state.tokens_seen:,} canvas {mean['canvas']:.3f} "
            f"(middle {mean['canvas_middle']:.3f}) ar {mean['ar']:.3f} (middle {mean['ar_middle']:.3f}) "
            f"{rate:,.0f} tok/s")


def _progress_bar(cfg: TrainConfig, state: TrainState, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm  # a dependency of transformers

    # Without --max-steps the bar has no end: it counts steps and shows the rate.
    return tqdm(total=cfg.max_steps or None, initial=state.step, desc="train", unit="step",
                mininterval=5 if sys.stderr.isatty() else 60)


# ---------------------------------------------------------------------------------------------------------------
# Command line


def run(args: argparse.Namespace) -> int:
    """`dglsp train` (options: `dglsp.tools.options.add_train_arguments`)."""
    cfg = options.train_config(args)
    work_dir = args.work_dir.expanduser()
    export_dir = (args.export_dir or work_dir / "export").expanduser()
    command = "dglsp " + " ".join(sys.argv[1:])
    log_file = work_dir / "train.log"
    work_dir.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        print(line, flush=True)
        with log_file.open("a") as handle:
            handle.write(line + "\n")

    if args.make_shard:
        make_shard(args.make_shard, args.shard_examples, work_dir, cfg, log)
        return 0
    state = train(cfg, work_dir, export_dir, args.ship_to, command, log=log, progress=not args.no_progress)
    log(f"done: step {state.step}, {state.tokens_seen:,} tokens seen, export in {export_dir}")
    return 0

