"""`POST /v1/segment-video`: a short video in, the overlay as H.264 MP4 out, the same pictures
`segtool run` writes; bounded by the body, pixel and frame limits, every refusal a 4xx JSON error,
and nothing in the upload can make FFmpeg open another file."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import jpeg, run_in_process, scene_video
from servers import Server

ROUTE = "/v1/segment-video"


@pytest.fixture(scope="module")
def server(tiny):
    running = Server(tiny, "--max-video-frames", "20", "--max-pixels", "20000", "--max-body-mb", "1")
    yield running
    running.stop()


def frames_of(data: bytes) -> tuple[str, str, list[np.ndarray]]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return stream.codec_context.name, stream.codec_context.pix_fmt or "", frames


def assert_4xx_json(response, status: int, needle: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    assert needle in response.json()["error"], response.json()


def test_a_short_video_comes_back_as_the_overlay_segtool_run_writes(server, tiny, tmp_path):
    clip = scene_video(tmp_path / "clip.mp4", 12, width=160, height=120, fps=10.0)
    uploads = set(Path(tempfile.gettempdir()).glob("segtool-upload-*"))
    with server.client() as client:
        response = client.post(ROUTE, content=clip.read_bytes(), headers={"content-type": "video/mp4"})
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["x-segtool-frames"] == "12" and response.headers["x-segtool-random-weights"] == "true"
    assert response.content.find(b"moov") < response.content.find(b"mdat")  # +faststart: playable while loading
    codec, pix_fmt, frames = frames_of(response.content)
    assert (codec, pix_fmt, len(frames), frames[0].shape) == ("h264", "yuv420p", 12, (120, 160, 3))
    ran = run_in_process("run", clip, "--model", tiny, "--out", tmp_path / "out")
    assert ran.returncode == 0, ran.stderr
    _, _, expected = frames_of((tmp_path / "out" / "clip_overlay.mp4").read_bytes())
    difference = max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, expected))
    assert difference < 2.0, difference  # the same pictures, encoded the same way
    assert set(Path(tempfile.gettempdir()).glob("segtool-upload-*")) == uploads  # the upload is gone


def test_the_multipart_field_is_video(server, tmp_path):
    clip = scene_video(tmp_path / "clip.mp4", 4, width=64, height=48).read_bytes()
    with server.client() as client:
        ok = client.post(ROUTE, files={"video": ("clip.mp4", clip, "video/mp4")})
        wrong = client.post(ROUTE, files={"image": ("clip.mp4", clip, "video/mp4")})
    assert ok.status_code == 200 and ok.headers["x-segtool-frames"] == "4", ok.text[:300]
    assert_4xx_json(wrong, 400, 'multipart body without a file field named "video"')


def test_limits_are_4xx_json(server, tmp_path):
    long = scene_video(tmp_path / "long.mp4", 25, width=64, height=48).read_bytes()
    wide = scene_video(tmp_path / "wide.mp4", 3, width=200, height=150).read_bytes()
    with server.client() as client:
        assert_4xx_json(client.post(ROUTE, content=long), 413, "a video over 20 frames (--max-video-frames)")
        assert_4xx_json(client.post(ROUTE, content=wide), 400, "frames of 200x150")
        assert_4xx_json(client.post(ROUTE, content=bytes(2 << 20)), 413, "over the 1 MB limit")


@pytest.mark.parametrize(
    "body, needle",
    [
        (b"", "request body: empty"),
        (b"\x00\x01junk" * 50, "not a video in a container the server takes"),
        (jpeg(seed=1), "not a video in a container the server takes"),  # an image demuxer: not a container
        (b"ffconcat version 1.0\nfile /etc/hostname\n", "not a video in a container the server takes"),
        (b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n", "not a video"),
    ],
    ids=["empty", "junk", "jpeg", "concat-list", "hls-playlist"],
)
def test_what_is_not_a_plain_video_is_400(server, body, needle):
    with server.client() as client:
        response = client.post(ROUTE, content=body)
        assert client.get("/v2/health/live").status_code == 200
    assert_4xx_json(response, 400, needle)
    assert "segtool-upload-" not in response.text  # the server's temporary path is not told


def lossless_clip(width: int, height: int, frames: int) -> bytes:
    """A Matroska/FFV1 clip of any size (OpenCV's writer refuses very wide ones)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for k in range(frames):
            picture = np.full((height, width, 3), 40 * k, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def test_frames_the_encoder_cannot_take_are_400_not_500(tiny):
    """17000x16 is under the default pixel limit, but libx264 refuses it: the request's fault (was a 500)."""
    running = Server(tiny)
    try:
        with running.client() as client:
            response = client.post(ROUTE, content=lossless_clip(17000, 16, 2))
    finally:
        running.stop()
    assert_4xx_json(response, 400, "encoder cannot take 17000x16 pictures")
    assert "segtool-upload-" not in response.text


def test_header_values_are_one_ascii_line_whatever_the_text():
    """A newline in a model name (metadata is the file's) or in FFmpeg's words would fail the response."""
    from segtool.serve.routes_segment import header_text

    assert header_text("fcn\r\nX-Evil: 1\tvé") == "fcn X-Evil: 1 v?"
