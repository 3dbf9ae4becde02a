"""The measuring half of benchmarks/gpu.sh: each section appends Markdown to a report.

    python benchmarks/gpu_bench.py SECTION --report gpu-bench.md --models DIR [--data DIR]

Sections (each one bounded in time; a failure is written into the report as a row, never fatal):

- ``providers``: which execution providers really start (``Segmenter(device=...)``), which H.264
  encoder segtool picks (NVENC proven by a real encode).
- ``parity``: ONNX Runtime CUDA and TensorRT against PyTorch CUDA (fp32, TF32 off) on three shapes:
  max |logit diff| and argmax agreement. The PyTorch model is rebuilt from the same seed as the
  exports (``segtool.export.build_graph(..., "random", 0)``).
- ``latency``: fp32 and fp16 inference at 520x520 and 1920x1080 on ONNX Runtime CUDA, TensorRT
  (engine cache beside the model; the first run, which builds the engine, is reported apart) and
  PyTorch CUDA eager; host to host (input copied in, logits copied out) for every engine.
- ``video``: `segtool run walk.mp4 --device cuda --size 640x360` end to end (decode, infer, paint,
  encode with NVENC when it opens), lraspp and fcn_resnet50.
- ``serve``: `segtool serve --device cuda`, POST /v1/segment with a 1280x720 JPEG at concurrency 1 and 8.
- ``fp16``: fp16 agreement re-checked on the GPU (the export's fp16 gate ran on the CPU: weights rounding
  only): the fp16 file on CUDA and ``tensorrt:fp16`` engines, against the fp32 file on CUDA.
- ``tensorrt``: ``--device tensorrt:320x240,640x360,1920x1080`` (explicit profile), first open (engine
  build) and second open (engine and timing caches), latency at the three sizes.
- ``iobinding``: CUDA with the output bound on the device against ``session.run``, logits and labels-output.
- ``auto``: what ``--device auto`` chooses with a GPU (`segtool info`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SHAPES = [(1, 3, 520, 520), (2, 3, 256, 256), (1, 3, 1080, 1920)]  # TensorRT builds one engine per shape
SIZES = [(520, 520), (1920, 1080)]
MODELS = {"fcn": "fcn_resnet50", "lraspp": "lraspp_mobilenet_v3_large"}


def say(report: Path, text: str) -> None:
    print(text, flush=True)
    with report.open("a") as file:
        file.write(text + "\n")


def table(report: Path, *columns: str) -> None:
    """A Markdown table's head: a column ending in "#" is a number (right-aligned)."""
    say(report, "| " + " | ".join(c.rstrip("#") for c in columns) + " |")
    say(report, "| " + " | ".join("---:" if c.endswith("#") else "---" for c in columns) + " |")


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def timed(fn: Callable[[], object], runs: int, warmup: int) -> tuple[float, float]:
    """(first call ms, median ms of ``runs`` after ``warmup`` more)."""
    started = time.perf_counter()
    fn()
    first = (time.perf_counter() - started) * 1e3
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return first, statistics.median(times)


def segmenter(path: Path, device: str):
    from segtool.runtime import Segmenter

    return Segmenter(path, device=device, warn_random=False, cache=device == "tensorrt")


def torch_model(name: str, half: bool = False):
    import torch

    from segtool.export import build_graph

    torch.backends.cudnn.allow_tf32 = False  # the fp32 reference is fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    graph, _ = build_graph(MODELS[name], "random", 0)
    graph = graph.eval().cuda()
    return graph.half() if half else graph


def torch_runner(model, half: bool) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.from_numpy(x).cuda()
            out = model(tensor.half() if half else tensor)
            result = out.float().cpu().numpy()
        torch.cuda.synchronize()
        return result

    return run


def providers(args: argparse.Namespace, report: Path) -> None:
    from segtool.runtime.files.video import choose_encoder, gpu_encoder_problem

    say(report, "\n## Providers that really start\n\n| device | provider running | note |\n| --- | --- | --- |")
    for device in ("cuda", "tensorrt"):
        try:
            seg = segmenter(args.models / "fcn.onnx", device)
            say(report, f"| {device} | {seg.provider} | |")
        except Exception as exc:
            say(report, f"| {device} | - | {first_line(exc)} |")
    nvenc = gpu_encoder_problem("h264_nvenc")
    say(report, f"\nH.264 encoder: **{choose_encoder('h264')}**" + (f" (h264_nvenc: {nvenc})" if nvenc else ""))


