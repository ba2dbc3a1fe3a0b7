"""The search page in a real browser: headless Chromium (Debian's package, driven by Playwright) opens the
page, picks a target through a demo sketch, draws strokes on the canvas with the mouse, and waits for
the photos, the attention overlay and the strokes tally; it saves a screenshot.

The page serves a tiny DSSA and a tiny gallery (tests/_app_fixtures.py), so that the browser, not the
model, sets the pace. The screenshot goes to ``$FGSBIR_APP_SCREENSHOT`` when set, else to the test's
temporary folder; the README's picture is made by ``benchmarks/app_screenshot.py`` with the same
functions and the real default gallery.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from _app_fixtures import write_gallery
from PIL import Image

from fgsbir_plugin.app import SearchService, build_page, launch_page

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.slow  # Chromium's start and the canvas strokes take about 15 s on 2 CPU cores


def _driver():
    """benchmarks/app_screenshot.py, imported as the script imports it."""
    spec = importlib.util.spec_from_file_location("app_screenshot", BENCH / "app_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


drive = _driver()


@pytest.fixture(scope="module")
def chromium():
    pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'fgsbir-plugin[app]'")
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")
    executable = drive.chromium_path()
    if executable is None:
        pytest.skip(
            "Chromium is not installed: apt-get install -y chromium (Debian's package; .ci/run installs it)"
        )
    return executable


@pytest.fixture
def served(tmp_path):
    index, examples = write_gallery(tmp_path / "gallery")
    service = SearchService.from_files(index, device="cpu")
    page = launch_page(build_page(service, examples=examples[:4], k=4), port=drive.free_port(), block=False)
    yield page
    page.close()


def _reddest(png: bytes) -> int:
    """The largest red excess (R minus the mean of G and B) of any pixel."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    return int((rgb[..., 0] - (rgb[..., 1] + rgb[..., 2]) / 2).max())


def test_drawing_in_chromium_shows_photos_attention_and_the_strokes_tally(chromium, served, tmp_path):
    shot = Path(os.environ.get("FGSBIR_APP_SCREENSHOT") or tmp_path / "app.png")
    with drive.browser_page(chromium) as page:
        page.goto(served.local_url)
        drive.select_brush(page)
        page.locator("#demo-sketches img").first.click()  # its photo becomes the target
        drive.wait_for_results(page, 4)
        target = page.locator("#target textarea, #target input").first.input_value()
        assert target.endswith(".png")
        drive.clear_canvas(page)
        drive.select_brush(page)
        drive.draw_strokes(page, drive.CHAIR_STROKES[:3], pause_s=0.2)
        page.wait_for_function(
            "() => /after 3 strokes|reached the top after/.test(document.querySelector('#status')?.innerText)",
            timeout=60_000,
        )
        status = drive.wait_until_settled(page)
        drive.wait_for_results(page, 4)
        assert f"Target {target} " in status and "closest of 20 photos" in status
        assert 1 <= int(re.search(r"after (\d+) strokes", status).group(1)) <= 3
        assert page.locator("#results img").count() == 4
        # the sketch is black on white: any red in the model's view of it is the attention overlay
        src = page.locator("#sketch-attention img").first.get_attribute("src")
        assert _reddest(page.request.get(src).body()) > 60
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
