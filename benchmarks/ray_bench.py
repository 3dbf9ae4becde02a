"""`segtool run --ray local` (2 actors x 1 thread) against a plain `segtool run` (2 threads) on the
same 40 images, in one run; then Ray's overhead per image with a tiny model (compute ~0).

    python benchmarks/ray_bench.py MODEL.onnx VIDEO [--images 40] [--max-size 320]

The images are the video's first frames, saved as JPEG. Wall times are whole commands (model
load and, for Ray, starting Ray and its actors included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny import tiny_model  # noqa: E402

from segtool.runtime.model.session import cpu_flags  # noqa: E402

SEGTOOL = str(Path(sys.executable).with_name("segtool"))


def timed(*args: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run([SEGTOOL, *args, "--quiet", "--device", "cpu"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("video")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--max-size", default="320")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="segtool-ray-bench-"))
    (tmp / "images").mkdir()
    capture = cv2.VideoCapture(args.video)
    for k in range(args.images):
        ok, frame = capture.read()
        assert ok, "the video has fewer frames than --images"
        cv2.imwrite(str(tmp / "images" / f"f{k:03d}.jpg"), cv2.resize(frame, (640, 360)))
    tiny = tiny_model(tmp / "tiny.onnx")
    report: dict = {"images": args.images, "size": "640x360", "max_size": args.max_size,
                    "cpu_flags": [f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))]}  # fmt: skip
    for label, model in (("model", args.model), ("tiny", str(tiny))):
        common = [str(tmp / "images"), "--model", model, "--max-size", args.max_size, "--save", "labels"]
        plain = timed("run", *common, "--out", str(tmp / f"plain-{label}"))
        ray = timed("run", *common, "--out", str(tmp / f"ray-{label}"), "--ray", "local", "--num-actors", "2",
                    "--actor-threads", "1")  # fmt: skip
        report[label] = {"plain_2_threads_s": round(plain, 2), "ray_2x1_s": round(ray, 2),
                         "plain_images_per_s": round(args.images / plain, 3),
                         "ray_images_per_s": round(args.images / ray, 3), "ray_vs_plain": round(plain / ray, 3),
                         "ray_overhead_per_image_ms": round(1000 * (ray - plain) / args.images, 1)}  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
