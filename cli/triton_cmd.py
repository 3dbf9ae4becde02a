"""`segtool triton`: a Triton Inference Server model repository for an exported model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.scale.triton import TritonOptions, write_repository

from .common import open_model, say

Opt = typer.Option


def triton(
    model: Annotated[Path, typer.Argument(help="Exported .onnx model.")],
    repo: Annotated[Path, Opt("--repo", help="Model repository folder (created if needed).")],
    name: Annotated[Optional[str], Opt(help="Model name in Triton (default: from the file).")] = None,
    max_batch: Annotated[int, Opt("--max-batch", min=0, help="max_batch_size (0: no batch dimension).")] = 8,
    instances: Annotated[int, Opt(min=1, help="Model instances.")] = 1,
    kind: Annotated[str, Opt(help="Instance kind: gpu or cpu.")] = "gpu",
    tensorrt: Annotated[bool, Opt("--tensorrt", help="Add ONNX Runtime's TensorRT accelerator.")] = False,
    dynamic_batching: Annotated[bool, Opt("--dynamic-batching", help="Let Triton batch waiting requests.")] = False,
):
    """Write REPO/NAME/config.pbtxt and REPO/NAME/1/model.onnx for Triton's ONNX Runtime backend."""
    options = TritonOptions(name, max_batch, instances, kind, tensorrt, dynamic_batching)
    folder = open_model(write_repository, model, flag=None, repo=repo, options=options)
    say(f"wrote {folder}/config.pbtxt and {folder}/1/model.onnx")
    say(f"serve it: docker run --gpus=all -p8000:8000 -v {repo.resolve()}:/models "
        "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models")  # fmt: skip
