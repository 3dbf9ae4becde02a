"""--device auto picks the fastest engine the file proves correct; agreement records; int8 that travels;
the GPU paths' options (issue 27).

Fast tier: the tiny model, fake engines and timings where the choice itself is tested (a real timing of
a 1x1 convolution is noise), fake CPU flags where the CPU matters. The slow tier (bottom) shows it on a
trained network and on random weights.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from conftest import assert_clean_failure, run_in_process, scene
from tiny import tiny_model, tiny_props

from segtool.runtime import Segmenter, UsageError
from segtool.runtime.model import choice as C
from segtool.runtime.model import engines as E
from segtool.runtime.model import segmenter as S
from segtool.runtime.model import session as SS
from segtool.runtime.model.metadata import PREFIX

BF16_CPU = {"avx2", "avx512f", "avx512_bf16"}
AVX2_CPU = {"avx2", "fma"}


def record(*rows: tuple[str, float]) -> dict:
    return {
        "reference": "ONNX Runtime CPU",
        "pictures": "4 generated 320x240 pictures",
        "images": 4,
        "size": [320, 240],
        "pixels": 307200,
        "rows": [{"device": d, "agreement": a} for d, a in rows],
    }


def with_record(path: Path, rec: dict) -> Path:
    return tiny_model(path, tiny_props(agreements=json.dumps(rec)))


# -- the file's record ------------------------------------------------------------------------------


def test_metadata_is_set_in_the_bytes_and_the_graph_is_kept(tiny, tmp_path):
    data = tiny.read_bytes()
    changed = E.with_metadata(data, {PREFIX + "model": "renamed", PREFIX + "agreements": "{}"})
    (tmp_path / "m.onnx").write_bytes(changed)
    before, after = E.onnx_metadata(tiny), E.onnx_metadata(tmp_path / "m.onnx")
    assert after == before | {PREFIX + "model": "renamed", PREFIX + "agreements": "{}"}
    assert E.with_metadata(changed, {PREFIX + "model": "tiny"}).count(b"renamed") == 0  # replaced, not added
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    outputs = [ort.InferenceSession(p).run(None, {"image": x})[0] for p in (str(tiny), str(tmp_path / "m.onnx"))]
    assert np.array_equal(*outputs) and E.onnx_input_names(tiny) == ["image"]


def test_tune_records_the_agreement_on_the_users_pictures(tiny, tmp_path):
    import cv2

    model = tmp_path / "m.onnx"
    model.write_bytes(tiny.read_bytes())
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for k, (h, w) in enumerate([(60, 80), (500, 300)]):
        cv2.imwrite(str(pictures / f"p{k}.png"), scene(h, w, seed=k))
    proc = run_in_process("tune", model, "--images", pictures)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(E.onnx_metadata(model)[PREFIX + "agreements"])
    assert rec["pixels"] == 60 * 80 + 384 * 230 and rec["images"] == 2  # the long side measured at 384 at most
    assert rec["pictures"] == f"2 pictures from {pictures}" and rec["where"]["onnxruntime"] == ort.__version__
    for row in rec["rows"]:
        assert "error" in row or 0.0 <= row["agreement"] <= 1.0
        assert f"{row['device']}: " in proc.stdout
    info = run_in_process("info", model)
    assert info.returncode == 0 and "device auto: " in info.stdout and "agreements:" in info.stdout
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically
    missing = run_in_process("tune", model, "--images", tmp_path / "nowhere")
    assert_clean_failure(missing, 2, "no such folder or video")


# -- what auto may take ----------------------------------------------------------------------------


def test_candidates_follow_the_target_the_precision_and_the_cpu(monkeypatch):
    monkeypatch.setattr(C, "openvino_installed", lambda: True)
    rec = record(("openvino:CPU", 1.0), ("openvino:CPU:bf16", 0.9818), ("openvino:CPU:f16", 0.9995), ("cuda", 1.0))
    taken, skipped = C.candidates(rec, C.Policy(), BF16_CPU)
    assert [r["device"] for r in taken] == ["openvino:CPU"]
    assert skipped["openvino:CPU:bf16"] == "recorded at 98.18% agreement, below 99.00%"
    assert skipped["openvino:CPU:f16"] == "this CPU has no native f16" and "cuda" in skipped
    taken, _ = C.candidates(rec, C.Policy(min_agreement=0.98), BF16_CPU)
    assert [r["device"] for r in taken] == ["openvino:CPU", "openvino:CPU:bf16"]
    taken, skipped = C.candidates(rec, C.Policy(min_agreement=0.98, precision="fp32"), BF16_CPU)
    assert [r["device"] for r in taken] == ["openvino:CPU"] and skipped["openvino:CPU:bf16"].endswith("fp32")
    _, skipped = C.candidates(rec, C.Policy(min_agreement=0.98), AVX2_CPU)
    assert skipped["openvino:CPU:bf16"] == "this CPU has no native bf16"
    with pytest.raises(UsageError, match="--precision takes auto or fp32"):
        C.Policy(precision="bf16")


@pytest.mark.parametrize(
    ("timings", "chosen"),
    [
        ({"cpu": 100.0, "openvino:CPU:bf16": 96.0}, "cpu"),  # within the noise: today's default stays
        ({"cpu": 100.0, "openvino:CPU:bf16": 40.0, "openvino:CPU": 94.0}, "openvino:CPU:bf16"),
        ({"cpu": 50.0, "openvino:CPU": 80.0}, "cpu"),
    ],
)
def test_the_fastest_wins_only_beyond_the_noise(timings, chosen):
    assert C.pick(timings) == chosen


class FakeEngine:
    def __init__(self, device: str):
        self.device, self.provider = device, f"fake {device}"
        self.reduced = device.split(":")[2] if device.startswith("openvino:CPU:") else None
        self.session = E.GraphView({}, [E.Port("image", [None, 3, None, None], "tensor(float)")], [])

    def run(self, tensor):
        return tensor


@pytest.fixture
def fake_machine(monkeypatch, tmp_path):
    """A CPU with bf16, OpenVINO 'installed', engines that are stand-ins, timings that are given."""
    monkeypatch.setenv("SEGTOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(C, "cpu_flags", lambda: sorted(BF16_CPU))
    monkeypatch.setattr(C, "openvino_installed", lambda: True)
    monkeypatch.setattr(C.ort, "get_available_providers", lambda: [SS.CPU])
    opened: list[str] = []
    timed: list[list[str]] = []
    speeds = {"cpu": 100.0, "openvino:CPU": 95.0, "openvino:CPU:bf16": 30.0}

    def opener(path, device, threads, cache):
        opened.append(device)
        return FakeEngine(device)

    def fake_time(engines, budget_s=C.TIMING_BUDGET_S):
        timed.append(list(engines))
        return {device: speeds[device] for device in engines}

    monkeypatch.setattr(C, "time_engines", fake_time)
    return opener, opened, timed


def test_auto_times_once_then_reads_its_cache(tmp_path, fake_machine):
    opener, opened, timed = fake_machine
    model = with_record(tmp_path / "m.onnx", record(("openvino:CPU", 1.0), ("openvino:CPU:bf16", 0.9986)))
    engine, choice = C.choose(model, None, False, C.Policy(), opener)
    assert timed == [["cpu", "openvino:CPU", "openvino:CPU:bf16"]] and engine.provider == "fake openvino:CPU:bf16"
    assert choice.device == "openvino:CPU:bf16" and not choice.cached
    assert choice.check is not None and choice.check.agreement == 0.9986 and choice.check.pixels == 307200
    assert re.fullmatch(
        r"device auto: openvino:CPU:bf16 \(fake openvino:CPU:bf16\): 3\.33x ONNX Runtime's CPU "
        r"speed, its labels agree .* on 99\.86% of pixels \(recorded; target 99\.00%\) \(timed now "
        r"at 320x240: openvino:CPU:bf16 30\.0 ms, openvino:CPU 95\.0 ms, cpu 100\.0 ms\)",
        choice.line,
    )
    opened.clear()
    again = C.choose(model, None, False, C.Policy(), opener)[1]
    assert again.cached and again.device == "openvino:CPU:bf16" and len(timed) == 1 and opened == ["openvino:CPU:bf16"]
    assert list((tmp_path / "cache").iterdir()) == [tmp_path / "cache" / C.CACHE_FILE]
    strict = C.choose(model, None, False, C.Policy(precision="fp32"), opener)[1]  # cached figures, fewer candidates
    assert strict.device == "cpu" and len(timed) == 1 and "more than 5% faster" in strict.why
    other = model.with_name("other.onnx")  # another file (another hash): timed anew
    with_record(other, record(("openvino:CPU", 1.0), ("openvino:CPU:bf16", 0.9986), ("openvino:CPU:f16", 0.5)))
    C.choose(other, None, False, C.Policy(), opener)
    assert len(timed) == 2


def test_a_file_without_a_record_runs_where_it_did(tiny, fake_machine):
    opener, opened, timed = fake_machine
    engine, choice = C.choose(tiny, None, False, C.Policy(), opener)
    assert opened == ["cpu"] and not timed and choice.device == "cpu" and "segtool tune" in choice.why


def test_cuda_stays_first_where_it_starts(tmp_path, fake_machine, monkeypatch):
    opener, opened, timed = fake_machine
    monkeypatch.setattr(C.ort, "get_available_providers", lambda: [SS.CUDA, SS.CPU])
    model = with_record(tmp_path / "m.onnx", record(("openvino:CPU:bf16", 0.9986)))

    def gpu_opener(path, device, threads, cache):
        engine = opener(path, device, threads, cache)
        engine.provider = SS.CUDA if device == "auto" else engine.provider
        return engine

    engine, choice = C.choose(model, None, False, C.Policy(), gpu_opener)
    assert opened == ["auto"] and choice.device == "cuda" and not timed


def test_segmenter_auto_uses_the_record_for_its_gate_and_the_cli_says_why(tmp_path, fake_machine, monkeypatch):
    opener, opened, timed = fake_machine
    model = with_record(tmp_path / "m.onnx", record(("openvino:CPU:bf16", 0.9986)))
    real = S.open_engine
    monkeypatch.setattr(S, "open_engine", lambda p, d="auto", t=None, c=False: real(p, "cpu", t, c))
    seg = Segmenter(model, warn_random=False)
    assert seg.choice is not None and seg.choice.device == "openvino:CPU:bf16"
    image = tmp_path / "in.png"
    import cv2

    cv2.imwrite(str(image), scene(20, 30))
    proc = run_in_process("run", image, "--model", model, "-o", tmp_path / "o", "--min-agreement", "0.999")
    assert proc.returncode == 0, proc.stderr
    assert "device auto: cpu (CPUExecutionProvider): no recorded engine qualifies here" in proc.stderr
    fp32 = run_in_process("info", model, "--precision", "fp32", "--json")
    assert json.loads(fp32.stdout)["auto_choice"]["skipped"] == {"openvino:CPU:bf16": "bf16: --precision fp32"}
    bad = run_in_process("run", image, "--model", model, "--precision", "bf16")
    assert_clean_failure(bad, 2, "--precision takes auto or fp32")


# -- int8 that travels -----------------------------------------------------------------------------


def int8_file(path: Path, assumes_vnni: bool) -> Path:
    target = {
        "name": "vnni" if assumes_vnni else "portable",
        "weight_bits": 8 if assumes_vnni else 7,
        "reduce_range": not assumes_vnni,
        "assumes_vnni": assumes_vnni,
    }
    variant = {"precision": "int8", "agreement": 0.995, "int8_target": target}
    return tiny_model(path, tiny_props(precision="int8", variant=json.dumps(variant)))


def test_a_vnni_int8_file_warns_once_on_a_cpu_without_vnni(tmp_path, monkeypatch, caplog):
    vnni_file, portable = int8_file(tmp_path / "vnni.onnx", True), int8_file(tmp_path / "portable.onnx", False)
    monkeypatch.setattr(C, "cpu_flags", lambda: sorted(AVX2_CPU))
    with caplog.at_level(logging.WARNING, logger="segtool"):
        for path in (vnni_file, vnni_file, portable):
            Segmenter(path, device="cpu", warn_random=False)
    warnings = [r.getMessage() for r in caplog.records if "VNNI" in r.getMessage()]
    assert len(warnings) == 1 and "vnni.onnx was quantized for CPUs with VNNI" in warnings[0]
    assert "--int8-target portable" in warnings[0] and "99.50%" in warnings[0]
    monkeypatch.setattr(C, "cpu_flags", lambda: sorted(AVX2_CPU | {"avx512_vnni"}))
    C._WARNED.clear()
    assert C.int8_warning(Segmenter(vnni_file, device="cpu", warn_random=False).meta, vnni_file) is None


def test_int8_records_the_portable_choice_whatever_the_export_host(monkeypatch):
    import segtool.export.int8 as int8

    for host_vnni in (True, False):
        monkeypatch.setattr(int8, "vnni", lambda host_vnni=host_vnni: host_vnni)
        portable = int8.target_record("portable", reduce_range=True)
        assert portable == {
            "name": "portable",
            "weight_bits": 7,
            "reduce_range": True,
            "assumes_vnni": False,
            "export_cpu_vnni": host_vnni,
        }
        assert int8.target_record("vnni", reduce_range=False)["assumes_vnni"] is True
    from segtool.export.config import ExportConfig

    assert ExportConfig().int8_target == "portable"
    with pytest.raises(UsageError, match="--int8-target 'avx2': portable or vnni"):
        ExportConfig(int8_target="avx2")


# -- fp16 told truly, GPU options ------------------------------------------------------------------


def test_fp16_measured_on_the_cpu_says_weights_rounding_only():
    from segtool.cli.export_cmd import variant_table
    from segtool.export.variants import FP16_ON_CPU

    assert "weights rounding only" in FP16_ON_CPU
    table = variant_table({"precision": "fp16", "vs_fp32": [], "method": "m"})
    assert "weights rounding only" in str(table.title)


@pytest.mark.parametrize(
    ("device", "fp16", "profile"),
    [
        ("tensorrt", False, ()),
        ("tensorrt:fp16", True, ()),
        ("tensorrt:640x360", False, ((1, 360, 640),) * 3),
        ("tensorrt:fp16:320x240,4x1280x720", True, ((1, 240, 320), (4, 720, 1280), (4, 720, 1280))),
        ("tensorrt:320x240,640x360,1920x1080", False, ((1, 240, 320), (1, 360, 640), (1, 1080, 1920))),
    ],
)
def test_tensorrt_spellings(device, fp16, profile):
    assert E.tensorrt_target(device) == E.TrtTarget(fp16, profile)


@pytest.mark.parametrize(
    "device", ["tensorrt:fp8", "tensorrt:640x", "tensorrt:1920x1080,640x360", "tensorrt:1x1,2x2,3x3,4x4"]
)
def test_tensorrt_spellings_that_mean_nothing(device):
    with pytest.raises(UsageError, match="tensorrt"):
        E.tensorrt_target(device)


def test_tensorrt_options_reach_onnx_runtime(tmp_path, monkeypatch):
    """Profile shapes named after the file's input, engine and timing caches in the user's cache folder."""
    monkeypatch.setenv("SEGTOOL_CACHE", str(tmp_path / "cache"))
    model = tiny_model(tmp_path / "m.onnx")
    captured: dict = {}

    def fake_create(path, device, threads, cache_dir=None, cache=False, trt_options=None):
        captured.update(device=device, options=trt_options)
        raise UsageError("stop here")

    monkeypatch.setattr(S, "create_session", fake_create)
    with pytest.raises(UsageError, match="stop here"):
        Segmenter(model, device="tensorrt:fp16:320x240,640x360,1280x720")
    folder = str(tmp_path / "cache" / "tensorrt" / C.file_sha256(model)[:16])
    assert captured == {
        "device": "tensorrt",
        "options": {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": folder,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": folder,
            "trt_profile_min_shapes": "image:1x3x240x320",
            "trt_profile_opt_shapes": "image:1x3x360x640",
            "trt_profile_max_shapes": "image:1x3x720x1280",
        },
    }
    chain = SS.provider_chain("tensorrt", None, captured["options"])
    assert chain[0] == (SS.TENSORRT, captured["options"]) and [c[0] for c in chain[1:2]] == [SS.CUDA]


class BindingSession:
    """ONNX Runtime's session as the GPU path calls it, recording the calls."""

    def __init__(self):
        self.calls: list[tuple] = []

    def get_inputs(self):
        return [E.Port("image", [None, 3, None, None], "tensor(float)")]

    def get_outputs(self):
        return [E.Port("labels", [None, None, None], "tensor(uint8)")]

    def io_binding(self):
        session = self

        class Binding:
            def bind_cpu_input(self, name, tensor):
                session.calls.append(("input", name, "cpu->device"))

            def bind_output(self, name, device_type="cpu"):
                session.calls.append(("output", name, device_type))

            def copy_outputs_to_cpu(self):
                session.calls.append(("copy", "device->cpu"))
                return [np.zeros((1, 4, 4), np.uint8)]

        return Binding()

    def run_with_iobinding(self, binding):
        self.calls.append(("run",))


