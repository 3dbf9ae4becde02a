"""`segtool serve` latency and throughput against direct ``Segmenter`` calls, in one run.

The same images go through both paths: direct = decode, segment, encode the label PNG in this
process (what the server's worker does); served = POST /v1/segment?output=labels to a real
server on 127.0.0.1 (a child process) from 1, 4 and 16 concurrent clients. Reports median and
p99 latency and throughput per concurrency, and the server's overhead at concurrency 1.

    python benchmarks/serve_bench.py MODEL.onnx IMAGE [--max-size 512] [--requests 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from segtool.runtime import JobOptions, Painter, Segmenter
from segtool.runtime.files.images import decode_image
from segtool.runtime.jobs import segment_array
from segtool.runtime.model.session import cpu_flags


def stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "p50_ms": round(float(np.median(ms)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def direct(model: Path, data: bytes, max_size: int, requests: int) -> dict:
    seg = Segmenter(model, device="cpu", warn_random=False)
    painter = Painter(seg.meta)

    def once():
        image = decode_image(data, "bench")
        done = segment_array(seg, image, JobOptions(max_size=max_size), painter, ["labels"])
        return painter.encode("labels", done.pictures["labels"])

    once()  # warm-up at this shape
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    return stats(times) | {"throughput_rps": round(len(times) / sum(times), 3)}


def served(url: str, data: bytes, max_size: int, concurrency: int, requests: int) -> dict:
    def once(_):
        with httpx.Client(timeout=600) as client:
            started = time.perf_counter()
            response = client.post(f"{url}/v1/segment?output=labels&max_size={max_size}", content=data)
            return response.status_code, time.perf_counter() - started

    with ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        results = list(pool.map(once, range(requests)))
        wall = time.perf_counter() - started
    codes = sorted({code for code, _ in results})
    return stats([t for _, t in results]) | {"concurrency": concurrency, "codes": codes,
                                              "throughput_rps": round(requests / wall, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--max-size", type=int, default=512)
    parser.add_argument("--requests", type=int, default=12)
    args = parser.parse_args()
    data = args.image.read_bytes()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    segtool = str(Path(sys.executable).with_name("segtool"))
    server = subprocess.Popen([segtool, "serve", str(args.model), "--port", str(port), "--device", "cpu",
                               "--max-queue", "64"], stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        served(url, data, args.max_size, 1, 1)  # warm-up
        report = {"machine": {"cpu_flags": [f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))],
                              "cores": os.cpu_count(), "python": platform.python_version()},
                  "image": str(args.image), "max_size": args.max_size}  # fmt: skip
        report["direct"] = direct(args.model, data, args.max_size, args.requests)
        report["served"] = [served(url, data, args.max_size, c, max(args.requests, 2 * c)) for c in (1, 4, 16)]
        report["overhead_c1"] = round(report["served"][0]["p50_ms"] / report["direct"]["p50_ms"] - 1, 4)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
