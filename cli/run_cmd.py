"""`segtool run`: images in, label PNGs, colour masks and overlays out."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from segtool.runtime import Segmenter, SegtoolError, class_shares, read_image
from segtool.runtime.imagefiles import ensure_writable_dir
from segtool.runtime.outputs import Painter, save_image_outputs

from .console import err, error_line, format_shares, out

DEFAULT_MODEL = Path("models/fcn_resnet50.onnx")


def segment_images(seg: Segmenter, paths: list[Path], out_dir: Path, alpha: float, max_size: int | None,
                   report=None) -> dict:
    """Segment each image and write its outputs; a bad image is recorded and the rest go on."""
    painter = Painter(seg.meta, alpha)
    results, failures = [], []
    for path in paths:
        started = time.perf_counter()
        try:
            image = read_image(path)
            labels = seg.segment(image, max_size=max_size)
            files = save_image_outputs(painter, out_dir, path.stem, image, labels)
        except SegtoolError as exc:
            failures.append({"input": str(path), "error": str(exc)})
            error_line(str(exc))
            continue
        shares = class_shares(labels, seg.meta.classes)
        result = {"input": str(path), "height": int(labels.shape[0]), "width": int(labels.shape[1]),
                  "seconds": round(time.perf_counter() - started, 4), "classes": shares, "outputs": files}
        results.append(result)
        if report:
            report(result)
    return {"model": str(seg.path), "provider": seg.provider, "weights": seg.meta.weights_label,
            "random_weights": seg.meta.random_weights, "images": results, "failures": failures}


def run(
    sources: list[Path] = typer.Argument(..., help="Images to segment."),
    model: Path = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Exported .onnx model."),
    out_dir: Path = typer.Option(Path("segtool-out"), "--out", "-o", help="Output folder."),
    device: str = typer.Option("auto", help="auto (CUDA if it starts, else CPU), cpu, cuda or tensorrt."),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="Mask weight in the overlay."),
    max_size: int = typer.Option(None, "--max-size", min=1, help="Infer with the long side at most N pixels."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
):
    """Segment images: writes <stem>_labels.png (paletted), <stem>_mask.png, <stem>_overlay.jpg."""
    seg = Segmenter(model, device=device)
    out_dir = ensure_writable_dir(out_dir)
    suffix = " [RANDOM WEIGHTS]" if seg.meta.random_weights else ""

    def report(result):
        line = f"{result['input']}: {format_shares(result['classes'])}{suffix}"
        (err if json_out else out).print(line, markup=False)

    summary = segment_images(seg, list(sources), out_dir, alpha, max_size, report)
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        done = len(summary["images"])
        out.print(f"{done} image(s) segmented on {seg.provider} -> {out_dir}/", markup=False)
    if summary["failures"]:
        error_line(f"{len(summary['failures'])} of {len(sources)} input(s) failed: "
                   + ", ".join(f["input"] for f in summary["failures"]))
        raise typer.Exit(1)
