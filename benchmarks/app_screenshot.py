"""Draw on the search page in headless Chromium and save a screenshot (synthetic data only).

Serves the embedded default of ``fgsbir app`` (the demo's DSSA and synthetic gallery; built on first
use) on 127.0.0.1, opens it in Debian's Chromium through Playwright (no browser download), clicks a
demo sketch to set a target, clears the canvas, draws a chair with mouse strokes, waits for the
photos and saves ``benchmarks/results/app_screenshot.png``. ``tests/test_app_browser.py`` drives the
page with the same functions.

Usage::

    python benchmarks/app_screenshot.py [--out benchmarks/results/app_screenshot.png] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fgsbir_plugin.app import create_page, launch_page

RESULTS = Path(__file__).resolve().parent / "results"

# Without these, Chromium on a machine with no internet waits on refused connections (updates, sync).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# A chair in canvas fractions (x, y), one polyline per stroke: backrest, seat, two legs, a stretcher.
CHAIR_STROKES = (
    ((0.32, 0.15), (0.32, 0.55)),
    ((0.32, 0.15), (0.62, 0.15), (0.62, 0.55)),
    ((0.28, 0.55), (0.70, 0.55)),
    ((0.32, 0.55), (0.32, 0.88)),
    ((0.66, 0.55), (0.66, 0.88)),
    ((0.32, 0.75), (0.66, 0.75)),
)


def chromium_path() -> str | None:
    """Debian's Chromium (``apt-get install chromium``), or ``$FGSBIR_CHROMIUM``; None when absent."""
    path = os.environ.get("FGSBIR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if Path(path).is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def browser_page(executable: str, width: int = 1280, height: int = 1000) -> Iterator:
    """A Playwright page in headless Chromium with a fresh profile, closed on exit."""
    from playwright.sync_api import sync_playwright  # optional: only the browser check needs it

    profile = tempfile.mkdtemp(prefix="fgsbir-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                args=list(CHROMIUM_FLAGS),
                headless=True,
                viewport={"width": width, "height": height},
            )
            try:
                yield context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def drawing_area(page) -> dict[str, float]:
    """The white drawing square inside the editor's canvas element (the element is wider than the square)."""
    canvas = page.locator("#sketch-canvas canvas").first
    canvas.wait_for(state="visible", timeout=60_000)
    box = canvas.bounding_box()
    side = min(box["width"], box["height"]) * 0.8
    return {
        "x": box["x"] + (box["width"] - side) / 2,
        "y": box["y"] + (box["height"] - side) / 2,
        "side": side,
    }


def select_brush(page) -> None:
    """Make sure the brush is the active tool (the page selects it on load; this waits for that)."""
    brush = page.locator('#sketch-canvas button[aria-label="Brush"]').first
    brush.wait_for(timeout=60_000)
    if page.locator('#sketch-canvas button[aria-label="Brush Size"]').count() == 0:
        brush.click()


def draw_strokes(page, strokes=CHAIR_STROKES, pause_s: float = 0.3) -> None:
    """Draw each polyline of ``strokes`` (canvas fractions) as one press-move-release of the mouse."""
    area = drawing_area(page)
    for stroke in strokes:
        points = [(area["x"] + fx * area["side"], area["y"] + fy * area["side"]) for fx, fy in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(x, y, steps=6)
        page.mouse.up()
        time.sleep(pause_s)


def wait_for_results(page, count: int, timeout_s: float = 60.0) -> None:
    """Wait until the results gallery shows ``count`` photos."""
    page.wait_for_function(
        "n => document.querySelectorAll('#results img').length >= n", arg=count, timeout=timeout_s * 1000
    )


def status_text(page) -> str:
    return page.locator("#status").inner_text()


def wait_until_settled(page, quiet_s: float = 2.0, timeout_s: float = 60.0) -> str:
    """Wait until the status (which names each answer's time) stays the same for ``quiet_s``: no search
    is running or waiting. Returns the status."""
    deadline = time.monotonic() + timeout_s
    last, since = status_text(page), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = status_text(page)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise TimeoutError(f"the page kept changing for {timeout_s:.0f} s; last status: {last!r}")


def clear_canvas(page, attempts: int = 3, timeout_s: float = 15.0) -> None:
    """Click the canvas's trash icon until the page shows its blank-canvas status and keeps showing it.

    A demo sketch reaches the canvas as a new editor value, which Gradio's image editor loads
    asynchronously; a clear that lands before that load has finished is undone by it (the sketch comes
    back and is searched). A person would click the trash icon again; so does this, ``attempts`` times.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    blank = "() => document.querySelector('#status')?.innerText.includes('Draw a sketch')"
    for _ in range(attempts):
        page.locator('#sketch-canvas button[aria-label="Clear canvas"]').click()
        try:
            page.wait_for_function(blank, timeout=timeout_s * 1000)
        except PlaywrightTimeout:
            continue
        if "Draw a sketch" in wait_until_settled(page, quiet_s=1.5, timeout_s=timeout_s):
            return
    raise TimeoutError(f"the canvas did not stay blank after {attempts} clicks on its trash icon")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "app_screenshot.png")
    parser.add_argument("--cache-dir", type=Path, help="folder of the default gallery (default: the app's)")
    args = parser.parse_args(argv)
    executable = chromium_path()
    if executable is None:
        parser.error("Chromium not found: apt-get install -y chromium (or set FGSBIR_CHROMIUM).")
    port = free_port()
    page_app = launch_page(create_page(cache_dir=args.cache_dir, k=5), port=port, block=False)
    try:
        with browser_page(executable) as page:
            page.goto(f"http://127.0.0.1:{port}/")
            select_brush(page)
            page.locator("#demo-sketches img").first.click()  # sets the target photo
            wait_for_results(page, 5)
            clear_canvas(page)
            select_brush(page)
            draw_strokes(page)
            page.wait_for_function(
                "() => /after 6 strokes|reached the top after/.test(document.querySelector('#status')?.innerText)",
                timeout=60_000,
            )
            wait_until_settled(page)
            wait_for_results(page, 5)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            print(status_text(page))
    finally:
        page_app.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
