"""`segtool models`: the exportable models side by side, from a static table (no torch needed)."""

from __future__ import annotations

import json

from rich.table import Table

from segtool.export.models import CARDS

from .common import JsonOut, out


def models(json_out: JsonOut = False):
    """Every torchvision VOC model segtool exports: size, GFLOP at 520x520, published accuracy."""
    rows = [card.row(name) for name, card in CARDS.items()]
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="torchvision VOC segmentation models (`segtool export --model NAME`)", title_justify="left")
    columns = ("model", "params (M)", "GFLOP @520", "fp32 MB", "int8 MB", "int8 speed-up", "mIoU", "pixel acc",
               "checkpoint")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "checkpoint") else "right")
    for r in rows:
        gain = f"{r['int8_speedup_measured']:.2f}x" + ("" if r["int8_pays"] else " (no gain)")
        table.add_row(r["model"], f"{r['params_m']:.1f}", f"{r['gflop']:.1f}", f"{r['fp32_mb']:.0f}",
                      f"{r['int8_mb']:.0f}", gain, f"{r['miou']}", f"{r['pixel_acc']}",
                      f"{r['checkpoint']} ({r['sha256_prefix']})")  # fmt: skip
    table.caption = (
        "mIoU / pixel accuracy: torchvision's published figures for COCO_WITH_VOC_LABELS_V1 on COCO val2017.\n"
        "int8 speed-up: fp32/int8 inference at 520x520, measured on a 2-core AVX-512 VNNI CPU (docs/BENCHMARKS.md, "
        "'Choose a model'); smaller without VNNI. Where int8 is not faster on your machine, `segtool export --int8` "
        "says so and writes nothing unless --force."
    )
    out.print(table)
