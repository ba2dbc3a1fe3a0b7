"""The search behind the page: a model and a gallery index loaded once, answering one sketch at a time.

A query is the model's eval preprocessing of the sketch (the path ``fgsbir embed`` and index building
use: the model's input size, crop and normalisation), one forward pass and one faiss search. With a
DSSA model the same forward pass gives the attention map over the sketch; the attention over a
returned photo costs one more forward pass, done when the photo is first shown and then cached.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data.transforms import ImageTransform, decode_image, load_size_for
from ..embedding import forward_embed, model_input_spec
from ..model_io import load_model
from ..run_folder import RunFolder
from ..runtime import resolve_device
from ..search.index import GalleryIndex

__all__ = ["SearchResult", "SearchService", "attention_overlay", "recorded_folder"]

_OVERLAY_RED = (255, 0, 0)


@dataclass(frozen=True)
class SearchResult:
    """One answered query.

    ``ids``/``distances``: the photos, closest first, distances in the index's metric (smaller is
    closer); ``attention``: the model's attention over the sketch, ``[h, w]`` summing to 1, or None
    for a model without attention; ``sketch_view``: the sketch as the model sees it (RGB, input
    size); ``seconds``: preprocessing + embedding + search.
    """

    ids: list[Any]
    distances: list[float]
    attention: np.ndarray | None
    sketch_view: Image.Image
    seconds: float


def attention_overlay(view: Image.Image, attention: np.ndarray | None, strength: float = 0.6) -> Image.Image:
    """``view`` (RGB) with ``attention`` ``[h, w]`` drawn over it in red, stretched to the view's size.

    The map is min-max scaled, so the most attended position is the reddest; None returns ``view``.
    """
    view = view.convert("RGB")
    if attention is None:
        return view
    heat = Image.fromarray(np.asarray(attention, dtype=np.float32), mode="F").resize(
        view.size, Image.BILINEAR
    )
    a = np.asarray(heat)
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
    mask = Image.fromarray((a * 255 * strength).astype(np.uint8), mode="L")
    return Image.composite(Image.new("RGB", view.size, _OVERLAY_RED), view, mask)


def _placeholder(text: str, side: int) -> Image.Image:
    tile = Image.new("RGB", (side, side), (235, 235, 235))
    ImageDraw.Draw(tile).text((6, side // 2 - 6), text[:28], fill=(90, 90, 90))
    return tile


class SearchService:
    """A model and a gallery index, loaded once, that rank gallery photos for a sketch.

    Args:
        model: the model the index was built with (eval mode; moved to ``device``).
        index: the gallery, as a :class:`~fgsbir_plugin.search.GalleryIndex`.
        photos_root: the folder the index's string ids are relative paths in (the ``photos_root``
            an index built by ``fgsbir index build`` records); None shows no photos, only ids.
        device: the torch device the model runs on.
        photo_cache: how many photo views (with their attention) to keep in memory.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        index: GalleryIndex,
        photos_root: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        photo_cache: int = 512,
    ) -> None:
        if len(index) == 0:
            raise ValueError("the gallery index holds no photos; build it from a photo folder first.")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.index = index
        self.photos_root = Path(photos_root).resolve() if photos_root is not None else None
        spec = model_input_spec(model)
        self.image_size = spec["image_size"]
        self._load_size = load_size_for(spec["image_size"], spec["crop_pct"])
        self._in_chans = spec["in_chans"]
        self._transform = ImageTransform(
            spec["image_size"], spec["mean"], spec["std"], in_chans=spec["in_chans"]
        )
        # A DSSA without attention reports a uniform map, which is no explanation: show none.
        self.has_attention = (
            hasattr(model, "forward_with_attention") and getattr(model, "attention", None) is not None
        )
        self._ids = set(index.ids)
        self._photo_cache: OrderedDict[Any, Image.Image] = OrderedDict()
        self._photo_cache_size = photo_cache
        self._lock = threading.Lock()  # the model and the cache are shared by the server's worker threads

    @classmethod
    def from_files(
        cls,
        index: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None,
        *,
        device: str = "auto",
        photos_root: str | os.PathLike | None = None,
    ) -> SearchService:
        """Load the index file and its model (the run or model folder the index records, or ``checkpoint``).

        The index is checked against the model's weights and HOLEF matrix, as ``fgsbir search`` does.
        """
        index = Path(index)
        header = GalleryIndex.read_header(index)
        extra = header.get("extra", {})
        checkpoint = checkpoint or recorded_folder(
            index, extra.get("checkpoint"), "checkpoint", "--checkpoint"
        )
        dev = resolve_device(device)
        run, model_dir = RunFolder.resolve(checkpoint)
        model = load_model(model_dir, device=dev)
        W = None
        if header["metric"] == "holef":
            distance = run.load_distance(model)
            if distance is None or not hasattr(distance, "weight_matrix"):
                raise ValueError(
                    f"{index} uses the HOLEF metric but {checkpoint} has no learned HOLEF distance; "
                    "pass the checkpoint the index was built with."
                )
            W = distance.weight_matrix().detach()
        gallery = GalleryIndex.load(index, expect={"model": model, "W": W})
        if photos_root is None and extra.get("photos_root"):
            photos_root = recorded_folder(index, extra["photos_root"], "photo folder", "--photos")
        return cls(model, gallery, photos_root, device=dev)

    # -- queries ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, photo_id: Any) -> bool:
        return photo_id in self._ids

    def _view(self, image: Image.Image) -> tuple[torch.Tensor, Image.Image]:
        """(model input ``[C, S, S]`` float, the same centre crop as an RGB image) of one image."""
        u8 = decode_image(image, self._load_size, self._in_chans)
        top = (self._load_size - self.image_size) // 2
        crop = u8[:, top : top + self.image_size, top : top + self.image_size]
        view = Image.fromarray(crop.permute(1, 2, 0).squeeze(-1).numpy()).convert("RGB")
        return self._transform(u8), view

    @torch.no_grad()
    def embed(
        self, image: Image.Image, modality: str = "sketch"
    ) -> tuple[np.ndarray, np.ndarray | None, Image.Image]:
        """``(embedding [1, D] float32, attention [h, w] or None, view)`` of one image."""
        x, view = self._view(image)
        x = x[None].to(self.device)
        if self.has_attention:
            emb, att = self.model.forward_with_attention(x, modality=modality)
            attention = att[0, 0].float().cpu().numpy()
        else:
            emb, attention = forward_embed(self.model, x, modality), None
        return emb.float().cpu().numpy(), attention, view

    def search(self, sketch: Image.Image, k: int = 10) -> SearchResult:
        """The ``k`` gallery photos closest to ``sketch`` (a PIL image; drawn strokes dark on light)."""
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        start = time.perf_counter()
        with self._lock:
            emb, attention, view = self.embed(sketch, "sketch")
        dist, ids = self.index.search(emb, min(k, len(self.index)))
        seconds = time.perf_counter() - start
        found = [(i, float(d)) for i, d in zip(ids[0].tolist(), dist[0]) if i is not None and i != -1]
        return SearchResult([i for i, _ in found], [d for _, d in found], attention, view, seconds)

    # -- photos -----------------------------------------------------------------------------------

    def photo_path(self, photo_id: Any) -> Path | None:
        """The file of a gallery photo, or None (no photo folder, an int id, or a file outside the folder)."""
        if self.photos_root is None or not isinstance(photo_id, str) or photo_id not in self._ids:
            return None
        path = (self.photos_root / photo_id).resolve()
        if not path.is_relative_to(self.photos_root) or not path.is_file():
            return None
        return path

    def photo_view(self, photo_id: Any) -> Image.Image:
        """The photo as the model sees it, with the model's attention over it when it has attention.

        A photo that cannot be shown (no file, unreadable) is a grey tile naming its id.
        """
        with self._lock:
            if photo_id in self._photo_cache:
                self._photo_cache.move_to_end(photo_id)
                return self._photo_cache[photo_id]
            view = self._render_photo(photo_id)
            self._photo_cache[photo_id] = view
            if len(self._photo_cache) > self._photo_cache_size:
                self._photo_cache.popitem(last=False)
            return view

    def _render_photo(self, photo_id: Any) -> Image.Image:
        path = self.photo_path(photo_id)
        if path is None:
            return _placeholder(str(photo_id), self.image_size)
        try:
            with Image.open(path) as im:
                im.load()
                photo = im.copy()
        except (OSError, ValueError, Image.DecompressionBombError):
            return _placeholder(f"unreadable: {photo_id}", self.image_size)
        if not self.has_attention:
            return self._view(photo)[1]
        _, attention, view = self.embed(photo, "photo")
        return attention_overlay(view, attention)


def recorded_folder(index: Path, recorded: str | None, what: str, option: str) -> Path:
    """A folder an index header records: as written (from the working directory), else beside the index."""
    if not recorded:
        raise ValueError(f"{index} does not record the {what} it was built from; pass {option}.")
    for folder in (Path(recorded), index.parent / recorded):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"{index} was built from {recorded}, which is no longer there; pass {option} with its new location."
    )
