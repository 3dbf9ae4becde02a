"""Tiled ("slide") inference for images larger than memory allows, as mmsegmentation's
``slide_inference``: overlapping tile x tile windows, each run through the model, their logits
summed where windows overlap (the argmax of the sum is the argmax of the average).

Rows are finalized as soon as no later window reaches them, so besides the label map
(1 byte per pixel) memory holds one band of C x tile x width logits, never the whole image's.
Labels-output graphs have no logits to blend: where windows overlap, the later window wins.
"""

from __future__ import annotations

import math

import numpy as np

from segtool.runtime.model.postprocess import argmax_channels
from segtool.runtime.model.runner import Runner


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of windows of ``tile`` covering ``length``; the last one ends at the edge."""
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / stride) + 1
    return sorted({min(k * stride, length - tile) for k in range(count)})


def segment_tiled(seg: Runner, image: np.ndarray, color: str, tile: int, overlap: int | None = None) -> np.ndarray:
    """HxW uint8 labels of an HxWx3 image (already at inference resolution), window by window."""
    height, width = image.shape[:2]
    overlap = tile // 4 if overlap is None else overlap
    stride = max(1, tile - overlap)
    ys, xs = window_starts(height, tile, stride), window_starts(width, tile, stride)
    labels = np.zeros((height, width), np.uint8)
    if seg.meta.output == "labels":
        for y in ys:
            for x in xs:
                window = image[y : y + tile, x : x + tile]
                labels[y : y + window.shape[0], x : x + window.shape[1]] = seg.run(seg.prepare([window], color))[0]
        return labels
    band_h = min(tile, height)
    band = np.zeros((len(seg.meta.classes), band_h, width), np.float32)  # logit sums for rows [top, top+band_h)
    top = 0
    for y in ys:
        if y > top:  # rows [top, y) are complete: no later window reaches them
            labels[top:y] = argmax_channels(band[None, :, : y - top])[0]
            keep = band_h - (y - top)
            band[:, :keep] = band[:, y - top :]
            band[:, keep:] = 0
            top = y
        for x in xs:
            window = image[y : y + tile, x : x + tile]
            logits = seg.run(seg.prepare([window], color))[0]
            band[:, y - top : y - top + window.shape[0], x : x + window.shape[1]] += logits
    labels[top:] = argmax_channels(band[None, :, : height - top])[0]
    return labels
