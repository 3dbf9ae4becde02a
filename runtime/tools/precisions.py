"""The agreement record: how each other engine and precision this machine can run a file at labels
its pixels, against ONNX Runtime's CPU in the file's own precision, stored in the file
(``segtool.agreements``) by `segtool export`, `adopt` and `tune`, and read by ``--device auto``
(``segtool.runtime.model.choice``).

Measured on held-out pictures: the user's (the export's calibration folder or video, `tune --images`),
else the agreement gate's generated ones (``engines.gate_images``). Each row says what ran (engine,
version, precision and what it really computes in), the record where (CPU flags, machine, versions)
and on how many pixels. Measured here: OpenVINO's CPU in f32 and in each reduced precision this CPU
has natively (bf16 with avx512_bf16/AMX, f16 with avx512_fp16/AMX-FP16); TensorRT fp16 when
ONNX Runtime offers TensorRT and it starts (a GPU).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from segtool.runtime.errors import SegtoolError, UsageError
from segtool.runtime.files.images import atomic_write_bytes
from segtool.runtime.jobs import iter_images
from segtool.runtime.model.choice import AGREEMENTS, native, version
from segtool.runtime.model.engines import (
    GATE_IMAGES,
    GATE_SIZE,
    gate_images,
    openvino_target,
    openvino_variants,
    with_metadata,
)
from segtool.runtime.model.metadata import PREFIX, ModelMetadata
from segtool.runtime.model.segmenter import Segmenter, open_engine
from segtool.runtime.model.session import TENSORRT, cpu_flags
from segtool.runtime.tools.agreement import as_labels

log = logging.getLogger(__name__)

PICTURES = GATE_IMAGES  # generated pictures when none are given: the gate's
PICTURE_SIZE = GATE_SIZE  # (width, height) of generated ones
MAX_SIDE = 384  # the user's pictures are measured with their long side at most this
MAX_PICTURES = 16
RECORDED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_fp16",
    "amx_int8",
    "asimd",
    "sve",
)
GPU_FP16 = "tensorrt:fp16"


def devices_here() -> list[str]:
    """The engines this machine can measure besides ONNX Runtime's CPU: OpenVINO's CPU in f32 and in
    each reduced precision the CPU computes natively; TensorRT fp16 where ONNX Runtime offers it."""
    flags = set(cpu_flags())
    found = []
    for device in openvino_variants():
        target = openvino_target(device)
        if target is not None and target.family == "CPU" and native(target.precision, flags):
            found.append(device)
    if TENSORRT in ort.get_available_providers() and gpu_present():
        found.append(GPU_FP16)
    return found


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is here (its driver lists one), so that TensorRT is worth starting."""
    return any(Path("/proc/driver/nvidia/gpus").glob("*")) or Path("/dev/nvidia0").exists()


def generated_pictures() -> list[np.ndarray]:
    """Pictures nobody gave: the agreement gate's own (``engines.gate_images``), so that the record and the
    gate of an explicit ``--device openvino:CPU:bf16`` judge a file on the same pixels."""
    return gate_images(PICTURE_SIZE, PICTURES)


def read_pictures(source: Path, count: int = MAX_PICTURES) -> list[np.ndarray]:
    """Up to ``count`` pictures from a folder or a video (unreadable ones skipped with a log line)."""
    pictures = []
    for _name, image in iter_images([str(source)], count, on_error=lambda name, why: log.warning("skipped %s", why)):
        pictures.append(image)
    return pictures


def computes(device: str) -> str:
    if device == GPU_FP16:
        return "fp16 (TensorRT fp16 kernels)"
    target = openvino_target(device)
    return f"{target.precision} (OpenVINO INFERENCE_PRECISION_HINT)" if target else "the file's own precision"


def engine_name(device: str) -> str:
    if device == GPU_FP16:
        return f"ONNX Runtime {ort.__version__} TensorRT"
    return f"OpenVINO {(version('openvino') or '?').split('-')[0]}"


