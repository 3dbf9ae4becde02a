"""int8 with an accuracy target: quantize, check on held-out images, keep the sensitive layers in fp32.

1. The calibration images are split: two in three calibrate (ONNX Runtime's ``quantize_static``,
   QDQ, per-channel int8 weights, uint8 activations), one in three validates, never calibrated on.
2. Agreement is the share of pixels whose argmax equals the fp32 export's on the validation images.
3. Below the target, the quantized convolutions are ranked by sensitivity with ONNX Runtime's
   ``qdq_loss_debug`` tools: the signal-to-quantization-noise ratio of each convolution's output
   activation before and after its QuantizeLinear/DequantizeLinear pair (the error that layer adds,
   not the error it inherits). The lowest-SQNR ones are excluded from quantization
   (``nodes_to_exclude``), 1, 2, 4, ... of them, until the target holds or a quarter of the
   convolutions are in fp32 (the cap). Calibration ranges are computed once and cached.
4. At the cap the variant is refused (``VariantBelowTarget``), unless ``force``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from segtool.runtime.errors import ParityError

from .graph import INPUT_NAME

log = logging.getLogger(__name__)
METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


class VariantBelowTarget(ParityError):
    """The variant stays below its agreement target even with the sensitive layers in fp32."""


def split(batches: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(calibration, validation): every third batch validates."""
    return [b for k, b in enumerate(batches) if k % 3 != 2], [b for k, b in enumerate(batches) if k % 3 == 2]


def _session(model: bytes | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def labels_of(model: bytes, batches: list[np.ndarray]) -> list[np.ndarray]:
    session = _session(model)
    return [np.asarray(session.run(None, {INPUT_NAME: b})[0]).argmax(1) for b in batches]


def agreement(model: bytes, batches: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Pixel-weighted argmax agreement with ``reference`` labels."""
    same = sum(int((labels == ref).sum()) for labels, ref in zip(labels_of(model, batches), reference))
    return same / sum(ref.size for ref in reference)


def median_seconds(model: bytes, batch: np.ndarray, runs: int = 3) -> float:
    session = _session(model)
    session.run(None, {INPUT_NAME: batch})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {INPUT_NAME: batch})
        times.append(time.perf_counter() - started)
    return float(np.median(times))


class Quantizer:
    """One fp32 model, pre-processed once, calibrated once; quantized with any exclusion list."""

    def __init__(self, fp32_model: bytes, calibration: list[np.ndarray], method: str, workdir: Path):
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.workdir, self.calibration, self.method = workdir, calibration, method
        (workdir / "fp32.onnx").write_bytes(fp32_model)
        quant_pre_process(str(workdir / "fp32.onnx"), str(workdir / "pre.onnx"), skip_symbolic_shape=True)
        graph = onnx.load(str(workdir / "pre.onnx"), load_external_data=False).graph
        self.convolutions = [n.name for n in graph.node if n.op_type == "Conv"]

    def quantize(self, exclude: list[str]) -> bytes:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,  # fmt: skip
        )

        class Reader(CalibrationDataReader):
            def __init__(self, batches):
                self.feeds = iter({INPUT_NAME: b} for b in batches)

            def get_next(self):
                return next(self.feeds, None)

        out = self.workdir / "int8.onnx"
        quantize_static(str(self.workdir / "pre.onnx"), str(out), Reader(self.calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
                        calibrate_method=getattr(CalibrationMethod, METHODS[self.method]),
                        calibration_cache_path=str(self.workdir / "ranges.json"))  # fmt: skip
        return out.read_bytes()

    def sensitivity(self, qdq_model: bytes, batch: np.ndarray) -> list[str]:
        """Quantized convolutions, most sensitive first (lowest SQNR of their output's QDQ)."""
        from onnxruntime.quantization import CalibrationDataReader
        from onnxruntime.quantization.qdq_loss_debug import (
            collect_activations,
            create_activation_matching,
            modify_model_output_intermediate_tensors,  # fmt: skip
        )
        from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio as sqnr

        class One(CalibrationDataReader):
            def __init__(self):
                self.feeds = iter([{INPUT_NAME: batch}])

            def get_next(self):
                return next(self.feeds, None)

        (self.workdir / "qdq.onnx").write_bytes(qdq_model)
        augmented = self.workdir / "augmented.onnx"
        modify_model_output_intermediate_tensors(str(self.workdir / "qdq.onnx"), str(augmented))
        matching = create_activation_matching(collect_activations(str(augmented), One()))
        producers = {out: node for node in onnx.load(str(self.workdir / "qdq.onnx")).graph.node for out in node.output}
        scored = {}
        for tensor, pair in matching.items():
            node = producers.get(tensor)
            if node is not None and node.op_type == "Conv" and "pre_qdq" in pair and "post_qdq" in pair:
                scored[node.name] = float(sqnr(pair["pre_qdq"], pair["post_qdq"]))
        return sorted(scored, key=scored.__getitem__)


Progress = Callable[[str], None]


def quantize_with_target(fp32_model: bytes, batches: list[np.ndarray], target: float, method: str = "minmax",
                         force: bool = False, progress: Progress = log.info) -> tuple[bytes, dict]:  # fmt: skip
    """The int8 model and the record of how it was made; ``VariantBelowTarget`` if it cannot reach ``target``."""
    calibration, validation = split(batches)
    if not validation:
        raise VariantBelowTarget("int8 needs at least 3 calibration images (one in three validates)")
    reference = labels_of(fp32_model, validation)
    with tempfile.TemporaryDirectory(prefix="segtool-int8-") as tmp:
        quantizer = Quantizer(fp32_model, calibration, method, Path(tmp))
        progress(f"int8: calibrating ({method}) on {len(calibration)} images, validating on {len(validation)}")
        model = first = quantizer.quantize([])
        reached = before = agreement(model, validation, reference)
        history, excluded = [{"excluded": 0, "agreement": before}], []
        cap = max(1, len(quantizer.convolutions) // 4)
        if reached < target:
            ranking = quantizer.sensitivity(first, validation[0])[:cap]
            count = 1
            while reached < target and count <= len(ranking):
                excluded = ranking[:count]
                progress(f"int8: agreement {reached:.2%} < {target:.2%}: {count} convolution(s) in fp32")
                model = quantizer.quantize(excluded)
                reached = agreement(model, validation, reference)
                history.append({"excluded": count, "agreement": reached})
                count = len(ranking) if count < len(ranking) <= count * 2 else count * 2
    speedup = median_seconds(fp32_model, validation[0]) / median_seconds(model, validation[0])
    record = {"agreement_before": before, "agreement": reached, "target": target, "met": reached >= target,
              "excluded_nodes": excluded, "convolutions": len(quantizer.convolutions), "cap": cap, "history": history,
              "split": {"calibration": len(calibration), "validation": len(validation)}, "method": method,
              "speedup_vs_fp32": round(speedup, 3), "speed_input": list(validation[0].shape)}  # fmt: skip
    if reached < target and not force:
        raise VariantBelowTarget(
            f"int8 reaches {reached:.2%} argmax agreement with fp32 on {len(validation)} held-out images, below "
            f"the {target:.2%} target, even with {len(excluded)} of {len(quantizer.convolutions)} convolutions "
            "in fp32 (the cap); nothing written (--force writes it anyway, marked as below target)")  # fmt: skip
    return model, record
