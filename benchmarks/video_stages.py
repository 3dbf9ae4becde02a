"""Video pipeline, stage by stage: where the time of `segtool run VIDEO` goes, and its end-to-end FPS.

    python benchmarks/video_stages.py ../shared/data/walk.mp4 --model lraspp.onnx --size 640x360

The stage table runs the pipeline's own building blocks one frame at a time, one after the other
(no overlap), and prints medians per frame: decode, resize, preprocess, inference, argmax/resize,
paint, encode. Then `segtool run` itself runs on the same video (a child process, --json) and its
end-to-end FPS is printed: stages overlap there (decode/preprocess ahead of inference on one
thread, paint/encode behind it on another), so on 2 cores it is faster than 1000 / (sum of medians).

Each stage has a wall and a CPU column (``time.process_time``: every thread of this process), so a
busy machine shows in the wall figures, not much in the CPU ones. A decoder with threads of its own
(OpenCV's) decodes ahead in the background: part of its cost lands in later rows. The script runs
the code it imports: the OpenCV pipeline before PyAV (``PYTHONPATH=<a copy of that tree>``) or the
PyAV one, and says which.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

STAGES = ("decode", "resize", "preprocess", "inference", "argmax/resize", "paint", "encode")


def cpu_flags() -> str:
    wanted = ("avx2", "avx512f", "avx512_vnni", "amx_tile")
    try:
        have = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "?"
    return " ".join(flag for flag in wanted if flag in have) or "none of avx2/avx512f/avx512_vnni/amx_tile"


def parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    width, height = text.lower().split("x")
    return int(width), int(height)


def stage_profile(video_path: str, model: str, size: tuple[int, int] | None, frames: int, warmup: int,
                  threads: int | None, codec: str | None, out_size: tuple[int, int] | None,
                  ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:  # fmt: skip
    """Per-frame seconds of each stage, wall and CPU (all threads of this process), the pipeline's own
    functions called in sequence, as `segment_video` calls them: the PyAV pipeline where it is there
    (labels at inference size, painted at the output size), else the OpenCV one before it."""
    from segtool.runtime import Segmenter
    from segtool.runtime.files import video as video_io
    from segtool.runtime.files.pictures import Painter
    from segtool.runtime.model.postprocess import resize_labels
    from segtool.runtime.model.preprocess import resize_for_inference, to_uint8_3ch

    pyav = hasattr(video_io, "VideoOutput")
    seg = Segmenter(model, device="cpu", threads=threads, warn_random=False)
    painter = Painter(seg.meta, 0.5)
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    cpu: dict[str, list[float]] = {stage: [] for stage in STAGES}
    max_size = None if size else 640
    with tempfile.TemporaryDirectory(prefix="video-stages-") as tmp:
        target = Path(tmp) / "out.mp4"
        with video_io.VideoSource(video_path, max_pixels=None) as video:
            if pyav:
                output = video_io.VideoOutput(codec=codec or "h264", size=out_size)
                sink = video_io.VideoSink({"overlay": target}, video.fps, output)
            else:
                sink = video_io.VideoSink({"overlay": target}, video.fps)
            out_w, out_h = out_size or (video.width, video.height)
            frames_iter = video.frames(frames + warmup)
            k = 0
            while True:
                marks = [(time.perf_counter(), time.process_time())]
                frame = next(frames_iter, None)
                marks.append((time.perf_counter(), time.process_time()))
                if frame is None:
                    break
                if pyav:
                    small = resize_for_inference(frame, max_size, size)
                    if (out_w, out_h) != (video.width, video.height):
                        frame = cv2.resize(frame, (out_w, out_h), interpolation=cv2.INTER_AREA)
                else:
                    small = resize_for_inference(to_uint8_3ch(frame), max_size, size)
                marks.append((time.perf_counter(), time.process_time()))
                tensor = seg.normalize([small], "bgr")
                marks.append((time.perf_counter(), time.process_time()))
                output_ = seg.forward(tensor)
                marks.append((time.perf_counter(), time.process_time()))
                if output_.shape[-2:] != tensor.shape[2:]:  # a graph with a smaller output: Segmenter.run's step
                    output_ = seg.run(tensor)
                if pyav:  # argmax at inference size, then the labels scaled once to the output size
                    labels = resize_labels(seg.labels_at(output_, *small.shape[:2])[0], out_h, out_w)
                else:
                    labels = seg.labels_at(output_, *frame.shape[:2])[0]
                marks.append((time.perf_counter(), time.process_time()))
                pictures = painter.compose(frame, labels, ("overlay",))
                marks.append((time.perf_counter(), time.process_time()))
                sink.write(pictures)
                marks.append((time.perf_counter(), time.process_time()))
                if k >= warmup:
                    for stage, (a, b) in zip(STAGES, zip(marks, marks[1:])):
                        times[stage].append(b[0] - a[0])
                        cpu[stage].append(b[1] - a[1])
                k += 1
            t0, c0 = time.perf_counter(), time.process_time()
            sink.close()
            times["finalize (once)"] = [time.perf_counter() - t0]
            cpu["finalize (once)"] = [time.process_time() - c0]
    where = f"PyAV, {sink.encoder}" if pyav else "OpenCV, mp4v"
    print(f"pipeline: {where}; painted and encoded at {out_w}x{out_h}")
    return times, cpu


def end_to_end(video_path: str, model: str, size: str | None, frames: int | None, extra: list[str]) -> dict:
    """`segtool run` in a child process (this interpreter, this PYTHONPATH): its own FPS and the wall time."""
    with tempfile.TemporaryDirectory(prefix="video-e2e-") as tmp:
        command = [sys.executable, "-c", "from segtool.cli.main import main; main()", "run", video_path,
                   "--model", model, "--out", tmp, "--device", "cpu", "--json", "--quiet"]  # fmt: skip
        if size:
            command += ["--size", size]
        if frames:
            command += ["--max-frames", str(frames)]
        command += extra
        started, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
        if proc.returncode != 0:
            raise SystemExit(f"segtool run failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        (result,) = json.loads(proc.stdout)["results"]
        sizes = {kind: Path(path).stat().st_size for kind, path in result["outputs"].items()}
    return {"frames": result["frames"], "seconds": result["seconds"], "fps": result["fps"], "wall_s": wall,
            "cpu_s": cpu_s, "bytes": sizes, "command": " ".join(command[3:])}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--model", required=True)
    parser.add_argument("--size", default="640x360", help="inference WIDTHxHEIGHT ('' for the default long side)")
    parser.add_argument("--frames", type=int, default=60, help="frames timed in the stage table")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (stage table)")
    parser.add_argument("--codec", default=None, help="stage table: the sink's codec (PyAV pipeline)")
    parser.add_argument("--out-size", default=None, help="stage table: paint/encode at WIDTHxHEIGHT (PyAV pipeline)")
    parser.add_argument("--e2e-frames", type=int, default=None, help="end to end: --max-frames (default: all)")
    parser.add_argument("--no-stages", action="store_true")
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument("run_args", nargs="*", help="after --: extra `segtool run` flags for the end-to-end run")
    args = parser.parse_args()
    size = parse_size(args.size)
    print(f"CPU flags: {cpu_flags()}; cores: {os.cpu_count()}; load average: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    if not args.no_stages:
        times, cpu = stage_profile(args.video, args.model, size, args.frames, args.warmup, args.threads, args.codec,
                              parse_size(args.out_size))  # fmt: skip
        print(f"\nstages, {len(times['decode'])} frames of {args.video}, model {args.model}, inference at "
              f"{args.size or 'long side 640'} (one after another, medians per frame):\n")  # fmt: skip
        print("| stage | wall median ms | wall p90 ms | CPU median ms |\n| --- | ---: | ---: | ---: |")
        total = total_cpu = 0.0
        for stage, values in times.items():
            median, cpu_median = statistics.median(values) * 1e3, statistics.median(cpu[stage]) * 1e3
            p90 = float(np.percentile(values, 90)) * 1e3
            if stage in STAGES:
                total, total_cpu = total + median, total_cpu + cpu_median
            print(f"| {stage} | {median:.2f} | {p90:.2f} | {cpu_median:.2f} |")
        print(
            f"| sum of stage medians | {total:.2f} | | {total_cpu:.2f} |\n\none after another: {1e3 / total:.1f} FPS; "
            f"CPU work {total_cpu:.0f} ms per frame = at most {2e3 / total_cpu:.1f} FPS on 2 idle cores"
        )
    if not args.no_e2e:
        e2e = end_to_end(args.video, args.model, args.size or None, args.e2e_frames, args.run_args)
        per_frame = e2e["cpu_s"] / e2e["frames"] * 1e3
        print(f"\nend to end: `segtool {e2e['command']}`\n  {e2e['frames']} frames in {e2e['seconds']:.2f} s: "
              f"**{e2e['fps']:.2f} FPS** (process wall {e2e['wall_s']:.1f} s, CPU {e2e['cpu_s']:.1f} s = "
              f"{per_frame:.0f} CPU-ms per frame with start-up; outputs {e2e['bytes']})")  # fmt: skip


if __name__ == "__main__":
    main()
