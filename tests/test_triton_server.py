"""`segtool triton --backend python` served by the real `tritonserver` (the nvidia-pytriton wheel's,
on loopback), queried with tritonclient: labels equal `segtool run`'s, and Triton's dynamic batcher
gathers concurrent requests (its statistics show it). Needs `pip install --no-deps nvidia-pytriton`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import tritonclient.http as httpclient
from conftest import run_in_process, run_segtool, scene
from PIL import Image
from servers import free_port
from tritonclient.utils import InferenceServerException

from segtool.runtime.errors import UsageError
from segtool.scale.triton_python import find_tritonserver, server_command

pytestmark = pytest.mark.slow
REQUESTS = 16


@pytest.fixture(scope="module")
def server_binary():
    try:
        return find_tritonserver()
    except UsageError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for k in range(REQUESTS):
        size = (40 + 4 * (k % 4), 56 + 8 * (k % 3))
        cv2.imwrite(str(folder / f"img{k:02d}.{'png' if k % 2 else 'jpg'}"), scene(*size, seed=k))
    return folder


@pytest.fixture(scope="module")
def served(server_binary, images, tiny_module, tmp_path_factory) -> Iterator[httpclient.InferenceServerClient]:
    work = tmp_path_factory.mktemp("triton")
    repo = work / "repo"
    flags = ["--backend", "python", "--kind", "cpu", "--max-batch", "8", "--dynamic-batching"]
    made = run_segtool("triton", tiny_module, "--repo", repo, *flags, "--queue-delay-us", "50000")
    assert made.returncode == 0, made.stderr
    http = free_port()
    argv, env = server_command(server_binary, repo, work, http, free_port())
    log = (work / "server.log").open("wb")
    process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http}", concurrency=REQUESTS, network_timeout=120)
    try:
        deadline = time.monotonic() + 120
        while not _ready(client) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _ready(client), (work / "server.log").read_text()[-4000:]
        yield client
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def tiny_module(tmp_path_factory) -> Path:
    from tiny import tiny_model

    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def _ready(client) -> bool:
    try:
        return client.is_model_ready("tiny")
    except Exception:  # not listening yet
        return False


def _request(data: bytes) -> list[httpclient.InferInput]:
    """One encoded image as a UINT8 vector (scale/triton_python.py says why not BYTES)."""
    array = np.frombuffer(data, np.uint8)[None]
    tensor = httpclient.InferInput("image", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array)
    return [tensor]


def test_labels_equal_segtool_run_and_concurrent_requests_are_batched(served, images, tiny_module, tmp_path):
    plain = run_in_process("run", images, "--model", tiny_module, "--out", tmp_path, "--save", "labels", "--json")
    assert plain.returncode == 0, plain.stderr
    shares = {Path(r["input"]).stem: r["classes"] for r in json.loads(plain.stdout)["results"]}
    before = served.get_inference_statistics("tiny")["model_stats"][0]
    paths = sorted(images.iterdir())
    pending = [(path, served.async_infer("tiny", _request(path.read_bytes()))) for path in paths]
    classes = json.loads(served.get_model_config("tiny")["parameters"]["segtool.classes"]["string_value"])
    for path, call in pending:
        answer = call.get_result(timeout=120)
        labels, got = answer.as_numpy("labels"), answer.as_numpy("shares")
        expected = np.array(Image.open(tmp_path / f"{path.stem}_labels.png"))
        assert labels.shape == (1, *expected.shape) and np.array_equal(labels[0], expected), path.name
        want = np.array([shares[path.stem].get(name, 0.0) for name in classes], np.float32)
        assert got.shape == (1, len(classes)) and np.allclose(got[0], want, atol=1e-6), path.name
    stats = served.get_inference_statistics("tiny")["model_stats"][0]
    requests = int(stats["inference_count"]) - int(before.get("inference_count", 0))
    executions = int(stats["execution_count"]) - int(before.get("execution_count", 0))
    sizes = {int(b["batch_size"]) for b in stats["batch_stats"]}
    print(f"triton: {requests} requests, {executions} executions, batch sizes {sorted(sizes)}")
    assert requests == REQUESTS and executions < requests and max(sizes) > 1


def test_a_bad_image_is_that_requests_error_and_the_server_goes_on(served, images):
    with pytest.raises(InferenceServerException, match="not an image|cannot decode|unsupported"):
        served.infer("tiny", _request(b"not an image at all"))
    good = sorted(images.iterdir())[0]
    assert served.infer("tiny", _request(good.read_bytes())).as_numpy("labels").ndim == 3


def test_check_starts_the_server_and_loads_the_model(server_binary, tiny_module, tmp_path):
    proc = run_in_process(
        "triton", tiny_module, "--repo", tmp_path / "repo", "--backend", "python", "--kind", "cpu", "--check"
    )
    assert proc.returncode == 0, proc.stderr
    assert "tritonserver 2." in proc.stdout and "loaded tiny" in proc.stdout
