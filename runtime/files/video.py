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

import errno
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import cv2
import numpy as np
from av.video.codeccontext import VideoCodecContext
from av.video.stream import VideoStream

from segtool.runtime.errors import InputError, OutputError, UnencodableSize, UsageError
from segtool.runtime.files.images import DEFAULT_MAX_PIXELS, header_size, regular_file_problem, temp_name, write_problem

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0
CODECS = ("h264", "hevc", "vp9", "mpeg4")
#: x264/x265's speed names, fastest first; NVENC and VP9 get the nearest setting of their own
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
#: the cheapest H.264 x264 makes: real time beside inference on 2 cores (BENCHMARKS.md), Constrained
#: Baseline (no B-frames, no CABAC), which every decoder plays; --preset veryfast makes files ~3x smaller
DEFAULT_PRESET = "ultrafast"
#: codec -> (NVENC encoder tried first, or None; the CPU encoder)
ENCODERS: dict[str, tuple[str | None, str]] = {
    "h264": ("h264_nvenc", "libx264"),
    "hevc": ("hevc_nvenc", "libx265"),
    "vp9": (None, "libvpx-vp9"),
    "mpeg4": (None, "mpeg4"),
}
#: codec -> (default, lowest, highest) quality: the CRF of x264/x265/VP9 (NVENC's CQ), lower is better;
#: MPEG-4 part 2 has a fixed quantizer, 1 (best) to 31
QUALITY = {"h264": (23, 0, 51), "hevc": (28, 0, 51), "vp9": (32, 0, 63), "mpeg4": (4, 1, 31)}
#: the picture kinds whose videos get the input's sound
AUDIO_KINDS = ("overlay", "side-by-side")
_MP4_LIKE = (".mp4", ".m4v", ".mov")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:160]


def codec_threads(requested: int | None = None) -> int:
    """FFmpeg threads for one decoder or one encoder (0: FFmpeg chooses).

    On a machine of 4 cores or fewer the pipeline already runs decoding, inference and encoding
    side by side and ONNX Runtime's threads take every core during inference: one thread per codec
    costs least there (x264 frame threads and H.264 decoder threads only add synchronisation and
    frames in flight). Larger machines let FFmpeg choose."""
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 1 if cores <= 4 else 0


@dataclass(frozen=True)
class VideoOutput:
    """How video files are written: codec, quality, encoder preset, and the size pictures are
    painted and encoded at (None: the input's size)."""

    codec: str = "h264"
    quality: int | None = None  # None: QUALITY[codec][0]
    preset: str | None = None  # None: DEFAULT_PRESET
    size: tuple[int, int] | None = None  # (width, height)
    threads: int | None = None  # FFmpeg threads per decoder and encoder; None: ``codec_threads()``

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise UsageError(f"unknown codec {self.codec!r}: choose one of {', '.join(CODECS)}")
        _, low, high = QUALITY[self.codec]
        if self.quality is not None and not low <= self.quality <= high:
            raise UsageError(f"--quality {self.quality} is out of range for {self.codec}: {low} to {high}")
        if self.preset is not None and self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        if self.size is not None and (self.size[0] < 2 or self.size[1] < 2):
            raise UsageError(f"output size {self.size[0]}x{self.size[1]} is too small (2x2 at least)")


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


