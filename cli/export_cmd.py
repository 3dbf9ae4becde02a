"""`segtool export`: torchvision model -> verified ONNX file (needs the [export] extra)."""

from __future__ import annotations

from segtool.runtime.errors import UsageError

from . import export_options as o
from .console import err
from .exporting import run_export


def export(
    output: o.Output = None,
    model: o.Model = "fcn_resnet50",
    weights: o.Weights = "DEFAULT",
    seed: o.Seed = 0,
    verify: o.Verify = True,
    atol: o.Atol = None,
    rtol: o.Rtol = None,
    min_agreement: o.MinAgreement = None,
    labels_output: o.LabelsOutput = False,
    int8: o.Int8 = False,
    fp16: o.Fp16 = False,
    calibration: o.Calibration = None,
    calibration_count: o.CalibrationCount = 16,
    calibration_method: o.Method = None,
    variant_min_agreement: o.VariantTarget = None,
    force: o.Force = False,
):
    """Export a torchvision segmentation model to ONNX with dynamic batch, height and width."""
    if int8 and fp16:
        raise UsageError("--int8 and --fp16 are separate variants: pick one")
    settings = o.gate_overrides(atol=atol, rtol=rtol, min_agreement=min_agreement,
                                variant_min_agreement=variant_min_agreement)  # fmt: skip
    if calibration_method:
        settings["calibration_method"] = calibration_method
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    result = run_export(output, model=model, weights=weights, seed=seed, verify=verify, labels_output=labels_output,
                        precision=precision, calibration=calibration, calibration_count=calibration_count,
                        force=force, **settings)  # fmt: skip
    err.print(f"next: segtool run IMAGE --model {result.path}", markup=False)
