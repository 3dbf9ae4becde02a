"""No single request monopolises `segtool serve`: a compute budget refused with 413 before anything is
decoded, a deadline after which the work is stopped (503), images answered while a long video runs,
a client that leaves frees the worker, and SIGTERM exits within --drain-s.

A "slow" model (eight 3x3 convolutions of 32 channels, built here) makes long requests out of small
bodies: about 1 s for a 640x480 image and 8 s for 1600x1200 on 2 cores, in one ONNX Runtime call."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import jpeg, scene_video
from servers import Server
from tiny import tiny_props

LONG = (1600, 1200)  # an image that keeps the slow model busy for seconds at full resolution (max_size=0)


def slow_model(path: Path, layers: int = 8, width: int = 32) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights, nodes, previous, channels = [], [], "image", 3
    for k in range(layers):
        weights.append(numpy_helper.from_array((rng.standard_normal((width, channels, 3, 3)) * 0.1).astype(np.float32),
                                               f"w{k}"))  # fmt: skip
        nodes += [helper.make_node("Conv", [previous, f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"])]  # fmt: skip
        previous, channels = f"r{k}", width
    weights.append(numpy_helper.from_array(rng.standard_normal((21, channels, 1, 1)).astype(np.float32), "head"))
    nodes.append(helper.make_node("Conv", [previous, "head"], ["logits"]))
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 21, "height", "width"])
    graph = helper.make_graph(nodes, "slow", [image], [logits], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    helper.set_model_props(model, tiny_props())
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def slow(tmp_path_factory) -> Path:
    return slow_model(tmp_path_factory.mktemp("slow") / "slow.onnx")


@pytest.fixture(scope="module")
def budgeted(tiny):
    running = Server(tiny, "--budget-mp", "1")
    yield running
    code, log = running.stop()
    assert code == 0 and "Traceback" not in log, log


@pytest.fixture(scope="module")
def busy(slow):
    running = Server(slow, "--max-video-frames", "500")
    yield running
    code, log = running.stop()
    assert code == 0 and "Traceback" not in log, log


def metric(server: Server, name: str) -> float:
    with server.client() as client:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def wait_until(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says width x height and whose pixel data is garbage: it cannot be decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    junk = b"not deflate data" * 8
    idat = struct.pack(">I", len(junk)) + b"IDAT" + junk + struct.pack(">I", zlib.crc32(b"IDAT" + junk))
    return b"\x89PNG\r\n\x1a\n" + chunk + idat


def h264_header_only(path: Path, frames: int, width: int, height: int) -> bytes:
    """An MP4 (index first) whose header announces ``frames`` H.264 frames of width x height, cut right
    after it: not one frame can be decoded."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            picture = av.VideoFrame.from_ndarray(np.full((height, width, 3), k % 256, np.uint8), format="rgb24")
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    return data[: data.find(b"mdat") + 8]


