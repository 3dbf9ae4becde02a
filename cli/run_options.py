"""The flags of `segtool run`, and how they become ``JobOptions``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.runtime import JobOptions
from segtool.runtime.errors import UsageError
from segtool.runtime.outputs import IMAGE_KINDS

from .options import parse_kinds, parse_size

Opt = typer.Option
SAVE_HELP = "Comma list of labels,mask,overlay,side-by-side (default: images labels,mask,overlay; videos overlay)."

Sources = Annotated[Optional[list[str]], typer.Argument(help="Images, folders, globs, videos or stream URLs.")]
Cameras = Annotated[Optional[list[int]], Opt("--camera", help="Camera index to read (repeatable).")]
Recursive = Annotated[bool, Opt("--recursive", "-r", help="Look into sub-folders of folders.")]
Model = Annotated[Path, Opt("--model", "-m", help="Exported .onnx model.")]
Alpha = Annotated[float, Opt(min=0.0, max=1.0, help="Mask weight in the overlay.")]
Size = Annotated[Optional[str], Opt(help="Infer at exactly WIDTHxHEIGHT (e.g. 640x360).")]
Save = Annotated[Optional[str], Opt(help=SAVE_HELP)]
Frames = Annotated[bool, Opt("--frames", help="Videos: also write a label PNG per frame.")]
Batch = Annotated[int, Opt(min=1, help="Videos: frames per inference call.")]
MaxFrames = Annotated[Optional[int], Opt("--max-frames", min=1, help="Videos: stop after N frames.")]
Show = Annotated[bool, Opt("--show", help="Show video overlays in a window (needs an OpenCV GUI build).")]
Cache = Annotated[bool, Opt("--cache", help="CPU: keep the optimized graph beside the model.")]
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
                max_frames: int | None, alpha: float, max_pixels: int, tile: int | None) -> JobOptions:  # fmt: skip
    """--save lists what to write for images and videos; --frames adds per-frame label PNGs to videos."""
    kinds = parse_kinds(save, IMAGE_KINDS, "--save") if save else None
    target = parse_size(size)
    if target and max_pixels and target[0] * target[1] > max_pixels:
        raise UsageError(f"--size {size} is {target[0] * target[1] / 1e6:g} MP, over --max-pixels {max_pixels}")
    video_kinds = kinds or JobOptions.video_kinds
    if frames and "labels" not in video_kinds:
        video_kinds = (*video_kinds, "labels")
    return JobOptions(image_kinds=kinds or JobOptions.image_kinds, video_kinds=video_kinds, max_size=max_size,
                      size=target, batch=batch, max_frames=max_frames, alpha=alpha,
                      max_pixels=max_pixels or None, tile=tile)  # fmt: skip
