"""Video I/O and nothing else: frames out of a file, stream or camera; pictures into video files.

``VideoSource`` decodes with FFmpeg's libraries (PyAV) on FFmpeg's own threads and hands out BGR
frames turned the way the file says they are displayed (rotation metadata). A camera (an integer
index) that PyAV cannot open is read with OpenCV. ``VideoSink`` encodes one video file per kind of
picture: H.264 in MP4 by default (yuv420p, the index at the front: it plays in every browser), or
HEVC, VP9 or MPEG-4 part 2; NVENC when an NVIDIA encoder really opens. The input's audio is copied
into the overlay and side-by-side videos as it is. Files are written under hidden temporary names
that ``close()`` checks and moves into place, so an interrupted or failed run never leaves a
half-written video under its real name.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import cv2
import numpy as np
from av.video.codeccontext import VideoCodecContext
from av.video.stream import VideoStream

from segtool.runtime.errors import InputError, OutputError, UnencodableSize
from segtool.runtime.files.images import DEFAULT_MAX_PIXELS, header_size, regular_file_problem, temp_name, write_problem
from segtool.runtime.files.video_settings import (
    AUDIO_KINDS,
    DEFAULT_FPS,
    DEFAULT_PRESET,
    ENCODERS,
    PRESETS,
    QUALITY,
    Reconnect,
    VideoOutput,
    codec_threads,
)

log = logging.getLogger(__name__)

_MP4_LIKE = (".mp4", ".m4v", ".mov")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:160]


@dataclass(frozen=True)
class AudioInput:
    """The audio stream of a video file, to copy into the outputs: ``start`` is the time of the first
    video frame in the input (seconds), which becomes time 0 in the output."""

    path: str
    index: int
    codec: str
    start: float = 0.0


# Display-matrix rotation (degrees counter-clockwise, PyAV's ``VideoFrame.rotation``) -> the turn
# that shows the frame upright, as FFmpeg's own autorotation and players do.
_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


class _Unreachable(InputError):
    """A source that did not open (refused, timed out, no frame yet): for a live one, worth another try."""


class VideoSource:
    """An opened video file, stream URL or camera: its displayed size, fps and (if known) length.

    Frames come out as BGR arrays, upright, with the time each is shown at (``timed_frames``), counted
    from the first frame: a variable frame rate, or frames missing from the file, keeps its timing.
    ``close()`` may be called from another thread while frames are being decoded: decoding and
    closing take turns.

    A live source (a stream URL or a camera, never a file) given ``reconnect`` is opened again when
    it drops or stalls, after 1, 2, 4, ... seconds (``Reconnect``): one warning line per drop, counted
    in ``drops``. Frame times go on across the gap, so the frames lost are those the source did not
    send. A stream that does not open at the start gets the same tries; after the last, it is lost
    (``failure`` says why). A live source that announces a duration (a file served over HTTP) ends
    at its end, as a file does.
    """

    def __init__(
        self,
        location: str | int,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
        reconnect: Reconnect | None = None,
    ):
        self.name = f"camera {location}" if isinstance(location, int) else str(location)
        self.location = location
        self.max_pixels = max_pixels
        self.threads = threads
        self.live = isinstance(location, int) or "://" in str(location)
        self.reconnect = reconnect if self.live else None
        self.container: av.container.InputContainer | None = None
        self.capture: cv2.VideoCapture | None = None
        self.audio: AudioInput | None = None
        self.rotation = 0  # 0, 90, 180 or 270: degrees counter-clockwise the decoded frames are turned by
        self.failure = ""  # why decoding stopped before the end, if it did
        self.frames_read = 0
        self.frame_count: int | None = None
        self.fps = DEFAULT_FPS
        self.time_base: Fraction | None = None  # of the input's frame times, where it has them
        self.width = self.height = 0
        self.start = 0.0  # the first frame's time in the input (seconds): time 0 of the frames
        self.drops = 0  # times a live source dropped or stalled and was opened again
        self.offset = 0.0  # added to the frame times of the current connection (the time before it)
        self._endless = False  # no duration announced: the end of the source is a drop, not its end
        self._stopping = threading.Event()
        self._lock = threading.RLock()
        self._first: tuple[float, np.ndarray] | None = None  # (time in the input, picture)
        self._decoded: Iterator[av.VideoFrame] = iter(())
        self._time = 0.0  # the last decoded frame's time in the input (seconds)
        self._captured = 0  # frames read from the OpenCV camera since it opened
        self._last = (0.0, time.monotonic())  # the last frame's time, and when it was read
        if isinstance(location, str) and not self.live:
            if problem := regular_file_problem(Path(location)):
                raise InputError(f"{self.name}: {problem}")  # a FIFO or device is never opened
            with open(location, "rb") as file:  # an animated GIF's canvas is allocated when it opens
                self._check_size(header_size(file))
        if isinstance(location, int) or self.reconnect is None:
            self._open_location()
        else:
            self._open_retrying(self.reconnect)

    def _open_location(self) -> None:
        if isinstance(self.location, int):
            self._open_camera(self.location, self.threads)
        else:
            self._open(self.location, self.threads)

    def _open_retrying(self, reconnect: Reconnect) -> None:
        """A stream URL, tried again after 1, 2, 4, ... seconds while it does not open."""
        started = time.monotonic()
        for attempt in range(1, reconnect.tries + 2):
            try:
                return self._open_location()
            except _Unreachable as exc:
                if attempt > reconnect.tries or self._stopping.wait(reconnect.wait(attempt)):
                    raise InputError(f"{exc}; {attempt} tries in {time.monotonic() - started:.0f} s") from None
                log.info("%s: try %d of %d failed (%s)", self.name, attempt, reconnect.tries + 1, exc)

    def _open(self, location: str, threads: int | None, format: str | None = None) -> None:
        stall = self.reconnect.stall if self.reconnect else 30.0
        try:
            container = av.open(
                location, format=format, metadata_errors="replace", timeout=(15.0, stall) if self.live else None
            )
        except Exception as exc:  # FFmpeg's errors, or OSError for a path
            raise _Unreachable(
                f"{self.name}: cannot open (not an image or a video FFmpeg can decode, corrupt, or unreachable: "
                f"{_first_line(exc)})"
            ) from None
        self.container = container
        if not container.streams.video:
            self._release()
            raise InputError(f"{self.name}: cannot open (no video stream)")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # a codec FFmpeg does not know (or a corrupt header)
            self._release()
            raise InputError(f"{self.name}: cannot open (the video stream's codec is unknown or unsupported)")
        self._check_size((stream.codec_context.width, stream.codec_context.height))  # before a frame is allocated
        try:
            stream.thread_type = "AUTO"  # frame and slice threads, as many as codec_threads() allows
            stream.codec_context.thread_count = codec_threads(threads)
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            self.frame_count = stream.frames if stream.frames > 0 and not self.live else None
            self.time_base = stream.time_base
            self._decoded = container.decode(stream)
        except Exception as exc:  # a header FFmpeg read but cannot use
            self._release()
            raise InputError(f"{self.name}: cannot open ({_first_line(exc)})") from None
        self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
        self._endless = container.duration is None
        # The first frame tells the displayed size (rotation is frame side data in FFmpeg 7+) and time 0.
        with self._lock:
            first = self._decode()
        if first is None:
            self._release()
            failure, self.failure = self.failure, ""
            raise _Unreachable(f"{self.name}: no frame could be decoded" + (f" ({failure})" if failure else ""))
        self.start, image = first  # its time in the input
        self._first = first
        self.height, self.width = image.shape[:2]
        if container.streams.audio and not self.live:
            audio = container.streams.audio[0]
            self.audio = AudioInput(location, audio.index, audio.codec_context.name, self.start)

    def _open_camera(self, index: int, threads: int | None) -> None:
        """V4L2 through PyAV where the device exists, else OpenCV (which knows every platform's cameras)."""
        if index < 0:  # OpenCV crashes the process (SIGSEGV) on some negative indices
            raise InputError(f"{self.name}: camera indices start at 0")
        device = f"/dev/video{index}"
        if os.path.exists(device):
            try:
                return self._open(device, threads, format="v4l2")
            except InputError:
                pass
        try:
            capture = cv2.VideoCapture(index)
        except cv2.error as exc:
            raise _Unreachable(f"{self.name}: cannot open ({_first_line(exc)})") from None
        if not capture.isOpened():
            capture.release()
            raise _Unreachable(f"{self.name}: cannot open (no such camera, or it is busy)")
        self.capture = capture
        self._captured = 0
        self._endless = True
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
        self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._check_size((self.width, self.height))

    def _decode(self) -> tuple[float, np.ndarray] | None:
        """The next frame's time in the input and its picture (BGR, upright), or None at the end (or
        where a frame fails to decode). A frame without a time is shown one frame after the one before."""
        if self.container is None:
            return None
        try:
            frame = next(self._decoded, None)
            if frame is None:
                return None
            self._check_size((frame.width, frame.height))  # a stream may change size mid-way
            self._time = float(frame.time) if frame.time is not None else self._time + 1 / self.fps
            image = _bgr(frame)
            self.rotation = round(frame.rotation / 90) % 4 * 90
        except InputError:
            raise
        except av.error.ExitError:  # the read timeout of a live source: nothing came
            self.failure = f"no data for {self.reconnect.stall if self.reconnect else 30.0:g} s"
            return None
        except Exception as exc:  # FFmpeg's errors (corrupt data, a cut file), or a frame too large to allocate
            self.failure = f"frame {self.frames_read} cannot be decoded ({_first_line(exc)})"
            return None
        turn = _TURNS.get(self.rotation // 90)
        return self._time, (image if turn is None else cv2.rotate(image, turn))

    def _read(self) -> tuple[float, np.ndarray] | None:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self.capture is None:
            return self._decode()
        try:
            ok, frame = self.capture.read()
        except cv2.error as exc:  # e.g. a frame too large to allocate
            raise InputError(f"{self.name}: frame {self.frames_read} cannot be decoded ({_first_line(exc)})") from None
        if not ok:
            return None
        self._check_size((frame.shape[1], frame.shape[0]))
        self._captured += 1
        return (self._captured - 1) / self.fps, frame

    def _reopen(self) -> bool:
        """After a live source dropped (ended, failed or stalled): open it again, after 1, 2, 4, ...
        seconds. False where it is not to be (a file, a source with an end, ``stop()``), or where every
        try failed (``failure`` says so)."""
        if self.reconnect is None or not self._endless or self._stopping.is_set():
            return False
        why, self.failure = self.failure or "the source ended", ""
        self.drops += 1
        log.warning("%s: dropped after %d frames (%s); reconnecting", self.name, self.frames_read, why)
        with self._lock:
            self._release()
        started = time.monotonic()
        for attempt in range(1, self.reconnect.tries + 1):
            if self._stopping.wait(self.reconnect.wait(attempt)):
                return False
            try:
                with self._lock:
                    self._open_location()
            except _Unreachable as exc:
                why = str(exc)
                continue
            when, clock = self._last
            self.offset = when + max(time.monotonic() - clock, 1 / self.fps)  # the gap stays a gap
            log.info("%s: reconnected after %.1f s", self.name, time.monotonic() - started)
            return True
        self.failure = (
            f"the source is lost: {self.reconnect.tries} tries to reconnect in {time.monotonic() - started:.0f} s "
            f"failed; the last: {why}"
        )
        return False

    def frames(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """BGR frames until the end (or ``limit``); a video that yields none is an error."""
        return (image for _, image in self.timed_frames(limit))

    def timed_frames(self, limit: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
        """(seconds from the first frame, BGR frame) until the end (or ``limit``), as ``frames``; a live
        source with ``reconnect`` is opened again each time it drops."""
        while limit is None or self.frames_read < limit:
            with self._lock:
                frame = self._read()
            if frame is None:
                if self._reopen():
                    continue
                break
            when = self.offset + frame[0] - self.start
            self._last = (when, time.monotonic())
            self.frames_read += 1
            yield when, frame[1]
        if self.frames_read == 0:
            raise InputError(f"{self.name}: no frame could be decoded" + (f" ({self.failure})" if self.failure else ""))

    def _check_size(self, size: tuple[int, int] | None) -> None:
        """Frames above the pixel limit are refused, as still images are."""
        if self.max_pixels and size and size[0] * size[1] > self.max_pixels:
            self._release()
            raise InputError(
                f"{self.name}: frames of {size[0]}x{size[1]} are {size[0] * size[1] / 1e6:.0f} MP, over "
                f"the {self.max_pixels / 1e6:g} MP limit (--max-pixels; 0 = no limit)"
            )

    @property
    def ended_early(self) -> bool:
        """Fewer frames than the container announced, or a frame failed to decode: the file is cut or corrupt
        (or a live source was lost)."""
        return bool(self.failure) or (self.frame_count is not None and self.frames_read < self.frame_count - 1)

    def stop(self) -> None:
        """No more reconnecting (from any thread, at once): the frames end at the next drop, or now
        where a reconnect is waiting."""
        self._stopping.set()

    def _release(self) -> None:
        with self._lock:
            if self.container is not None:
                self.container.close()
                self.container = None
            if self.capture is not None:
                self.capture.release()
                self.capture = None

    def close(self) -> None:
        self.stop()
        self._release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: FFmpeg demuxers a video from an untrusted source (a server upload) may be opened with: containers
#: that hold their own streams. Playlists and lists (HLS, DASH, concat, image sequences) would make
#: FFmpeg open the files or URLs they name, so they are not among them.
UPLOAD_FORMATS = "mov,matroska,avi,gif,mpegts,flv,ivf,ogg"


def refuse_unsafe_container(path: str, name: str) -> None:
    """``InputError`` unless ``path`` opens as one of ``UPLOAD_FORMATS``, reading nothing but that file.
    FFmpeg's probe is deterministic, so a later plain open of the same file picks the same demuxer."""
    try:
        av.open(path, options={"format_whitelist": UPLOAD_FORMATS, "protocol_whitelist": "file"}).close()
    except Exception as exc:  # FFmpeg's errors
        raise InputError(
            f"{name}: not a video in a container the server takes (MP4/MOV, Matroska/WebM, AVI, "
            f"GIF, MPEG-TS, FLV, IVF, Ogg): {_first_line(exc).replace(path, name)}"
        ) from None


def _nvidia_present() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


@functools.cache
def gpu_encoder_problem(name: str) -> str | None:
    """None when the NVENC encoder ``name`` really works here, proven by encoding one 256x144 frame;
    else why not, in one line (FFmpeg's own last error, e.g. "Cannot load libcuda.so.1"). Asked once
    per process."""
    if name not in av.codecs_available:
        return "not in this FFmpeg build"
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # FFmpeg's reason is only in its log: caught below, never printed
    capture = av.logging.Capture()
    try:
        with capture:
            context = av.CodecContext.create(name, "w")
            assert isinstance(context, VideoCodecContext)
            context.width, context.height, context.pix_fmt = 256, 144, "yuv420p"
            context.time_base, context.framerate = Fraction(1, 25), Fraction(25)
            context.open()
            frame = av.VideoFrame.from_ndarray(np.full((216, 256), 128, np.uint8), format="yuv420p")
            frame.pts = 0
            packets = context.encode(frame) + context.encode(None)
        return None if packets else "it encoded nothing"
    except Exception as exc:
        said = [message.strip() for _, _, message in capture.logs if message.strip()]
        return said[-1][:160] if said else _first_line(exc)
    finally:
        av.logging.set_level(previous)


def choose_encoder(codec: str) -> str:
    """The encoder for ``codec``: its NVENC encoder when one really opens, else the CPU one (and one
    log line saying why; a warning where an NVIDIA driver is installed, since that one should work)."""
    gpu, cpu = ENCODERS[codec]
    if gpu is None:
        return cpu
    problem = gpu_encoder_problem(gpu)
    if problem is None:
        return gpu
    _log_fallback(gpu, cpu, problem)
    return cpu


@functools.cache
def _log_fallback(gpu: str, cpu: str, problem: str) -> None:
    """Once per process and encoder."""
    level = logging.WARNING if _nvidia_present() else logging.INFO
    log.log(level, "%s does not open here (%s): encoding with %s", gpu, problem, cpu)


def encoder_options(encoder: str, quality: int, preset: str) -> dict[str, str]:
    """FFmpeg options of ``encoder`` for a quality (see ``QUALITY``) and an x264 preset name."""
    speed = PRESETS.index(preset)
    if encoder in ("libx264", "libx265"):
        options = {"preset": preset, "crf": str(quality)}
        if encoder == "libx265":
            options["x265-params"] = "log-level=error"  # x265 prints to stderr itself otherwise
        return options
    if encoder.endswith("_nvenc"):  # p1 (fastest) .. p7
        return {"preset": f"p{min(7, 1 + speed * 7 // len(PRESETS))}", "rc": "vbr", "cq": str(quality), "b": "0"}
    if encoder == "libvpx-vp9":  # cpu-used 8 (fastest) .. 0; realtime deadline for the fast ones
        deadline = "realtime" if speed <= 3 else "good"
        return {"crf": str(quality), "b": "0", "cpu-used": str(max(0, 8 - speed)), "row-mt": "1", "deadline": deadline}
    return {}


class _AudioCopy:
    """Packets of the input's audio stream, muxed as they are into an output, up to a time."""

    def __init__(self, audio: AudioInput, output: av.container.OutputContainer):
        self.container = av.open(audio.path, metadata_errors="replace")
        self.input = self.container.streams[audio.index]
        try:
            self.stream = output.add_stream_from_template(self.input)
        except BaseException:
            self.container.close()
            raise
        base = self.input.time_base or Fraction(1, 1000)
        self.base = float(base)
        self.shift = round(audio.start / self.base) if audio.start > 0 else 0  # ticks: the first frame is time 0
        self.packets = self.container.demux(self.input)
        self.waiting: av.Packet | None = None
        self.done = False

    def until(self, seconds: float, mux: Callable[[av.Packet], None]) -> None:
        """Mux every packet that starts before ``seconds`` (output time)."""
        while not self.done:
            if self.waiting is None:
                try:
                    packet = next(self.packets, None)
                except Exception as exc:  # a corrupt audio stream ends the sound, never the video
                    log.warning("%s: audio stopped (%s)", self.container.name, _first_line(exc))
                    packet = None
                if packet is None:
                    self.done = True
                    return
                if packet.dts is None or packet.size == 0:  # the demuxer's flush packet
                    continue
                self.waiting = packet
            packet, dts = self.waiting, self.waiting.dts or 0
            start = (packet.pts if packet.pts is not None else dts) - self.shift
            if start * self.base >= seconds:
                return
            self.waiting = None
            if self.shift and start < 0:  # before the first video frame
                continue
            if self.shift:
                packet.dts = dts - self.shift
                packet.pts = None if packet.pts is None else packet.pts - self.shift
            packet.stream = self.stream
            mux(packet)

    def close(self) -> None:
        self.container.close()


class _Encoder:
    """One output video: the container, its encoder and, optionally, the input's audio. Each picture
    is shown at the time it is given, in ticks of the input's time base where the encoder takes it."""

    def __init__(self, sink: VideoSink, temp: Path, target: Path, shape: tuple[int, ...], audio: AudioInput | None):
        height, width = shape[:2]
        self.shape = (height, width)
        self.pad = (height % 2, width % 2)  # 4:2:0 needs even sizes: one more row/column, repeated
        self.size = (width + self.pad[1], height + self.pad[0])
        if any(self.pad):
            edges = " and ".join(edge for edge, p in zip(("row", "column"), self.pad) if p)
            encoded = f"pictures of {width}x{height} are encoded as {self.size[0]}x{self.size[1]}"
            log.warning("%s: %s, the last %s repeated (4:2:0 video needs even sizes)", target.name, encoded, edges)
        output = sink.output
        self.rate = Fraction(sink.fps).limit_denominator(1001)
        self.time_base = sink.time_base or 1 / self.rate
        if output.codec == "mpeg4" and self.time_base.denominator > 65535:  # the most MPEG-4 part 2 takes
            self.time_base = Fraction(1, 60000)
        self.pts = -1  # the last picture's
        self.end = 0.0  # when the last picture ends (seconds): the sound is copied up to there
        self.audio: _AudioCopy | None = None
        quality = output.quality if output.quality is not None else QUALITY[output.codec][0]
        cpu = ENCODERS[output.codec][1]
        candidates = [sink.encoder] if sink.encoder == cpu else [sink.encoder, cpu]
        for k, encoder in enumerate(candidates):
            try:
                self._open(temp, target, encoder, quality, output, audio)
                self.encoder = encoder
                return
            except OutputError as exc:
                if k + 1 == len(candidates):
                    raise
                log.warning("%s failed to start (%s): encoding with %s", encoder, exc, candidates[k + 1])

    def _open(
        self, temp: Path, target: Path, encoder: str, quality: int, output: VideoOutput, audio: AudioInput | None
    ) -> None:
        """Open the container and the encoder, with the input's audio if the container takes it; an
        audio stream that stops the file from starting is left out (one warning), never the video."""
        mp4 = target.suffix.lower() in _MP4_LIKE
        left_out = ""
        for with_audio in (True, False) if audio else (False,):
            try:
                self.container = av.open(str(temp), "w", container_options={"movflags": "+faststart"} if mp4 else {})
            except Exception as exc:
                raise OutputError(f"cannot write {target}: {_problem(exc)}") from None
            try:
                if audio and with_audio and audio.codec not in self.container.supported_codecs:
                    raise ValueError(f"{target.suffix} cannot hold {audio.codec}")
                options = encoder_options(encoder, quality, output.preset or DEFAULT_PRESET)
                stream = self.container.add_stream(encoder, rate=self.rate, options=options)
                assert isinstance(stream, VideoStream)
                stream.width, stream.height = self.size
                stream.pix_fmt = "yuv420p"
                context = stream.codec_context
                context.thread_count = codec_threads(output.threads)
                context.time_base = self.time_base
                # OpenCV's BGR -> I420 conversion (``write``) is BT.601 with video range: say so.
                context.colorspace, context.color_range, context.color_primaries, context.color_trc = 6, 1, 6, 6
                if encoder == "mpeg4":
                    context.qmin = context.qmax = quality
                if mp4 and encoder in ("libx265", "hevc_nvenc"):
                    context.codec_tag = "hvc1"  # what Apple's players and Safari want for HEVC in MP4
                self.stream = stream
                self.audio = _AudioCopy(audio, self.container) if audio and with_audio else None
                self.container.start_encoding()
            except Exception as exc:
                self.abandon()
                temp.unlink(missing_ok=True)
                if with_audio:
                    left_out = _first_line(exc)
                    continue
                reason = getattr(exc, "strerror", None) or _first_line(exc)
                raise UnencodableSize(
                    f"cannot write {target}: the {encoder} encoder cannot take {self.size[0]}x{self.size[1]} "
                    f"pictures ({reason})"
                ) from None
            if left_out and audio:
                log.warning("%s: the input's audio (%s) is left out (%s)", target.name, audio.codec, left_out)
            return

    def write(self, picture: np.ndarray, seconds: float) -> None:
        if picture.shape[:2] != self.shape:  # a stream that changed size mid-way: kept at the first size
            picture = cv2.resize(picture, self.shape[::-1], interpolation=cv2.INTER_AREA)
        if any(self.pad):
            picture = cv2.copyMakeBorder(picture, 0, self.pad[0], 0, self.pad[1], cv2.BORDER_REPLICATE)
        yuv = np.asarray(cv2.cvtColor(picture, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)  # BT.601, video range
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        self.pts = max(self.pts + 1, round(seconds / self.time_base))  # encoders want them increasing
        frame.pts, frame.time_base = self.pts, self.time_base
        self.container.mux(self.stream.encode(frame))
        self.end = float(self.pts * self.time_base + 1 / self.rate)
        if self.audio is not None:
            self.audio.until(self.end, self.container.mux_one)

    def finish(self) -> None:
        """Flush the encoder, the sound up to the end of the last frame, and the index (moved to the front)."""
        self.container.mux(self.stream.encode(None))
        if self.audio is not None:
            self.audio.until(self.end, self.container.mux_one)
        self.container.close()
        self.abandon()

    def abandon(self) -> None:
        """Close the input's audio and the container, whatever state they are in (again is harmless)."""
        if self.audio is not None:
            self.audio.close()
            self.audio = None
        try:
            self.container.close()
        except Exception:
            pass


_BT601 = (2, 5, 6)  # FFmpeg's colour spaces: unspecified (read as BT.601), BT.470BG, SMPTE 170M
_LIMITED = (0, 1)  # colour ranges: unspecified (read as limited), limited ("MPEG")


def _bgr(frame: av.VideoFrame) -> np.ndarray:
    """The frame as BGR. BT.601 4:2:0 frames in limited range are converted by OpenCV, whose result is
    the same on every CPU (FFmpeg's converter rounds differently on Arm and x86_64: 98.9% of pixels
    off by 1-2 levels, measured under qemu, docs/EDGE.md) and faster; OpenCV knows no other colour
    space, so the rest (BT.709 HD video, full range, other layouts) are FFmpeg's."""
    if (
        frame.format.name == "yuv420p"
        and frame.colorspace in _BT601
        and frame.color_range in _LIMITED
        and frame.width % 2 == 0
        and frame.height % 2 == 0
    ):
        return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


def _problem(exc: BaseException) -> str:
    """Why a write failed, in a few words: "disk full" and the like where there is an errno."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return write_problem(OSError(code, os.strerror(code)))
    return _first_line(exc)


class VideoSink:
    """One video file per picture kind, e.g. {"overlay": out/x_overlay.mp4}, all of one frame rate.

    Frame sizes are fixed by the first picture of each kind; each picture is shown at the time given
    with it (seconds; by default one frame after the one before), in ticks of ``time_base``. ``audio``:
    the input's sound, copied into the overlay and side-by-side videos. As a ``with`` block, whatever
    is not closed is discarded.

    With ``output.segment`` each kind goes to a series of files instead, a new one every that many
    seconds of video: out/x_overlay-0001.mp4, -0002, ..., numbered on from the highest number already
    in the folder (a restarted run never overwrites a recording). Each file starts at time 0 with its
    part of the sound, and is finished, checked and moved into place when the next one starts.
    """

    def __init__(
        self,
        targets: dict[str, Path],
        fps: float,
        output: VideoOutput = VideoOutput(),
        audio: AudioInput | None = None,
        time_base: Fraction | None = None,
    ):
        self.targets = targets
        self.fps = fps
        self.output = output
        self.audio = audio
        self.time_base = time_base
        self.temp: dict[str, Path] = {}  # kind -> the hidden file it is written to, until it is moved into place
        self.writers: dict[str, _Encoder] = {}
        self.frames = 0  # pictures written, all files of a series together
        self.part = 0  # the number of the series' current file (0: one file, or not started)
        self.part_start = 0.0  # the time of the current file's first picture
        self.part_end = 0.0  # the time the next file starts: the first picture's time + k x segment
        self.part_frames = 0  # pictures in the current file
        self.finished: dict[str, str] = {}  # the series' files moved into place: "<kind>-0001" -> path
        # Chosen now, on the caller's thread: the NVENC probe is a real encode, done once per process.
        self.encoder = choose_encoder(output.codec) if targets else ENCODERS[output.codec][1]

    def write(self, pictures: dict[str, np.ndarray], seconds: float | None = None) -> None:
        seconds = self.frames / self.fps if seconds is None else seconds
        segment = self.output.segment
        if segment and (not self.part or seconds >= self.part_end):
            if self.part:
                self.finished |= self._finish()
                self.writers.clear()
            else:
                self.part_end = seconds
            while self.part_end <= seconds:  # a gap longer than a segment (a stream away) skips ahead
                self.part_end += segment
            self.part = self.part + 1 if self.part else _first_free_part(self.targets)
            self.part_start, self.part_frames = seconds, 0
        for kind in self.targets:
            target = self._target(kind)
            try:
                writer = self.writers.get(kind) or self._start(kind, target, pictures[kind].shape)
                writer.write(pictures[kind], seconds - self.part_start)
            except OutputError:
                raise
            except Exception as exc:  # FFmpeg's write errors (a full disk) and the file system's
                problem = _problem(exc)
                raise OutputError(f"cannot write {target}: the encoded video does not play back ({problem})") from None
        self.frames += 1
        self.part_frames += 1

    def _target(self, kind: str) -> Path:
        """Where ``kind`` is written now: its target, or the current file of its series."""
        target = self.targets[kind]
        return target.with_name(f"{target.stem}-{self.part:04d}{target.suffix}") if self.part else target

    def _start(self, kind: str, target: Path, shape: tuple[int, ...]) -> _Encoder:
        target.parent.mkdir(parents=True, exist_ok=True)
        self.temp[kind] = temp_name(target, target.suffix)
        audio = self.audio if kind in AUDIO_KINDS else None
        if audio and self.part_start:  # a later file of a series: its sound starts where its pictures do
            audio = replace(audio, start=audio.start + self.part_start)
        writer = _Encoder(self, self.temp[kind], target, shape, audio)
        self.writers[kind] = writer
        return writer

    @property
    def encoders(self) -> dict[str, str]:
        """kind -> the encoder that writes it (known after the first picture)."""
        return {kind: writer.encoder for kind, writer in self.writers.items()}

    def _finish(self) -> dict[str, str]:
        """Finalize the current files, check that each decodes, and move them into place."""
        written = {}
        for kind in self.targets:
            target = self._target(kind)
            temp, writer = self.temp.get(kind), self.writers.get(kind)
            problem = "disk full, or the encoder failed"
            try:
                if writer is not None:
                    writer.finish()
            except Exception as exc:
                problem = _problem(exc)
            if temp is None or not _decodes(temp, self.part_frames):
                raise OutputError(f"cannot write {target}: the encoded video does not play back ({problem})")
            try:
                if target.is_dir():
                    raise IsADirectoryError(errno.EISDIR, "is a directory")
                os.replace(temp, target)
            except OSError as exc:
                raise OutputError(f"cannot write {target}: {write_problem(exc)}") from None
            del self.temp[kind]
            written[f"{kind}-{self.part:04d}" if self.part else kind] = str(target)
            if self.part:
                log.info("%s: %d frames written", target, self.part_frames)
        return written

    def close(self) -> dict[str, str]:
        """Finalize every file, check that it decodes, and move it into place; kind (or kind-0001, ...
        for a series) -> path. On any failure nothing unfinished is left (finished files of a series stay)."""
        try:
            return self.finished | self._finish()
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Drop everything unfinished."""
        for writer in self.writers.values():
            writer.abandon()
        for temp in self.temp.values():
            temp.unlink(missing_ok=True)
        self.temp.clear()

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def _first_free_part(targets: dict[str, Path]) -> int:
    """1 + the highest number of a series file of any target already in its folder (x_overlay-0007.mp4)."""
    highest = 0
    for target in targets.values():
        numbered = re.compile(re.escape(target.stem) + r"-(\d{4,})" + re.escape(target.suffix) + "$")
        with contextlib.suppress(OSError):  # no folder yet
            for name in os.listdir(target.parent):
                if found := numbered.match(name):
                    highest = max(highest, int(found[1]))
    return highest + 1


def _decodes(path: Path, frames: int) -> bool:
    """A finished file re-opens, announces the frames written (where the container says) and yields
    a frame: the last check before it takes its real name."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return stream.frames in (0, frames) and next(container.decode(stream), None) is not None
    except Exception:
        return False
