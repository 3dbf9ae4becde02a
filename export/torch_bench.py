"""The seed tutorial's PyTorch pipeline, timed like the runtime (run as its own process).

PIL read -> torchvision ToTensor + Normalize -> eager fcn_resnet50 -> torch.argmax -> labels
PNG written. Run by `segtool bench --torch` in a child process so that its peak memory is its
own: ``python -m segtool.export.torch_bench --json MODEL_NAME SEED RUNS WARMUP IMAGE...``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

from segtool.runtime.tools.benchmark import peak_rss_mb, time_stages

from .pipeline import build_graph


def bench_torch(model: str, seed: int, inputs: list[str], runs: int, warmup: int, device: str = "cpu") -> dict:
    graph, meta = build_graph(model, "random", seed)
    net = graph.model.to(device).eval()
    transform = T.Compose([T.ToTensor(), T.Normalize(meta.mean, meta.std)])
    palette = meta.palette.reshape(-1).tolist()
    workdir = Path(tempfile.mkdtemp(prefix="segtool-torch-bench-"))

    def infer(x):
        with torch.inference_mode():
            out = net(x)["out"]
        if device != "cpu":
            torch.cuda.synchronize()
        return out

    def write(labels):
        picture = Image.fromarray(labels, mode="P")
        picture.putpalette(palette)
        picture.save(workdir / "labels.png", format="PNG")

    results = []
    for path in inputs:
        steps = (
            lambda _, path=path: Image.open(path).convert("RGB"),  # read
            lambda image: transform(image).unsqueeze(0).to(device),  # preprocess
            infer,  # inference
            lambda out: torch.argmax(out.squeeze(0), dim=0).to(torch.uint8).cpu().numpy(),  # postprocess
            write,  # write
        )
        r = time_stages(steps, runs, warmup)
        width, height = Image.open(path).size
        r.update(input=path, height=height, width=width, images_per_s=1000 / r["total"]["median_ms"])
        results.append(r)
    return {
        "backend": "pytorch eager",
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "peak_rss_mb": peak_rss_mb(),
        "results": results,
    }


if __name__ == "__main__":
    _, model, seed, runs, warmup, device, *images = sys.argv
    print(json.dumps(bench_torch(model, int(seed), images, int(runs), int(warmup), device)))
