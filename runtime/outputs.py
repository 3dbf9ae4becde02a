"""The pictures written for one segmented image: paletted labels, colour mask, overlay.

All files are written atomically. Pictures made with random weights say so: PNGs carry a
tEXt note and the overlay is stamped, so no one mistakes them for a real segmentation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import png
from .imagefiles import atomic_write_bytes, encode_image
from .metadata import ModelMetadata
from .visualize import blend, colorize, stamp

RANDOM_STAMP = "RANDOM WEIGHTS - labels are meaningless"


class Painter:
    """Turns label maps into pictures with one model's palette (BGR for OpenCV images)."""

    def __init__(self, meta: ModelMetadata, alpha: float = 0.5):
        self.meta = meta
        self.alpha = alpha
        self.palette_rgb = np.zeros((256, 3), np.uint8)
        self.palette_rgb[: len(meta.palette)] = meta.palette
        self.palette_bgr = np.ascontiguousarray(self.palette_rgb[:, ::-1])
        self.note = {"Software": "segtool", "Comment": f"{meta.model}, {meta.weights_label}"}

    def mask(self, labels: np.ndarray) -> np.ndarray:
        return colorize(labels, self.palette_bgr)

    def overlay(self, image_bgr: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        picture = blend(image_bgr, self.mask(labels) if mask is None else mask, self.alpha)
        return stamp(picture, RANDOM_STAMP) if self.meta.random_weights else picture

    def labels_png(self, labels: np.ndarray) -> bytes:
        return png.encode_paletted(labels, self.palette_rgb, self.note)

    def mask_png(self, mask: np.ndarray) -> bytes:
        return png.add_text(encode_image(mask, ".png"), self.note)


def save_image_outputs(painter: Painter, out_dir: Path, stem: str, image_bgr: np.ndarray,
                       labels: np.ndarray) -> dict[str, str]:
    """Write <stem>_labels.png, <stem>_mask.png and <stem>_overlay.jpg; return their paths."""
    mask = painter.mask(labels)
    files = {
        "labels": (out_dir / f"{stem}_labels.png", painter.labels_png(labels)),
        "mask": (out_dir / f"{stem}_mask.png", painter.mask_png(mask)),
        "overlay": (out_dir / f"{stem}_overlay.jpg", encode_image(painter.overlay(image_bgr, labels, mask), ".jpg")),
    }
    for path, data in files.values():
        atomic_write_bytes(path, data)
    return {kind: str(path) for kind, (path, _) in files.items()}
