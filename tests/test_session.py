"""Execution provider selection: what runs is what was asked for, or a clear error."""

from __future__ import annotations

import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from segtool.runtime import SegtoolError
from segtool.runtime.errors import DeviceError, InputError, ModelError, OutOfMemory
from segtool.runtime.model import session as S


class FakeSession:
    """Stands in for ort.InferenceSession: 'starts' only the providers in ``works``."""

    works: tuple = (S.CPU,)
    calls: list = []

    def __init__(self, model, options, providers):
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        FakeSession.calls.append((names, options.log_severity_level))
        self._providers = [n for n in names if n in self.works] or [S.CPU]

    def get_providers(self):
        return self._providers


@pytest.fixture
def fake_ort(monkeypatch):
    def install(available, works):
        FakeSession.works, FakeSession.calls = tuple(works), []
        monkeypatch.setattr(S.ort, "get_available_providers", lambda: list(available))
        monkeypatch.setattr(S.ort, "InferenceSession", FakeSession)
        monkeypatch.setattr(S, "_preload_gpu_libraries", lambda: None)
        return FakeSession.calls

    return install


GPU_BUILD = (S.TENSORRT, S.CUDA, S.CPU)


def test_auto_uses_cuda_when_it_really_starts(fake_ort):
    calls = fake_ort(GPU_BUILD, works=(S.CUDA, S.CPU))
    session, provider = S.create_session(b"model", "auto")
    assert provider == S.CUDA
    assert calls[0][0] == [S.CUDA, S.CPU]  # never TensorRT unless asked: engine builds take minutes


def test_auto_falls_back_to_cpu_quietly_when_cuda_does_not_start(fake_ort):
    calls = fake_ort(GPU_BUILD, works=(S.CPU,))
    session, provider = S.create_session(b"model", "auto")
    assert provider == S.CPU and session.get_providers() == [S.CPU]
    assert len(calls) == 1  # the fallen-back session is used as is, not opened twice
    assert calls[0][1] == S._QUIET  # ORT's provider-loading errors are not shown to the user


def test_auto_on_cpu_only_build(fake_ort):
    calls = fake_ort((S.CPU,), works=(S.CPU,))
    assert S.create_session(b"model", "auto")[1] == S.CPU
    assert calls[0][0] == [S.CPU]


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_explicit_gpu_that_does_not_start_is_an_error(fake_ort, device):
    fake_ort(GPU_BUILD, works=(S.CPU,))
    with pytest.raises(SegtoolError, match="could not start"):
        S.create_session(b"model", device)


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_explicit_gpu_missing_from_build_is_an_error(fake_ort, device):
    fake_ort((S.CPU,), works=(S.CPU,))
    with pytest.raises(SegtoolError, match="not offered"):
        S.create_session(b"model", device)


def test_tensorrt_chain_keeps_cuda_and_cpu_behind_it(fake_ort):
    calls = fake_ort(GPU_BUILD, works=GPU_BUILD)
    assert S.create_session(b"model", "tensorrt")[1] == S.TENSORRT
    assert calls[0][0] == [S.TENSORRT, S.CUDA, S.CPU]


def test_unknown_device(fake_ort):
    fake_ort(GPU_BUILD, works=GPU_BUILD)
    with pytest.raises(SegtoolError, match="unknown device"):
        S.create_session(b"model", "gpu0")


def test_real_runtime_never_reports_a_provider_it_does_not_run(tiny):
    """On this machine's real ONNX Runtime: cpu is CPU; cuda is CUDA or a clear error, never CPU."""
    session, provider = S.create_session(str(tiny), "cpu")
    assert provider == session.get_providers()[0] == S.CPU
    session, provider = S.create_session(str(tiny), "auto")
    assert provider == session.get_providers()[0]
    try:
        session, provider = S.create_session(str(tiny), "cuda")
    except SegtoolError as exc:
        assert "cuda" in str(exc)
    else:
        assert provider == session.get_providers()[0] == S.CUDA


def test_optimized_graph_cache_is_made_reused_and_keyed(tmp_path, tiny):
    import os
    import shutil

    import numpy as np

    model = tmp_path / "m.onnx"
    shutil.copy(tiny, model)
    plain, _ = S.create_session(str(model), "cpu")
    first, _ = S.create_session(str(model), "cpu", cache=True)
    cached = S.optimized_cache_path(model)
    assert cached.is_file() and cached.name.startswith(".m.")
    made = cached.stat().st_mtime_ns
    second, _ = S.create_session(str(model), "cpu", cache=True)
    assert cached.stat().st_mtime_ns == made  # reused, not rewritten
    assert second.get_modelmeta().custom_metadata_map == plain.get_modelmeta().custom_metadata_map
    x = np.random.default_rng(0).standard_normal((1, 3, 24, 40), dtype=np.float32)
    assert np.allclose(second.run(None, {"image": x})[0], plain.run(None, {"image": x})[0], atol=1e-5)
    os.utime(model, ns=(made + 10**9, made + 10**9))  # the model changed: another key
    assert S.optimized_cache_path(model) != cached
    assert not list(tmp_path.glob("*.tmp.onnx"))