def assert_json_error(response, status: int, needle: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    assert needle in response.json()["error"], response.json()


def test_the_budget_is_413_before_anything_is_decoded(budgeted, tmp_path):
    """Before: no budget; the undecodable bodies got 400 once decoding failed."""
    video = h264_header_only(tmp_path / "v.mp4", 40, 320, 240)  # 40 x 0.077 MP = 3.1 MP
    with budgeted.client() as client:
        image = client.post("/v1/segment?max_size=0", content=png_header_only(2000, 1500))
        small = client.post("/v1/segment?max_size=640", content=png_header_only(2000, 1500))
        clip = client.post("/v1/segment-video", content=video, headers={"content-type": "video/mp4"})
    assert_json_error(image, 413, "--budget-mp")
    assert "2000x1500" in image.json()["error"]
    assert_json_error(clip, 413, "--budget-mp")
    assert "40 frames" in clip.json()["error"]
    assert small.status_code == 400  # inferred at 640x480 (0.3 MP), within the budget: then it fails to decode


def test_the_request_frame_limit_fits_a_video_in_the_budget(budgeted, tmp_path):
    """Before: no max_frames query parameter; every frame was segmented."""
    clip = scene_video(tmp_path / "clip.mp4", 60, width=160, height=120).read_bytes()  # 60 x 0.019 MP
    with budgeted.client() as client:
        whole = client.post("/v1/segment-video", content=clip)
        first = client.post("/v1/segment-video?max_frames=8", content=clip)
    assert_json_error(whole, 413, "60 frames of 160x120")
    assert first.status_code == 200 and first.headers["x-segtool-frames"] == "8", first.text[:300]


def test_a_request_past_its_deadline_is_503_and_the_worker_is_freed(slow):
    """Before: no deadline; the long request held the worker for its whole run (about 8 s)."""
    running = Server(slow, "--deadline-s", "1")
    try:
        with running.client() as client:
            started = time.monotonic()
            late = client.post("/v1/segment?max_size=0&output=labels", content=jpeg(LONG[1], LONG[0]))
            answered = time.monotonic()
            nxt = client.post("/v1/segment?output=labels", content=jpeg(48, 64))
            after = time.monotonic()
        assert_json_error(late, 503, "--deadline-s")
        assert answered - started < 3.0, answered - started
        assert nxt.status_code == 200 and after - answered < 4.0, (nxt.status_code, after - answered)
        assert wait_until(lambda: metric(running, "segtool_inference_in_progress") == 0.0, 5)
        assert metric(running, 'segtool_abandoned_total{reason="deadline"}') == 1.0
    finally:
        code, log = running.stop()
    assert code == 0 and "Traceback" not in log, log


def test_a_small_image_is_answered_while_a_long_video_runs(busy, tmp_path):
    """Before: one worker ran the whole video (60 frames, about 17 s) before the image."""
    clip = scene_video(tmp_path / "long.mp4", 60, width=320, height=240).read_bytes()
    outcome: dict[str, object] = {}
    conn = socket.create_connection(("127.0.0.1", busy.port), timeout=60)

    def video() -> None:  # a raw connection, so that the test can leave without waiting for the answer
        head = f"POST /v1/segment-video HTTP/1.1\r\nHost: x\r\nContent-Length: {len(clip)}\r\n\r\n"
        conn.sendall(head.encode() + clip)
        with contextlib.suppress(OSError):  # closed by the test when it is done
            outcome["video"] = conn.recv(64)

    thread = threading.Thread(target=video, daemon=True)
    try:
        thread.start()
        assert wait_until(lambda: metric(busy, "segtool_inference_in_progress") >= 1.0)
        time.sleep(1.0)  # frames are being segmented
        waits = []
        with busy.client() as client:
            for seed in range(3):
                started = time.monotonic()
                response = client.post("/v1/segment?output=labels", content=jpeg(48, 64, seed=seed))
                waits.append(time.monotonic() - started)
                assert response.status_code == 200, response.text[:300]
        assert max(waits) < 3.0, waits
        assert "video" not in outcome, "the video ended first: not a test of waiting behind it"
    finally:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)  # the test leaves (close alone waits for the blocked recv)
        conn.close()
    assert wait_until(lambda: metric(busy, "segtool_inference_in_progress") == 0.0, 10)  # the video was stopped


def test_a_client_that_leaves_mid_request_frees_the_worker(busy):
    """Before: the work went on to its end (about 8 s) with nobody to answer, and the next request waited."""
    body = jpeg(LONG[1], LONG[0])
    gone = 'segtool_abandoned_total{reason="client"}'
    before = metric(busy, gone)
    with socket.create_connection(("127.0.0.1", busy.port), timeout=30) as conn:
        head = f"POST /v1/segment?max_size=0&output=labels HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body)
        assert wait_until(lambda: metric(busy, "segtool_inference_in_progress") == 1.0)
    left = time.monotonic()
    with busy.client() as client:
        nxt = client.post("/v1/segment?output=labels", content=jpeg(48, 64))
    assert nxt.status_code == 200 and time.monotonic() - left < 4.0, time.monotonic() - left
    assert wait_until(lambda: metric(busy, gone) == before + 1, 5)
    assert wait_until(lambda: metric(busy, "segtool_inference_in_progress") == 0.0, 5)


def test_sigterm_exits_within_drain_s_with_a_long_request_in_flight(slow):
    """Before: after --drain-s the executor was joined on the event loop, so the process waited for the
    request to finish (about 8 s)."""
    running = Server(slow, "--drain-s", "1")
    body = jpeg(LONG[1], LONG[0])
    outcome: dict[str, object] = {}

    def long_request() -> None:
        try:
            with running.client() as client:
                outcome["status"] = client.post("/v1/segment?max_size=0&output=labels", content=body).status_code
        except Exception as exc:  # noqa: BLE001 - the connection is closed at shutdown
            outcome["error"] = type(exc).__name__

    thread = threading.Thread(target=long_request, daemon=True)
    thread.start()
    assert wait_until(lambda: metric(running, "segtool_inference_in_progress") == 1.0)
    started = time.monotonic()
    code, log = running.stop(timeout=60)
    took = time.monotonic() - started
    thread.join(timeout=10)
    assert took < 1 + 2.5, (took, log[-2000:])
    assert code == 0 and "Traceback" not in log, log
    assert outcome and outcome.get("status") != 200, outcome
