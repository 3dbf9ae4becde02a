"""The flags of `segtool export` (defaults live in ``segtool.export.config.ExportConfig``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option

Output = Annotated[Optional[Path], Opt("--output", "-o", help="The .onnx file to write (default: "
                                       "models/<model>[_random][_labels][_int8|_fp16].onnx).")]  # fmt: skip
Model = Annotated[str, Opt(help="torchvision segmentation model (see `segtool models`).")]
Weights = Annotated[str, Opt(help="DEFAULT (torchvision download), a weights enum name, a local checkpoint path, "
                             "or 'random' (tests/benchmarks only).")]  # fmt: skip
Seed = Annotated[int, Opt(help="Seed for --weights random.")]
Verify = Annotated[bool, Opt("--verify/--no-verify", help="Run the PyTorch-vs-ONNX parity gate.")]
Atol = Annotated[Optional[float], Opt(help="Gate: absolute tolerance in units of the output's scale [1e-4].")]
Rtol = Annotated[Optional[float], Opt(help="Gate: relative tolerance, elementwise [1e-3].")]
MinAgreement = Annotated[Optional[float], Opt(help="Gate: smallest argmax agreement, 0..1 [0.999].")]
LabelsOutput = Annotated[bool, Opt("--labels-output", help="ArgMax in the graph: uint8 labels out.")]
Int8 = Annotated[bool, Opt("--int8", help="Static int8 quantization (QDQ) for the CPU provider.")]
Fp16 = Annotated[bool, Opt("--fp16", help="fp16 weights/compute for GPU providers (fp32 I/O kept).")]
Calibration = Annotated[Optional[Path], Opt(help="--int8: folder of images, or a video (default: generated).")]
CalibrationCount = Annotated[int, Opt(min=2, help="--int8: images (or frames) to calibrate and validate on.")]
Method = Annotated[Optional[str], Opt("--calibration-method", help="--int8: minmax, percentile or entropy.")]
VariantTarget = Annotated[Optional[float], Opt("--int8-min-agreement", "--variant-min-agreement",
                                               help="int8/fp16: smallest argmax agreement with fp32 on the "
                                               "held-out images [int8 0.99, fp16 0.995].")]  # fmt: skip
Force = Annotated[bool, Opt("--force", help="Write a variant below its agreement target (marked so).")]


def gate_overrides(**values: float | None) -> dict:
    """Only the flags the user gave; ExportConfig keeps its defaults for the rest."""
    return {k: v for k, v in values.items() if v is not None}
