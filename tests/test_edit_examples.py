"""Next-edit training examples: the prompt the server builds for the same moment, the region's new text as the
middle (cut at the canvas as FIM middles are), and a stream that is unchanged while next edits are off."""

from __future__ import annotations

import random
import sysconfig
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from scripted import ScriptedModel
from test_eval_edits import FIRST_USE, LINES, RENAME, after_rename, example

from dglsp.completion.completer import Completer
from dglsp.completion.next_edit import NextEditor
from dglsp.completion.prompt import PromptFormat
from dglsp.config import ContextSettings, Settings
from dglsp.model.backend import ModelBundle
from dglsp.model.schedule import ModelDefaults
from dglsp.tools import corpus, modelzoo
from dglsp.tools.edit_corpus import Hunk
from dglsp.tools.eval_edits import moment_of
from dglsp.tools.options import TrainConfig
from dglsp.tools.training.edit_examples import EditMixer, edit_mixer, make_edit_example
from dglsp.tools.training.examples import ExampleStream

FMT = PromptFormat("fim", dict(modelzoo.SPECIAL_TOKENS), trained_with_snippets=True)
STDLIB = Path(sysconfig.get_paths()["stdlib"])
WIDE = 512  # a canvas no test region overflows
LONGER = [*LINES, "", "", "def volume(w, h, d):", "    return area(w, h) * d", "", "", "print(volume(1, 2, 3))"]


class PromptRecorder(ScriptedModel):
    """A backend that writes nothing and keeps the prompts it was asked to continue."""

    def __init__(self, tokenizer):
        super().__init__([tokenizer.eos_token_id])
        self.prompts: list[list[int]] = []

    def generate(self, prompt_ids, schedule, *args, **kwargs):
        self.prompts.append(list(prompt_ids))
        return super().generate(prompt_ids, schedule, *args, **kwargs)


def served_prompt(tokenizer, moment, settings: Settings) -> list[int]:
    """The first prompt `NextEditor.propose` hands its backend for `moment`."""
    recorder = PromptRecorder(tokenizer)
    meta = {"prompt_format": {"kind": "fim", "tokens": dict(modelzoo.SPECIAL_TOKENS), "snippets": True}}
    bundle = ModelBundle(tokenizer, meta, Path("."), "cpu", ModelDefaults(canvas_length=16))
    NextEditor(Completer(bundle, recorder)).propose(moment.text, moment.cursor, moment.history, moment.diffs,
                                                    settings, moment.path, "python")
    return recorder.prompts[0]


def renamed(lines: list[str] = LONGER):
    return example([RENAME], FIRST_USE, (0, len("def surface")), lines=lines)


def test_the_prompt_is_the_one_the_server_builds_for_the_same_moment(tiny_tokenizer):
    rename = renamed()
    context = ContextSettings()
    made = make_edit_example(rename, tiny_tokenizer, FMT, WIDE, context.max_prefix_tokens, context.max_suffix_tokens,
                             1, random.Random(0))
    assert made is not None and made.kind == "edit"
    settings, _ = Settings().updated({"next_edit": {"radius": 1}})  # the substitution region: the first use +- 1
    assert made.prompt() == served_prompt(tiny_tokenizer, moment_of(rename), settings)
    # The same with the training run's smaller budgets, which cut the document around the region.
    small = make_edit_example(rename, tiny_tokenizer, FMT, WIDE, 16, 16, 1, random.Random(0))
    budgets, _ = settings.updated({"context": {"max_prefix_tokens": 16, "max_suffix_tokens": 16}})
    assert small is not None and small.prompt() == served_prompt(tiny_tokenizer, moment_of(rename), budgets)


def test_the_middle_is_the_target_regions_new_text(tiny_tokenizer):
    made = make_edit_example(renamed(), tiny_tokenizer, FMT, WIDE, 64, 64, 1, random.Random(0))
    assert made is not None
    assert tiny_tokenizer.decode(made.middle) == "\nprint(surface(2, 3))\nprint(area(4, 5))\n"
    assert "(the region to rewrite)\n\nprint(area(2, 3))\nprint(area(4, 5))\n" in tiny_tokenizer.decode(made.header)
    # The window's last line, as a region's last line, has no newline before or after the edit.
    last = example([RENAME], Hunk(len(LINES) - 1, ("done = True",), ("done = False",)), (0, 11))
    tail = make_edit_example(last, tiny_tokenizer, FMT, WIDE, 64, 64, 1, random.Random(0))
    assert tail is not None and tiny_tokenizer.decode(tail.middle) == "# area is width times height\ndone = False"


