"""`segtool export`: torchvision model, or your own PyTorch network -> verified ONNX file (needs
the [export] extra).

Its flags (defaults live in ``segtool.export.config.ExportConfig``), each stage shown as it
starts, then the parity and variant tables; ``run_export`` is shared with `segtool demo`."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from segtool.export.config import MIN_CALIBRATION, ExportConfig, Gate  # no torch: defaults and minimums are there
from segtool.export.models import parse_model_args  # no torch either
from segtool.runtime.errors import ParityError, UsageError

from .common import err, out, say

Opt = typer.Option


Output = Annotated[
    Optional[Path],
    Opt(
        "--output", "-o", help="The .onnx file to write (default: models/<model>[_random][_labels][_int8|_fp16].onnx)."
    ),
]


Model = Annotated[
    str,
    Opt(
        help="A torchvision model (see `segtool models`), or your own network as package.module:callable, "
        "e.g. segmentation_models_pytorch:Unet: a function or class returning an nn.Module (output: a tensor, "
        "or a dict with 'out'); the current folder is importable; or hf:DIR, a local Hugging Face folder "
        "(save_pretrained's; names and normalization read from its configs; needs segtool[hf])."
    ),
]


Weights = Annotated[
    str,
    Opt(
        help="DEFAULT (torchvision download; for package.module:callable, what it returns), a weights enum name, "
        "a checkpoint (a state dict, torchvision's training checkpoint, DataParallel's, .safetensors), or "
        "'random' (tests/benchmarks only)."
    ),
]


ModelArgs = Annotated[
    Optional[list[str]],
    Opt(
        "--model-arg",
        metavar="KEY=VALUE",
        help="A keyword argument for --model package.module:callable (repeat it), e.g. --model-arg "
        "encoder_name=resnet34 --model-arg encoder_weights=None; values are Python literals (3, None, 'x', "
        "[1, 2]) or else text.",
    ),
]


NumClasses = Annotated[
    Optional[int],
    Opt(
        min=1,
        help="Output classes of your own network, passed to its num_classes, n_classes or classes parameter "
        "(torchvision models read it from the checkpoint).",
    ),
]


Classes = Annotated[
    Optional[Path],
    Opt(
        "--classes",
        help="Class names: one a line, a JSON list, or YAML (with PyYAML), as many as the model has "
        "[VOC's for 21, else class_N].",
    ),
]


Palette = Annotated[
    Optional[Path],
    Opt("--palette", help="Class colours: 'R G B' or #rrggbb a line [VOC's for the first 21, then generated]."),
]


Mean = Annotated[
    Optional[str],
    Opt(
        metavar="R,G,B",
        help="Normalization mean the network was trained with, in [0,1] (values over 1 are read as 0..255), "
        "always in R,G,B order, --bgr or not [ImageNet's 0.485,0.456,0.406].",
    ),
]


Std = Annotated[Optional[str], Opt(metavar="R,G,B", help="Normalization std, R,G,B as --mean [0.229,0.224,0.225].")]


ChannelOrder = Annotated[bool, Opt("--rgb/--bgr", help="Channel order the network takes (--mean/--std stay R,G,B).")]


InputMultiple = Annotated[
    Optional[int],
    Opt(
        min=1,
        help="Pad height and width to a multiple of N inside the graph [found by running the network; 1 for "
        "torchvision's].",
    ),
]


Seed = Annotated[int, Opt(help="Seed for --weights random.")]


Verify = Annotated[bool, Opt("--verify/--no-verify", help="Run the PyTorch-vs-ONNX parity gate.")]


Atol = Annotated[Optional[float], Opt(help="Gate: absolute tolerance in units of the output's scale [1e-4].")]


Rtol = Annotated[Optional[float], Opt(help="Gate: relative tolerance, elementwise [1e-3].")]


MinAgreement = Annotated[Optional[float], Opt(help="Gate: smallest argmax agreement, 0..1 [0.999].")]


LabelsOutput = Annotated[bool, Opt("--labels-output", help="ArgMax in the graph: uint8 labels out.")]


Int8 = Annotated[bool, Opt("--int8", help="Static int8 quantization (QDQ) for the CPU provider.")]


Fp16 = Annotated[bool, Opt("--fp16", help="fp16 weights/compute for GPU providers (fp32 I/O kept).")]


Calibration = Annotated[
    Optional[Path],
    Opt(
        help="--int8/--fp16: folder of images, or a video (default: generated); also the pictures the other "
        "engines' agreement is measured on."
    ),
]


Int8Target = Annotated[
    str,
    Opt(
        "--int8-target",
        help="--int8: the CPUs the file is for: portable (7-bit weights, reduce_range: right on every x86 CPU) or "
        "vnni (8-bit weights: CPUs with VNNI/AMX only; others are warned when they open it). Recorded in the file.",
    ),
]


Agreements = Annotated[
    bool,
    Opt(
        "--agreements/--no-agreements",
        help="Measure how each other engine here (OpenVINO f32/bf16/f16 where the CPU has them, TensorRT fp16 on "
        "a GPU) labels the written file's pixels, and record it in the file: what --device auto chooses from.",
    ),
]


CalibrationCount = Annotated[
    int,
    Opt(
        min=MIN_CALIBRATION,
        help=f"--int8/--fp16: images (or frames) to calibrate and validate on (at least {MIN_CALIBRATION}).",
    ),
]


Method = Annotated[Optional[str], Opt("--calibration-method", help="--int8: minmax, percentile or entropy.")]


VariantTarget = Annotated[
    Optional[float],
    Opt(
        "--int8-min-agreement",
        "--variant-min-agreement",
        help="int8/fp16: smallest argmax agreement with fp32 on the held-out images [int8 0.99, fp16 0.995].",
    ),
]


Force = Annotated[
    bool,
    Opt(
        "--force",
        help="Write a variant below its agreement target, or an int8 one not faster than fp32 here (marked so).",
    ),
]


def parse_triple(text: str, flag: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in re.split(r"[\s,]+", text.strip().strip("()[]")) if v]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise UsageError(f"{flag} takes three numbers, e.g. 0.485,0.456,0.406 (got {text!r})")
    return values[0], values[1], values[2]


def normalization(mean: str | None, std: str | None) -> dict:
    """--mean/--std as ExportConfig fields; values on the 0..255 scale (a mean over 1) are divided by 255."""
    values = {k: parse_triple(v, f"--{k}") for k, v in (("mean", mean), ("std", std)) if v is not None}
    if max(values.get("mean", (0.0,))) > 1:
        values = {k: (v[0] / 255, v[1] / 255, v[2] / 255) for k, v in values.items()}
    return values


def given(**values: float | None) -> dict:
    """Only the flags the user gave: the dataclasses keep their defaults for the rest."""
    return {k: v for k, v in values.items() if v is not None}


def load_export_stage():
    """Import the torch side lazily, so the runtime-only install can still run every other command."""
    try:
        from segtool.export import pipeline
    except ImportError as exc:
        raise UsageError(
            f"`segtool export` needs PyTorch and ONNX ({exc.name or 'torch'} is not installed): "
            "pip install 'segtool[export]'"
        ) from None
    return pipeline


def run_export(output: Path | None, **settings):
    """Settings and paths are checked first (no torch imported yet), then the export runs, each
    stage shown as it starts with the time since the start."""
    config = ExportConfig(**settings)
    output = Path(output) if output is not None else config.default_output()
    config.check_paths(output)
    pipeline = load_export_stage()
    started = time.perf_counter()

    def progress(stage: str) -> None:
        say(f"export: {stage} (at {time.perf_counter() - started:.1f} s)", to_stderr=True)

    try:
        result = pipeline.export_model(output, config, progress)
    except ParityError as exc:
        if exc.rows:  # the fp32 gate's table (a variant below its target carries none)
            out.print(parity_table(exc.rows, config.gate))
        raise
    if result.parity:
        out.print(parity_table(result.parity, config.gate))
    if "variant" in result.meta.extra:
        v = result.meta.extra["variant"]
        out.print(variant_table(v))
        kept = speed = ""
        if v.get("fp32_tensors"):
            kept = f"; {len(v['fp32_tensors'])} tensor(s) kept in fp32 ({len(v['excluded_nodes'])} nodes unquantized)"
        if "speedup_vs_fp32" in v:
            speed = f"; {v['speedup_vs_fp32']:.2f}x fp32's speed here"
        met = "met" if v["met"] else "NOT met"
        target = f"target {v['target']:.2%}, {met}"
        where = f" ({v['measured_on']})" if v.get("measured_on") else ""
        say(
            f"{v['precision']} agreement {v['agreement']:.2%} with fp32 on held-out images ({target}){kept}{speed}"
            + where
        )
        if isinstance(v.get("int8_target"), dict):
            t = v["int8_target"]
            say(
                f"int8 target {t['name']}: {t['weight_bits']}-bit weights (reduce_range {t['reduce_range']}), "
                f"{'assumes VNNI' if t['assumes_vnni'] else 'right on CPUs with or without VNNI'}"
            )
    if "agreements" in result.meta.extra:
        for line in agreement_lines(result.meta.extra["agreements"]):
            say(f"agreement: {line}")
    size = result.path.stat().st_size / 1e6
    say(
        f"wrote {result.path} ({size:.1f} MB, {result.meta.model}, {result.meta.weights_label}, "
        f"output {result.meta.output}) in {time.perf_counter() - started:.0f} s"
    )
    if not result.meta.verified:
        say("not verified: the parity gate was skipped (--no-verify); `segtool info` says so too")
    return result


def agreement_lines(record: dict) -> list[str]:
    from segtool.runtime.tools.precisions import summary

    return summary(record)


def parity_table(rows, gate) -> Table:
    table = Table(title="parity: PyTorch vs ONNX Runtime (CPU)", title_justify="left")
    for column in ("input shape", "max |logit|", "max |logit diff|", "gate ratio", "argmax agreement", "gate"):
        table.add_column(column, justify="right")
    for row in rows:
        labels = row.max_abs_diff is None
        table.add_row(
            "x".join(map(str, row.shape)),
            "n/a" if labels else f"{row.scale:.3g}",
            "n/a (labels)" if labels else f"{row.max_abs_diff:.2e}",
            "n/a" if labels else f"{row.ratio:.3f}",
            f"{row.agreement:.4%}",
            "pass" if row.passes(gate) else "FAIL",
        )
    table.caption = f"gate: {gate.describe()} (ratio <= 1 passes)"
    return table


def variant_table(record: dict) -> Table:
    on = "ONNX Runtime CPU: weights rounding only" if record["precision"] == "fp16" else "ONNX Runtime CPU"
    table = Table(title=f"{record['precision']} variant vs fp32 ({on})", title_justify="left")
    for column in ("input shape", "max |logit diff|", "argmax agreement"):
        table.add_column(column, justify="right")
    for row in record["vs_fp32"]:
        diff = "n/a (labels)" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.3g}"
        table.add_row("x".join(map(str, row["shape"])), diff, f"{row['agreement']:.4%}")
    table.caption = record.get("calibration", record["method"])
    return table


def export(
    output: Output = None,
    model: Model = "fcn_resnet50",
    weights: Weights = "DEFAULT",
    model_arg: ModelArgs = None,
    num_classes: NumClasses = None,
    classes: Classes = None,
    palette: Palette = None,
    mean: Mean = None,
    std: Std = None,
    rgb: ChannelOrder = True,
    input_multiple: InputMultiple = None,
    seed: Seed = 0,
    verify: Verify = True,
    atol: Atol = None,
    rtol: Rtol = None,
    min_agreement: MinAgreement = None,
    labels_output: LabelsOutput = False,
    int8: Int8 = False,
    fp16: Fp16 = False,
    calibration: Calibration = None,
    calibration_count: CalibrationCount = 16,
    calibration_method: Method = None,
    variant_min_agreement: VariantTarget = None,
    force: Force = False,
    int8_target: Int8Target = "portable",
    agreements: Agreements = True,
):
    """Export a torchvision segmentation model, or your own PyTorch network, to ONNX with dynamic batch,
    height and width; checked against PyTorch before it is written."""
    if int8 and fp16:
        raise UsageError("--int8 and --fp16 are separate variants: pick one")
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    settings = given(variant_min_agreement=variant_min_agreement) | normalization(mean, std)
    settings["gate"] = Gate(**given(atol=atol, rtol=rtol, min_agreement=min_agreement))
    settings["classes_file"] = classes
    if model.startswith("hf:"):  # a local Hugging Face folder: its names and normalization, flags first
        from segtool.export.hf import hf_settings

        settings, notes = hf_settings(model, settings)
        for note in notes:
            say(f"export: {note}", to_stderr=True)
    if calibration_method:
        settings["calibration_method"] = calibration_method
    result = run_export(
        output,
        model=model,
        weights=weights,
        seed=seed,
        model_args=parse_model_args(model_arg or []),
        num_classes=num_classes,
        palette_file=palette,
        channel_order="RGB" if rgb else "BGR",
        input_multiple=input_multiple,
        verify=verify,
        labels_output=labels_output,
        precision=precision,
        calibration=calibration,
        calibration_count=calibration_count,
        force=force,
        int8_target=int8_target,
        agreements=agreements,
        **settings,
    )
    err.print(f"next: segtool run IMAGE --model {result.path}", markup=False)
