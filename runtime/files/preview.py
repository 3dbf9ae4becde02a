"""A live view of a run for a box without a screen: the latest overlay as an MJPEG page.

``Preview`` serves, from a stdlib HTTP server on daemon threads:

- ``/``: a page showing the stream;
- ``/stream``: ``multipart/x-mixed-replace`` JPEGs (what browsers, VLC and ffplay show as video);
- ``/frame.jpg``: the latest picture alone.

The pipeline only hands over its latest frame and labels (``publish``: a reference kept, nothing
copied, painted or encoded), so it never waits for a viewer. Painting and JPEG encoding happen on
the server's threads, once per picture a viewer actually gets, at most ``fps`` a second, at most
``max_side`` pixels on the long side: frames are dropped for viewers, never for the output, and
nothing queues up (one frame held, ``max_viewers`` streams at once).
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from segtool.runtime.errors import UsageError
from segtool.runtime.files.pictures import Painter

BOUNDARY = "segtoolframe"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>segtool live</title>
<style>body{margin:0;background:#111;color:#ddd;font:14px sans-serif}img{display:block;max-width:100vw;
max-height:calc(100vh - 2em);margin:auto}p{text-align:center;margin:.4em}</style></head>
<body><p>segtool: live overlay (latest frame; frames are dropped here, never in the output)</p>
<img src="/stream" alt="live overlay"></body></html>
"""


def parse_address(text: str) -> tuple[str, int]:
    """ "PORT", "HOST:PORT" or "[IPv6]:PORT" -> (host, port); the host defaults to 127.0.0.1."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535 or (sep and not host):
        raise UsageError(f"--preview {text!r}: expected [HOST:]PORT, e.g. 8090 or 0.0.0.0:8090")
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class Preview:
    """The MJPEG server; ``publish`` from the pipeline, ``close`` at the end of the run."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, painter: Painter | None = None, fps: float = 10.0,
                 max_side: int = 960, max_viewers: int = 4, quality: int = 80):  # fmt: skip
        self.painter, self.interval, self.max_side, self.quality = painter, 1.0 / fps, max_side, quality
        self._changed = threading.Condition()
        self._latest: tuple[np.ndarray, np.ndarray | None] | None = None
        self._number = 0  # frames published so far
        self._encoded: tuple[int, bytes] = (0, b"")  # the latest JPEG, shared by every viewer
        self._encoding = threading.Lock()
        self._viewers = threading.BoundedSemaphore(max_viewers)
        self._closed = False
        handler = type("Handler", (_Handler,), {"preview": self})
        server_class = _Server6 if ":" in host else _Server
        try:
            self.server = server_class((host, port), handler)
        except OSError as exc:
            raise UsageError(f"--preview {host}:{port}: cannot listen there ({exc.strerror or exc})") from None
        self.host, self.port = host, self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="segtool-preview", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def publish(self, image: np.ndarray, labels: np.ndarray | None = None) -> None:
        """The newest frame (BGR) and its labels; the previous one is dropped. O(1), never blocks long."""
        with self._changed:
            self._latest = (image, labels)
            self._number += 1
            self._changed.notify_all()

    def jpeg(self, newer_than: int = 0, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """(number, JPEG) of the latest frame once there is one newer than ``newer_than``; None on
        timeout or when closed."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._closed or self._number > newer_than, timeout):
                return None
            if self._closed:
                return None
            number, latest = self._number, self._latest
        assert latest is not None
        with self._encoding:  # one encoding per frame, whoever asks first
            if self._encoded[0] != number:
                self._encoded = (number, self._paint(*latest))
            return self._encoded

    def _paint(self, image: np.ndarray, labels: np.ndarray | None) -> bytes:
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if labels is not None and self.painter is not None:
            if labels.shape[:2] != image.shape[:2]:
                labels = cv2.resize(labels, image.shape[1::-1], interpolation=cv2.INTER_NEAREST_EXACT)
            image = self.painter.compose(image, labels, ("overlay",))["overlay"]
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        return data.tobytes() if ok else b""

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> Preview:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    preview: Preview
    server_version = "segtool-preview"

    def log_message(self, format: str, *args: object) -> None:  # no access log on the run's terminal
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", PAGE.encode())
            elif path == "/frame.jpg":
                got = self.preview.jpeg(0, timeout=10.0)
                self._send(*((200, "image/jpeg", got[1]) if got else (503, "text/plain", b"no frame yet\n")))
            elif path == "/stream":
                self._stream()
            else:
                self._send(404, "text/plain", b"not found\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the viewer went away

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        if not self.preview._viewers.acquire(blocking=False):
            self._send(503, "text/plain", b"too many viewers\n")
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            number, last = 0, 0.0
            while not self.preview._closed:
                got = self.preview.jpeg(number, timeout=1.0)
                if got is None:
                    continue
                number, data = got
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                self.wfile.write(head.encode() + data + b"\r\n")
                self.wfile.flush()
                wait = last + self.preview.interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                last = time.monotonic()
        finally:
            self.preview._viewers.release()
