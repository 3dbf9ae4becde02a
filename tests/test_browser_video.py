"""A segtool overlay video plays in a real browser: Debian's Chromium driven by Playwright.

A small generated clip goes through `segtool run`; the overlay MP4 is served from a local
http.server on 127.0.0.1 (a free port, stopped at the end) inside a page with a <video>, and the
browser must decode it: ``readyState >= 2`` (a frame is there), ``currentTime`` advancing (it plays)
and ``videoWidth`` the clip's width. A frame is screenshot (to $SEGTOOL_SCREENSHOTS if set, else the
test's folder).
"""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import run_in_process, scene_video
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("SEGTOOL_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
PAGE = """<!doctype html><html><body style="margin:0;background:#000">
<video id="v" src="{name}" muted playsinline autoplay></video></body></html>"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_overlay_video_plays_in_chromium(tiny, tmp_path):
    from playwright.sync_api import sync_playwright

    source = scene_video(tmp_path / "walk.mp4", 60, width=160, height=120, fps=20.0)  # 3 s
    out = tmp_path / "out"
    proc = run_in_process("run", source, "--model", tiny, "--out", out)
    assert proc.returncode == 0, proc.stderr
    (out / "index.html").write_text(PAGE.format(name="walk_overlay.mp4"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 400, "height": 300})
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
            video = "document.getElementById('v')"
            page.wait_for_function(f"{video}.readyState >= 2 || !!{video}.error", timeout=60_000)
            state = page.evaluate("""() => { const v = document.getElementById('v');
                return {ready: v.readyState, error: v.error && v.error.code, width: v.videoWidth,
                        height: v.videoHeight, duration: v.duration, start: v.currentTime}; }""")
            page.evaluate("document.getElementById('v').play()")
            page.wait_for_function(f"document.getElementById('v').currentTime > {state['start']} + 0.5", timeout=30_000)
            shot = Path(os.environ.get("SEGTOOL_SCREENSHOTS", tmp_path)) / "overlay_video_frame.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.locator("#v").screenshot(path=str(shot))
            playing = page.evaluate("document.getElementById('v').currentTime")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert state["error"] is None and state["ready"] >= 2, state
    assert (state["width"], state["height"]) == (160, 120), state
    assert abs(state["duration"] - 3.0) < 0.2, state
    assert playing > state["start"] + 0.5
    assert Image.open(shot).size == (160, 120)
