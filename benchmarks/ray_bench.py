"""`segtool run --ray local` (2 actors x 1 thread) against a plain `segtool run` (2 threads) on the
same 40 images, in one run; then Ray's overhead per image with a tiny model (compute ~0).

    python benchmarks/ray_bench.py MODEL.onnx VIDEO [--images 40] [--max-size 320]

The images are the video's first frames, saved as JPEG. Wall times are whole commands (model
load and, for Ray, starting Ray and its actors included).

    python benchmarks/ray_bench.py cluster [--model MODEL.onnx] [--counts 12 48] [--nodes 1 2]

When Ray pays, by input count and node count: a Ray cluster of N nodes on this machine
(ray.cluster_utils, 1 CPU each, one 1-thread actor per node, started before the timing), against a
plain `segtool run` (ONNX Runtime on all cores), on synthetic 240x320 JPEGs; the tiny model
(one 1x1 convolution) unless --model. Each figure is one whole command (model load included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def cluster_main(argv: list[str]) -> None:
    import os

    from conftest import scene
    from ray.cluster_utils import Cluster

    parser = argparse.ArgumentParser(prog="ray_bench.py cluster")
    parser.add_argument("--model")
    parser.add_argument("--counts", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    tmp = Path(tempfile.mkdtemp(prefix="segtool-ray-cluster-bench-"))
    model = args.model or str(tiny_model(tmp / "tiny.onnx"))
    rows = []
    for count in args.counts:
        folder = tmp / f"in{count}"
        folder.mkdir()
        for k in range(count):
            cv2.imwrite(str(folder / f"p{k:03d}.jpg"), scene(240, 320, seed=k))
        common = [str(folder), "--model", model, "--save", "labels"]
        row = {"inputs": count}
        plain = timed("run", *common, "--out", str(tmp / f"plain{count}"))  # ONNX Runtime's own threads: all cores
        row["plain_per_s"] = round(count / plain, 2)
        for nodes in args.nodes:
            node: dict[str, Any] = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
            cluster = Cluster(initialize_head=True, head_node_args=node)
            try:
                for _ in range(nodes - 1):
                    cluster.add_node(**node)
                cluster.wait_for_nodes()
                ray = timed(
                    "run",
                    *common,
                    "--out",
                    str(tmp / f"ray{count}-{nodes}"),
                    "--ray",
                    cluster.address,
                    "--num-actors",
                    str(nodes),
                    "--actor-threads",
                    "1",
                )
            finally:
                cluster.shutdown()
            row[f"ray_{nodes}n_per_s"] = round(count / ray, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    flags = [f for f in cpu_flags() if f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")]
    print(json.dumps({"model": Path(model).name, "cpu_flags": flags, "rows": rows}, indent=2))


def main() -> None:
    if sys.argv[1:2] == ["cluster"]:
        cluster_main(sys.argv[2:])
        return
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
    report: dict = {
        "images": args.images,
        "size": "640x360",
        "max_size": args.max_size,
        "cpu_flags": [f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))],
    }
    for label, model in (("model", args.model), ("tiny", str(tiny))):
        common = [str(tmp / "images"), "--model", model, "--max-size", args.max_size, "--save", "labels"]
        plain = timed("run", *common, "--out", str(tmp / f"plain-{label}"))
        ray = timed(
            "run",
            *common,
            "--out",
            str(tmp / f"ray-{label}"),
            "--ray",
            "local",
            "--num-actors",
            "2",
            "--actor-threads",
            "1",
        )
        report[label] = {
            "plain_2_threads_s": round(plain, 2),
            "ray_2x1_s": round(ray, 2),
            "plain_images_per_s": round(args.images / plain, 3),
            "ray_images_per_s": round(args.images / ray, 3),
            "ray_vs_plain": round(plain / ray, 3),
            "ray_overhead_per_image_ms": round(1000 * (ray - plain) / args.images, 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
