"""The Gradio page of ``fgsbir app``: draw (or upload) a sketch and see the closest photos as you draw.

Left: the canvas, an upload box, how many photos to show, the target photo. Right: the status (time
taken, the strokes tally), the sketch as the model sees it with its attention in red, and the photos,
each with the model's attention over it. Below: demo sketches (synthetic) when the gallery has them.

Events: every canvas edit searches the canvas (debounced: while a search runs, only the newest
waiting edit is searched next) with the number of strokes drawn since the canvas was last cleared,
which the browser counts (one per press-and-release of the pointer on the canvas, read when the
search is sent: while strokes follow each other faster than the editor exports the drawing, the
count can run one stroke ahead of the canvas sent with it; the search after the last stroke sends
both complete); an upload searches
the file's bytes; a click on a photo makes it the target; a click on a demo sketch puts it on the
canvas with its photo as the target. The named endpoint ``search`` (``api_name="search"``) takes a
sketch image file and ``k`` and returns the ranked photo ids with their distances; the page's own
events are private.
"""

# No `from __future__ import annotations`: Gradio reads the `gr.SelectData` hints of the event functions
# defined inside build_page, where `gr` is a local name, so they must be evaluated where they are written.

from types import SimpleNamespace
from typing import Any

from .handlers import PageLogic, editor_composite, is_blank
from .service import SearchService

__all__ = ["build_page", "CANVAS_SIZE"]

CANVAS_SIZE = 400
TITLE = "FG-SBIR: draw a sketch, find the photo"

# On load: count strokes in the browser (a pointer release on the canvas), independently of Gradio's
# events, whose order relative to each other is not guaranteed; and choose the brush, since the editor
# starts with no tool selected.
_ON_LOAD_JS = """() => {
  window.fgsbirStrokes = 0;
  document.addEventListener("pointerup", (e) => {
    if (e.target?.closest?.("#sketch-canvas canvas")) window.fgsbirStrokes += 1;
  }, true);
  setTimeout(() => document.querySelector('#sketch-canvas button[aria-label="Brush"]')?.click(), 300);
}"""
# The search sends the count as it is when the search is sent, in the slot of the hidden `strokes` input.
_READ_STROKES_JS = "(canvas, k, target, n, state) => [canvas, k, target, window.fgsbirStrokes || 0, state]"
_READ_STROKES_AFTER_UPLOAD_JS = (
    "(canvas, upload, k, target, n, state) => [canvas, upload, k, target, window.fgsbirStrokes || 0, state]"
)
_RESET_STROKES_JS = "() => { window.fgsbirStrokes = 0; }"

_INTRO = (
    f"# {TITLE}\n"
    "Draw on the canvas (or upload a sketch): the closest photos of the gallery appear as you add strokes. "
    "Red shows where the model looks (DSSA's attention). Click a photo to make it your target and count "
    "how many strokes it takes to bring it to the top."
)


def build_page(
    service: SearchService,
    *,
    examples: list[tuple[Any, str]] | None = None,
    k: int = 5,
    title: str = TITLE,
):
    """A ``gradio.Blocks`` page searching ``service``'s gallery; ``examples``: (sketch image, photo id) pairs."""
    import gradio as gr  # the optional `app` extra: only building the page needs Gradio

    logic = PageLogic(service, examples)
    with gr.Blocks(title=title, analytics_enabled=False) as page:
        c = _layout(gr, logic, k)
        _wire(gr, logic, c)
        page.load(None, js=_ON_LOAD_JS)
    return page


