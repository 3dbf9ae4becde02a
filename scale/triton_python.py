"""`segtool triton --backend python`: segtool's own runtime as a Triton Python-backend model, and the
`tritonserver` of the nvidia-pytriton wheel to serve it.

The repository's ``NAME/1/model.py`` is ``MODEL_PY``: it imports ``TritonPythonModel`` from here, so the
Python that runs it (Triton's stub) must find segtool. The config names that environment with
``EXECUTION_ENV_PATH`` (a virtual environment or conda prefix holding segtool; the backend activates
it before it starts the stub); ``NAME/1/model.onnx`` is the exported file. A request carries one
encoded image (JPEG, PNG, ... file bytes) as a UINT8 vector (``image``, [-1], ragged batching);
each answer has the labels at the image's own size (``labels``, UINT8 [H, W]) and the share of each
class's pixels (``shares``, FP32 [classes]), computed as `segtool run` computes them (same decoding,
pixel limit and inference). Requests that Triton's dynamic batcher gathers reach ``execute``
together; each image is segmented on its own.

Why not BYTES, and why DLPack: the Python-backend stub of the wheel (Triton 2.51) is built for NumPy
1 (pytriton pins numpy<2); under NumPy 2, which segtool needs, its ``as_numpy``/``Tensor(name,
array)`` hand over garbled or empty data (measured: a BYTES input's buffer arrives as its first byte
repeated, a UINT8 input as zeros, an INT32 output empty). Tensors therefore cross by DLPack, which
that stub does right, and DLPack carries no strings.

``find_tritonserver``/``server_command`` start the real server (the nvidia-pytriton wheel's
``tritonserver``, its libraries and its Python backend with the stub for this Python) the way
pytriton does; `segtool triton --check` and the tests use them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from segtool.runtime.errors import InputError, ModelError, SegtoolError, UsageError
from segtool.runtime.jobs import JobOptions, process

log = logging.getLogger(__name__)

MODEL_PY = '''"""Triton Python-backend model written by `segtool triton --backend python`: segtool's runtime
segments the encoded images of each request (see segtool.scale.triton_python)."""

from segtool.scale.triton_python import TritonPythonModel  # noqa: F401
'''
PYTRITON = "nvidia-pytriton"


def _labels_and_shares(seg, data: bytes, options: JobOptions) -> tuple[np.ndarray, np.ndarray]:
    """One encoded image -> (labels at its full size, class shares in class order), as `segtool run`."""
    result = process(seg, data, options, kinds=("labels",))
    labels = result.pictures["labels"]
    shares = np.array([result.classes.get(name, 0.0) for name in seg.meta.classes], np.float32)
    return np.ascontiguousarray(labels, np.uint8), shares


class _DLPack:
    """A stub tensor's DLPack capsule, as NumPy's ``from_dlpack`` takes it (an object, not a capsule)."""

    def __init__(self, capsule: object):
        self.capsule = capsule

    def __dlpack__(self, *, stream: None = None, **kwargs: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU: the inputs of a KIND_CPU or KIND_GPU Python model are in host memory


class TritonPythonModel:
    """The model Triton's Python backend instantiates (its documented interface)."""

    def initialize(self, args: dict) -> None:
        from segtool.runtime.model.segmenter import Segmenter

        config = json.loads(args["model_config"])
        self.batched = int(config.get("max_batch_size", 0)) > 0
        version = Path(args["model_repository"]) / args["model_version"]
        device = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
        self.seg = Segmenter(version / "model.onnx", device=device, warn_random=False)
        self.options = JobOptions()  # `segtool run`'s defaults: full resolution, the same pixel limit
        log.info("%s on %s", self.seg.path, self.seg.provider)

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "image")
            array = np.from_dlpack(_DLPack(tensor.to_dlpack()))  # [batch, bytes], or [bytes] unbatched
            rows = array if self.batched else array[None]
            try:
                done = [_labels_and_shares(self.seg, row.tobytes(), self.options) for row in rows]
                if len({labels.shape for labels, _ in done}) > 1:
                    raise InputError("the images of one request differ in size: send one image per request")
                labels = np.stack([labels for labels, _ in done])
                shares = np.stack([shares for _, shares in done])
                if not self.batched:
                    labels, shares = labels[0], shares[0]
                tensors = [pb_utils.Tensor.from_dlpack("labels", labels), pb_utils.Tensor.from_dlpack("shares", shares)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except SegtoolError as exc:  # a bad image is that request's error, the others go on
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses


# -- the server of the nvidia-pytriton wheel --------------------------------------------------------


@dataclass(frozen=True)
class TritonServer:
    binary: Path  # .../pytriton/tritonserver/bin/tritonserver
    libs: Path  # its shared libraries (nvidia_pytriton.libs)
    stub: Path  # the Python backend's stub built for this Python's version


def find_tritonserver() -> TritonServer:
    """The ``tritonserver`` installed with the nvidia-pytriton wheel (its Python part is not used), or
    one line saying how to get it."""
    hint = f"pip install --no-deps '{PYTRITON}>=0.5' (the wheel's tritonserver; Linux x86_64 or arm64)"
    try:
        dist = metadata.distribution(PYTRITON)
    except metadata.PackageNotFoundError:
        raise UsageError(f"tritonserver is not installed: {hint}") from None
    root = Path(str(dist.locate_file("pytriton")))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    server = TritonServer(
        root / "tritonserver" / "bin" / "tritonserver",
        root.parent / "nvidia_pytriton.libs",
        root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    for path in (server.binary, server.libs, server.stub):
        if not path.exists():
            raise UsageError(f"tritonserver of {PYTRITON} {dist.version} is incomplete ({path} missing): {hint}")
    return server


def server_command(
    server: TritonServer, repo: Path, work: Path, http: int, grpc: int, host: str = "127.0.0.1"
) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment for ``tritonserver`` serving ``repo`` on ``host`` (metrics off).
    ``work`` receives a copy of the backends folder with the stub put in the Python backend, as
    pytriton prepares it."""
    backends = work / "backends"
    if not backends.exists():
        shutil.copytree(server.binary.parent.parent / "backends", backends)
        shutil.copy2(server.stub, backends / "python" / "triton_python_backend_stub")
    argv = [
        str(server.binary),
        f"--model-repository={repo}",
        f"--backend-directory={backends}",
        f"--http-address={host}",
        f"--http-port={http}",
        f"--grpc-address={host}",
        f"--grpc-port={grpc}",
        "--allow-metrics=false",
        "--exit-timeout-secs=10",
    ]
    return argv, {
        "LD_LIBRARY_PATH": str(server.libs),
        "PYTHONDONTWRITEBYTECODE": "1",
    }  # no __pycache__ in the repository


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_serves(repo: Path, name: str, timeout_s: float = 180.0) -> str:
    """Start ``tritonserver`` on loopback with ``repo``, wait until model ``name`` is ready, stop it.
    Returns the server's version; one line (``ModelError``) with the server's last error if the
    model does not load."""
    server = find_tritonserver()
    with tempfile.TemporaryDirectory(prefix="segtool-triton-") as work:
        http = _free_port()
        argv, env = server_command(server, repo.resolve(), Path(work), http, _free_port())
        logs = Path(work) / "tritonserver.log"
        with logs.open("wb") as sink:
            process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/{name}/ready", timeout=2):
                        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2", timeout=2) as answer:
                            return str(json.load(answer).get("version", "?"))
                except (OSError, ValueError):
                    time.sleep(0.5)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        errors = [line for line in logs.read_text(errors="replace").splitlines() if line.startswith("E")]
        last = errors[-1] if errors else f"not ready within {timeout_s:.0f} s"
        raise ModelError(f"tritonserver did not load {name} from {repo}: {' '.join(last.split())[:400]}")
