"""`segtool triton`: a Triton Inference Server model repository for an exported model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.runtime.errors import UsageError
from segtool.scale.triton import TritonOptions, write_repository
from segtool.scale.triton_python import check_serves, find_tritonserver

from .common import open_model, say

Opt = typer.Option


def triton(
    model: Annotated[Path, typer.Argument(help="Exported .onnx model.")],
    repo: Annotated[Path, Opt("--repo", help="Model repository folder (created if needed).")],
    name: Annotated[Optional[str], Opt(help="Model name in Triton (default: from the file).")] = None,
    backend: Annotated[str, Opt(help="onnxruntime (the graph) or python (segtool's runtime: images in).")] = (
        "onnxruntime"
    ),
    max_batch: Annotated[int, Opt("--max-batch", min=0, help="max_batch_size (0: no batch dimension).")] = 8,
    instances: Annotated[int, Opt(min=1, help="Model instances.")] = 1,
    kind: Annotated[str, Opt(help="Instance kind: gpu or cpu.")] = "gpu",
    tensorrt: Annotated[bool, Opt("--tensorrt", help="Add ONNX Runtime's TensorRT accelerator.")] = False,
    dynamic_batching: Annotated[bool, Opt("--dynamic-batching", help="Let Triton batch waiting requests.")] = False,
    queue_delay_us: Annotated[
        int, Opt("--queue-delay-us", min=0, help="--dynamic-batching: longest wait for more requests (µs).")
    ] = 1000,
    python_env: Annotated[
        Optional[str],
        Opt("--python-env", help="--backend python: environment with segtool (default: this one; '': none)."),
    ] = None,
    check: Annotated[
        bool, Opt("--check", help="Start tritonserver (nvidia-pytriton) on loopback: does the model load?")
    ] = False,
):
    """Write REPO/NAME/config.pbtxt and REPO/NAME/1/model.onnx (and model.py for --backend python)."""
    options = TritonOptions(
        name, max_batch, instances, kind, tensorrt, dynamic_batching, queue_delay_us, backend, python_env
    )
    if check and backend != "python":
        raise UsageError("--check needs --backend python (the nvidia-pytriton server has no ONNX Runtime backend)")
    if check:
        find_tritonserver()  # not installed: one line before anything is written
    folder = open_model(write_repository, model, flag=None, repo=repo, options=options)
    extra = " and 1/model.py" if backend == "python" else ""
    say(f"wrote {folder}/config.pbtxt, {folder}/1/model.onnx{extra}")
    if check:
        version = check_serves(repo, folder.name)
        say(f"tritonserver {version} loaded {folder.name} from {repo}")
    else:
        say(
            f"serve it: docker run --gpus=all -p8000:8000 -v {repo.resolve()}:/models "
            "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models"
        )
