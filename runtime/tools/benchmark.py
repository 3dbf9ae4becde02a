"""Per-stage timings of the runtime pipeline, measured the same way for every backend.

Stages: read (decode the file), preprocess, inference, postprocess (argmax if the graph does
not do it, labels back to full size), write (paletted PNG, atomically). Medians and p90 over
``runs`` after ``warmup``; the first call at each input shape is reported as the cold latency.

``bench_engines`` (``segtool bench --engines``) puts every engine that starts here side by side:
ONNX Runtime's CPU (the reference), CUDA when it starts, each OpenVINO device in each precision
it computes in; inference latency per size, video FPS end to end, and agreement with ONNX Runtime's fp32.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from segtool.runtime.errors import SegtoolError, UsageError
from segtool.runtime.files.images import atomic_write_bytes, encode_image, read_image
from segtool.runtime.files.pictures import Painter
from segtool.runtime.files.sources import VIDEO, Source
from segtool.runtime.files.video_settings import video_module
from segtool.runtime.jobs import JobOptions, segment_video
from segtool.runtime.model.engines import openvino_variants
from segtool.runtime.model.segmenter import Segmenter
from segtool.runtime.model.session import CUDA, TENSORRT, cpu_flags
from segtool.runtime.tools.agreement import as_labels, compare_outputs
from segtool.runtime.tools.synthetic import smooth_image

STAGES = ("read", "preprocess", "inference", "postprocess", "write")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def stats(samples: list[float]) -> dict:
    a = np.asarray(samples) * 1000
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "n": len(a)}


def matmul_gflops(n: int = 4096, runs: int = 5) -> dict:
    """The machine's fp32 matrix-multiply rate (numpy/BLAS), the reference for 'fraction of limit'."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    flops = 2 * n**3
    return {"n": n, "median_gflops": flops / np.median(times) / 1e9, "best_gflops": flops / min(times) / 1e9}


def time_stages(steps, runs: int, warmup: int) -> dict:
    """Run a chain of five stage functions (each takes the previous one's result) ``warmup + runs``
    times; per-stage and total stats over the timed runs, and the first run as the cold latency."""
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    totals: list[float] = []
    cold = 0.0
    for i in range(warmup + runs):
        value, lap = None, []
        start = previous = time.perf_counter()
        for step in steps:
            value = step(value)
            now = time.perf_counter()
            lap.append(now - previous)
            previous = now
        if i == 0:
            cold = previous - start
        if i >= warmup:
            for stage, dt in zip(STAGES, lap):
                samples[stage].append(dt)
            totals.append(previous - start)
    result: dict = {stage: stats(v) for stage, v in samples.items()}
    result["total"] = stats(totals)
    result["cold_ms"] = cold * 1000
    return result


def bench_file(seg: Segmenter, image_path: Path, runs: int, warmup: int, workdir: Path) -> dict:
    """Time every stage of the runtime for one image file."""
    painter = Painter(seg.meta)
    steps = (
        lambda _: read_image(image_path),  # read
        lambda image: (image.shape[:2], seg.prepare([image])),  # preprocess
        lambda prepared: (prepared[0], seg.run(prepared[1])),  # inference
        lambda produced: seg.labels_at(produced[1], *produced[0])[0],  # postprocess
        lambda labels: atomic_write_bytes(workdir / "labels.png", painter.labels_png(labels)),  # write
    )
    return time_stages(steps, runs, warmup)


def sample_file(height: int, width: int, workdir: Path) -> Path:
    """A JPEG of the requested size (smooth random colours) for sizes with no user image."""
    path = workdir / f"sample_{width}x{height}.jpg"
    atomic_write_bytes(path, encode_image(smooth_image(height, width, seed=height * 7919 + width, cell=24), ".jpg"))
    return path


