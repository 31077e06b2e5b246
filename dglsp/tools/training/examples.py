"""Training examples: FIM prompts built exactly as the server builds them, each with the middle to fill.

An `Example` is the prompt ids as served (`PromptBuilder`: the same trimming, the same snippets of sibling files)
and the middle ids; `collate` makes a `Batch` of equal-length prompts and canvases (middle, EOS, padding).
The examples come from this machine's corpus (`ExampleStream`, after `prepare` builds or reuses the corpus and
tokenizer in the work dir) or from a pre-tokenized shard made here for a machine with neither
(`make_shard`, `ShardStream`). Both streams are deterministic in (seed, step), so a resumed run goes on where
it stopped; one file in ~100, chosen by a stable hash of its path, is held out.
"""

from __future__ import annotations

import copy
import json
import random
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from dglsp.completion.prompt import CursorContext, PromptBuilder, PromptFormat
from dglsp.completion.snippets import OpenDocument, pick_snippets
from dglsp.config import ContextSettings
from dglsp.model.loading import EMBEDDED_MODEL_DIR
from dglsp.tools import corpus, modelzoo, options
from dglsp.tools.options import TrainConfig

if TYPE_CHECKING:
    from dglsp.tools.training.edit_examples import EditMixer

# What an editor asks for, most often first: the line after the indent an editor just inserted (cursor after
# the indent, the suffix opens with the newline), a whole line from its start, the rest of a line, a block,
# a random span. The first two are whole single lines: more than half of all middles.
MIDDLE_KINDS = ("line_after_indent", "whole_line", "rest_of_line", "block", "span")
MIDDLE_KIND_WEIGHTS = (0.35, 0.2, 0.2, 0.15, 0.1)
Log = Callable[[str], None]  # where a training run's progress lines go
HELD_OUT_EVERY = 97  # one file in ~100 (by a stable hash of its path) is held out
SIBLINGS_PER_EXAMPLE = 4  # other files of the package an example's snippets may come from
SNIPPETS_PER_EXAMPLE = 2
SNIPPET_LINES = 8  # shorter chunks than the server's 12: two fit the training prompt's smaller snippet budget
MAX_SIBLING_CHARS = 50_000  # scanning larger files for snippets costs more than it teaches


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
    """Batches of examples grouped by prompt length, deterministic in (seed, step) so a resumed run goes on.
    With `edits` and `cfg.edit_prob` > 0, each drawn example is a next edit with that probability
    (`edit_examples.py`); otherwise the stream draws exactly what it drew before next edits existed."""

    def __init__(self, files: list[corpus.SourceFile], tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
                 cfg: TrainConfig, canvas: int, edits: EditMixer | None = None):
        self.files = files
        self.edits = edits if cfg.edit_prob > 0 else None
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
        if self.edits is not None and rng.random() < self.cfg.edit_prob:
            edit = self.edits.example(rng)
            if edit is not None:
                return edit
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
    stream = ExampleStream(train_files, tokenizer, fmt, cfg, canvas, edit_mixer(cfg, tokenizer, fmt, canvas, log))
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
        return (ExampleStream(train_files, tokenizer, fmt, cfg, canvas, edit_mixer(cfg, tokenizer, fmt, canvas, log)),
                held_out_batches(held_out, tokenizer, fmt, cfg, canvas), tokenizer, manifest,
                f"{len(train_files)} training files, {len(held_out)} held out")
    if cfg.edit_prob > 0:
        log("--edits/--edit-prob: a shard's examples were fixed when it was made (make it with them); ignored")
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


def edit_mixer(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, canvas: int,
               log: Log) -> EditMixer | None:
    """The next edits a run mixes in (`--edits`, `--edit-prob`), or None: imported only when asked for."""
    if cfg.edit_prob <= 0:
        return None
    from dglsp.tools.training.edit_examples import edit_mixer as load

    return load(cfg, tokenizer, fmt, canvas, log)


def is_held_out(file: corpus.SourceFile) -> bool:
    return zlib.crc32(f"{file.package}/{file.path}".encode()) % HELD_OUT_EVERY == 0


def held_out_batches(files: list[corpus.SourceFile], tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
                     cfg: TrainConfig, canvas: int) -> list[Batch]:
    eval_cfg = TrainConfig(**{**asdict(cfg), "seed": 12345, "batch_size": 8})
    stream = ExampleStream(files, tokenizer, fmt, eval_cfg, canvas)
    return [stream.batch(i) for i in range(max(1, cfg.eval_examples // 8))]
