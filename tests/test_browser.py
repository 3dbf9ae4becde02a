"""The page of `segtool serve` in a real browser: Debian's Chromium driven by Playwright.

Upload an image, then the overlay, the mask and the legend must appear, with the random-weights
warning; upload a short video, then its overlay must play. Screenshots are saved (to
$SEGTOOL_SCREENSHOTS if set, else the test's folder).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import pytest
from conftest import scene, scene_video
from PIL import Image
from servers import Server

pytestmark = pytest.mark.browser

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = os.environ.get("SEGTOOL_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
VIDEO_FLAGS = [*FLAGS, "--autoplay-policy=no-user-gesture-required"]


def screenshot_path(tmp_path: Path, name: str) -> Path:
    shot = Path(os.environ.get("SEGTOOL_SCREENSHOTS", tmp_path)) / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    return shot


@contextlib.contextmanager
def page_of(server: Server, flags: list[str], upload: Path, shot: Path) -> Iterator[Page]:
    """The server's page in Chromium with ``upload`` picked in its file field; a full-page screenshot
    to ``shot`` when the block ends; browser and server stopped either way."""
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(server.url + "/")
            page.set_input_files("#file", str(upload))
            yield page
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        server.stop()


def test_page_uploads_an_image_and_shows_overlay_and_legend(model_path, tmp_path):
    image = tmp_path / "street.jpg"
    cv2.imwrite(str(image), scene(240, 320, seed=11))
    shot = screenshot_path(tmp_path, "serve_page.png")
    with page_of(Server(model_path), FLAGS, image, shot) as page:
        page.wait_for_selector("#legend li", timeout=120_000)
        overlay_width = page.eval_on_selector("#overlay", "img => img.complete ? img.naturalWidth : 0")
        mask_width = page.eval_on_selector("#mask", "img => img.complete ? img.naturalWidth : 0")
        legend = page.inner_text("#legend")
        warning = page.is_visible("#warning")
        status = page.inner_text("#status")
    assert overlay_width == 320 and mask_width == 320, (overlay_width, mask_width)
    assert "%" in legend and len(legend.splitlines()) >= 2, legend
    assert warning, "random weights must be flagged on the page"
    assert "320×240" in status, status
    assert Image.open(shot).size[0] == 1280


def test_page_uploads_a_short_video_and_plays_the_overlay(tiny, tmp_path):
    """The page sends a video to /v1/segment-video and plays the H.264 overlay that comes back."""
    clip = scene_video(tmp_path / "clip.mp4", 30, width=160, height=120, fps=15.0)  # 2 s
    with page_of(Server(tiny, "--max-video-frames", "60"), VIDEO_FLAGS, clip,
                 screenshot_path(tmp_path, "serve_page_video.png")) as page:  # fmt: skip
        video = "document.getElementById('video')"
        page.wait_for_function(f"{video}.readyState >= 2 || !!{video}.error", timeout=120_000)
        state = page.evaluate(f"""() => {{ const v = {video};
            return {{ready: v.readyState, error: v.error && v.error.code, width: v.videoWidth,
                     height: v.videoHeight, duration: v.duration, start: v.currentTime}}; }}""")
        page.evaluate(f"{video}.play()")
        page.wait_for_function(f"{video}.currentTime > {state['start']} + 0.3", timeout=30_000)
        status = page.inner_text("#status")
        warning = page.is_visible("#warning")
    assert state["error"] is None and state["ready"] >= 2, state
    assert (state["width"], state["height"]) == (160, 120), state
    assert abs(state["duration"] - 2.0) < 0.2, state
    assert status.startswith("30 frames"), status
    assert warning, "random weights must be flagged on the page"
