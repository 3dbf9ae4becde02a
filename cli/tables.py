"""Rich tables the commands print: export's parity and variant tables, bench's stage table."""

from __future__ import annotations

from rich.table import Table

from segtool.runtime.benchmark import STAGES


def parity_table(rows, gate) -> Table:
    table = Table(title="parity: PyTorch vs ONNX Runtime (CPU)", title_justify="left")
    for column in ("input shape", "max |logit|", "max |logit diff|", "gate ratio", "argmax agreement", "gate"):
        table.add_column(column, justify="right")
    for row in rows:
        labels = row.max_abs_diff is None
        table.add_row("x".join(map(str, row.shape)), "n/a" if labels else f"{row.scale:.3g}",
                      "n/a (labels)" if labels else f"{row.max_abs_diff:.2e}",
                      "n/a" if labels else f"{row.ratio:.3f}", f"{row.agreement:.4%}",
                      "pass" if row.passes(gate) else "FAIL")  # fmt: skip
    table.caption = f"gate: {gate.describe()} (ratio <= 1 passes)"
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


def stage_table(ort_result: dict, torch_result: dict | None) -> Table:
    table = Table(title=f"{ort_result['input']} ({ort_result['width']}x{ort_result['height']})", title_justify="left")
    columns = ["stage", "ORT median ms", "ORT p90 ms"]
    if torch_result:
        columns += ["PyTorch median ms", "PyTorch p90 ms", "ORT / PyTorch"]
    for k, column in enumerate(columns):
        table.add_column(column, justify="left" if k == 0 else "right")
    for stage in (*STAGES, "total"):
        row = [stage, f"{ort_result[stage]['median_ms']:.1f}", f"{ort_result[stage]['p90_ms']:.1f}"]
        if torch_result:
            t = torch_result[stage]["median_ms"]
            row += [
                f"{t:.1f}",
                f"{torch_result[stage]['p90_ms']:.1f}",
                f"{ort_result[stage]['median_ms'] / t:.2f}" if t else "-",
            ]
        table.add_row(*row)
    table.caption = f"cold first run {ort_result['cold_ms']:.0f} ms" + (
        f" (PyTorch {torch_result['cold_ms']:.0f} ms)" if torch_result else ""
    )
    return table


def class_iou_table(per_class: dict[str, float | None], protocol: str) -> Table:
    table = Table(title=f"per-class IoU ({protocol}, label 255 ignored)", title_justify="left")
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    for name, value in per_class.items():
        table.add_row(name, "-" if value is None else f"{100 * value:.1f}")
    return table
