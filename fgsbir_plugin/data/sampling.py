"""Sketch/photo pairs for training: a photo-aware batch sampler, a pair dataset and its collate.

A training batch holds B sketches with their own photos. Triplets are then formed inside the
batch, across modalities (sketch anchor, photo positive, photo negative), by a PML miner or loss
with ``labels`` = ``ref_labels`` = the photo index. The sampler puts P *distinct* photos in a batch
(K sketches of each), so every other photo of the batch is a true negative and the positive photo
is never drawn as a negative of its own sketch.

With ``groups`` (look-alike photos per photo, e.g. from the QMUL-V1 annotations: the photos annotators
compared with each sketch), a batch is built of groups of ``group_size`` photos that resemble each other,
so more of the negatives mined inside it are look-alikes.

The order of batches is a pure function of (seed, epoch), and each sample's augmentation a pure
function of (seed, epoch, sketch index); a run resumed at batch ``b`` of an epoch therefore sees the
same remaining batches and the same pixels as an uninterrupted one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import torch

from .transforms import ImageTable, ImageTransform, sample_generator

__all__ = ["pair_index", "look_alikes", "PairBatchSampler", "PairDataset", "collate_pairs"]


def pair_index(sketch_photo_ids: Sequence[str], photo_ids: Sequence[str]) -> torch.Tensor:
    """The row of ``photo_ids`` each sketch depicts: ``[Ns]`` int64.

    Raises ValueError naming the first sketch whose photo is missing from the photo table, or a
    duplicated photo id (the gallery must hold unique photos).
    """
    lookup: dict[str, int] = {}
    for i, pid in enumerate(photo_ids):
        if pid in lookup:
            raise ValueError(
                f"photo_id {pid!r} appears twice in the photo table; the gallery must hold unique photos."
            )
        lookup[pid] = i
    out = torch.empty(len(sketch_photo_ids), dtype=torch.long)
    for i, pid in enumerate(sketch_photo_ids):
        j = lookup.get(pid)
        if j is None:
            raise ValueError(
                f"sketch {i} names photo_id {pid!r}, which is not in the photo table of the same split; "
                "check that sketches and photos come from the same dataset and split."
            )
        out[i] = j
    return out


def look_alikes(
    triplets, sketch_ids: Sequence[str], sketch_photo_ids: Sequence[str], photo_ids: Sequence[str]
) -> list[list[int]]:
    """Per row of ``photo_ids``, the rows of the photos that annotators compared with its sketches.

    Args:
        triplets: annotated triplets with columns ``sketch_id``, ``positive_photo_id``,
            ``negative_photo_id`` (a ``datasets.Dataset`` from ``annotated_triplets(...)["train"]``).
        sketch_ids, sketch_photo_ids: the training sketches and the photo each depicts.
        photo_ids: the training photos (the sampler's photo indices).

    Triplets of sketches not in ``sketch_ids`` (a validation carve) and photos not in ``photo_ids`` are
    left out, so nothing outside the training split reaches a batch.

    Raises:
        ValueError: when no triplet names a training sketch (the annotations belong to other data).
    """
    photo_row = {pid: i for i, pid in enumerate(photo_ids)}
    photo_of = dict(zip(sketch_ids, sketch_photo_ids))
    near: list[set[int]] = [set() for _ in photo_ids]
    used = 0
    for sid, pos, neg in zip(
        triplets["sketch_id"], triplets["positive_photo_id"], triplets["negative_photo_id"]
    ):
        own = photo_row.get(photo_of.get(sid))
        if own is None:
            continue
        used += 1
        near[own].update(photo_row[q] for q in (pos, neg) if q in photo_row)
    if not used:
        raise ValueError(
            "no annotated triplet names a training sketch; the annotations do not belong to this dataset."
        )
    return [sorted(n - {i}) for i, n in enumerate(near)]


class PairBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(epoch, sketch index)`` with P distinct photos x K sketches of each.

    Sketches are grouped K per photo (a photo with fewer than K sketches repeats them), the groups
    are shuffled and packed greedily into batches of P = ``batch_size // k`` distinct photos; a
    group whose photo is already in the batch waits for the next batch. An epoch has a fixed
    number of full batches, ``ceil(groups / P)`` (cut to a multiple of ``world_size``); a batch the
    shuffled groups cannot fill (the tail, or too many groups of one photo) is topped up with
    groups of other photos drawn from a second shuffle, so every epoch has the same length.

    Args:
        sketch_to_photo: ``[Ns]`` photo index of each sketch (from :func:`pair_index`).
        batch_size: sketches per batch on this process (a multiple of ``k``).
        k: sketches per photo in a batch.
        seed: run seed; the order depends on (seed, epoch) only.
        rank, world_size: for DDP; process ``rank`` takes every ``world_size``-th batch, and the
            number of batches is cut to a multiple of ``world_size`` so all processes step together.
        groups: optional, per photo index, the photo indices that look like it (its look-alikes). Each
            group taken from the shuffle then brings up to ``group_size - 1`` of its photo's look-alikes not
            yet in the batch (drawn at random, one group of K sketches each), so a batch holds sets of
            similar photos. The number of batches per epoch does not change; a photo can then appear in
            more batches of an epoch than its own groups. None (the default) gives the plain sampler,
            batch for batch.
        group_size: photos per set of look-alikes (the photo and ``group_size - 1`` of its look-alikes);
            used only with ``groups``; from 2 to P.
    """

    def __init__(
        self,
        sketch_to_photo: torch.Tensor,
        batch_size: int,
        k: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        groups: Sequence[Sequence[int]] | None = None,
        group_size: int = 1,
    ) -> None:
        if k < 1 or batch_size < 1 or batch_size % k:
            raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of k ({k}).")
        photos = sketch_to_photo.tolist()
        self.num_photos = len(set(photos))
        self.p = batch_size // k
        if self.p < 2:
            raise ValueError(
                f"a batch needs at least 2 distinct photos to form negatives; got batch_size {batch_size}, k {k}."
            )
        if self.num_photos < 2:
            raise ValueError(
                f"the training split has {self.num_photos} photo(s), and a batch needs at least 2 to form "
                "negatives; give training more photos (a smaller --validation-size, or a smaller test share)."
            )
        if self.num_photos < self.p:
            raise ValueError(
                f"batch_size {batch_size} asks for {self.p} distinct photos but the split has only "
                f"{self.num_photos}; lower --batch-size."
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}.")
        self.sketch_to_photo = photos
        self.k, self.seed = k, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start_batch = 0
        self._by_photo: dict[int, list[int]] = {}
        for i, p in enumerate(photos):
            self._by_photo.setdefault(p, []).append(i)
        self.num_groups = sum(-(-len(m) // k) for m in self._by_photo.values())
        self.groups, self.group_size = self._check_groups(groups, group_size)
        batches = -(-self.num_groups // self.p)
        self.batches_per_epoch = (batches - batches % world_size) // world_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"{batches} batch(es) per epoch cannot be shared by {world_size} processes.")

    def _check_groups(self, groups, group_size) -> tuple[list[list[int]] | None, int]:
        if groups is None:
            return None, 1
        if isinstance(group_size, bool) or not isinstance(group_size, int) or not 2 <= group_size <= self.p:
            raise ValueError(
                f"group_size must be an integer from 2 to the {self.p} photos of a batch, got {group_size!r}."
            )
        n = max(self._by_photo) + 1
        if len(groups) < n:
            raise ValueError(
                f"groups lists look-alikes for {len(groups)} photos but the sketches name photo index {n - 1}; "
                "give one list per photo of the training split."
            )
        out = []
        for p, near in enumerate(groups):
            near = [int(q) for q in near]
            bad = [q for q in near if q not in self._by_photo]
            if bad:
                raise ValueError(
                    f"groups[{p}] names photo {bad[0]}, which has no training sketch; "
                    "keep only photos of the training split."
                )
            out.append(sorted(set(near) - {p}))
        return out, group_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to draw, and skip its first ``start_batch`` batches (of this process) on resume."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All ``batches_per_epoch`` batches of ``epoch`` for this process, as lists of sketch indices."""
        g = torch.Generator()
        g.manual_seed(self.seed * 7919 + epoch)
        groups: list[list[int]] = []
        of_photo: dict[int, list[list[int]]] = {}
        for p in sorted(self._by_photo):
            members = self._by_photo[p]
            order = [members[j] for j in torch.randperm(len(members), generator=g).tolist()]
            n_groups = -(-len(order) // self.k)
            padded = [order[j % len(order)] for j in range(n_groups * self.k)]
            own = [padded[j * self.k : (j + 1) * self.k] for j in range(n_groups)]
            of_photo[p] = own
            groups += own
        pending = deque(groups[j] for j in torch.randperm(len(groups), generator=g).tolist())
        top_up = [groups[j] for j in torch.randperm(len(groups), generator=g).tolist()]
        next_top_up = 0
        batches: list[list[int]] = []
        for _ in range(self.batches_per_epoch * self.world_size):
            batch: list[int] = []
            seen: set[int] = set()
            skipped: list[list[int]] = []
            while pending and len(seen) < self.p:
                group = pending.popleft()
                photo = self.sketch_to_photo[group[0]]
                if photo in seen:
                    skipped.append(group)
                else:
                    seen.add(photo)
                    batch += group
                    if self.groups is not None:
                        batch += self._look_alikes(photo, seen, of_photo, g)
            pending.extendleft(reversed(skipped))
            scanned = 0
            while len(seen) < self.p and scanned < len(top_up):
                group = top_up[next_top_up % len(top_up)]
                next_top_up += 1
                scanned += 1
                if self.sketch_to_photo[group[0]] not in seen:
                    seen.add(self.sketch_to_photo[group[0]])
                    batch += group
            batches.append(batch)
        return batches[self.rank :: self.world_size]

    def _look_alikes(self, photo: int, seen: set[int], of_photo, g: torch.Generator) -> list[int]:
        """Sketch indices of up to ``group_size - 1`` look-alikes of ``photo`` not yet in the batch (added to ``seen``)."""
        near = [q for q in self.groups[photo] if q not in seen]
        out: list[int] = []
        taken = 0
        for j in torch.randperm(len(near), generator=g).tolist():
            if taken == self.group_size - 1 or len(seen) == self.p:
                break
            q = near[j]
            own = of_photo[q]
            seen.add(q)
            out += own[int(torch.randint(len(own), (1,), generator=g))]
            taken += 1
        return out

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.epoch_batches(self.epoch)[self.start_batch :]:
            yield [(self.epoch, i) for i in batch]


class PairDataset(torch.utils.data.Dataset):
    """Item ``(epoch, i)`` -> ``(sketch [C, S, S], photo [C', S, S], photo index)`` for sketch ``i``.

    Augmentations are seeded by (seed, epoch, i) so they do not depend on the worker or the order.
    """

    def __init__(
        self,
        sketches: ImageTable,
        photos: ImageTable,
        sketch_to_photo: torch.Tensor,
        sketch_transform: ImageTransform,
        photo_transform: ImageTransform,
        seed: int = 0,
    ) -> None:
        if len(sketch_to_photo) != len(sketches):
            raise ValueError(
                f"sketch_to_photo has {len(sketch_to_photo)} entries for {len(sketches)} sketches."
            )
        self.sketches, self.photos = sketches, photos
        self.sketch_to_photo = sketch_to_photo
        self.sketch_transform, self.photo_transform = sketch_transform, photo_transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.sketches)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        epoch, i = key
        p = int(self.sketch_to_photo[i])
        g = sample_generator(self.seed, epoch, i)
        sketch = self.sketch_transform(self.sketches[i], g)
        photo = self.photo_transform(self.photos[p], g)
        return sketch, photo, p


def collate_pairs(
    items: list[tuple[torch.Tensor, torch.Tensor, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack pairs into ``(sketch [B, C, S, S], photo [B, C', S, S], photo index [B] int64)``."""
    sketches = torch.stack([it[0] for it in items])
    photos = torch.stack([it[1] for it in items])
    labels = torch.tensor([it[2] for it in items], dtype=torch.long)
    return sketches, photos, labels
