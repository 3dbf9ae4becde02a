"""Reading images and writing outputs safely.

Reads go through ``cv2.imdecode`` on the file's bytes so that every failure (missing, empty,
truncated, not an image, not a regular file) becomes one ``InputError`` naming the file; a
FIFO or device is refused before it is opened, so nothing can hang on it. Writes are atomic:
bytes go to a hidden temporary file in the same folder, are flushed to disk, then renamed
over the target, so a crash or Ctrl-C never leaves a half-written output under its real name.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import InputError, OutputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2"})


def jpeg_is_truncated(data: bytes) -> bool:
    """libjpeg pads a cut-off JPEG with grey and only warns; catch it by its missing end marker.

    The end-of-image marker (FFD9) must come after the last start-of-scan (FFDA); neither byte
    pair can occur inside entropy-coded data, and an embedded thumbnail ends before the main scan.
    """
    return data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def read_bytes(path: str | os.PathLike) -> bytes:
    """A regular file's bytes, or one ``InputError`` naming it (FIFOs and devices are not opened)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise InputError(f"{path}: is a directory")
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: not a regular file (a FIFO, device or socket)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if not data:
        raise InputError(f"{path}: empty file")
    return data


#: default for --max-pixels: 100 MP decodes to 300 MB of BGR, fine on a typical machine
DEFAULT_MAX_PIXELS = 100_000_000


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the image header without decoding the pixels (Pillow), or None
    when Pillow does not know the format (OpenCV may still decode it)."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            return picture.size
    except Exception:  # noqa: BLE001 - any parse failure: leave the verdict to the decoder
        return None


def decode_image(data: bytes, name: str, flags: int = cv2.IMREAD_COLOR,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:  # fmt: skip
    """Encoded image bytes -> array (BGR uint8 by default), or one ``InputError`` naming ``name``.

    The size is read from the header first: an image above ``max_pixels`` (0 or None: no limit)
    is refused before a byte of it is decoded.
    """
    if not data:
        raise InputError(f"{name}: empty file")
    if jpeg_is_truncated(data):
        raise InputError(f"{name}: truncated JPEG")
    size = header_size(data)
    if max_pixels and size and size[0] * size[1] > max_pixels:
        raise InputError(f"{name}: {size[0]}x{size[1]} is {size[0] * size[1] / 1e6:.0f} MP, over the "
                         f"{max_pixels / 1e6:g} MP limit (--max-pixels; 0 = no limit)")  # fmt: skip
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        raise InputError(f"{name}: cannot decode ({str(exc).strip().splitlines()[-1][:120]})") from None
    if image is None:
        raise InputError(f"{name}: not an image, or corrupt")
    return image


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:  # fmt: skip
    """Read an image file as OpenCV does (BGR uint8 by default), or fail with one clear line."""
    return decode_image(read_bytes(path), str(path), flags, max_pixels)


def encode_image(image: np.ndarray, suffix: str, quality: int = 95) -> bytes:
    """Encode a BGR image with OpenCV (format chosen by ``suffix``, e.g. '.png', '.jpg')."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise OutputError(f"OpenCV cannot encode {suffix} images of shape {image.shape}")
    return buf.tobytes()


def write_problem(exc: OSError) -> str:
    """A short reason for a failed write: the ones users meet named plainly."""
    reasons = {
        errno.ENOSPC: "disk full",
        errno.EISDIR: "a directory has that name",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
        errno.EDQUOT: "disk quota exceeded",
        errno.ENOTDIR: "a file is in the way of its folder",
    }
    return reasons.get(exc.errno or 0, exc.strerror or type(exc).__name__)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    Any failure (disk full, permission, a directory under that name) removes the temporary
    file and raises one ``OutputError`` naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {write_problem(exc)}") from None
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
        raise OutputError(f"output folder {path} is not writable ({write_problem(exc)})") from None
    return path
