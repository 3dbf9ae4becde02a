"""Reading images and writing outputs safely.

Reads go through ``cv2.imdecode`` on the file's bytes so that every failure (missing, empty,
truncated, not an image, not a regular file) becomes one ``InputError`` naming the file; a
FIFO or device is refused before it is opened, so nothing can hang on it. Writes are atomic:
bytes go to a hidden temporary file in the same folder, are flushed to disk, then renamed
over the target, so a crash or Ctrl-C never leaves a half-written output under its real name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import itertools
import logging
import os
import stat
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segtool.runtime.errors import InputError, OutputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2"})


def jpeg_is_truncated(data: bytes) -> bool:
    """libjpeg pads a cut-off JPEG with grey and only warns; catch it by its missing end marker.

    The end-of-image marker (FFD9) must come after the last start-of-scan (FFDA); neither byte
    pair can occur inside entropy-coded data, and an embedded thumbnail ends before the main scan.
    """
    return data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


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


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the image header without decoding the pixels: Pillow's parse, and
    segtool's own for PNG/GIF/BMP/JPEG/WebP when Pillow refuses the header; the larger of the two
    when both answer. None when neither can tell (the decoder would be trusted blindly then)."""
    sizes = [s for s in (_pillow_size(data), _raw_size(data)) if s]
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


def _pillow_size(data: bytes) -> tuple[int, int] | None:
    try:
        with warnings.catch_warnings(), _PILLOW_LIMIT:  # segtool applies its own pixel limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(io.BytesIO(data)) as picture:
                    return picture.size
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except Exception:  # noqa: BLE001 - any parse failure: the hand-read header or a refusal decides
        return None


def _raw_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, GIF, BMP, JPEG or WebP header, read by hand:
    for files whose header Pillow refuses (a damaged text chunk, say) but a decoder may still take."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The frame size in the first SOFn segment of a JPEG."""
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            at += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        at += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


_STDERR = threading.Lock()


@contextlib.contextmanager
def libpng_lines() -> Iterator[list[str]]:
    """libpng (inside OpenCV) prints its warnings and errors on file descriptor 2 itself, where no
    log level reaches them. For the block, descriptor 2 goes to a temporary file; afterwards the
    list holds libpng's lines (for the caller to fold into its one line per input) and whatever
    else was written meanwhile (another thread's log line, a progress bar) is passed on unchanged.
    Without a descriptor 2 or a temporary file, nothing is caught."""
    lines: list[str] = []
    with _STDERR, contextlib.ExitStack() as stack:
        try:
            sys.stderr.flush()
            sink = stack.enter_context(tempfile.TemporaryFile())  # closed last, after the swap back
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield lines
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            other = []
            for line in sink.read().splitlines(keepends=True):
                if line.startswith(b"libpng "):
                    lines.append(line.decode("utf-8", "replace").strip())
                else:
                    other.append(line)
            if other:
                os.write(2, b"".join(other))


_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_image(data: bytes, name: str, flags: int = cv2.IMREAD_COLOR,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, reduce_to: int | None = None) -> np.ndarray:  # fmt: skip
    """Encoded image bytes -> array (BGR uint8 by default), or one ``InputError`` naming ``name``.

    The size is read from the header first: an image above ``max_pixels`` (0 or None: no limit),
    or whose size no header parser can establish, is refused before a byte of it is decoded. With
    ``reduce_to`` (the inference long side), a JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg
    itself while its long side stays at least ``reduce_to``, so memory follows the inference size
    rather than the file's.
    """
    if not data:
        raise InputError(f"{name}: empty file")
    if jpeg_is_truncated(data):
        raise InputError(f"{name}: truncated JPEG")
    size = header_size(data)
    if max_pixels and size is None:
        raise InputError(f"{name}: not an image, or corrupt, or a format whose size its header does not give "
                         "(refused under the pixel limit; --max-pixels 0 decodes it anyway)")  # fmt: skip
    if size and not (size[0] and size[1]):
        raise InputError(f"{name}: its header declares {size[0]}x{size[1]}, an image without pixels")
    if max_pixels and size and size[0] * size[1] > max_pixels:
        raise InputError(f"{name}: {size[0]}x{size[1]} is {size[0] * size[1] / 1e6:.0f} MP, over the "
                         f"{max_pixels / 1e6:g} MP limit (--max-pixels; 0 = no limit)")  # fmt: skip
    if reduce_to and size and flags == cv2.IMREAD_COLOR and data[:3] == b"\xff\xd8\xff":
        factor = next((f for f in (8, 4, 2) if max(size) / f >= reduce_to), 1)
        flags = _REDUCED.get(factor, flags)
    png = data[:8] == b"\x89PNG\r\n\x1a\n"
    failure: list[str] = []
    quiet: contextlib.AbstractContextManager[list[str]] = libpng_lines() if png else contextlib.nullcontext([])
    with quiet as noise:
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        except cv2.error as exc:
            image, failure = None, [str(exc).strip().splitlines()[-1][:120]]
    said = "; ".join(dict.fromkeys(line.split(": ", 1)[-1] for line in [*noise, *failure]))
    if image is None:
        raise InputError(f"{name}: not an image, or corrupt" + (f" ({said})" if said else ""))
    if said:
        log.warning("%s: decoded, though libpng warned: %s", name, said)
    return image


def decoded_size(data: bytes, image: np.ndarray) -> tuple[int, int]:
    """(height, width) of the full image ``data`` holds, ``image`` being its (maybe reduced) decoding;
    EXIF rotation (which OpenCV applies) is taken into account."""
    size = header_size(data)
    h, w = image.shape[:2]
    if size is None or (size[0] <= w and size[1] <= h) or (size[1] <= w and size[0] <= h):
        return h, w
    full_w, full_h = size
    return (full_w, full_h) if (h > w) != (full_h > full_w) else (full_h, full_w)


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


_TEMP_COUNTER = itertools.count()


def temp_name(path: Path, suffix: str = "") -> Path:
    """A hidden temporary name beside ``path``: short whatever ``path``'s name (always within the
    file system's name limit), unique per process and call, so concurrent runs never share one."""
    return path.with_name(f".segtool-{os.getpid()}-{next(_TEMP_COUNTER)}.partial{suffix}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    Any failure (disk full, permission, a directory under that name) removes the temporary
    file and raises one ``OutputError`` naming ``path``.
    """
    path = Path(path)
    tmp = temp_name(path)
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
