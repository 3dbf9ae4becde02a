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

import cv2
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


def time_stages(steps, runs: int, warmup: int) -> dict:
    """Run a chain of five stage functions (each takes the previous one's result) ``warmup + runs``
    times; per-stage and total stats over the timed runs, and the first run as the cold latency."""
    samples = {stage: [] for stage in STAGES}
    totals, cold = [], None
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
    result = {stage: stats(v) for stage, v in samples.items()}
    result["total"] = stats(totals)
    result["cold_ms"] = cold * 1000
    return result


def bench_file(seg: Segmenter, image_path: Path, runs: int, warmup: int, workdir: Path) -> dict:
    """Time every stage of the runtime for one image file."""
    painter = Painter(seg.meta)
    steps = (
        lambda _: read_image(image_path),                                         # read
        lambda image: (image.shape[:2], seg.prepare([image])),                    # preprocess
        lambda prepared: (prepared[0], seg.run(prepared[1])),                     # inference
        lambda produced: seg.labels_at(produced[1], *produced[0])[0],             # postprocess
        lambda labels: atomic_write_bytes(workdir / "labels.png", painter.labels_png(labels)),  # write
    )
    return time_stages(steps, runs, warmup)


def sample_file(height: int, width: int, workdir: Path) -> Path:
    """A JPEG of the requested size (smooth random colours) for sizes with no user image."""
    rng = np.random.default_rng(height * 7919 + width)
    coarse = rng.integers(0, 256, size=(max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    path = workdir / f"sample_{width}x{height}.jpg"
    atomic_write_bytes(path, encode_image(image, ".jpg"))
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
    return {"backend": "onnxruntime", "provider": seg.provider, "precision": seg.meta.precision,
            "output": seg.meta.output, "threads": os.cpu_count(), "session_create_s": session_s,
            "peak_rss_mb": peak_rss_mb(), "model": seg.meta.model, "weights": seg.meta.weights_label,
            "weights_record": seg.meta.weights, "results": results}


def bench_video(seg: Segmenter, path: Path, frames: int, size: tuple[int, int] | None, max_size: int | None) -> dict:
    """End-to-end video FPS (decode -> infer -> overlay mp4) against pure inference FPS on the same
    frames, measured back to back in this process."""
    from .video import VideoOutputs, VideoSource, segment_frames

    with VideoSource(str(path)) as video:
        decoded = list(video.frames(frames))
        fps_in, width, height = video.fps, video.width, video.height
    tensors = [seg.prepare([f], "bgr", max_size, size) for f in decoded]
    seg.run(tensors[0])  # warm-up at this shape
    started = time.perf_counter()
    for tensor in tensors:
        seg.run(tensor)
    pure_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="segtool-bench-video-") as tmp:
        started = time.perf_counter()
        with VideoSource(str(path)) as video:
            outputs = VideoOutputs(Path(tmp), "bench", fps_in, width, height, Painter(seg.meta), {"overlay"})
            for frame, labels in segment_frames(seg, video.frames(frames), max_size, size):
                outputs.put(frame, labels)
            outputs.close()
        e2e_s = time.perf_counter() - started
    n = len(decoded)
    return {"video": str(path), "frames": n, "frame_size": [width, height],
            "inference_size": list(tensors[0].shape[2:][::-1]), "pure_inference_fps": n / pure_s,
            "end_to_end_fps": n / e2e_s, "ratio": pure_s / e2e_s}
