"""One video, stream or camera through `segtool run`: the pipelined loop, progress and files."""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from segtool.runtime import Segmenter
from segtool.runtime.outputs import Painter
from segtool.runtime.sources import Source
from segtool.runtime.visualize import shares_from_counts
from segtool.runtime.video import VideoOutputs, VideoSource, segment_frames

WINDOW = "segtool"


def gui_available() -> bool:
    """Whether cv2.imshow can open a window (not in opencv-python-headless, not without a display)."""
    try:
        cv2.namedWindow(WINDOW)
        cv2.destroyWindow(WINDOW)
        return True
    except cv2.error:
        return False


def process_video(seg: Segmenter, item: Source, painter: Painter, out_dir: Path, kinds: set[str], progress,
                  max_size=None, size=None, batch: int = 1, max_frames: int | None = None,
                  show: bool = False) -> dict:
    """Segment every frame; returns the result record (``interrupted`` set if Ctrl-C stopped it).

    Raises SegtoolError when the video cannot be opened or no frame decodes.
    """
    started = time.perf_counter()
    with VideoSource(item.location) as video:
        total = video.frame_count
        if max_frames:
            total = min(total, max_frames) if total else max_frames
        task = progress.add_task(str(item), total=total, fps="")
        outputs = VideoOutputs(out_dir, item.stem, video.fps, video.width, video.height, painter, kinds)
        interrupted, failure, done = False, None, 0
        try:
            for frame, labels in segment_frames(seg, video.frames(max_frames), max_size, size, batch):
                outputs.put(frame, labels)
                done += 1
                progress.update(task, completed=done, fps=f"{done / (time.perf_counter() - started):.2f} fps")
                if show:
                    cv2.imshow(WINDOW, painter.overlay(frame, labels))
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        break
        except KeyboardInterrupt:
            interrupted = True
        except Exception as exc:  # noqa: BLE001 - keep the frames done, report the rest
            failure = exc
        if failure and not outputs.frames_written:
            outputs.discard()
            raise failure
        files = outputs.close()
        progress.update(task, completed=outputs.frames_written)
        ended_early = video.ended_early and not (max_frames or interrupted)
    seconds = time.perf_counter() - started
    return {"input": str(item), "kind": "video", "frames": outputs.frames_written, "fps_in": video.fps,
            "width": video.width, "height": video.height, "seconds": round(seconds, 3),
            "fps": round(outputs.frames_written / seconds, 3) if seconds else 0.0,
            "classes": shares_from_counts(outputs.counts, seg.meta.classes), "outputs": files,
            "interrupted": interrupted,
            "error": (f"{item}: stopped after {video.frames_read} of {video.frame_count} frames "
                      "(a frame failed to decode, or the file is cut)") if ended_early else
                     (str(failure) if failure else None)}