def test_segmenter_cache_flag_reaches_onnx_runtime(monkeypatch, tmp_path):
    """--cache: the CPU graph cache, and a TensorRT engine folder beside the model."""
    import segtool.runtime.model.segmenter as segmenter_module

    captured: dict[str, object] = {}

    def fake_create(model, device, threads, cache_dir=None, cache=False, trt_options=None):
        captured.update(device=device, cache_dir=cache_dir, cache=cache)
        raise SegtoolError("stop here")

    monkeypatch.setattr(segmenter_module, "create_session", fake_create)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(SegtoolError, match="stop here"):
        segmenter_module.Segmenter(model, device="tensorrt", cache=True)
    assert captured == {"device": "tensorrt", "cache_dir": str(tmp_path / ".segtool-trt-cache"), "cache": True}


# -- failures during a run: classified by ONNX Runtime's exception classes ---------------------------

ALLOCATION_PROBE = """
import sys
import numpy as np
from segtool.runtime import Segmenter
from segtool.runtime.errors import SegtoolError
engine = Segmenter(sys.argv[1], device="cpu", warn_random=False).engine
try:
    engine.run(np.zeros((1, 3, 6000, 6000), np.float32))  # 3 GB of logits
except SegtoolError as exc:
    print(type(exc).__name__, type(exc.__cause__).__name__, exc)
"""


def test_a_real_allocation_failure_is_out_of_memory(tiny):
    """Measured: segtool runs ONNX Runtime without its CPU arena, so a kernel's std::bad_alloc comes
    back as RuntimeException (status 6); with the arena it is Fail (status 1), "Failed to allocate"."""
    import subprocess
    import sys

    command = ["prlimit", "--as=3000000000", sys.executable, "-c", ALLOCATION_PROBE, str(tiny)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("OutOfMemory RuntimeException inference ran out of memory"), proc.stdout + proc.stderr


def failing_run(error: BaseException, provider: str = S.CPU) -> SegtoolError:
    from segtool.runtime.model.engines import inference_error

    return inference_error(error, (1, 3, 8, 8), provider)


@pytest.mark.parametrize(
    "error",
    [
        ort_state.InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: "
                                  "image (out of memory for a shape this large)"),
        ort_state.InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : input 'cuda_image': bad rank"),
    ],
    ids=["memory-words", "device-words"],
)  # fmt: skip
def test_an_invalid_argument_is_the_inputs_fault_whatever_its_words(error):
    """Before: the words were read first; an input named like a memory error was 'out of memory'."""
    assert type(failing_run(error)) is InputError


@pytest.mark.parametrize(
    "message",
    [
        "Non-zero status code returned while running Conv node. Name:'/head/tensorrt_compat/Conv' Status Message: "
        "Invalid input shape",
        "Non-zero status code returned while running Resize node (execution provider CPUExecutionProvider)",
    ],
    ids=["tensorrt-in-a-node-name", "execution-provider"],
)
def test_a_node_that_fails_on_the_cpu_is_the_models_fault_whatever_its_words(message):
    """Before: "tensorrt" in a node's name or "execution provider" anywhere blamed the device."""
    error = failing_run(ort_state.Fail(f"[ONNXRuntimeError] : 1 : FAIL : {message}"))
    assert type(error) is ModelError and "a fault of the model" in str(error)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ort_state.EPFail("[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP execution context enqueue fail."),
         DeviceError),
        (ort_state.Fail("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory access was "
                        "encountered ; GPU=0"), DeviceError),
        (ort_state.Fail("[ONNXRuntimeError] : 1 : FAIL : bfc_arena.cc:360 Failed to allocate memory for requested "
                        "buffer of size 4608000000"), OutOfMemory),
        (ort_state.NotImplemented("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Foo"), ModelError),
        (MemoryError(), OutOfMemory),
    ],
    ids=["ep-fail", "cuda-library", "arena", "not-implemented", "memory-error"],
)  # fmt: skip
def test_the_class_decides_and_words_only_split_fail(error, expected):
    assert type(failing_run(error, S.CUDA)) is expected
