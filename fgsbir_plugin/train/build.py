"""What a training run is made of, built from its :class:`~fgsbir_plugin.train.config.TrainConfig`:
the datasets, the model, the loss (a PML loss, its miner and distance) and the pair model that
embeds a sketch batch and a photo batch in one forward.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from pytorch_metric_learning import distances, losses, miners

from .. import models  # noqa: F401  (registers the DSSA family with timm)
from ..data import load_fgsbir_pair
from ..embedding import embedding_dim, forward_embed
from ..holef import HOLEFDistance, HOLEFLoss
from .config import TrainConfig

__all__ = [
    "check_model_name",
    "build_model",
    "make_holef_loss",
    "build_loss",
    "loss_distance",
    "saved_model_args",
    "PairModel",
    "CachedPairModel",
    "load_datasets",
]


def check_model_name(name: str) -> None:
    """ValueError unless timm (with the DSSA family registered) knows ``name``."""
    if not timm.is_model(name) and not name.startswith(("hf-hub:", "local-dir:")):
        raise ValueError(
            f"unknown model {name!r}; pick a timm model name, e.g. one of timm.list_models('dssa*')."
        )


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """``timm.create_model(cfg.model, pretrained=cfg.pretrained, num_classes=0, **cfg.model_kwargs)``.

    With ``loss = holef`` the model is asked for ``holef=True`` so that it owns ``model.distance``
    (HOLEF W travels with the weights). A plain timm model is built with ``num_classes=0`` so that
    ``model(x)`` is the pooled embedding.
    """
    check_model_name(cfg.model)
    kwargs = dict(cfg.model_kwargs)
    kwargs.setdefault("num_classes", 0)
    if cfg.loss == "holef":
        kwargs.setdefault("holef", True)
    try:
        return timm.create_model(cfg.model, pretrained=cfg.pretrained, **kwargs)
    except (TypeError, NotImplementedError):
        if kwargs.get("holef") and "holef" not in cfg.model_kwargs:
            # The model has no HOLEF support (a plain timm trunk): HOLEF W lives in the loss instead.
            kwargs.pop("holef")
            return timm.create_model(cfg.model, pretrained=cfg.pretrained, **kwargs)
        raise


def make_holef_loss(distance: HOLEFDistance, margin: float, lam: float) -> HOLEFLoss:
    """``HOLEFLoss`` (triplet on the HOLEF energy + ``lam * ||W - I||_F^2``) sharing ``distance``."""
    return HOLEFLoss(distance=distance, margin=margin, reg_weight=lam)


def build_loss(
    cfg: TrainConfig, model: torch.nn.Module
) -> tuple[torch.nn.Module, torch.nn.Module | None, Any]:
    """(loss, miner or None, distance) for ``cfg.loss`` / ``cfg.miner``.

    triplet: PML ``TripletMarginLoss(margin)`` on the squared Euclidean distance of L2-normalised
    embeddings, which is the HOLEF energy with W = I: the margin means the same in both.
    triplet_l2: the same on the (non-squared) Euclidean distance.
    holef: ``HOLEFLoss`` with the model's ``distance`` (a HOLEFDistance) when the model has one,
    else a new ``HOLEFDistance(embedding width)`` held by the loss. The miner uses the same distance.
    """
    if cfg.loss in ("triplet", "triplet_l2"):
        power = 2 if cfg.loss == "triplet" else 1
        distance = distances.LpDistance(normalize_embeddings=True, p=2, power=power)
        loss = losses.TripletMarginLoss(margin=cfg.margin, distance=distance)
    else:
        distance = getattr(model, "distance", None)
        if distance is None:
            distance = HOLEFDistance(embedding_dim(model))
        loss = make_holef_loss(distance, cfg.margin, cfg.holef_lambda)
    miner = None
    if cfg.miner == "batch-hard":
        miner = miners.BatchHardMiner(distance=distance)
    elif cfg.miner == "semi-hard":
        miner = miners.TripletMarginMiner(margin=cfg.margin, type_of_triplets="semihard", distance=distance)
    return loss, miner, distance


def loss_distance(loss_fn: torch.nn.Module) -> HOLEFDistance | None:
    """The HOLEF distance held by the loss when the model has none (None for the Euclidean losses)."""
    d = getattr(loss_fn, "distance", None)
    return None if d is None or isinstance(d, distances.LpDistance) else d


def saved_model_args(cfg: TrainConfig, model: torch.nn.Module) -> dict[str, Any]:
    """The constructor arguments recorded with the saved model (``holef`` when it owns a distance).

    ``pretrained_backbone`` (starting weights, replaced by the saved ones) and ``pretrained_cfg_overlay`` (already
    folded into the saved ``pretrained_cfg``; timm's loader passes its own) are left out.
    """
    args = {
        k: v
        for k, v in cfg.model_kwargs.items()
        if k not in ("pretrained_backbone", "pretrained_cfg_overlay")
    }
    if getattr(model, "distance", None) is not None:
        args["holef"] = True
    return args


class PairModel(torch.nn.Module):
    """Embeds a sketch batch and a photo batch in one ``forward`` (one DDP forward per step).

    Holds the loss too, so that loss parameters (a HOLEF W not owned by the model) are trained,
    synchronised by DDP and checkpointed like the model's.
    """

    def __init__(self, model: torch.nn.Module, loss: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, sketch: torch.Tensor, photo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_embed(self.model, sketch, "sketch"), forward_embed(self.model, photo, "photo")


class CachedPairModel(PairModel):
    """A :class:`PairModel` whose inputs are cached outputs of a frozen trunk prefix (see ``train.frozen``)."""

    def __init__(self, model: torch.nn.Module, loss: torch.nn.Module, frozen) -> None:
        super().__init__(model, loss)
        self.frozen = frozen

    def forward(self, sketch: torch.Tensor, photo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.frozen.rest(sketch), self.frozen.rest(photo)


def load_datasets(cfg: TrainConfig):
    """(sketches, photos) DatasetDicts with the validation split carved from train by photo."""
    return load_fgsbir_pair(
        cfg.data, cfg.data_dir, validation_size=cfg.validation_size, seed=cfg.seed, **cfg.data_kwargs
    )
