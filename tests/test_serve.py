"""`segtool serve` against real uvicorn processes on free ports: REST, KServe v2 with Triton's own
client, limits, overload, API key, metrics, SIGTERM draining, and the importable app factory."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import tritonclient.http as triton
from conftest import jpeg, run_segtool
from PIL import Image
from servers import Server

from segtool.runtime.model.session import create_session


@pytest.fixture(scope="module")
def server(model_path):
    running = Server(model_path, "--max-queue", "1", "--max-body-mb", "1", "--max-pixels", "2000000")
    yield running
    running.stop()


def test_rest_labels_equal_segtool_run(server, model_path, tmp_path):
    data = jpeg(97, 143, seed=4)
    (tmp_path / "photo.jpg").write_bytes(data)
    proc = run_segtool("run", tmp_path / "photo.jpg", "--model", model_path, "--out", tmp_path / "o", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    with server.client() as client:
        response = client.post("/v1/segment?output=labels", content=data, headers={"Content-Type": "image/jpeg"})
        multipart = client.post("/v1/segment?output=labels", files={"image": ("photo.jpg", data, "image/jpeg")})
        summary = client.post("/v1/segment", content=data).json()
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    served = Image.open(io.BytesIO(response.content))
    written = Image.open(tmp_path / "o" / "photo_labels.png")
    assert served.mode == written.mode == "P"
    assert np.array_equal(np.array(served), np.array(written))
    assert served.getpalette() == written.getpalette()
    assert multipart.content == response.content
    assert summary["random_weights"] is True and "RANDOM" in summary["weights"]
    assert (summary["width"], summary["height"]) == (143, 97)
    shares = {c["name"]: c["share"] for c in summary["classes"]}
    labels = np.array(written)
    for c in summary["classes"]:
        assert c["share"] == pytest.approx((labels == c["index"]).mean())
    assert sum(shares.values()) == pytest.approx(1.0) and summary["timings_ms"]["total"] > 0


def test_mask_and_overlay_outputs(server):
    with server.client() as client:
        mask = client.post("/v1/segment?output=mask&max_size=48", content=jpeg(60, 80))
        overlay = client.post("/v1/segment?output=overlay&alpha=0.3", content=jpeg(60, 80))
        bad = client.post("/v1/segment?output=nonsense", content=jpeg(60, 80))
    assert mask.headers["content-type"] == "image/png" and Image.open(io.BytesIO(mask.content)).size == (80, 60)
    assert overlay.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(overlay.content)).size == (80, 60)
    assert bad.status_code == 422  # FastAPI's own validation of the query


def test_triton_client_infer_equals_onnx_runtime(server, model_path):
    x = np.random.default_rng(3).standard_normal((2, 3, 37, 53)).astype(np.float32)
    session, _ = create_session(str(model_path), "cpu")
    expected = session.run(None, {"image": x})[0]
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fcn_resnet50")
    meta = client.get_model_metadata("fcn_resnet50")
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 3, -1, -1]}
    for binary in (True, False):
        tensor = triton.InferInput("image", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        wanted = triton.InferRequestedOutput("logits", binary_data=binary)
        result = client.infer("fcn_resnet50", [tensor], outputs=[wanted]).as_numpy("logits")
        assert result.dtype == np.float32 and result.shape == expected.shape
        assert np.array_equal(result, expected), binary  # same runtime, same tensor: bit-identical
    client.close()


def test_bad_requests_get_400_and_oversize_413(server):
    with server.client() as client:
        garbage = client.post("/v1/segment", content=b"\x00garbage" * 100)
        empty = client.post("/v1/segment", content=b"")
        huge = client.post("/v1/segment", content=b"\xff" * (1024 * 1024 + 1))
        too_many = client.post(
            "/v1/segment", content=cv2.imencode(".png", np.zeros((1500, 1500, 3), np.uint8))[1].tobytes()
        )
        url = "/v2/models/fcn_resnet50/infer"
        wrong_shape = client.post(
            url, json={"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 4, 2, 2], "data": [0.0] * 16}]}
        )
        wrong_dtype = client.post(
            url, json={"inputs": [{"name": "image", "datatype": "INT32", "shape": [1, 3, 2, 2], "data": [0] * 12}]}
        )
        wrong_count = client.post(
            url, json={"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": [0.0] * 5}]}
        )
        not_json = client.post(url, content=b"{not json")
        unknown = client.post("/v2/models/nope/infer", json={"inputs": []})
    for response in (garbage, empty, too_many, wrong_shape, wrong_dtype, wrong_count, not_json):
        assert response.status_code == 400, response.text
        assert response.json()["error"]
    assert "not an image" in garbage.json()["error"] and "MP" in too_many.json()["error"]
    assert huge.status_code == 413 and "limit" in huge.json()["error"]
    assert unknown.status_code == 404


def test_overload_gives_only_200_and_503(server):
    body = jpeg(360, 480, seed=9)

    def call(_):
        with server.client() as client:
            response = client.post("/v1/segment?output=labels", content=body)
            return response.status_code, response.headers.get("retry-after")

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(call, range(10)))
    codes = [code for code, _ in results]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 1 and codes.count(503) >= 1, codes  # queue of 1: most are refused at once
    assert all(retry == "1" for code, retry in results if code == 503)


def test_metrics_are_exposed(server):
    with server.client() as client:
        client.post("/v1/segment", content=jpeg(20, 20))
        text = client.get("/metrics").text
    assert 'segtool_requests_total{route="/v1/segment",status="200"}' in text
    assert "segtool_request_seconds_bucket" in text and "segtool_inference_seconds_count" in text
    assert "segtool_queue_depth" in text and "segtool_rejected_total" in text


def test_page_is_self_contained(server):
    with server.client() as client:
        page = client.get("/").text
    assert "<script>" in page and "v1/segment" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere


def test_api_key_required_except_health(tiny):
    keyed = Server(tiny, "--api-key", "s3cret")
    try:
        with keyed.client() as client:
            assert client.get("/v2/health/live").status_code == 200
            assert client.post("/v1/segment", content=jpeg(16, 16)).status_code == 401
            assert client.get("/metrics").status_code == 401
            wrong = client.get("/v2", headers={"Authorization": "Bearer nope"})
            right = client.post("/v1/segment", content=jpeg(16, 16), headers={"Authorization": "Bearer s3cret"})
        assert wrong.status_code == 401 and right.status_code == 200
    finally:
        keyed.stop()


def test_sigterm_drains_requests_in_flight(model_path):
    draining = Server(model_path)
    body = jpeg(600, 800, seed=2)
    outcome = {}

    def slow_request():
        with draining.client() as client:
            outcome["status"] = client.post("/v1/segment?output=labels", content=body).status_code

    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + 30
    with draining.client() as client:  # wait until the request is inside the model call
        while "segtool_inference_in_progress 1.0" not in client.get("/metrics").text and time.monotonic() < deadline:
            time.sleep(0.05)
    started = time.monotonic()
    code, stderr = draining.stop(timeout=60)
    thread.join(timeout=60)
    assert outcome.get("status") == 200, (outcome, stderr)
    assert code == 0 and "Traceback" not in stderr, stderr
    assert time.monotonic() - started < 60


def test_app_factory_mounts_inside_another_asgi_app(segmenter):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from segtool.serve import ServeSettings, create_app

    parent = FastAPI()
    parent.mount("/segment", create_app(segmenter, ServeSettings(name="street")))
    with TestClient(parent) as client:
        assert client.get("/segment/v2/health/ready").status_code == 200
        assert client.get("/segment/v2/models/street").json()["name"] == "street"
        response = client.post("/segment/v1/segment?output=json", content=jpeg(24, 32))
    assert response.status_code == 200 and response.json()["width"] == 32


def test_readme_curl_labels_equal_segtool_run(server, model_path, tmp_path):
    """The README's curl line, as written but for the port, against `segtool run` on the same file."""
    import re
    import shlex
    import subprocess
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (line,) = [line for line in readme.splitlines() if line.startswith("curl --data-binary @street.jpg")]
    (tmp_path / "street.jpg").write_bytes(jpeg(213, 320, seed=6))
    command = shlex.split(re.sub(r"localhost:8000", server.url.removeprefix("http://"), line))
    assert subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=120).returncode == 0
    proc = run_segtool("run", "street.jpg", "--model", model_path, "--out", "o", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    served = np.array(Image.open(tmp_path / "labels.png"))
    assert np.array_equal(served, np.array(Image.open(tmp_path / "o" / "street_labels.png")))
