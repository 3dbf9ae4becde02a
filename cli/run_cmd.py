"""`segtool run`: images, folders, globs, videos, streams and cameras in; label PNGs, masks, overlays
and videos out. Flags become ``JobOptions``; the job layer does the work."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from segtool.runtime import Segmenter, expand, run_sources
from segtool.runtime.errors import UsageError
from segtool.runtime.imagefiles import DEFAULT_MAX_PIXELS, ensure_writable_dir
from segtool.runtime.outputs import Painter

from . import run_options as o
from .console import gui_available, random_tag
from .modelfile import DEFAULT_MODEL, open_model
from .options import Device, JsonOut, MaxSize, OutDir
from .run_events import ConsoleEvents
from .run_ray import run_on_ray

INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}


def run(
    sources: o.Sources = None,
    camera: o.Cameras = None,
    recursive: o.Recursive = False,
    model: o.Model = DEFAULT_MODEL,
    out_dir: OutDir = Path("segtool-out"),
    device: Device = "auto",
    alpha: o.Alpha = 0.5,
    max_size: MaxSize = None,
    size: o.Size = None,
    save: o.Save = None,
    frames: o.Frames = False,
    batch: o.Batch = 1,
    max_frames: o.MaxFrames = None,
    show: o.Show = False,
    cache: o.Cache = False,
    max_pixels: o.MaxPixels = DEFAULT_MAX_PIXELS,
    tile: o.Tile = None,
    ray: o.Ray = None,
    num_actors: o.Actors = 2,
    actor_threads: o.ActorThreads = 1,
    gpus_per_actor: o.ActorGpus = 0.0,
    skip_existing: o.SkipExisting = False,
    quiet: o.Quiet = False,
    json_out: JsonOut = False,
):
    """Segment images, folders, globs, videos, streams and cameras."""
    if not sources and not camera:
        raise UsageError("nothing to segment: give images, folders, globs, videos, URLs or --camera N")
    options = o.job_options(save, frames, max_size, size, batch, max_frames, alpha, max_pixels, tile)
    if show and not gui_available():
        raise UsageError("--show needs OpenCV with GUI support (opencv-python, not -headless) and a display")
    seg = open_model(Segmenter, model, device=device, cache=cache)
    out_dir = ensure_writable_dir(out_dir)
    discovery = expand(sources or [], recursive, camera, exclude=out_dir)
    if not discovery.items:
        raise UsageError(f"no image or video found ({len(discovery.skipped)} other file(s) skipped)")
    if ray:
        args = (ray, device, num_actors, actor_threads, gpus_per_actor, skip_existing, quiet, json_out)
        return run_on_ray(model, discovery, out_dir, options, *args)
    painter = Painter(seg.meta, alpha) if show else None
    events = ConsoleEvents(random_tag(seg.meta.random_weights), quiet, json_out, painter)
    report = run_sources(seg, discovery, out_dir, options, events, skip_existing)
    events.summary(report, seg.provider)
    if json_out:
        identity = {"model": str(seg.path), "provider": seg.provider, "weights": seg.meta.weights_label}
        print(json.dumps(report.as_dict() | identity | {"random_weights": seg.meta.random_weights}, indent=2))
    if report.interrupted:
        raise typer.Exit(INTERRUPTED[report.interrupted])
    if report.failures:
        raise typer.Exit(1)
