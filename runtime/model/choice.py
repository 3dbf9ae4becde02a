"""``--device auto``: the fastest engine here among those the file itself proves correct.

A segtool file records, in ``segtool.agreements`` (written by `segtool export`, `adopt` and `tune`),
how the labels of each other engine and precision agreed with ONNX Runtime's CPU in the file's own
precision: OpenVINO f32, bf16, f16 (``segtool.runtime.tools.precisions``). ``auto`` then takes:

1. CUDA when ONNX Runtime offers it and it really starts (the GPU first, as before);
2. else, among ONNX Runtime's CPU (always a candidate: today's default) and every recorded engine
   that is installed, computes in a precision this CPU has natively (bf16: avx512_bf16/amx_bf16;
   f16: avx512_fp16/amx_fp16) and agrees on at least ``Policy.min_agreement`` of the pixels, the one
   measured fastest on this machine; another engine must beat ONNX Runtime by more than ``NOISE``.

The timing is short (one small input, a few interleaved runs, ``TIMING_BUDGET_S``) and runs once:
its figures are cached in the user's cache folder (``$SEGTOOL_CACHE``, else
``$XDG_CACHE_HOME/segtool``, else ``~/.cache/segtool``), keyed by the file's sha256, the CPU's flags,
the library versions and the thread count, the way TensorRT keeps a timing cache.

An int8 file records what it assumed of the CPU (``variant.int8_target``); ``int8_warning`` says once
per file what a file that assumes VNNI does on a CPU without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from segtool.runtime.model.engines import AGREEMENT_TARGET, Engine, PrecisionCheck, onnx_metadata, openvino_target
from segtool.runtime.model.metadata import PREFIX, ModelMetadata
from segtool.runtime.model.session import CPU, CUDA, cpu_flags

log = logging.getLogger(__name__)

AGREEMENTS = "agreements"  # the metadata key (segtool.agreements)
REFERENCE = "cpu"  # ONNX Runtime's CPU in the file's own precision: always a candidate
NOISE = 0.05  # another engine is chosen only when more than 5% faster than ONNX Runtime's CPU
TIMING_BUDGET_S = 2.0  # the interleaved timing stops after this (at least two rounds)
TIMING_ROUNDS = 5
TIMING_SIZE = (320, 240)  # (width, height) of the timed input, unless the graph fixes its size
CACHE_FILE = "engine-timings.json"
#: the CPU flags that say a precision is computed natively (not emulated)
NATIVE = {"f32": (), "bf16": ("avx512_bf16", "amx_bf16"), "f16": ("avx512_fp16", "amx_fp16")}
PRECISION_CHOICES = ("auto", "fp32")


@dataclass(frozen=True)
class Policy:
    """What ``auto`` may take: engines recorded at ``min_agreement`` or above; ``precision`` "fp32"
    keeps to engines computing in f32 (no bf16/f16)."""

    min_agreement: float = AGREEMENT_TARGET
    precision: str = "auto"

    def __post_init__(self) -> None:
        from segtool.runtime.errors import UsageError

        if self.precision not in PRECISION_CHOICES:
            raise UsageError(f"--precision takes {' or '.join(PRECISION_CHOICES)} (got {self.precision!r})")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise UsageError(f"--min-agreement takes a share of pixels, 0..1 (got {self.min_agreement})")


@dataclass(frozen=True)
class Choice:
    """What ``auto`` chose, and why, in one line (``line``)."""

    device: str  # the --device spelling that runs it
    provider: str
    why: str
    timings_ms: dict[str, float] = field(default_factory=dict)  # median ms per candidate (empty: nothing timed)
    cached: bool = False
    skipped: dict[str, str] = field(default_factory=dict)  # recorded device -> why it was not a candidate
    check: PrecisionCheck | None = None  # the recorded agreement of a reduced precision chosen

    @property
    def line(self) -> str:
        return f"device auto: {self.device} ({self.provider}): {self.why}"


def cache_dir() -> Path:
    """The user's cache folder for segtool: $SEGTOOL_CACHE, $XDG_CACHE_HOME/segtool or ~/.cache/segtool."""
    if os.environ.get("SEGTOOL_CACHE"):
        return Path(os.environ["SEGTOOL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "segtool"


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def native(precision: str, flags: set[str]) -> bool:
    """Whether a CPU with ``flags`` computes in ``precision`` natively (f32 always)."""
    needs = NATIVE.get(precision)
    return needs is not None and (not needs or any(flag in flags for flag in needs))


def agreement_record(props: dict[str, str]) -> dict | None:
    """The file's ``segtool.agreements`` record, or None when it has none (or an unreadable one)."""
    text = props.get(PREFIX + AGREEMENTS)
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("rows"), list) else None


def candidates(record: dict | None, policy: Policy, flags: set[str]) -> tuple[list[dict], dict[str, str]]:
    """(the recorded rows ``auto`` may time, in record order; why each other recorded row may not)."""
    taken: list[dict] = []
    skipped: dict[str, str] = {}
    for row in (record or {}).get("rows", []):
        device = str(row.get("device", ""))
        try:
            target = openvino_target(device)
        except Exception:
            target = None
        agreement = row.get("agreement")
        if target is None or target.family != "CPU":
            skipped[device] = "not a CPU engine auto takes"
        elif not isinstance(agreement, (int, float)):
            skipped[device] = str(row.get("error", "not measured"))[:80]
        elif policy.precision == "fp32" and target.precision != "f32":
            skipped[device] = f"{target.precision}: --precision fp32"
        elif agreement < policy.min_agreement:
            skipped[device] = f"recorded at {agreement:.2%} agreement, below {policy.min_agreement:.2%}"
        elif not native(target.precision, flags):
            skipped[device] = f"this CPU has no native {target.precision}"
        elif not openvino_installed():
            skipped[device] = "openvino is not installed"
        else:
            taken.append(row)
    return taken, skipped


def pick(timings_ms: dict[str, float], reference: str = REFERENCE, noise: float = NOISE) -> str:
    """The fastest candidate; another than ``reference`` only when faster than it by more than ``noise``."""
    best = min(timings_ms, key=timings_ms.__getitem__)
    if reference in timings_ms and timings_ms[best] >= timings_ms[reference] * (1 - noise):
        return reference
    return best


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """The file's sha256, computed once per (path, size, mtime) in a process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def cache_key(path: Path, threads: int | None) -> str:
    """What a timing is valid for: the file, the machine (CPU flags), the libraries, the threads."""
    parts = [
        file_sha256(path),
        platform.machine(),
        " ".join(cpu_flags()),
        f"ort {ort.__version__}",
        f"openvino {version('openvino')}",
        f"threads {threads or 0}",
        f"cores {os.cpu_count()}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def read_cache() -> dict:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(key: str, entry: dict) -> None:
    """Merge one entry into the cache file, atomically (a reader sees the old file or the new one);
    a cache that cannot be written is a log line, never a failure."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = read_cache() | {key: entry}
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{CACHE_FILE}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(temp, folder / CACHE_FILE)
    except OSError as exc:
        log.info("engine timing cache %s not written (%s)", folder, exc)
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(temp)


def timing_input(engine: Engine) -> np.ndarray:
    """A [1, 3, H, W] float32 input at ``TIMING_SIZE`` (the graph's own size and batch where it fixes them)."""
    dims = engine.session.get_inputs()[0].shape
    fixed = [d if isinstance(d, int) and d > 0 else None for d in list(dims) + [None] * 4][:4]
    shape = (fixed[0] or 1, 3, fixed[2] or TIMING_SIZE[1], fixed[3] or TIMING_SIZE[0])
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def time_engines(engines: dict[str, Engine], budget_s: float = TIMING_BUDGET_S) -> dict[str, float]:
    """Median ms of each engine on one input: one warm-up each, then rounds taking turns (a shared
    machine's drift weighs on all alike), ``TIMING_ROUNDS`` or until ``budget_s`` after two."""
    tensor = timing_input(next(iter(engines.values())))
    for engine in engines.values():
        engine.run(tensor)
    times: dict[str, list[float]] = {device: [] for device in engines}
    started = time.perf_counter()
    for k in range(TIMING_ROUNDS):
        for device, engine in engines.items():
            begin = time.perf_counter()
            engine.run(tensor)
            times[device].append(time.perf_counter() - begin)
        if k >= 1 and time.perf_counter() - started > budget_s:
            break
    return {device: round(float(np.median(spent)) * 1e3, 3) for device, spent in times.items()}


Opener = Callable[[Path, str, int | None, bool], Engine]


def recorded_check(row: dict, record: dict, policy: Policy, precision: str) -> PrecisionCheck:
    """The agreement gate's figure, as the file records it (no second measurement at each start)."""
    size = record.get("size") or [0, 0]
    return PrecisionCheck(
        precision,
        float(row["agreement"]),
        policy.min_agreement,
        int(record.get("images", 0)),
        (int(size[0]), int(size[1])),
        str(record.get("reference", "ONNX Runtime CPU")),
        pixels=int(record.get("pixels", 0)),
        recorded=str(record.get("pictures", "")),
    )


def choose(path: Path, threads: int | None, cache: bool, policy: Policy, opener: Opener) -> tuple[Engine, Choice]:
    """The engine ``auto`` runs ``path`` on, opened, and the ``Choice`` that says why."""
    flags = set(cpu_flags())
    gpu: Engine | None = None
    if CUDA in ort.get_available_providers():
        gpu = opener(path, "auto", threads, cache)  # CUDA when it really starts, else ONNX Runtime's CPU
        if gpu.provider != CPU:
            return gpu, Choice("cuda", gpu.provider, "CUDA starts here: the GPU first")
    record = agreement_record(onnx_metadata(path))
    rows, skipped = candidates(record, policy, flags)
    if not rows:
        engine = gpu or opener(path, REFERENCE, threads, cache)
        why = (
            "the file records no other engine (`segtool tune MODEL` measures them)"
            if record is None
            else "no recorded engine qualifies here"
        )
        return engine, Choice(REFERENCE, engine.provider, why, skipped=skipped)
    devices = [REFERENCE] + [str(row["device"]) for row in rows]
    key = cache_key(path, threads)
    cached = read_cache().get(key, {}).get("timings_ms", {})
    opened: dict[str, Engine] = {}
    if all(isinstance(cached.get(d), (int, float)) for d in devices):
        timings, from_cache = {d: float(cached[d]) for d in devices}, True
    else:
        opened[REFERENCE] = gpu or opener(path, REFERENCE, threads, cache)
        for device in devices[1:]:
            try:
                opened[device] = opener(path, device, threads, cache)
            except Exception as exc:  # a recorded engine that does not start here is no candidate
                skipped[device] = f"does not start here ({str(exc).splitlines()[0][:80]})"
        timings, from_cache = time_engines(opened), False
        write_cache(
            key,
            {
                "timings_ms": cached | timings,
                "model": str(path),
                "flags": sorted(flags),
                "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "input": list(TIMING_SIZE),
            },
        )
    chosen = pick(timings)
    engine = opened.get(chosen) or opener(path, chosen, threads, cache)
    opened.clear()
    row = next((r for r in rows if r["device"] == chosen), None)
    check = None
    if row is not None and engine.reduced:
        check = recorded_check(row, record or {}, policy, engine.reduced)
    return engine, Choice(
        chosen, engine.provider, reason(chosen, timings, row, policy, from_cache), timings, from_cache, skipped, check
    )


def reason(chosen: str, timings: dict[str, float], row: dict | None, policy: Policy, cached: bool) -> str:
    timed = ", ".join(f"{device} {ms:.1f} ms" for device, ms in sorted(timings.items(), key=lambda kv: kv[1]))
    width, height = TIMING_SIZE
    how = f"timed {'earlier (cached)' if cached else 'now'} at {width}x{height}: {timed}"
    if chosen == REFERENCE:
        return f"no recorded engine is more than {NOISE:.0%} faster than ONNX Runtime's CPU here ({how})"
    speedup = timings[REFERENCE] / max(timings[chosen], 1e-9)
    agreement = (
        f"its labels agree with the file's own on {row['agreement']:.2%} of pixels (recorded; target "
        f"{policy.min_agreement:.2%})"
        if row
        else ""
    )
    return f"{speedup:.2f}x ONNX Runtime's CPU speed, {agreement} ({how})"


_WARNED: set[str] = set()
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


def int8_warning(meta: ModelMetadata, path: Path) -> str | None:
    """Once per file: a warning when an int8 file assumes VNNI (8-bit weights, no ``reduce_range``)
    and this CPU has none: ONNX Runtime's AVX2 kernels then add pairs of u8 x s8 products in 16 bits,
    which saturate, so labels drift from the agreement recorded at export."""
    variant: Any = meta.extra.get("variant")
    target = variant.get("int8_target") if isinstance(variant, dict) else None
    if meta.precision != "int8" or not isinstance(target, dict) or not target.get("assumes_vnni"):
        return None
    flags = set(cpu_flags())
    if not flags or any(flag in flags for flag in VNNI_FLAGS) or str(path) in _WARNED:
        return None
    _WARNED.add(str(path))
    return (
        f"{path} was quantized for CPUs with VNNI (8-bit weights, reduce_range off) and this CPU has none: "
        "ONNX Runtime's AVX2 int8 kernels can saturate their 16-bit sums, so labels may agree with fp32 less "
        f"than the {variant.get('agreement', 0):.2%} recorded at export; re-export with --int8-target portable"
    )
