"""ONNX Runtime session creation: which execution provider runs, and proof that it really does.

ONNX Runtime quietly falls back to the CPU when a GPU provider cannot start (missing CUDA
libraries, no driver), and logs the reason as multi-line errors. segtool asks for what the
user chose, then checks ``session.get_providers()``: ``auto`` takes the best provider that
really starts, without the log noise; an explicit ``cuda``/``tensorrt`` that cannot be had is
an error, never a silent CPU run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import platform
from pathlib import Path
from typing import Literal, get_args

import onnxruntime as ort

from segtool.runtime.errors import DeviceError, UsageError

Device = Literal["auto", "cpu", "cuda", "tensorrt"]
DEVICES: tuple[Device, ...] = get_args(Device)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

_QUIET, _ERRORS = 4, 3  # ONNX Runtime log severities: fatal only, errors


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Defaults chosen for varying input sizes on small machines.

    Memory patterns are planned per input shape and the CPU arena keeps the largest blocks it
    has seen, so with images of many sizes both make memory grow; turned off they keep the
    process flat at equal speed (see docs/BENCHMARKS.md).
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_mem_pattern = False
    so.enable_cpu_mem_arena = False
    # No busy-waiting between operators: on a small machine the decode and writer threads need those
    # cores (lraspp on walk.mp4 at 640x360, 2 cores: 17.2 -> 20.2 FPS end to end, docs/BENCHMARKS.md).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = threads
    # A failing kernel (std::bad_alloc in a Conv) raises an exception that becomes segtool's one line
    # for that input; ONNX Runtime's own log line about it would be a second, in another format.
    so.log_severity_level = _QUIET
    return so


def provider_chain(device: str, cache_dir: str | None = None, trt_options: dict | None = None) -> list:
    """The provider list handed to ONNX Runtime for a device name (options per ORT's EP docs;
    ``trt_options`` from ``engines.tensorrt_options``: fp16, profile shapes, caches)."""
    if device == "cpu":
        return [CPU]
    cuda = (
        CUDA,
        {
            "cudnn_conv_algo_search": os.environ.get("SEGTOOL_CUDNN_ALGO_SEARCH", "HEURISTIC"),
            "arena_extend_strategy": "kSameAsRequested",
        },
    )
    if device == "cuda":
        return [cuda, CPU]
    options: dict[str, object] = {"trt_fp16_enable": False}
    if cache_dir:
        options.update(
            trt_engine_cache_enable=True,
            trt_engine_cache_path=cache_dir,
            trt_timing_cache_enable=True,
            trt_timing_cache_path=cache_dir,
        )
    options.update(trt_options or {})
    return [(TENSORRT, options), cuda, CPU]


def _preload_gpu_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* wheels (``segtool[cuda]``, or torch's) when they are installed.

    ``onnxruntime.preload_dlls`` prints a line per library it cannot find; where no nvidia wheels
    exist, system CUDA (LD_LIBRARY_PATH) is ONNX Runtime's own business, so it is not called.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or importlib.util.find_spec("nvidia") is None:
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            preload(directory="")
        except Exception:
            pass


def cpu_flags() -> list[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return sorted(flags)


def optimized_cache_path(model_path: Path, provider: str = CPU) -> Path:
    """Where the optimized copy of ``model_path`` lives, keyed by everything that makes it valid:
    the file (path, size, mtime), the ONNX Runtime version, the provider and the machine."""
    st = model_path.stat()
    key = "|".join(
        [
            str(model_path.resolve()),
            str(st.st_size),
            str(st.st_mtime_ns),
            ort.__version__,
            provider,
            platform.machine(),
            " ".join(cpu_flags()),
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return model_path.with_name(f".{model_path.stem}.{digest}.optimized.onnx")


def _open_cpu(model, threads: int | None, cache: bool) -> ort.InferenceSession:
    """A CPU session; with ``cache``, the graph optimized once is saved beside the model and reused.

    ORT marks such a file as valid only for the environment that made it, hence the key above.
    """
    if not (cache and isinstance(model, str)):
        return _open(model, session_options(threads), [CPU], quiet=False)
    cached = optimized_cache_path(Path(model))
    if cached.is_file():
        options = session_options(threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # already optimized
        try:
            return _open(str(cached), options, [CPU], quiet=False)
        except Exception:
            cached.unlink(missing_ok=True)
    temp = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.onnx")
    options = session_options(threads)
    options.optimized_model_filepath = str(temp)
    try:
        session = _open(model, options, [CPU], quiet=False)
    except Exception:
        temp.unlink(missing_ok=True)
        return _open(model, session_options(threads), [CPU], quiet=False)
    try:
        os.replace(temp, cached)
    except OSError:
        temp.unlink(missing_ok=True)
    return session


def reference_session(model: bytes | str) -> ort.InferenceSession:
    """A plain CPU session with ONNX Runtime's defaults, for measurements (the parity gate, variant
    agreement, int8 calibration): the same numbers on every machine, no cache, errors only in the log."""
    options = ort.SessionOptions()
    options.log_severity_level = _ERRORS
    return ort.InferenceSession(model, options, providers=[CPU])


def _open(model, options: ort.SessionOptions, providers: list, quiet: bool) -> ort.InferenceSession:
    previous = options.log_severity_level
    if quiet:
        ort.set_default_logger_severity(_QUIET)
        options.log_severity_level = _QUIET
    try:
        return ort.InferenceSession(model, options, providers=providers)
    finally:
        if quiet:
            ort.set_default_logger_severity(_ERRORS)
            options.log_severity_level = previous


def create_session(
    model,
    device: str = "auto",
    threads: int | None = None,
    cache_dir: str | None = None,
    cache: bool = False,
    trt_options: dict | None = None,
) -> tuple[ort.InferenceSession, str]:
    """Open ``model`` (path or bytes) on ``device``; return the session and the provider running it.

    ``auto`` means CUDA when it really starts, else CPU (TensorRT builds engines for minutes on
    first use, so it is only used when asked for by name). ``cache`` keeps the optimized graph
    of CPU sessions beside the model (see ``_open_cpu``).
    """
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return _open_cpu(model, threads, cache), CPU
    wanted = TENSORRT if device == "tensorrt" else CUDA
    available = ort.get_available_providers()
    if wanted not in available:
        if device == "auto":
            return _open_cpu(model, threads, cache), CPU
        raise DeviceError(
            f"device {device!r} is not offered by this ONNX Runtime {ort.__version__} (providers: "
            f"{', '.join(available)}); install onnxruntime-gpu, e.g. pip install 'segtool[cuda]'"
        )
    _preload_gpu_libraries()
    # Quiet: when the GPU provider cannot start, ORT logs the reason as multi-line errors and
    # runs the session on the CPU instead; we report that ourselves (and `segtool doctor` shows why).
    session = _open(
        model,
        session_options(threads),
        provider_chain(device if device != "auto" else "cuda", cache_dir, trt_options),
        quiet=True,
    )
    running = session.get_providers()[0]
    if running != wanted and device != "auto":
        raise DeviceError(
            f"device {device!r} was requested but ONNX Runtime could not start {wanted} "
            f"(no GPU, driver, or CUDA/cuDNN libraries?); run `segtool doctor`, or use --device cpu"
        )
    return session, running
