"""`dglsp train`: from the corpus on this machine to a shipped model directory, resumable.

Contract: `run(args)` builds (or reuses, from `--work-dir`) the corpus, the tokenizer and a pre-split file list;
then trains a DiffusionGemma of a size preset and exports a model directory that
`dglsp.model.loading.load_bundle` loads. Everything the run needs to go on — checkpoint, log, corpus cache —
lives in `--work-dir`, so running the same command again resumes. This module is the loop: set up, step,
checkpoint and export on a wall-clock cadence, pause while `PAUSE` exists in the work dir, and stop on the step
or time bound or a signal after a last checkpoint and export. The stages it calls are in
`dglsp.tools.training`: the examples, the objective (one step of DiffusionGemma's recipe), the schedule and
the checkpoints.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerBase

from dglsp.config import SamplerSettings
from dglsp.tools import modelzoo, options
from dglsp.tools.options import TrainConfig, cooldown_start
from dglsp.tools.training.checkpoints import TrainState, export_and_ship, open_stretch, resume, save_checkpoint
from dglsp.tools.training.examples import Batch, ExampleStream, Log, ShardStream, data, make_shard
from dglsp.tools.training.objective import autocast, autocast_dtype, held_out_loss, to_device, training_loss
from dglsp.tools.training.schedule import learning_rate, make_optimizer

PAUSE_FILE = "PAUSE"  # while this file exists in the work dir, training sleeps (after a checkpoint)
AGREEMENT_PROMPTS = 24
# The decodings a distillation run is judged on: the export's own, and the left-to-right prefix policy.
AGREEMENT_VARIANTS = {"diffusion": SamplerSettings(decoding="diffusion", seed=0),
                      "prefix": SamplerSettings(decoding="diffusion", policy="prefix", eos_freeze=True, seed=0,
                                                max_steps=32)}


@dataclass
class _Training:
    """A run as the loop sees it: set up once by `_set_up`, then advanced a step at a time."""

    cfg: TrainConfig
    work_dir: Path
    export_dir: Path
    ship_dir: Path | None
    command: str
    log: Log
    device: torch.device
    amp: torch.dtype | None  # the autocast dtype, None for plain fp32
    model: DiffusionGemmaForBlockDiffusion
    optimizer: torch.optim.Optimizer
    state: TrainState
    stream: ExampleStream | ShardStream
    eval_batches: list[Batch]  # on the device
    tokenizer: PreTrainedTokenizerBase
    manifest: dict
    generator: torch.Generator  # the noise of the objective

    def checkpoint(self, name: str = "checkpoint.pt") -> None:
        save_checkpoint(self.work_dir / name, self.model, self.optimizer, self.state, self.cfg)

    def export(self) -> None:
        export_and_ship(self.model, self.tokenizer, self.export_dir, self.ship_dir, self.manifest, self.state,
                        self.cfg, self.command, self.eval_batches, self.log)
        if self.cfg.distill_weight > 0:
            self.log_agreement()

    def log_agreement(self) -> None:
        """What distillation is for, measured on the export as served: leading agreement with the greedy text
        and tokens per pass, on held-out prompts (the go/no-go of a distillation run)."""
        from dglsp.tools.agreement import for_model_dir

        prompts = [row.tolist() for batch in self.eval_batches for row in batch.prompt_ids][:AGREEMENT_PROMPTS]
        rows = for_model_dir(self.export_dir, prompts, AGREEMENT_VARIANTS)
        self.state.history[-1:] = [{**(self.state.history[-1] if self.state.history else {}), "agreement": rows}]
        for row in rows:
            self.log(f"agreement step {self.state.step} {row['decoding']}: after 1/2/4 passes "
                     f"{row['leading_after_1']}/{row['leading_after_2']}/{row['leading_after_4']} of "
                     f"{row['reference_tokens'] / max(1, row['prompts']):.1f} tokens, {row['tokens_per_pass']} "
                     f"tokens per pass, exact {row['exact']}")


@dataclass
class _Cadence:
    """The wall clock of a run: its start, and when it last checkpointed and exported."""

    begin: float
    last_checkpoint: float
    last_export: float

    @classmethod
    def starting_now(cls, cfg: TrainConfig, first_export_soon: bool) -> _Cadence:
        begin = time.monotonic()
        # With no export yet, the first comes early, so a default model exists within minutes.
        last_export = begin - max(0.0, cfg.export_minutes - 3) * 60 if first_export_soon else begin
        return cls(begin, begin, last_export)


def train(cfg: TrainConfig, work_dir: Path, export_dir: Path, ship_dir: Path | None, command: str,
          log: Log = print, progress: bool = True) -> TrainState:
    """Train until `cfg`'s step or time bound (none: until a signal), then checkpoint and export once more."""
    training = _set_up(cfg, work_dir, export_dir, ship_dir, command, log)
    cadence = _Cadence.starting_now(cfg, first_export_soon=not export_dir.exists())
    bar = _progress_bar(cfg, training.state, progress)
    stop = _stop_on_signals()
    _loop(training, cadence, stop, bar)
    if stop:
        log(f"signal {stop[0]} received: checkpointing and exporting at step {training.state.step}")
    training.checkpoint()
    training.export()
    if bar is not None:
        bar.close()
    return training.state


