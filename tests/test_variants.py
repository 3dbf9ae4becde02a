"""Optimized variants: in-graph argmax, int8 (CPU) and fp16 (GPU), picked up from metadata."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
from conftest import assert_clean_failure, run_in_process, scene

from segtool.export import export_model
from segtool.export.variants import calibration_batches
from segtool.runtime import Segmenter, SegtoolError

SMALL = ((1, 3, 64, 96),)


@pytest.fixture(scope="module")
def variant_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("variants")


@pytest.fixture(scope="module")
def labels_model(variant_dir):
    return export_model(variant_dir / "labels.onnx", weights="random", seed=0, labels_output=True, shapes=SMALL).path


@pytest.fixture(scope="module")
def fp16_model(variant_dir):
    return export_model(
        variant_dir / "fp16.onnx", weights="random", seed=0, verify=False, precision="fp16", shapes=SMALL
    ).path


def test_labels_output_is_exactly_the_argmax_of_the_logits(labels_model, segmenter):
    model = onnx.load(str(labels_model))
    onnx.checker.check_model(model, full_check=True)
    (output,) = model.graph.output
    assert output.name == "labels" and output.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param for d in output.type.tensor_type.shape.dim] == ["batch", "height", "width"]
    seg = Segmenter(labels_model, device="cpu", warn_random=False)
    assert seg.meta.output == "labels"
    for h, w in ((37, 53), (128, 96)):
        image = scene(h, w, seed=h)
        labels = seg.segment(image)
        logits = segmenter.run(segmenter.prepare([image]))
        assert labels.shape == (h, w)
        assert np.array_equal(labels, logits.argmax(1)[0])


def test_int8_is_quantized_valid_and_close_to_fp32(int8_model, segmenter):
    model = onnx.load(str(int8_model))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    props = {p.key: p.value for p in model.metadata_props}
    record = json.loads(props["segtool.variant"])
    assert record["precision"] == "int8" and "generated" in record["calibration"]
    (row,) = record["vs_fp32"]
    assert 0.9 < row["agreement"] <= 1.0 and row["max_abs_diff"] > 0
    seg = Segmenter(int8_model, device="cpu", warn_random=False)
    assert seg.meta.precision == "int8"
    image = scene(72, 88, seed=5)
    agreement = (seg.segment(image) == segmenter.segment(image)).mean()
    assert agreement > 0.9, agreement


def test_fp16_keeps_fp32_io_and_warns_on_cpu(fp16_model, segmenter, caplog):
    model = onnx.load(str(fp16_model))
    onnx.checker.check_model(model, full_check=True)
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    seg = Segmenter(fp16_model, device="cpu", warn_random=False)
    assert seg.meta.precision == "fp16" and "slower than fp32" in caplog.text
    image = scene(48, 64, seed=2)
    logits16 = seg.run(seg.prepare([image]))
    logits32 = segmenter.run(segmenter.prepare([image]))
    assert logits16.dtype == np.float32
    assert (logits16.argmax(1) == logits32.argmax(1)).mean() > 0.99
    assert np.abs(logits16 - logits32).max() < 0.5


def test_calibration_folder_and_empty_folder(tmp_path):
    for k in range(3):
        cv2.imwrite(str(tmp_path / f"c{k}.jpg"), scene(100, 150, seed=k))
    batches, source = calibration_batches((0.5,) * 3, (0.2,) * 3, tmp_path, count=8, size=64)
    assert len(batches) == 3 and batches[0].shape == (1, 3, 43, 64) and str(tmp_path) in source
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegtoolError, match="no readable images"):
        calibration_batches((0.5,) * 3, (0.2,) * 3, tmp_path / "empty", count=8, size=64)


def test_int8_and_fp16_together_is_refused(tmp_path):
    proc = run_in_process("export", "--int8", "--fp16", "--weights", "random", "--output", tmp_path / "x.onnx")
    assert_clean_failure(proc, 2, "pick one")


def test_io_binding_path_gives_the_same_output(model_path):
    seg = Segmenter(model_path, device="cpu", warn_random=False)
    tensor = seg.prepare([scene(40, 56)])
    plain = seg.run(tensor)
    seg.io_binding = True  # the GPU path's call sequence, exercised on the CPU provider
    assert np.array_equal(seg.run(tensor), plain)
