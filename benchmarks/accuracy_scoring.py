"""One pass over a split's images: the retrieval distances, and what the model's parts do, measured.

:func:`score_test_split` embeds every sketch and photo of a split once and returns the distances and
metrics together with diagnostics taken from the same forward passes:

* attention lift (models with attention): the attention mass on object pixels divided by what a uniform
  map puts there. Object pixels are those darker than near-white (grey < :data:`INK_LEVEL`) in the
  model's evaluation view; each attention cell counts with the fraction of its pixels that are object
  pixels, so ``lift = sum(m * frac) / mean(frac)``: 1.0 for a uniform map, above 1 when the map sits on
  the ink / the object. Images without object pixels are left out.
* attention peak: the largest attention weight times ``h * w`` (1.0 for a uniform map).
* branch cosines: the mean cosine between different photos' fine-branch vectors (and coarse-branch
  vectors), from ``model.head.forward_branches`` on the attended map; near 1 means a branch gives every
  image the same vector. ``embedding_cosine_photo`` is the same for the whole retrieval embedding.

For a DSSA model trained with a frozen trunk prefix (``freeze``), the prefix's outputs for the split's
evaluation views are computed once per process (float32, in ``fgsbir_plugin.train.frozen``'s memory)
and shared by every model with the same prefix weights, as training shares its cached views.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fgsbir_plugin.data.sampling import pair_index
from fgsbir_plugin.data.transforms import ImageTable, ImageTransform, load_size_for
from fgsbir_plugin.embedding import embed_table, model_input_spec, retrieval_distance
from fgsbir_plugin.metrics import rank_of_target, retrieval_metrics
from fgsbir_plugin.train.frozen import FrozenTrunk, cached_views

INK_LEVEL = 0.9  # grey level (0 black .. 1 white) below which a pixel counts as ink / object
DIAGNOSTIC_KEYS = (
    "attention_lift_sketch",
    "attention_lift_photo",
    "attention_peak_sketch",
    "attention_peak_photo",
    "fine_cosine_photo",
    "coarse_cosine_photo",
    "embedding_cosine_photo",
)

# Decoded split images and their object masks by (dataset key, column, ids, input spec): many cells score
# the same test split in one process.
_TABLES: OrderedDict[tuple, tuple[Any, torch.Tensor]] = OrderedDict()
_TABLE_LIMIT = 4


@dataclass
class SplitEmbedding:
    """What one pass over one column of a split gives: embeddings, and for DSSA models the rest."""

    embeddings: torch.Tensor  # [N, D] float32
    attention: torch.Tensor | None = None  # [N, 1, h, w], sums to 1 over h*w
    branches: dict[str, torch.Tensor] | None = None  # "coarse" / "fine" -> [N, d]


@dataclass
class TestPass:
    """The result of :func:`score_test_split`."""

    dist: torch.Tensor  # [Nq, Ng] float64, smaller = closer
    target: torch.Tensor  # [Nq] gallery index of each sketch's photo
    metrics: dict[str, float]
    ranks: torch.Tensor  # [Nq] 1-based rank of the true photo, ties against the model
    diagnostics: dict[str, float | None]
    sketch: SplitEmbedding
    photo: SplitEmbedding
    sketch_table: Any  # ImageTable: uint8 [C, L, L] per image
    photo_table: Any
    image_size: int  # side of the evaluation view (the centre crop of the table's images)


def is_dssa(model: torch.nn.Module) -> bool:
    """True for models with the DSSA parts the diagnostics read (trunk map, attention, branch head)."""
    head = getattr(model, "head", None)
    return hasattr(model, "forward_map_with_attention") and hasattr(head, "forward_branches")


def centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The evaluation view of a decoded image ``[..., L, L]``: its centre ``size`` x ``size`` square."""
    h, w = img.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top : top + size, left : left + size]


