"""Optimized variants of an exported fp32 model, made with ONNX Runtime's own tools.

- int8: static quantization, QDQ format, per-channel int8 weights and uint8 activations
  (what runs fast on CPUs without VNNI), calibrated with MinMax on real images from a folder
  or, when none is given, on generated smooth images (recorded in the metadata). Targets the
  CPU provider. ``CalibMaxIntermediateOutputs`` is deliberately not set: ORT's calibrator loses
  data with it.
- fp16: ``onnxruntime.transformers.float16.convert_float_to_float16`` with fp32 inputs and
  outputs kept, so callers do not change; for GPU providers (slower on CPUs).

Each variant is measured against the fp32 model it came from (argmax agreement, logit error)
on the parity inputs, and the result is stored in the file's metadata.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from segtool.runtime.errors import SegtoolError
from segtool.runtime.imagefiles import IMAGE_SUFFIXES, read_image
from segtool.runtime.preprocess import Normalizer, resize_for_inference, to_uint8_3ch

from .graph import INPUT_NAME
from .parity import ParityRow, sample_batch

PRECISIONS = ("fp32", "int8", "fp16")


def calibration_batches(mean, std, folder: Path | None, count: int, size: int) -> tuple[list[np.ndarray], str]:
    """Model inputs for calibration and a description of where they came from."""
    if folder is None:
        shapes = [(1, 3, size, size)] * count
        return [sample_batch(s, mean, std, seed=1000 + k) for k, s in enumerate(shapes)], \
            f"generated: {count} smooth random images at {size}x{size} (no --calibration folder given)"
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not files:
        raise SegtoolError(f"--calibration {folder}: no images found", 2)
    normalize = Normalizer(mean, std)
    batches = []
    for path in files:
        image = resize_for_inference(to_uint8_3ch(read_image(path)), max_size=size)
        batches.append(normalize([image], "bgr"))
    return batches, f"{len(files)} images from {folder}, long side {size}"


def quantize_int8(fp32_model: bytes, batches: list[np.ndarray]) -> bytes:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter({INPUT_NAME: b} for b in batches)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="segtool-int8-") as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32_model)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return dst.read_bytes()


def convert_fp16(fp32_model: bytes) -> bytes:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load_from_string(fp32_model)
    # ArgMax stays fp32 (labels-output graphs): ties and near-ties must not change with precision.
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST) + ["ArgMax"])
    # The converter appends its input Casts after their consumers; ONNX requires topological order.
    graph = ir.from_proto(half)
    graph.graph.sort()
    return ir.to_proto(graph).SerializeToString()


def agreement_with(reference: bytes, variant: bytes, shapes, mean, std) -> list[ParityRow]:
    """The variant against the fp32 model it came from, both on ONNX Runtime's CPU provider."""
    ref_session = ort.InferenceSession(reference, providers=["CPUExecutionProvider"])
    var_session = ort.InferenceSession(variant, providers=["CPUExecutionProvider"])
    rows = []
    for k, shape in enumerate(shapes):
        x = sample_batch(shape, mean, std, seed=k)
        ref = ref_session.run(None, {INPUT_NAME: x})[0]
        out = var_session.run(None, {INPUT_NAME: x})[0]
        if out.ndim == 3:  # labels-output graphs
            rows.append(ParityRow(tuple(shape), None, float((out == ref).mean())))
        else:
            rows.append(ParityRow(tuple(shape), float(np.abs(out - ref).max()),
                                  float((out.argmax(1) == ref.argmax(1)).mean())))
    return rows


def make_variant(fp32_model: bytes, precision: str, mean, std, shapes, calibration: Path | None = None,
                 calibration_count: int = 8, calibration_size: int = 384) -> tuple[bytes, dict]:
    """fp32 ONNX bytes -> (variant bytes, metadata record of how it was made and how close it is)."""
    if precision == "int8":
        batches, source = calibration_batches(mean, std, calibration, calibration_count, calibration_size)
        variant = quantize_int8(fp32_model, batches)
        record = {"precision": "int8", "method": "onnxruntime quantize_static, QDQ, per-channel, "
                  "uint8 activations / int8 weights, MinMax", "calibration": source, "target": "CPUExecutionProvider"}
    elif precision == "fp16":
        variant = convert_fp16(fp32_model)
        record = {"precision": "fp16", "method": "onnxruntime.transformers.float16, fp32 inputs/outputs kept",
                  "target": "CUDAExecutionProvider"}
    else:
        raise SegtoolError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}", 2)
    rows = agreement_with(fp32_model, variant, shapes, mean, std)
    record["vs_fp32"] = [r.as_dict() for r in rows]
    return variant, record
