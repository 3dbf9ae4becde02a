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


IMAGE_KINDS = ("labels", "mask", "overlay", "side-by-side")


def save_image_outputs(painter: Painter, out_dir: Path, stem: str, image_bgr: np.ndarray, labels: np.ndarray,
                       kinds=("labels", "mask", "overlay")) -> dict[str, str]:
    """Write the chosen pictures: <stem>_labels.png (paletted), <stem>_mask.png, <stem>_overlay.jpg,
    <stem>_side-by-side.jpg (image | overlay). Returns kind -> path."""
    base = out_dir / stem
    base.parent.mkdir(parents=True, exist_ok=True)
    mask = painter.mask(labels)
    overlay = painter.overlay(image_bgr, labels, mask) if {"overlay", "side-by-side"} & set(kinds) else None
    encoders = {
        "labels": ("_labels.png", lambda: painter.labels_png(labels)),
        "mask": ("_mask.png", lambda: painter.mask_png(mask)),
        "overlay": ("_overlay.jpg", lambda: encode_image(overlay, ".jpg")),
        "side-by-side": ("_side-by-side.jpg", lambda: encode_image(np.hstack([image_bgr, overlay]), ".jpg")),
    }
    written = {}
    for kind in kinds:
        suffix, encode = encoders[kind]
        path = base.parent / (base.name + suffix)
        atomic_write_bytes(path, encode())
        written[kind] = str(path)
    return written
