"""Encode cost and file size per codec, in one process: what `segtool run --codec/--preset` buys.

    python benchmarks/video_codecs.py ../shared/data/walk.mp4 --frames 60

The first N frames of the video are decoded once (PyAV, BGR, 1280x720 for walk.mp4) and each
setting encodes all of them through segtool's own ``VideoSink`` (BGR -> I420, encode, mux, index at
the front, the check that the file plays back), one after another in this process. Printed per
setting: wall and CPU milliseconds per frame (CPU: every thread of the process, so it is the cost
on a busy machine too), file size, and the frame rate the encoder alone would sustain on one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2

SETTINGS = [("h264", "ultrafast"), ("h264", "veryfast"), ("hevc", "ultrafast"), ("vp9", "ultrafast"), ("mpeg4", None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=2, help="encodes per setting (the median is printed)")
    parser.add_argument("--threads", type=int, default=None, help="encoder threads (default: segtool's choice)")
    args = parser.parse_args()

    from segtool.runtime.files.video import ENCODERS, VideoOutput, VideoSink, VideoSource, codec_threads

    with VideoSource(args.video, max_pixels=None) as video:
        frames = list(video.frames(args.frames))
        fps = video.fps
    height, width = frames[0].shape[:2]
    print(f"{len(frames)} frames of {args.video} at {width}x{height}, {fps:g} fps; encoder threads "
          f"{codec_threads(args.threads)} (0: FFmpeg's choice); {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| codec | encoder | preset | wall ms/frame | CPU ms/frame | file kB | kbit/s | CPU-bound FPS (1 core) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="video-codecs-") as tmp:
        for codec, preset in SETTINGS:
            walls, cpus, size = [], [], 0
            encoder = ENCODERS[codec][1]
            for k in range(args.repeat):
                target = Path(tmp) / f"{codec}-{preset}-{k}.mp4"
                output = VideoOutput(codec=codec, preset=preset, threads=args.threads)
                sink = VideoSink({"overlay": target}, fps, output)
                wall, cpu = time.perf_counter(), time.process_time()
                for frame in frames:
                    sink.write({"overlay": frame})
                sink.close()
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                size = target.stat().st_size
                encoder = sink.encoder
            wall_ms = statistics.median(walls) / len(frames) * 1e3
            cpu_ms = statistics.median(cpus) / len(frames) * 1e3
            kbits = size * 8 / 1e3 / (len(frames) / fps)
            print(f"| {codec} | {encoder} | {preset or '-'} | {wall_ms:.1f} | {cpu_ms:.1f} | {size / 1e3:.0f} | "
                  f"{kbits:.0f} | {1e3 / cpu_ms:.0f} |")  # fmt: skip
        # What segtool wrote before PyAV: OpenCV's VideoWriter, MPEG-4 part 2 ("mp4v"), which browsers do not play.
        target = Path(tmp) / "opencv.mp4"
        wall, cpu = time.perf_counter(), time.process_time()
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
        for frame in frames:
            writer.write(frame)
        writer.release()
        wall_ms = (time.perf_counter() - wall) / len(frames) * 1e3
        cpu_ms = (time.process_time() - cpu) / len(frames) * 1e3
        size = target.stat().st_size
        print(f"| mp4v (before) | OpenCV VideoWriter | - | {wall_ms:.1f} | {cpu_ms:.1f} | {size / 1e3:.0f} | "
              f"{size * 8 / 1e3 / (len(frames) / fps):.0f} | {1e3 / cpu_ms:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