def object_mask(views: torch.Tensor) -> torch.Tensor:
    """uint8 views ``[N, C, S, S]`` -> bool ``[N, S, S]``: pixels darker than :data:`INK_LEVEL`."""
    return views.float().mean(dim=1) < INK_LEVEL * 255.0


def attention_lift(mask: torch.Tensor, objects: torch.Tensor) -> tuple[float | None, float]:
    """(mean lift over images with object pixels, or None; mean peak) of attention ``mask`` [N, 1, h, w]."""
    h, w = mask.shape[-2:]
    frac = F.adaptive_avg_pool2d(objects[:, None].float(), (h, w))
    m = mask.float()
    mean_frac = frac.mean(dim=(1, 2, 3))
    has = mean_frac > 0
    lift = (m * frac).sum(dim=(1, 2, 3))[has] / mean_frac[has]
    peak = m.amax(dim=(1, 2, 3)) * (h * w)
    return (float(lift.mean()) if has.any() else None), float(peak.mean())


def mean_pairwise_cosine(vectors: torch.Tensor) -> float | None:
    """Mean cosine between different rows of ``vectors`` [N, D] (None for fewer than 2 rows)."""
    n = vectors.shape[0]
    if n < 2:
        return None
    v = F.normalize(vectors.double(), dim=1)
    gram = v @ v.T
    return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))


def _ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _table(split, column: str, spec: dict[str, Any], dataset_key: Any):
    """(ImageTable of ``split[column]``, object masks [N, S, S]), kept for the next cell of the same split."""

    load = load_size_for(spec["image_size"], spec["crop_pct"])
    ids = list(split[f"{column}_id"])
    key = (dataset_key, column, _ids_digest(ids), load, spec["image_size"], spec["in_chans"])
    if key not in _TABLES:
        table = ImageTable(split, column, load, spec["in_chans"], cache=True)
        views = centre_crop(table.tensor, spec["image_size"])
        _TABLES[key] = (table, object_mask(views))
        while len(_TABLES) > _TABLE_LIMIT:
            _TABLES.popitem(last=False)
    _TABLES.move_to_end(key)
    return _TABLES[key]


def _trunk_maps(model, table, ids, modality, tf, *, freeze, device, batch_size, memo_key):
    """Yields the trunk's maps [b, C, h, w] of ``table``'s evaluation views, batch by batch.

    With a frozen prefix, the prefix outputs come from (and go to) the per-process memory of
    ``fgsbir_plugin.train.frozen`` under ``memo_key`` (the dataset and the input spec) and the prefix's
    weights, so the next model with the same frozen prefix skips the prefix.
    """
    if freeze is None:
        for start in range(0, len(table), batch_size):
            x = torch.stack([tf(table[i]) for i in range(start, min(start + batch_size, len(table)))])
            yield model._trunk_map(x.to(device), modality)
        return

    frozen = FrozenTrunk(model, freeze)
    key = ("accuracy-test", frozen.fingerprint(), memo_key, modality)
    z = cached_views(frozen, table, ids, 1, tf, tf, device, batch_size, torch.float32, key)[:, 0]
    frozen.set_mode(False)
    for start in range(0, len(z), batch_size):
        yield frozen.trunk_map(z[start : start + batch_size].to(device))


@torch.no_grad()
def _embed_dssa(model, table, ids, modality, tf, **kw) -> SplitEmbedding:
    embs, masks, parts = [], [], {}
    names = [n for n, used in (("coarse", model.head.use_coarse), ("fine", model.head.use_fine)) if used]
    for f in _trunk_maps(model, table, ids, modality, tf, **kw):
        if model.attention is not None:
            attended, mask = model.attention(f)
            masks.append(mask.float().cpu())
        else:
            attended = f
        embs.append(model.forward_head(attended).float().cpu())
        for name, vec in zip(names, model.head.forward_branches(attended)):
            parts.setdefault(name, []).append(vec.float().cpu())
    attention = torch.cat(masks) if masks else None
    return SplitEmbedding(
        torch.cat(embs),
        attention,
        {n: torch.cat(v) for n, v in parts.items()},
    )


