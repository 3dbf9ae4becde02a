"""`segtool models`: what each model in the table costs and how accurate torchvision says it is.

Parameters and FLOPs are counted here on the architecture as exported (no auxiliary head, 520x520
input, 2 FLOPs per multiply-add); accuracy and checkpoint identity come from torchvision's weights
enums, which are available offline. The fp32 ONNX file is about 4 bytes per parameter, int8 about 1.
"""

from __future__ import annotations

from .graph import SegmentationGraph
from .models import MODELS
from .pipeline import count_flops


def describe_models(height: int = 520, width: int = 520) -> list[dict]:
    rows = []
    for name, spec in MODELS.items():
        net = spec.build()
        params = sum(p.numel() for p in net.parameters())
        flops = count_flops(SegmentationGraph(net), height, width)["flops"]
        rows.append({"model": name, "params_m": round(params / 1e6, 2), "gflop": round(flops / 1e9, 1),
                     "input": f"{width}x{height}", "fp32_mb": round(params * 4 / 1e6, 1),
                     "int8_mb": round(params / 1e6, 1)} | spec.published())  # fmt: skip
    return rows
