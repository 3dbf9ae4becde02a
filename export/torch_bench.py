"""The seed tutorial's PyTorch pipeline, timed like the runtime (run as its own process).

PIL read -> torchvision ToTensor + Normalize -> eager fcn_resnet50 -> torch.argmax -> labels
PNG written. Run by `segtool bench --torch` in a child process so that its peak memory is its
own: ``python -m segtool.export.torch_bench --json MODEL_NAME SEED RUNS WARMUP IMAGE...``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from segtool.runtime.benchmark import STAGES, peak_rss_mb, stats

from .pipeline import MEAN, STD, build_graph


def bench_torch(model: str, seed: int, inputs: list[str], runs: int, warmup: int, device: str = "cpu") -> dict:
    graph, meta = build_graph(model, "random", seed)
    net = graph.model.to(device).eval()
    transform = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    palette = meta.palette.reshape(-1).tolist()
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="segtool-torch-bench-"))
    for path in inputs:
        samples = {stage: [] for stage in STAGES}
        cold = None
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            image = Image.open(path).convert("RGB")
            t1 = time.perf_counter()
            x = transform(image).unsqueeze(0).to(device)
            t2 = time.perf_counter()
            with torch.inference_mode():
                out = net(x)["out"]
                if device != "cpu":
                    torch.cuda.synchronize()
            t3 = time.perf_counter()
            labels = torch.argmax(out.squeeze(0), dim=0).to(torch.uint8).cpu().numpy()
            t4 = time.perf_counter()
            picture = Image.fromarray(labels, mode="P")
            picture.putpalette(palette)
            picture.save(workdir / "labels.png", format="PNG")
            t5 = time.perf_counter()
            if i == 0:
                cold = t5 - t0
            if i >= warmup:
                for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                    samples[stage].append(dt)
        totals = [sum(samples[s][k] for s in STAGES) for k in range(runs)]
        r = {stage: stats(v) for stage, v in samples.items()}
        r.update(total=stats(totals), cold_ms=cold * 1000, input=path, height=labels.shape[0], width=labels.shape[1])
        r["images_per_s"] = 1000 / r["total"]["median_ms"]
        results.append(r)
    return {"backend": "pytorch eager", "device": device, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "peak_rss_mb": peak_rss_mb(), "results": results}


if __name__ == "__main__":
    _, model, seed, runs, warmup, device, *images = sys.argv
    print(json.dumps(bench_torch(model, int(seed), images, int(runs), int(warmup), device)))
