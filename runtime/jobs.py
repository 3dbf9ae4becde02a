"""The job layer: every command, the HTTP server and the Ray batch run segmentation through here.

- ``segment_image`` / ``segment_video``: one input in, its pictures written, a result record out.
- ``run_sources``: many discovered inputs; a bad one is reported and the run goes on.
- ``iter_images``: images and video frames for ``compare``, ``eval``-style loops and int8
  calibration, skipping (and reporting) the ones that cannot be read.

Results are dataclasses with ``as_dict()`` for JSON, holding plain Python numbers.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from .errors import InputError, SegtoolError, Terminated
from .imagefiles import DEFAULT_MAX_PIXELS, decode_image, decoded_size, read_bytes, read_image
from .memory import auto_tile
from .outputs import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Painter, output_paths, save_pictures
from .postprocess import resize_labels
from .prefetch import Drain
from .preprocess import inference_size
from .segmenter import Segmenter, Size
from .sources import BAD, IMAGE, Discovery, Source, expand
from .video import VideoSink, VideoSource
from .visualize import class_counts, shares_from_counts

#: called after each video frame: (frames done, total if known, BGR frame, labels)
FrameCallback = Callable[[int, "int | None", np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class JobOptions:
    """What to compute and write for each input."""

    image_kinds: tuple[str, ...] = ("labels", "mask", "overlay")
    video_kinds: tuple[str, ...] = ("overlay",)  # "labels" here: one label PNG per frame in <stem>_frames/
    max_size: int | None = None  # long side at inference
    size: Size | None = None  # or exactly (width, height)
    batch: int = 1  # video frames per inference call
    max_frames: int | None = None
    alpha: float = 0.5
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # refuse larger images from their header (0/None: off)
    tile: int | None = None  # infer in overlapping tile x tile windows (segtool.runtime.tiling)
    auto_tile: bool = True  # without ``tile``: tile when whole-image inference would not fit in memory


@dataclass
class ImageResult:
    input: str
    height: int
    width: int
    seconds: float
    classes: dict[str, float]
    outputs: dict[str, str]
    tiled: int | None = None  # tile size when segmented window by window
    kind: str = "image"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class VideoResult:
    input: str
    frames: int
    fps_in: float
    width: int
    height: int
    seconds: float
    classes: dict[str, float]
    outputs: dict[str, str]
    interrupted: str = ""  # "", "SIGINT" or "SIGTERM"
    error: str = ""  # frames were written, but the video stopped decoding early
    kind: str = "video"

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"fps": round(self.fps, 3)}


@dataclass
class Segmented:
    """One image segmented in memory: its labels, the pictures asked for, class shares, time taken."""

    labels: np.ndarray
    pictures: dict[str, np.ndarray]
    classes: dict[str, float]
    seconds: float
    tiled: int | None = None  # tile size, when the image was segmented window by window


def choose_tile(image: np.ndarray, options: JobOptions) -> int | None:
    """``options.tile``, or (auto) a tile size when whole-image inference would exceed memory."""
    if options.tile or not options.auto_tile:
        return options.tile
    width, height = inference_size(image.shape[0], image.shape[1], options.max_size, options.size)
    return auto_tile(width * height)


def segment_array(seg: Segmenter, image: np.ndarray, options: JobOptions = JobOptions(),
                  painter: Painter | None = None, kinds=None) -> Segmented:  # fmt: skip
    """Segment a decoded BGR image and compose ``kinds`` (default: ``options.image_kinds``)."""
    started = time.perf_counter()
    tile = choose_tile(image, options)
    labels = seg.segment(image, max_size=options.max_size, size=options.size, tile=tile)
    kinds = options.image_kinds if kinds is None else kinds
    pictures = (painter or Painter(seg.meta, options.alpha)).compose(image, labels, kinds) if kinds else {}
    shares = shares_from_counts(class_counts(labels, len(seg.meta.classes)), seg.meta.classes)
    return Segmented(labels, pictures, shares, time.perf_counter() - started, tile)


def load_image(location: str, options: JobOptions) -> tuple[np.ndarray, tuple[int, int]]:
    """Read and decode an image file under the pixel limit (a JPEG at reduced size when ``max_size``
    allows); returns the image and the full (height, width) its labels are written at."""
    data = read_bytes(location)
    image = decode_image(data, location, max_pixels=options.max_pixels, reduce_to=options.max_size)
    return image, decoded_size(data, image)


def segment_and_save(seg: Segmenter, image: np.ndarray, full: tuple[int, int], stem: str, out_dir: Path,
                     options: JobOptions, painter: Painter) -> tuple[Segmented, dict[str, str]]:  # fmt: skip
    """Segment a loaded image and write its pictures; the label PNG at the ``full`` size."""
    done = segment_array(seg, image, options, painter)
    if "labels" in done.pictures and full != done.labels.shape:  # decoded at reduced size
        done.pictures["labels"] = resize_labels(done.labels, *full)
    paths = output_paths(out_dir, stem, options.image_kinds, IMAGE_SUFFIXES)
    return done, save_pictures(painter, done.pictures, paths)


def segment_image(seg: Segmenter, source: Source, out_dir: Path, options: JobOptions = JobOptions(),
                  painter: Painter | None = None) -> ImageResult:  # fmt: skip
    """Read, segment and write one still image; ``InputError``/``OutputError`` if it cannot be done."""
    started = time.perf_counter()
    image, full = load_image(str(source.location), options)
    done, written = segment_and_save(seg, image, full, source.stem, out_dir, options,
                                     painter or Painter(seg.meta, options.alpha))  # fmt: skip
    seconds = round(time.perf_counter() - started, 4)
    return ImageResult(str(source), full[0], full[1], seconds, done.classes, written, tiled=done.tiled)


class _FramesFolder:
    """<stem>_frames/ with one label PNG per frame, built beside the old one and swapped in whole."""

    def __init__(self, target: Path):
        self.target = target
        self.temp = target.with_name(f".{target.name}.partial")
        shutil.rmtree(self.temp, ignore_errors=True)
        self.temp.mkdir(parents=True)

    def path(self, index: int) -> Path:
        return self.temp / f"{index:06d}_labels.png"

    def commit(self) -> str:
        old = self.target.with_name(f".{self.target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.target.exists():
            self.target.rename(old)
        self.temp.rename(self.target)
        shutil.rmtree(old, ignore_errors=True)
        return str(self.target)

    def discard(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)


def segment_video(
    seg: Segmenter,
    source: Source,
    out_dir: Path,
    options: JobOptions = JobOptions(),
    painter: Painter | None = None,
    on_frame: FrameCallback | None = None,
) -> VideoResult:
    """Segment every frame of a video, stream or camera and write the chosen videos.

    Decoding runs ahead of inference (``Segmenter.segment_stream``); composing and encoding run
    behind it on a writer thread. Ctrl-C or SIGTERM stops early with the frames done finalized.
    """
    started = time.perf_counter()
    painter = painter or Painter(seg.meta, options.alpha)
    counts = np.zeros(len(seg.meta.classes), np.int64)
    with VideoSource(source.location) as video:
        total = (
            video.frame_count
            if not options.max_frames
            else min(video.frame_count or options.max_frames, options.max_frames)
        )
        sink = VideoSink(output_paths(out_dir, source.stem, options.video_kinds, VIDEO_SUFFIXES), video.fps)
        frames_dir = _FramesFolder(out_dir / f"{source.stem}_frames") if "labels" in options.video_kinds else None
        index = 0

        def write(item: tuple[np.ndarray, np.ndarray]) -> None:
            nonlocal index
            frame, labels = item
            pictures = painter.compose(frame, labels, options.video_kinds)
            sink.write(pictures)
            if frames_dir:
                save_pictures(painter, pictures, {"labels": frames_dir.path(index)})
            counts[:] += class_counts(labels, len(counts))[: len(counts)]
            index += 1

        writer = Drain(write)
        interrupted, failure, done = "", None, 0
        stream = seg.segment_stream(
            video.frames(options.max_frames), "bgr", options.max_size, options.size, options.batch
        )
        try:
            for item in stream:
                writer.put(item)
                done += 1
                if on_frame:
                    on_frame(done, total, *item)
        except KeyboardInterrupt as exc:
            interrupted = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        except SegtoolError as exc:
            failure = exc
        finally:
            stream.close()
        try:
            writer.close()
            if failure and not index:
                raise failure
            outputs = sink.close()
            if frames_dir:
                outputs["labels"] = frames_dir.commit()
        except BaseException:
            sink.discard()
            if frames_dir:
                frames_dir.discard()
            raise
        ended_early = video.ended_early and not (options.max_frames or interrupted)
        error = (
            str(failure)
            if failure
            else (
                f"{source}: stopped after {video.frames_read} of {video.frame_count} frames (a frame failed to "
                "decode, or the file is cut)"
                if ended_early
                else ""
            )
        )
        return VideoResult(
            str(source),
            index,
            float(video.fps),
            video.width,
            video.height,
            round(time.perf_counter() - started, 3),
            shares_from_counts(counts, seg.meta.classes),
            outputs,
            interrupted,
            error,
        )


def outputs_complete(source: Source, out_dir: Path, options: JobOptions) -> bool:
    """Every output of ``source`` is already there (writes are atomic, so present means whole)."""
    if source.kind == BAD or source.live:
        return False
    kinds, suffixes = (options.image_kinds, IMAGE_SUFFIXES) if source.kind == IMAGE else (options.video_kinds,
                                                                                            VIDEO_SUFFIXES)  # fmt: skip
    paths = list(output_paths(out_dir, source.stem, kinds, suffixes).values())
    if source.kind != IMAGE and "labels" in kinds:
        paths.append(out_dir / f"{source.stem}_frames")
    return bool(paths) and all(p.exists() and (p.is_dir() or p.stat().st_size > 0) for p in paths)


class RunEvents:
    """What a caller may want to hear about during ``run_sources``; every method is optional."""

    def started(self, discovery: Discovery) -> None: ...
    def video_started(self, source: Source) -> None: ...
    def frame(self, source: Source, done: int, total: int | None, image: np.ndarray, labels: np.ndarray) -> None: ...
    def finished(self, source: Source, result: ImageResult | VideoResult | None) -> None: ...  # None: existing
    def failed(self, source: Source, message: str) -> None: ...


@dataclass
class RunReport:
    results: list[ImageResult | VideoResult] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)  # inputs whose outputs were complete (skip_existing)
    inputs: int = 0
    interrupted: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        """Inputs done without any problem (a video that stopped early is done, but not ok), and
        inputs whose outputs were already complete."""
        return sum(not (isinstance(r, VideoResult) and r.error) for r in self.results) + len(self.existing)

    @property
    def frames(self) -> int:
        return sum(r.frames if isinstance(r, VideoResult) else 1 for r in self.results)

    def as_dict(self) -> dict:
        return {
            "inputs": self.inputs,
            "ok": self.ok,
            "failed": len(self.failures),
            "skipped": len(self.skipped),
            "existing": len(self.existing),
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "results": [r.as_dict() for r in self.results],
            "failures": self.failures,
            "skipped_files": self.skipped,
        }


def run_sources(
    seg: Segmenter,
    discovery: Discovery,
    out_dir: Path,
    options: JobOptions = JobOptions(),
    events: RunEvents = RunEvents(),
    skip_existing: bool = False,
) -> RunReport:
    """Segment every discovered input in order; failures are collected, never fatal. With
    ``skip_existing``, inputs whose outputs are all there are not recomputed (a killed job resumes)."""
    started = time.perf_counter()
    painter = Painter(seg.meta, options.alpha)
    report = RunReport(skipped=list(discovery.skipped), inputs=len(discovery.items))
    events.started(discovery)
    for source in discovery.items:
        result: ImageResult | VideoResult
        if skip_existing and outputs_complete(source, out_dir, options):
            report.existing.append(str(source))
            events.finished(source, None)
            continue
        try:
            if source.kind == BAD:
                raise InputError(source.problem)
            if source.kind == IMAGE:
                result = segment_image(seg, source, out_dir, options, painter)
            else:
                events.video_started(source)
                result = segment_video(seg, source, out_dir, options, painter, partial(events.frame, source))
        except KeyboardInterrupt as exc:
            report.interrupted = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
            break
        except SegtoolError as exc:
            report.failures.append({"input": str(source), "error": str(exc)})
            events.failed(source, str(exc))
            continue
        report.results.append(result)
        events.finished(source, result)
        if isinstance(result, VideoResult) and result.error:
            report.failures.append({"input": str(source), "error": result.error})
            events.failed(source, result.error)
        if isinstance(result, VideoResult) and result.interrupted:
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
            with VideoSource(item.location) as video:
                for k, frame in enumerate(video.frames(None if not limit else limit - count)):
                    count += 1
                    yield f"{item}#{k}", frame
        except InputError as exc:
            on_error(str(item), str(exc))
