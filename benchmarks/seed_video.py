"""The seed tutorial's video loop against `segtool run`, same video, same machine, runs alternating.

    python benchmarks/seed_video.py ../shared/data/walk.mp4 --model fcn.onnx --frames 30 --rounds 2

The seed loop is the tutorial's: OpenCV reads a frame, resizes it to 640x360, PIL + torchvision
ToTensor/Normalize, eager fcn_resnet50 (the same random weights as the file: `--weights random`, seed
from the file's metadata), torch.argmax, VOC palette by class masks, a 50/50 blend with the 640x360
frame, OpenCV VideoWriter (mp4v). Its stage table (medians per frame) is printed too. `segtool run`
runs as a child process with `--size 640x360 --max-frames N --json` and each `--device` given
(default: `auto` = segtool's default, and `cpu` = ONNX Runtime fp32); its FPS is frames / wall time of
the whole command, start-up and model load included. Random weights: labels are meaningless, timings
are not. Needs the export extra (torch, torchvision).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnx

from segtool.runtime.model.metadata import ModelMetadata
from segtool.runtime.model.session import cpu_flags

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
STAGES = ("decode", "resize", "preprocess", "inference", "argmax", "palette", "blend", "encode")


def seed_loop(video: str, model_name: str, seed: int, frames: int, out: Path) -> tuple[float, dict[str, float]]:
    """(FPS including the model build, median ms per stage) of the tutorial's loop."""
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from segtool.export.pipeline import build_graph

    start = time.perf_counter()
    graph, meta = build_graph(model_name, "random", seed)
    net = graph.model.eval()
    trf = T.Compose([T.ToTensor(), T.Normalize(mean=meta.mean, std=meta.std)])
    colours = meta.palette.reshape(-1, 3)
    built = time.perf_counter()
    capture = cv2.VideoCapture(video)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), capture.get(cv2.CAP_PROP_FPS), (640, 360))
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    done = 0
    while done < frames:
        marks = [time.perf_counter()]
        ok, frame = capture.read()
        if not ok:
            break
        marks.append(time.perf_counter())
        frame = cv2.resize(frame, (640, 360))
        marks.append(time.perf_counter())
        inp = trf(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))).unsqueeze(0)
        marks.append(time.perf_counter())
        with torch.no_grad():
            scores = net(inp)["out"]
        marks.append(time.perf_counter())
        om = torch.argmax(scores.squeeze(), dim=0).numpy()
        marks.append(time.perf_counter())
        rgb = np.zeros((*om.shape, 3), np.uint8)  # the tutorial's decode_segmap: one mask per class
        for label, colour in enumerate(colours):
            rgb[om == label] = colour
        marks.append(time.perf_counter())
        blended = cv2.addWeighted(frame, 0.5, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 0.5, 0)
        marks.append(time.perf_counter())
        writer.write(blended)
        marks.append(time.perf_counter())
        for stage, (a, b) in zip(STAGES, zip(marks, marks[1:])):
            times[stage].append((b - a) * 1000)
        done += 1
    writer.release()
    capture.release()
    now = time.perf_counter()
    log(f"seed loop: model built in {built - start:.1f} s, {done} frames in {now - built:.1f} s")
    return done / (now - start), {stage: statistics.median(ms) for stage, ms in times.items()}


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def segtool_run(video: str, model: str, frames: int, device: str, out: Path) -> tuple[float, str]:
    """(FPS of the whole command, the engine it reports)."""
    command = [sys.executable, "-m", "segtool.cli", "run", video, "--model", model, "--size", "640x360",
               "--max-frames", str(frames), "--device", device, "--out", str(out), "--json", "--quiet"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"segtool run --device {device} failed: {proc.stderr.strip()[-400:]}")
    summary = json.loads(proc.stdout)
    engine = summary.get("provider", "?")
    return frames / wall, str(engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("--model", required=True, help="an fcn_resnet50 file exported with --weights random")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (seed, then each device)")
    parser.add_argument("--devices", default="auto,cpu", help="comma-separated `segtool run --device` values")
    args = parser.parse_args()
    props = {p.key: p.value for p in onnx.load(args.model, load_external_data=False).metadata_props}
    meta = ModelMetadata.from_props(props, args.model)
    name, seed = meta.model, int(meta.weights.get("seed", 0))
    flags = " ".join(flag for flag in FLAGS if flag in cpu_flags())
    print(f"CPU flags: {flags}; {args.frames} frames of {args.video} at 640x360; model {name} seed {seed}")
    fps: dict[str, list[float]] = {"seed loop": []}
    stages: list[dict[str, float]] = []
    engines: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="seed-video-") as tmp:
        for round_ in range(args.rounds):
            value, table = seed_loop(args.video, name, seed, args.frames, Path(tmp) / "seed.mp4")
            fps["seed loop"].append(value)
            stages.append(table)
            for device in args.devices.split(","):
                value, engine = segtool_run(args.video, args.model, args.frames, device, Path(tmp) / device)
                fps.setdefault(f"segtool --device {device}", []).append(value)
                engines[device] = engine
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.3f} FPS" for k, v in fps.items()), flush=True)
    base = statistics.median(fps["seed loop"])
    print("\n| pipeline | engine | FPS per round | median FPS | vs seed loop |\n|---|---|---|---:|---:|")
    for key, values in fps.items():
        engine = "PyTorch eager" if key == "seed loop" else engines[key.split()[-1]]
        each = ", ".join(f"{v:.3f}" for v in values)
        print(
            f"| {key} | {engine} | {each} | {statistics.median(values):.3f} | {statistics.median(values) / base:.2f}x |"
        )
    print("\nseed loop stages, median ms per frame (last round):\n| stage | ms |\n|---|---:|")
    for stage, ms in stages[-1].items():
        print(f"| {stage} | {ms:.1f} |")


if __name__ == "__main__":
    main()
