"""`segtool bench`: per-stage timings of still images, video FPS end to end against pure inference,
achieved GFLOP/s against the machine's matmul rate, and the seed's PyTorch pipeline, in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.runtime.benchmark import bench_report

from .console import err
from .options import Device, JsonOut, ModelArg, parse_size
from .reports import print_bench

Opt = typer.Option


def bench(
    model: ModelArg,
    sizes: Annotated[Optional[str], Opt(help="Comma list of WIDTHxHEIGHT (default 520x520,1280x853).")] = None,
    image: Annotated[Optional[list[Path]], Opt("--image", help="Image(s) to time at their own size.")] = None,
    video: Annotated[Optional[list[Path]], Opt("--video", help="Video(s): end-to-end vs pure inference FPS.")] = None,
    frames: Annotated[int, Opt(min=1, help="Frames per video.")] = 30,
    size: Annotated[Optional[str], Opt("--size", help="Video inference WIDTHxHEIGHT (e.g. 640x360).")] = None,
    device: Device = "auto",
    runs: Annotated[int, Opt(min=1, help="Timed runs per image.")] = 5,
    warmup: Annotated[int, Opt(min=0, help="Untimed runs first (the first is the cold latency).")] = 1,
    torch_too: Annotated[bool, Opt("--torch", help="Also time the seed's PyTorch eager pipeline.")] = False,
    matmul: Annotated[bool, Opt("--matmul/--no-matmul", help="Measure numpy's fp32 matmul rate.")] = True,
    cache: Annotated[bool, Opt("--cache", help="CPU: use/make the optimized-graph cache.")] = False,
    json_out: JsonOut = False,
):
    """Time read, preprocess, inference, postprocess, write (median, p90), cold start, memory, video FPS."""
    size_list = [parse_size(s) or (0, 0) for s in (sizes or "").split(",") if s.strip()]
    if not size_list and not image and not video:
        size_list = [(520, 520), (1280, 853)]
    with err.status("benchmarking"):
        report = bench_report(
            model,
            size_list,
            list(image or []),
            list(video or []),
            device,
            runs,
            warmup,
            torch_too,
            matmul,
            cache,
            frames,
            parse_size(size),
        )
    if json_out:
        print(json.dumps(report, indent=2))
    else:
        print_bench(report, model)
