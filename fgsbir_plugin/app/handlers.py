"""What the page does with a sketch, without Gradio: search, the pictures to show, the strokes tally.

:mod:`.page` wires these functions to the page's components; tests call them directly. Each page
handler returns plain values: a status text (Markdown), the sketch as the model sees it (with its
attention), the result tiles ``(image, caption)``, and the session state (a dict).

Strokes tally: the browser counts the strokes since the canvas was last cleared (one per
press-and-release of the pointer on the canvas: a brush stroke or an eraser stroke) and sends the
count with the sketch. When a target photo is chosen (a click on a result, or a demo sketch, whose
photo the synthetic set names), the tally records the count at the first search that ranked the
target first. Searches are debounced while drawing (a search that would start while one runs is
replaced by the newest), so an intermediate canvas may never be searched: the count is the strokes
the sketch had when a search first showed the target at the top.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from .service import SearchService, attention_overlay
from .uploads import UploadRejected, check_pixels, decode_upload

__all__ = ["PageLogic", "editor_composite", "is_blank"]

Tile = tuple[Image.Image, str]
Answer = tuple[str, Image.Image | None, list[Tile], dict[str, Any]]

_NO_ATTENTION = "This model has no attention map, so no overlay is drawn."


def editor_composite(value: Any) -> Image.Image | None:
    """The flattened canvas of a Gradio image-editor value (``{"composite": ...}``), or None."""
    if isinstance(value, dict):
        value = value.get("composite")
    return value if isinstance(value, Image.Image) else None


def is_blank(image: Image.Image, ink_below: int = 250) -> bool:
    """True when no pixel is darker than ``ink_below`` (0-255) once transparency is read as white."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    lo, _ = image.convert("L").getextrema()
    return lo >= ink_below


