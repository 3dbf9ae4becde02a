"""`segtool eval`: mIoU and pixel accuracy of an exported model on VOC-format data."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import Progress
from rich.table import Table

from segtool.runtime import Segmenter, SegtoolError
from segtool.runtime.evaluation import evaluate, voc_samples

from .console import err, error_line, out


def eval_model(
    model: Path = typer.Argument(..., help="Exported .onnx model."),
    data: Path = typer.Option(..., "--data", help="VOC-format folder (JPEGImages/, SegmentationClass/, ImageSets/)."),
    split: str = typer.Option("val", help="ImageSets/Segmentation/<split>.txt."),
    limit: int = typer.Option(None, min=1, help="Evaluate the first N images only."),
    resize: str = typer.Option("520", help="Short side for evaluation (torchvision's protocol), or 'none'."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or tensorrt."),
    strict: bool = typer.Option(False, help="Stop at the first bad sample instead of counting it."),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON."),
):
    """Measure mIoU / pixel accuracy (255 ignored, one confusion matrix over the dataset)."""
    short = None if resize.lower() == "none" else int(resize) if resize.isdigit() else None
    if short is None and resize.lower() != "none":
        raise SegtoolError(f"--resize takes a number or 'none' (got {resize!r})", 2)
    seg = Segmenter(model, device=device)
    samples = voc_samples(data, split, limit)
    with Progress(console=err, disable=json_out) as progress:
        task = progress.add_task("eval", total=len(samples))
        result = evaluate(seg, samples, short, strict, on_image=lambda _: progress.advance(task))
    report = result.as_dict() | {"model": str(model), "provider": seg.provider, "weights": seg.meta.weights_label,
                                 "protocol": f"short side {short}, bilinear/area image, nearest mask" if short
                                 else "original resolution", "ignore_index": 255}
    if json_out:
        print(json.dumps(report, indent=2))
    else:
        table = Table(title=f"per-class IoU ({report['protocol']}, label 255 ignored)", title_justify="left")
        table.add_column("class")
        table.add_column("IoU %", justify="right")
        for name, value in report["per_class_iou"].items():
            table.add_row(name, "-" if value is None else f"{100 * value:.1f}")
        out.print(table)
        out.print(f"mIoU {100 * report['miou']:.2f}  pixel accuracy {100 * report['pixel_accuracy']:.2f}  "
                  f"({report['images']} images, {report['images_per_s']:.2f} images/s on {seg.provider}, "
                  f"{seg.meta.weights_label})", markup=False)
    for problem in result.problems:
        error_line(problem["error"])
    if result.problems:
        error_line(f"{len(result.problems)} of {len(samples)} sample(s) skipped")
        raise typer.Exit(1)
