"""`segtool doctor`: can this machine run segtool models, and on what?"""

from __future__ import annotations

import ctypes
import os
import platform
from importlib import metadata
from pathlib import Path

import onnxruntime as ort
import typer

from segtool.runtime.session import cpu_flags

from .console import error_line, out

ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-silicon")
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "f16c", "asimd", "asimddp")


def installed_ort() -> list[str]:
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


def cuda_provider_load() -> str:
    """Try to load ORT's CUDA provider library the way ORT does: the error names what is missing."""
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not library.exists():
        return "not in this build"
    preload = getattr(ort, "preload_dlls", None)
    if preload:
        try:
            preload(directory="")
        except Exception as exc:  # noqa: BLE001 - reported below
            return f"preload_dlls failed: {exc}"
    try:
        ctypes.CDLL(str(library))
        return "loads (CUDA and cuDNN libraries found)"
    except OSError as exc:
        return f"does not load: {exc}"


def doctor():
    """Report ONNX Runtime, providers, CUDA libraries, CPU features and threads."""
    problems = []
    dists = installed_ort()
    if len(dists) > 1:
        problems.append(f"several ONNX Runtime packages are installed ({', '.join(dists)}): they overwrite each "
                        "other's files; uninstall all and install one")
    rows = [
        ("python", f"{platform.python_version()} on {platform.machine()} {platform.system()}"),
        ("onnxruntime", f"{ort.__version__} from {', '.join(dists) or 'unknown package'}"),
        ("providers", ", ".join(ort.get_available_providers())),
    ]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        rows.append(("CUDA provider", cuda_provider_load()))
    flags = [f for f in CPU_FLAGS if f in set(cpu_flags())]
    rows += [
        ("CPU", f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"),
        ("CPU features", ", ".join(flags) or "none of " + ", ".join(CPU_FLAGS)),
        ("int8 on CPU", "VNNI present: s8s8 and u8s8 both fast" if {"avx512_vnni", "avx_vnni"} & set(flags)
         else "no VNNI: segtool's u8 activations / s8 weights is the fast int8 path"),
        ("threads", f"ONNX Runtime intra-op default = physical cores; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"),
    ]
    for key, value in rows:
        out.print(f"  {key + ':':15} {value}", markup=False)
    for problem in problems:
        error_line(problem)
    if problems:
        raise typer.Exit(1)
