"""Optimized variants of an exported fp32 model, made with ONNX Runtime's own tools.

- int8: static quantization, QDQ format, per-channel int8 weights and uint8 activations
  (what runs fast on CPUs without VNNI), calibrated on images from a folder, frames of a video
  or, when none is given, generated smooth images (recorded in the metadata), with an accuracy
  target met on held-out images by keeping sensitive layers in fp32 (``segtool.export.int8``), and
  refused where it is not faster than fp32 on this CPU. Targets the CPU provider.
- fp16: ``onnxruntime.transformers.float16.convert_float_to_float16`` with fp32 inputs and
  outputs kept, so callers do not change; for GPU providers (slower on CPUs).

Each variant is measured against the fp32 model it came from (label agreement: the argmax of
logits, or the label map of a ``--labels-output`` graph; logit error where there are logits)
on the parity inputs, and the result is stored in the file's metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from segtool.runtime.errors import UsageError
from segtool.runtime.jobs import iter_images
from segtool.runtime.model.preprocess import Normalizer, resize_for_inference, to_uint8_3ch
from segtool.runtime.model.session import reference_session

from .config import MIN_CALIBRATION, ExportConfig
from .graph import INPUT_NAME
from .int8 import VariantBelowTarget, agreement, labels_of, quantize_with_target, split
from .parity import ParityRow, row, sample_batch

log = logging.getLogger(__name__)
#: What an fp16 file's agreement measured on ONNX Runtime's CPU covers: its CPU kernels wrap fp16 convolutions
#: in casts and compute in fp32, so only the rounding of the weights is checked (benchmarks/gpu.sh: on a GPU).
FP16_ON_CPU = "ONNX Runtime CPU: weights rounding only (it computes fp16 convolutions in fp32 behind casts)"


def calibration_batches(
    mean, std, source: Path | None, count: int, size: int, channel_order: str = "RGB"
) -> tuple[list[np.ndarray], str]:
    """Model inputs for calibration and a description of where they came from.

    ``source`` is a folder of images or a video (frames); unreadable images are skipped with a
    warning, as ``segtool run`` does. None means generated smooth images. ``UsageError`` for fewer
    than ``MIN_CALIBRATION`` images: the split would leave nothing to calibrate or to validate on.
    """
    if count < MIN_CALIBRATION:
        raise UsageError(f"--calibration-count {count}: at least {MIN_CALIBRATION} images are needed")
    if source is None:
        generated = [sample_batch((1, 3, size, size), mean, std, seed=1000 + k) for k in range(count)]
        return generated, f"generated: {count} smooth random images at {size}x{size} (no --calibration folder given)"
    skipped: list[str] = []
    normalize = Normalizer(mean, std, channel_order)  # the network's own channel order
    images = iter_images([str(source)], count, on_error=lambda name, message: skipped.append(message))
    batches = [normalize([resize_for_inference(to_uint8_3ch(image), max_size=size)], "bgr") for _, image in images]
    for message in skipped:
        log.warning("calibration: skipped %s", message)
    note = f", {len(skipped)} unreadable skipped" if skipped else ""
    if len(batches) < MIN_CALIBRATION:  # the argument cannot work, as a missing folder cannot: a usage error
        found = f"only {len(batches)} readable" if batches else "no readable"
        raise UsageError(
            f"--calibration {source}: {found} images or frames found{note}; int8/fp16 need at least "
            f"{MIN_CALIBRATION} (two in three calibrate, one in three validates)"
        )
    return batches, f"{len(batches)} images from {source}, long side {size}{note}"


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
    ref_session, var_session = reference_session(reference), reference_session(variant)
    rows = []
    for k, shape in enumerate(shapes):
        x = sample_batch(shape, mean, std, seed=k)
        rows.append(row(shape, ref_session.run(None, {INPUT_NAME: x})[0], var_session.run(None, {INPUT_NAME: x})[0]))
    return rows


def make_variant(
    fp32_model: bytes, config: ExportConfig, mean, std, progress: Callable[[str], None] = lambda stage: None
) -> tuple[bytes, dict]:
    """fp32 ONNX bytes -> (variant bytes, metadata record of how it was made and how close it is).

    Both variants must reach ``config.variant_target`` label agreement with fp32 on held-out
    images (int8: those of its calibration source it did not calibrate on; fp16: the same kind of
    split of the same source), or are refused unless ``config.force``. Labels are the argmax of
    logits, or the label maps themselves for a labels-output graph (``int8.labels_of``).
    """
    batches, source = calibration_batches(
        mean, std, config.calibration, config.calibration_count, config.calibration_size, config.channel_order
    )
    target = config.variant_target
    record: dict
    if config.precision == "int8":
        method = config.calibration_method
        variant, outcome = quantize_with_target(
            fp32_model, batches, target, method, config.force, progress, config.int8_target
        )
        bits = outcome["int8_target"]["weight_bits"]
        engine = f"onnxruntime quantize_static, QDQ, per-channel, uint8 activations / {bits}-bit weights, {method}"
        record = {
            "precision": "int8",
            "target_provider": "CPUExecutionProvider",
            "calibration": source,
            "engine": engine,
            **outcome,
        }
        if not outcome["faster_than_fp32"]:
            speed = outcome["speedup_vs_fp32"]
            log.warning("int8 variant written although not faster than fp32 here (--force): %.2fx fp32's speed", speed)
    else:
        variant = convert_fp16(fp32_model)
        _, validation = split(batches)
        reached = agreement(variant, validation, labels_of(fp32_model, validation))
        record = {
            "precision": "fp16",
            "target_provider": "CUDAExecutionProvider",
            "validation": source,
            "method": "onnxruntime.transformers.float16, fp32 inputs/outputs kept",
            "measured_on": FP16_ON_CPU,
            "agreement": reached,
            "target": target,
            "met": reached >= target,
        }
        if reached < target and not config.force:
            raise VariantBelowTarget(
                f"fp16 reaches {reached:.2%} argmax agreement with fp32, below the {target:.2%} target; "
                "nothing written (--force writes it anyway)"
            )
    if not record["met"]:
        shown = (config.precision, 100 * record["agreement"], 100 * target)
        log.warning("%s variant written below its agreement target (--force): %.2f%% < %.2f%%", *shown)
    rows = agreement_with(fp32_model, variant, config.shapes, mean, std)
    record["vs_fp32"] = [r.as_dict() for r in rows]
    return variant, record
