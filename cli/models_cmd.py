"""`segtool models`: the exportable models side by side.

The int8 speed-up is segtool's own measurement (``ModelSpec.int8_speedup``); the rest is torchvision's
card for the weights, read from its weights enums where torchvision is installed (the [export] extra)."""

from __future__ import annotations

import json

from rich.table import Table

from segtool.export.models import INT8_PAYS, MODELS

from .common import JsonOut, out, say

NO_TORCHVISION = (
    "torchvision's published figures (size, GFLOPS, accuracy, checkpoint) need: pip install 'segtool[export]'"
)


def torchvision_installed() -> bool:
    """Whether torchvision imports: its weights enums hold the published figures."""
    try:
        import torchvision.models.segmentation  # noqa: F401
    except ImportError:
        return False
    return True


def describe_models(published: bool) -> list[dict]:
    """One row per model: its measured int8 speed-up and, with ``published``, torchvision's card."""
    rows = []
    for name, spec in MODELS.items():
        pays = spec.int8_speedup >= INT8_PAYS
        row = {"model": name, "int8_speedup_measured": spec.int8_speedup, "int8_pays": pays}
        if published:
            row |= spec.published()
        rows.append(row)
    return rows


def models(json_out: JsonOut = False):
    """Every torchvision VOC model segtool exports: torchvision's size, GFLOPS and accuracy, and the
    measured int8 speed-up."""
    published = torchvision_installed()
    rows = describe_models(published)
    if json_out:
        print(json.dumps(rows, indent=2))
    else:
        out.print(models_table(rows, published))
    if not published:
        say(NO_TORCHVISION, to_stderr=json_out)


def models_table(rows: list[dict], published: bool) -> Table:
    table = Table(title="torchvision VOC segmentation models (`segtool export --model NAME`)", title_justify="left")
    columns = ["model", "int8 speed-up"]
    if published:
        columns += ["params (M)", "GFLOPS", "checkpoint MB", "mIoU", "pixel acc", "checkpoint"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "checkpoint") else "right")
    for r in rows:
        cells = [r["model"], f"{r['int8_speedup_measured']:.2f}x" + ("" if r["int8_pays"] else " (no gain)")]
        if published:
            cells += [f"{r['params_m']:.1f}", f"{r['gflops']:.1f}", f"{r['checkpoint_mb']:.0f}"]
            cells += [f"{r['miou']}", f"{r['pixel_acc']}", f"{r['checkpoint']} ({r['sha256_prefix']})"]
        table.add_row(*cells)
    table.caption = (
        "int8 speed-up: fp32/int8 inference at 520x520, measured on a 2-core AVX-512 VNNI CPU (docs/BENCHMARKS.md, "
        "'Choose a model'); smaller without VNNI. Where int8 is not faster on your machine, `segtool export --int8` "
        "says so and writes nothing unless --force."
    )
    if published:
        table.caption += (
            "\nThe rest: torchvision's card for COCO_WITH_VOC_LABELS_V1: mIoU / pixel accuracy on COCO val2017; "
            "params, GFLOPS (as torchvision counts them: multiply-adds at 520x520) and checkpoint size include the "
            "training-only auxiliary head, which export leaves out."
        )
    return table
