"""Video I/O and nothing else: frames out of a file, stream or camera; pictures into video files.

``VideoSource`` decodes BGR frames with OpenCV. ``VideoSink`` encodes one video file per kind
of picture, into hidden temporary files that ``close()`` checks and moves into place, so an
interrupted or failed run never leaves a half-written video under its real name.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from segtool.runtime.errors import InputError, OutputError
from segtool.runtime.files.images import regular_file_problem, write_problem

DEFAULT_FPS = 25.0


class VideoSource:
    """An opened video file, stream URL or camera, with its size, fps and (if known) length."""

    def __init__(self, location: str | int):
        self.name = f"camera {location}" if isinstance(location, int) else str(location)
        if isinstance(location, str) and "://" not in location and (problem := regular_file_problem(Path(location))):
            raise InputError(f"{self.name}: {problem}")  # a FIFO or device is never opened
        self.capture = cv2.VideoCapture(location)
        if not self.capture.isOpened():
            what = (
                "no such camera, or it is busy"
                if isinstance(location, int)
                else "not an image or a video OpenCV can decode, corrupt, or unreachable"
            )
            raise InputError(f"{self.name}: cannot open ({what})")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
        self.width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        live = isinstance(location, int) or "://" in str(location)
        self.frame_count: int | None = count if count > 0 and not live else None
        self.frames_read = 0

    def frames(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """BGR frames until the end (or ``limit``); a video that yields none is an error."""
        while limit is None or self.frames_read < limit:
            ok, frame = self.capture.read()
            if not ok:
                break
            self.frames_read += 1
            yield frame
        if self.frames_read == 0:
            raise InputError(f"{self.name}: no frame could be decoded")

    @property
    def ended_early(self) -> bool:
        """Fewer frames than the container announced: a frame failed to decode or the file is cut."""
        return self.frame_count is not None and self.frames_read < self.frame_count - 1

    def close(self) -> None:
        self.capture.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fourcc_for(path: Path) -> int:
    return cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))  # type: ignore[attr-defined]


class VideoSink:
    """One video file per picture kind, e.g. {"overlay": out/x_overlay.mp4}, all of one frame rate.

    Frame sizes are fixed by the first picture of each kind.
    """

    def __init__(self, targets: dict[str, Path], fps: float):
        self.targets = targets
        self.fps = fps
        self.temp = {kind: path.with_name(f".{path.stem}.partial{path.suffix}") for kind, path in targets.items()}
        self.writers: dict[str, cv2.VideoWriter] = {}
        self.frames = 0

    def write(self, pictures: dict[str, np.ndarray]) -> None:
        for kind, target in self.targets.items():
            picture = pictures[kind]
            writer = self.writers.get(kind)
            if writer is None:
                h, w = picture.shape[:2]
                target.parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(str(self.temp[kind]), fourcc_for(target), self.fps, (w, h))
                if not writer.isOpened():
                    writer.release()
                    raise OutputError(f"cannot write {target}: OpenCV has no encoder for {w}x{h} at this format")
                self.writers[kind] = writer
            writer.write(picture)
        self.frames += 1

    def close(self) -> dict[str, str]:
        """Finalize every file, check that it decodes, and move it into place; kind -> path."""
        for writer in self.writers.values():
            writer.release()
        written = {}
        for kind, target in self.targets.items():
            temp = self.temp[kind]
            if not self.frames or not _decodes(temp, self.frames):
                self.discard()
                raise OutputError(
                    f"cannot write {target}: the encoded video does not play back (disk full, or the encoder failed)"
                )
            try:
                if target.is_dir():
                    raise IsADirectoryError(errno.EISDIR, "is a directory")
                os.replace(temp, target)
            except OSError as exc:
                self.discard()
                raise OutputError(f"cannot write {target}: {write_problem(exc)}") from None
            written[kind] = str(target)
        return written

    def discard(self) -> None:
        """Drop everything unfinished."""
        for writer in self.writers.values():
            writer.release()
        for temp in self.temp.values():
            temp.unlink(missing_ok=True)


def _decodes(path: Path, frames: int) -> bool:
    """A finished file re-opens, announces the frames written (where the container says) and yields
    a frame: OpenCV's writer reports no write error, so a full disk shows up only here."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        return capture.isOpened() and count in (0, frames) and bool(capture.read()[0])
    finally:
        capture.release()