def _layout(gr, logic: PageLogic, k: int) -> SimpleNamespace:
    """The page's components, as a namespace."""
    n = len(logic.service)
    c = SimpleNamespace(state=gr.State(logic.new_state()))
    gr.Markdown(_INTRO)
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            c.canvas = gr.Sketchpad(
                type="pil",
                image_mode="RGBA",
                canvas_size=(CANVAS_SIZE, CANVAS_SIZE),
                fixed_canvas=True,
                layers=False,
                transforms=(),
                format="png",
                brush=gr.Brush(default_size=3, colors=["#000000"], color_mode="fixed"),
                label="Draw a sketch (the trash icon clears it)",
                elem_id="sketch-canvas",
            )
            c.upload = gr.File(
                type="binary",
                file_types=["image"],
                label="... or upload a sketch image",
                elem_id="sketch-upload",
            )
            c.k = gr.Slider(1, min(50, n), value=min(k, n), step=1, label="Photos to show", elem_id="k")
            with gr.Row():
                c.target = gr.Textbox(
                    label="Target photo (click a result or a demo sketch)", elem_id="target", scale=2
                )
                c.target_photo = gr.Image(
                    label="Target", type="pil", interactive=False, height=120, elem_id="target-photo", scale=1
                )
            c.strokes = gr.Number(value=0, precision=0, visible=False, elem_id="strokes")
        with gr.Column(scale=3):
            c.status = gr.Markdown("Draw a sketch to start.", elem_id="status")
            c.sketch_view = gr.Image(
                label="Your sketch as the model sees it (red: attention)",
                type="pil",
                interactive=False,
                height=200,
                elem_id="sketch-attention",
            )
            c.results = gr.Gallery(
                label="Closest photos, closest first (red: attention)",
                columns=5,
                allow_preview=False,
                object_fit="contain",
                elem_id="results",
            )
    c.demos = None
    if logic.examples:
        c.demos = gr.Gallery(
            value=[(img, f"demo {i}") for i, (img, _) in enumerate(logic.examples)],
            label="Demo sketches (synthetic): click one to search with it and aim for its photo",
            columns=8,
            allow_preview=False,
            height=140,
            elem_id="demo-sketches",
        )
    # The `search` endpoint's parameters, named for API clients; the page never shows them.
    c.api_sketch = gr.File(type="binary", label="sketch", visible=False)
    c.api_k = gr.Number(value=10, precision=0, label="k", visible=False)
    c.api_out = gr.JSON(label="results", visible=False)
    c.api_button = gr.Button(visible=False)
    return c


def _wire(gr, logic: PageLogic, c: SimpleNamespace) -> None:
    """Connect the components' events to :class:`PageLogic`."""
    outs = [c.status, c.sketch_view, c.results, c.state]
    private = {"api_visibility": "private", "show_progress": "hidden"}
    search_canvas = {
        "fn": logic.on_canvas,
        "inputs": [c.canvas, c.k, c.target, c.strokes, c.state],
        "outputs": outs,
    }

    # `change`, not `input`: the editor exports the drawn image after `input` fires, and only `change`
    # carries the canvas with the stroke just drawn.
    c.canvas.change(**search_canvas, js=_READ_STROKES_JS, trigger_mode="always_last", **private)
    c.canvas.clear(None, js=_RESET_STROKES_JS)
    c.upload.change(logic.on_upload, [c.upload, c.k, c.target, c.state], outs, **private)

    def refresh(editor_value, data, k, target, strokes, state):
        drawn = editor_composite(editor_value)
        if data is not None and (drawn is None or is_blank(drawn)):
            return logic.on_upload(data, k, target, state)
        return logic.on_canvas(editor_value, k, target, strokes, state)

    refresh_inputs = [c.canvas, c.upload, c.k, c.target, c.strokes, c.state]
    c.k.release(refresh, refresh_inputs, outs, js=_READ_STROKES_AFTER_UPLOAD_JS, **private)

    def pick(state, evt: gr.SelectData):
        return logic.pick_target(evt.index, state)

    c.results.select(pick, [c.state], [c.target, c.state], **private)
    c.target.change(logic.target_view, c.target, c.target_photo, **private)

    if c.demos is not None:

        def demo(k, state, evt: gr.SelectData):
            sketch, photo_id, (status, view, tiles, new_state) = logic.on_example(evt.index, k, state)
            canvas = {"background": sketch, "layers": [], "composite": sketch}
            return canvas, photo_id, status, view, tiles, new_state

        # The count restarts before the demo sketch reaches the canvas, whose change then searches it.
        reset_then_pass = "(k, state) => { window.fgsbirStrokes = 0; return [k, state]; }"
        c.demos.select(demo, [c.k, c.state], [c.canvas, c.target, *outs], js=reset_then_pass, **private)

    def api_search(sketch, k):
        try:
            return logic.api_search(sketch, k)
        except ValueError as err:  # a refused upload or k: the client gets the sentence, the log no traceback
            raise gr.Error(str(err), print_exception=False) from None

    c.api_button.click(
        api_search,
        [c.api_sketch, c.api_k],
        c.api_out,
        api_name="search",
        api_description="Rank the gallery's photos for a sketch image: "
        '{"metric": ..., "results": [{"rank", "photo_id", "distance"}, ...]}, closest first.',
    )
