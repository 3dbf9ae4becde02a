"""`segtool run`: every source a user has (images, folders, globs, videos, streams, cameras) in,
label PNGs, colour masks, overlays and videos out."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from segtool.runtime import Segmenter, SegtoolError
from segtool.runtime.imagefiles import ensure_writable_dir
from segtool.runtime.outputs import IMAGE_KINDS, Painter
from segtool.runtime.sources import IMAGE, MISSING, expand

from .console import err, error_line, format_shares, out
from .run_images import process_image
from .run_video import gui_available, process_video

DEFAULT_MODEL = Path("models/fcn_resnet50.onnx")
DEFAULT_IMAGE_KINDS = ("labels", "mask", "overlay")
DEFAULT_VIDEO_KINDS = ("overlay",)
INTERRUPTED = 130


def parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w > 0 and h > 0:
            return w, h
    except ValueError:
        pass
    raise SegtoolError(f"--size takes WIDTHxHEIGHT, e.g. 640x360 (got {text!r})", 2)


def parse_save(text: str | None, frames: bool) -> tuple[tuple[str, ...], set[str]]:
    """--save for images and for videos; --frames adds per-frame label PNGs to videos."""
    if text:
        kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
        unknown = [k for k in kinds if k not in IMAGE_KINDS]
        if unknown or not kinds:
            raise SegtoolError(f"--save takes a comma list of {', '.join(IMAGE_KINDS)} (got {text!r})", 2)
        image_kinds, video_kinds = kinds, set(kinds)
    else:
        image_kinds, video_kinds = DEFAULT_IMAGE_KINDS, set(DEFAULT_VIDEO_KINDS)
    return image_kinds, video_kinds | ({"labels"} if frames else set())


def make_progress(quiet: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[fps]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=err, disable=quiet, transient=False)


def run(
    sources: list[str] = typer.Argument(None, help="Images, folders, globs, video files or stream URLs."),
    camera: list[int] = typer.Option(None, "--camera", help="Camera index to read (repeatable)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders of folders."),
    model: Path = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Exported .onnx model."),
    out_dir: Path = typer.Option(Path("segtool-out"), "--out", "-o", help="Output folder."),
    device: str = typer.Option("auto", help="auto (CUDA if it starts, else CPU), cpu, cuda or tensorrt."),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="Mask weight in the overlay."),
    max_size: int = typer.Option(None, "--max-size", min=1, help="Infer with the long side at most N pixels."),
    size: str = typer.Option(None, "--size", help="Infer at exactly WIDTHxHEIGHT (e.g. 640x360)."),
    save: str = typer.Option(None, help="What to write: comma list of labels,mask,overlay,side-by-side "
                             "[images: labels,mask,overlay; videos: overlay]."),
    frames: bool = typer.Option(False, "--frames", help="Videos: also write a label PNG per frame."),
    batch: int = typer.Option(1, min=1, help="Videos: frames per inference call."),
    max_frames: int = typer.Option(None, "--max-frames", min=1, help="Videos: stop after N frames."),
    show: bool = typer.Option(False, "--show", help="Show overlays in a window (needs OpenCV GUI support)."),
    cache: bool = typer.Option(False, "--cache", help="CPU: keep the optimized graph beside the model for "
                               "faster start-up next time."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-image lines."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
):
    """Segment images, folders, globs, videos, streams and cameras."""
    if not sources and not camera:
        raise SegtoolError("nothing to segment: give images, folders, globs, videos, URLs or --camera N", 2)
    inference_size = parse_size(size)
    image_kinds, video_kinds = parse_save(save, frames)
    if show and not gui_available():
        raise SegtoolError("--show needs OpenCV with GUI support (opencv-python, not -headless) and a display", 2)
    seg = Segmenter(model, device=device, cache=cache)
    out_dir = ensure_writable_dir(out_dir)
    items = expand(sources or [], recursive, camera)
    painter = Painter(seg.meta, alpha)
    tag = " [RANDOM WEIGHTS]" if seg.meta.random_weights else ""
    say = err if json_out else out
    results, failures, interrupted = [], [], False
    started = time.perf_counter()

    def fail(where: str, message: str) -> None:
        failures.append({"input": where, "error": message})
        if not quiet:
            error_line(message)

    with make_progress(quiet or json_out) as progress:
        image_count = sum(item.kind == IMAGE for item in items)
        images_task = progress.add_task("images", total=image_count, fps="") if image_count > 1 else None
        for item in items:
            try:
                if item.kind == MISSING:
                    raise SegtoolError(f"{item}: no such file or folder, and no file matches it", 1)
                if item.kind == IMAGE:
                    result = process_image(seg, item, painter, out_dir, image_kinds, max_size, inference_size)
                    if images_task is not None:
                        progress.advance(images_task)
                else:
                    result = process_video(seg, item, painter, out_dir, video_kinds, progress, max_size,
                                           inference_size, batch, max_frames, show)
            except SegtoolError as exc:
                fail(str(item), str(exc))
                continue
            results.append(result)
            if result.get("error"):
                fail(str(item), result["error"])
            if not quiet:
                line = f"{result['input']}: {format_shares(result['classes'])}{tag}"
                if result["kind"] == "video":
                    line += (f" | {result['frames']} frames in {result['seconds']:.1f} s, {result['fps']:.2f} FPS"
                             f" on {seg.provider} -> {', '.join(result['outputs'].values())}")
                say.print(line, markup=False)
            if result.get("interrupted"):
                interrupted = True
                break
    seconds = time.perf_counter() - started
    frames_done = sum(r.get("frames", 1) for r in results)
    summary = {"model": str(seg.path), "provider": seg.provider, "weights": seg.meta.weights_label,
               "random_weights": seg.meta.random_weights, "frames": frames_done, "seconds": round(seconds, 3),
               "fps": round(frames_done / seconds, 3) if seconds else 0.0, "interrupted": interrupted,
               "results": results, "failures": failures}
    if json_out:
        print(json.dumps(summary, indent=2))
    if not quiet:
        say.print(f"{'interrupted: ' if interrupted else ''}{len(results)} input(s), {frames_done} frame(s) in "
                  f"{seconds:.1f} s ({summary['fps']:.2f} FPS) on {seg.provider} -> {out_dir}/{tag}", markup=False)
    if failures:
        error_line(f"{len(failures)} of {len(items)} input(s) failed: " + ", ".join(f["input"] for f in failures))
    if interrupted:
        raise typer.Exit(INTERRUPTED)
    if failures:
        raise typer.Exit(1)
