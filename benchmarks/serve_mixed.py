"""Small images against long requests on `segtool serve`: is a small image still answered promptly?

Starts `segtool serve MODEL` on 127.0.0.1 (a free port, CPU) and runs two phases of ``--seconds``
each. In both, one client sends a small JPEG (``--small``, ``POST /v1/segment?output=labels``) in a
loop, pausing ``--pause`` s between answers. Phase "alone" has nothing else; in phase "mixed", one
client sends a long video (``--frames`` frames of ``--video``) and one a huge JPEG (``--huge``, with
``max_size=0``: inferred at full resolution) in loops too. No request is sent after a phase's end,
and each waits at most ``--timeout`` s for its answer (none: counted as "timeout", at that time).

Prints a Markdown table: per phase and kind of request, the answers by status and the latency p50,
p99 and max. ``--pythonpath`` runs the server from another tree (e.g. the code before a change:
`git worktree add /tmp/old HEAD`, then a folder holding `segtool/{cli,export,runtime,serve,scale}`
links to it); ``--flag`` passes server flags (repeat it).

    python benchmarks/serve_mixed.py --model /tmp/lraspp.onnx [--seconds 60] [--pythonpath /tmp/oldpkg]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import av
import cv2
import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, flags: list[str], pythonpath: str | None) -> subprocess.Popen:
    segtool = str(Path(sys.executable).with_name("segtool"))
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    command = [segtool, "serve", str(model), "--port", str(port), "--device", "cpu", *flags]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"segtool serve exited: {process.communicate()[1]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("segtool serve did not become ready in 120 s")


def picture(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def jpeg(width: int, height: int, seed: int) -> bytes:
    return cv2.imencode(".jpg", picture(height, width, seed))[1].tobytes()


def video(width: int, height: int, frames: int) -> bytes:
    """An H.264 MP4 of drifting colour blobs."""
    base = picture(height, width * 2, 3)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for k in range(frames):
                shift = k * 4 % width
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, shift : shift + width]), format="bgr24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path.read_bytes()


def loop(url: str, kind: str, request: dict, until: float, pause: float, timeout: float, results: list) -> None:
    """Send ``request`` again and again until ``until``; (kind, status, seconds) into ``results``."""
    with httpx.Client(base_url=url, timeout=timeout) as client:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                status = str(client.request(**request).status_code)
            except httpx.TimeoutException:
                status = "timeout"
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            results.append((kind, status, time.perf_counter() - started))
            time.sleep(pause)


def phase(url: str, requests: dict[str, dict], seconds: float, pause: float, timeout: float) -> list:
    results: list = []
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(
            target=loop, args=(url, kind, request, until, pause if kind == "small" else 0.5, timeout, results)
        )
        for kind, request in requests.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    found = {f for line in text.splitlines() if line.startswith("flags") for f in line.split() if f in wanted}
    return " ".join(sorted(found)) or "none of " + "/".join(wanted)


def size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=60, help="length of each phase")
    parser.add_argument("--small", type=size, default=(320, 240), help="small JPEG, WxH")
    parser.add_argument("--huge", type=size, default=(8000, 5000), help="huge JPEG, WxH (sent with max_size=0)")
    parser.add_argument("--video", type=size, default=(640, 360), help="video frame size, WxH")
    parser.add_argument("--frames", type=int, default=100, help="frames of the long video")
    parser.add_argument("--pause", type=float, default=0.25, help="seconds between small images")
    parser.add_argument("--timeout", type=float, default=120, help="most seconds a request waits for its answer")
    parser.add_argument("--pythonpath", help="PYTHONPATH of the server (another tree's code)")
    parser.add_argument("--flag", action="append", default=[], help="a server flag (repeat), e.g. --flag=--drain-s=5")
    args = parser.parse_args()

    small = {"method": "POST", "url": "/v1/segment?output=labels", "content": jpeg(*args.small, seed=1)}
    long = {
        "video": {"method": "POST", "url": "/v1/segment-video", "content": video(*args.video, args.frames),
                  "headers": {"Content-Type": "video/mp4"}},
        "huge": {"method": "POST", "url": "/v1/segment?max_size=0&output=labels", "content": jpeg(*args.huge, seed=2),
                 "headers": {"Content-Type": "image/jpeg"}},
    }  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flags = ["--max-body-mb", "64", *(part for flag in args.flag for part in flag.split("=", 1))]
    server = start_server(args.model, port, flags, args.pythonpath)
    results = {}
    try:
        results["alone"] = phase(url, {"small": small}, args.seconds, args.pause, args.timeout)
        print(f"alone: {len(results['alone'])} requests", file=sys.stderr)
        results["mixed"] = phase(url, {"small": small, **long}, args.seconds, args.pause, args.timeout)
        print(f"mixed: {len(results['mixed'])} requests", file=sys.stderr)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
    print(f"\n`python benchmarks/serve_mixed.py {' '.join(sys.argv[1:])}`  ")
    print(f"model {args.model.name}, {os.cpu_count()} CPUs ({platform.machine()}; flags: {cpu_flags()}); "
          f"small JPEG {args.small[0]}x{args.small[1]} every {args.pause:g} s after its answer; mixed: "
          f"{args.frames}-frame {args.video[0]}x{args.video[1]} H.264 videos and {args.huge[0]}x{args.huge[1]} "
          f"JPEGs (max_size=0) back to back; {args.seconds:g} s a phase\n")  # fmt: skip
    print("| phase | request | answers by status | p50 s | p99 s | max s |")
    print("|---|---|---|---:|---:|---:|")
    for name, rows in results.items():
        for kind in ("small", "video", "huge"):
            times = [t for k, _, t in rows if k == kind]
            if not times:
                continue
            statuses = Counter(s for k, s, _ in rows if k == kind)
            answers = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
            print(f"| {name} | {kind} | {answers} | {pct(times, 50):.2f} | {pct(times, 99):.2f} | {max(times):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
