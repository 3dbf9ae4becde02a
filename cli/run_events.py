"""How `segtool run` shows a run as it happens: progress bars, one line per input, the summary."""

from __future__ import annotations

import cv2
from rich import progress as p

from segtool.runtime.jobs import ImageResult, RunEvents, RunReport, VideoResult
from segtool.runtime.outputs import Painter
from segtool.runtime.sources import BAD, IMAGE, Discovery, Source

from .console import error_line, format_shares, progress_bar, say

WINDOW = "segtool"


class ConsoleEvents(RunEvents):
    def __init__(self, tag: str, quiet: bool, to_stderr: bool, painter: Painter | None = None):
        self.tag, self.quiet, self.to_stderr, self.painter = tag, quiet, to_stderr, painter  # painter: --show
        self.progress = progress_bar(disable=quiet or to_stderr)
        self.images_task: p.TaskID | None = None
        self.video_task = p.TaskID(0)

    def started(self, discovery: Discovery) -> None:
        images = sum(item.kind in (IMAGE, BAD) for item in discovery.items)
        self.progress.start()
        if images > 1:
            self.images_task = self.progress.add_task("images", total=images, rate="")

    def video_started(self, source: Source) -> None:
        self.video_task = self.progress.add_task(str(source), total=None, rate="")

    def frame(self, source, done, total, image, labels) -> None:
        elapsed = self.progress.tasks[-1].elapsed or 0.0
        self.progress.update(
            self.video_task, completed=done, total=total, rate=f"{done / elapsed:.2f} FPS" if elapsed else ""
        )
        if self.painter:
            cv2.imshow(WINDOW, self.painter.compose(image, labels, ("overlay",))["overlay"])
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                raise KeyboardInterrupt

    def _advance(self, source: Source) -> None:
        if self.images_task is not None and source.kind in (IMAGE, BAD):
            self.progress.advance(self.images_task)

    def finished(self, source: Source, result: ImageResult | VideoResult | None) -> None:
        self._advance(source)
        if self.quiet or result is None:  # None: outputs already there (--skip-existing)
            return
        if isinstance(result, VideoResult):  # FPS only for video
            timing = f"{result.frames} frames in {result.seconds:.1f} s, {result.fps:.2f} FPS"
        else:
            timing = f"{result.seconds:.2f} s" + (f", tiled {result.tiled}px" if result.tiled else "")
        written = ", ".join(result.outputs.values())
        say(f"{result.input}: {format_shares(result.classes)}{self.tag} | {timing} -> {written}", self.to_stderr)

    def failed(self, source: Source, message: str) -> None:
        self._advance(source)
        if not self.quiet:
            error_line(message)

    def summary(self, report: RunReport, provider: str) -> None:
        self.progress.stop()
        if not self.quiet:
            frames = sum(r.frames for r in report.results if isinstance(r, VideoResult))
            rate = f", {frames / report.seconds:.2f} FPS" if frames and report.seconds else ""
            skipped = f", {len(report.skipped)} non-media file(s) skipped" if report.skipped else ""
            skipped += f", {len(report.existing)} already done" if report.existing else ""
            head = f"interrupted ({report.interrupted}): " if report.interrupted else ""
            say(
                f"{head}{report.inputs} input(s): {report.ok} ok, {len(report.failures)} failed"
                f"{skipped} in {report.seconds:.1f} s{rate} on {provider}{self.tag}",
                self.to_stderr,
            )
        if report.failures:
            error_line(
                f"{len(report.failures)} of {report.inputs} input(s) failed: "
                + ", ".join(f["input"] for f in report.failures)
            )
