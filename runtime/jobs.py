"""The job layer: every command, the HTTP server and the Ray batch run segmentation through here.

- ``process``: the one entry for one input (a discovered source, request bytes, or a decoded
  image): segmented, pictures composed, written or kept in memory; a ``Result`` out.
  ``segment_image``/``segment_video`` are its two halves; ``infer`` is the inference step alone.
- ``run_sources``: many discovered inputs; a bad one is reported and the run goes on (``Report``).
- ``iter_images``: images and video frames for ``compare``, ``eval``-style loops and int8
  calibration, skipping (and reporting) the ones that cannot be read.

``Result`` and ``Report`` have ``as_dict()`` for JSON (plain Python numbers); ``Result.row()`` is the
Ray manifest's row, so a plain run and a Ray run report the same records.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from segtool.runtime.errors import InputError, OutOfMemory, OutputError, SegtoolError, UsageError, interrupt_name
from segtool.runtime.files.colors import class_counts, shares_from_counts
from segtool.runtime.files.images import (
    DEFAULT_MAX_PIXELS,
    decode_image,
    decoded_size,
    read_bytes,
    read_image,
    write_problem,
)
from segtool.runtime.files.pictures import IMAGE_OUTPUTS, VIDEO_OUTPUTS, Painter, output_paths, save_pictures
from segtool.runtime.files.sources import BAD, IMAGE, Discovery, Source, expand
from segtool.runtime.files.video_settings import Reconnect, VideoOutput, video_module
from segtool.runtime.model.memory import MIN_TILE, auto_tile
from segtool.runtime.model.postprocess import resize_labels
from segtool.runtime.model.prefetch import Behind, prefetch
from segtool.runtime.model.preprocess import inference_size
from segtool.runtime.model.runner import Runner, Size

log = logging.getLogger(__name__)

#: called after each video frame: (frames done, total if known, BGR frame, labels)
FrameCallback = Callable[[int, "int | None", np.ndarray, np.ndarray], None]
#: called with each frame's record (``frame_record``) as its pictures are written
RecordCallback = Callable[[dict], None]


#: the long side videos, streams and the server infer at unless told otherwise (the seed's 640x360 for
#: 16:9 video); still images in `segtool run` infer at full resolution (tiled when memory is short)
DEFAULT_LONG_SIDE = 640


@dataclass(frozen=True)
class JobOptions:
    """What to compute and write for each input."""

    image_kinds: tuple[str, ...] = ("labels", "mask", "overlay")
    video_kinds: tuple[str, ...] = ("overlay",)  # "labels" here: one label PNG per frame in <stem>_frames/
    max_size: int | None = None  # long side at inference
    size: Size | None = None  # or exactly (width, height)
    video_max_size: int | None = DEFAULT_LONG_SIDE  # videos and streams, when neither max_size nor size is given
    batch: int = 1  # video frames per inference call
    max_frames: int | None = None
    alpha: float = 0.5
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # refuse larger images from their header (0/None: off)
    tile: int | None = None  # infer in overlapping tile x tile windows (segtool.runtime.model.tiling)
    auto_tile: bool = True  # without ``tile``: tile when whole-image inference would not fit in memory
    video_output: VideoOutput = VideoOutput()  # videos: codec, quality, preset, size painted and encoded at
    reconnect: Reconnect | None = Reconnect()  # streams and cameras: reopened when they drop (None: never)


Kind = Literal["image", "video"]


@dataclass
class Result:
    """One input, done or failed: an image (``frames`` 1) or a video/stream. The same record for
    `segtool run`, its ``--json``, the Ray manifest (``row()``) and the server (``labels``/``pictures``)."""

    input: str
    kind: Kind
    width: int = 0
    height: int = 0
    frames: int = 0
    seconds: float = 0.0
    classes: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # kind -> path written
    tiled: int | None = None  # tile size when an image was segmented window by window
    fps_in: float = 0.0  # videos: the source's frame rate
    interrupted: str = ""  # "", "SIGINT" or "SIGTERM"
    drops: int = 0  # streams and cameras: times the source dropped and was reconnected
    error: str = ""  # why the input failed, or why a video stopped decoding early (frames were written)
    labels: np.ndarray | None = field(default=None, repr=False)  # in memory only (images, no out_dir)
    pictures: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # likewise

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return not self.error

    def as_dict(self) -> dict:
        fields = ("input", "kind", "width", "height", "frames", "seconds", "classes", "outputs", "tiled", "error")
        record = {name: getattr(self, name) for name in fields}
        if self.kind != "image":
            record |= {"fps_in": self.fps_in, "fps": round(self.fps, 3), "interrupted": self.interrupted}
            record["drops"] = self.drops
        return record

    def row(self) -> dict:
        """The manifest row: nested values as JSON text, no error as None."""
        return {
            "source": self.input,
            "kind": self.kind,
            "outputs": json.dumps(self.outputs),
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "classes": json.dumps(self.classes),
            "seconds": self.seconds,
            "error": self.error or None,
        }

    @classmethod
    def from_row(cls, row: dict) -> Result:
        return cls(
            str(row["source"]),
            row["kind"],
            int(row["width"]),
            int(row["height"]),
            int(row["frames"]),
            float(row["seconds"]),
            json.loads(row["classes"] or "{}"),
            json.loads(row["outputs"] or "{}"),
            error=row["error"] or "",
        )


@dataclass
class Decoded:
    """An image read and decoded (possibly at reduced size), with the full size its labels are written at."""

    image: np.ndarray
    full: tuple[int, int]  # (height, width)
    name: str
    stem: str = "image"


@dataclass
class Inference:
    """Labels of one image at its own size, and the raw model output when it ran whole (not tiled)."""

    labels: np.ndarray
    output: np.ndarray | None
    seconds: float
    tiled: int | None


def choose_tile(image: np.ndarray, options: JobOptions) -> int | None:
    """``options.tile``, or (auto) a tile size when whole-image inference would exceed memory."""
    if options.tile or not options.auto_tile:
        return options.tile
    width, height = inference_size(image.shape[0], image.shape[1], options.max_size, options.size)
    return auto_tile(width * height)


def infer(seg: Runner, image: np.ndarray, options: JobOptions = JobOptions()) -> Inference:
    """Labels for a decoded BGR image at its own size: whole, or window by window when tiling is
    asked for or needed (then no raw output is kept). When memory runs out, the image is tried
    again in smaller tiles, halving down to ``MIN_TILE``, before it is reported."""
    started = time.perf_counter()
    tile = choose_tile(image, options)
    while True:
        try:
            if tile:
                labels = seg.segment(image, max_size=options.max_size, size=options.size, tile=tile)
                return Inference(labels, None, time.perf_counter() - started, tile)
            output = seg.run(seg.prepare([image], "bgr", options.max_size, options.size))
            labels = seg.labels_at(output, *image.shape[:2])[0]
            return Inference(labels, output, time.perf_counter() - started, None)
        except (OutOfMemory, MemoryError, cv2.error) as exc:
            if isinstance(exc, cv2.error) and "alloc" not in str(exc).lower() and "memory" not in str(exc).lower():
                raise
            width, height = inference_size(image.shape[0], image.shape[1], options.max_size, options.size)
            current = tile or max(width, height)
            if current <= MIN_TILE:
                raise OutOfMemory(f"out of memory even in {current} px tiles ({exc})") from None
            smaller = max(MIN_TILE, current // 2 // 32 * 32)
            log.info("out of memory at %s; trying %d px tiles", f"{tile} px tiles" if tile else "full size", smaller)
            tile = smaller


def load(data: bytes | str, options: JobOptions, name: str = "", stem: str = "image") -> Decoded:
    """Read (a path) and decode under the pixel limit, a JPEG at reduced size when ``max_size``
    allows: the one way `segtool run`, the Ray decode stage and the server decode an image."""
    if isinstance(data, str):
        name, data = name or data, read_bytes(data)
    image = decode_image(data, name or "image", max_pixels=options.max_pixels, reduce_to=options.max_size)
    return Decoded(image, decoded_size(data, image), name or "image", stem)


def frame_record(source: str, frame: int, seconds: float, classes: dict[str, float]) -> dict:
    """One frame's (or image's) results, as published (JSON lines, MQTT): its source, its number
    (from 1), its time in the video (seconds), the wall-clock time (Unix seconds) and its class shares."""
    shares = {name: round(share, 6) for name, share in classes.items()}
    wall = round(time.time(), 3)
    return {"source": source, "frame": frame, "time": round(seconds, 3), "wall": wall, "classes": shares}


def process(
    seg: Runner,
    item: Source | Decoded | bytes,
    options: JobOptions = JobOptions(),
    out_dir: Path | None = None,
    painter: Painter | None = None,
    on_frame: FrameCallback | None = None,
    kinds: tuple[str, ...] | None = None,
    on_record: RecordCallback | None = None,
) -> Result:
    """The one job entry: one input (a discovered source, encoded bytes, or an image already
    decoded) segmented, its pictures composed and, with ``out_dir``, written; without ``out_dir``
    the labels and pictures stay in the result. ``InputError``/``OutputError`` if it cannot be done.
    ``on_frame`` and ``on_record`` hear about each frame of a video."""
    painter = painter or Painter(seg.meta, options.alpha)
    if isinstance(item, Source):
        if item.kind == BAD:
            raise InputError(item.problem)
        if item.kind != IMAGE:
            if out_dir is None:
                raise UsageError("a video is segmented into files: give an output folder")
            return segment_video(seg, item, out_dir, options, painter, on_frame, on_record)
        item = load(str(item.location), options, str(item), item.stem)
    elif isinstance(item, bytes):
        item = load(item, options, "request body")
    started = time.perf_counter()
    done = infer(seg, item.image, options)
    kinds = options.image_kinds if kinds is None else kinds
    pictures = painter.compose(item.image, done.labels, kinds) if kinds else {}
    if "labels" in pictures and item.full != done.labels.shape:  # decoded at reduced size
        pictures["labels"] = resize_labels(done.labels, *item.full)
    shares = shares_from_counts(class_counts(done.labels, len(seg.meta.classes)), seg.meta.classes)
    result = Result(item.name, "image", item.full[1], item.full[0], 1, 0.0, shares, tiled=done.tiled)
    if out_dir is None:
        result.labels, result.pictures = done.labels, pictures
    else:
        result.outputs = save_pictures(painter, pictures, output_paths(out_dir, item.stem, kinds, IMAGE_OUTPUTS))
    result.seconds = round(time.perf_counter() - started, 4)
    return result


def segment_image(
    seg: Runner, source: Source, out_dir: Path, options: JobOptions = JobOptions(), painter: Painter | None = None
) -> Result:
    """Read, segment and write one still image; the time includes reading and decoding."""
    started = time.perf_counter()
    result = process(seg, source, options, out_dir, painter)
    result.seconds = round(time.perf_counter() - started, 4)
    return result


class _FramesFolder:
    """<stem>_frames/ with one label PNG per frame: written in a hidden folder beside it, then moved
    into place whole (the old one moved aside first, then removed). As a ``with`` block, a folder
    not committed is removed."""

    def __init__(self, target: Path):
        self.target = target
        self.temp = target.parent / f".segtool-{secrets.token_hex(8)}.partial"
        try:
            self.temp.mkdir(parents=True)  # never one that was there; the umask's permissions, as mkdir gives
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {write_problem(exc)}") from None

    def path(self, index: int) -> Path:
        return self.temp / f"{index:06d}_labels.png"

    def commit(self) -> str:
        """Move the finished folder into place. When another run commits the same folder at the same
        moment, one of the two folders is kept, whole."""
        aside = Path(tempfile.mkdtemp(prefix=".segtool-", suffix=".old", dir=self.target.parent))
        try:
            with contextlib.suppress(FileNotFoundError):
                self.target.rename(aside / self.target.name)
            self.temp.rename(self.target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise OutputError(f"cannot write {self.target}: {write_problem(exc)}") from None
            log.info("%s: another run wrote it at the same moment; that folder is kept", self.target)
        finally:
            shutil.rmtree(aside, ignore_errors=True)
        return str(self.target)

    def discard(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> _FramesFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


Timed = tuple[float, np.ndarray]  # a frame and the time it is shown at (seconds from the first frame)


def _batches(frames: Iterable[Timed], size: int) -> Iterator[list[Timed]]:
    """Consecutive frames of one shape, at most ``size`` a batch."""
    for _, same in itertools.groupby(frames, key=lambda timed: timed[1].shape):
        while batch := list(itertools.islice(same, size)):
            yield batch


def _at_size(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """``frame`` at width x height (area averaging to shrink, bilinear to enlarge)."""
    if frame.shape[1::-1] == (width, height):
        return frame
    shrink = width * height < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def segment_video(
    seg: Runner,
    source: Source,
    out_dir: Path,
    options: JobOptions = JobOptions(),
    painter: Painter | None = None,
    on_frame: FrameCallback | None = None,
    on_record: RecordCallback | None = None,
) -> Result:
    """Segment every frame of a video, stream or camera and write the chosen videos, in three stages:

    1. decode (on FFmpeg's threads) and preprocess: each frame scaled once to the output size
       (``options.video_output.size``, default the input's) and once to the inference size, on a
       worker thread a few frames ahead (``prefetch``);
    2. infer, ``options.batch`` frames a call, on this thread; labels scaled to the output size;
    3. paint and encode at the output size, and write label PNGs at the input's size (``labels``),
       on a worker thread a few frames behind (``Behind``).

    Frames keep their times from the input, so the copied sound stays in sync. A stream or camera
    that drops is opened again (``options.reconnect``); with ``video_output.segment`` the videos are
    series of files. ``on_record`` gets each frame's ``frame_record`` as it is written. Ctrl-C or
    SIGTERM stops early with the frames done finalized. Whatever goes wrong, no thread, open file or
    temporary file or folder is left behind.
    """
    video_io = video_module()
    started = time.perf_counter()
    painter = painter or Painter(seg.meta, options.alpha)
    kinds, encoding = options.video_kinds, options.video_output
    max_size = options.max_size if options.max_size or options.size else options.video_max_size
    counts = np.zeros(len(seg.meta.classes), np.int64)
    written = 0
    with contextlib.ExitStack() as cleanup:
        video = cleanup.enter_context(
            video_io.VideoSource(source.location, options.max_pixels, encoding.threads, options.reconnect)
        )
        out_w, out_h = encoding.size or (video.width, video.height)
        targets = output_paths(out_dir, source.stem, kinds, VIDEO_OUTPUTS)
        sink = cleanup.enter_context(video_io.VideoSink(targets, video.fps, encoding, video.audio, video.time_base))
        folder = cleanup.enter_context(_FramesFolder(out_dir / f"{source.stem}_frames")) if "labels" in kinds else None

        def preprocess(batch: list[Timed]) -> tuple[list[float], list[np.ndarray], np.ndarray]:
            """The frames' times, the frames at the output size, and the model's input."""
            times = [when for when, _ in batch]
            frames = [frame for _, frame in batch]
            shown = [_at_size(frame, out_w, out_h) for frame in frames]
            return times, shown, seg.prepare(frames, "bgr", max_size, options.size)

        def paint(item: tuple[float, np.ndarray, np.ndarray, np.ndarray]) -> None:
            nonlocal written
            when, frame, labels, inferred = item  # labels at the output size; inferred: at inference size
            pictures = painter.compose(frame, labels, kinds)
            sink.write(pictures, when)
            if folder:
                pictures["labels"] = resize_labels(inferred, video.height, video.width)
                save_pictures(painter, pictures, {"labels": folder.path(written)})
            frame_counts = class_counts(inferred, len(counts))[: len(counts)]
            counts[:] += frame_counts
            written += 1
            if on_record:
                on_record(frame_record(str(source), written, when, shares_from_counts(frame_counts, seg.meta.classes)))

        painting = cleanup.enter_context(Behind(paint))
        ready = cleanup.enter_context(
            contextlib.closing(prefetch(_batches(video.timed_frames(options.max_frames), options.batch), preprocess))
        )
        total = min((n for n in (video.frame_count, options.max_frames) if n), default=None)
        stop: KeyboardInterrupt | SegtoolError | None = None  # what ended the video early, if anything did
        done = 0
        try:
            for times, shown, tensor in ready:
                inferred = seg.labels_at(seg.run(tensor), *tensor.shape[2:])
                for when, frame, small in zip(times, shown, inferred):
                    labels = resize_labels(small, out_h, out_w)
                    painting.put((when, frame, labels, small))
                    done += 1
                    if on_frame:
                        on_frame(done, total, frame, labels)
        except (KeyboardInterrupt, SegtoolError) as exc:
            stop = exc
            video.stop()  # a reconnect under way gives up at once
        ready.close()  # decoding stops here
        painting.wait()  # raises what painting or encoding raised, even where a ``put`` raised it first
        if stop and not written:
            raise stop  # no frame to keep
        outputs = sink.close()
        if folder:
            outputs["labels"] = folder.commit()
    interrupted = interrupt_name(stop) if isinstance(stop, KeyboardInterrupt) else ""
    error = str(stop) if isinstance(stop, SegtoolError) else ""
    if not error and video.ended_early and not (options.max_frames or interrupted):
        of = f" of {video.frame_count}" if video.frame_count else ""
        why = video.failure or "a frame failed to decode, or the file is cut"
        error = f"{source}: stopped after {video.frames_read}{of} frames ({why})"
    result = Result(str(source), "video", video.width, video.height, written, outputs=outputs, error=error)
    result.seconds = round(time.perf_counter() - started, 3)
    result.classes = shares_from_counts(counts, seg.meta.classes)
    result.fps_in = float(video.fps)
    result.interrupted = interrupted
    result.drops = video.drops
    return result


def outputs_complete(source: Source, out_dir: Path, options: JobOptions) -> bool:
    """Every output of ``source`` is already there (writes are atomic, so present means whole)."""
    if source.kind == BAD or source.live:
        return False
    kinds, suffixes = (
        (options.image_kinds, IMAGE_OUTPUTS) if source.kind == IMAGE else (options.video_kinds, VIDEO_OUTPUTS)
    )
    paths = list(output_paths(out_dir, source.stem, kinds, suffixes).values())
    if source.kind != IMAGE and "labels" in kinds:
        paths.append(out_dir / f"{source.stem}_frames")
    return bool(paths) and all(p.exists() and (p.is_dir() or p.stat().st_size > 0) for p in paths)


class RunEvents:
    """What a caller may want to hear about during ``run_sources``; every method is optional."""

    def started(self, discovery: Discovery) -> None: ...
    def video_started(self, source: Source) -> None: ...
    def frame(self, source: Source, done: int, total: int | None, image: np.ndarray, labels: np.ndarray) -> None: ...
    def record(self, source: Source, record: dict) -> None: ...  # each frame's (each image's) ``frame_record``
    def finished(self, source: Source, result: Result | None) -> None: ...  # None: outputs already there
    def failed(self, source: Source, message: str) -> None: ...


@dataclass
class Report:
    """A run over many inputs, plain or on Ray: what was done, what failed, what was already there."""

    results: list[Result] = field(default_factory=list)  # inputs done (a video that stopped early too)
    failures: list[dict[str, str]] = field(default_factory=list)  # {"input", "error"}
    skipped: list[str] = field(default_factory=list)  # files in folders that are not media
    existing: list[str] = field(default_factory=list)  # inputs whose outputs were complete (skip_existing)
    inputs: int = 0
    interrupted: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        """Inputs segmented now without any problem (a video that stopped early is done, not ok)."""
        return sum(r.ok for r in self.results)

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.results)

    @property
    def drops(self) -> int:
        return sum(r.drops for r in self.results)

    def add(self, result: Result) -> None:
        """A finished input; its error (a failed input, or a video cut short) becomes a failure."""
        if result.frames or not result.error:
            self.results.append(result)
        if result.error:
            self.failures.append({"input": result.input, "error": result.error})

    def as_dict(self) -> dict:
        return {
            "inputs": self.inputs,
            "ok": self.ok,
            "failed": len(self.failures),
            "skipped": len(self.skipped),
            "existing": len(self.existing),
            "frames": self.frames,
            "drops": self.drops,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "results": [r.as_dict() for r in self.results],
            "failures": self.failures,
            "skipped_files": self.skipped,
        }


def run_sources(
    seg: Runner,
    discovery: Discovery,
    out_dir: Path,
    options: JobOptions = JobOptions(),
    events: RunEvents = RunEvents(),
    skip_existing: bool = False,
) -> Report:
    """Segment every discovered input in order; failures are collected, never fatal. With
    ``skip_existing``, inputs whose outputs are all there are not recomputed (a killed job resumes)."""
    started = time.perf_counter()
    painter = Painter(seg.meta, options.alpha)
    report = Report(skipped=list(discovery.skipped), inputs=len(discovery.items))
    events.started(discovery)
    for source in discovery.items:
        if skip_existing and outputs_complete(source, out_dir, options):
            report.existing.append(str(source))
            events.finished(source, None)
            continue
        try:
            if source.kind not in (IMAGE, BAD):
                events.video_started(source)
            on_record = partial(events.record, source)
            result = process(seg, source, options, out_dir, painter, partial(events.frame, source), None, on_record)
        except KeyboardInterrupt as exc:
            report.interrupted = interrupt_name(exc)
            break
        except SegtoolError as exc:
            report.add(Result(str(source), "video" if source.kind not in (IMAGE, BAD) else "image", error=str(exc)))
            events.failed(source, str(exc))
            continue
        report.add(result)
        if result.kind == "image":
            events.record(source, frame_record(result.input, 1, 0.0, result.classes))
        events.finished(source, result)
        if result.error:
            events.failed(source, result.error)
        if result.interrupted:
            report.interrupted = result.interrupted
            break
    report.seconds = time.perf_counter() - started
    return report


def iter_images(
    sources: list[str], limit: int | None = None, on_error: Callable[[str, str], None] = lambda name, message: None
) -> Iterator[tuple[str, np.ndarray]]:
    """(name, BGR image) from images, folders, globs and video frames, at most ``limit`` in all.

    Inputs that cannot be read are passed to ``on_error`` and skipped.
    """
    count = 0
    for item in expand(sources).items:
        if limit and count >= limit:
            return
        try:
            if item.kind == BAD:
                raise InputError(item.problem)
            if item.kind == IMAGE:
                image = read_image(str(item.location))
                count += 1
                yield str(item), image
                continue
            with video_module().VideoSource(item.location) as video:
                for k, frame in enumerate(video.frames(None if not limit else limit - count)):
                    count += 1
                    yield f"{item}#{k}", frame
        except InputError as exc:
            on_error(str(item), str(exc))
