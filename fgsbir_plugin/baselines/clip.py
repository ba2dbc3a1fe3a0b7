"""CLIP (open_clip) image encoder as a sketch/photo embedder, zero-shot or lightly adapted.

One image tower embeds both modalities. ``adapt="none"`` is zero-shot CLIP (every weight
frozen, cosine distance on the tower's output); ``adapt="ln_proj"`` trains only the tower's
LayerNorm affine parameters plus a new square projection initialised to the identity, the
light adaptation used as the "CLIP fine-tuned" baseline. open_clip weights are downloaded by
open_clip itself (``pretrained="openai"``) or read from a local checkpoint file; nothing here
downloads on its own.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CLIPImageEmbedder", "ADAPT_MODES"]

ADAPT_MODES = ("none", "ln_proj")


class CLIPImageEmbedder(nn.Module):
    """Embed images with an open_clip vision tower.

    Args:
        visual: an open_clip vision tower mapping [B, 3, H, W] to [B, embed_dim].
        embed_dim: the tower's output width.
        image_size: the tower's input side in pixels.
        mean, std: per-channel normalisation the tower was trained with.
        adapt: ``"none"`` (frozen, zero-shot) or ``"ln_proj"`` (LayerNorms + identity-initialised projection).

    ``forward(x, modality=None)`` returns L2-normalised embeddings [B, embed_dim]; ``modality``
    is accepted for the harness's sake and ignored (one shared tower).
    """

    def __init__(
        self,
        visual: nn.Module,
        embed_dim: int,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        adapt: str = "none",
    ):
        super().__init__()
        if adapt not in ADAPT_MODES:
            raise ValueError(f"adapt must be one of {ADAPT_MODES}, got {adapt!r}.")
        self.visual = visual
        self.adapt = adapt
        self.num_features = embed_dim
        self.pretrained_cfg = {
            "input_size": (3, image_size, image_size),
            "mean": tuple(mean),
            "std": tuple(std),
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "crop_mode": "center",
        }
        for p in self.visual.parameters():
            p.requires_grad_(False)
        self.proj: nn.Linear | None = None
        if adapt == "ln_proj":
            for module in self.visual.modules():
                if isinstance(module, nn.LayerNorm):
                    for p in module.parameters():
                        p.requires_grad_(True)
            self.proj = nn.Linear(embed_dim, embed_dim, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(embed_dim))

    @classmethod
    def from_pretrained(
        cls, model_name: str = "ViT-B-32", pretrained: str | os.PathLike = "openai", adapt: str = "none"
    ) -> CLIPImageEmbedder:
        """Build from an open_clip model name and a pretrained tag or a local checkpoint file.

        A tag (``"openai"``, ``"laion2b_s34b_b79k"``) makes open_clip download the weights; a path
        to a local file is read with ``weights_only=True``.
        """
        import open_clip

        if open_clip.get_model_config(model_name) is None:
            raise ValueError(
                f"unknown open_clip model {model_name!r}; pick one of open_clip.list_models(), e.g. 'ViT-B-32'."
            )
        pretrained = os.fspath(pretrained)
        model = open_clip.create_model(model_name, pretrained=pretrained, weights_only=True)
        cfg = open_clip.get_model_config(model_name)
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        return cls(model.visual, cfg["embed_dim"], int(size), mean, std, adapt=adapt)

    @classmethod
    def from_config(cls, embed_dim: int, vision_cfg: dict, adapt: str = "none") -> CLIPImageEmbedder:
        """Build a randomly initialised tower from an open_clip vision config (for tests and smoke runs)."""
        import open_clip
        from open_clip.model import _build_vision_tower

        visual = _build_vision_tower(embed_dim, vision_cfg)
        return cls(
            visual,
            embed_dim,
            int(vision_cfg["image_size"]),
            open_clip.OPENAI_DATASET_MEAN,
            open_clip.OPENAI_DATASET_STD,
            adapt=adapt,
        )

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"expected images [B, 3, H, W], got shape {tuple(x.shape)}; repeat 1-channel sketches to 3."
            )
        z = self.visual(x)
        if self.proj is not None:
            z = self.proj(z)
        return F.normalize(z, dim=-1)
