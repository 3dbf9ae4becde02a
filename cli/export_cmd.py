"""`segtool export`: torchvision model -> verified ONNX file (needs the [export] extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.runtime.errors import UsageError

from .console import err
from .exporting import run_export

Opt = typer.Option


def export(
    output: Annotated[
        Optional[Path],
        Opt(
            "--output",
            "-o",
            help="Where to write the .onnx file (default: models/<model>[_random][_labels][_int8|_fp16].onnx).",
        ),
    ] = None,
    model: Annotated[str, Opt(help="torchvision segmentation model.")] = "fcn_resnet50",
    weights: Annotated[
        str,
        Opt(
            help="DEFAULT (torchvision download), a weights enum name, a local "
            "checkpoint path, or 'random' (tests/benchmarks only)."
        ),
    ] = "DEFAULT",
    seed: Annotated[int, Opt(help="Seed for --weights random.")] = 0,
    verify: Annotated[bool, Opt("--verify/--no-verify", help="Run the PyTorch-vs-ONNX parity gate.")] = True,
    atol: Annotated[
        Optional[float], Opt(help="Gate: largest allowed absolute logit difference (default 1e-3).")
    ] = None,
    min_agreement: Annotated[
        Optional[float], Opt(help="Gate: smallest argmax agreement, 0..1 (default 0.999).")
    ] = None,
    labels_output: Annotated[bool, Opt("--labels-output", help="ArgMax in the graph: uint8 labels out.")] = False,
    int8: Annotated[bool, Opt("--int8", help="Static int8 quantization (QDQ) for the CPU provider.")] = False,
    fp16: Annotated[bool, Opt("--fp16", help="fp16 weights/compute for GPU providers (fp32 I/O kept).")] = False,
    calibration: Annotated[
        Optional[Path], Opt(help="--int8: folder of calibration images, or a video (default: generated images).")
    ] = None,
    calibration_count: Annotated[int, Opt(min=1, help="--int8: number of calibration images.")] = 8,
):
    """Export a torchvision segmentation model to ONNX with dynamic batch, height and width."""
    if int8 and fp16:
        raise UsageError("--int8 and --fp16 are separate variants: pick one")
    gate = {k: v for k, v in (("atol", atol), ("min_agreement", min_agreement)) if v is not None}
    result = run_export(
        output,
        model=model,
        weights=weights,
        seed=seed,
        verify=verify,
        labels_output=labels_output,
        precision="int8" if int8 else "fp16" if fp16 else "fp32",
        calibration=calibration,
        calibration_count=calibration_count,
        **gate,
    )
    err.print(f"next: segtool run IMAGE --model {result.path}", markup=False)
