"""The search page without a browser: the search service, the page's handlers (strokes tally, refused
uploads), the `search` endpoint through gradio_client, the 127.0.0.1 default, the embedded default's
build-once folder and `fgsbir app`'s arguments. The browser test is tests/test_app_browser.py."""

from __future__ import annotations

import json
import shutil
import socket
import types

import numpy as np
import pytest
from _app_fixtures import TINY_DSSA, png_bytes, tiny_dssa, write_gallery
from _train_fixtures import tiny_fgsbir
from PIL import Image, ImageDraw

import fgsbir_plugin.app as app_pkg
from fgsbir_cli import app as app_cli
from fgsbir_cli import main
from fgsbir_plugin.app import (
    PageLogic,
    SearchResult,
    SearchService,
    UploadRejected,
    attention_overlay,
    build_page,
    decode_upload,
    default_assets,
    ensure_default_assets,
    serve,
)
from fgsbir_plugin.embedding import embed_files
from fgsbir_plugin.train.demo import DemoSettings

gradio = pytest.importorskip(
    "gradio", reason="the app extra is not installed: pip install 'fgsbir-plugin[app]'"
)
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client comes with the app extra's gradio")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    index, examples = write_gallery(root)
    return types.SimpleNamespace(root=root, index=index, examples=examples)


@pytest.fixture(scope="module")
def service(gallery):
    return SearchService.from_files(gallery.index, device="cpu")


def _sketch(size=64, lines=((8, 8, 50, 50),)) -> Image.Image:
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    for line in lines:
        draw.line(line, fill=0, width=2)
    return img


# -- the service ----------------------------------------------------------------------------------


def test_search_matches_the_index_searched_with_the_cli_embedding(service, gallery, tmp_path):
    sketch, _ = gallery.examples[0]
    path = tmp_path / "s.png"
    sketch.save(path)
    # fgsbir search embeds a sketch file with embed_files; the page must see the same input
    reference = embed_files(service.model, [path], "sketch").numpy()
    emb, attention, view = service.embed(sketch)
    np.testing.assert_allclose(emb, reference, rtol=1e-5, atol=1e-6)
    dist, ids = service.index.search(reference, 5)
    result = service.search(sketch, k=5)
    assert result.ids == list(ids[0]) and np.allclose(result.distances, dist[0])
    assert attention.ndim == 2 and min(attention.shape) > 1 and np.isclose(attention.sum(), 1.0)
    assert view.size == (service.image_size,) * 2 == (160, 160) and result.seconds > 0


def test_search_caps_k_at_the_gallery_size_and_refuses_a_bad_k(service):
    result = service.search(_sketch(), k=1000)
    assert len(result.ids) == len(service) == 20 and sorted(result.distances) == result.distances
    with pytest.raises(ValueError, match="positive integer"):
        service.search(_sketch(), k=0)


def test_photo_views_carry_the_attention_overlay(service):
    photo_id = service.index.ids[0]
    view = service.photo_view(photo_id)
    assert view.size == (160, 160) and service.photo_view(photo_id) is view  # cached
    plain = service._view(Image.open(service.photo_path(photo_id)))[1]
    assert np.abs(np.asarray(view, dtype=int) - np.asarray(plain, dtype=int)).max() > 50


def test_photo_path_stays_inside_the_photo_folder(service):
    assert service.photo_path("../gallery.index") is None  # not an id of the index
    assert service.photo_path(service.index.ids[0]).parent == service.photos_root
    tile = service.photo_view("not-in-the-gallery.png")
    assert tile.size == (160, 160)


def test_model_without_attention_shows_no_overlay_and_says_so(tmp_path):
    index, examples = write_gallery(tmp_path, tiny_dssa(attention=False, holef=False))
    service = SearchService.from_files(index, device="cpu")
    assert not service.has_attention
    status, sketch, tiles, _ = PageLogic(service).on_canvas({"composite": examples[0][0]}, 3, None, 1, None)
    assert "no attention map" in status and len(tiles) == 3
    assert np.array_equal(np.asarray(sketch), np.asarray(service._view(examples[0][0])[1]))


def test_attention_overlay_reddens_the_attended_cell():
    view = Image.new("RGB", (30, 30), "white")
    att = np.zeros((3, 3), dtype=np.float32)
    att[0, 0] = 1.0
    out = np.asarray(attention_overlay(view, att))
    assert tuple(out[2, 2]) == (255, 102, 102) and tuple(out[27, 27]) == (255, 255, 255)
    assert attention_overlay(view, None).tobytes() == view.tobytes()


# -- the page's handlers: strokes tally -----------------------------------------------------------


class RankedService:
    """A stand-in service whose successive searches return the given rankings."""

    has_attention = True

    def __init__(self, rankings):
        self.rankings, self.index = list(rankings), types.SimpleNamespace(metric="holef")
        self.ids = sorted({i for r in rankings for i in r})

    def __len__(self):
        return len(self.ids)

    def __contains__(self, photo_id):
        return photo_id in self.ids

    def search(self, sketch, k):
        ranked = self.rankings.pop(0)
        return SearchResult(
            ranked[:k], [float(i) for i in range(len(ranked[:k]))], None, sketch.convert("RGB"), 0.01
        )

    def photo_view(self, photo_id):
        return Image.new("RGB", (8, 8))


