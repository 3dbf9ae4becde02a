"""``export_model``: build -> load weights -> ONNX -> metadata -> check -> parity -> atomic write.

Nothing is written unless every step passed; the file then carries its own metadata.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata as importlib_metadata
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
import torchvision

from segtool.runtime.errors import ParityError, UsageError
from segtool.runtime.files.images import atomic_write_bytes, ensure_writable_dir
from segtool.runtime.model.metadata import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OUTPUT_LABELS,
    OUTPUT_LOGITS,
    Extras,
    ModelMetadata,
)
from segtool.runtime.model.voc import voc_colormap

from . import parity
from .config import DEFAULT_MODEL, ExportConfig
from .graph import SegmentationGraph, to_onnx
from .models import get_spec
from .weights import apply_state_dict, resolve_weights


@dataclass
class ExportResult:
    path: Path
    meta: ModelMetadata
    parity: list[parity.ParityRow] = field(default_factory=list)


def _version(dist: str) -> str:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def build_graph(
    model: str = DEFAULT_MODEL, weights: str = "DEFAULT", seed: int = 0, labels_output: bool = False
) -> tuple[SegmentationGraph, ModelMetadata]:
    """The PyTorch side: the wrapped model with its weights, and the metadata describing it."""
    spec = get_spec(model)
    state, identity = resolve_weights(spec, weights, seed)
    torch.manual_seed(seed)
    net = spec.build()
    if state is not None:
        apply_state_dict(net, state, identity.get("file", weights), spec.name)
    meta = ModelMetadata(
        model=spec.name,
        classes=spec.classes,
        palette=voc_colormap(len(spec.classes)),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        channel_order="RGB",
        output=OUTPUT_LABELS if labels_output else OUTPUT_LOGITS,
        weights=identity,
        versions={
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "onnx": onnx.__version__,
            "onnxscript": _version("onnxscript"),
            "onnxruntime": ort.__version__,
            "segtool": _version("segtool"),
            "python": platform.python_version(),
        },
        extra={"published": spec.published()},  # torchvision's figures for its pretrained weights
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


def check_output(output: Path, config: ExportConfig) -> None:
    """Refuse, before any work, an output that is not a regular file or cannot be written, and a
    calibration source that does not exist."""
    if output.exists() and not output.is_file():
        raise UsageError(f"--output {output} exists and is not a regular file")
    ensure_writable_dir(output.parent)
    if config.calibration is not None and not Path(config.calibration).exists():
        raise UsageError(f"--calibration {config.calibration}: no such folder or video")


def export_model(
    output: str | Path | None = None,
    config: ExportConfig | None = None,
    progress: Callable[[str], None] = lambda stage: None,
    **overrides,
) -> ExportResult:
    """Export ``config.model`` to ``output`` (default: ``config.default_output()``); returns the result.

    Keyword ``overrides`` replace fields of ``config`` (``export_model("m.onnx", weights="random")``).
    ``progress`` hears each stage as it starts. A failing parity gate raises ``ParityError`` with
    the table, and nothing is written. ``precision`` int8 or fp16 derives that variant from the
    verified fp32 graph and records its agreement with fp32 in the metadata (``segtool.variant``).
    """
    config = replace(config or ExportConfig(), **overrides)
    output = Path(output) if output is not None else config.default_output()
    check_output(output, config)  # found now, not after a minute of exporting
    progress("loading weights")
    graph, meta = build_graph(config.model, config.weights, config.seed, config.labels_output)
    progress("counting FLOPs")
    extra: Extras = {**meta.extra, "flops": count_flops(graph), "precision": config.precision}
    progress("exporting to ONNX (torch.onnx, dynamo)")
    proto = to_onnx(graph, config.opset)
    proto.producer_name, proto.producer_version = "segtool", _version("segtool")
    proto.doc_string = f"{meta.model} ({meta.weights_label}) exported by segtool"
    progress("checking the graph (onnx.checker)")
    onnx.checker.check_model(proto, full_check=True)
    rows: list[parity.ParityRow] = []
    if config.verify:
        gate = config.gate
        progress(f"parity gate: PyTorch vs ONNX Runtime on {len(config.shapes)} shapes")
        rows = parity.compare(graph, proto.SerializeToString(), config.shapes, meta.mean, meta.std, gate)
        extra["parity"] = {"atol": gate.atol, "rtol": gate.rtol, "min_agreement": gate.min_agreement,
                                "rule": gate.describe(), "provider": "CPUExecutionProvider",
                                "rows": [r.as_dict() for r in rows]}  # fmt: skip
        if not all(r.passes(gate) for r in rows):
            raise ParityError(f"parity gate failed ({gate.describe()}): ONNX output differs from PyTorch; "
                              f"{output} was not written", rows)  # fmt: skip
    if config.precision != "fp32":
        from .variants import make_variant

        progress(f"making the {config.precision} variant")
        data, record = make_variant(proto.SerializeToString(), config, meta.mean, meta.std, progress)
        extra["variant"] = record
        proto = onnx.load_from_string(data)
        del proto.metadata_props[:]
    meta = replace(meta, extra=extra)
    onnx.helper.set_model_props(proto, meta.to_props())
    progress(f"writing {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, proto.SerializeToString())
    return ExportResult(output, meta, rows)
