"""Label maps -> the pictures segtool writes, for still images and video frames alike.

``Painter.compose`` is the one place that makes the colour mask, the overlay and the
side-by-side view. Pictures made with random weights say so: PNGs carry a tEXt note and the
overlay is stamped, so no one mistakes them for a real segmentation. Paletted label PNGs are
written by Pillow (OpenCV cannot write palettes).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from segtool.runtime.errors import OutputError
from segtool.runtime.files.colors import blend, colorize, stamp
from segtool.runtime.files.images import atomic_write_bytes, encode_image, write_problem
from segtool.runtime.model.metadata import ModelMetadata

RANDOM_STAMP = "RANDOM WEIGHTS - labels are meaningless"
IMAGE_KINDS = ("labels", "mask", "overlay", "side-by-side")
#: output kind -> file name ending, for still images and for videos (labels of videos go to <stem>_frames/);
#: the input suffixes are IMAGE_SUFFIXES (files.images) and VIDEO_SUFFIXES (files.sources)
IMAGE_OUTPUTS = {
    "labels": "_labels.png",
    "mask": "_mask.png",
    "overlay": "_overlay.jpg",
    "side-by-side": "_side-by-side.jpg",
}
VIDEO_OUTPUTS = {"mask": "_mask.mp4", "overlay": "_overlay.mp4", "side-by-side": "_side-by-side.mp4"}


class Painter:
    """Turns label maps into pictures with one model's palette (BGR for OpenCV images)."""

    def __init__(self, meta: ModelMetadata, alpha: float = 0.5):
        self.meta = meta
        self.alpha = alpha
        self.palette_rgb = np.zeros((256, 3), np.uint8)
        self.palette_rgb[: len(meta.palette)] = meta.palette
        self.palette_bgr = np.ascontiguousarray(self.palette_rgb[:, ::-1])
        self.note = {"Software": "segtool", "Comment": f"{meta.model}, {meta.weights_label}"}

    def compose(self, image_bgr: np.ndarray, labels: np.ndarray, kinds) -> dict[str, np.ndarray]:
        """The requested pictures of one image or frame: mask, overlay, side-by-side (BGR arrays)
        and labels (the label map itself). Each is computed once, only if some kind needs it."""
        kinds = set(kinds)
        pictures: dict[str, np.ndarray] = {}
        if "labels" in kinds:
            pictures["labels"] = labels
        if kinds & {"mask", "overlay", "side-by-side"}:
            mask = colorize(labels, self.palette_bgr)
            if "mask" in kinds:
                pictures["mask"] = mask
            if kinds & {"overlay", "side-by-side"}:
                overlay = blend(image_bgr, mask, self.alpha)
                overlay = stamp(overlay, RANDOM_STAMP) if self.meta.random_weights else overlay
                if "overlay" in kinds:
                    pictures["overlay"] = overlay
                if "side-by-side" in kinds:
                    pictures["side-by-side"] = np.hstack([image_bgr, overlay])
        return pictures

    def labels_png(self, labels: np.ndarray) -> bytes:
        """8-bit paletted PNG: pixel value = class index, palette = class colours (VOC convention)."""
        picture = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
        picture.putpalette(self.palette_rgb.tobytes())
        return _png_bytes(picture, self.note, level=9)  # label maps are mostly flat: level 9 is cheap here

    def mask_png(self, mask_bgr: np.ndarray) -> bytes:
        return _png_bytes(Image.fromarray(np.ascontiguousarray(mask_bgr[:, :, ::-1])), self.note)

    def encode(self, kind: str, picture: np.ndarray) -> bytes:
        """Bytes of the file a still image's picture of ``kind`` is written as."""
        if kind == "labels":
            return self.labels_png(picture)
        if kind == "mask":
            return self.mask_png(picture)
        return encode_image(picture, ".jpg")


def _png_bytes(picture: Image.Image, text: dict[str, str], level: int = 6) -> bytes:
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    # optimize=False: Pillow's optimizer may shrink the palette and renumber pixels, and here a
    # pixel value is a class index
    picture.save(buffer, format="PNG", pnginfo=info, optimize=False, compress_level=level)
    return buffer.getvalue()


def output_paths(out_dir: Path, stem: str, kinds, suffixes: dict[str, str]) -> dict[str, Path]:
    """kind -> output file for one input (``stem`` may hold sub-folders)."""
    base = out_dir / stem
    return {kind: base.parent / (base.name + suffixes[kind]) for kind in kinds if kind in suffixes}


def save_pictures(painter: Painter, pictures: dict[str, np.ndarray], paths: dict[str, Path]) -> dict[str, str]:
    """Encode and write each picture atomically; kind -> path written. A picture that cannot be
    written does not stop the others; ``OutputError`` then names every one that failed."""
    written, failed = {}, []
    for kind, path in paths.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, painter.encode(kind, pictures[kind]))
        except OutputError as exc:
            failed.append(str(exc))
            continue
        except OSError as exc:
            failed.append(f"cannot write {path}: {write_problem(exc)}")
            continue
        written[kind] = str(path)
    if failed:
        raise OutputError("; ".join(failed))
    return written
