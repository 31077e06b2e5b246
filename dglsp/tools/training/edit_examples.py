"""Next-edit training examples: the prompt exactly as `NextEditor` builds it, the middle the region rewritten.

An edit example (`make_edit_example`) is one moment of the edit corpus (`dglsp.tools.edit_corpus`), rebuilt as
the server holds it (`eval_edits.moment_of`: the document with the history applied, the recorded edits, their
diffs), with a region of whole lines: the target hunk's lines and `radius` lines either side, clipped to the
document; for a moment with no next edit, the cursor's region (`next_edit.line_region`). The prompt is
`next_edit.edit_context` through `PromptBuilder` with `next_edit.edit_settings` budgets (the recent edits and the
region's current text as snippets, the document around the region as prefix and suffix); the middle is the
region's text after the target (a no-edit moment: the region as it is, which teaches the model to stay quiet).

The canvas holds `canvas_length - 1` tokens and EOS, as in `examples.make_example`: a longer middle is cut there
and the region ends at the cut, so the suffix starts where the middle stops. A cut must fall after the change,
where the text before and after the edit agree; context lines above the change are dropped until it does, and a
change that alone overflows the canvas gives no example (None). Regions are therefore at most a canvas long,
while the server rewrites `2 * next_edit.radius + 1` lines over several canvases.

`EditMixer` draws these for `ExampleStream`, which puts one in place of a code example with probability
`TrainConfig.edit_prob`; at 0 (the default) the stream draws nothing more and its batches are unchanged.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from dglsp.completion.next_edit import Region, edit_context, edit_settings, line_region
from dglsp.completion.prompt import PromptBuilder, PromptFormat
from dglsp.config import ContextSettings, NextEditSettings, Settings
from dglsp.tools.edit_corpus import EditExample, load_examples
from dglsp.tools.eval_edits import LANGUAGE_ID, moment_of
from dglsp.tools.options import TrainConfig
from dglsp.tools.training.examples import Example, Log, split_prompt, token_id

DRAWS = 8  # edit examples tried per draw before the stream falls back to a code example


def serving_settings(max_prefix_tokens: int, max_suffix_tokens: int) -> ContextSettings:
    """The context budget the server gives an edit prompt (`next_edit.edit_settings` of the default settings),
    with the training run's prefix and suffix budgets."""
    context = replace(ContextSettings(), max_prefix_tokens=max_prefix_tokens, max_suffix_tokens=max_suffix_tokens)
    return edit_settings(Settings(context=context))


def line_offsets(text: str) -> list[int]:
    """The offset where each line starts, and the text's length at the end (a region's end past the last line)."""
    offsets = [0]
    for line in text.split("\n")[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    return offsets + [len(text)]


def target_region(example: EditExample, text: str, cursor: int, radius: int) -> Region:
    """The target hunk's lines and `radius` lines either side (an insertion: the line it goes before), clipped;
    with no target, the cursor's region as `NextEditor` takes it."""
    if example.target is None:
        return line_region(text, cursor, radius)
    offsets = line_offsets(text)
    lines = len(offsets) - 1
    first = max(0, example.target.start - radius)
    last = min(lines, max(example.target.end, example.target.start + 1) + radius)
    return Region(offsets[first], offsets[last], "target")


def make_edit_example(example: EditExample, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
                      canvas_length: int, max_prefix_tokens: int, max_suffix_tokens: int, radius: int,
                      rng: random.Random) -> Example | None:
    """One next-edit example (module docstring), kind "edit" or "no_edit"; None when the change alone does not
    fit a canvas. `rng` is taken for the streams' calling convention: the region and the cut are functions of
    the example."""
    moment = moment_of(example, NextEditSettings().history_edits)
    text, after = moment.text, example.after()
    grown = len(after) - len(text)  # the region's text after the edit is this much longer
    region = target_region(example, text, moment.cursor, radius)
    while True:
        old, new = text[region.start:region.end], after[region.start:region.end + grown]
        middle = tokenizer.encode(new, add_special_tokens=False)
        cut = len(new)
        if len(middle) > canvas_length - 1:  # keep room for EOS; the cut end becomes the start of the suffix
            middle = middle[: canvas_length - 1]
            cut = len(tokenizer.decode(middle))
        if tokenizer.decode(middle) != new[:cut]:
            return None  # a cut inside a character: no text for the suffix to start after
        if cut >= len(new) - _common_tail(old, new):
            break  # past the change the two texts agree, so the suffix starts at the cut in both
        second_line = text.find("\n", region.start, region.end) + 1
        if not second_line or second_line > region.start + _common_head(old, new):
            return None  # the change alone overflows the canvas
        region = Region(second_line, region.end, region.why)
    if cut < len(new):
        region = Region(region.start, region.start + cut - grown, region.why)
    settings = serving_settings(max_prefix_tokens, max_suffix_tokens)
    context = edit_context(text, region, moment.path, LANGUAGE_ID, moment.diffs, settings)
    ids = PromptBuilder(tokenizer, fmt, settings).build(context).ids
    kind = "no_edit" if example.target is None else "edit"
    return split_prompt(ids, middle, kind, token_id(tokenizer, fmt.tokens["suffix"]),
                        token_id(tokenizer, fmt.tokens["prefix"]))


def _common_head(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def _common_tail(a: str, b: str) -> int:
    return len(os.path.commonprefix([a[::-1], b[::-1]]))


class EditMixer:
    """Next-edit examples for `ExampleStream`, drawn from an edit corpus's training split."""

    def __init__(self, examples: list[EditExample], tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
                 cfg: TrainConfig, canvas: int, radius: int = NextEditSettings().radius):
        assert examples, "no edit examples to mix in"
        self.examples, self.tokenizer, self.fmt, self.cfg, self.canvas = examples, tokenizer, fmt, cfg, canvas
        self.radius = radius

    def example(self, rng: random.Random) -> Example | None:
        """An edit example, or None when `DRAWS` draws in a row gave none that fits a canvas."""
        for _ in range(DRAWS):
            made = make_edit_example(rng.choice(self.examples), self.tokenizer, self.fmt, self.canvas,
                                     self.cfg.max_prefix_tokens, self.cfg.max_suffix_tokens, self.radius, rng)
            if made is not None:
                return made
        return None


def edit_mixer(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, canvas: int,
               log: Log) -> EditMixer | None:
    """The run's `EditMixer` (its `--edits` file's training examples), or None when `--edit-prob` is 0."""
    if cfg.edit_prob <= 0:
        return None
    if not cfg.edits:
        raise SystemExit("dglsp train: --edit-prob needs --edits FILE (an edit corpus's train.jsonl.gz)")
    path = Path(cfg.edits).expanduser()
    examples = [example for example in load_examples(path) if example.split == "train"]
    if not examples:
        raise SystemExit(f"dglsp train: {path} holds no training-split edit examples")
    log(f"next edits: {len(examples):,} training examples from {path}, mixed in at {cfg.edit_prob:.0%}")
    return EditMixer(examples, tokenizer, fmt, cfg, canvas)
