"""One still image through `segtool run`: read, segment, write the chosen pictures."""

from __future__ import annotations

import time
from pathlib import Path

from segtool.runtime import Segmenter, class_shares, read_image
from segtool.runtime.outputs import Painter, save_image_outputs
from segtool.runtime.sources import Source


def process_image(seg: Segmenter, item: Source, painter: Painter, out_dir: Path, kinds, max_size=None,
                  size=None) -> dict:
    """Raises SegtoolError for an unusable image; returns the result record otherwise."""
    started = time.perf_counter()
    image = read_image(item.location)
    labels = seg.segment(image, max_size=max_size, size=size)
    files = save_image_outputs(painter, out_dir, item.stem, image, labels, kinds)
    return {"input": str(item), "kind": "image", "height": int(labels.shape[0]), "width": int(labels.shape[1]),
            "seconds": round(time.perf_counter() - started, 4), "classes": class_shares(labels, seg.meta.classes),
            "outputs": files}
