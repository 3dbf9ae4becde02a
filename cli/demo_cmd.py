"""`segtool demo`: the quickstart's main job: export, then segment a sample image.

Offline (no pretrained weights to download) it says so loudly, falls back to random weights
in a separately named model file, and every output it writes is marked as random. That
fallback lives here only; `segtool export` never substitutes weights.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import typer

from segtool.runtime import Segmenter
from segtool.runtime.imagefiles import atomic_write_bytes, encode_image, ensure_writable_dir
from segtool.runtime.outputs import Painter
from segtool.runtime.sources import IMAGE, Source

from .console import err, format_shares, out
from .export_cmd import DEFAULT_OUTPUT, load_export_stage, run_export
from .run_images import process_image


def make_sample_image(height: int = 480, width: int = 720) -> np.ndarray:
    """A drawn street scene (sky, road, a car, a person): made here, so no photo is shipped."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = (np.array([235, 190, 120], np.float32) * (1 - y) + np.array([200, 200, 200], np.float32) * y)
    image = np.broadcast_to(sky, (height, width, 3)).astype(np.uint8).copy()  # BGR
    horizon = int(height * 0.6)
    image[horizon:] = (90, 90, 90)
    cv2.rectangle(image, (int(width * .1), int(height * .45)), (int(width * .45), int(height * .7)), (40, 40, 180), -1)
    for cx in (int(width * .17), int(width * .38)):
        cv2.circle(image, (cx, int(height * .7)), int(height * .05), (20, 20, 20), -1)
    px = int(width * .7)
    cv2.circle(image, (px, int(height * .35)), int(height * .04), (150, 180, 220), -1)
    cv2.rectangle(image, (px - 22, int(height * .4)), (px + 22, int(height * .62)), (120, 60, 30), -1)
    cv2.rectangle(image, (px - 18, int(height * .62)), (px + 18, int(height * .8)), (60, 40, 20), -1)
    return image


def ensure_model(model: Path, force: bool) -> Path:
    """The pretrained export if possible; else, loudly, a random-weights one beside it."""
    random_model = model.with_name(model.stem + "_random" + model.suffix)
    if model.is_file() and not force:
        err.print(f"using existing {model} (--force to export again)")
        return model
    load_export_stage()  # one clear line if segtool[export] is missing
    from segtool.export.weights import WeightsUnavailable

    try:
        run_export(model, "fcn_resnet50", "DEFAULT", 0, True, 1e-3, 0.999)
        return model
    except WeightsUnavailable as exc:
        err.rule("[bold red]PRETRAINED WEIGHTS UNAVAILABLE[/]")
        err.print(f"[red]{exc}[/]", markup=True)
        err.print("[bold red]The demo falls back to RANDOM weights: every output below is marked as made with "
                  "random weights and its labels are meaningless.[/]")
        err.rule()
    if random_model.is_file() and not force:
        err.print(f"using existing {random_model}")
        return random_model
    run_export(random_model, "fcn_resnet50", "random", 0, True, 1e-3, 0.999)
    return random_model


def demo(
    image: Path = typer.Argument(None, help="Image to segment (default: a drawn sample scene)."),
    out_dir: Path = typer.Option(Path("segtool-out"), "--out", "-o", help="Output folder."),
    model: Path = typer.Option(DEFAULT_OUTPUT, "--model", "-m", help="Where the exported model lives."),
    force: bool = typer.Option(False, help="Export again even if the model file exists."),
):
    """Export fcn_resnet50 (pretrained if downloadable, else loudly random) and segment an image."""
    out_dir = ensure_writable_dir(out_dir)
    model = ensure_model(model, force)
    if image is None:
        image = out_dir / "sample.jpg"
        atomic_write_bytes(image, encode_image(make_sample_image(), ".jpg"))
        err.print(f"made a sample image: {image}")
    seg = Segmenter(model)
    item = Source(IMAGE, str(image), Path(image).stem)
    result = process_image(seg, item, Painter(seg.meta), out_dir, ("labels", "mask", "overlay"))
    tag = " [RANDOM WEIGHTS]" if seg.meta.random_weights else ""
    out.print(f"{result['input']}: {format_shares(result['classes'])}{tag} (on {seg.provider})", markup=False)
    for kind, path in result["outputs"].items():
        out.print(f"  {kind:8} {path}", markup=False)