def bench_runtime(model: Path, inputs: list[Path], device: str, runs: int, warmup: int, cache: bool = False) -> dict:
    """The ONNX Runtime pipeline on each input, in this process."""
    started = time.perf_counter()
    seg = Segmenter(model, device=device, warn_random=False, cache=cache)
    session_s = time.perf_counter() - started
    flops = seg.meta.extra.get("flops", {})
    results = []
    with tempfile.TemporaryDirectory(prefix="segtool-bench-") as tmp:
        for path in inputs:
            r = bench_file(seg, path, runs, warmup, Path(tmp))
            h, w = read_image(path).shape[:2]
            r["input"], r["height"], r["width"] = str(path), h, w
            if flops.get("per_pixel"):
                r["gflop"] = flops["per_pixel"] * h * w / 1e9
                r["gflops_per_s"] = r["gflop"] / (r["inference"]["median_ms"] / 1000)
            r["images_per_s"] = 1000 / r["total"]["median_ms"]
            results.append(r)
    return {
        "backend": "onnxruntime",
        "provider": seg.provider,
        "precision": seg.meta.precision,
        "output": seg.meta.output,
        "threads": os.cpu_count(),
        "session_create_s": session_s,
        "peak_rss_mb": peak_rss_mb(),
        "model": seg.meta.model,
        "weights": seg.meta.weights_label,
        "weights_record": seg.meta.weights,
        "results": results,
    }


def bench_video(seg: Segmenter, path: Path, frames: int, size: tuple[int, int] | None, max_size: int | None) -> dict:
    """End-to-end video FPS (decode -> infer -> overlay mp4, through the job layer) against pure
    inference FPS on the same frames, measured back to back in this process."""
    with video_module().VideoSource(str(path)) as video:
        decoded = list(video.frames(frames))
        width, height = video.width, video.height
    tensors = [seg.prepare([f], "bgr", max_size, size) for f in decoded]
    seg.run(tensors[0])  # warm-up at this shape
    started = time.perf_counter()
    for tensor in tensors:
        seg.run(tensor)
    pure_s = time.perf_counter() - started
    options = JobOptions(video_kinds=("overlay",), max_size=max_size, size=size, max_frames=frames)
    with tempfile.TemporaryDirectory(prefix="segtool-bench-video-") as tmp:
        started = time.perf_counter()
        result = segment_video(seg, Source(VIDEO, str(path), "bench"), Path(tmp), options)
        e2e_s = time.perf_counter() - started
    n = len(decoded)
    return {
        "video": str(path),
        "frames": n,
        "frame_size": [width, height],
        "inference_size": list(tensors[0].shape[2:][::-1]),
        "pure_inference_fps": n / pure_s,
        "end_to_end_fps": result.frames / e2e_s,
        "ratio": (pure_s / n) / (e2e_s / result.frames),
    }


def run_torch(model_name: str, seed: int, inputs: list[Path], runs: int, warmup: int, device: str) -> dict:
    """The seed's PyTorch pipeline in a child process: its own imports, its own peak memory."""
    command = [
        sys.executable,
        "-m",
        "segtool.export.torch_bench",
        model_name,
        str(seed),
        str(runs),
        str(warmup),
        device,
        *map(str, inputs),
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        if "No module named" in last:
            raise UsageError(f"--torch needs PyTorch: pip install 'segtool[export]' ({last})")
        raise SegtoolError(f"the PyTorch benchmark failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_report(
    model: Path,
    sizes: list[tuple[int, int]],
    images: list[Path],
    videos: list[Path],
    device: str = "auto",
    runs: int = 5,
    warmup: int = 1,
    torch: bool = False,
    matmul: bool = True,
    cache: bool = False,
    frames: int = 30,
    video_size: tuple[int, int] | None = None,
) -> dict:
    """Everything `segtool bench` measures, in one process: still images (per-stage timings,
    optionally the PyTorch pipeline on the same inputs), videos (end-to-end vs pure inference)
    and the matmul reference."""
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="segtool-bench-inputs-") as tmp:
        inputs = [sample_file(h, w, Path(tmp)) for w, h in sizes] + list(images)
        if inputs:
            report["runtime"] = bench_runtime(model, inputs, device, runs, warmup, cache)
            if torch:
                rt = report["runtime"]
                torch_device = "cuda" if rt["provider"] in (CUDA, TENSORRT) else "cpu"
                # Same architecture, seeded weights: timing does not depend on the weights' values.
                report["pytorch"] = run_torch(
                    rt["model"], rt["weights_record"].get("seed", 0), inputs, runs, warmup, torch_device
                )
    if videos:
        seg = Segmenter(model, device=device, warn_random=False, cache=cache)
        report["videos"] = [bench_video(seg, v, frames, video_size, None) | {"provider": seg.provider} for v in videos]
    if matmul:
        report["matmul"] = matmul_gflops()
    return report


