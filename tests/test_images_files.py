"""runtime/files/images: JPEGs with bytes after their end decode, truncated ones are refused;
temporary files are created exclusively (unique per host, not only per process); PNGs decode
without libpng writing on stderr and without touching file descriptor 2; pixel limits from headers."""

from __future__ import annotations

import importlib.util
import io
import os
import struct
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
from conftest import imdecode, jpeg
from PIL import Image
from test_bad_inputs import bmp_claiming, damaged_png, gif_claiming, jpeg_claiming, png_claiming, webp_claiming

from segtool.runtime.errors import InputError, OutputError
from segtool.runtime.files import images
from segtool.runtime.files.images import decode_image

# --- JPEGs with bytes after the end-of-image marker ------------------------------------------------

#: an MP4 as a Motion Photo appends it (ftyp, then sample data, which holds FF DA like any bytes)
MOTION_PHOTO_VIDEO = (
    b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00\x00\x01\x00mdat" + b"\x12\xff\xda\x07" * 64
)
#: a camera vendor's trailer after the image (Samsung's SEFH/SEFT kind), FF DA among its bytes
VENDOR_TRAILER = b"SEFH\x01\x00\x00\x00" + bytes(range(256)) + b"\xff\xda\x00\x0c" + b"SEFT"


@pytest.mark.parametrize(
    "after",
    [MOTION_PHOTO_VIDEO, VENDOR_TRAILER, jpeg(30, 40, seed=2), jpeg(30, 40, seed=2) + MOTION_PHOTO_VIDEO],
    ids=["Motion Photo", "vendor trailer", "MPO (a second JPEG)", "MPO then video"],
)
def test_a_jpeg_with_bytes_after_its_end_decodes(after: bytes):
    image = decode_image(jpeg(48, 64, seed=1) + after, "photo.jpg")
    assert image.shape == (48, 64, 3)


def with_thumbnail(data: bytes) -> bytes:
    """``data`` (a JPEG) with an APP1 segment holding a small complete JPEG, as EXIF thumbnails are."""
    thumbnail = b"Exif\x00\x00" + jpeg(12, 16, seed=3)
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(thumbnail) + 2) + thumbnail + data[2:]


@pytest.mark.parametrize(
    "data",
    [jpeg(200, 200)[:900], jpeg(200, 200)[:-2], with_thumbnail(jpeg(200, 200))[:-300]],
    ids=["cut in the scan", "only the end marker missing", "cut, with an EXIF thumbnail"],
)
def test_a_truncated_jpeg_is_refused(data: bytes):
    with pytest.raises(InputError, match=r"^t\.jpg: truncated JPEG$"):
        decode_image(data, "t.jpg")


# --- temporary files -----------------------------------------------------------------------------


def images_elsewhere() -> ModuleType:
    """The images module as another process loads it (on another node of a Ray job, say): its own
    counters and state."""
    spec = importlib.util.spec_from_file_location("segtool_images_elsewhere", images.__file__)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_hosts_with_one_pid_get_their_own_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "getpid", lambda: 4242)  # the same pid on two nodes sharing the output folder
    target = tmp_path / "walk_overlay.mp4"
    mine, theirs = images_elsewhere().temp_name(target, ".mp4"), images_elsewhere().temp_name(target, ".mp4")
    assert mine != theirs
    assert mine.is_file() and theirs.is_file()  # created, exclusively, by temp_name itself
    assert mine.parent == theirs.parent == tmp_path and mine.name.startswith(".segtool-")


def test_an_atomic_write_leaves_another_hosts_temporary_file_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    theirs = tmp_path / ".segtool-4242-0.partial"  # the first name a process 4242 took, before this change
    theirs.write_bytes(b"another node's output, half written")
    images_elsewhere().atomic_write_bytes(tmp_path / "x_labels.png", b"ours")
    assert theirs.read_bytes() == b"another node's output, half written"
    assert (tmp_path / "x_labels.png").read_bytes() == b"ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == [theirs.name, "x_labels.png"]


def test_an_output_has_the_umasks_permissions_not_a_temporary_files(tmp_path: Path):
    umask = os.umask(0o022)
    try:
        images.atomic_write_bytes(tmp_path / "x.png", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "x.png").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600: others may read it


