"""Tiled against whole-image inference on one photo: label agreement and each run's peak memory.

    python benchmarks/tiling_bench.py MODEL.onnx IMAGE [--tiles 512,768]

Each configuration is a separate `segtool run` (peak RSS of that process, via getrusage of a
wrapper that runs only it); agreement is the share of pixels with the same label as whole-image.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SEGTOOL = str(Path(sys.executable).with_name("segtool"))
WRAPPER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "code = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
           "print(code, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip


def run(model: str, image: str, out: Path, *flags: str) -> dict:
    command = [SEGTOOL, "run", image, "--model", model, "--out", str(out), "--device", "cpu", "--save", "labels",
               "--quiet", *flags]  # fmt: skip
    code, seconds, rss_kb = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True,
                                           text=True).stdout.split()  # fmt: skip
    assert code == "0", command
    labels = next(out.glob("*_labels.png"))
    return {"seconds": round(float(seconds), 1), "peak_rss_mb": round(int(rss_kb) / 1024), "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("--tiles", default="512,768")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="segtool-tiling-"))
    whole = run(args.model, args.image, tmp / "whole")
    reference = np.array(Image.open(whole.pop("labels")))
    report = {"image": args.image, "size": list(reference.shape[::-1]), "whole": whole}
    for tile in args.tiles.split(","):
        result = run(args.model, args.image, tmp / f"tile{tile}", "--tile", tile)
        result["agreement_with_whole"] = round(
            float((np.array(Image.open(result.pop("labels"))) == reference).mean()), 5
        )
        report[f"tile_{tile}"] = result
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
