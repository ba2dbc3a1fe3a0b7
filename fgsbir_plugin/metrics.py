"""Retrieval metrics for fine-grained SBIR: acc@K, mAP, mean and median rank.

Each query (a sketch) has exactly one relevant gallery item: the photo it was drawn from. The
gallery is the set of unique photos of a split, so one relevant item per query is the general
case here; mAP then reduces to the mean reciprocal rank.

Ties count against the model: a gallery item at exactly the same distance as the true photo is
ranked ahead of it. A model that maps everything to one point therefore scores the worst rank,
never the best.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["rank_of_target", "retrieval_metrics"]


def _check(dist: torch.Tensor, target: torch.Tensor) -> None:
    if not isinstance(dist, torch.Tensor) or dist.ndim != 2:
        raise ValueError(
            f"dist must be a 2-D tensor [num_queries, num_gallery], got "
            f"{tuple(dist.shape) if isinstance(dist, torch.Tensor) else type(dist).__name__}."
        )
    if dist.shape[0] == 0 or dist.shape[1] == 0:
        raise ValueError(
            f"dist must have at least one query and one gallery item, got shape {tuple(dist.shape)}."
        )
    if not isinstance(target, torch.Tensor) or target.ndim != 1 or target.shape[0] != dist.shape[0]:
        raise ValueError(
            f"target must be a 1-D tensor with one gallery index per query ({dist.shape[0]}), got "
            f"{tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__}."
        )
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer gallery indices, got dtype {target.dtype}.")
    if int(target.min()) < 0 or int(target.max()) >= dist.shape[1]:
        raise ValueError(
            f"target holds gallery indices outside [0, {dist.shape[1] - 1}] "
            f"(min {int(target.min())}, max {int(target.max())})."
        )
    if torch.isnan(dist).any():
        raise ValueError("dist contains NaN; check the embeddings (a diverged model gives NaN distances).")


def rank_of_target(dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The 1-based rank of each query's true gallery item, ties counted against the model.

    Args:
        dist: [Nq, Ng] distances (smaller = more similar).
        target: [Nq] integer index into the gallery of each query's true item.

    Returns:
        [Nq] int64 ranks in 1..Ng: 1 + the number of *other* gallery items whose distance is
        less than or equal to the true item's distance.
    """
    _check(dist, target)
    target = target.to(device=dist.device, dtype=torch.long)
    true_dist = dist.gather(1, target[:, None])  # [Nq, 1]
    at_or_ahead = (dist <= true_dist).sum(dim=1)  # counts the true item itself once
    return at_or_ahead.to(torch.long)


def retrieval_metrics(
    dist: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """acc@K (percent), mAP (percent), mean and median rank (1-based) of a sketch -> photo search.

    Args:
        dist: [Nq, Ng] distances between each query and each gallery item (smaller = closer).
        target: [Nq] gallery index of each query's photo.
        ks: the cut-offs K for acc@K; each must be a positive integer.

    Returns:
        ``{"acc@1": .., "acc@5": .., "acc@10": .., "mAP": .., "mean_rank": .., "median_rank": ..}``
        (one "acc@K" key per K). acc@K is the percentage of queries whose photo ranks K or better;
        mAP is the mean average precision in percent, which with one relevant photo per query is
        100 * mean(1 / rank); the median of an even number of ranks is the mean of the middle two.
    """
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers such as (1, 5, 10), got {ks!r}.")
    ranks = rank_of_target(dist, target).to(torch.float64)
    out: dict[str, float] = {}
    for k in ks:
        out[f"acc@{k}"] = float((ranks <= k).to(torch.float64).mean() * 100.0)
    out["mAP"] = float((1.0 / ranks).mean() * 100.0)
    out["mean_rank"] = float(ranks.mean())
    # torch.median returns the lower middle value; the usual median averages the two middles.
    sorted_ranks = ranks.sort().values
    n = sorted_ranks.numel()
    mid = n // 2
    median = sorted_ranks[mid] if n % 2 else (sorted_ranks[mid - 1] + sorted_ranks[mid]) / 2
    out["median_rank"] = float(median)
    return out
