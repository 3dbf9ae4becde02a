"""`segtool tune`: measure again, on your own pictures, how each other engine here labels a model's
pixels (OpenVINO f32, bf16 and f16 where the CPU has them natively; TensorRT fp16 on a GPU), and
record it in the file (``segtool.agreements``, written atomically): what `--device auto` chooses from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.runtime.errors import UsageError
from segtool.runtime.model.segmenter import Segmenter
from segtool.runtime.tools.precisions import record_agreements, summary

from .common import ModelArg, open_model, say

Images = Annotated[
    Optional[Path],
    typer.Option(
        "--images",
        help="A folder of pictures, or a video, like those the model will see (up to 16 read) "
        "[default: generated pictures].",
    ),
]


def tune(model: ModelArg, images: Images = None):
    """Measure each other engine's label agreement with ONNX Runtime's CPU on your pictures and record it in
    the model file, so that --device auto picks the fastest engine that labels them the same."""
    seg = open_model(Segmenter, model, flag=None, device="cpu", warn_random=False)
    if images is not None and not images.exists():
        raise UsageError(f"--images {images}: no such folder or video")

    def progress(stage: str) -> None:
        say(f"tune: {stage}", to_stderr=True)

    meta = record_agreements(model, seg.meta, images, progress)
    for line in summary(meta.extra["agreements"]):
        say(f"agreement: {line}")
    say(f"recorded in {model}; `segtool info {model}` shows what --device auto chooses here")
