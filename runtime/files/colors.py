"""Label maps -> pictures and numbers: colour masks, overlays, per-class pixel shares."""

from __future__ import annotations

import cv2
import numpy as np


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """HxW labels -> HxWx3 colours, in the channel order of ``palette`` ((n, 3) uint8)."""
    return np.take(palette, labels, axis=0)


def blend(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * mask``, rounded to uint8 (alpha 0.5: the seed's 50/50 blend).

    Both arrays must share a channel order (BGR for OpenCV).
    """
    return cv2.addWeighted(image, 1.0 - alpha, mask, alpha, 0.0)


def stamp(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` on a black band across the top of a copy of ``image``.

    Used to mark every picture made with random weights, so that no one mistakes it for a result.
    """
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.35, min(w, 2 * h) / 1400)
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    band = min(h, th + base + 8)
    out[:band] = 0
    cv2.putText(
        out, text, (4, min(h - 1, th + 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA
    )
    return out


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per label value (at least ``num_classes`` entries)."""
    return np.bincount(labels.ravel(), minlength=num_classes)


def shares_from_counts(counts: np.ndarray, classes: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Fraction of pixels per class present, largest first."""
    total = max(1, int(counts.sum()))
    order = np.argsort(-counts, kind="stable")
    return {classes[i] if i < len(classes) else str(i): float(counts[i] / total) for i in order if counts[i]}


def class_shares(labels: np.ndarray, classes: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Fraction of pixels per class present in one label map, largest first."""
    return shares_from_counts(class_counts(labels, len(classes)), classes)
