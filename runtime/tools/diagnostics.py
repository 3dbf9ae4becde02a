"""What `segtool doctor` checks: ONNX Runtime packages, providers, whether the CUDA provider's
library loads (and which library is missing if not), OpenVINO and its devices, CPU features and threads.

Doctor measures nothing (a timing of a tiny model says nothing about a real one): it lists the
engines that can start here and what ``auto`` picks; ``segtool bench MODEL --engines`` says which
is fastest for a model."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import platform
from importlib import metadata
from pathlib import Path

import onnxruntime as ort

from segtool.runtime.model.engines import openvino_variants
from segtool.runtime.model.session import CUDA, cpu_flags

ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-silicon",
)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
             "amx_int8", "f16c", "asimd", "asimddp")  # fmt: skip


def installed_ort() -> list[str]:
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


def cuda_provider_load() -> str:
    """Load ORT's CUDA provider library the way ORT does: the error names what is missing."""
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not library.exists():
        return "not in this build"
    preload = getattr(ort, "preload_dlls", None)
    if preload:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                preload(directory="")
            except Exception as exc:
                return f"preload_dlls failed: {exc}"
    try:
        ctypes.CDLL(str(library))
        return "loads (CUDA and cuDNN libraries found)"
    except OSError as exc:
        return f"does not load: {exc}"


def diagnose() -> tuple[list[tuple[str, str]], list[str]]:
    """(rows of findings, problems); a problem makes `doctor` exit 1."""
    problems = []
    dists = installed_ort()
    if len(dists) > 1:
        problems.append(
            f"several ONNX Runtime packages are installed ({', '.join(dists)}): they overwrite each "
            "other's files; uninstall all and install one"
        )
    rows = [
        ("python", f"{platform.python_version()} on {platform.machine()} {platform.system()}"),
        ("onnxruntime", f"{ort.__version__} from {', '.join(dists) or 'unknown package'}"),
        ("providers", ", ".join(ort.get_available_providers())),
    ]
    if CUDA in ort.get_available_providers():
        rows.append(("CUDA provider", cuda_provider_load()))
    rows += openvino_rows()
    flags = [f for f in CPU_FLAGS if f in set(cpu_flags())]
    vnni = {"avx512_vnni", "avx_vnni"} & set(flags)
    rows += [
        ("CPU", f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"),
        ("CPU features", ", ".join(flags) or "none of " + ", ".join(CPU_FLAGS)),
        (
            "int8 on CPU",
            "VNNI present: s8s8 and u8s8 both fast"
            if vnni
            else "no VNNI: segtool's u8 activations / s8 weights is the fast int8 path",
        ),
        (
            "threads",
            "ONNX Runtime intra-op default = physical cores; "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        ),
    ]
    return rows, problems


def openvino_rows() -> list[tuple[str, str]]:
    """OpenVINO's version and its devices as --device spellings (each precision they compute in), and
    which engine ``auto`` picks."""
    try:
        version = metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return [("openvino", "not installed (pip install 'segtool[openvino]' for --device openvino on Intel CPUs, "
                 "GPUs and NPUs)")]  # fmt: skip
    try:
        devices = openvino_variants()
    except Exception as exc:  # a broken install or plugin: said, not raised
        devices = [f"none ({str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__})"]
    return [
        ("openvino", f"{version}; devices: {', '.join(devices) or 'none'} (reduced precisions pass an agreement gate)"),
        (
            "engines",
            "auto = CUDA if it starts, else ONNX Runtime's CPU; OpenVINO only when asked for. Which is "
            "fastest for a model: segtool bench MODEL --engines",
        ),
    ]
