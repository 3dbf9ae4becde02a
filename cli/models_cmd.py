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
    for column in ("model", "params (M)", "GFLOP @520", "fp32 MB", "int8 MB", "mIoU", "pixel acc", "checkpoint"):
        table.add_column(column, justify="left" if column in ("model", "checkpoint") else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['params_m']:.1f}", f"{r['gflop']:.1f}", f"{r['fp32_mb']:.0f}",
                      f"{r['int8_mb']:.0f}", f"{r['miou']}", f"{r['pixel_acc']}",
                      f"{r['checkpoint']} ({r['sha256_prefix']})")  # fmt: skip
    table.caption = "mIoU / pixel accuracy: torchvision's published figures for COCO_WITH_VOC_LABELS_V1 on COCO val2017"
    out.print(table)
