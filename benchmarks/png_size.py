"""Label PNG size: Pillow (filtered, compressed) against the hand-written writer it replaced
(unfiltered rows, zlib level 6), on the labels of one image; the pixels must be identical.

    python benchmarks/png_size.py MODEL.onnx IMAGE
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zlib

import numpy as np
from PIL import Image

from segtool.runtime import Painter, Segmenter, read_image


def old_writer(labels: np.ndarray, palette: np.ndarray) -> bytes:
    """What runtime/png.py wrote before: IHDR, PLTE, one IDAT of unfiltered rows, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = labels.shape
    rows = np.zeros((h, w + 1), np.uint8)
    rows[:, 1:] = labels
    header = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", palette.tobytes())
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))  # fmt: skip


def main() -> None:
    seg = Segmenter(sys.argv[1], device="cpu", warn_random=False)
    labels = seg.segment(read_image(sys.argv[2]))
    painter = Painter(seg.meta)
    new, old = painter.labels_png(labels), old_writer(labels, painter.palette_rgb)
    same = np.array_equal(np.array(Image.open(io.BytesIO(new))), np.array(Image.open(io.BytesIO(old))))
    print(json.dumps({"image": sys.argv[2], "size": list(labels.shape[::-1]), "pillow_bytes": len(new),
                      "old_writer_bytes": len(old), "ratio": round(len(new) / len(old), 3),
                      "pixels_identical": same}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
