"""The optimiser of a training run: parameter groups (trunk, head, distance) and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from .config import TrainConfig

__all__ = ["param_groups", "build_optimizer", "lr_factor", "set_lr"]

# Top-level module names that mark a model's pretrained trunk (its learning rate is --trunk-lr).
_TRUNK_WORDS = ("trunk", "backbone", "encoder")


def param_groups(cfg: TrainConfig, pair: torch.nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters of ``pair`` (a PairModel) as optimiser groups named trunk, head and distance.

    A model without a trunk submodule (a plain timm model) is all trunk. HOLEF W (``distance``, in the
    model or held by the loss) gets no weight decay: it has its own regulariser towards the identity.
    """
    trunk, head, no_decay = [], [], []
    names = [n for n, _ in pair.model.named_parameters()]
    has_trunk = any(any(w in n.split(".")[0] for w in _TRUNK_WORDS) for n in names)
    for name, p in pair.model.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".")[0]
        if top == "distance":
            no_decay.append(p)
        elif not has_trunk or any(w in top for w in _TRUNK_WORDS):
            trunk.append(p)
        else:
            head.append(p)
    # The loss may share the model's HOLEF distance: add only parameters not already grouped.
    grouped = {id(p) for p in trunk + head + no_decay}
    no_decay += [p for p in pair.loss.parameters() if p.requires_grad and id(p) not in grouped]
    trunk_lr = cfg.lr if cfg.trunk_lr is None else cfg.trunk_lr
    distance_lr = cfg.lr if cfg.distance_lr is None else cfg.distance_lr
    groups = [
        {"params": trunk, "lr": trunk_lr, "weight_decay": cfg.weight_decay, "name": "trunk"},
        {"params": head, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "head"},
        {"params": no_decay, "lr": distance_lr, "weight_decay": 0.0, "name": "distance"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg: TrainConfig, pair: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD over :func:`param_groups`; each group remembers its ``base_lr`` for the schedule."""
    groups = param_groups(cfg, pair)
    for g in groups:
        g["base_lr"] = g["lr"]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based) of ``total``.

    Linear warm-up from 1/(warmup+1) over ``warmup`` steps, then ``constant``, ``cosine`` (to 0 at
    ``total``) or ``onecycle`` (linear decay to 0 at ``total``, after the warm-up ramp).
    """
    if warmup and step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0 - t  # onecycle: ramp up (warm-up), then straight down


def set_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int, total: int) -> None:
    """Every group's learning rate for optimiser step ``step``: its ``base_lr`` times :func:`lr_factor`."""
    f = lr_factor(step, total, cfg.warmup_steps, cfg.schedule)
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * f
