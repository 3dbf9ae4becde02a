"""mIoU and pixel accuracy on VOC-format data, following torchvision's reference protocol.

One confusion matrix (rows: ground truth, columns: prediction) is summed over the whole
dataset, label 255 ("void") is ignored, IoU_c = TP / (TP + FP + FN), mIoU is the mean over
classes that occur in ground truth or prediction, pixel accuracy = trace / total. By default
images are resized so the short side is 520 (image: area/bilinear, mask: nearest), as
torchvision evaluates these weights; ``resize=None`` evaluates at the original resolution.
Masks hold class indices (``read_mask``): a paletted PNG's palette is never read.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segtool.runtime.errors import InputError, UsageError
from segtool.runtime.files.images import read_bytes, read_image
from segtool.runtime.jobs import JobOptions, infer
from segtool.runtime.model.runner import Runner
from segtool.runtime.model.voc import VOC_IGNORE_INDEX, voc_colormap

_PACK = np.array([1 << 16, 1 << 8, 1], np.int64)
MASK_MODES = ("P", "L", "I;16", "I", "RGB", "RGBA")


class ConfusionMatrix:
    def __init__(self, num_classes: int):
        self.n = num_classes
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, target: np.ndarray, prediction: np.ndarray, ignore: int = VOC_IGNORE_INDEX) -> None:
        keep = (target != ignore) & (target < self.n)
        index = self.n * target[keep].astype(np.int64) + prediction[keep].astype(np.int64)
        self.matrix += np.bincount(index, minlength=self.n * self.n).reshape(self.n, self.n)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")


def reduce_labels(mask: np.ndarray) -> np.ndarray:
    """Hugging Face's ``do_reduce_labels`` (mmseg's ``reduce_zero_label``): 0 becomes 255 (ignored), every
    other class index goes down by one; 255 stays ignored."""
    return np.where((mask == 0) | (mask == VOC_IGNORE_INDEX), VOC_IGNORE_INDEX, mask - 1)


def read_mask(path: Path, palette: np.ndarray | None = None, reduce: bool = False) -> np.ndarray:
    """A ground-truth mask PNG -> class indices (int64; 255 = ignore).

    A paletted PNG holds the class index in each pixel, as VOC's SegmentationClass files and
    segtool's own ``*_labels.png`` do: the palette is for display only and never read. An 8- or
    16-bit greyscale PNG holds indices too (``reduce``: the dataset's, put through ``reduce_labels``).
    An RGB(A) mask is mapped through ``palette`` (the model's class colours, RGB, so already the
    model's classes: never reduced), with VOC's void colour (224, 224, 192) as 255."""
    data = read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as picture:
            mode = picture.mode
            if mode not in MASK_MODES:
                raise InputError(f"{path}: a {mode} image is not a mask (paletted, greyscale or RGB PNG)")
            mask = np.asarray(picture.convert("RGB") if mode == "RGBA" else picture)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: not a readable mask image ({exc})") from None
    if mask.ndim == 2:
        return reduce_labels(mask.astype(np.int64)) if reduce else mask.astype(np.int64)
    if palette is None:
        raise InputError(f"{path}: an RGB mask needs the model's palette to map colours to classes")
    colours = np.concatenate([np.asarray(palette, np.int64).reshape(-1, 3), voc_colormap()[VOC_IGNORE_INDEX:]])
    indices = np.r_[np.arange(len(colours) - 1), VOC_IGNORE_INDEX]
    packed = mask[:, :, :3].astype(np.int64) @ _PACK
    keys, inverse = np.unique(packed, return_inverse=True)
    table: dict[int, int] = {}
    for k, i in zip((colours @ _PACK).tolist(), indices.tolist()):
        table.setdefault(k, i)  # a colour used twice: its first class
    unknown = [k for k in keys.tolist() if k not in table]
    if unknown:
        shown = ", ".join(f"#{k:06x}" for k in unknown[:5])
        raise InputError(f"{path}: {len(unknown)} colour(s) outside the model's palette: {shown}")
    return np.array([table[k] for k in keys.tolist()], np.int64)[inverse.reshape(packed.shape)]


read_voc_mask = read_mask  # the earlier name


@dataclass
class VocSample:
    id: str
    image: Path
    mask: Path


def voc_samples(root: Path, split: str = "val", limit: int | None = None) -> list[VocSample]:
    split_file = Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not split_file.is_file():
        raise UsageError(
            f"{split_file} not found: --data must be a VOC-format folder (JPEGImages/, "
            "SegmentationClass/, ImageSets/Segmentation/<split>.txt)"
        )
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    ids = ids[:limit] if limit else ids
    return [
        VocSample(i, Path(root) / "JPEGImages" / f"{i}.jpg", Path(root) / "SegmentationClass" / f"{i}.png") for i in ids
    ]


def resize_short_side(image: np.ndarray, short: int, interpolation: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = short / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image if size == (w, h) else cv2.resize(image, size, interpolation=interpolation)


def load_pair(
    sample: VocSample, num_classes: int, resize: int | None, palette: np.ndarray | None = None, reduce: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask (``reduce``: through ``reduce_labels``), validated and brought to evaluation resolution."""
    if not sample.mask.is_file():
        raise InputError(f"{sample.id}: no mask {sample.mask}")
    image = read_image(sample.image)
    mask = read_mask(sample.mask, palette, reduce)
    if mask.shape != image.shape[:2]:
        raise InputError(
            f"{sample.id}: mask is {mask.shape[1]}x{mask.shape[0]} but image is {image.shape[1]}x{image.shape[0]}"
        )
    bad = np.setdiff1d(np.unique(mask), np.r_[np.arange(num_classes), VOC_IGNORE_INDEX])
    if bad.size:
        raise InputError(
            f"{sample.id}: mask has values outside 0..{num_classes - 1} and 255: {bad[:5].tolist()} "
            f"({sample.mask}; a pixel's value is its class index, 255 ignored"
            + (", after reduce_labels)" if reduce else ")")
        )
    if resize:
        shrink = resize < min(image.shape[:2])
        image = resize_short_side(image, resize, cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        mask = resize_short_side(mask.astype(np.uint8), resize, cv2.INTER_NEAREST_EXACT)
    return image, mask


@dataclass
class EvalResult:
    classes: tuple[str, ...]
    confusion: ConfusionMatrix
    images: int = 0
    seconds: float = 0.0
    problems: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        iou = self.confusion.iou()
        return {
            "miou": _finite(self.confusion.miou()),
            "pixel_accuracy": _finite(self.confusion.pixel_accuracy()),
            "per_class_iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(self.classes, iou)},
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "images_per_s": self.images / self.seconds if self.seconds else 0.0,
            "problems": self.problems,
            "confusion_matrix": self.confusion.matrix.tolist(),
        }


def _finite(value: float) -> float | None:
    """JSON has no NaN: a figure that cannot be computed (no sample) is None."""
    return None if np.isnan(value) else float(value)


def evaluate(
    seg: Runner,
    samples: list[VocSample],
    resize: int | None = 520,
    strict: bool = False,
    on_image: Callable[[str], None] | None = None,
    options: JobOptions = JobOptions(),
    reduce: bool = False,
) -> EvalResult:
    """Run ``seg`` (anything with ``segment(image, **options)`` and ``meta.classes``) over the samples,
    through the job layer (``options``: tiling, like `segtool run`); ``reduce``: masks through
    ``reduce_labels`` first (the model was trained so)."""
    classes = tuple(seg.meta.classes)
    result = EvalResult(classes, ConfusionMatrix(len(classes)))
    started = time.perf_counter()
    for sample in samples:
        try:
            image, mask = load_pair(sample, len(classes), resize, getattr(seg.meta, "palette", None), reduce)
        except InputError as exc:
            if strict:
                raise
            result.problems.append({"id": sample.id, "error": str(exc)})
        else:
            result.confusion.update(mask, infer(seg, image, options).labels)
            result.images += 1
        if on_image:
            on_image(sample.id)
    result.seconds = time.perf_counter() - started
    return result
