"""Execution provider selection: what runs is what was asked for, or a clear error."""

from __future__ import annotations

import pytest

from segtool.runtime import SegtoolError
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


def test_real_runtime_never_reports_a_provider_it_does_not_run(model_path):
    """On this machine's real ONNX Runtime: cpu is CPU; cuda is CUDA or a clear error, never CPU."""
    session, provider = S.create_session(str(model_path), "cpu")
    assert provider == session.get_providers()[0] == S.CPU
    session, provider = S.create_session(str(model_path), "auto")
    assert provider == session.get_providers()[0]
    try:
        session, provider = S.create_session(str(model_path), "cuda")
    except SegtoolError as exc:
        assert "cuda" in str(exc)
    else:
        assert provider == session.get_providers()[0] == S.CUDA


def test_optimized_graph_cache_is_made_reused_and_keyed(tmp_path, model_path):
    import os
    import shutil

    import numpy as np

    model = tmp_path / "m.onnx"
    shutil.copy(model_path, model)
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

    def fake_create(model, device, threads, cache_dir=None, cache=False):
        captured.update(device=device, cache_dir=cache_dir, cache=cache)
        raise SegtoolError("stop here")

    monkeypatch.setattr(segmenter_module, "create_session", fake_create)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(SegtoolError, match="stop here"):
        segmenter_module.Segmenter(model, device="tensorrt", cache=True)
    assert captured == {"device": "tensorrt", "cache_dir": str(tmp_path / ".segtool-trt-cache"), "cache": True}
