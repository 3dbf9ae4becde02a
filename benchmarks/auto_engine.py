"""The default run (``--device auto``) against ONNX Runtime fp32 and OpenVINO f32, on the same file (issue 27).

    python benchmarks/auto_engine.py MODEL.onnx [MODEL.onnx ...] [--sizes 520x520,640x360] [--runs 10]

For each model: what auto chooses here and why, what the first-use timing costs (an empty cache folder)
and what a cached start costs; then the inference latency of the three, taking turns run by run (a busy
machine weighs on all alike), median and p90 ms per size, and the labels' agreement with ONNX Runtime
fp32. Prints Markdown; quote it with the CPU flags it prints. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from segtool.runtime import Segmenter
from segtool.runtime.model.session import cpu_flags
from segtool.runtime.tools.agreement import as_labels
from segtool.runtime.tools.synthetic import smooth_image

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def opened(model: Path, device: str) -> tuple[Segmenter, float]:
    started = time.perf_counter()
    seg = Segmenter(model, device=device, warn_random=False)
    return seg, time.perf_counter() - started


def bench(model: Path, sizes: list[tuple[int, int]], runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="auto-engine-cache-") as cache:
        os.environ["SEGTOOL_CACHE"] = cache  # an empty cache: the first start times the candidates
        auto, first_s = opened(model, "auto")
        _, cached_s = opened(model, "auto")
    choice = auto.choice
    print(f"\n### {model.name}\n")
    print(f"- auto chose: `{choice.line if choice else auto.provider}`")
    print(f"- start with auto: {first_s:.2f} s the first time (timing, empty cache), {cached_s:.2f} s cached")
    engines = {"default (auto)": auto, "ONNX Runtime fp32 (`cpu`)": opened(model, "cpu")[0]}
    try:
        engines["OpenVINO f32 (`openvino`)"] = opened(model, "openvino")[0]
    except Exception as exc:
        print(f"- openvino: {exc}")
    print("\n| engine | runs on | " + " | ".join(f"{w}x{h} median / p90 ms" for w, h in sizes) + " | agreement |")
    print("| --- | --- | " + " | ".join("---:" for _ in sizes) + " | ---: |")
    results: dict[str, list[str]] = {name: [] for name in engines}
    agreement: dict[str, list[float]] = {name: [] for name in engines}
    reference = engines["ONNX Runtime fp32 (`cpu`)"]
    for width, height in sizes:
        tensor = reference.prepare([smooth_image(height, width, seed=width + height, cell=24)])
        expected = as_labels(reference.run(tensor))
        times: dict[str, list[float]] = {name: [] for name in engines}
        for seg in engines.values():
            seg.run(tensor)  # warm-up
        for _ in range(runs):
            for name, seg in engines.items():
                started = time.perf_counter()
                output = seg.run(tensor)
                times[name].append((time.perf_counter() - started) * 1e3)
        for name, seg in engines.items():
            ms = np.array(times[name])
            results[name].append(f"{np.median(ms):.1f} / {np.percentile(ms, 90):.1f}")
            agreement[name].append(float(np.mean(as_labels(seg.run(tensor)) == expected)))
        del output
    for name, seg in engines.items():
        print(f"| {name} | {seg.provider} | " + " | ".join(results[name]) + f" | {min(agreement[name]):.2%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--sizes", default="520x520,640x360")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    have = set(cpu_flags())
    print(
        f"CPU flags: {' '.join(f for f in FLAGS if f in have) or '-'}; {os.cpu_count()} cores; "
        f"{time.strftime('%Y-%m-%d')}"
    )
    for model in args.models:
        bench(model, sizes, args.runs)  # type: ignore[arg-type]  # (width, height) pairs


if __name__ == "__main__":
    main()