def _set_up(cfg: TrainConfig, work_dir: Path, export_dir: Path, ship_dir: Path | None, command: str,
            log: Log) -> _Training:
    """The data, the model and its optimizer on the device, resumed from the work dir or a shipped model."""
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
    state = resume(model, optimizer, work_dir, cfg, device, log)
    amp = autocast_dtype(cfg, device)
    log(f"model: preset {cfg.preset}, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{source}, {amp or torch.float32} compute on {device}")
    eval_batches = [to_device(b, device) for b in held_batches]
    if state.step and not math.isfinite(state.best_held_out):  # resumed weights: the bar an export must beat
        state.best_held_out = held_out_loss(model, eval_batches, cfg)["loss"]
        log(f"held-out loss of the resumed weights: {state.best_held_out:.4f}")
    open_stretch(state)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + state.step)
    return _Training(cfg=cfg, work_dir=work_dir, export_dir=export_dir, ship_dir=ship_dir, command=command, log=log,
                     device=device, amp=amp, model=model, optimizer=optimizer, state=state, stream=stream,
                     eval_batches=eval_batches, tokenizer=tokenizer, manifest=manifest, generator=generator)


def _loop(training: _Training, cadence: _Cadence, stop: list[int], bar) -> None:
    """Step until the run is done or a signal arrives, logging, evaluating and saving as it goes."""
    cfg, state, log = training.cfg, training.state, training.log
    window: list[dict] = []
    while not _done(cfg, state, cadence.begin) and not stop:
        if (training.work_dir / PAUSE_FILE).exists():
            _pause(training, stop)
            continue
        if cooldown_start(cfg) and state.step >= cooldown_start(cfg) and not state.cooldown_start:
            training.checkpoint("checkpoint-stable.pt")
            state.cooldown_start = cooldown_start(cfg)
            log(f"decay begins at step {state.step}: the stable phase is saved as checkpoint-stable.pt")
        stats = _train_step(training)
        window.append(stats)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(canvas=f"{stats['canvas']:.3f}", ar=f"{stats['ar']:.3f}", refresh=False)
        if state.step % 20 == 0:
            log(_window_summary(state, window))
            window = []
        if state.step % cfg.eval_every == 0:
            held = held_out_loss(training.model, training.eval_batches, cfg)
            held["step"] = state.step
            held["tokens_seen"] = state.tokens_seen
            state.history.append(held)
            log(f"held-out step {state.step}: {held}")
        _checkpoint_and_export_when_due(training, cadence)


def _checkpoint_and_export_when_due(training: _Training, cadence: _Cadence) -> None:
    """A checkpoint every `checkpoint_minutes`, an export (with a checkpoint) every `export_minutes`."""
    now = time.monotonic()
    if now - cadence.last_checkpoint >= training.cfg.checkpoint_minutes * 60:
        training.checkpoint()
        cadence.last_checkpoint = now
    if now - cadence.last_export >= training.cfg.export_minutes * 60:
        training.export()
        training.checkpoint()
        cadence.last_export = cadence.last_checkpoint = time.monotonic()


def _train_step(training: _Training) -> dict:
    """One optimizer step at the schedule's rate (its batch's making counted in the time); advances the run's
    state and returns the step's losses."""
    state, cfg = training.state, training.cfg
    step_begin, cpu_begin = time.monotonic(), time.process_time()
    for group in training.optimizer.param_groups:
        group["lr"] = learning_rate(state.step, cfg, state.warmup_start)
    batch = to_device(training.stream.batch(state.step), training.device)
    with autocast(training.amp, training.device):
        loss, stats = training_loss(training.model, batch, cfg, training.generator,
                                    training.tokenizer.eos_token_id, training.tokenizer.pad_token_id)
    training.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(training.model.parameters(), cfg.grad_clip)
    training.optimizer.step()
    state.step += 1
    state.tokens_seen += int(stats["tokens"])
    state.loss_tokens_seen += int(stats["loss_tokens"])
    state.train_seconds += time.monotonic() - step_begin
    state.cpu_seconds += time.process_time() - cpu_begin
    return stats


def _pause(training: _Training, stop: list[int]) -> None:
    """Checkpoint, then sleep while the pause file exists (or until a signal): the cores are free meanwhile."""
    training.checkpoint()
    training.log(f"paused at step {training.state.step} ({training.work_dir / PAUSE_FILE} exists)")
    while (training.work_dir / PAUSE_FILE).exists() and not stop:
        time.sleep(2)
    training.log(f"resumed at step {training.state.step}")


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
    keys = ("canvas", "ar", "canvas_middle", "ar_middle", "distill", "certainty", "teacher_tokens")
    mean = {k: sum(w[k] for w in window) / len(window) for k in keys if all(k in w for w in window)}
    rate = state.tokens_seen / state.train_seconds if state.train_seconds else 0.0
    distilled = (f" distill {mean['distill']:.3f} certainty {mean['certainty']:.3f} teacher "
                 f"{mean['teacher_tokens']:.1f} tok" if "distill" in mean else "")
    return (f"step {state.step} tokens {state.tokens_seen:,} canvas {mean['canvas']:.3f} "
            f"(middle {mean['canvas_middle']:.3f}) ar {mean['ar']:.3f} (middle {mean['ar_middle']:.3f})"
            f"{distilled} {rate:,.0f} tok/s")


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