def test_strokes_tally_records_the_first_stroke_count_with_the_target_on_top():
    logic = PageLogic(RankedService([["a", "b", "t"], ["t", "a", "b"], ["a", "t", "b"], ["t", "a", "b"]]))
    canvas = {"composite": _sketch()}
    state = None
    lines = []
    for strokes in (1, 2, 3):
        status, _, tiles, state = logic.on_canvas(canvas, 2, "t", strokes, state)
        lines.append(status.splitlines()[-1])
    assert lines[0] == "Target `t` is at rank 3 after 1 strokes."
    assert lines[1] == "**Target `t` reached the top after 2 strokes**."
    assert lines[2] == "**Target `t` reached the top after 2 strokes**; it is at rank 2 now."
    # a cleared canvas starts the tally again
    status, _, tiles, state = logic.on_canvas({"composite": _sketch(lines=())}, 2, "t", 0, state)
    assert tiles == [] and state["reached_at"] is None and "Draw a sketch" in status
    status, *_ = logic.on_canvas(canvas, 2, "t", 1, state)
    assert "reached the top after 1 strokes" in status


def test_a_demo_sketch_on_the_canvas_counts_no_strokes():
    logic = PageLogic(RankedService([["t", "a"], ["t", "a"]]))
    status, _, _, state = logic.on_canvas({"composite": _sketch()}, 2, "t", 0, None)
    assert status.endswith("Target `t` is at rank 1; draw to count the strokes it takes to reach the top.")
    assert state["reached_at"] is None
    status, *_ = logic.on_canvas({"composite": _sketch()}, 2, "t", 1, state)
    assert "reached the top after 1 strokes" in status


def test_clicking_a_result_makes_it_the_target():
    logic = PageLogic(RankedService([["a", "b", "t"]]))
    _, _, _, state = logic.on_canvas({"composite": _sketch()}, 2, None, 1, None)
    assert state["ids"] == ["a", "b"]
    target, state = logic.pick_target(1, state)
    assert target == "b" and state["target"] == "b" and state["reached_at"] is None


def test_unknown_target_is_named():
    logic = PageLogic(RankedService([["a", "b"]]))
    status, *_ = logic.on_canvas({"composite": _sketch()}, 2, "zzz", 1, None)
    assert "`zzz` is not a photo of this gallery" in status


def test_demo_sketch_sets_its_photo_as_target(service, gallery):
    logic = PageLogic(service, gallery.examples)
    sketch, photo_id, (status, view, tiles, state) = logic.on_example(0, 3, None)
    assert photo_id == gallery.examples[0][1] and state["target"] == photo_id and len(tiles) == 3
    assert f"Target `{photo_id}` is at rank" in status
    with pytest.raises(ValueError, match="no demo sketch number 99"):
        logic.on_example(99, 3, None)


# -- uploads: size and pixel limits ---------------------------------------------------------------


def test_decompression_bomb_is_a_message_on_the_page(service, monkeypatch):
    data = png_bytes(_sketch(64))  # 4096 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # PIL: a warning above 1500, an error above 3000
    with pytest.raises(UploadRejected, match="decompression bomb|more than the 1,500"):
        decode_upload(data)
    status, view, tiles, _ = PageLogic(service).on_upload(data, 3, None, None)
    assert status.startswith("**Upload refused:**") and view is None and tiles == []
    # the same limit holds for a drawn canvas, which Gradio decodes
    status, *_ = PageLogic(service).on_canvas({"composite": _sketch(64)}, 3, None, 1, None)
    assert status.startswith("**Sketch refused:**")


def test_bomb_warning_range_is_refused_too(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 px: PIL only warns here
    with pytest.raises(UploadRejected, match="decompression bomb|more than the 3,000"):
        decode_upload(png_bytes(_sketch(64)))


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "empty"),
        (b"not an image at all", "not a readable PNG"),
        (b"\x89PNG\r\n\x1a\n" + b"0" * 64, "not a readable"),
    ],
)
def test_bad_uploads_are_refused(data, match):
    with pytest.raises(UploadRejected, match=match):
        decode_upload(data)


def test_oversized_uploads_are_refused_before_decoding():
    with pytest.raises(UploadRejected, match="more than the 0 MiB"):
        decode_upload(png_bytes(_sketch()), max_bytes=100)
    with pytest.raises(UploadRejected, match="64x64 pixels"):
        decode_upload(png_bytes(_sketch(64)), max_pixels=1000)


def test_upload_search_gives_the_same_ranking_as_the_canvas(service, gallery):
    sketch = gallery.examples[1][0]
    logic = PageLogic(service)
    up = logic.on_upload(png_bytes(sketch), 4, None, None)
    drawn = logic.on_canvas({"composite": sketch}, 4, None, 1, None)
    assert up[3]["ids"] == drawn[3]["ids"] and len(up[2]) == 4


