"""`segtool run`: images, folders, globs, videos, streams and cameras in; label PNGs, masks, overlays
and videos out. Its flags, how they become ``JobOptions``, how a run is shown as it happens
(progress, one line per input, the summary), and the ``--ray`` branch. The job layer does the work."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Annotated, Optional

import cv2
import typer
from rich import progress as p

from segtool.runtime import JobOptions, Segmenter, expand, run_sources
from segtool.runtime.errors import UsageError
from segtool.runtime.files.images import DEFAULT_MAX_PIXELS, ensure_writable_dir
from segtool.runtime.files.pictures import IMAGE_KINDS, Painter
from segtool.runtime.files.preview import Preview, parse_address
from segtool.runtime.files.publish import Publisher, check_targets
from segtool.runtime.files.sources import BAD, IMAGE, Discovery, Source
from segtool.runtime.files.video_settings import (
    CODECS,
    DEFAULT_PRESET,
    PRESETS,
    QUALITY,
    MissingVideo,
    Reconnect,
    VideoOutput,
    video_module,
)
from segtool.runtime.jobs import Report, Result, RunEvents, outputs_complete
from segtool.runtime.model.engines import with_profile
from segtool.scale.ray_batch import MANIFEST, connect, run_ray  # imports Ray only when called

from .common import (
    AGREEMENT_TARGET,
    INTERRUPTED,
    Device,
    JsonOut,
    MaxSize,
    MinAgreementOpt,
    OutDir,
    PrecisionOpt,
    default_model,
    error_line,
    format_shares,
    gui_available,
    open_model,
    parse_kinds,
    parse_size,
    policy,
    progress_bar,
    random_tag,
    say,
)

Opt = typer.Option


SAVE_HELP = "Comma list of labels,mask,overlay,side-by-side (default: images labels,mask,overlay; videos overlay)."


Sources = Annotated[Optional[list[str]], typer.Argument(help="Images, folders, globs, videos or stream URLs.")]


Cameras = Annotated[Optional[list[int]], Opt("--camera", min=0, help="Camera index to read (repeatable).")]


Recursive = Annotated[bool, Opt("--recursive", "-r", help="Look into sub-folders of folders.")]


Model = Annotated[
    Optional[Path],
    Opt("--model", "-m", help="Exported .onnx model [default: models/fcn_resnet50.onnx, or the one .onnx in models/]."),
]


Alpha = Annotated[float, Opt(min=0.0, max=1.0, help="Mask weight in the overlay.")]


Size = Annotated[Optional[str], Opt(help="Infer at exactly WIDTHxHEIGHT (e.g. 640x360).")]


Save = Annotated[Optional[str], Opt(help=SAVE_HELP)]


Frames = Annotated[bool, Opt("--frames", help="Videos: also write a label PNG per frame.")]


Batch = Annotated[int, Opt(min=1, help="Videos: frames per inference call.")]


MaxFrames = Annotated[Optional[int], Opt("--max-frames", min=1, help="Videos: stop after N frames.")]


Show = Annotated[bool, Opt("--show", help="Show video overlays in a window (needs an OpenCV GUI build).")]


Codec = Annotated[str, Opt("--codec", help=f"Videos: {'|'.join(CODECS)} (H.264 plays everywhere; NVENC if it opens).")]


Quality = Annotated[
    Optional[int],
    Opt("--quality", help="Videos: constant quality, lower is better: CRF for h264/hevc/vp9 [default: "
        + "/".join(str(QUALITY[c][0]) for c in CODECS[:3]) + f"], quantizer 1-31 for mpeg4 [default: "
        f"{QUALITY['mpeg4'][0]}]."),
]  # fmt: skip


Preset = Annotated[
    Optional[str],
    Opt(
        "--preset",
        help=f"Videos: encoder speed, {PRESETS[0]} .. {PRESETS[-1]} (x264 names) [default: {DEFAULT_PRESET}].",
    ),
]


OutSize = Annotated[
    Optional[str], Opt("--out-size", help="Videos: paint and encode at WIDTHxHEIGHT [default: the input's size].")
]


PreviewAt = Annotated[
    Optional[str],
    Opt(
        "--preview", metavar="[HOST:]PORT", help="Serve the live overlay as an MJPEG page (host 127.0.0.1 by default)."
    ),
]


Cache = Annotated[bool, Opt("--cache", help="CPU: keep the optimized graph beside the model.")]


Reconnecting = Annotated[
    bool,
    Opt("--reconnect/--no-reconnect", help="Streams and cameras: reopen a source that drops or stalls (files: never)."),
]


ReconnectTries = Annotated[
    int,
    Opt(
        "--reconnect-tries",
        min=1,
        help="Streams and cameras: give up after N failed tries in a row (1, 2, 4 .. 30 s apart).",
    ),
]


StallTimeout = Annotated[
    float, Opt("--stall-timeout", min=0.1, help="Streams: seconds without data that count as a drop.")
]


SegmentMinutes = Annotated[
    Optional[float],
    Opt("--segment-minutes", min=0.0, help="Videos: a new file every N minutes (<stem>_overlay-0001.mp4, ...)."),
]


Publish = Annotated[
    Optional[list[str]],
    Opt(
        "--publish",
        metavar="TARGET",
        help="One JSON line per frame (source, frame, time, class shares) to - (stdout), a file, or "
        "mqtt://HOST[:PORT]/TOPIC (repeatable).",
    ),
]


MaxPixels = Annotated[int, Opt("--max-pixels", min=0, help="Refuse images above N pixels, from the header (0: off).")]


Tile = Annotated[
    Optional[int], Opt("--tile", min=64, help="Infer in overlapping NxN windows (default: only if needed).")
]


Ray = Annotated[Optional[str], Opt("--ray", help="Run on Ray: local, auto (ray start), or ray://host:port.")]


Actors = Annotated[int, Opt("--num-actors", min=1, help="--ray: model actors.")]


ActorThreads = Annotated[int, Opt("--actor-threads", min=1, help="--ray: intra-op threads per actor.")]


ActorGpus = Annotated[float, Opt("--gpus-per-actor", min=0.0, help="--ray: GPUs per actor (GPU clusters).")]


SkipExisting = Annotated[bool, Opt("--skip-existing", help="Skip inputs whose outputs are all there (resume).")]


Quiet = Annotated[bool, Opt("--quiet", "-q", help="No progress bars or per-input lines.")]


def job_options(save: str | None, frames: bool, max_size: int | None, size: str | None, batch: int,
                max_frames: int | None, alpha: float, max_pixels: int, tile: int | None,
                video_output: VideoOutput = VideoOutput()) -> JobOptions:  # fmt: skip
    """--save lists what to write for images and videos; --frames adds per-frame label PNGs to videos."""
    kinds = parse_kinds(save, IMAGE_KINDS, "--save") if save else None
    target = parse_size(size)
    if target and max_pixels and target[0] * target[1] > max_pixels:
        raise UsageError(f"--size {size} is {target[0] * target[1] / 1e6:g} MP, over --max-pixels {max_pixels}")
    video_kinds = kinds or JobOptions.video_kinds
    if frames and "labels" not in video_kinds:
        video_kinds = (*video_kinds, "labels")
    video_max_size = None if max_size == 0 else JobOptions.video_max_size  # --max-size 0: full resolution
    return JobOptions(image_kinds=kinds or JobOptions.image_kinds, video_kinds=video_kinds, max_size=max_size or None,
                      video_max_size=video_max_size,
                      size=target, batch=batch, max_frames=max_frames, alpha=alpha,
                      max_pixels=max_pixels or None, tile=tile, video_output=video_output)  # fmt: skip


def video_output(
    codec: str, quality: int | None, preset: str | None, out_size: str | None, segment_minutes: float | None = None
) -> VideoOutput:
    """--codec, --quality, --preset, --out-size and --segment-minutes, checked together."""
    try:
        size = parse_size(out_size)
    except UsageError:
        raise UsageError(f"--out-size takes WIDTHxHEIGHT, e.g. 1280x720 (got {out_size!r})") from None
    if segment_minutes is not None and not segment_minutes > 0:
        raise UsageError(f"--segment-minutes takes a number of minutes above 0 (got {segment_minutes:g})")
    segment = segment_minutes * 60 if segment_minutes else None
    return VideoOutput(codec=codec, quality=quality, preset=preset, size=size, segment=segment)


WINDOW = "segtool"


class ConsoleEvents(RunEvents):
    def __init__(self, tag: str, quiet: bool, to_stderr: bool, painter: Painter | None = None,
                 preview: Preview | None = None, publisher: Publisher | None = None):  # fmt: skip
        self.tag, self.quiet, self.to_stderr, self.painter = tag, quiet, to_stderr, painter  # painter: --show
        self.preview = preview  # --preview: handed the latest frame, painted only for a viewer
        self.publisher = publisher  # --publish: every frame's record
        self.progress = progress_bar(disable=quiet or to_stderr)
        self.images_task: p.TaskID | None = None
        self.video_task = p.TaskID(0)

    def started(self, discovery: Discovery) -> None:
        images = sum(item.kind in (IMAGE, BAD) for item in discovery.items)
        self.progress.start()
        if images > 1:
            self.images_task = self.progress.add_task("images", total=images, rate="")

    def video_started(self, source: Source) -> None:
        self.video_task = self.progress.add_task(str(source), total=None, rate="")

    def frame(self, source, done, total, image, labels) -> None:
        if self.preview:
            self.preview.publish(image, labels)
        elapsed = self.progress.tasks[-1].elapsed or 0.0
        self.progress.update(
            self.video_task, completed=done, total=total, rate=f"{done / elapsed:.2f} FPS" if elapsed else ""
        )
        if self.painter:
            cv2.imshow(WINDOW, self.painter.compose(image, labels, ("overlay",))["overlay"])
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                raise KeyboardInterrupt

    def record(self, source: Source, record: dict) -> None:
        if self.publisher:
            self.publisher.publish(record)

    def _advance(self, source: Source) -> None:
        if self.images_task is not None and source.kind in (IMAGE, BAD):
            self.progress.advance(self.images_task)

    def finished(self, source: Source, result: Result | None) -> None:
        self._advance(source)
        if self.quiet or result is None:  # None: outputs already there (--skip-existing)
            return
        if result.kind == "video":  # FPS only for video
            timing = f"{result.frames} frames in {result.seconds:.1f} s, {result.fps:.2f} FPS"
            timing += f", {result.drops} drop(s)" if result.drops else ""
        else:
            timing = f"{result.seconds:.2f} s" + (f", tiled {result.tiled}px" if result.tiled else "")
        written = ", ".join(result.outputs.values())
        say(f"{result.input}: {format_shares(result.classes)}{self.tag} | {timing} -> {written}", self.to_stderr)

    def failed(self, source: Source, message: str) -> None:
        self._advance(source)
        if source.kind not in (IMAGE, BAD) and not self.progress.tasks[-1].completed:  # no frame: no bar
            self.progress.remove_task(self.video_task)
        if not self.quiet:
            error_line(message)


def summarize(report: Report, where: str, tag: str, quiet: bool, to_stderr: bool) -> None:
    """The closing lines of every run, plain or on Ray: counts, time, rate, then the failures."""
    if not quiet:
        rate = f", {report.frames / report.seconds:.2f} FPS" if report.seconds and any(
            r.kind == "video" for r in report.results) else ""  # fmt: skip
        extra = f", {len(report.skipped)} non-media file(s) skipped" if report.skipped else ""
        extra += f", {len(report.existing)} already done" if report.existing else ""
        extra += f", {report.drops} stream drop(s) reconnected" if report.drops else ""
        head = f"interrupted ({report.interrupted}): " if report.interrupted else ""
        say(f"{head}{report.inputs} input(s): {report.ok} ok, {len(report.failures)} failed{extra} "
            f"in {report.seconds:.1f} s{rate} on {where}{tag}", to_stderr)  # fmt: skip
    if report.failures:
        error_line(f"{len(report.failures)} of {report.inputs} input(s) failed: "
                   + ", ".join(f["input"] for f in report.failures))  # fmt: skip


def run_on_ray(model: Path, discovery: Discovery, out_dir: Path, options: JobOptions, address: str, device: str,
               actors: int, threads: int, gpus: float, skip_existing: bool, quiet: bool) -> Report:  # fmt: skip
    """The same job on a Ray cluster, with one progress bar on the driver; failures are printed as
    the manifest rows come back."""
    missing = next((name for name in ("ray", "pyarrow") if importlib.util.find_spec(name) is None), None)
    if missing:
        raise UsageError(f"--ray needs {missing}: pip install 'segtool[ray]'")
    todo = [s for s in discovery.items if not (skip_existing and outputs_complete(s, out_dir, options))]
    connect(address)
    with progress_bar(disable=quiet) as bar:
        task = bar.add_task(f"ray {address}", total=len(todo), rate="")
        failed = 0

        def on_row(row: dict) -> None:
            nonlocal failed
            failed += bool(row["error"])
            elapsed = bar.tasks[0].elapsed or 0.0
            done = bar.tasks[0].completed + 1
            bar.update(task, advance=1, rate=f"{failed} failed, {done / elapsed:.2f}/s" if elapsed else "")
            if row["error"] and not quiet:
                error_line(row["error"])

        report = run_ray(model, todo, out_dir, options, device, actors, threads, gpus, on_row)
    report.inputs, report.skipped = len(discovery.items), list(discovery.skipped)
    report.existing = [str(s) for s in discovery.items if s not in todo]
    return report


def run(
    sources: Sources = None,
    camera: Cameras = None,
    recursive: Recursive = False,
    model: Model = None,
    out_dir: OutDir = Path("segtool-out"),
    device: Device = "auto",
    alpha: Alpha = 0.5,
    max_size: MaxSize = None,
    size: Size = None,
    save: Save = None,
    frames: Frames = False,
    batch: Batch = 1,
    max_frames: MaxFrames = None,
    show: Show = False,
    codec: Codec = "h264",
    quality: Quality = None,
    preset: Preset = None,
    out_size: OutSize = None,
    preview: PreviewAt = None,
    reconnect: Reconnecting = True,
    reconnect_tries: ReconnectTries = Reconnect.tries,
    stall_timeout: StallTimeout = Reconnect.stall,
    segment_minutes: SegmentMinutes = None,
    publish: Publish = None,
    cache: Cache = False,
    precision: PrecisionOpt = "auto",
    min_agreement: MinAgreementOpt = AGREEMENT_TARGET,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    tile: Tile = None,
    ray: Ray = None,
    num_actors: Actors = 2,
    actor_threads: ActorThreads = 1,
    gpus_per_actor: ActorGpus = 0.0,
    skip_existing: SkipExisting = False,
    quiet: Quiet = False,
    json_out: JsonOut = False,
):
    """Segment images, folders, globs, videos, streams and cameras."""
    if not sources and not camera:
        raise UsageError("nothing to segment: give images, folders, globs, videos, URLs or --camera N")
    output = video_output(codec, quality, preset, out_size, segment_minutes)
    options = job_options(save, frames, max_size, size, batch, max_frames, alpha, max_pixels, tile, output)
    keep_open = Reconnect(tries=reconnect_tries, stall=stall_timeout) if reconnect else None
    options = dataclasses.replace(options, reconnect=keep_open)
    if publish and ray:
        raise UsageError("--publish sends the results of a run on this machine: it cannot be combined with --ray")
    if publish and json_out and "-" in publish:
        raise UsageError("--publish - and --json both write to stdout: choose one")
    check_targets(publish or [])
    to_stderr = json_out or "-" in (publish or [])  # stdout holds JSON: the lines for people go to stderr
    if show and not gui_available():
        raise UsageError("--show needs OpenCV with GUI support (opencv-python, not -headless) and a display")
    address = parse_address(preview) if preview else None
    if address and ray:
        raise UsageError("--preview shows a run on this machine: it cannot be combined with --ray")
    model = model or default_model()
    device = with_profile(device, options.size, batch)  # TensorRT: an engine built for --size, once
    seg = open_model(Segmenter, model, device=device, cache=cache, policy=policy(precision, min_agreement))
    out_dir = ensure_writable_dir(out_dir)
    discovery = expand(sources or [], recursive, camera, exclude=out_dir)
    if not discovery.items:
        raise UsageError(f"no image or video found ({len(discovery.skipped)} other file(s) skipped)")
    videos = [item for item in discovery.items if item.kind not in (IMAGE, BAD)]
    try:
        if videos:
            video_module()  # PyAV, imported only where there is a video (an image-only install has none)
    except MissingVideo as exc:
        raise MissingVideo(f"{videos[0]}{f' and {len(videos) - 1} more' if len(videos) > 1 else ''}: {exc}") from None
    tag = random_tag(seg.meta.random_weights)
    undelivered: list[str] = []  # --publish: targets that lost messages
    identity = {"model": str(seg.path), "provider": seg.provider, "weights": seg.meta.weights_label,
                "random_weights": seg.meta.random_weights}  # fmt: skip
    if ray:
        args = (ray, device, num_actors, actor_threads, gpus_per_actor, skip_existing, quiet or json_out)
        report = run_on_ray(model, discovery, out_dir, options, *args)
        where = f"Ray ({ray}, {num_actors} actor(s) x {actor_threads} thread(s)) -> {out_dir / MANIFEST}"
        identity["manifest"] = str(out_dir / MANIFEST)
    else:
        with contextlib.ExitStack() as cleanup:  # closed in reverse: progress bar, preview, publisher
            publisher = Publisher(publish or [])
            cleanup.callback(lambda: undelivered.extend(publisher.close()))
            live = Preview(*address, painter=Painter(seg.meta, alpha)) if address else None
            if live:
                cleanup.callback(live.close)
                say(f"preview: {live.url} (live overlay, MJPEG)", to_stderr=True)
            events = ConsoleEvents(tag, quiet, to_stderr, Painter(seg.meta, alpha) if show else None, live, publisher)
            cleanup.callback(events.progress.stop)
            report = run_sources(seg, discovery, out_dir, options, events, skip_existing)
        where = seg.provider
    summarize(report, where, tag, quiet, to_stderr)
    for problem in undelivered:
        error_line(problem)
    if json_out:
        print(json.dumps(report.as_dict() | identity, indent=2))
    if report.interrupted:
        raise typer.Exit(INTERRUPTED[report.interrupted])
    if report.failures or undelivered:
        raise typer.Exit(1)
