"""Reading images and writing outputs safely.

Reads go through ``cv2.imdecode`` on the file's bytes so that every failure (missing, empty,
truncated, not an image) becomes one ``SegtoolError`` naming the file. Writes are atomic:
bytes go to a hidden temporary file in the same folder, are flushed to disk, then renamed
over the target, so a crash or Ctrl-C never leaves a half-written output under its real name.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import SegtoolError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2"})


def jpeg_is_truncated(data: bytes) -> bool:
    """libjpeg pads a cut-off JPEG with grey and only warns; catch it by its missing end marker.

    The end-of-image marker (FFD9) must come after the last start-of-scan (FFDA); neither byte
    pair can occur inside entropy-coded data, and an embedded thumbnail ends before the main scan.
    """
    return data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image file as OpenCV does (BGR uint8 by default), or fail with one clear line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SegtoolError(f"{path}: no such file", 1) from None
    except IsADirectoryError:
        raise SegtoolError(f"{path}: is a directory", 1) from None
    except OSError as exc:
        raise SegtoolError(f"{path}: cannot read ({exc.strerror})", 1) from None
    if not data:
        raise SegtoolError(f"{path}: empty file", 1)
    if jpeg_is_truncated(data):
        raise SegtoolError(f"{path}: truncated JPEG", 1)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise SegtoolError(f"{path}: not an image, or corrupt", 1)
    return image


def encode_image(image: np.ndarray, suffix: str, quality: int = 95) -> bytes:
    """Encode a BGR image with OpenCV (format chosen by ``suffix``, e.g. '.png', '.jpg')."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise SegtoolError(f"OpenCV cannot encode {suffix} images")
    return buf.tobytes()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the output folder and prove it is writable before any work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".segtool-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SegtoolError(f"output folder {path} is not writable ({exc.strerror})", 2) from None
    return path
