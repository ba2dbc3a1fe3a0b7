"""The head of DSSA: spatial attention and the coarse+fine shortcut fusion, each a small ``nn.Module``."""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ATTENTION_RESIDUALS", "BRANCHES", "SpatialAttention", "CoarseFineFusion"]


ATTENTION_RESIDUALS = ("scaled", "paper")


class SpatialAttention(nn.Module):
    """Spatial attention with a residual: f [B, C, H, W] -> (attended f, m [B, 1, H, W]).

    m = softmax over the H*W positions of conv2(relu(conv1(f))), conv1 1x1 C -> hidden_chs, conv2 1x1
    hidden_chs -> 1. conv2 has no bias: a constant added before a softmax changes nothing (and would be a
    parameter whose gradient is always zero). Works for any H, W.

    ``residual="scaled"`` (default) returns f * (1 + H*W*m): the mask is measured against a uniform map, so
    attention and shortcut weigh the same and a trained mask can move half the weight of the map.
    ``residual="paper"`` returns f + f * m, the formula as written; since m sums to 1, the attended term is
    1/(H*W) of the shortcut (1/49 at 7x7), and the mask barely changes the embedding or receives gradient.

    conv2 starts at zero, so a new attention is uniform and the model starts as its no-attention ablation
    (times 2); training moves the mask away from uniform only where that lowers the loss.
    """

    def __init__(
        self, in_chs: int, hidden_chs: int | None = None, residual: str = "scaled", device=None, dtype=None
    ):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if residual not in ATTENTION_RESIDUALS:
            raise ValueError(f"residual must be one of {ATTENTION_RESIDUALS}, got {residual!r}.")
        self.scaled = residual == "scaled"
        hidden_chs = hidden_chs or in_chs
        self.conv1 = nn.Conv2d(in_chs, hidden_chs, 1, **dd)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(hidden_chs, 1, 1, bias=False, **dd)
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.conv2(self.act(self.conv1(x)))
        mask = logits.flatten(2).softmax(dim=-1).view_as(logits)
        if self.scaled:
            return x * (1.0 + (x.shape[-2] * x.shape[-1]) * mask), mask
        return x + x * mask, mask


BRANCHES = ("coarse+fine", "coarse", "fine")


class CoarseFineFusion(nn.Module):
    """Coarse+fine shortcut fusion: attended map [B, C, H, W] -> embedding [B, out_dim].

    Args:
        in_chs: C.
        grid: the fixed grid the coarse branch pools to before fc6.
        coarse_chs: the coarse branch reduces C to this with a 1x1 conv + ReLU when C is larger.
        hidden_dim: fc6 width (512).
        coarse_dim: fc7 width (256).
        fine_dim: fine branch width; a bias-free linear projection of the sum-pool is added when C differs
            (None keeps C).
        fusion: False keeps only the coarse branch (Triplet-SN style), out_dim = coarse_dim.
        branches: which branches make the embedding: ``"coarse+fine"`` (fusion, the default), ``"coarse"``
            (what ``fusion=False`` selects) or ``"fine"`` (global pooling only: the plain triplet network).
        renormalize: L2-normalise the concatenation (default False: the paper's concat of two unit vectors).
        drop_rate: dropout after fc6.
    """

    def __init__(
        self,
        in_chs: int,
        grid: tuple[int, int] = (7, 7),
        coarse_chs: int = 256,
        hidden_dim: int = 512,
        coarse_dim: int = 256,
        fine_dim: int | None = 256,
        fusion: bool = True,
        renormalize: bool = False,
        drop_rate: float = 0.0,
        branches: str | None = None,
        device=None,
        dtype=None,
    ):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        branches = branches or ("coarse+fine" if fusion else "coarse")
        if branches not in BRANCHES:
            raise ValueError(f"branches must be one of {BRANCHES}, got {branches!r}.")
        self.grid = (int(grid[0]), int(grid[1]))
        self.branches = branches
        self.use_coarse, self.use_fine = "coarse" in branches, "fine" in branches
        self.fusion = self.use_coarse and self.use_fine
        self.renormalize = renormalize
        if self.use_coarse:
            if in_chs > coarse_chs:
                self.reduce = nn.Sequential(nn.Conv2d(in_chs, coarse_chs, 1, **dd), nn.ReLU())
                reduced = coarse_chs
            else:
                self.reduce = nn.Identity()
                reduced = in_chs
            self.fc6 = nn.Linear(reduced * self.grid[0] * self.grid[1], hidden_dim, **dd)
            self.act = nn.ReLU()
            self.drop = nn.Dropout(drop_rate)
            self.fc7 = nn.Linear(hidden_dim, coarse_dim, **dd)
        project = self.use_fine and fine_dim is not None and fine_dim != in_chs
        self.fine_proj = nn.Linear(in_chs, fine_dim, bias=False, **dd) if project else nn.Identity()
        fine_out = (fine_dim if project else in_chs) if self.use_fine else 0
        self.out_dim = (coarse_dim if self.use_coarse else 0) + fine_out

    def forward_branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The L2-normalised branch embeddings, coarse first: ``[coarse [B, coarse_dim]?, fine [B, fine]?]``."""
        out = []
        if self.use_coarse:
            coarse = self.reduce(F.adaptive_avg_pool2d(x, self.grid)).flatten(1)
            coarse = self.fc7(self.drop(self.act(self.fc6(coarse))))
            out.append(F.normalize(coarse, dim=1))
        if self.use_fine:
            out.append(F.normalize(self.fine_proj(x.sum(dim=(2, 3))), dim=1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.forward_branches(x)
        if len(parts) == 1:
            return parts[0]
        out = torch.cat(parts, dim=1)
        if self.renormalize:
            out = F.normalize(out, dim=1)
        return out