def parity(args: argparse.Namespace, report: Path) -> None:
    say(report, "\n## Parity against PyTorch CUDA (fp32, TF32 off), fcn_resnet50 random weights\n")
    table(report, "engine", "input shape", "max abs logit#", "max abs diff#", "argmax agreement#")
    reference = torch_runner(torch_model("fcn"), half=False)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]
    expected = [reference(x) for x in inputs]
    for device in ("cuda", "tensorrt"):
        try:
            seg = segmenter(args.models / "fcn.onnx", device)
        except Exception as exc:
            say(report, f"| {device} | - | - | - | did not start: {first_line(exc)} |")
            continue
        for x, want in zip(inputs, expected):
            try:
                got = seg.forward(x)
                agree = float((got.argmax(1) == want.argmax(1)).mean())
                say(report, f"| {seg.provider} | {'x'.join(map(str, x.shape))} | {np.abs(want).max():.2f} | "
                            f"{np.abs(got - want).max():.2e} | {agree:.4%} |")  # fmt: skip
            except Exception as exc:
                say(report, f"| {device} | {'x'.join(map(str, x.shape))} | - | - | failed: {first_line(exc)} |")


def latency(args: argparse.Namespace, report: Path) -> None:
    say(report, "\n## Inference latency, host to host (median ms; first run apart: TensorRT builds its engine)\n")
    table(report, "model", "precision", "size", "engine", "first run ms#", "median ms#")
    deadline = time.monotonic() + args.budget
    rng = np.random.default_rng(0)
    for name in ("fcn", "lraspp"):
        for precision in ("fp32", "fp16"):
            path = args.models / (f"{name}.onnx" if precision == "fp32" else f"{name}_fp16.onnx")
            engines: list[tuple[str, Callable[[], Callable[[np.ndarray], np.ndarray]]]] = [
                ("ORT CUDA", lambda p=path: segmenter(p, "cuda").forward),
                ("PyTorch CUDA eager", lambda n=name, h=precision == "fp16": torch_runner(torch_model(n, h), h)),
            ]
            if name == "fcn":  # TensorRT engines take minutes to build: the big model only
                engines.insert(1, ("ORT TensorRT", lambda p=path: segmenter(p, "tensorrt").forward))
            for engine, make in engines:
                if engine.startswith("ORT") and not path.is_file():
                    say(report, f"| {name} | {precision} | - | {engine} | - | no {path.name} (export failed) |")
                    continue
                try:
                    run = make()
                except Exception as exc:
                    say(report, f"| {name} | {precision} | - | {engine} | - | did not start: {first_line(exc)} |")
                    continue
                for width, height in SIZES:
                    if time.monotonic() > deadline:
                        say(report, f"| {name} | {precision} | {width}x{height} | {engine} | - | skipped (time) |")
                        continue
                    x = rng.standard_normal((1, 3, height, width)).astype(np.float32)
                    try:
                        first, median = timed(lambda run=run, x=x: run(x), args.runs, 3)
                        say(report, f"| {name} | {precision} | {width}x{height} | {engine} | {first:.0f} | "
                                    f"**{median:.2f}** |")  # fmt: skip
                    except Exception as exc:
                        say(report, f"| {name} | {precision} | {width}x{height} | {engine} | - | "
                                    f"failed: {first_line(exc)} |")  # fmt: skip


def clip(data: Path, work: Path) -> Path:
    """walk.mp4 from the data folder, or a generated 1280x720 clip of 250 frames."""
    if (data / "walk.mp4").is_file():
        return data / "walk.mp4"
    from segtool.runtime.files.video import VideoSink
    from segtool.runtime.tools.synthetic import smooth_image

    path = work / "generated_1280x720.mp4"
    base = smooth_image(720, 2560, seed=1)
    sink = VideoSink({"overlay": path}, 25.0)
    for k in range(250):
        sink.write({"overlay": np.ascontiguousarray(base[:, k * 4 : k * 4 + 1280])})
    sink.close()
    return path


