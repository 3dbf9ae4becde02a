"""PNG pieces OpenCV cannot write: 8-bit paletted images and text chunks.

VOC's SegmentationClass convention stores labels as a paletted PNG (pixel value = class index,
palette = class colours) so one file is both data and picture. OpenCV only writes gray/RGB(A)
PNGs, so the paletted encoder is written here from the PNG spec (it is short: IHDR, PLTE,
IDAT of zlib-compressed rows, IEND). ``add_text`` inserts a tEXt chunk into any PNG, which is
how outputs made with random weights say so inside the file.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _text_chunks(text: dict[str, str] | None) -> bytes:
    return b"".join(_chunk(b"tEXt", k.encode("latin-1") + b"\0" + v.encode("latin-1", "replace"))
                    for k, v in (text or {}).items())


def encode_paletted(labels: np.ndarray, palette: np.ndarray, text: dict[str, str] | None = None,
                    level: int = 6) -> bytes:
    """Encode an HxW uint8 index image with an (n<=256, 3) RGB palette as PNG bytes."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    h, w = labels.shape
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    rows = np.empty((h, w + 1), dtype=np.uint8)  # each row: filter type 0 (None) + pixels
    rows[:, 0] = 0
    rows[:, 1:] = labels
    header = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)  # 8-bit, colour type 3 (palette)
    return (SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"PLTE", palette.tobytes())
            + _text_chunks(text) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) + _chunk(b"IEND", b""))


def add_text(png: bytes, text: dict[str, str] | None) -> bytes:
    """Insert tEXt chunks right after IHDR (signature 8 bytes + IHDR chunk 25 bytes)."""
    if not text:
        return png
    if png[:8] != SIGNATURE or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return png[:33] + _text_chunks(text) + png[33:]
