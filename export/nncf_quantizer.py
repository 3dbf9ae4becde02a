"""int8 with NNCF's ONNX backend (the [int8] extra), held to segtool's agreement target.

The same split as ONNX Runtime's path (``segtool.export.int8``): ``nncf.quantize`` calibrates on
two images in three; if argmax agreement with fp32 on the third is below the target,
``nncf.quantize_with_accuracy_control`` reverts the most harmful quantizers to fp32 until the
drop is within ``1 - target`` (absolute), with that same agreement as its metric, measured on the
same held-out images. The caller times it, refuses it or records it exactly as for ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx

from segtool.runtime.errors import UsageError
from segtool.runtime.model.session import reference_session
from segtool.runtime.tools.agreement import as_labels, label_agreement

from .graph import INPUT_NAME


def load_nncf():
    try:
        import nncf
    except ImportError:
        raise UsageError("--quantizer nncf needs NNCF: pip install 'segtool[int8]'") from None
    return nncf


def unquantized_convolutions(model: onnx.ModelProto) -> tuple[int, int]:
    """(convolutions whose weight is not dequantized from int8, convolutions)."""
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    convolutions = [node for node in model.graph.node if node.op_type == "Conv"]
    return sum(len(node.input) > 1 and node.input[1] not in dequantized for node in convolutions), len(convolutions)


def label_agreement_fn() -> Callable[[onnx.ModelProto, Iterable[tuple[np.ndarray, np.ndarray]]], tuple[float, list]]:
    """NNCF's validation_fn: pixel-weighted argmax agreement with the fp32 labels, and each image's."""

    def validate(model: onnx.ModelProto, items: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list]:
        session = reference_session(model.SerializeToString())
        per_item, weights = [], []
        for batch, reference in items:
            labels = as_labels(np.asarray(session.run(None, {INPUT_NAME: batch})[0]))
            per_item.append(label_agreement(labels, reference))
            weights.append(reference.size)
        return float(np.average(per_item, weights=weights)), per_item

    return validate


def nncf_search(fp32_model: bytes, calibration: list[np.ndarray], validation: list[np.ndarray],
                reference: list[np.ndarray], target: float,
                progress: Callable[[str], None]) -> tuple[bytes, dict]:  # fmt: skip
    """NNCF's int8 model and the outcome fields of ``segtool.export.int8.quantize_with_target``'s record."""
    nncf = load_nncf()
    model = onnx.load_from_string(fp32_model)
    feed = lambda batch: {INPUT_NAME: batch}
    calibration_set = nncf.Dataset(calibration, feed)
    validation_items = list(zip(validation, reference, strict=True))
    validation_set = nncf.Dataset(validation_items, lambda item: feed(item[0]))
    validate = label_agreement_fn()
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
        QuantizationParameters,
    )

    # Per-tensor activations: ONNX Runtime's QLinearConv takes one zero point per input, and NNCF's
    # per-channel activation scales (its default at some nodes) fail there at run time.
    advanced = AdvancedQuantizationParameters(activations_quantization_params=QuantizationParameters(per_channel=False))
    progress(f"int8: nncf.quantize on {len(calibration)} images, validating on {len(validation)}")
    plain = nncf.quantize(model, calibration_set, subset_size=len(calibration), advanced_parameters=advanced)
    reached = before = validate(plain, validation_items)[0]
    history: list[dict] = [{"step": "quantize", "agreement": before}]
    best = plain
    cap = max(1, unquantized_convolutions(model)[1] // 4)  # the ORT path's budget: a quarter of the convolutions
    restorer = AdvancedAccuracyRestorerParameters(max_num_iterations=cap)
    if reached < target:
        progress(f"int8: agreement {reached:.2%} < {target:.2%}: nncf.quantize_with_accuracy_control "
                 f"(at most {cap} reverting steps)")  # fmt: skip
        controlled = nncf.quantize_with_accuracy_control(
            model, calibration_set, validation_set, validate, max_drop=1.0 - target,
            drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
            advanced_quantization_parameters=advanced,
            advanced_accuracy_restorer_parameters=restorer)  # fmt: skip
        tried = validate(controlled, validation_items)[0]
        history.append({"step": "quantize_with_accuracy_control", "agreement": tried})
        if tried > reached:
            best, reached = controlled, tried
    fp32_convolutions, convolutions = unquantized_convolutions(best)
    outcome = {"agreement_before": before, "agreement": reached, "excluded_nodes": [], "fp32_tensors": [],
               "fp32_convolutions": fp32_convolutions, "convolutions": convolutions, "cap": cap,
               "history": history, "method": "nncf", "nncf_version": nncf.__version__,
               "how": f"even after NNCF's accuracy control reverted its most harmful quantizers to fp32 "
                      f"({cap} steps at most)"}  # fmt: skip
    return best.SerializeToString(), outcome
