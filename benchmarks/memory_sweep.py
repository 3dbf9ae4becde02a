"""Process memory when input sizes vary: ONNX Runtime's default session options vs segtool's.

Each configuration runs in its own process: two sweeps over five input sizes, peak RSS after
each sweep, and the median inference time over the second sweep. Usage:

    python benchmarks/memory_sweep.py MODEL.onnx
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

SIZES = ((480, 640), (512, 512), (600, 800), (360, 640), (720, 960))


def child(model: str, config: str) -> dict:
    import numpy as np
    import onnxruntime as ort

    from segtool.runtime.model.session import session_options

    options = ort.SessionOptions() if config == "onnxruntime defaults" else session_options()
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rss, times = [], []
    for sweep in range(2):
        for h, w in SIZES:
            x = np.random.default_rng(h).standard_normal((1, 3, h, w), dtype=np.float32)
            started = time.perf_counter()
            session.run(None, {name: x})
            if sweep == 1:
                times.append(time.perf_counter() - started)
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {
        "config": config,
        "peak_rss_mb_after_sweep": [round(r) for r in rss],
        "median_inference_s_sweep2": round(float(np.median(times)), 3),
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
        sys.exit(0)
    model = sys.argv[1]
    print(f"sizes (HxW): {', '.join(f'{h}x{w}' for h, w in SIZES)}, two sweeps")
    for config in ("onnxruntime defaults", "segtool defaults"):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", model, config], capture_output=True, text=True, check=True
        )
        r = json.loads(proc.stdout)
        print(
            f"{r['config']:22} peak RSS after sweep 1: {r['peak_rss_mb_after_sweep'][0]} MB, after sweep 2: "
            f"{r['peak_rss_mb_after_sweep'][1]} MB, median inference (sweep 2) {r['median_inference_s_sweep2']} s"
        )