ENGINE_SIZES = ((520, 520), (640, 360))  # (width, height) that `bench --engines` times by default
ENGINE_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def engine_devices() -> list[str]:
    """Every device whose engine may start here: ONNX Runtime's CPU first (the reference), CUDA when
    this ONNX Runtime offers it, then each OpenVINO device in each precision it computes in."""
    return ["cpu"] + (["cuda"] if CUDA in ort.get_available_providers() else []) + openvino_variants()


def bench_engines(
    model: Path,
    sizes: list[tuple[int, int]],
    images: list[Path],
    videos: list[Path],
    runs: int = 5,
    warmup: int = 1,
    frames: int = 30,
    video_size: tuple[int, int] | None = None,
    devices: list[str] | None = None,
) -> dict:
    """Every engine that starts on this machine, side by side on the same inputs (generated pictures
    at ``sizes``, and ``images`` at their own size): inference latency, end-to-end video FPS, and how
    its labels agree with ONNX Runtime's CPU (the file's own precision). A device that does not start,
    or a reduced precision the agreement gate refuses, is a row with its one-line error.

    The engines take turns, run by run, on each input: a machine whose load drifts (a shared box)
    weighs on all of them alike. The first run of each is its cold latency."""
    rows: list[dict] = []
    opened: list[tuple[dict, Segmenter]] = []
    for device in devices or engine_devices():
        started = time.perf_counter()
        try:
            seg = Segmenter(model, device=device, warn_random=False)
        except SegtoolError as exc:
            rows.append({"device": device, "error": str(exc)})
            continue
        row: dict = {"device": device, "provider": seg.provider, "reduced": seg.engine.reduced,
                     "open_s": time.perf_counter() - started, "results": []}  # fmt: skip
        if seg.precision_check:
            row["precision_check"] = vars(seg.precision_check) | {"size": list(seg.precision_check.size)}
        rows.append(row)
        opened.append((row, seg))
    inputs = [smooth_image(h, w, seed=h * 7919 + w, cell=24) for w, h in sizes] + [read_image(p) for p in images]
    classes: set[int] = set()
    for image in inputs if opened else []:
        tensor = opened[0][1].prepare([image])  # one file, one preprocessing for all
        outputs, cold = [], []
        for _, seg in opened:
            started = time.perf_counter()
            outputs.append(seg.run(tensor))
            cold.append(time.perf_counter() - started)
        times: list[list[float]] = [[] for _ in opened]
        for k in range(max(0, warmup - 1) + runs):
            for n, (_, seg) in enumerate(opened):
                started = time.perf_counter()
                seg.run(tensor)
                if k >= max(0, warmup - 1):
                    times[n].append(time.perf_counter() - started)
        reference = next((o for (row, _), o in zip(opened, outputs) if row["device"] == "cpu"), None)
        if reference is not None:  # one class everywhere (random weights often do that) makes any agreement 100%
            classes.update(np.unique(as_labels(reference)).tolist())
        for (row, _), output, spent, first in zip(opened, outputs, times, cold):
            result = {"width": tensor.shape[3], "height": tensor.shape[2], "cold_ms": first * 1000,
                      "inference": stats(spent)}  # fmt: skip
            if reference is not None:
                diff = compare_outputs(reference, output)
                result["agreement"] = diff.agreement
                if diff.max_abs_diff is not None:
                    result["max_abs_diff"], result["logit_range"] = diff.max_abs_diff, float(np.abs(reference).max())
            row["results"].append(result)
    for row, seg in opened:
        row["videos"] = [bench_video(seg, v, frames, video_size, None) for v in videos]
    opened.clear()
    ran = [r for r in rows if r.get("results")]

    def fastest(candidates: list[dict]) -> str | None:
        best = min(candidates, key=lambda r: sum(t["inference"]["median_ms"] for t in r["results"]), default=None)
        return best["device"] if best else None

    return {
        "model": str(model),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "flags": [f for f in ENGINE_CPU_FLAGS if f in set(cpu_flags())],
        },
        "runs": runs,
        "reference_classes": len(classes),
        "engines": rows,
        "fastest": fastest(ran),  # reduced precisions included: each passed the agreement gate
        "fastest_full_precision": fastest([r for r in ran if not r["reduced"]]),
    }
