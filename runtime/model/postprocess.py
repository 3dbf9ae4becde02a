"""Model output -> uint8 label maps at the input's resolution."""

from __future__ import annotations

import cv2
import numpy as np


def argmax_channels(logits: np.ndarray) -> np.ndarray:
    """Per-pixel argmax over the class axis of [N, C, H, W] logits, as uint8 [N, H, W].

    A running maximum over the C planes reads memory in order, where ``np.argmax(axis=1)``
    strides across planes: 66 ms vs 109 ms for 21x853x1280 on the 2-core dev box. Ties keep
    the lowest class index, like ``np.argmax`` and ONNX ArgMax (strict ``>`` below).
    """
    best = logits[:, 0].copy()
    labels = np.zeros(best.shape, dtype=np.uint8)
    greater = np.empty(best.shape, dtype=bool)
    for c in range(1, logits.shape[1]):
        np.greater(logits[:, c], best, out=greater)
        np.maximum(best, logits[:, c], out=best)
        np.copyto(labels, np.uint8(c), where=greater)
    return labels


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bring an HxW label map to (height, width) with exact nearest-neighbour sampling."""
    if labels.shape == (height, width):
        return labels
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def resize_logits(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """[N, C, h, w] logits -> [N, C, height, width], bilinear with half-pixel centres: what torchvision's
    models do to their output (``F.interpolate(..., mode="bilinear", align_corners=False)``) before
    the argmax, for graphs that leave that step out (stride-4 or stride-8 outputs)."""
    if logits.shape[2:] == (height, width):
        return logits
    source = logits if logits.dtype == np.float32 else logits.astype(np.float32)
    out = np.empty((*logits.shape[:2], height, width), dtype=np.float32)
    for n in range(source.shape[0]):
        for c in range(source.shape[1]):
            out[n, c] = cv2.resize(source[n, c], (width, height), interpolation=cv2.INTER_LINEAR)
    return out
