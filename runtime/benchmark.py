"""Per-stage timings of the runtime pipeline, measured the same way for every backend.

Stages: read (decode the file), preprocess, inference, postprocess (argmax if the graph does
not do it, labels back to full size), write (paletted PNG, atomically). Medians and p90 over
``runs`` after ``warmup``; the first call at each input shape is reported as the cold latency.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from .imagefiles import atomic_write_bytes, encode_image, read_image
from .outputs import Painter
from .segmenter import Segmenter

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


def bench_file(seg: Segmenter, image_path: Path, runs: int, warmup: int, workdir: Path) -> dict:
    """Time every stage for one image file; returns stage stats and the cold first run."""
    painter = Painter(seg.meta)
    samples = {stage: [] for stage in STAGES}
    cold = None
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        image = read_image(image_path)
        t1 = time.perf_counter()
        tensor = seg.prepare([image])
        t2 = time.perf_counter()
        output = seg.run(tensor)
        t3 = time.perf_counter()
        labels = seg.labels_at(output, *image.shape[:2])[0]
        t4 = time.perf_counter()
        atomic_write_bytes(workdir / "labels.png", painter.labels_png(labels))
        t5 = time.perf_counter()
        if i == 0:
            cold = t5 - t0
        if i >= warmup:
            for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                samples[stage].append(dt)
    totals = [sum(samples[s][k] for s in STAGES) for k in range(runs)]
    result = {stage: stats(v) for stage, v in samples.items()}
    result["total"] = stats(totals)
    result["cold_ms"] = cold * 1000
    return result


def sample_file(height: int, width: int, workdir: Path) -> Path:
    """A JPEG of the requested size (smooth random colours) for sizes with no user image."""
    rng = np.random.default_rng(height * 7919 + width)
    coarse = rng.integers(0, 256, size=(max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    import cv2

    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    path = workdir / f"sample_{width}x{height}.jpg"
    atomic_write_bytes(path, encode_image(image, ".jpg"))
    return path


def bench_runtime(model: Path, inputs: list[Path], device: str, runs: int, warmup: int) -> dict:
    """The ONNX Runtime pipeline on each input, in this process."""
    started = time.perf_counter()
    seg = Segmenter(model, device=device, warn_random=False)
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
    return {"backend": "onnxruntime", "provider": seg.provider, "precision": seg.meta.precision,
            "output": seg.meta.output, "threads": os.cpu_count(), "session_create_s": session_s,
            "peak_rss_mb": peak_rss_mb(), "model": seg.meta.model, "weights": seg.meta.weights_label,
            "weights_record": seg.meta.weights, "results": results}
