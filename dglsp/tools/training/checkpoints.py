"""What a training run keeps: its checkpoints, the model directories it exports and ships, its training log.

`checkpoint.pt` in the work dir holds the model, the optimizer, the `TrainState` counters and the config; it is
replaced atomically, so a run killed at any moment resumes from the last one. With no checkpoint, a run goes on
from a shipped model directory (its weights and counters; the optimizer starts fresh). An export is a model
directory the server loads: fp16 weights (bf16 when one is out of fp16's range), `dglsp.json` with the serving
defaults and the training record, the corpus manifest and the model card. An export whose held-out loss is the
run's best so far is shipped: copied over the ship directory by swapping whole directories. The training log
has one row per stretch of training (`TrainState.stretches`): the model card's table, where `dglsp eval
--record` puts pass@1.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerBase

from dglsp.model.schedule import ModelDefaults
from dglsp.tools import modelzoo
from dglsp.tools.model_card import write_model_card
from dglsp.tools.options import TrainConfig, cooldown_start
from dglsp.tools.training.examples import Batch, Log, shipped_model
from dglsp.tools.training.objective import autocast_dtype, held_out_loss
from dglsp.tools.training.schedule import resume_path


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


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState,
                    cfg: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": asdict(state),
                "config": asdict(cfg)}, tmp)
    os.replace(tmp, path)  # atomic: a run killed mid-save leaves the previous checkpoint intact


def serving_defaults(cfg: TrainConfig, canvas_length: int) -> ModelDefaults:
    """The decoding an export recommends (its dglsp.json), from the run's `--serve-*` options."""
    defaults = ModelDefaults(
        canvas_length=canvas_length, max_steps=cfg.serve_steps, entropy_bound=cfg.serve_entropy_bound,
        t_max=cfg.serve_t_max, t_min=cfg.serve_t_min, decoding=cfg.serve_decoding,  # type: ignore[arg-type]
        policy=cfg.serve_policy, prefix_threshold=cfg.serve_prefix_threshold,  # type: ignore[arg-type]
        eos_freeze=cfg.serve_eos_freeze, line_canvas_length=cfg.serve_line_canvas_length or None,
        verify_steps=cfg.serve_verify_steps, verify_mix=cfg.serve_verify_mix, settle_steps=cfg.serve_settle_steps,
        min_confidence=cfg.serve_min_confidence, gate=cfg.serve_gate,  # type: ignore[arg-type]
        edit_predictor=cfg.serve_edit_predictor or (  # type: ignore[arg-type]
            "model" if cfg.edits and cfg.edit_prob > 0 else "substitution"),
    )
    defaults.check()
    return defaults


def export_model(model: DiffusionGemmaForBlockDiffusion, tokenizer: PreTrainedTokenizerBase, out_dir: Path,
                 manifest: dict, state: TrainState, cfg: TrainConfig, command: str) -> Path:
    """Write a loadable model directory with fp16 weights, the corpus manifest and a model card."""
    frozen = copy.deepcopy(model).eval()
    biggest = max(p.detach().abs().max().item() for p in frozen.parameters())
    dtype = torch.float16 if biggest < 60_000 else torch.bfloat16  # fp16 keeps more mantissa when it fits
    if out_dir.exists():
        shutil.rmtree(out_dir)
    defaults = serving_defaults(cfg, int(model.config.canvas_length or 32))
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
    modelzoo.save_model_dir(frozen, tokenizer, out_dir, defaults=defaults, dtype=dtype, snippets=cfg.snippet_prob > 0,
                            extra={"training": training})
    (out_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    write_model_card(out_dir)
    return out_dir


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


def resume(model: torch.nn.Module, optimizer: torch.optim.Optimizer, work_dir: Path, cfg: TrainConfig,
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


def export_and_ship(model: DiffusionGemmaForBlockDiffusion, tokenizer: PreTrainedTokenizerBase, export_dir: Path,
                    ship_dir: Path | None, manifest: dict, state: TrainState, cfg: TrainConfig, command: str,
                    eval_batches: list[Batch], log: Log) -> None:
    """Export the weights with their held-out loss; ship the export when that loss is the run's best so far."""
    held = held_out_loss(model, eval_batches, cfg)
    improved = held["loss"] < state.best_held_out
    if improved:
        state.best_held_out = held["loss"]
    _update_stretch(state, held["loss"])
    export_model(model, tokenizer, export_dir, manifest, state, cfg, command)
    log(f"exported step {state.step} to {export_dir} (held-out {held['loss']:.4f})")
    if ship_dir is not None and improved:
        ship(export_dir, ship_dir)
        log(f"shipped step {state.step} to {ship_dir}")


def open_stretch(state: TrainState) -> None:
    """A row of the training log for this run, or the day's row when the same day's run goes on.

    A row `dglsp eval --record` has scored is closed: its pass@1 belongs to the weights at its end.
    """
    today = time.strftime("%Y-%m-%d")
    last = state.stretches[-1] if state.stretches else {}
    if last.get("date") != today or "pass_at_1" in last:
        state.stretches.append({"date": today, "from_step": state.step})
    _update_stretch(state)


def _update_stretch(state: TrainState, held_out_loss: float | None = None) -> None:
    """The row's totals so far; its held-out loss is that of the weights at its end (the last export's), not the
    run's best: a stretch that made the model worse must say so."""
    row = state.stretches[-1]
    row.update({"steps": state.step, "tokens_seen": state.tokens_seen, "cpu_hours": round(state.cpu_seconds / 3600, 3)})
    if held_out_loss is not None:
        row["held_out_loss"] = round(held_out_loss, 4)
