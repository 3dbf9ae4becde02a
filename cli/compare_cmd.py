"""`segtool compare`: agreement and speed of two exported variants on the same inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import Progress

from segtool.runtime import Segmenter, iter_images
from segtool.runtime.model.choice import Policy
from segtool.runtime.tools.comparison import compare_models

from .common import Device, JsonOut, MaxSize, err, error_line, open_model, say

Opt = typer.Option


def compare(
    model_a: Annotated[Path, typer.Argument(help="Reference model (A).")],
    model_b: Annotated[Path, typer.Argument(help="Variant to check against A (B).")],
    images: Annotated[list[str], Opt("--images", help="Images, folders, globs or videos (repeatable).")],
    limit: Annotated[Optional[int], Opt(min=1, help="At most N images/frames.")] = None,
    max_size: MaxSize = None,
    max_size_b: Annotated[Optional[int], Opt("--max-size-b", min=1, help="Inference long side for B only.")] = None,
    device: Device = "auto",
    json_out: JsonOut = False,
):
    """Pixel agreement, mIoU of B against A's labels, logit differences, and each model's speed."""
    seg_a = open_model(Segmenter, model_a, flag=None, device=device, policy=Policy(precision="fp32"))
    same = seg_a.choice.device if seg_a.choice else device  # both files on one engine: their difference only
    seg_b = open_model(Segmenter, model_b, flag=None, device=same, warn_random=False)
    problems: list[dict[str, str]] = []
    frames = iter_images(
        list(images), limit, on_error=lambda name, message: problems.append({"input": name, "error": message})
    )
    with Progress(console=err, disable=json_out) as progress:
        task = progress.add_task("compare", total=limit)
        result = compare_models(
            seg_a,
            seg_b,
            frames,
            max_size or None,
            max_size_b or max_size or None,
            on_image=lambda _: progress.advance(task),
        )
    result.problems = problems
    r = result.as_dict() | {
        "a": str(model_a),
        "b": str(model_b),
        "provider": seg_a.provider,
        "a_precision": seg_a.meta.precision,
        "b_precision": seg_b.meta.precision,
    }
    if json_out:
        print(json.dumps(r, indent=2))
    elif result.images:
        print_compare(r)
    for p in problems:
        error_line(p["error"])
    if not result.images:
        error_line("no usable image or frame in --images: nothing compared")
    if problems or not result.images:
        raise typer.Exit(1)


def print_compare(r: dict) -> None:
    if r["max_abs_logit_diff"] is None:
        logits = "max |logit diff| n/a (a labels-output graph or different resolutions)"
    else:
        logits = f"max |logit diff| {r['max_abs_logit_diff']:.4g}, mean {r['mean_abs_logit_diff']:.4g}"
    say(
        f"A {r['a']} ({r['a_precision']}) vs B {r['b']} ({r['b_precision']}) on {r['images']} image(s), {r['provider']}"
    )
    say(f"  pixel agreement {100 * r['pixel_agreement']:.3f}%, mIoU of B vs A {100 * r['miou_b_vs_a']:.2f}%, " + logits)
    ratio = r["a_inference_ms_median"] / r["b_inference_ms_median"]
    say(
        f"  inference median: A {r['a_inference_ms_median']:.1f} ms, B {r['b_inference_ms_median']:.1f} ms "
        f"(B is {ratio:.2f}x as fast as A)"
    )