class VideoSource:
    """An opened video file, stream URL or camera: its displayed size, fps and (if known) length.

    Frames come out as BGR arrays, upright, with the time each is shown at (``timed_frames``), counted
    from the first frame: a variable frame rate, or frames missing from the file, keeps its timing.
    ``close()`` may be called from another thread while frames are being decoded: decoding and
    closing take turns.
    """

    def __init__(self, location: str | int, max_pixels: int | None = DEFAULT_MAX_PIXELS, threads: int | None = None):
        self.name = f"camera {location}" if isinstance(location, int) else str(location)
        self.location = location
        self.max_pixels = max_pixels
        self.live = isinstance(location, int) or "://" in str(location)
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
        self._lock = threading.RLock()
        self._first: tuple[float, np.ndarray] | None = None
        self._decoded: Iterator[av.VideoFrame] = iter(())
        self._time = 0.0  # the last decoded frame's time in the input (seconds)
        if isinstance(location, str) and not self.live:
            if problem := regular_file_problem(Path(location)):
                raise InputError(f"{self.name}: {problem}")  # a FIFO or device is never opened
            with open(location, "rb") as file:  # an animated GIF's canvas is allocated when it opens
                self._check_size(header_size(file))
        if isinstance(location, int):
            self._open_camera(location, threads)
        else:
            self._open(location, threads)

    def _open(self, location: str, threads: int | None, format: str | None = None) -> None:
        try:
            container = av.open(
                location, format=format, metadata_errors="replace", timeout=(15.0, 30.0) if self.live else None
            )
        except Exception as exc:  # FFmpeg's errors, or OSError for a path
            raise InputError(
                f"{self.name}: cannot open (not an image or a video FFmpeg can decode, corrupt, or unreachable: "
                f"{_first_line(exc)})"
            ) from None
        self.container = container
        if not container.streams.video:
            self.close()
            raise InputError(f"{self.name}: cannot open (no video stream)")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # a codec FFmpeg does not know (or a corrupt header)
            self.close()
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
            self.close()
            raise InputError(f"{self.name}: cannot open ({_first_line(exc)})") from None
        self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
        # The first frame tells the displayed size (rotation is frame side data in FFmpeg 7+) and time 0.
        with self._lock:
            first = self._decode()
        if first is None:
            self.close()
            raise InputError(f"{self.name}: no frame could be decoded" + (f" ({self.failure})" if self.failure else ""))
        self.start, image = first  # its time in the input, as ``start`` was 0 until now
        self._first = (0.0, image)
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
            raise InputError(f"{self.name}: cannot open ({_first_line(exc)})") from None
        if not capture.isOpened():
            capture.release()
            raise InputError(f"{self.name}: cannot open (no such camera, or it is busy)")
        self.capture = capture
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
        self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._check_size((self.width, self.height))

    def _decode(self) -> tuple[float, np.ndarray] | None:
        """The next frame's time and picture (BGR, upright), or None at the end (or where a frame fails
        to decode). A frame without a time is shown one frame after the one before it."""
        if self.container is None:
            return None
        try:
            frame = next(self._decoded, None)
            if frame is None:
                return None
            self._check_size((frame.width, frame.height))  # a stream may change size mid-way
            self._time = float(frame.time) if frame.time is not None else self._time + 1 / self.fps
            image = frame.to_ndarray(format="bgr24")
            self.rotation = round(frame.rotation / 90) % 4 * 90
        except InputError:
            raise
        except Exception as exc:  # FFmpeg's errors (corrupt data, a cut file), or a frame too large to allocate
            self.failure = f"frame {self.frames_read} cannot be decoded ({_first_line(exc)})"
            return None
        turn = _TURNS.get(self.rotation // 90)
        return self._time - self.start, (image if turn is None else cv2.rotate(image, turn))

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
        return self.frames_read / self.fps, frame

    def frames(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """BGR frames until the end (or ``limit``); a video that yields none is an error."""
        return (image for _, image in self.timed_frames(limit))

    def timed_frames(self, limit: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
        """(seconds from the first frame, BGR frame) until the end (or ``limit``), as ``frames``."""
        while limit is None or self.frames_read < limit:
            with self._lock:
                frame = self._read()
            if frame is None:
                break
            self.frames_read += 1
            yield frame
        if self.frames_read == 0:
            raise InputError(f"{self.name}: no frame could be decoded" + (f" ({self.failure})" if self.failure else ""))

    def _check_size(self, size: tuple[int, int] | None) -> None:
        """Frames above the pixel limit are refused, as still images are."""
        if self.max_pixels and size and size[0] * size[1] > self.max_pixels:
            self.close()
            raise InputError(
                f"{self.name}: frames of {size[0]}x{size[1]} are {size[0] * size[1] / 1e6:.0f} MP, over "
                f"the {self.max_pixels / 1e6:g} MP limit (--max-pixels; 0 = no limit)"
            )

    @property
    def ended_early(self) -> bool:
        """Fewer frames than the container announced, or a frame failed to decode: the file is cut or corrupt."""
        return bool(self.failure) or (self.frame_count is not None and self.frames_read < self.frame_count - 1)

    def close(self) -> None:
        with self._lock:
            if self.container is not None:
                self.container.close()
                self.container = None
            if self.capture is not None:
                self.capture.release()
                self.capture = None

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
        self.frames = 0
        # Chosen now, on the caller's thread: the NVENC probe is a real encode, done once per process.
        self.encoder = choose_encoder(output.codec) if targets else ENCODERS[output.codec][1]

    def write(self, pictures: dict[str, np.ndarray], seconds: float | None = None) -> None:
        seconds = self.frames / self.fps if seconds is None else seconds
        for kind, target in self.targets.items():
            try:
                writer = self.writers.get(kind) or self._start(kind, target, pictures[kind].shape)
                writer.write(pictures[kind], seconds)
            except OutputError:
                raise
            except Exception as exc:  # FFmpeg's write errors (a full disk) and the file system's
                problem = _problem(exc)
                raise OutputError(f"cannot write {target}: the encoded video does not play back ({problem})") from None
        self.frames += 1

    def _start(self, kind: str, target: Path, shape: tuple[int, ...]) -> _Encoder:
        target.parent.mkdir(parents=True, exist_ok=True)
        self.temp[kind] = temp_name(target, target.suffix)
        audio = self.audio if kind in AUDIO_KINDS else None
        writer = _Encoder(self, self.temp[kind], target, shape, audio)
        self.writers[kind] = writer
        return writer

    @property
    def encoders(self) -> dict[str, str]:
        """kind -> the encoder that writes it (known after the first picture)."""
        return {kind: writer.encoder for kind, writer in self.writers.items()}

    def close(self) -> dict[str, str]:
        """Finalize every file, check that it decodes, and move it into place; kind -> path. On any
        failure nothing unfinished is left."""
        written = {}
        try:
            for kind, target in self.targets.items():
                temp, writer = self.temp.get(kind), self.writers.get(kind)
                problem = "disk full, or the encoder failed"
                try:
                    if writer is not None:
                        writer.finish()
                except Exception as exc:
                    problem = _problem(exc)
                if temp is None or not _decodes(temp, self.frames):
                    raise OutputError(f"cannot write {target}: the encoded video does not play back ({problem})")
                try:
                    if target.is_dir():
                        raise IsADirectoryError(errno.EISDIR, "is a directory")
                    os.replace(temp, target)
                except OSError as exc:
                    raise OutputError(f"cannot write {target}: {write_problem(exc)}") from None
                del self.temp[kind]
                written[kind] = str(target)
        except BaseException:
            self.discard()
            raise
        return written

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
