"""`segtool export`: torchvision model -> verified ONNX file (needs the [export] extra)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from segtool.runtime.errors import SegtoolError

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


def run_export(output: Path, model: str, weights: str, seed: int, verify: bool, atol: float,
               min_agreement: float, labels_output: bool = False):
    pipeline = load_export_stage()
    with err.status("exporting") as status:
        result = pipeline.export_model(
            output, model=model, weights=weights, seed=seed, verify=verify, atol=atol,
            min_agreement=min_agreement, labels_output=labels_output,
            progress=lambda message: status.update(message))
    if result.parity:
        out.print(parity_table(result.parity, atol, min_agreement))
    if not result.passed:
        raise SegtoolError(f"parity gate failed: ONNX output differs from PyTorch beyond the gate; {output} "
                           "was not written", 1)
    size = result.path.stat().st_size / 1e6
    out.print(f"wrote {result.path} ({size:.1f} MB, {result.meta.model}, {result.meta.weights_label}, "
              f"output {result.meta.output})")
    return result


def export(
    output: Path = typer.Option(DEFAULT_OUTPUT, "--output", "-o", help="Where to write the .onnx file."),
    model: str = typer.Option("fcn_resnet50", help="torchvision segmentation model."),
    weights: str = typer.Option("DEFAULT", help="DEFAULT (torchvision download), a weights enum name, "
                                "a local checkpoint path, or 'random' (tests/benchmarks only)."),
    seed: int = typer.Option(0, help="Seed for --weights random."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Run the PyTorch-vs-ONNX parity gate."),
    atol: float = typer.Option(1e-3, help="Gate: largest allowed absolute logit difference."),
    min_agreement: float = typer.Option(0.999, help="Gate: smallest allowed argmax agreement (0..1)."),
):
    """Export a torchvision segmentation model to ONNX with dynamic batch, height and width."""
    run_export(output, model, weights, seed, verify, atol, min_agreement)
