"""Soak: `segtool run` on a live stream for minutes, with the stream dropped now and then, recording
files in segments and publishing every frame (JSON lines, and MQTT where Mosquitto is installed).
The segtool process's RSS is sampled every ``--every`` seconds; after ``--warmup`` seconds it should
stay flat (within 10%). Not a test: it takes as long as it is told to. Usage:

    python benchmarks/soak.py [--model MODEL.onnx] [--minutes 10] [--drop-every 60] [--size 320x240]

Without ``--model``, the tiny model of tests/tiny.py. Needs /usr/bin/ffmpeg; /usr/sbin/mosquitto optional.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FFMPEG, MOSQUITTO = "/usr/bin/ffmpeg", "/usr/sbin/mosquitto"
SEGTOOL = str(Path(sys.executable).with_name("segtool"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def lines(path: Path) -> int:
    return sum(1 for _ in open(path, "rb")) if path.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--drop-every", type=float, default=60.0, help="seconds between stream drops")
    parser.add_argument("--down", type=float, default=3.0, help="seconds the stream stays down")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before RSS must stay flat")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--segment-minutes", type=float, default=1.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="segtool-soak-"))
    model = args.model
    if model is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny import tiny_model

        model = tiny_model(work / "tiny.onnx")
    clip = work / "clip.mp4"
    source = f"testsrc=size={args.size}:rate={args.fps}"
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            source,
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-g",
            str(args.fps),
            "-pix_fmt",
            "yuv420p",
            str(clip),
        ],
        check=True,
    )
    url = f"tcp://127.0.0.1:{free_port()}"
    serve = [FFMPEG, "-v", "quiet", "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f", "mpegts"]
    stream = subprocess.Popen([*serve, f"{url}?listen=1"])
    publish = ["--publish", str(work / "results.jsonl")]
    broker = None
    if os.access(MOSQUITTO, os.X_OK):
        port = free_port()
        (work / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest none\n")
        broker = subprocess.Popen([MOSQUITTO, "-c", str(work / "mosquitto.conf")])
        publish += ["--publish", f"mqtt://127.0.0.1:{port}/segtool/soak"]
    time.sleep(1)
    command = [
        SEGTOOL,
        "run",
        url,
        "--model",
        str(model),
        "--out",
        str(work / "out"),
        "--quiet",
        "--segment-minutes",
        str(args.segment_minutes),
        *publish,
    ]
    log = open(work / "segtool.log", "w")
    run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    next_drop, samples = args.drop_every, []  # the first sample after --every seconds
    print(f"{' '.join(command)}\nmodel {model}, stream {args.size} at {args.fps} FPS, work folder {work}")
    print("| t (s) | RSS (MB) | frames published | stream drops |\n|---:|---:|---:|---:|")
    try:
        while (now := time.monotonic() - started) < args.minutes * 60 and run.poll() is None:
            if now >= next_drop:
                stream.kill()
                stream.wait()
                time.sleep(args.down)
                stream = subprocess.Popen([*serve, f"{url}?listen=1"])
                next_drop += args.drop_every
            if now >= (len(samples) + 1) * args.every:
                drops = (work / "segtool.log").read_text().count("dropped after")
                samples.append((round(now), rss_mb(run.pid), lines(work / "results.jsonl"), drops))
                print("| {} | {:.1f} | {} | {} |".format(*samples[-1]), flush=True)
            time.sleep(0.2)
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=120)
    finally:
        for process in (run, stream, broker):
            if process is not None and process.poll() is None:
                process.kill()
    files = sorted((work / "out").glob("*.mp4"))
    later = [rss for t, rss, _, _ in samples if t >= args.warmup]
    spread = (max(later) - min(later)) / min(later) if later else float("nan")
    print(
        f"segtool exited {code} (143: SIGTERM, as sent); {len(files)} video files; "
        f"{lines(work / 'results.jsonl')} JSON lines"
    )
    print(
        f"RSS after {args.warmup:g} s: {min(later):.1f} to {max(later):.1f} MB, spread {spread:.1%} "
        f"({'flat' if spread <= 0.10 else 'NOT flat'}: within 10%)"
    )
    return 0 if spread <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