def measure(
    path: Path, pictures: list[np.ndarray] | None = None, source: str | None = None, devices: list[str] | None = None
) -> dict:
    """The agreement record of ``path``: for each device (``devices_here()`` by default), the share of
    pixels whose label equals ONNX Runtime CPU's on ``pictures`` (generated ones by default). A device
    that does not start is a row with its error; the record is written by ``record_in_file``."""
    reference = Segmenter(path, device="cpu", warn_random=False)
    if not pictures:
        pictures, source = generated_pictures(), f"{PICTURES} generated {PICTURE_SIZE[0]}x{PICTURE_SIZE[1]} pictures"
    tensors = [reference.prepare([picture], max_size=MAX_SIDE) for picture in pictures]
    truth = [as_labels(reference.forward(tensor)) for tensor in tensors]
    pixels = int(sum(labels.size for labels in truth))
    rows = []
    for device in devices_here() if devices is None else devices:
        row: dict = {"device": device, "engine": engine_name(device), "computes": computes(device)}
        started = time.perf_counter()
        try:
            engine = open_engine(path, device)
            same = sum(int(np.sum(as_labels(reference.forward(t, engine)) == ref)) for t, ref in zip(tensors, truth))
        except SegtoolError as exc:
            row["error"] = str(exc)[:200]
        else:
            row["agreement"] = round(same / max(pixels, 1), 6)
        row["seconds"] = round(time.perf_counter() - started, 2)
        rows.append(row)
    sizes = sorted({(t.shape[3], t.shape[2]) for t in tensors})
    return {
        "reference": f"ONNX Runtime {ort.__version__} CPU, the file's own precision",
        "pictures": source or f"{len(pictures)} pictures",
        "images": len(tensors),
        "size": list(sizes[0]) if len(sizes) == 1 else None,
        "pixels": pixels,
        "classes_seen": int(len(np.unique(np.concatenate([t.ravel() for t in truth])))) if truth else 0,
        "where": {
            "machine": platform.machine(),
            "cpu_flags": [flag for flag in RECORDED_FLAGS if flag in set(cpu_flags())],
            "onnxruntime": ort.__version__,
            "openvino": (version("openvino") or "not installed").split("-")[0],
        },
        "measured": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }


def record_in_file(path: Path, record: dict) -> None:
    """Store ``record`` in the file's metadata (``segtool.agreements``), atomically, every other byte kept."""
    data = with_metadata(path.read_bytes(), {PREFIX + AGREEMENTS: json.dumps(record, sort_keys=True)})
    atomic_write_bytes(path, data)


def summary(record: dict) -> list[str]:
    """One line per row, for people: device, agreement (or why not), on how many pixels."""
    lines = []
    for row in record.get("rows", []):
        if "agreement" not in row:
            lines.append(f"{row['device']}: not measured ({row.get('error', '?')})")
            continue
        lines.append(
            f"{row['device']}: {row['agreement']:.2%} of {record['pixels']} pixels labelled as "
            f"{record['reference']} labels them ({record['pictures']}; computes in {row['computes']})"
        )
    if record.get("classes_seen") == 1:
        lines.append("the reference labels hold one class only (random weights?): every agreement then reads high")
    return lines or ["no other engine to measure here (pip install 'segtool[openvino]' for OpenVINO)"]


def record_agreements(
    path: Path, meta: ModelMetadata, pictures: Path | None, progress: Callable[[str], None] = log.info
) -> ModelMetadata:
    """Measure the written file against every other engine here on ``pictures`` (a folder or a video;
    None: generated ones), store the record in the file, and return ``meta`` with it
    (`segtool export`, `adopt` and `tune`)."""
    found = None if pictures is None else read_pictures(pictures)
    if pictures is not None and not found:
        raise UsageError(f"{pictures}: no readable pictures to measure agreement on")
    label = f"{len(found)} pictures from {pictures}" if found else None
    devices = devices_here()
    progress(f"measuring label agreement of {', '.join(devices) or 'no other engine'} with ONNX Runtime CPU")
    record = measure(path, found, label, devices)
    record_in_file(path, record)
    return replace(meta, extra={**meta.extra, "agreements": record})