def test_a_moment_with_no_next_edit_rewrites_the_cursors_region_unchanged(tiny_tokenizer):
    quiet = example([RENAME, FIRST_USE], None, (4, len("print(surface")), kind="real", lines=LONGER)
    made = make_edit_example(quiet, tiny_tokenizer, FMT, WIDE, 64, 64, 1, random.Random(0))
    assert made is not None and made.kind == "no_edit"
    assert tiny_tokenizer.decode(made.middle) == "\nprint(surface(2, 3))\nprint(area(4, 5))\n"


def test_a_long_middle_is_cut_at_the_canvas_after_the_change_and_the_suffix_starts_there(tiny_tokenizer):
    rename = renamed()
    canvas = 12
    made = make_edit_example(rename, tiny_tokenizer, FMT, canvas, 64, 64, 3, random.Random(0))
    assert made is not None and len(made.middle) == canvas - 1
    middle, suffix = tiny_tokenizer.decode(made.middle), tiny_tokenizer.decode(made.suffix)
    assert middle.endswith("surface")  # the change is inside the canvas: past it the texts agree ...
    assert middle + suffix in rename.after()  # ... and the suffix goes on where the middle stops,
    region = tiny_tokenizer.decode(made.header).split("(the region to rewrite)\n", 1)[1].removesuffix("<|suffix|>")
    assert region.endswith("area") and region + suffix in rename.current()  # in the text as it is, too
    # A change longer than a canvas gives no example: its middle could not end after it.
    assert make_edit_example(rename, tiny_tokenizer, FMT, 4, 64, 64, 3, random.Random(0)) is None


# ---- the stream ----------------------------------------------------------------------------------------------------

def stdlib_files(names=("textwrap.py", "bisect.py", "heapq.py", "fnmatch.py", "colorsys.py")):
    return [corpus.SourceFile("python-stdlib", name, (STDLIB / name).read_text()) for name in names]


def batches(stream: ExampleStream, steps: int = 3) -> list[list[torch.Tensor]]:
    return [[batch.prompt_ids, batch.canvas_ids, batch.canvas_weights, batch.continuation_ids]
            for batch in (stream.batch(step) for step in range(steps))]


def test_edit_prob_zero_leaves_the_batches_as_they_were(tiny_tokenizer):
    cfg = TrainConfig(batch_size=4, max_prefix_tokens=64, max_suffix_tokens=32, max_snippet_tokens=48)
    assert cfg.edit_prob == 0 and cfg.edits == ""  # off unless asked for
    mixer = EditMixer([after_rename()], tiny_tokenizer, FMT, cfg, 16)
    before = batches(ExampleStream(stdlib_files(), tiny_tokenizer, FMT, cfg, 16))
    with_mixer = batches(ExampleStream(stdlib_files(), tiny_tokenizer, FMT, cfg, 16, mixer))
    assert all(torch.equal(a, b) for x, y in zip(before, with_mixer, strict=True) for a, b in zip(x, y, strict=True))
    assert edit_mixer(cfg, tiny_tokenizer, FMT, 16, print) is None


def test_edit_prob_mixes_next_edits_into_the_batches(tiny_tokenizer):
    cfg = TrainConfig(batch_size=4, max_prefix_tokens=64, max_suffix_tokens=32, max_snippet_tokens=48,
                      edit_prob=0.5)
    mixer = EditMixer([renamed()], tiny_tokenizer, FMT, cfg, 16, radius=1)
    stream = ExampleStream(stdlib_files(), tiny_tokenizer, FMT, cfg, 16, mixer)
    pool = stream._fill(0)
    kinds = [e.kind for e in pool]
    assert "edit" in kinds and len(kinds) - kinds.count("edit") > 0
    again = ExampleStream(stdlib_files(), tiny_tokenizer, FMT, cfg, 16, mixer)._fill(0)
    assert [e.prompt() for e in again] == [e.prompt() for e in pool]  # deterministic in (seed, step)
    with pytest.raises(SystemExit, match="--edits"):
        edit_mixer(replace(cfg, edits=""), tiny_tokenizer, FMT, 16, print)
