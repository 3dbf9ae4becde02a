"""``export_model``: build -> load weights -> ONNX -> metadata -> check -> parity -> atomic write.

Nothing is written unless every step passed; the file then carries its own metadata.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable

import onnx
import onnxruntime as ort
import torch
import torchvision

from segtool.runtime.errors import SegtoolError
from segtool.runtime.imagefiles import atomic_write_bytes
from segtool.runtime.metadata import OUTPUT_LABELS, OUTPUT_LOGITS, ModelMetadata
from segtool.runtime.voc import voc_colormap

from . import parity
from .graph import DEFAULT_OPSET, SegmentationGraph, to_onnx
from .models import get_spec
from .weights import apply_state_dict, resolve_weights

# torchvision's eval transform for these weights (ImageNet statistics, RGB, [0, 1] input).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass
class ExportResult:
    path: Path | None
    meta: ModelMetadata
    parity: list[parity.ParityRow] = field(default_factory=list)
    passed: bool = True


def _version(dist: str) -> str:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def build_graph(model: str = "fcn_resnet50", weights: str = "DEFAULT", seed: int = 0,
                labels_output: bool = False) -> tuple[SegmentationGraph, ModelMetadata]:
    """The PyTorch side: the wrapped model with its weights, and the metadata describing it."""
    spec = get_spec(model)
    state, identity = resolve_weights(spec, weights, seed)
    torch.manual_seed(seed)
    net = spec.build()
    if state is not None:
        apply_state_dict(net, state, identity.get("file", weights), spec.name)
    meta = ModelMetadata(
        model=spec.name, classes=spec.classes, palette=voc_colormap(len(spec.classes)),
        mean=MEAN, std=STD, channel_order="RGB",
        output=OUTPUT_LABELS if labels_output else OUTPUT_LOGITS, weights=identity,
        versions={"torch": torch.__version__, "torchvision": torchvision.__version__, "onnx": onnx.__version__,
                  "onnxscript": _version("onnxscript"), "onnxruntime": ort.__version__,
                  "segtool": _version("segtool"), "python": platform.python_version()},
    )
    return SegmentationGraph(net, labels_output).eval(), meta


def count_flops(graph: SegmentationGraph, height: int = 520, width: int = 520) -> dict:
    """FLOPs of one forward pass (2 per multiply-add, torch's counter), stored so the benchmark
    can report achieved GFLOP/s; convolution cost grows with the pixel count."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        graph.model(torch.zeros(1, 3, height, width))
    total = counter.get_total_flops()
    return {"flops": int(total), "height": height, "width": width, "per_pixel": total / (height * width)}


def export_model(output: str | Path, model: str = "fcn_resnet50", weights: str = "DEFAULT", seed: int = 0,
                 verify: bool = True, atol: float = 1e-3, min_agreement: float = 0.999,
                 shapes=parity.DEFAULT_SHAPES, labels_output: bool = False, precision: str = "fp32",
                 calibration: Path | None = None, calibration_count: int = 8, calibration_size: int = 384,
                 opset: int = DEFAULT_OPSET,
                 progress: Callable[[str], None] = lambda message: None) -> ExportResult:
    """Export ``model`` to ``output``; returns the parity table. Writes nothing if the gate fails.

    ``precision`` int8 or fp16 derives that variant from the verified fp32 graph and records
    its agreement with fp32 in the metadata (``segtool.variant``).
    """
    output = Path(output)
    progress("loading weights")
    graph, meta = build_graph(model, weights, seed, labels_output)
    progress("counting FLOPs")
    meta.extra["flops"] = count_flops(graph)
    progress("exporting to ONNX")
    proto = to_onnx(graph, opset)
    if verify:
        meta.extra["parity"] = {"atol": atol, "min_agreement": min_agreement, "provider": "CPUExecutionProvider",
                                "rows": []}
    proto.producer_name, proto.producer_version = "segtool", _version("segtool")
    proto.doc_string = f"{meta.model} ({meta.weights_label}) exported by segtool"
    progress("checking the graph")
    onnx.checker.check_model(proto, full_check=True)
    rows, passed = [], True
    if verify:
        progress("comparing ONNX Runtime with PyTorch")
        rows = parity.compare(graph, proto.SerializeToString(), shapes, meta.mean, meta.std)
        passed = all(r.passes(atol, min_agreement) for r in rows)
        meta.extra["parity"]["rows"] = [r.as_dict() for r in rows]
    if not passed:
        return ExportResult(None, meta, rows, passed=False)
    meta.extra["precision"] = precision
    if precision != "fp32":
        from .variants import make_variant

        progress(f"making the {precision} variant")
        data, record = make_variant(proto.SerializeToString(), precision, meta.mean, meta.std, shapes, calibration,
                                    calibration_count, calibration_size)
        meta.extra["variant"] = record
        proto = onnx.load_from_string(data)
        del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta.to_props())
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, proto.SerializeToString())
    return ExportResult(output, meta, rows, passed=True)