def video(args: argparse.Namespace, report: Path) -> None:
    from segtool.runtime.files.video import choose_encoder

    encoder = choose_encoder("h264")
    say(report, f"\n## Video end to end on CUDA (decode, infer at 640x360, paint, encode with {encoder})\n")
    table(report, "model", "frames#", "FPS#", "seconds#", "command")
    with tempfile.TemporaryDirectory(prefix="gpu-video-") as tmp:
        source = clip(args.data, Path(tmp))
        for name in ("lraspp", "fcn"):
            command = ["segtool", "run", str(source), "--model", str(args.models / f"{name}.onnx"), "--device",
                       "cuda", "--size", "640x360", "--out", tmp, "--json", "--quiet"]  # fmt: skip
            proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                say(report, f"| {name} | - | - | - | failed: {proc.stderr.strip()[-200:]} |")
                continue
            (result,) = json.loads(proc.stdout)["results"]
            shown = " ".join(command[:2] + [Path(source).name] + command[3:-5])
            figures = f"{result['frames']} | **{result['fps']:.1f}** | {result['seconds']:.1f}"
            say(report, f"| {name} | {figures} | `{shown}` |")


def serve(args: argparse.Namespace, report: Path) -> None:
    import cv2

    say(report, "\n## `segtool serve --device cuda`, fcn_resnet50, POST /v1/segment?output=labels (1280x720 JPEG)\n")
    table(report, "concurrency#", "requests#", "p50 ms#", "p99 ms#", "requests/s#", "statuses")
    image = args.data / "street.jpg"
    if image.is_file():
        data = image.read_bytes()
    else:
        from segtool.runtime.tools.synthetic import smooth_image

        data = cv2.imencode(".jpg", smooth_image(720, 1280, seed=2))[1].tobytes()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = ["segtool", "serve", str(args.models / "fcn.onnx"), "--device", "cuda", "--port", str(port),
               "--max-queue", "64"]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                said = server.stderr.read().decode()[-200:] if server.stderr and server.poll() is not None else ""
                say(report, f"| - | - | - | - | - | server did not start: {said} |")
                return

        def once(_: int) -> tuple[int, float]:
            request = urllib.request.Request(f"{url}/v1/segment?output=labels&max_size=0", data=data, method="POST")
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    response.read()
                    return response.status, time.perf_counter() - started
            except urllib.error.HTTPError as exc:
                return exc.code, time.perf_counter() - started

        once(0)  # warm-up (cuDNN picks its algorithms)
        for concurrency, requests in ((1, 30), (8, 96)):
            with ThreadPoolExecutor(concurrency) as pool:
                started = time.perf_counter()
                results = list(pool.map(once, range(requests)))
                wall = time.perf_counter() - started
            ms = np.array([t for _, t in results]) * 1e3
            codes = sorted({code for code, _ in results})
            say(report, f"| {concurrency} | {requests} | {np.median(ms):.1f} | {np.percentile(ms, 99):.1f} | "
                        f"**{requests / wall:.1f}** | {codes} |")  # fmt: skip
    finally:
        server.terminate()
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()


def agreement_on(run, reference, tensors) -> float:
    same = sum(int((np.asarray(run(t)).argmax(1) == np.asarray(reference(t)).argmax(1)).sum()) for t in tensors)
    return same / sum(t.shape[0] * t.shape[2] * t.shape[3] for t in tensors)


def fp16(args: argparse.Namespace, report: Path) -> None:
    """fp16 computed on the GPU (the export's gate ran on the CPU, where only the weights' rounding is
    checked): the fp16 file on CUDA and TensorRT fp16 engines of the fp32 file, against the fp32 file on CUDA."""
    from segtool.runtime.tools.precisions import generated_pictures

    say(report, "\n## fp16 on the GPU: label agreement with the fp32 file on CUDA (generated pictures)\n")
    table(report, "model", "engine", "pixels#", "agreement#", "note")
    for name in ("fcn", "lraspp"):
        fp32_path, half_path = args.models / f"{name}.onnx", args.models / f"{name}_fp16.onnx"
        try:
            reference = segmenter(fp32_path, "cuda")
        except Exception as exc:
            say(report, f"| {name} | - | - | - | CUDA did not start: {first_line(exc)} |")
            continue
        tensors = [reference.prepare([p]) for p in generated_pictures()]
        pixels = sum(t.shape[2] * t.shape[3] for t in tensors)
        for engine, path, device in (
            ("fp16 file, ORT CUDA", half_path, "cuda"),
            ("fp32 file, TensorRT fp16", fp32_path, "tensorrt:fp16"),
        ):
            try:
                seg = segmenter(path, device)
                share = agreement_on(seg.forward, reference.forward, tensors)
                say(report, f"| {name} | {engine} | {pixels} | **{share:.4%}** | {seg.provider} |")
            except Exception as exc:
                say(report, f"| {name} | {engine} | {pixels} | - | failed: {first_line(exc)} |")