class PageLogic:
    """The page's behaviour over one :class:`SearchService`.

    Args:
        service: the loaded model and gallery.
        examples: ``(sketch image, photo id)`` pairs offered as demo queries (synthetic data).
    """

    def __init__(self, service: SearchService, examples: list[tuple[Image.Image, str]] | None = None) -> None:
        self.service = service
        self.examples = list(examples or [])

    @staticmethod
    def new_state() -> dict[str, Any]:
        return {"ids": [], "target": None, "reached_at": None}

    # -- the page's events ------------------------------------------------------------------------

    def on_canvas(
        self, editor_value: Any, k: float, target: str | None, strokes: float, state: dict | None
    ) -> Answer:
        """A canvas edit: search the drawing so far; a blank canvas clears the results and the tally."""
        state = dict(state or self.new_state())
        image = editor_composite(editor_value)
        if image is None or is_blank(image):
            state.update(ids=[], reached_at=None)
            return "Draw a sketch: the closest photos appear as you add strokes.", None, [], state
        try:
            check_pixels(image.width, image.height)
        except UploadRejected as err:
            return f"**Sketch refused:** {err}", None, [], state
        return self._answer(image, k, target, int(strokes or 0), state)

    def on_upload(self, data: bytes | None, k: float, target: str | None, state: dict | None) -> Answer:
        """An uploaded sketch file (its bytes); a refused file is a message on the page, not an error."""
        state = dict(state or self.new_state())
        if data is None:
            return "Upload a sketch image, or draw one.", None, [], state
        try:
            image = decode_upload(data)
        except UploadRejected as err:
            return f"**Upload refused:** {err}", None, [], state
        return self._answer(image, k, target, None, state)

    def on_example(self, index: int, k: float, state: dict | None) -> tuple[Image.Image, str, Answer]:
        """A demo sketch chosen by its position: (the sketch for the canvas, its photo as target, the answer)."""
        if not 0 <= index < len(self.examples):
            raise ValueError(
                f"there is no demo sketch number {index}; pick one of the {len(self.examples)} shown."
            )
        sketch, photo_id = self.examples[index]
        state = {**self.new_state(), "target": photo_id}
        return sketch, photo_id, self._answer(sketch, k, photo_id, None, state)

    def pick_target(self, index: int, state: dict | None) -> tuple[str, dict[str, Any]]:
        """A click on result ``index``: that photo becomes the target and the tally starts again."""
        state = dict(state or self.new_state())
        ids = state.get("ids") or []
        if not 0 <= index < len(ids):
            return state.get("target") or "", state
        state.update(target=ids[index], reached_at=None)
        return str(ids[index]), state

    def target_view(self, target: str | None) -> Image.Image | None:
        """The target photo, to draw from; None when no target or an unknown one."""
        target = (target or "").strip()
        return self.service.photo_view(target) if target in self.service else None

    def api_search(self, data: bytes | None, k: float) -> dict[str, Any]:
        """The ``search`` endpoint: ``{"metric", "results": [{"rank", "photo_id", "distance"}, ...]}``.

        Raises:
            UploadRejected: no file, or a file refused by :func:`~.uploads.decode_upload`.
            ValueError: ``k`` is not a positive whole number.
        """
        if data is None:
            raise UploadRejected("send a sketch image file; see the page's 'Use via API' for an example.")
        image = decode_upload(data)
        result = self.service.search(image, _as_k(k))
        ranked = [
            {"rank": r, "photo_id": pid, "distance": d}
            for r, (pid, d) in enumerate(zip(result.ids, result.distances), 1)
        ]
        return {"metric": self.service.index.metric, "results": ranked}

    # -- shared -----------------------------------------------------------------------------------

    def _answer(
        self, image: Image.Image, k: float, target: str | None, strokes: int | None, state: dict
    ) -> Answer:
        k = _as_k(k)
        target = (target or "").strip() or None
        # With a target, rank the whole gallery once, so the tally can say how far it still is.
        wanted = len(self.service) if target in self.service else k
        result = self.service.search(image, max(k, wanted))
        ids, dists = result.ids[:k], result.distances[:k]
        state["ids"] = ids
        tiles = [
            (self.service.photo_view(pid), f"#{r}  {pid}  d={d:.4g}")
            for r, (pid, d) in enumerate(zip(ids, dists), 1)
        ]
        lines = [
            f"{len(ids)} closest of {len(self.service)} photos ({self.service.index.metric} distance), "
            f"answered in {result.seconds * 1000:.0f} ms (preprocess + embed + search)."
        ]
        if not self.service.has_attention:
            lines.append(_NO_ATTENTION)
        lines.append(self._tally(state, target, strokes, result.ids))
        sketch = attention_overlay(result.sketch_view, result.attention)
        return "\n\n".join(lines), sketch, tiles, state

    def _tally(self, state: dict, target: str | None, strokes: int | None, ranked: list) -> str:
        """The strokes line of the status; updates ``state`` (target, reached_at)."""
        if target is None:
            state.update(target=None, reached_at=None)
            return "Pick a target photo (click a result, or a demo sketch) to count the strokes it takes to reach the top."
        if target not in self.service:
            return f"Target `{target}` is not a photo of this gallery; click a result to choose one."
        if state.get("target") != target:
            state.update(target=target, reached_at=None)
        rank = ranked.index(target) + 1 if target in ranked else None
        if strokes is None:
            return f"Target `{target}` is at rank {rank} for this sketch (strokes are counted on the canvas)."
        if strokes == 0:  # a demo sketch put on the canvas: nothing drawn yet to count
            return (
                f"Target `{target}` is at rank {rank}; draw to count the strokes it takes to reach the top."
            )
        if rank == 1 and state.get("reached_at") is None:
            state["reached_at"] = strokes
        reached = state.get("reached_at")
        if reached is not None:
            now = "" if rank == 1 else f"; it is at rank {rank} now"
            return f"**Target `{target}` reached the top after {reached} strokes**{now}."
        return f"Target `{target}` is at rank {rank} after {strokes} strokes."


def _as_k(k: float | int | None) -> int:
    """``k`` from a slider or an API call: a positive whole number."""
    if k is None or isinstance(k, bool) or not float(k).is_integer() or k < 1:
        raise ValueError(f"k must be a positive whole number of photos, got {k!r}.")
    return int(k)