# -- the server: the `search` endpoint, binding ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(service, gallery):
    page = serve.launch_page(
        build_page(service, examples=gallery.examples, k=3), port=_free_port(), block=False
    )
    yield page
    page.close()


def test_server_binds_to_localhost_by_default(served):
    assert served.server_name == "127.0.0.1" and served.local_url.startswith("http://127.0.0.1:")
    assert app_cli.DEFAULT_HOST == serve.DEFAULT_HOST == "127.0.0.1"
    assert app_cli.DEFAULT_PORT == serve.DEFAULT_PORT


def test_search_endpoint_through_gradio_client(served, service, gallery, tmp_path):
    client = gradio_client.Client(served.local_url, verbose=False)
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/search"}
    sketch = gallery.examples[2][0]
    sketch.save(tmp_path / "s.png")
    out = client.predict(gradio_client.handle_file(str(tmp_path / "s.png")), 4, api_name="/search")
    expected = service.search(sketch, 4)
    assert out["metric"] == "holef"
    assert [r["photo_id"] for r in out["results"]] == expected.ids
    assert [r["rank"] for r in out["results"]] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["distance"] for r in out["results"]], expected.distances, rtol=1e-6)


def test_search_endpoint_refuses_a_bomb_with_a_sentence_and_keeps_serving(
    served, tmp_path, monkeypatch, capfd
):
    client = gradio_client.Client(served.local_url, verbose=False)
    (tmp_path / "big.png").write_bytes(png_bytes(_sketch(64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # the server runs in this process
    capfd.readouterr()
    with pytest.raises(Exception, match="decompression bomb|more than the 1,500"):
        client.predict(gradio_client.handle_file(str(tmp_path / "big.png")), 3, api_name="/search")
    assert (
        "Traceback" not in capfd.readouterr().err
    )  # a refused upload is the client's sentence, not a crash log
    monkeypatch.undo()
    out = client.predict(gradio_client.handle_file(str(tmp_path / "big.png")), 3, api_name="/search")
    assert len(out["results"]) == 3


# -- the embedded default -------------------------------------------------------------------------


def test_default_assets_are_built_once_and_reused(tmp_path, monkeypatch):
    settings = DemoSettings(max_steps=2, batch_size=4, warmup_steps=0, queries_in_figure=1)
    plain = {"freeze": None, "eval_every": None}
    models = (("DSSA", "dssa", TINY_DSSA, {**plain, "loss": "holef"}),)
    folder = tmp_path / "cache" / "app_default"
    assets = ensure_default_assets(
        folder, progress=False, settings=settings, models=models, datasets=tiny_fgsbir()
    )
    assert assets.index.is_file() and (assets.checkpoint / "model" / "config.json").is_file()
    assert len(assets.examples) == 8 and all(p.is_file() for p, _ in assets.examples)
    record = json.loads((folder / "assets.json").read_text())
    assert record["checkpoint"] == "demo/dssa"
    service = SearchService.from_files(assets.index, device="cpu")
    assert len(service) == 4 and service.index.metric == "holef"
    assert {pid for _, pid in assets.examples} <= set(service.index.ids)
    # a second start loads the folder: nothing is trained again
    monkeypatch.setattr(default_assets, "run_demo", lambda *a, **k: pytest.fail("rebuilt"))
    assert ensure_default_assets(folder, progress=False) == assets
    monkeypatch.setenv("FGSBIR_APP_CACHE", str(folder))
    assert default_assets.default_assets_dir() == folder


def test_a_damaged_default_folder_says_how_to_rebuild(tmp_path):
    (tmp_path / "assets.json").write_text("{not json")
    with pytest.raises(ValueError, match="delete .* and start the app again"):
        ensure_default_assets(tmp_path, progress=False)


# -- fgsbir app -----------------------------------------------------------------------------------


def test_cli_refuses_checkpoint_without_index_and_bad_ports(tmp_path, capsys):
    assert main(["app", "--checkpoint", str(tmp_path)]) == 2
    assert "go with --index" in capsys.readouterr().err
    assert main(["app", "--port", "70000"]) == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err


def test_cli_serves_the_given_index(gallery, monkeypatch):
    launched = {}
    monkeypatch.setattr(app_pkg, "launch_page", lambda page, **kw: launched.update(page=page, **kw))
    assert main(["app", "--index", str(gallery.index), "--port", "7999", "--device", "cpu"]) == 0
    assert launched["host"] == "127.0.0.1" and launched["port"] == 7999
    assert isinstance(launched["page"], gradio.Blocks)


def test_index_whose_photo_folder_is_gone_is_named(gallery, tmp_path):
    copy = tmp_path / "g"
    shutil.copytree(gallery.root, copy)
    index, _ = write_gallery(copy)  # records copy/photos and copy/run
    shutil.rmtree(copy / "photos")
    with pytest.raises(FileNotFoundError, match="no longer there; pass --photos"):
        SearchService.from_files(index, device="cpu")
    service = SearchService.from_files(index, device="cpu", photos_root=gallery.root / "photos")
    assert service.photo_path(service.index.ids[0]) is not None
