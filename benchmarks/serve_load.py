"""Load test of `segtool serve`: a bounded mix of good and hostile requests at several concurrencies.

Starts `segtool serve MODEL` on 127.0.0.1 (a free port, CPU, an API key), then for each
concurrency (default 1, 8, 64) sends at most ``--requests`` requests for at most ``--seconds``
seconds: good ones (``POST /v1/segment`` with a JPEG, ``/v2`` infer with a binary and with a JSON
tensor) and hostile ones (deep JSON, overflowing shapes, wrong-typed fields, a bad binary header
length, NaN, bad multipart, garbage, a non-ASCII or missing API key, a body over the limit). A
thread probes ``GET /v2/health/live`` every 50 ms throughout. Prints a Markdown table: latency
p50/p99 of the good requests and of all, answers by status (an error that is not JSON is marked
so), requests that got no answer at all (transport errors), and the health probe's p99 and max.

The figure to hold: no 5xx but 503 (the queue is full: overload), every request answered, health
p99 under 1 s. Exit status 1 when it does not hold.

    python benchmarks/serve_load.py --model /tmp/lraspp.onnx [--levels 1,8,64] [--requests 300] [--seconds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

KEY = "load-test-key"
NAME = "bench"
AUTH = {"Authorization": f"Bearer {KEY}"}
HEADER = "Inference-Header-Content-Length"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, flags: list[str]) -> subprocess.Popen:
    segtool = str(Path(sys.executable).with_name("segtool"))
    command = [segtool, "serve", str(model), "--port", str(port), "--device", "cpu", "--api-key", KEY, *flags]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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


def picture(height: int, width: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return cv2.imencode(".jpg", cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))[1].tobytes()


def requests_mix(input_name: str, output_name: str, size: int, max_body_mb: float) -> list[tuple[str, str, dict]]:
    """(kind, label, httpx request kwargs): good requests first, then hostile ones."""
    infer = f"/v2/models/{NAME}/infer"
    jpeg = picture(size * 3 // 4, size, 1)
    x = np.random.default_rng(2).standard_normal((1, 3, size // 2, size // 2)).astype(np.float32)
    head = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": output_name, "parameters": {"binary_data": True}}]})  # fmt: skip
    small = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    tensor = {"name": input_name, "datatype": "FP32", "shape": [1, 3, 16, 16], "data": small.ravel().tolist()}

    def body(**request) -> bytes:
        return json.dumps({"inputs": [tensor], **request}).encode()

    good: list[tuple[str, str, dict]] = [
        ("good", "segment labels", {"method": "POST", "url": "/v1/segment?output=labels", "content": jpeg,
                                    "headers": {**AUTH, "Content-Type": "image/jpeg"}}),
        ("good", "segment json", {"method": "POST", "url": "/v1/segment", "files": {"image": ("a.jpg", jpeg)},
                                  "headers": AUTH}),
        ("good", "infer binary", {"method": "POST", "url": infer, "content": head.encode() + x.tobytes(),
                                  "headers": {**AUTH, HEADER: str(len(head))}}),
        ("good", "infer json", {"method": "POST", "url": infer, "content": body(), "headers": AUTH}),
    ]  # fmt: skip
    hostile_bodies = {
        "deep json": b"[" * 50_000 + b"]" * 50_000,
        "dims 10^23": body(inputs=[{**tensor, "shape": [10**23, 3, 16, 16]}]),
        "400 digits": body(inputs=[{**tensor, "data": [10**400] + tensor["data"][1:]}]),
        "parameters string": body(parameters="x"),
        "outputs 5": body(outputs=5),
        "NaN": body(inputs=[{**tensor, "data": [float("nan")] + tensor["data"][1:]}]),  # json.dumps writes NaN
        "wrong dtype": body(inputs=[{**tensor, "datatype": "FP33"}]),
        "short data": body(inputs=[{**tensor, "data": tensor["data"][:-1]}]),
        "not json": b"{not json",
        "empty": b"",
    }
    hostile: list[tuple[str, str, dict]] = [
        ("hostile", label, {"method": "POST", "url": infer, "content": content, "headers": AUTH})
        for label, content in hostile_bodies.items()
    ]
    hostile += [
        ("hostile", "header length ²", {"method": "POST", "url": infer, "content": body(),
                                        "headers": {**AUTH, HEADER: "²".encode()}}),
        ("hostile", "header past body", {"method": "POST", "url": infer, "content": body(),
                                         "headers": {**AUTH, HEADER: "99999"}}),
        ("hostile", "bearer sécret", {"method": "POST", "url": infer, "content": body(),
                                      "headers": {"Authorization": "Bearer sécret".encode()}}),
        ("hostile", "no key", {"method": "POST", "url": "/v1/segment", "content": jpeg}),
        ("hostile", "garbage image", {"method": "POST", "url": "/v1/segment", "content": b"\x00garbage" * 64,
                                      "headers": AUTH}),
        ("hostile", "bad multipart", {"method": "POST", "url": "/v1/segment", "content": b"--x\r\nzzz",
                                      "headers": {**AUTH, "Content-Type": "multipart/form-data; boundary=x"}}),
        ("hostile", "bad query", {"method": "POST", "url": "/v1/segment?alpha=nan&max_size=-1", "content": jpeg,
                                  "headers": AUTH}),
        ("hostile", "over the body limit", {"method": "POST", "url": "/v1/segment", "headers": AUTH,
                                            "content": b"\xff" * int(max_body_mb * 1024 * 1024 + 1)}),
    ]  # fmt: skip
    return good + hostile


def order(mix: list[tuple[str, str, dict]], count: int, hostile_share: float) -> list[int]:
    """Which request to send n-th: good ones in turn, a hostile one every 1/share requests."""
    good = [i for i, m in enumerate(mix) if m[0] == "good"]
    bad = [i for i, m in enumerate(mix) if m[0] == "hostile"]
    every = max(1, round(1 / hostile_share)) if hostile_share > 0 else 0
    sequence, g, b = [], 0, 0
    for n in range(count):
        if every and n % every == every - 1:
            sequence.append(bad[b % len(bad)])
            b += 1
        else:
            sequence.append(good[g % len(good)])
            g += 1
    return sequence


class Probe(threading.Thread):
    """GET /v2/health/live every ``interval`` seconds until stopped; latencies in seconds."""

    def __init__(self, url: str, interval: float = 0.05):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.latencies: list[float] = []
        self.failures: collections.Counter[str] = collections.Counter()
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stopped.is_set():
                started = time.perf_counter()
                try:
                    status = client.get("/v2/health/live").status_code
                    if status != 200:
                        self.failures[str(status)] += 1
                except httpx.HTTPError as exc:
                    self.failures[type(exc).__name__] += 1
                self.latencies.append(time.perf_counter() - started)
                self.stopped.wait(self.interval)


async def level(url: str, mix, concurrency: int, count: int, seconds: float, hostile_share: float) -> dict:
    sequence = order(mix, count, hostile_share)
    statuses: collections.Counter = collections.Counter()
    by_label: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    latency: dict[str, list[float]] = {"good": [], "all": []}
    next_index = 0
    deadline = time.monotonic() + seconds
    # idle connections dropped after 2 s, before the server's 5 s keep-alive timeout closes them: with the
    # same 5 s on both sides, a request can go out on a connection the server is closing (a ReadError)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def user() -> None:
            nonlocal next_index
            while next_index < len(sequence) and time.monotonic() < deadline:
                kind, label, kwargs = mix[sequence[next_index]]
                next_index += 1
                started = time.perf_counter()
                try:
                    response = await client.request(**kwargs)
                    status = str(response.status_code)
                    media = response.headers.get("content-type", "")
                    if response.status_code >= 400 and not media.startswith("application/json"):
                        status += " (not JSON)"
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - started
                statuses[status] += 1
                by_label[label][status] += 1
                latency["all"].append(elapsed)
                if kind == "good" and status == "200":
                    latency["good"].append(elapsed)

        started = time.monotonic()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        wall = time.monotonic() - started
    return {"concurrency": concurrency, "sent": sum(statuses.values()), "seconds": wall, "statuses": statuses,
            "by_label": by_label, "latency": latency}  # fmt: skip


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    wanted = ("avx2", "avx512f", "avx512_vnni", "amx_tile")
    found = {f for line in text.splitlines() if line.startswith("flags") for f in line.split() if f in wanted}
    return " ".join(sorted(found)) or "none of avx2/avx512f/avx512_vnni/amx_tile"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--levels", default="1,8,64", help="concurrencies, comma-separated")
    parser.add_argument("--requests", type=int, default=300, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=40, help="most seconds per level")
    parser.add_argument("--size", type=int, default=320, help="long side of the good JPEG; the tensor is size/2")
    parser.add_argument("--hostile-share", type=float, default=0.3)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--max-body-mb", type=float, default=4)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flags = ["--name", NAME, "--max-queue", str(args.max_queue), "--max-body-mb", str(args.max_body_mb)]
    server = start_server(args.model, port, flags)
    try:
        meta = httpx.get(f"{url}/v2", headers=AUTH, timeout=10).json()
        metadata = httpx.get(f"{url}/v2/models/{NAME}", headers=AUTH, timeout=10).json()
        inputs, outputs = metadata["inputs"][0]["name"], metadata["outputs"][0]["name"]
        mix = requests_mix(inputs, outputs, args.size, args.max_body_mb)
        results = []
        for concurrency in (int(c) for c in args.levels.split(",")):
            probe = Probe(url)
            probe.start()
            result = asyncio.run(level(url, mix, concurrency, args.requests, args.seconds, args.hostile_share))
            probe.stopped.set()
            probe.join()
            result["health"] = probe.latencies
            result["health_failures"] = probe.failures
            results.append(result)
            print(f"concurrency {concurrency}: {result['sent']} requests in {result['seconds']:.1f} s", file=sys.stderr)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, stderr = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()

    ok = "Traceback" not in stderr
    print(f"\n`python benchmarks/serve_load.py {' '.join(sys.argv[1:])}`  ")
    print(f"segtool {meta.get('version')}, model {args.model.name}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}; flags: {cpu_flags()}), "
          f"--max-queue {args.max_queue} --max-body-mb {args.max_body_mb:g}; "
          f"good JPEG {args.size}x{args.size * 3 // 4}, "
          f"tensor 1x3x{args.size // 2}x{args.size // 2}; hostile share {args.hostile_share:g}\n")  # fmt: skip
    print("| concurrency | requests | s | req/s | good p50 ms | good p99 ms | all p50 ms | all p99 ms | "
          "answers by status | 5xx but 503 | no answer | health p99 ms | health max ms |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        statuses = r["statuses"]
        bad = sum(n for s, n in statuses.items() if s[:1] == "5" and s != "503" or s.endswith("(not JSON)"))
        lost = sum(n for s, n in statuses.items() if not s[:1].isdigit()) + r["health_failures"].total()
        ok = ok and bad == 0 and lost == 0 and pct(r["health"], 99) < 1000
        answers = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        print(f"| {r['concurrency']} | {r['sent']} | {r['seconds']:.1f} | {r['sent'] / r['seconds']:.1f} | "
              f"{pct(r['latency']['good'], 50):.0f} | {pct(r['latency']['good'], 99):.0f} | "
              f"{pct(r['latency']['all'], 50):.0f} | {pct(r['latency']['all'], 99):.0f} | {answers} | {bad} | {lost} | "
              f"{pct(r['health'], 99):.0f} | {pct(r['health'], 100):.0f} |")  # fmt: skip
    if "Traceback" in stderr:
        print("\nthe server logged a traceback:\n" + stderr[-3000:])
    if args.json:
        args.json.write_text(json.dumps([{**r, "by_label": {k: dict(v) for k, v in r["by_label"].items()}}
                                         for r in results], default=dict, indent=1))  # fmt: skip
    print(
        f"\n{'PASS' if ok else 'FAIL'}: no 5xx but 503, every error JSON, every request answered, "
        "health p99 under 1 s, no traceback in the server's log"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
