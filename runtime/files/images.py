"""Reading images and writing outputs safely.

Reads go through the file's bytes, so every failure (missing, empty, truncated, not an image, not a
regular file) becomes one ``InputError`` naming the file; a FIFO or device is refused before it is
opened, so nothing can hang on it. The size comes from the header, which Pillow reads without the
pixels, and is held against the pixel limit before anything is decoded. PNGs are decoded by Pillow,
which raises what is wrong with one; OpenCV's libpng would print it on stderr itself. Other formats
are decoded by OpenCV.

Writes are atomic: bytes go to a hidden temporary file, created exclusively in the same folder, are
flushed to disk, then renamed over the target, so a crash or Ctrl-C never leaves a half-written
output under its real name.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import secrets
import stat
import threading
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from segtool.runtime.errors import InputError, OutOfMemory, OutputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2"})

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def jpeg_is_truncated(data: bytes) -> bool:
    """libjpeg pads a cut-off JPEG with grey and only warns; catch it by its missing end marker.

    The segments before the first start-of-scan (FFDA) are stepped over by their lengths, so an EXIF
    thumbnail (a whole JPEG inside APP1) is passed by; somewhere after that scan an end-of-image
    marker (FFD9) must come, a byte pair entropy-coded data never holds. What follows the marker (the
    video of a Motion Photo, the second picture of an MPO, a vendor's trailer) is not looked at.
    """
    if data[:2] != b"\xff\xd8":
        return False
    at = 2
    while data[at : at + 1] == b"\xff":
        marker = data[at + 1 : at + 2]
        if marker == b"\xda":
            return data.find(b"\xff\xd9", at) < 0
        if marker == b"\xff":  # a fill byte before the marker
            at += 1
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return at >= len(data)  # cut before the scan; any other byte here is the decoder's to refuse


def regular_file_problem(path: Path) -> str:
    """Why ``path`` cannot be read as a file ('' if it is a regular file). Never opens it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if not stat.S_ISREG(mode):
        kind = (
            "FIFO"
            if stat.S_ISFIFO(mode)
            else "device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "socket"
            if stat.S_ISSOCK(mode)
            else "special file"
        )
        return f"not a regular file (a {kind})"
    return ""


def read_bytes(path: str | os.PathLike) -> bytes:
    """A regular file's bytes, or one ``InputError`` naming it (FIFOs and devices are not opened)."""
    path = Path(path)
    problem = regular_file_problem(path)
    if problem:
        raise InputError(f"{path}: {problem}")
    try:
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

_PILLOW_LIMIT = threading.Lock()


def _open(source: bytes | BinaryIO) -> Image.Image:
    """Pillow's reading of the header of ``source`` (bytes, or a file open for reading, of which only
    the header is read); the pixels are decoded when ``load`` asks.

    A PNG goes to Pillow's PNG reader itself, so that a damaged one says what is wrong. Other
    formats go through ``Image.open``, Pillow's own pixel limit off for the call: segtool holds the
    size against its own limit (--max-pixels) and names the size when it refuses.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    png = stream.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    stream.seek(0)
    if png:
        return PngImagePlugin.PngImageFile(stream)
    with _PILLOW_LIMIT:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(stream)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def header_size(source: bytes | BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the header of an image (bytes, or a file open for reading), the pixels
    not decoded; None where Pillow cannot read the header (not an image, damaged, cut short, or a
    format Pillow does not know)."""
    try:
        return _open(source).size
    except Exception:  # noqa: BLE001 - each of Pillow's readers fails in its own way
        return None


def _check_size(name: str, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels and width * height > max_pixels:
        megapixels = width * height / 1e6
        limit = f"the {max_pixels / 1e6:g} MP limit (--max-pixels; 0 = no limit)"
        raise InputError(f"{name}: {width}x{height} is {megapixels:.0f} MP, over {limit}")


_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_image(
    data: bytes,
    name: str,
    flags: int = cv2.IMREAD_COLOR,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    reduce_to: int | None = None,
) -> np.ndarray:
    """Encoded image bytes -> the array ``cv2.imdecode`` gives for ``flags`` (BGR uint8 by default),
    or one ``InputError`` naming ``name``.

    The size is read from the header first: an image above ``max_pixels`` (0 or None: no limit),
    or whose size its header does not give, is refused before a byte of it is decoded. With
    ``reduce_to`` (the inference long side), a JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg
    itself while its long side stays at least ``reduce_to``, so memory follows the inference size
    rather than the file's.
    """
    if not data:
        raise InputError(f"{name}: empty file")
    if data.startswith(PNG_SIGNATURE):
        return _decode_png(data, name, flags, max_pixels)
    if jpeg_is_truncated(data):
        raise InputError(f"{name}: truncated JPEG")
    size = header_size(data)
    if size:
        _check_size(name, size, max_pixels)
    elif max_pixels:
        why = "refused under the pixel limit; --max-pixels 0 decodes it anyway"
        raise InputError(f"{name}: not an image, or corrupt, or a format whose size its header does not give ({why})")
    if reduce_to and size and flags == cv2.IMREAD_COLOR and data[:3] == b"\xff\xd8\xff":
        factor = next((f for f in (8, 4, 2) if max(size) / f >= reduce_to), 1)
        flags = _REDUCED.get(factor, flags)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        raise InputError(f"{name}: not an image, or corrupt ({str(exc).strip().splitlines()[-1][:120]})") from None
    if image is None:
        raise InputError(f"{name}: not an image, or corrupt")
    return image


def _decode_png(data: bytes, name: str, flags: int, max_pixels: int | None) -> np.ndarray:
    """A PNG, decoded by Pillow: what is wrong with a damaged one comes as an exception, where
    OpenCV's libpng prints it on stderr itself (no log level reaches it).

    The pixels come as ``cv2.imdecode`` gives them for ``cv2.IMREAD_UNCHANGED``, ``IMREAD_GRAYSCALE``
    or (any other flags) ``IMREAD_COLOR``, EXIF orientation included, except 16-bit colour: Pillow
    has no 16-bit colour mode, so that comes 8-bit (the high byte) even unchanged.
    """
    try:
        picture = _open(data)
        _check_size(name, picture.size, max_pixels)
        picture.load()
        if flags != cv2.IMREAD_UNCHANGED:
            ImageOps.exif_transpose(picture, in_place=True)
        pixels = _stored_pixels(picture)
    except InputError:
        raise
    except MemoryError:
        raise OutOfMemory(f"{name}: not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's SyntaxError, OSError, zlib.error, ValueError...
        raise InputError(f"{name}: not an image, or corrupt ({str(exc) or type(exc).__name__})") from None
    if flags == cv2.IMREAD_UNCHANGED:
        return pixels
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if flags == cv2.IMREAD_GRAYSCALE:
        return pixels if channels == 1 else cv2.cvtColor(pixels, _TO_GRAY[channels])
    return pixels if channels == 3 else cv2.cvtColor(pixels, _TO_BGR[channels])


_TO_GRAY = {3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}
_TO_BGR = {1: cv2.COLOR_GRAY2BGR, 4: cv2.COLOR_BGRA2BGR}


def _stored_pixels(picture: Image.Image) -> np.ndarray:
    """A loaded PNG's pixels as ``cv2.IMREAD_UNCHANGED`` reads them: grey (8 or 16 bits), else BGR,
    or BGRA where the PNG has alpha or a transparent colour."""
    if picture.mode in ("I;16", "I"):
        return np.array(picture, np.uint16)
    if picture.mode in ("1", "L"):
        return np.array(picture.convert("L"))
    if picture.mode in ("LA", "RGBA", "PA") or "transparency" in picture.info:
        return cv2.cvtColor(np.asarray(picture.convert("RGBA")), cv2.COLOR_RGBA2BGRA)
    return cv2.cvtColor(np.asarray(picture.convert("RGB")), cv2.COLOR_RGB2BGR)


def decoded_size(data: bytes, image: np.ndarray) -> tuple[int, int]:
    """(height, width) of the full image ``data`` holds, ``image`` being its (maybe reduced) decoding;
    EXIF rotation (which OpenCV applies) is taken into account."""
    size = header_size(data)
    h, w = image.shape[:2]
    if size is None or (size[0] <= w and size[1] <= h) or (size[1] <= w and size[0] <= h):
        return h, w
    full_w, full_h = size
    return (full_w, full_h) if (h > w) != (full_h > full_w) else (full_h, full_w)


def read_image(
    path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
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
        errno.EFBIG: "file too large (a file size limit)",
        errno.EISDIR: "a directory has that name",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
        errno.EDQUOT: "disk quota exceeded",
        errno.ENOTDIR: "a file is in the way of its folder",
    }
    return reasons.get(exc.errno or 0, exc.strerror or type(exc).__name__)


def sha256_of(path: Path) -> str:
    """The file's sha256, read a MiB at a time (checkpoints and models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def temp_name(path: Path, suffix: str = "") -> Path:
    """A new, empty, hidden file beside ``path``, for the caller to write and then rename over
    ``path`` (or remove). Created exclusively (``open(..., "x")``), so no other process has it, on
    this host or on another sharing the folder; its name is random and short whatever ``path``'s.
    Unlike ``tempfile.mkstemp``'s 0600, its permissions are the umask's, as the output's should be."""
    while True:
        temp = path.with_name(f".segtool-{os.getpid()}-{secrets.token_hex(6)}.partial{suffix}")
        try:
            temp.open("xb").close()
        except FileExistsError:
            continue
        return temp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    Any failure (disk full, permission, a directory under that name) removes the temporary
    file and raises one ``OutputError`` naming ``path``.
    """
    path = Path(path)
    temp = None
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        temp = temp_name(path)
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        if temp is not None:
            temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {write_problem(exc)}") from None
        raise


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the output folder and prove it is writable before any work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        temp_name(path / "write-test").unlink()
    except OSError as exc:
        raise OutputError(f"output folder {path} is not writable ({write_problem(exc)})") from None
    return path
