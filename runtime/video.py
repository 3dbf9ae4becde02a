"""Video in, video out, with decoding, inference and encoding running at the same time.

Three stages joined by bounded queues, so memory stays flat whatever the video's length and
frame order is kept (one inference stage, FIFO queues):

    decode thread:  VideoCapture.read -> resize -> normalize    (queue of ``depth`` batches)
    caller thread:  ONNX Runtime -> labels at frame size        (yields frame, labels)
    writer thread:  colour mask / overlay -> VideoWriter, PNGs  (queue of ``depth`` frames)

OpenCV decodes to BGR; the model wants RGB: the normalizer reads the planes in the right order
(the seed tutorial fed BGR frames to the model as if they were RGB).

Outputs go to hidden temporary files and are renamed into place by ``close()``; an interrupted
run that still reaches ``close()`` (Ctrl-C) leaves complete, playable files with the frames done.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from .errors import SegtoolError
from .imagefiles import atomic_write_bytes
from .outputs import Painter
from .visualize import class_counts

DEFAULT_FPS = 25.0
_END = object()


class VideoSource:
    """An opened video file, stream URL or camera, with its size, fps and (if known) length."""

    def __init__(self, location: str | int):
        self.name = f"camera {location}" if isinstance(location, int) else str(location)
        if isinstance(location, str) and "://" not in location and not Path(location).is_file():
            raise SegtoolError(f"{self.name}: no such file", 1)
        self.capture = cv2.VideoCapture(location)
        if not self.capture.isOpened():
            what = "no such camera, or it is busy" if isinstance(location, int) else \
                "not an image or a video OpenCV can decode, corrupt, or unreachable"
            raise SegtoolError(f"{self.name}: cannot open ({what})", 1)
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
        self.width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and not isinstance(location, int) and "://" not in str(location) else None
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
            raise SegtoolError(f"{self.name}: no frame could be decoded", 1)

    @property
    def ended_early(self) -> bool:
        """Fewer frames than the container announced: a frame failed to decode or the file is cut."""
        return self.frame_count is not None and self.frames_read < self.frame_count - 1

    def close(self) -> None:
        self.capture.release()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless asked to stop; a bounded queue makes the producer wait for the consumer."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def segment_frames(seg, frames: Iterable[np.ndarray], max_size: int | None = None,
                   size: tuple[int, int] | None = None, batch: int = 1, depth: int = 4,
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frame, labels at frame size) for each BGR frame, in order, with decoding one stage ahead."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def decode() -> None:
        group: list[np.ndarray] = []

        def flush() -> bool:
            ok = _put(ready, (group[:], seg.prepare(group, "bgr", max_size, size)), stop)
            group.clear()
            return ok

        try:
            for frame in frames:
                if group and frame.shape != group[0].shape and not flush():
                    return
                group.append(frame)
                if len(group) == batch and not flush():
                    return
            if group and not flush():
                return
            _put(ready, _END, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            _put(ready, exc, stop)

    thread = threading.Thread(target=decode, name="segtool-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            group, tensor = item
            h, w = group[0].shape[:2]
            for frame, labels in zip(group, seg.labels_at(seg.run(tensor), h, w)):
                yield frame, labels
    finally:
        stop.set()
        thread.join(timeout=5)


def _fourcc(path: Path) -> int:
    return cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))


class VideoOutputs:
    """The files made from one video, written on a background thread from a bounded queue, which
    also counts pixels per class (off the inference thread).

    ``kinds`` picks among ``overlay``, ``mask``, ``side-by-side`` (videos) and ``labels``
    (one paletted PNG per frame in ``<stem>_frames/``).
    """

    VIDEO_KINDS = {"overlay": "_overlay.mp4", "mask": "_mask.mp4", "side-by-side": "_side-by-side.mp4"}

    def __init__(self, out_dir: Path, stem: str, fps: float, width: int, height: int, painter: Painter,
                 kinds: set[str], depth: int = 8):
        self.painter = painter
        self.kinds = kinds
        self.frames_written = 0
        self.counts = np.zeros(len(painter.meta.classes), np.int64)  # pixels per class, all frames
        self.final: dict[str, Path] = {}
        self.temp: dict[str, Path] = {}
        self.writers: dict[str, cv2.VideoWriter] = {}
        base = out_dir / stem
        base.parent.mkdir(parents=True, exist_ok=True)
        for kind, suffix in self.VIDEO_KINDS.items():
            if kind not in kinds:
                continue
            final = base.parent / (base.name + suffix)
            temp = final.with_name(f".{final.stem}.{os.getpid()}.partial{final.suffix}")
            frame_size = (width * 2, height) if kind == "side-by-side" else (width, height)
            writer = cv2.VideoWriter(str(temp), _fourcc(final), fps, frame_size)
            if not writer.isOpened():
                self._discard()
                raise SegtoolError(f"cannot write {final}: OpenCV has no encoder for it", 2)
            self.final[kind], self.temp[kind], self.writers[kind] = final, temp, writer
        self.frames_dir = base.parent / (base.name + "_frames") if "labels" in kinds else None
        if self.frames_dir:
            self.frames_dir.mkdir(parents=True, exist_ok=True)
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="segtool-encode", daemon=True)
        self.thread.start()

    def put(self, frame: np.ndarray, labels: np.ndarray) -> None:
        if self.error:
            raise self.error
        self.queue.put((frame, labels))

    def _work(self) -> None:
        while (item := self.queue.get()) is not _END:
            if self.error:
                continue
            try:
                self._write(*item)
            except BaseException as exc:  # noqa: BLE001 - reported by put()/close()
                self.error = exc

    def _write(self, frame: np.ndarray, labels: np.ndarray) -> None:
        mask = self.painter.mask(labels) if self.writers else None
        overlay = self.painter.overlay(frame, labels, mask) if {"overlay", "side-by-side"} & self.kinds else None
        pictures = {"overlay": overlay, "mask": mask,
                    "side-by-side": np.hstack([frame, overlay]) if overlay is not None else None}
        for kind, writer in self.writers.items():
            writer.write(pictures[kind])
        if self.frames_dir:
            atomic_write_bytes(self.frames_dir / f"{self.frames_written:06d}_labels.png",
                               self.painter.labels_png(labels))
        self.counts += class_counts(labels, len(self.counts))[: len(self.counts)]
        self.frames_written += 1

    def close(self) -> dict[str, str]:
        """Finish the queued frames, finalize the containers and move them into place."""
        self.queue.put(_END)
        self.thread.join()
        for writer in self.writers.values():
            writer.release()
        if self.error:
            self._discard()
            raise SegtoolError(f"writing {', '.join(map(str, self.final.values()))} failed: {self.error}", 1)
        for kind, temp in self.temp.items():
            os.replace(temp, self.final[kind])
        paths = {kind: str(path) for kind, path in self.final.items()}
        if self.frames_dir:
            paths["labels"] = str(self.frames_dir)
        return paths

    def discard(self) -> None:
        """Stop and remove everything unfinished (used when not a single frame was made)."""
        self.queue.put(_END)
        self.thread.join()
        self._discard()

    def _discard(self) -> None:
        for writer in self.writers.values():
            writer.release()
        for temp in self.temp.values():
            temp.unlink(missing_ok=True)
        if self.frames_dir and self.frames_dir.is_dir() and not any(self.frames_dir.iterdir()):
            self.frames_dir.rmdir()