def embed_split_column(model, split, column, spec, *, device, batch_size=64, freeze=None, dataset_key=None):
    """(SplitEmbedding, ImageTable, object masks) of one column (``sketch`` or ``photo``) of a split."""

    table, objects = _table(split, column, spec, dataset_key)
    tf = ImageTransform(spec["image_size"], spec["mean"], spec["std"], in_chans=spec["in_chans"])
    model.eval()
    if is_dssa(model):
        ids = list(split[f"{column}_id"])
        memo_key = (
            dataset_key,
            spec["image_size"],
            spec["crop_pct"],
            tuple(spec["mean"]),
            tuple(spec["std"]),
        )
        kw = dict(freeze=freeze, device=device, batch_size=batch_size, memo_key=memo_key)
        emb = _embed_dssa(model, table, ids, column, tf, **kw)
    else:
        emb = SplitEmbedding(embed_table(model, table, tf, column, batch_size, device))
    return emb, table, objects


def _diagnostics(sketch: SplitEmbedding, photo: SplitEmbedding, objects: tuple) -> dict[str, float | None]:
    out: dict[str, float | None] = dict.fromkeys(DIAGNOSTIC_KEYS)
    for name, emb, obj in (("sketch", sketch, objects[0]), ("photo", photo, objects[1])):
        if emb.attention is not None:
            out[f"attention_lift_{name}"], out[f"attention_peak_{name}"] = attention_lift(emb.attention, obj)
    for part in ("fine", "coarse"):
        if photo.branches and part in photo.branches:
            out[f"{part}_cosine_photo"] = mean_pairwise_cosine(photo.branches[part])
    out["embedding_cosine_photo"] = mean_pairwise_cosine(photo.embeddings)
    return out


def score_test_split(
    model: torch.nn.Module,
    sketches,
    photos,
    *,
    device: torch.device,
    distance=None,
    image_size: int | None = None,
    batch_size: int = 64,
    freeze: str | None = None,
    dataset_key: Any = None,
) -> TestPass:
    """Embed one split's sketches and photos once; rank every photo for every sketch; measure the parts.

    Args:
        model: the selected model, in eval mode on ``device``.
        sketches, photos: ``datasets.Dataset`` of one split (the gallery is its unique photos).
        distance: the run's distance (HOLEF), or None for the Euclidean distance of L2-normalised embeddings.
        image_size: the trained input side (None: the model's data config).
        freeze: the run's frozen trunk prefix (``TrainConfig.freeze``): its outputs are cached per process.
        dataset_key: names the dataset (source and reader arguments) in the per-process caches; None
            caches nothing across calls.
    """

    spec = model_input_spec(model, image_size)
    if dataset_key is None:
        dataset_key = object()  # an unnamed split is never taken for another one from the caches
    kw = dict(device=device, batch_size=batch_size, freeze=freeze, dataset_key=dataset_key)
    s_emb, s_table, s_obj = embed_split_column(model, sketches, "sketch", spec, **kw)
    p_emb, p_table, p_obj = embed_split_column(model, photos, "photo", spec, **kw)
    if distance is None:
        distance = getattr(model, "distance", None)
    if distance is not None:
        distance = copy.deepcopy(distance).to("cpu").eval()
    with torch.no_grad():
        dist = retrieval_distance(s_emb.embeddings, p_emb.embeddings, distance).double()
    target = pair_index(list(sketches["photo_id"]), list(photos["photo_id"]))
    return TestPass(
        dist=dist,
        target=target,
        metrics=retrieval_metrics(dist, target),
        ranks=rank_of_target(dist, target),
        diagnostics=_diagnostics(s_emb, p_emb, (s_obj, p_obj)),
        sketch=s_emb,
        photo=p_emb,
        sketch_table=s_table,
        photo_table=p_table,
        image_size=spec["image_size"],
    )
