"""The learning-rate schedule and the optimizer of a training run.

Warmup-stable-decay: the rate warms up linearly over `warmup_steps` (again from wherever a fresh optimizer
starts), holds at `lr`, and, when the run has a cooldown, decays linearly to `lr * min_lr_ratio` over the last
`cooldown_steps` of `max_steps`. The stable phase has no known end, so a decay is a branch: a later run with
another decay goes on from the stable phase's checkpoint, not from the decayed weights (`resume_path`).
The optimizer is AdamW, or Muon for the hidden weight matrices with AdamW for the rest.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dglsp.tools.options import TrainConfig, cooldown_start


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


def trainable(model: torch.nn.Module, cfg: TrainConfig) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters this run trains (`train_only`); the others are frozen, so no gradient is computed for them."""
    prefixes = tuple(p.strip() for p in cfg.train_only.split(",") if p.strip())
    named = list(model.named_parameters())
    for name, parameter in named:
        parameter.requires_grad_(not prefixes or name.startswith(prefixes))
    chosen = [(name, p) for name, p in named if p.requires_grad]
    if not chosen:
        raise ValueError(f"--train-only {cfg.train_only!r} names no parameter of the model")
    return chosen


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or Muon for the hidden weight matrices with AdamW for the rest (embeddings, norms, biases)."""
    named = trainable(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW([p for _, p in named], lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 betas=(0.9, cfg.adam_beta2))
    # The embedding (tied to the LM head) is a lookup table, not a transform: it stays with AdamW.
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