def tensorrt(args: argparse.Namespace, report: Path) -> None:
    """TensorRT with an explicit profile (tensorrt:MIN,OPT,MAX) and its engine and timing caches in a cache
    folder: the first open builds, the second loads; latency at the profile's three sizes."""
    profile = "tensorrt:320x240,640x360,1920x1080"
    say(report, f"\n## TensorRT: `--device {profile}`, engine and timing caches (fcn_resnet50 fp32)\n")
    table(report, "open", "seconds#", "size", "median ms#", "note")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="gpu-trt-cache-") as cache:
        os.environ["SEGTOOL_CACHE"] = cache
        for which in ("first (builds the engine)", "second (from the cache)"):
            started = time.perf_counter()
            try:
                seg = segmenter(args.models / "fcn.onnx", profile)
                seg.forward(rng.standard_normal((1, 3, 360, 640)).astype(np.float32))
            except Exception as exc:
                say(report, f"| {which} | - | - | - | failed: {first_line(exc)} |")
                return
            files = sum(1 for f in Path(cache).rglob("*") if f.is_file())
            say(report, f"| {which} | {time.perf_counter() - started:.1f} | 640x360 | - | {files} cache files |")
        for width, height in ((320, 240), (640, 360), (1920, 1080)):
            x = rng.standard_normal((1, 3, height, width)).astype(np.float32)
            first, median = timed(lambda x=x: seg.forward(x), args.runs, 3)
            say(report, f"| - | - | {width}x{height} | **{median:.2f}** | first run {first:.0f} ms |")


def iobinding(args: argparse.Namespace, report: Path) -> None:
    """CUDA: output bound on the device (segtool's path: one copy each way; a labels-output file's ArgMax
    on the GPU, so only uint8 labels come back) against session.run (ORT's plain path)."""
    say(report, "\n## CUDA IO binding: output on the device vs session.run (median ms, host to host)\n")
    table(report, "model", "output", "size", "IO binding ms#", "session.run ms#")
    rng = np.random.default_rng(0)
    for name, output in (("fcn", "logits"), ("fcn_labels", "labels (ArgMax on the GPU)")):
        try:
            seg = segmenter(args.models / f"{name}.onnx", "cuda")
        except Exception as exc:
            say(report, f"| {name} | {output} | - | - | did not start: {first_line(exc)} |")
            continue
        engine = seg.engine
        for width, height in SIZES:
            x = rng.standard_normal((1, 3, height, width)).astype(np.float32)
            bound = timed(lambda x=x, e=engine: e.run(x), args.runs, 3)[1]
            plain = timed(lambda x=x, e=engine: e.session.run(None, {e.input_name: x}), args.runs, 3)[1]
            say(report, f"| {name} | {output} | {width}x{height} | **{bound:.2f}** | {plain:.2f} |")


def auto(args: argparse.Namespace, report: Path) -> None:
    """What --device auto chooses with a GPU (CUDA first) and on the CPU engines alone."""
    say(report, "\n## `--device auto`\n")
    for name in ("fcn", "lraspp"):
        proc = subprocess.run(
            ["segtool", "info", str(args.models / f"{name}.onnx")], capture_output=True, text=True, timeout=300
        )
        lines = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith(("auto:", "providers"))]
        say(report, f"- {name}: " + (" / ".join(lines) or proc.stderr.strip()[-200:]))


SECTIONS = {
    "providers": providers,
    "parity": parity,
    "latency": latency,
    "video": video,
    "serve": serve,
    "fp16": fp16,
    "tensorrt": tensorrt,
    "iobinding": iobinding,
    "auto": auto,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=list(SECTIONS))
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--budget", type=float, default=240.0, help="latency: seconds before the rest is skipped")
    args = parser.parse_args()
    try:
        SECTIONS[args.section](args, args.report)
    except Exception as exc:  # one section's failure is a line in the report; the next section still runs
        say(args.report, f"\n{args.section}: failed ({type(exc).__name__}: {first_line(exc)})")
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
