"""The one definition of "how close are two outputs": used by the parity gate, the export
variants' record and ``segtool compare``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def label_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels with the same class in two label maps (or two [N, H, W] batches)."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
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

    Labels are the argmax over C for logits (ties keep the lowest class, as ONNX ArgMax does).
    """
    labels_a = a.argmax(1) if a.ndim == 4 else a
    labels_b = b.argmax(1) if b.ndim == 4 else b
    agreement = label_agreement(labels_a, labels_b)
    if a.ndim == 4 and a.shape == b.shape:
        diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
        return OutputDiff(agreement, float(diff.max()), float(diff.mean(dtype=np.float64)))
    return OutputDiff(agreement)
