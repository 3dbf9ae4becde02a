"""`segtool eval`: mIoU and pixel accuracy of an exported model on VOC-format data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import Progress
from rich.table import Table

from segtool.runtime import Segmenter
from segtool.runtime.errors import UsageError
from segtool.runtime.tools.evaluation import evaluate, voc_samples

from .common import Device, JsonOut, ModelArg, err, error_line, open_model, out, say

Opt = typer.Option


def eval_model(
    model: ModelArg,
    data: Annotated[
        Path,
        Opt(
            "--data",
            help="VOC-format folder (JPEGImages/, SegmentationClass/, ImageSets/). Masks: "
            "a paletted or greyscale PNG's pixel is its class index (the palette is not read; "
            "255 ignored), an RGB PNG is read through the model's palette.",
        ),
    ],
    split: Annotated[str, Opt(help="ImageSets/Segmentation/<split>.txt.")] = "val",
    limit: Annotated[Optional[int], Opt(min=1, help="Evaluate the first N images only.")] = None,
    resize: Annotated[str, Opt(help="Short side for evaluation (torchvision's protocol), or 'none'.")] = "520",
    device: Device = "auto",
    strict: Annotated[bool, Opt(help="Stop at the first bad sample instead of skipping it.")] = False,
    reduce_labels: Annotated[
        Optional[bool],
        Opt(
            "--reduce-labels/--no-reduce-labels",
            help="Masks as Hugging Face's do_reduce_labels (mmseg's reduce_zero_label) trained on them: 0 "
            "ignored, other indices down by one. Default: what the model file records (export/adopt read it "
            "from preprocessor_config.json or pipeline.json).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOut = False,
):
    """Measure mIoU / pixel accuracy (255 ignored, one confusion matrix over the dataset)."""
    if resize.lower() != "none" and not resize.isdigit():
        raise UsageError(f"--resize takes a number or 'none' (got {resize!r})")
    short = None if resize.lower() == "none" else int(resize)
    seg = open_model(Segmenter, model, device=device)
    samples = voc_samples(data, split, limit)
    recorded = bool(seg.meta.extra.get("reduce_labels"))
    reduce = recorded if reduce_labels is None else reduce_labels
    if reduce or recorded:
        why = "the model file records it" if reduce_labels is None else f"--{'' if reduce else 'no-'}reduce-labels"
        say(
            f"masks: reduce_labels {'on' if reduce else 'off'} ({why}): "
            + ("0 ignored, other indices down by one" if reduce else "indices as written"),
            to_stderr=True,
        )
    with Progress(console=err, disable=json_out) as progress:
        task = progress.add_task("eval", total=len(samples))
        result = evaluate(seg, samples, short, strict, on_image=lambda _: progress.advance(task), reduce=reduce)
    protocol = f"short side {short}, bilinear/area image, nearest mask" if short else "original resolution"
    report = result.as_dict() | {
        "model": str(model),
        "provider": seg.provider,
        "weights": seg.meta.weights_label,
        "protocol": protocol,
        "ignore_index": 255,
        "reduce_labels": reduce,
    }
    if json_out:
        print(json.dumps(report, indent=2))
    elif result.images:
        out.print(class_iou_table(report["per_class_iou"], protocol))
        say(
            f"mIoU {100 * report['miou']:.2f}  pixel accuracy {100 * report['pixel_accuracy']:.2f}  "
            f"({report['images']} images, {report['images_per_s']:.2f} images/s on {seg.provider}, "
            f"{seg.meta.weights_label})"
        )
    for problem in result.problems:
        error_line(problem["error"])
    if not result.images:
        error_line(f"no usable sample among {len(samples)} in {split}: nothing evaluated")
    elif result.problems:
        error_line(f"{len(result.problems)} of {len(samples)} sample(s) skipped")
    if result.problems or not result.images:
        raise typer.Exit(1)


def class_iou_table(per_class: dict[str, float | None], protocol: str) -> Table:
    table = Table(title=f"per-class IoU ({protocol}, label 255 ignored)", title_justify="left")
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    for name, value in per_class.items():
        table.add_row(name, "-" if value is None else f"{100 * value:.1f}")
    return table
