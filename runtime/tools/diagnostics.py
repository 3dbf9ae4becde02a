"""What `segtool doctor` checks: ONNX Runtime packages, providers, whether the CUDA provider's
library loads (and which library is missing if not), OpenVINO and its devices, CPU features and threads.

On Arm (aarch64) the CPU features come from the kernel's hardware capabilities (getauxval), which are
the emulated CPU's under qemu-user too, whose /proc/cpuinfo is the host's; /proc/cpuinfo's
``Features`` line is the fallback. Doctor says whether the installed onnxruntime is a release known to
run instructions this CPU lacks (docs/EDGE.md: 1.21.0 on Armv8.0 cores such as the Raspberry Pi 4's).

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


# Arm features that decide which kernels ONNX Runtime runs: (name as /proc/cpuinfo spells it, auxv
# entry, bit). AT_HWCAP = 16 and AT_HWCAP2 = 26; bits from Linux's arch/arm64/include/uapi/asm/hwcap.h.
AT_HWCAP, AT_HWCAP2 = 16, 26
ARM_FEATURES = (
    ("fp", AT_HWCAP, 0),
    ("asimd", AT_HWCAP, 1),  # NEON: every fp32 kernel
    ("atomics", AT_HWCAP, 8),  # LSE atomics (Armv8.1)
    ("fphp", AT_HWCAP, 9),  # fp16 arithmetic (Armv8.2)
    ("asimdhp", AT_HWCAP, 10),
    ("asimddp", AT_HWCAP, 20),  # dot product: the fast int8 kernels (Armv8.2)
    ("sve", AT_HWCAP, 22),
    ("sve2", AT_HWCAP2, 1),
    ("i8mm", AT_HWCAP2, 13),  # int8 matrix multiply (Armv8.6)
    ("bf16", AT_HWCAP2, 14),
    ("sme", AT_HWCAP2, 23),
    ("sme2", AT_HWCAP2, 37),
)
# What an onnxruntime aarch64 wheel runs without asking the CPU first: Armv8.0's fp and asimd, and for
# the releases listed, more. 1.21.0's static initializers run an fp16 vector instruction (fmov v1.4h),
# so it stops with SIGILL at import on Armv8.0 cores such as the Raspberry Pi 4's Cortex-A72
# (microsoft/onnxruntime#23957; measured under qemu, docs/EDGE.md).
ORT_ARM_BASELINE = ("fp", "asimd")
ORT_ARM_NEEDS = {"1.21.0": ("fp", "asimd", "asimdhp")}


def arm_features_from_hwcap(hwcap: int, hwcap2: int) -> list[str]:
    """The features of ARM_FEATURES whose bit is set in AT_HWCAP / AT_HWCAP2, in ARM_FEATURES' order."""
    words = {AT_HWCAP: hwcap, AT_HWCAP2: hwcap2}
    return [name for name, entry, bit in ARM_FEATURES if words[entry] >> bit & 1]


def arm_features_from_cpuinfo(text: str) -> list[str]:
    """The features of ARM_FEATURES on /proc/cpuinfo's ``Features`` lines, in ARM_FEATURES' order."""
    found: set[str] = set()
    for line in text.splitlines():
        if line.startswith("Features"):
            found.update(line.split(":", 1)[1].split())
    return [name for name, _, _ in ARM_FEATURES if name in found]


def arm_features() -> tuple[list[str], str]:
    """(features, where they were read) of this Arm CPU: the kernel's hardware capabilities, else
    /proc/cpuinfo."""
    try:
        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
        hwcap, hwcap2 = getauxval(AT_HWCAP), getauxval(AT_HWCAP2)
    except (OSError, AttributeError):
        hwcap = hwcap2 = 0
    if hwcap:
        return arm_features_from_hwcap(hwcap, hwcap2), "AT_HWCAP"
    try:
        return arm_features_from_cpuinfo(Path("/proc/cpuinfo").read_text()), "/proc/cpuinfo"
    except OSError:
        return [], "nowhere (no AT_HWCAP, no /proc/cpuinfo)"


def ort_arm_missing(version: str, features: list[str]) -> list[str]:
    """The features onnxruntime ``version``'s aarch64 wheel needs that ``features`` lacks."""
    needs = ORT_ARM_NEEDS.get(version, ORT_ARM_BASELINE)
    return [name for name in needs if name not in features]


def arm_rows(version: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Doctor's rows for an Arm CPU: its features, which int8 kernels it has, and whether onnxruntime
    ``version`` needs a feature it lacks (a problem; such a release usually dies at import, before
    doctor can say so, which is why pyproject.toml leaves it out)."""
    features, source = arm_features()
    absent = [name for name, _, _ in ARM_FEATURES if name not in features]
    missing = ort_arm_missing(version, features)
    rows = [
        ("CPU features", f"{', '.join(features) or 'none'} (from {source}); absent: {', '.join(absent) or 'none'}"),
        (
            "int8 on CPU",
            "dot product (asimddp): fast int8 kernels" + (" and i8mm" if "i8mm" in features else "")
            if "asimddp" in features
            else "no dot product (Armv8.0): int8 runs on plain NEON kernels",
        ),
        (
            "ORT needs",
            f"{', '.join(ORT_ARM_NEEDS.get(version, ORT_ARM_BASELINE))}: "
            + (f"this CPU lacks {', '.join(missing)}" if missing else "all present"),
        ),
    ]
    problems = []
    if missing:
        problems.append(
            f"onnxruntime {version} needs {', '.join(missing)}, which this CPU lacks (it stops with SIGILL): "
            "install another release (docs/EDGE.md)"
        )
    return rows, problems


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
    rows.append(("CPU", f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"))
    if platform.machine().lower() in ("aarch64", "arm64"):
        arm, arm_problems = arm_rows(ort.__version__)
        rows += arm
        problems += arm_problems
    else:
        rows += x86_rows()
    rows.append(
        (
            "threads",
            "ONNX Runtime intra-op default = physical cores; "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        )
    )
    return rows, problems


def x86_rows() -> list[tuple[str, str]]:
    flags = [f for f in CPU_FLAGS if f in set(cpu_flags())]
    vnni = {"avx512_vnni", "avx_vnni"} & set(flags)
    return [
        ("CPU features", ", ".join(flags) or "none of " + ", ".join(CPU_FLAGS)),
        (
            "int8 on CPU",
            "VNNI present: s8s8 and u8s8 both fast"
            if vnni
            else "no VNNI: segtool's u8 activations / s8 weights is the fast int8 path",
        ),
    ]


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
