"""Which cells of the GPU accuracy protocol run next, and whether they fit: the GPU suite's schedule.

Names and seconds only (no torch), so that it is tested in milliseconds.

Priority (:func:`priority_order`), from the first tier down:

1. the headline rows (:data:`HEADLINE`: the triplet network and the full DSSA) on every dataset, first seed;
2. the other rows, first seed;
3. the headline rows, the later seeds;
4. the other rows, the later seeds.

Within a tier: seed by seed, then dataset by dataset and method by method in the config's order, so that
the cells of one dataset and seed, which share their decoded images, run one after the other.

A cell starts only when its estimate (:class:`Estimator`) fits in the time left (:func:`next_cell`): the
first pending cell in priority order that fits, so a smaller cell further down fills the end of a call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

HEADLINE = ("triplet", "dssa_full")


def cpu_share(processes: int, cores: int | None = None) -> int:
    """CPU threads for each of ``processes`` processes that share this machine's cores (at least 1)."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, processes))


@dataclass(frozen=True)
class Cell:
    dataset: str
    method: str
    seed: int

    def __str__(self) -> str:
        return f"{self.dataset}/{self.method}/seed{self.seed}"


def priority_order(
    datasets: Sequence[str], methods: Sequence[str], seeds: Sequence[int], headline: Sequence[str] = HEADLINE
) -> list[Cell]:
    """Every cell of the grid, most wanted first (see the module docstring)."""
    first, later = list(seeds[:1]), list(seeds[1:])
    top = [m for m in methods if m in headline]
    rest = [m for m in methods if m not in headline]
    order = []
    for tier_seeds, tier_methods in ((first, top), (first, rest), (later, top), (later, rest)):
        for seed in tier_seeds:
            for dataset in datasets:
                order += [Cell(dataset, method, seed) for method in tier_methods]
    return order


@dataclass
class Estimator:
    """Seconds a cell will take, from the cells measured so far (this call's and earlier calls' on a GPU).

    A trained cell's time grows with its dataset's training sketches (``sizes``): a measured cell gives a
    rate in seconds per training sketch, used for the same method first, then for any trained method, then
    ``prior_s_per_sketch``; untrained cells (``untrained``: no training, one test pass) take the slowest
    measured untrained cell of their dataset, else ``untrained_prior_s``. ``safety`` covers the spread
    between seeds (early stopping ends cells at different steps).
    """

    sizes: dict[str, float]
    untrained: frozenset[str] = frozenset()
    prior_s_per_sketch: float = 0.15
    fixed_s: float = 15.0
    untrained_prior_s: float = 20.0
    default_size: float = 500.0
    safety: float = 1.25
    measured: list[tuple[Cell, float]] = field(default_factory=list)

    def add(self, cell: Cell, wall_s: float) -> None:
        self.measured.append((cell, float(wall_s)))

    def _size(self, dataset: str) -> float:
        return float(self.sizes.get(dataset) or self.default_size)

    def estimate(self, cell: Cell) -> float:
        if cell.method in self.untrained:
            same = [w for c, w in self.measured if c.dataset == cell.dataset and c.method in self.untrained]
            return max(same) * self.safety if same else self.untrained_prior_s
        trained = [(c, w) for c, w in self.measured if c.method not in self.untrained and w > 0]
        same_method = [(c, w) for c, w in trained if c.method == cell.method]
        for pool in (same_method, trained):
            if pool:
                rate = max(w / self._size(c.dataset) for c, w in pool)
                return rate * self._size(cell.dataset) * self.safety
        return self.fixed_s + self.prior_s_per_sketch * self._size(cell.dataset)


def next_cell(pending: Iterable[Cell], estimator: Estimator, time_left_s: float) -> tuple[Cell, float] | None:
    """The first pending cell (in the given order) whose estimate fits in ``time_left_s``, with its estimate."""
    for cell in pending:
        estimate = estimator.estimate(cell)
        if estimate <= time_left_s:
            return cell, estimate
    return None


def calls_left(pending: Sequence[Cell], estimator: Estimator, usable_s: float, at_once: int = 1) -> int:
    """How many more calls of ``usable_s`` seconds of cells the pending cells need (0 when none is pending),
    ``at_once`` cells running side by side (their estimates are wall times measured that way)."""
    if not pending:
        return 0
    total = sum(estimator.estimate(c) for c in pending)
    return max(1, math.ceil(total / (max(usable_s, 1.0) * max(at_once, 1))))
