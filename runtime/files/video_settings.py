"""How videos are written and how live sources are kept open, without importing PyAV.

The command line, the job layer and the server need these names whether or not PyAV (``av``) is
installed: an image-only install runs without it. ``video_module()`` imports the module that opens
and writes videos (``segtool.runtime.files.video``), or says in one line what to install.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

from segtool.runtime.errors import UsageError

DEFAULT_FPS = 25.0
CODECS = ("h264", "hevc", "vp9", "mpeg4")
#: x264/x265's speed names, fastest first; NVENC and VP9 get the nearest setting of their own
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
#: the cheapest H.264 x264 makes: real time beside inference on 2 cores (BENCHMARKS.md), Constrained
#: Baseline (no B-frames, no CABAC), which every decoder plays; --preset veryfast makes files ~3x smaller
DEFAULT_PRESET = "ultrafast"
#: codec -> (NVENC encoder tried first, or None; the CPU encoder)
ENCODERS: dict[str, tuple[str | None, str]] = {
    "h264": ("h264_nvenc", "libx264"),
    "hevc": ("hevc_nvenc", "libx265"),
    "vp9": (None, "libvpx-vp9"),
    "mpeg4": (None, "mpeg4"),
}
#: codec -> (default, lowest, highest) quality: the CRF of x264/x265/VP9 (NVENC's CQ), lower is better;
#: MPEG-4 part 2 has a fixed quantizer, 1 (best) to 31
QUALITY = {"h264": (23, 0, 51), "hevc": (28, 0, 51), "vp9": (32, 0, 63), "mpeg4": (4, 1, 31)}
#: the picture kinds whose videos get the input's sound
AUDIO_KINDS = ("overlay", "side-by-side")
NO_PYAV = "videos need PyAV, which is not installed: pip install av (or the bundle's video variant)"


class MissingVideo(UsageError):
    """PyAV is not installed (an image-only install), and a video was asked for."""


def video_module() -> ModuleType:
    """``segtool.runtime.files.video``, imported now; ``MissingVideo`` where PyAV does not import."""
    try:
        return importlib.import_module("segtool.runtime.files.video")
    except ImportError as exc:
        raise MissingVideo(f"{NO_PYAV} ({exc})") from None


def codec_threads(requested: int | None = None) -> int:
    """FFmpeg threads for one decoder or one encoder (0: FFmpeg chooses).

    On a machine of 4 cores or fewer the pipeline already runs decoding, inference and encoding
    side by side and ONNX Runtime's threads take every core during inference: one thread per codec
    costs least there (x264 frame threads and H.264 decoder threads only add synchronisation and
    frames in flight). Larger machines let FFmpeg choose."""
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 1 if cores <= 4 else 0


@dataclass(frozen=True)
class VideoOutput:
    """How video files are written: codec, quality, encoder preset, the size pictures are painted and
    encoded at (None: the input's size), and, with ``segment``, a new file every that many seconds."""

    codec: str = "h264"
    quality: int | None = None  # None: QUALITY[codec][0]
    preset: str | None = None  # None: DEFAULT_PRESET
    size: tuple[int, int] | None = None  # (width, height)
    threads: int | None = None  # FFmpeg threads per decoder and encoder; None: ``codec_threads()``
    segment: float | None = None  # seconds of video per file (<name>-0001.mp4, -0002, ...); None: one file

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise UsageError(f"unknown codec {self.codec!r}: choose one of {', '.join(CODECS)}")
        _, low, high = QUALITY[self.codec]
        if self.quality is not None and not low <= self.quality <= high:
            raise UsageError(f"--quality {self.quality} is out of range for {self.codec}: {low} to {high}")
        if self.preset is not None and self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        if self.size is not None and (self.size[0] < 2 or self.size[1] < 2):
            raise UsageError(f"output size {self.size[0]}x{self.size[1]} is too small (2x2 at least)")
        if self.segment is not None and not self.segment > 0:
            raise UsageError(f"a segment of {self.segment} seconds is too short (more than 0)")


@dataclass(frozen=True)
class Reconnect:
    """How a live source (a stream URL or a camera; never a file) is kept open: after a drop, or
    ``stall`` seconds without data, it is opened again after 1, 2, 4, ... seconds (at most
    ``max_delay``), up to ``tries`` times in a row before it counts as lost. A stream URL that does
    not open at the start gets the same tries."""

    tries: int = 10
    delay: float = 1.0
    max_delay: float = 30.0
    stall: float = 10.0

    def __post_init__(self) -> None:
        if self.tries < 1 or self.delay < 0 or self.max_delay < self.delay or not self.stall > 0:
            raise UsageError(f"impossible reconnect settings: {self}")

    def wait(self, attempt: int) -> float:
        """Seconds before try ``attempt`` (1, 2, ...)."""
        return min(self.max_delay, self.delay * 2 ** (attempt - 1))