def test_an_atomic_write_that_fails_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "x.png").write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"cannot write .*x\.png: disk full"):
        images.atomic_write_bytes(tmp_path / "x.png", b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"] and (tmp_path / "x.png").read_bytes() == b"old"


# --- PNGs: no libpng line on stderr, descriptor 2 left alone -------------------------------------


def test_png_decoding_never_redirects_stderr(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    def redirect(fd: int, fd2: int, inheritable: bool = True) -> int:
        raise AssertionError("a PNG decode redirected a file descriptor (another thread's stderr with it)")

    with monkeypatch.context() as patch:  # undone before capfd, which redirects, ends
        patch.setattr(os, "dup2", redirect)
        assert decode_image(png_claiming(1, 1), "p.png").shape == (1, 1, 3)  # more data than rows: libpng warns
        with pytest.raises(InputError, match=r"^d\.png: not an image, or corrupt"):
            decode_image(damaged_png(40, 30), "d.png")  # a text chunk with a bad CRC
        with pytest.raises(InputError, match=r"^z\.png: not an image, or corrupt"):
            decode_image(png_claiming(0, 10), "z.png", max_pixels=0)  # zero width, even with no pixel limit
    assert capfd.readouterr().err == ""


def png_of(mode: str, **save: object) -> bytes:
    rng = np.random.default_rng(len(mode))
    if mode in ("I;16", "RGB;16", "RGBA;16"):
        channels = {"I;16": (), "RGB;16": (3,), "RGBA;16": (4,)}[mode]
        return cv2.imencode(".png", rng.integers(0, 65535, (20, 30, *channels), dtype=np.uint16))[1].tobytes()
    rgb = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    picture = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16) if mode == "P" else rgb.convert(mode)
    if save.pop("turned", False):
        exif = Image.Exif()
        exif[0x0112] = 6  # EXIF orientation: shown turned 90 degrees clockwise
        save["exif"] = exif
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", **save)
    return buffer.getvalue()


PNGS = {
    "gray": png_of("L"),
    "gray 4 bits": png_of("L", bits=4),
    "gray with a transparent value": png_of("L", transparency=5),
    "1 bit": png_of("1"),
    "gray 16 bits": png_of("I;16"),
    "gray and alpha": png_of("LA"),
    "RGB": png_of("RGB"),
    "RGB with a transparent colour": png_of("RGB", transparency=(1, 2, 3)),
    "RGBA": png_of("RGBA"),
    "palette": png_of("P"),
    "palette with a transparent entry": png_of("P", transparency=3),
    "RGB, EXIF-rotated": png_of("RGB", turned=True),
    "RGB 16 bits": png_of("RGB;16"),
    "RGBA 16 bits": png_of("RGBA;16"),
}


@pytest.mark.parametrize("flags", [cv2.IMREAD_COLOR, cv2.IMREAD_UNCHANGED, cv2.IMREAD_GRAYSCALE], ids=str)
@pytest.mark.parametrize("kind", PNGS)
def test_pngs_come_back_as_opencv_returns_them(kind: str, flags: int):
    data = PNGS[kind]
    expected = imdecode(data, flags)
    if flags == cv2.IMREAD_UNCHANGED and "16 bits" in kind and "gray" not in kind:
        expected = (expected >> 8).astype(np.uint8)  # Pillow has no 16-bit colour mode: 8 bits, the high byte
    image = decode_image(data, kind, flags)
    assert image.shape == expected.shape and image.dtype == expected.dtype
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= (1 if flags == cv2.IMREAD_GRAYSCALE else 0)


# --- pixel limits from headers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, size",
    [
        (png_claiming(100000, 100000), "100000x100000"),
        (jpeg_claiming(65000, 65000), "65000x65000"),
        (bmp_claiming(50000, 50000), "50000x50000"),
        (bmp_claiming(64, -(2**31)), "64x2147483648"),
        (webp_claiming(16000, 16000), "16000x16000"),
        (gif_claiming(65535, 65535), "65535x65535"),
    ],
    ids=["PNG", "JPEG", "BMP", "top-down BMP", "WebP canvas", "GIF canvas"],
)
def test_an_image_past_the_limit_is_refused_from_its_header(data: bytes, size: str):
    with pytest.raises(InputError, match=rf"^x: {size} is \d+ MP, over the 100 MP limit"):
        decode_image(data, "x")


def test_a_damaged_png_past_the_limit_is_not_decoded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cv2, "imdecode", lambda *args: pytest.fail("decoded"))
    with pytest.raises(InputError, match=r"^d\.png: "):
        decode_image(damaged_png(3000, 3000), "d.png", max_pixels=1_000_000)


def test_a_gif_canvas_is_refused_before_ffmpeg_opens_it_whatever_comes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from segtool.runtime.files import video

    monkeypatch.setattr(video.av, "open", lambda *args, **kwargs: pytest.fail("FFmpeg opened it"))
    gif = gif_claiming(8000, 8000)
    comment = b"!\xfe" + (b"\xff" + bytes(255)) * 300 + b"\x00"  # 77 kB of comment before the first frame
    (tmp_path / "big.gif").write_bytes(gif[:19] + comment + gif[19:])
    with pytest.raises(InputError, match="big.gif: frames of 8000x8000 are 64 MP"):
        video.VideoSource(str(tmp_path / "big.gif"), max_pixels=1_000_000)
