"""int8 never slower than fp32, and refusals that say what to do."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_clean_failure, run_in_process
from onnx import TensorProto, helper, numpy_helper

from segtool.export import int8
from segtool.export.int8 import VariantBelowTarget, VariantSlowerThanFp32, quantize_with_target
from segtool.export.parity import sample_batch
from segtool.runtime.model.metadata import IMAGENET_MEAN as MEAN
from segtool.runtime.model.metadata import IMAGENET_STD as STD

pytestmark = pytest.mark.slow

NAME = "lraspp_mobilenet_v3_large"
quiet = lambda _: None


def conv_net() -> bytes:
    """Two 3x3 convolutions with a ReLU between: 3 -> 8 -> 5 classes, dynamic batch, height and width."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32), rng.standard_normal((5, 8, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Conv", ["b", "w2"], ["out"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 5, "height", "width"])
    graph = helper.make_graph(
        nodes, "net", [image], [out], [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


BATCHES = [sample_batch((1, 3, 32, 32), MEAN, STD, seed=1000 + k) for k in range(6)]


def timed(fp32_ms: float, int8_ms: float):
    return lambda fp32_model, model, batch, runs=5: (fp32_ms / 1e3, int8_ms / 1e3)


def test_int8_slower_than_fp32_is_refused_with_the_figure_and_forced_is_recorded(monkeypatch):
    monkeypatch.setattr(int8, "median_latencies", timed(10.0, 20.0))
    with pytest.raises(VariantSlowerThanFp32) as refused:
        quantize_with_target(conv_net(), BATCHES, 0.0, progress=quiet)
    message = str(refused.value)
    for needle in ("not faster than fp32", "20.0 ms vs 10.0 ms", "0.50x", "1x3x32x32", "nothing written", "--force"):
        assert needle in message, message
    _, record = quantize_with_target(conv_net(), BATCHES, 0.0, force=True, progress=quiet)
    assert record["speedup_vs_fp32"] == 0.5 and record["faster_than_fp32"] is False and record["met"]
    assert record["latency_ms"] == {"fp32": 10.0, "int8": 20.0} and record["speed_input"] == [1, 3, 32, 32]
    monkeypatch.setattr(int8, "median_latencies", timed(20.0, 10.0))
    model, record = quantize_with_target(conv_net(), BATCHES, 0.0, progress=quiet)
    assert record["speedup_vs_fp32"] == 2.0 and record["faster_than_fp32"]
    assert "QuantizeLinear" in {n.op_type for n in onnx.load_from_string(model).graph.node}


def test_the_real_timing_measures_both_models():
    fp32 = conv_net()
    fp32_s, int8_s = int8.median_latencies(fp32, fp32, BATCHES[0], runs=2)
    assert fp32_s > 0 and int8_s > 0


def test_below_target_refusal_gives_the_best_reached_its_speed_and_the_choices(monkeypatch):
    monkeypatch.setattr(int8, "median_latencies", timed(15.0, 10.0))
    monkeypatch.setattr(int8, "agreement", lambda model, batches, reference: 0.9123)
    with pytest.raises(VariantBelowTarget) as refused:
        quantize_with_target(conv_net(), BATCHES, 0.99, progress=quiet)
    message = str(refused.value)
    for needle in (
        "at best 91.23%",
        "below the 99.00% target",
        "1.50x fp32's speed",
        "nothing written",
        "--int8-min-agreement 0.912",
        "more or more varied calibration images",
        "--calibration",
        "--force",
        "--fp16 for a GPU",
    ):
        assert needle in message, message


def test_export_refuses_a_slower_int8_and_writes_nothing_unless_forced(tmp_path, monkeypatch):
    monkeypatch.setattr(int8, "median_latencies", timed(10.0, 12.5))
    out = tmp_path / "x.onnx"
    flags = "--weights random --no-verify --int8 --calibration-count 3 --int8-min-agreement 0".split()
    args = ["export", "--model", NAME, *flags, "--output", out]
    assert_clean_failure(run_in_process(*args), 1, "not faster than fp32", "0.80x", "nothing written")
    assert not out.exists() and not list(tmp_path.iterdir())
    forced = run_in_process(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "not faster than fp32 here (--force)" in forced.stderr
    from segtool.runtime import Segmenter

    variant = Segmenter(out, device="cpu", warn_random=False).meta.extra["variant"]
    assert variant["speedup_vs_fp32"] == 0.8 and variant["faster_than_fp32"] is False
    assert variant["method"] == "minmax" and variant["engine"].startswith("onnxruntime quantize_static")
