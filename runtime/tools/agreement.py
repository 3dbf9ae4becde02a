"""The one definition of "how close are two outputs": used by the parity gate, the export
variants' record and ``segtool compare``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segtool.runtime.errors import ShapeMismatch


def as_labels(output: np.ndarray) -> np.ndarray:
    """A model's output as labels: the argmax over C of [N, C, H, W] logits (ties keep the lowest
    class, as ONNX ArgMax does); [N, H, W] labels of a labels-output graph as they are."""
    return output.argmax(1) if output.ndim == 4 else output


def label_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels with the same class in two label maps (or two [N, H, W] batches)."""
    if a.shape != b.shape:
        raise ShapeMismatch(f"label maps differ in shape: {a.shape} vs {b.shape}")
    return float(np.mean(a == b)) if a.size else 1.0


@dataclass(frozen=True)
class OutputDiff:
    """Two model outputs compared: labels always, logits where both graphs expose them."""

    agreement: float
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    # Largest |a - b| / (atol + rtol * |a|) ratio is computed by the gate itself (segtool.export.parity).


def compare_outputs(a: np.ndarray, b: np.ndarray) -> OutputDiff:
    """Outputs of two graphs on the same input: [N, C, H, W] logits or [N, H, W] labels.

    ``ShapeMismatch`` if their labels differ in shape, or both are logits of different shapes
    (another class count: the labels alone would hide it).
    """
    if a.ndim == 4 and b.ndim == 4 and a.shape != b.shape:
        raise ShapeMismatch(f"logits differ in shape: {a.shape} vs {b.shape}")
    agreement = label_agreement(as_labels(a), as_labels(b))
    if a.ndim == 4 and b.ndim == 4:
        diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
        return OutputDiff(agreement, float(diff.max()), float(diff.mean(dtype=np.float64)))
    return OutputDiff(agreement)
