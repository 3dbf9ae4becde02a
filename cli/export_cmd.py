"""`segtool export`: torchvision model -> verified ONNX file (needs the [export] extra)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from segtool.runtime.errors import SegtoolError
from segtool.runtime.imagefiles import ensure_writable_dir

from .console import err, out

DEFAULT_OUTPUT = Path("models/fcn_resnet50.onnx")


def load_export_stage():
    """Import the torch side lazily, so the runtime-only install can still run every other command."""
    try:
        from segtool.export import pipeline
    except ImportError as exc:
        missing = exc.name or "torch"
        raise SegtoolError(f"`segtool export` needs PyTorch and ONNX ({missing} is not installed): "
                           "pip install 'segtool[export]'", 2) from None
    return pipeline


def parity_table(rows, atol: float, min_agreement: float) -> Table:
    table = Table(title="parity: PyTorch vs ONNX Runtime (CPU)", title_justify="left")
    for column in ("input shape", "max |logit diff|", "argmax agreement", "gate"):
        table.add_column(column, justify="right")
    for row in rows:
        diff = "n/a (labels)" if row.max_abs_diff is None else f"{row.max_abs_diff:.2e}"
        table.add_row("x".join(map(str, row.shape)), diff, f"{row.agreement:.4%}",
                      "pass" if row.passes(atol, min_agreement) else "[red]FAIL[/]")
    table.caption = f"gate: max diff <= {atol:g}, agreement >= {min_agreement:.2%}"
    return table


def variant_table(record: dict) -> Table:
    table = Table(title=f"{record['precision']} variant vs fp32 (ONNX Runtime CPU)", title_justify="left")
    for column in ("input shape", "max |logit diff|", "argmax agreement"):
        table.add_column(column, justify="right")
    for row in record["vs_fp32"]:
        diff = "n/a (labels)" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.3g}"
        table.add_row("x".join(map(str, row["shape"])), diff, f"{row['agreement']:.4%}")
    table.caption = record.get("calibration", record["method"])
    return table


def default_output(model: str, labels_output: bool, precision: str) -> Path:
    suffix = ("_labels" if labels_output else "") + ("" if precision == "fp32" else f"_{precision}")
    return Path("models") / f"{model}{suffix}.onnx"


def run_export(output: Path, model: str, weights: str, seed: int, verify: bool, atol: float,
               min_agreement: float, labels_output: bool = False, precision: str = "fp32",
               calibration: Path | None = None, calibration_count: int = 8):
    ensure_writable_dir(output.parent)  # found now, not after a minute of exporting
    if calibration is not None and not calibration.is_dir():
        raise SegtoolError(f"--calibration {calibration}: not a folder", 2)
    pipeline = load_export_stage()
    with err.status("exporting") as status:
        result = pipeline.export_model(
            output, model=model, weights=weights, seed=seed, verify=verify, atol=atol,
            min_agreement=min_agreement, labels_output=labels_output, precision=precision,
            calibration=calibration, calibration_count=calibration_count,
            progress=lambda message: status.update(message))
    if result.parity:
        out.print(parity_table(result.parity, atol, min_agreement))
    if "variant" in result.meta.extra:
        out.print(variant_table(result.meta.extra["variant"]))
    if not result.passed:
        raise SegtoolError(f"parity gate failed: ONNX output differs from PyTorch beyond the gate; {output} "
                           "was not written", 1)
    size = result.path.stat().st_size / 1e6
    out.print(f"wrote {result.path} ({size:.1f} MB, {result.meta.model}, {result.meta.weights_label}, "
              f"output {result.meta.output})")
    return result


def export(
    output: Path = typer.Option(None, "--output", "-o", help="Where to write the .onnx file "
                                "[models/<model>[_labels][_int8|_fp16].onnx]."),
    model: str = typer.Option("fcn_resnet50", help="torchvision segmentation model."),
    weights: str = typer.Option("DEFAULT", help="DEFAULT (torchvision download), a weights enum name, "
                                "a local checkpoint path, or 'random' (tests/benchmarks only)."),
    seed: int = typer.Option(0, help="Seed for --weights random."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Run the PyTorch-vs-ONNX parity gate."),
    atol: float = typer.Option(1e-3, help="Gate: largest allowed absolute logit difference."),
    min_agreement: float = typer.Option(0.999, help="Gate: smallest allowed argmax agreement (0..1)."),
    labels_output: bool = typer.Option(False, "--labels-output", help="ArgMax in the graph: uint8 labels out."),
    int8: bool = typer.Option(False, "--int8", help="Static int8 quantization (QDQ) for the CPU provider."),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 weights/compute for GPU providers (fp32 I/O kept)."),
    calibration: Path = typer.Option(None, help="--int8: folder of calibration images [generated images]."),
    calibration_count: int = typer.Option(8, min=1, help="--int8: number of calibration images."),
):
    """Export a torchvision segmentation model to ONNX with dynamic batch, height and width."""
    if int8 and fp16:
        raise SegtoolError("--int8 and --fp16 are separate variants: pick one", 2)
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    output = output or default_output(model, labels_output, precision)
    run_export(output, model, weights, seed, verify, atol, min_agreement, labels_output, precision,
               calibration, calibration_count)
