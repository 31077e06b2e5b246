"""The tools' command-line options (`dglsp train`, `dglsp eval`, `dglsp bench`) and the training config.

This module imports nothing heavy, so `dglsp --help` and `dglsp COMMAND --help` list every option
without loading torch, and the serving commands never load the tools. Each command's work is in
its own module, imported when the command runs.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path

from dglsp import config

DEFAULT_WORK_DIR = Path(os.environ.get("DGLSP_TRAIN_DIR", Path.home() / "dglsp-train"))
PRESET_NAMES = ("tiny", "small", "base", "deep")  # modelzoo.PRESETS (a test checks they agree)
BENCHMARKS = ("single-line", "multi-line", "random-span")
DECODINGS, POLICIES, EDIT_PREDICTORS = config.DECODINGS, config.POLICIES, config.EDIT_PREDICTORS
EVAL_MODES = ("humaneval", "agreement", "repo", "gate", "curve", "edits")
BENCH_MODES = ("typing", "draft", "shapes", "step", "edit")
REPO_HOLE_KINDS = ("rest-of-line", "whole-line", "block", "random-span")
EDIT_KINDS = ("real", "rename", "parameter", "sibling", "no_edit")  # edit_corpus.KINDS and its "no next edit"
DRAFT_LENGTHS = (128, 256, 512)
EMBEDDED = "embedded"  # --resume-from's name for the model shipped in the package


@dataclass
class TrainConfig:
    """Every knob of a training run; `dglsp train --FIELD` sets each (the help comes from FIELD_HELP)."""

    preset: str = "small"
    vocab_size: int = 4096
    batch_size: int = 8
    canvases_per_prompt: int = 4
    max_prefix_tokens: int = 384
    max_suffix_tokens: int = 192
    lr: float = 1e-3
    warmup_steps: int = 60
    # Warmup-stable-decay: the last `cooldown_steps` of `max_steps` decay the rate linearly to
    # `lr * min_lr_ratio`. The stable phase has no known end (runs resume session after session),
    # so the decay is a branch: its start is saved as checkpoint-stable.pt for later runs to go on from.
    cooldown_steps: int = 0
    min_lr_ratio: float = 0.1
    # The exported model's serving defaults (dglsp.json: `dglsp.model.schedule.ModelDefaults`), each chosen by a
    # `dglsp eval` sweep (see the model card). Steps: on the 6200-step model, 8 passed as many single-line
    # problems as 24 at a third of the passes.
    serve_steps: int = 8
    # diffusion | verified | speculative | autoregressive | lookup. Lookup: on the step-9000 weights the greedy text
    # (11 of 100 single-line problems, diffusion's 3 post-processed) in 0.56x token-by-token's passes and 0.79x
    # its time per completion.
    serve_decoding: str = "lookup"
    serve_policy: str = "entropy_bound"  # entropy_bound | prefix
    serve_prefix_threshold: float = 0.9
    serve_eos_freeze: bool = False
    serve_line_canvas_length: int = 0  # 0: a single line gets the ghost text's canvas
    serve_verify_steps: int = 1
    serve_verify_mix: float = 0.0
    serve_settle_steps: int = 0
    serve_min_confidence: float = 0.52  # greedy text's calibrated gate (step 9000); diffusion's was 0.73
    serve_gate: str = "canvas"  # canvas | encoder: whose probability of the shown tokens the gate reads
    serve_edit_predictor: str = ""  # model | substitution; "": the model when the run mixes in edits, else substitution
    # The diffusion schedule: temperature from serve_t_max (first step) to serve_t_min, and the entropy a step
    # may accept in all. DiffusionGemma's values (0.8, 0.4, 0.1) never let the small model's stop rule fire;
    # these end a canvas in 4-5 steps instead of 8 (the model card's schedule sweep).
    serve_t_max: float = 0.2
    serve_t_min: float = 0.05
    serve_entropy_bound: float = 4.0
    weight_decay: float = 0.01
    optimizer: str = "adamw"  # adamw | muon (Muon for the hidden matrices, AdamW for embeddings and norms)
    # Adam's beta2 sets the half-life of its second moment in steps; for another batch size keep the half-life
    # in tokens: beta2' = beta2 ** (batch' / batch) (0.95 at batch 8 ~ 0.9025 at batch 16).
    adam_beta2: float = 0.95
    canvas_length: int = 0  # 0 = the preset's (32 for small)
    grad_clip: float = 1.0
    t_eps: float = 1e-3
    pad_weight: float = 0.1
    ar_weight: float = 1.0
    self_conditioning_prob: float = 0.5
    # Self-distillation (training/distill.py): of each prompt's `canvases_per_prompt` noisy canvases, this many
    # learn the encoder's own greedy middle, weighted `distill_weight` (0: off), their cross-entropy falling
    # along the canvas as exp(-k / distill_gamma), plus `certainty_weight` x dParallel's certainty term.
    distill_weight: float = 0.0
    distill_canvases: int = 2
    distill_gamma: float = 6.0
    certainty_weight: float = 1.0
    # Train only the parameters whose names start with one of these comma-separated prefixes ("": all). The
    # decoder's own weights ("model.decoder.", the self-conditioning block) are the only ones the encoder does not
    # share, so training them alone cannot change token-by-token decoding.
    train_only: str = ""
    seed: int = 0
    max_steps: int = 0  # 0 = until --minutes runs out
    minutes: float = 0.0  # 0 = until --max-steps
    eval_every: int = 100
    eval_examples: int = 48
    checkpoint_minutes: float = 5.0
    export_minutes: float = 10.0
    device: str = "cpu"
    # Mixed precision: "auto" = bf16 autocast where the hardware has bf16 matmuls (CUDA; CPUs with AVX512-BF16
    # or AMX), fp32 elsewhere. Weights and optimizer state stay fp32. On this 2-core Zen 4 the long run went
    # from ~2,100 to ~2,300 tokens/s: at this size the step is mostly not matmuls; on a GPU it is the norm.
    precision: str = "auto"
    threads: int = 0
    max_package_bytes: int = 0  # an absolute cap on one package (0: only the corpus share cap, 10 %)
    # Snippets of sibling files in the prompt, picked as the server picks snippets of other open files, for
    # this share of the examples; the exported model then takes snippets by default (dglsp.json).
    snippet_prob: float = 0.5
    max_snippet_tokens: int = 160
    # Train on a pre-tokenized shard (`--make-shard`) instead of this machine's corpus: for a GPU machine that
    # has neither the corpus nor a network. "" = the corpus.
    shard: str = ""
    # With no checkpoint in the work dir, a run goes on from this shipped model directory (weights, tokenizer,
    # step and counters from its dglsp.json) instead of random weights; "" starts from scratch.
    resume_from: str = EMBEDDED
    # Next-edit examples (training/edit_examples.py) from an edit corpus's train.jsonl.gz (edit_corpus.py), mixed
    # into the batches: each drawn example is one of them with probability `edit_prob`. 0 or "": off, and the
    # batches are exactly those of a run without the fields.
    edits: str = ""
    edit_prob: float = 0.0


def cooldown_start(cfg: TrainConfig) -> int:
    """The step the decay begins at, or 0 when the run has none (constant rate after warmup)."""
    if not (cfg.cooldown_steps and cfg.max_steps):
        return 0
    return max(1, cfg.max_steps - cfg.cooldown_steps)


FIELD_HELP = {
    "preset": "model size",
    "device": "cpu or cuda",
    "precision": "auto (bf16 autocast where the hardware is fast at it), bf16 or fp32",
    "threads": "torch CPU threads (0 = torch's default)",
    "max_steps": "stop at this total step count (0 = no limit)",
    "minutes": "stop after this many minutes (0 = no limit)",
    "lr": "peak learning rate (after warmup, until any decay)",
    "cooldown_steps": "decay the rate linearly over the last N of --max-steps (saves the stable phase as "
                      "checkpoint-stable.pt, which a later, longer run goes on from)",
    "min_lr_ratio": "the decay's end as a fraction of --lr",
    "pad_weight": "canvas loss weight of padding positions (middle and EOS weigh 1)",
    "ar_weight": "weight of the encoder's next-token loss against the canvas loss",
    "serve_steps": "denoising steps the exported model serves with by default (dglsp.json)",
    "eval_every": "steps between held-out losses",
    "resume_from": "with no checkpoint in --work-dir, go on from this shipped model directory: its weights, "
                   "tokenizer and counters (default: the embedded model; '' = from scratch)",
    "max_package_bytes": "an absolute cap on the bytes taken from one package (0: only the 10 %% share cap)",
    "edits": "next-edit examples to mix in: an edit corpus's train.jsonl.gz (python -m dglsp.tools.edit_corpus; "
             "'' = none)",
    "train_only": "train only the parameters whose names start with one of these comma-separated prefixes "
                  "(e.g. model.decoder. : the self-conditioning block, which the encoder does not share)",
    "edit_prob": "the share of training examples that are next edits from --edits (0 = off)",
    "serve_edit_predictor": "who proposes next edits, in the export's dglsp.json: model or substitution "
                            "('' = the model when --edits are mixed in, else the substitution)",
}
CHOICES = {"preset": PRESET_NAMES, "precision": ("auto", "bf16", "fp32"), "optimizer": ("adamw", "muon"),
           "serve_decoding": DECODINGS, "serve_policy": POLICIES, "serve_gate": ("canvas", "encoder"),
           "serve_edit_predictor": ("", *EDIT_PREDICTORS)}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help="corpus cache, tokenizer, checkpoint and log (default: %(default)s)")
    parser.add_argument("--export-dir", type=Path, default=None,
                        help="where the latest model directory is written (default: WORK_DIR/export)")
    parser.add_argument("--ship-to", type=Path, default=None,
                        help="copy each export whose held-out loss improved here (e.g. dglsp/model/embedded)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    parser.add_argument("--make-shard", type=Path, default=None, metavar="FILE",
                        help="write --shard-examples pre-tokenized training examples (and the held-out ones) from "
                             "this machine's corpus to FILE, for `--shard FILE` elsewhere, then exit")
    parser.add_argument("--shard-examples", type=int, default=60_000,
                        help="examples in a --make-shard file (60,000 is ~55 MB)")
    config = parser.add_argument_group("training config (defaults in dglsp/tools/options.py: TrainConfig)")
    for spec in fields(TrainConfig):
        default = spec.default
        kind = _boolean if isinstance(default, bool) else type(default)
        config.add_argument(f"--{spec.name.replace('_', '-')}", type=kind, default=default,
                            choices=CHOICES.get(spec.name),
                            help=f"{FIELD_HELP.get(spec.name, spec.name.replace('_', ' '))} (default: %(default)s)")


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{spec.name: getattr(args, spec.name) for spec in fields(TrainConfig)})


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", nargs="?", choices=EVAL_MODES, default=None,
                        help="humaneval (default): pass@1 per decoding; agreement: each decoding's leading agreement "
                             "with the greedy text after 1, 2 and 4 passes and its tokens per pass; repo: holes cut "
                             "in --repo; gate: --plot-gate; curve: --plot-training; edits: next-edit suggestions on "
                             "held-out edits against the no-edit and repeat-the-substitution baselines")
    parser.add_argument("--model", default=None, help="model directory or Hugging Face id (default: embedded)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (and hole sampling with --repo)")
    parser.add_argument("--limit", type=int, default=None,
                        help="HumanEval: problems per benchmark, evenly spaced (default: all); --repo: holes in "
                             "all (default 60); edits: examples, evenly spaced (default: all)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--verbose", action="store_true", help="print every completion and its outcome")
    parser.add_argument("--calibrate", action="store_true",
                        help="record each completion's confidence with its outcome (HumanEval: the pipeline's "
                             "pass; --repo: exact match), for `dglsp eval --plot-gate`")
    human_eval = parser.add_argument_group(
        "HumanEval-Infilling (the default): pass@1 (executed), exact match, forward passes and ms per completion, "
        "for each decoding of the same weights")
    human_eval.add_argument("--data", type=Path, default=None,
                            help="directory with the HumanEval-Infilling .jsonl.gz files (default: the copy "
                                 "shipped in the package); edits: an edit examples file, e.g. "
                                 "~/dglsp-train/edits/heldout.jsonl.gz (default: the shipped held-out set)")
    human_eval.add_argument("--benchmark", action="append", choices=BENCHMARKS, default=None,
                            help="repeatable (default: single-line and multi-line)")
    human_eval.add_argument("--decoding", action="append", choices=DECODINGS, default=None,
                            help="repeatable (default: all)")
    human_eval.add_argument("--max-canvases", type=int, default=2, help="canvases per multi-line completion")
    human_eval.add_argument("--max-steps", type=int, default=None,
                            help="denoising steps per canvas (default: the model's)")
    human_eval.add_argument("--canvas-length", type=int, default=None,
                            help="tokens per canvas (default: the model's dglsp.json, else its config's)")
    human_eval.add_argument("--line-canvas-length", type=int, default=None,
                            help="tokens per canvas of a single line (default: the model's)")
    human_eval.add_argument("--policy", choices=POLICIES, default=None,
                            help="which positions a denoising step keeps (default: the model's)")
    human_eval.add_argument("--prefix-threshold", type=float, default=None,
                            help="prefix policy: the argmax probability a committed position needs")
    human_eval.add_argument("--eos-freeze", type=_boolean, default=None,
                            help="after a confident EOS the tail is padding (default: the model's)")
    human_eval.add_argument("--sampling", choices=("reference", "fast", "fused"), default=None,
                            help="how a step samples (default: the device's serving path; reference: bit-exact "
                                 "with transformers' generate())")
    human_eval.add_argument("--gate", choices=("canvas", "encoder"), default=None,
                            help="whose probability of the shown tokens the confidence gate reads (default: the "
                                 "model's)")
    human_eval.add_argument("--verify-steps", type=int, default=None,
                            help="verified decoding: denoising steps per draft (default: the model's)")
    human_eval.add_argument("--verify-mix", type=float, default=None,
                            help="speculative decoding: the canvas's weight in the acceptance logits (0: exactly "
                                 "greedy; default: the model's)")
    human_eval.add_argument("--settle-steps", type=int, default=None,
                            help="end a canvas once its argmax up to EOS is unchanged for N steps (0: off; "
                                 "default: the model's)")
    human_eval.add_argument("--entropy-bound", type=float, default=None,
                            help="diffusion: the entropy a step may accept in all (default: the model's)")
    human_eval.add_argument("--t-max", type=float, default=None,
                            help="diffusion: sampling temperature at the first step (default: the model's)")
    human_eval.add_argument("--t-min", type=float, default=None,
                            help="diffusion: sampling temperature at the last step (default: the model's)")
    human_eval.add_argument("--plot-gate", type=Path, nargs="+", metavar=("EVAL_JSON", "PNG"), default=None,
                            help="plot precision against coverage of the confidence gate from --calibrate runs' "
                                 "JSON files into the last argument (a PNG), and print the table")
    human_eval.add_argument("--plot-training", type=Path, nargs="+", metavar=("MODEL_DIR", "PNG"), default=None,
                            help="plot held-out loss and pass@1 against CPU-hours from a model's training log "
                                 "(default model: the embedded one) into the last argument (a PNG)")
    human_eval.add_argument("--timeout", type=float, default=10.0, help="seconds per executed program")
    human_eval.add_argument("--no-latency", action="store_true", help="skip the cold ~1k-token completion timing")
    human_eval.add_argument("--record", action="store_true",
                            help="write eval.json into the model directory and refresh its MODEL_CARD.md")
    human_eval.add_argument("--save-outputs", type=Path, default=None, metavar="FILE",
                            help="write every decoded middle (JSON lines) for --rescore")
    human_eval.add_argument("--rescore", type=Path, default=None, metavar="FILE",
                            help="score the outputs a --save-outputs run wrote, without a model (post-processing "
                                 "changes, --pipeline ablations); same --benchmark/--decoding/--limit")
    human_eval.add_argument("--pipeline", action="store_true",
                            help="also score dglsp's post-processing pipeline, and the pipeline without each "
                                 "filter, on the same generations (rows DECODING+pipeline, DECODING+pipeline-FILTER)")
    repo = parser.add_argument_group(
        "a repository (--repo PATH): cut holes at syntactic points, complete them through the serving path, and "
        "report exact match, edit similarity and bug counts with post-processing off, on, and without each filter")
    repo.add_argument("--repo", type=Path, default=None, help="repository (or any source tree) to cut holes in")
    repo.add_argument("--per-kind", type=int, default=1, help="holes of each kind per file (default %(default)s)")
    repo.add_argument("--kind", action="append", choices=REPO_HOLE_KINDS + EDIT_KINDS,
                      help=f"repeatable (default: all kinds): --repo's holes {', '.join(REPO_HOLE_KINDS)}; edits' "
                           f"examples {', '.join(EDIT_KINDS)}")
    repo.add_argument("--settings", help="JSON settings in the editor's shape (as for `dglsp serve`; also edits)")
    repo.add_argument("--test-cmd", help="shell command running the repository's tests (exit 0 = pass)")
    repo.add_argument("--test-limit", type=int, default=0, help="holes also checked with --test-cmd")
    repo.add_argument("--test-timeout", type=float, default=120.0)
    repo.add_argument("--oracle-overrun", type=int, metavar="CHARS",
                      help="no model: each hole's raw text is its truth plus CHARS characters of the code after it "
                           "(a model that keeps going), to measure the filters alone")
    edits = parser.add_argument_group(
        "edits (`dglsp eval edits`): next-edit suggestions on held-out edits (exact match, chrF of the changed lines, "
        "quiet rate) for the model, the no-edit and the repeat-the-substitution baselines; also --data FILE, "
        "--kind, --settings, --limit")
    edits.add_argument("--no-seed", action="store_true",
                       help="start the rewrite's canvas from noise, not the region's text (next_edit.seed_canvas "
                            "false), to measure seeding against noise")
    edits.add_argument("--radius", type=int, default=None,
                       help="lines either side of the line a region is centred on (default: next_edit.radius)")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", nargs="?", choices=BENCH_MODES, default=None,
                        help="typing (default): a typing session replayed over LSP; draft: drafts; shapes: "
                             "--random-weights; step: one denoising step and prefill chunk by phase against the "
                             "floor; edit: a next-edit suggestion's latency (a region of 2 x --radius + 1 lines)")
    parser.add_argument("--model", help="model directory or Hugging Face id (default: the embedded model)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (drafts and shapes; a typing session's "
                        "server takes --settings)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--sampling", choices=("reference", "fast", "fused"), default=None,
                        help="step: how a step samples (default: the device's serving path)")
    typing = parser.add_argument_group(
        "typing session (the default): replay human typing over LSP against `dglsp serve` and print latencies")
    typing.add_argument("--files", nargs="*", type=Path, help="source files to type functions from "
                        "(default: the standard library's top-level modules); edit: the file whose regions are "
                        "rewritten is the first (default: the standard library's argparse.py)")
    typing.add_argument("--functions", type=int, default=3, help="functions to type (default 3)")
    typing.add_argument("--max-chars", type=int, default=320, help="longest function to type (default 320)")
    typing.add_argument("--context-tokens", type=int, default=2048,
                        help="context budget: prefix + suffix tokens (default 2048)")
    typing.add_argument("--long-files", action="store_true",
                        help="type functions that sit deeper than twice the prefix budget (the window is cut)")
    typing.add_argument("--client", choices=("vscode", "neovim"), default="vscode")
    typing.add_argument("--baseline", action="store_true",
                        help="turn prefix KV cache, typing-through and speculation off (the 'before' numbers)")
    typing.add_argument("--settings", help="extra server settings as JSON, in the editor's shape (also edit; "
                        "step reads its latency section)")
    typing.add_argument("--tokens", type=int, default=48, help="completion length for the side-by-side (default 48)")
    typing.add_argument("--completions", type=int, default=6, help="completions in the side-by-side (default 6)")
    typing.add_argument("--no-side-by-side", action="store_true")
    typing.add_argument("--time-scale", type=float, default=1.0,
                        help="multiply the typing intervals and pauses (tests type fast; 1 = human)")
    typing.add_argument("--json-file", type=Path, help="also write the results as JSON to this file")
    draft = parser.add_argument_group(
        "drafts (--draft): block diffusion against token-by-token decoding at fixed draft lengths, and pass@1 of "
        "drafted HumanEval bodies")
    draft.add_argument("--draft", action="store_true", help="run the draft benchmark instead of a typing session")
    draft.add_argument("--lengths", default=",".join(map(str, DRAFT_LENGTHS)), help="draft lengths in tokens")
    draft.add_argument("--prompts", type=int, default=4,
                       help="prompts per length for the speed table; edit: timed warm proposals, each at another "
                            "place of the file (20 or more for a p95) (default %(default)s)")
    draft.add_argument("--problems", type=int, default=20, help="HumanEval bodies for the quality table (0: skip)")
    draft.add_argument("--max-tokens", type=int, default=256, help="draft token limit for the quality table")
    draft.add_argument("--steps", type=int, help="maximum denoising steps per canvas")
    draft.add_argument("--timeout", type=float, default=10.0, help="seconds per executed program")
    shapes = parser.add_argument_group(
        "shapes (--random-weights CONFIG.json): a model of a config's shapes built on the device with random "
        "weights: prefill, one denoising step at canvas 32 and 256 (eager and compiled), peak memory")
    shapes.add_argument("--random-weights", type=Path, metavar="CONFIG.json",
                        help="a config.json, or dglsp/tools/data/diffusiongemma-26B-A4B.json (the 26B-A4B's shapes)")
    shapes.add_argument("--scaled", action="store_true",
                        help="shrink the widths and depth (the data file's `scaled` entry) to fit a CPU")
    shapes.add_argument("--prefill-tokens", type=int, default=2048, help="prompt length for the prefill timing")
    shapes.add_argument("--canvas-lengths", default="32,256", help="canvases to time a denoising step at")
    shapes.add_argument("--oom-check", action="store_true",
                        help="CUDA: fill the device and check the out-of-memory retry and report")
    edit = parser.add_argument_group(
        "edit (`dglsp bench edit`): one next-edit proposal rewriting a region of a real file after a rename on the "
        "cursor's line, cold (the first after loading) and warm (p50/p95 over --prompts places), forward passes per "
        "proposal; also --files, --prompts, --settings")
    edit.add_argument("--radius", type=int, default=10,
                      help="lines either side of the cursor's line: the region is 2 x RADIUS + 1 lines "
                           "(default %(default)s)")
    edit.add_argument("--no-seed", action="store_true",
                      help="start the rewrite's canvas from noise, not the region's text (next_edit.seed_canvas false)")

