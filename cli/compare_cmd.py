"""`segtool compare`: agreement and speed of two exported variants on the same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import Progress

from segtool.runtime import Segmenter
from segtool.runtime.comparison import compare_models, iter_images

from .console import err, out


def compare(
    model_a: Path = typer.Argument(..., help="Reference model (A)."),
    model_b: Path = typer.Argument(..., help="Variant to check against A (B)."),
    images: list[str] = typer.Option(..., "--images", help="Images, folders, globs or videos (repeatable)."),
    limit: int = typer.Option(None, min=1, help="At most N images/frames."),
    max_size: int = typer.Option(None, "--max-size", min=1, help="Inference long side for both."),
    max_size_b: int = typer.Option(None, "--max-size-b", min=1, help="Inference long side for B only."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or tensorrt."),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON."),
):
    """Pixel agreement, mIoU of B against A's labels, logit differences, and each model's speed."""
    seg_a = Segmenter(model_a, device=device)
    seg_b = Segmenter(model_b, device=device, warn_random=False)
    with Progress(console=err, disable=json_out) as progress:
        task = progress.add_task("compare", total=limit)
        result = compare_models(seg_a, seg_b, iter_images(list(images), limit), max_size, max_size_b or max_size,
                                on_image=lambda _: progress.advance(task))
    report = result.as_dict() | {"a": str(model_a), "b": str(model_b), "provider": seg_a.provider,
                                 "a_precision": seg_a.meta.precision, "b_precision": seg_b.meta.precision}
    if json_out:
        print(json.dumps(report, indent=2))
        return
    logits = ("max |logit diff| n/a (a labels-output graph or different resolutions)"
              if report["max_abs_logit_diff"] is None else
              f"max |logit diff| {report['max_abs_logit_diff']:.4g}, mean {report['mean_abs_logit_diff']:.4g}")
    out.print(f"A {model_a} ({report['a_precision']}) vs B {model_b} ({report['b_precision']}) on "
              f"{report['images']} image(s), {seg_a.provider}", markup=False)
    out.print(f"  pixel agreement {100 * report['pixel_agreement']:.3f}%, mIoU of B vs A "
              f"{100 * report['miou_b_vs_a']:.2f}%, {logits}", markup=False)
    ratio = report["a_inference_ms_median"] / report["b_inference_ms_median"]
    out.print(f"  inference median: A {report['a_inference_ms_median']:.1f} ms, B {report['b_inference_ms_median']:.1f} ms "
              f"(B is {ratio:.2f}x as fast as A)", markup=False)