@pytest.mark.parametrize("provider", [SS.CUDA, SS.TENSORRT])
def test_gpu_outputs_stay_on_the_device_and_cross_once(provider):
    session = BindingSession()
    E.OrtEngine(session, provider).run(np.zeros((1, 3, 4, 4), np.float32))
    assert session.calls == [
        ("input", "image", "cpu->device"),
        ("output", "labels", "cuda"),
        ("run",),
        ("copy", "device->cpu"),
    ]


def test_run_size_builds_the_tensorrt_engine_for_that_size(tmp_path, monkeypatch):
    """`run --device tensorrt --size WxH --batch B` (no profile given): the profile is batches 1..B at
    that size, so the engine is built once for what runs; an explicit profile is kept as given."""
    monkeypatch.setenv("SEGTOOL_CACHE", str(tmp_path / "cache"))
    model = tiny_model(tmp_path / "m.onnx")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((30, 40, 3), np.uint8))
    seen: list = []

    def fake_create(path, device, threads, cache_dir=None, cache=False, trt_options=None):
        seen.append(trt_options)
        raise UsageError("stop here")

    monkeypatch.setattr(S, "create_session", fake_create)
    for device in ("tensorrt:fp16", "tensorrt:fp16:320x240"):
        args = ("run", tmp_path / "a.png", "--model", model, "--out", tmp_path / "o", "--device", device)
        proc = run_in_process(*args, "--size", "64x48", "--batch", "3")
        assert proc.returncode != 0 and "stop here" in proc.stderr
    sized, given = seen
    assert sized["trt_profile_min_shapes"] == "image:1x3x48x64"
    assert sized["trt_profile_opt_shapes"] == sized["trt_profile_max_shapes"] == "image:3x3x48x64"
    assert given["trt_profile_min_shapes"] == given["trt_profile_max_shapes"] == "image:1x3x240x320"
    assert E.with_profile("cpu", (64, 48), 3) == "cpu" and E.with_profile("tensorrt", None, 3) == "tensorrt"
