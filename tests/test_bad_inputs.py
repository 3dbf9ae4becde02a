"""The bad-input matrix: every case ends in its exit code and one clear line, never a traceback or a
hang; good inputs beside a bad one are still written; no temporary file is left behind.

Most cases use the tiny model (tests/tiny.py) so that the matrix runs in seconds per case, and run
`segtool` in this process (``run_in_process``); the cases that could hang run it as a process, which
is killed at the case's timeout.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Ran, jpeg, run_in_process, run_segtool, scene_video
from PIL import Image
from tiny import tiny_model, tiny_props


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height (the pixel data is a few zero rows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 4)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@dataclass
class Case:
    name: str
    make: Callable[[Path, Path], list[str]]  # (workdir, tiny model) -> segtool arguments
    code: int
    needles: tuple[str, ...]
    good: tuple[str, ...] = ()  # files that must exist afterwards (relative to workdir)
    timeout: float = 120  # for a case run as a process: a hang is killed and fails the test
    extra: Callable[[Path], None] | None = field(default=None)  # more checks on the workdir
    setup: Callable[[Path], object] | None = None  # (workdir) -> files the case needs besides good.jpg
    process: bool = False  # run the console script (a case that could hang), not in this process
    warns: tuple[str, ...] = ()  # text of 'segtool: warning:' lines that must be there


def run_with(w: Path, m: Path, *inputs: str, flags: tuple[str, ...] = ()) -> list[str]:
    return ["run", *inputs, "good.jpg", "--model", str(m), "--out", "out", "--device", "cpu", *flags]


def write(w: Path, name: str, data: bytes) -> str:
    (w / name).parent.mkdir(parents=True, exist_ok=True)
    (w / name).write_bytes(data)
    return name


def folder(w: Path, name: str) -> str:
    (w / name).mkdir(parents=True)
    return name


def fifo(w: Path, name: str) -> str:
    (w / name).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(w / name)
    return name


def broken_model(w: Path, **props: str) -> str:
    return str(tiny_model(w / "broken.onnx", tiny_props(**props)))


def run_broken(w: Path, **props: str) -> list[str]:
    return ["run", "good.jpg", "--model", broken_model(w, **props), "--out", "out"]


GOOD = ("out/good_labels.png", "out/good_mask.png", "out/good_overlay.jpg")
CASES = [
    Case("missing file", lambda w, m: run_with(w, m, "nope.jpg"), 1, ("nope.jpg: no such file",), GOOD),
    Case("empty file", lambda w, m: run_with(w, m, write(w, "e.jpg", b"")), 1, ("e.jpg: empty file",), GOOD),
    Case(
        "truncated jpeg",
        lambda w, m: run_with(w, m, write(w, "t.jpg", jpeg(200, 200)[:900])),
        1,
        ("t.jpg: truncated JPEG",),
        GOOD,
    ),
    Case("text as png", lambda w, m: run_with(w, m, write(w, "n.png", b"hello\n")), 1, ("n.png: not an image",), GOOD),
    Case("random bytes", lambda w, m: run_with(w, m, write(w, "r.bmp", os.urandom(3000))), 1, ("r.bmp",), GOOD),
    Case(
        "png header 100000^2",
        lambda w, m: run_with(w, m, write(w, "huge.png", png_claiming(100000, 100000))),
        1,
        ("huge.png: 100000x100000", "MP limit"),
        GOOD,
    ),
    Case(
        "png header 30000^2",
        lambda w, m: run_with(w, m, write(w, "big.png", png_claiming(30000, 30000))),
        1,
        ("big.png: 30000x30000", "MP limit"),
        GOOD,
    ),
    Case(
        "png over --max-pixels",
        lambda w, m: run_with(w, m, write(w, "p.jpg", jpeg(100, 100)), flags=("--max-pixels", "5000")),
        1,
        ("p.jpg", "MP limit"),
        (),
    ),
    Case(
        "fifo named like an image",
        lambda w, m: run_with(w, m, fifo(w, "x.jpg")),
        1,
        ("x.jpg: not a regular file (a FIFO)",),
        GOOD,
        timeout=60,
        process=True,
    ),
    Case(
        "fifo inside a folder",
        lambda w, m: run_with(w, m, "d"),
        1,
        ("p.png: not a regular file (a FIFO)",),
        GOOD,
        timeout=60,
        setup=lambda w: fifo(w, "d/p.png"),
        process=True,
    ),
    Case(
        "device as input",
        lambda w, m: run_with(w, m, "/dev/null"),
        1,
        ("/dev/null: not a regular file (a device)",),
        GOOD,
    ),
    Case("directory named like an image", lambda w, m: run_with(w, m, folder(w, "dir.jpg")), 0, (), GOOD),
    Case(
        "folder of non-media only",
        lambda w, m: ["run", "notes", "--model", str(m)],
        2,
        ("no image or video found (1 other file(s) skipped)",),
        setup=lambda w: write(w, "notes/a.txt", b"x"),
    ),
    Case("glob matching nothing", lambda w, m: run_with(w, m, "zz*.jpg"), 1, ("zz*.jpg: no file matches it",), GOOD),
    Case(
        "corrupt video",
        lambda w, m: run_with(w, m, write(w, "v.mp4", os.urandom(4000))),
        1,
        ("v.mp4: cannot open",),
        GOOD,
    ),
    Case(
        "unopenable camera", lambda w, m: run_with(w, m, flags=("--camera", "57")), 1, ("camera 57: cannot open",), GOOD
    ),
    Case(
        "side-by-side too wide to encode",
        lambda w, m: [
            "run",
            str(scene_video(w / "wide.mp4", frames=2, width=4128, height=16)),
            "--model",
            str(m),
            "--out",
            "out",
            "--save",
            "side-by-side",
            "--codec",
            "mpeg4",  # libx264 takes 8256x16; MPEG-4 Part 2 does not
        ],
        1,
        ("wide_side-by-side.mp4", "encoder"),
        extra=lambda w: None if not list((w / "out").glob("*.mp4")) else pytest.fail("a video was left"),
    ),
    Case("--size too large", lambda w, m: run_with(w, m, flags=("--size", "100000x100000")), 2, ("--size", "MP")),
    Case("--size not a size", lambda w, m: run_with(w, m, flags=("--size", "big")), 2, ("--size takes WIDTHxHEIGHT",)),
    Case("--size zero", lambda w, m: run_with(w, m, flags=("--size", "0x5")), 2, ("--size takes WIDTHxHEIGHT",)),
    Case("--save unknown", lambda w, m: run_with(w, m, flags=("--save", "labels,poster")), 2, ("--save takes",)),
    Case("--tile too small", lambda w, m: run_with(w, m, flags=("--tile", "8")), 2, ("--tile",)),
    Case("unknown device", lambda w, m: run_with(w, m, flags=("--device", "quantum")), 2, ("unknown device",)),
    Case("cuda on a machine without it", lambda w, m: run_with(w, m, flags=("--device", "cuda")), 2, ("cuda",)),
    Case("nothing to segment", lambda w, m: ["run", "--model", str(m)], 2, ("nothing to segment",)),
    Case(
        "missing model",
        lambda w, m: ["run", "good.jpg", "--model", "models/none.onnx"],
        2,
        ("models/none.onnx not found", "segtool export"),
    ),
    Case(
        "corrupt model",
        lambda w, m: ["run", "good.jpg", "--model", write(w, "c.onnx", b"\x08\x07junk" * 50)],
        2,
        ("c.onnx: not a usable ONNX model",),
    ),
    Case(
        "model without segtool metadata",
        lambda w, m: ["run", "good.jpg", "--model", str(tiny_model(w / "plain.onnx", {}))],
        2,
        ("has no segtool metadata",),
    ),
    Case(
        "palette value 300",
        lambda w, m: run_broken(w, palette=json.dumps([[300, 0, 0]] * 21)),
        2,
        ("segtool.palette has a value outside",),
    ),
    Case("mean of 2 values", lambda w, m: run_broken(w, mean="[0.5, 0.5]"), 2, ("segtool.mean must be 3 finite",)),
    Case("std zero", lambda w, m: run_broken(w, std="[0.2, 0, 0.2]"), 2, ("segtool.std must be positive",)),
    Case(
        "weights as a list", lambda w, m: run_broken(w, weights="[1, 2]"), 2, ("segtool.weights must be a JSON object",)
    ),
    Case(
        "300 classes",
        lambda w, m: run_broken(w, classes=json.dumps([f"c{k}" for k in range(300)])),
        2,
        ("segtool.classes must be a list of 1 to 256",),
    ),
    Case(
        "class count vs channels",
        lambda w, m: run_broken(w, classes=json.dumps([f"c{k}" for k in range(5)])),
        2,
        ("lists 5 classes but the graph outputs 21 channels",),
    ),
    Case(
        "output kind vs graph",
        lambda w, m: run_broken(w, output="labels"),
        2,
        ("segtool.output says labels but the graph's output logits is tensor(float)",),
    ),
    Case(
        "non-segmentation graph",
        lambda w, m: ["run", "good.jpg", "--model", str(tiny_model(w / "flat.onnx", input_rank=2))],
        2,
        ("not [batch, 3",),
    ),
    Case(
        "info on broken metadata",
        lambda w, m: ["info", broken_model(w, palette=json.dumps([[300, 0, 0]] * 21))],
        2,
        ("segtool.palette has a value outside",),
    ),
    Case(
        "out is a file",
        lambda w, m: run_with(w, m, flags=("--out", "f/sub")),
        2,
        ("not writable",),
        setup=lambda w: write(w, "f", b"x"),
    ),
    Case(
        "output name taken by a directory",
        lambda w, m: run_with(w, m),
        1,
        ("out/good_mask.png: a directory has that name",),
        ("out/good_labels.png", "out/good_overlay.jpg"),
        setup=lambda w: folder(w, "out/good_mask.png"),
    ),
    Case(
        "export onto a directory",
        lambda w, m: ["export", "--weights", "random", "--output", folder(w, "d.onnx")],
        2,
        ("--output d.onnx exists and is not a regular file",),
    ),
    Case(
        "export onto a device",
        lambda w, m: ["export", "--weights", "random", "--output", "/dev/null"],
        2,
        ("--output /dev/null exists and is not a regular file",),
    ),
    Case(
        "export with a missing checkpoint",
        lambda w, m: ["export", "--weights", "nope.pth", "--output", "x.onnx"],
        2,
        ("weights file nope.pth not found",),
    ),
    Case(
        "export with a missing calibration source",
        lambda w, m: ["export", "--weights", "random", "--int8", "--calibration", "nope", "--output", "x.onnx"],
        2,
        ("--calibration nope",),
    ),
    Case(
        "eval on an empty split",
        lambda w, m: ["eval", str(m), "--data", "voc", "--json"],
        1,
        ("no usable sample",),
        setup=lambda w: write(w, "voc/ImageSets/Segmentation/val.txt", b""),
    ),
    Case("eval without a VOC tree", lambda w, m: ["eval", str(m), "--data", "nowhere"], 2, ("val.txt not found",)),
    Case(
        "compare with no usable image",
        lambda w, m: ["compare", str(m), str(m), "--images", "nope.jpg"],
        1,
        ("nope.jpg: no such file", "nothing compared"),
    ),
    Case(
        "compare with a missing model",
        lambda w, m: ["compare", str(m), "none.onnx", "--images", "good.jpg"],
        2,
        ("none.onnx not found",),
    ),
    Case("unknown flag", lambda w, m: run_with(w, m, flags=("--colour", "red")), 2, ("No such option",)),
]


def test_matrix_has_at_least_40_cases():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


# --- issue 18: no file or folder can take segtool down, stall it, or make it lie -------------------


def damaged_png(width: int, height: int) -> bytes:
    """A PNG declaring width x height whose text chunk has a broken CRC: Pillow, which decodes PNGs,
    refuses it (OpenCV's libpng decodes it anyway, past the pixel limit, warning on stderr)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(height)), 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    text = chunk(b"tEXt", b"note\x00hi")[:-4] + b"BAD!"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + text + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def gif_claiming(width: int, height: int) -> bytes:
    """A 1x1 GIF image placed on a width x height logical screen (canvas)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    return screen + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


RADIANCE = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4000 +X 4000\n" + bytes(64)


def link(w: Path, name: str, target: str) -> str:
    (w / name).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, w / name)
    return name


def tree_with_cycles(w: Path, links: int) -> str:
    """tree/a/b/x.jpg, and ``links`` links back to folders above them."""
    write(w, "tree/a/b/x.jpg", jpeg(seed=3))
    link(w, "tree/a/up", "..")
    if links > 1:
        link(w, "tree/a/b/up2", "../..")
    return "tree"


def only_outputs(*stems: str) -> Callable[[Path], None]:
    def check(w: Path) -> None:
        written = sorted(p.name for p in (w / "out").rglob("*_labels.png"))
        assert written == sorted(f"{s}_labels.png" for s in stems), written

    return check


LONG = "é" * 119 + "xx"  # 240 bytes of UTF-8: legal, but too long for a temporary name built on it
CYCLE = "leads to a folder already walked"
CASES += [
    Case(
        "damaged PNG past --max-pixels",
        lambda w, m: run_with(w, m, write(w, "d.png", damaged_png(3000, 3000)), flags=("--max-pixels", "1000000")),
        1,
        ("d.png: not an image, or corrupt (broken PNG file",),
        GOOD,
    ),
    Case(
        "Radiance HDR named .jpg",
        lambda w, m: run_with(w, m, write(w, "hdr.jpg", RADIANCE)),
        1,
        ("hdr.jpg: not an image, or corrupt, or a format whose size its header does not give",),
        GOOD,
    ),
    Case(
        "GIF canvas past --max-pixels",
        lambda w, m: run_with(w, m, write(w, "big.gif", gif_claiming(8000, 8000)), flags=("--max-pixels", "1000000")),
        1,
        ("big.gif: frames of 8000x8000 are 64 MP",),
        GOOD,
    ),
    Case(
        "video frames past --max-pixels",
        lambda w, m: run_with(w, m, str(scene_video(w / "v.mp4", 3, 320, 240)), flags=("--max-pixels", "50000")),
        1,
        ("v.mp4: frames of 320x240",),
        GOOD,
    ),
    Case(
        "symlink loop in a folder",
        lambda w, m: [*run_with(w, m, "in"), "-r"],
        1,
        ("in/loop.jpg: cannot read",),
        ("out/good_labels.png", "out/x_labels.png"),
        setup=lambda w: (write(w, "in/x.jpg", jpeg(seed=2)), link(w, "in/loop.jpg", "loop.jpg")),
    ),
    Case(
        "link loop named like nothing",
        lambda w, m: [*run_with(w, m, "in")],
        1,
        ("in/loop: cannot read",),
        ("out/x_labels.png",),
        setup=lambda w: (write(w, "in/x.jpg", jpeg(seed=2)), link(w, "in/loop", "loop")),
    ),
    Case(
        "link to a parent folder, -r",
        lambda w, m: [*run_with(w, m, tree_with_cycles(w, 1)), "-r"],
        1,
        (CYCLE,),
        ("out/a/b/x_labels.png",),
        extra=only_outputs("x", "good"),
    ),
    Case(
        "two cycles under a quoted glob",
        lambda w, m: run_with(w, m, tree_with_cycles(w, 2) + "/**/*.jpg"),
        1,
        (CYCLE,),
        ("out/x_labels.png",),
        timeout=60,
        process=True,
        extra=only_outputs("x", "good"),
    ),
    Case(
        "glob yields each file once",
        lambda w, m: run_with(w, m, "tree/**/*.jpg"),
        1,
        (CYCLE,),
        ("out/x_labels.png",),
        extra=only_outputs("x", "good"),
        setup=lambda w: (write(w, "tree/a/x.jpg", jpeg(seed=2)), link(w, "tree/same", "a")),
    ),
    Case(
        "long legal image name",
        lambda w, m: run_with(w, m, write(w, LONG + ".jpg", jpeg(seed=4))),
        0,
        (),
        (f"out/{LONG}_labels.png", *GOOD),
    ),
    Case(
        "long legal video name",
        lambda w, m: run_with(w, m, str(scene_video(w / (LONG + ".mp4"), 3, 64, 48))),
        0,
        (),
        (f"out/{LONG}_overlay.mp4", *GOOD),
    ),
    Case(
        "bad TIFF, no library noise",
        lambda w, m: run_with(w, m, write(w, "bad.tiff", b"II*\x00" + bytes(64))),
        1,
        ("bad.tiff:",),
        GOOD,
        extra=None,
    ),
    Case(
        "MP4 without a moov atom, no library noise",
        lambda w, m: run_with(w, m, write(w, "cut.mp4", b"\x00\x00\x00\x18ftypisom" + bytes(500))),
        1,
        ("cut.mp4: cannot open",),
        GOOD,
    ),
]


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 header is patched to claim width x height."""
    data = bytearray(jpeg(seed=5))
    at = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    """A bare BMP header (no pixels) claiming width x height; a negative height is a top-down BMP."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info


def webp_claiming(width: int, height: int) -> bytes:
    """A real animated WebP of two 1x1 frames whose extended (VP8X) header claims a width x height
    canvas (valid as it is: frames may be smaller than the canvas)."""
    frames = [Image.new("RGB", (1, 1)), Image.new("RGB", (1, 1), (255, 255, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    data = bytearray(buffer.getvalue())
    data[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return bytes(data)


#: lines C libraries print on stderr themselves (OpenCV's logger, libpng, libjpeg, libtiff, FFmpeg)
LIBRARY_NOISE = re.compile(
    r"\s*(\[ ?(WARN|ERROR|INFO|DEBUG)\b|libpng |libjpeg|Corrupt JPEG|Premature end|TIFF|\[\w+ @ 0x)"
)

CASES += [
    Case(
        "JPEG header 65000^2",
        lambda w, m: run_with(w, m, write(w, "j.jpg", jpeg_claiming(65000, 65000))),
        1,
        ("j.jpg: 65000x65000 is 4225 MP, over the 100 MP limit",),
        GOOD,
    ),
    Case(
        "JPEG header past --max-pixels",
        lambda w, m: run_with(w, m, write(w, "j.jpg", jpeg_claiming(400, 400)), flags=("--max-pixels", "100000")),
        1,
        ("j.jpg: 400x400",),
        GOOD,
    ),
    Case(
        "BMP header 50000^2",
        lambda w, m: run_with(w, m, write(w, "b.bmp", bmp_claiming(50000, 50000))),
        1,
        ("b.bmp: 50000x50000",),
        GOOD,
    ),
    Case(
        "top-down BMP of height -2^31",
        lambda w, m: run_with(w, m, write(w, "b.bmp", bmp_claiming(64, -(2**31)))),
        1,
        ("b.bmp: 64x2147483648",),
        GOOD,
    ),
    Case(
        "WebP canvas 16000^2",
        lambda w, m: run_with(w, m, write(w, "x.webp", webp_claiming(16000, 16000))),
        1,
        ("x.webp: 16000x16000 is 256 MP",),
        GOOD,
    ),
    Case(
        "GIF canvas past the default limit",
        lambda w, m: run_with(w, m, write(w, "g.gif", gif_claiming(65535, 65535))),
        1,
        ("g.gif: frames of 65535x65535",),
        GOOD,
    ),
    Case(
        "PNG of zero width, no libpng noise",
        lambda w, m: run_with(w, m, write(w, "z.png", png_claiming(0, 10))),
        1,
        ("z.png: not an image, or corrupt",),
        GOOD,
    ),
    Case(
        "PNG with a bad text CRC, no libpng noise",
        lambda w, m: run_with(w, m, write(w, "d.png", damaged_png(40, 30))),
        1,
        ("d.png: not an image, or corrupt (broken PNG file (bad header checksum in b'tEXt'))",),
        GOOD,
    ),
    Case(
        "PNG with more data than rows, no libpng noise",
        lambda w, m: run_with(w, m, write(w, "p.png", png_claiming(1, 1))),
        0,
        (),
        ("out/p_labels.png", *GOOD),
    ),
    Case(
        "JPEG with a Motion Photo's video after it",
        lambda w, m: run_with(w, m, write(w, "m.jpg", jpeg(seed=2) + b"\x00\x00\x00\x18ftypmp42" + b"\xff\xda" * 50)),
        0,
        (),
        ("out/m_labels.png", *GOOD),
    ),
    Case(
        "truncated GIF",
        lambda w, m: run_with(w, m, write(w, "t.gif", gif_claiming(10, 10)[:20])),
        1,
        ("t.gif: no frame could be decoded",),
        GOOD,
    ),
    Case("empty video file", lambda w, m: run_with(w, m, write(w, "e.mp4", b"")), 1, ("e.mp4: cannot open",), GOOD),
    Case(
        "dangling link", lambda w, m: run_with(w, m, link(w, "l.jpg", "nowhere.jpg")), 1, ("l.jpg: no such file",), GOOD
    ),
    Case(
        "newline in a file name",
        lambda w, m: run_with(w, m, write(w, "a\nb.jpg", jpeg(seed=2))),
        0,
        (),
        ("out/a\nb_labels.png", *GOOD),
    ),
    Case(
        "two inputs with one stem",
        lambda w, m: run_with(w, m, write(w, "a/x.jpg", jpeg(seed=2)), write(w, "b/x.jpg", jpeg(seed=3))),
        0,
        (),
        ("out/x.jpg_labels.png", "out/x.jpg-2_labels.png", *GOOD),
        extra=only_outputs("x.jpg", "x.jpg-2", "good"),
    ),
    Case(
        "negative camera index",
        lambda w, m: ["run", "--camera", "-3", "--model", str(m)],
        2,
        ("'--camera': Input should be greater than or equal to 0",),
        process=True,  # OpenCV took the process down with SIGSEGV on it
    ),
    Case(
        "model path is a folder",
        lambda w, m: ["run", "good.jpg", "--model", folder(w, "models.onnx")],
        2,
        ("model models.onnx is a folder, not an .onnx file",),
    ),
    Case(
        "--max-pixels negative",
        lambda w, m: run_with(w, m, flags=("--max-pixels", "-5")),
        2,
        ("'--max-pixels': Input should be greater than or equal to 0",),
    ),
    Case("--size negative", lambda w, m: run_with(w, m, flags=("--size", "-5x3")), 2, ("--size takes WIDTHxHEIGHT",)),
    Case(
        "--quality past mpeg4's range",
        lambda w, m: run_with(w, m, flags=("--codec", "mpeg4", "--quality", "99")),
        2,
        ("--quality 99 is out of range for mpeg4: 1 to 31",),
    ),
    Case(
        "--preview port past 65535",
        lambda w, m: run_with(w, m, flags=("--preview", "99999")),
        2,
        ("--preview '99999': expected [HOST:]PORT",),
    ),
    Case(
        "--out under a file",
        lambda w, m: ["run", "good.jpg", "--model", str(m), "--out", "good.jpg/sub"],
        2,
        ("output folder good.jpg/sub is not writable (a file is in the way of its folder)",),
    ),
]


def test_matrix_grew_by_30_for_issue_18():
    assert len(CASES) >= 48 + 30


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tiny: Path, tmp_path: Path):
    (tmp_path / "good.jpg").write_bytes(jpeg(seed=1))
    if case.setup:
        case.setup(tmp_path)
    args = case.make(tmp_path, tiny)
    proc: Ran
    if case.process:
        try:
            proc = run_segtool(*args, cwd=tmp_path, timeout=case.timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"hung: segtool {' '.join(args)}")
    else:
        proc = run_in_process(*args, cwd=tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode == case.code, text
    assert "Traceback" not in text, text
    errors = [line for line in proc.stderr.splitlines() if line.startswith("segtool: error:")]
    noise = [line for line in proc.stderr.splitlines() if LIBRARY_NOISE.match(line)]
    assert not noise, proc.stderr  # a library's own lines, not folded into segtool's
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("segtool: warning:")]
    for needle in case.warns:
        assert any(needle in line for line in warnings), (needle, proc.stderr)
    for needle in case.needles:
        assert any(needle in line for line in errors), (needle, proc.stderr)
    if case.code == 2 and case.needles:
        assert len(errors) == 1, proc.stderr  # one line
    for name in case.good:
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, (name, text)
    leftovers = [p for p in tmp_path.rglob(".*") if p.name != ".segtool-trt-cache"]
    assert not leftovers, leftovers
    if case.extra:
        case.extra(tmp_path)


def test_a_folder_named_like_an_image_is_said_not_silent(tiny: Path, tmp_path: Path):
    (tmp_path / "good.jpg").write_bytes(jpeg(seed=1))
    (tmp_path / "dir.jpg").mkdir()
    proc = run_in_process(*run_with(tmp_path, tiny, "dir.jpg"), cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "out" / "good_labels.png").is_file(), proc.stderr
    assert "segtool: warning: dir.jpg: a folder with no image or video in it" in proc.stderr
