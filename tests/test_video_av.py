"""Video on PyAV (FFmpeg's libraries): H.264 that plays everywhere, odd sizes, sound, rotation,
codecs, the NVENC fallback, SIGTERM mid-video, --out-size and the --preview MJPEG page.

Outputs are read back with PyAV; input clips are made with PyAV too where OpenCV cannot write them
(sound, rotation metadata, odd sizes)."""

from __future__ import annotations

import http.client
import json
import logging
import signal
import socket
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import SEGTOOL, assert_clean_failure, interrupt_segtool, run_in_process, scene, scene_video
from PIL import Image

from segtool.runtime.files import video as video_io
from segtool.runtime.files.preview import BOUNDARY, Preview, parse_address
from segtool.runtime.files.video import VideoOutput, VideoSink, VideoSource


def av_clip(path: Path, frames: int, width: int, height: int, fps: int = 10, rotation: int | None = None,
            audio_seconds: float = 0.0, codec: str = "libx264", pix_fmt: str = "yuv420p",
            ) -> list[np.ndarray]:  # fmt: skip
    """A clip whose frame k is ``scene(height, width, k)``, written with PyAV: ``rotation`` as display
    metadata, an AAC tone of ``audio_seconds``. Returns the BGR frames written."""
    pictures = [scene(height, width, seed=k) for k in range(frames)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation is not None:
            stream.set_display_rotation(rotation)
        sound = container.add_stream("aac", rate=44100) if audio_seconds else None
        for k, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
            frame.pts = k
            container.mux(stream.encode(frame))
        if sound is not None:
            sound.layout = "mono"
            for start in range(0, int(44100 * audio_seconds), 1024):
                tone = np.sin(2 * np.pi * 440 * np.arange(start, start + 1024) / 44100).astype(np.float32)
                chunk = av.AudioFrame.from_ndarray(0.3 * tone[None], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, start
                container.mux(sound.encode(chunk))
            container.mux(sound.encode())
        container.mux(stream.encode())
    return pictures


def probe(path: Path) -> dict:
    """What a player sees in ``path``: codec, pixel format, size, every frame decoded, sound."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = {"codec": video.codec_context.name, "pix_fmt": video.codec_context.pix_fmt, "size": (video.width,
                video.height), "announced": video.frames, "fps": float(video.average_rate or 0),
                "tag": video.codec_context.codec_tag, "format": container.format.name}  # fmt: skip
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video)]
    info["frames"] = frames
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            packets = [p for p in container.demux(audio) if p.size]
            info["audio"] = audio.codec_context.name
            info["audio_packets"] = len(packets)
            info["audio_seconds"] = float(sum(p.duration or 0 for p in packets) * audio.time_base)
    return info


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_output_is_h264_yuv420p_with_the_index_first_and_frames_in_order(tmp_path, tiny):
    source = scene_video(tmp_path / "clip.mp4", 12, width=96, height=64)  # MPEG-4 part 2, as OpenCV writes
    with VideoSource(str(source)) as video:
        decoded = list(video.frames())
    out = tmp_path / "out"
    proc = run_in_process("run", source, "--model", tiny, "--out", out, "--alpha", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert (result["width"], result["height"], result["frames"]) == (96, 64, 12)
    info = probe(out / "clip_overlay.mp4")
    assert (info["codec"], info["pix_fmt"], info["size"], info["announced"]) == ("h264", "yuv420p", (96, 64), 12)
    assert len(info["frames"]) == 12 and info["fps"] == pytest.approx(10.0) and "mp4" in info["format"]
    data = (out / "clip_overlay.mp4").read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart: a browser plays it before it has all of it
    # --alpha 0: the overlay is the frame (below the random-weights stamp), so frame k must match input k
    for k, frame in enumerate(info["frames"]):
        errors = [np.abs(frame[32:].astype(int) - d[32:]).mean() for d in decoded]
        assert int(np.argmin(errors)) == k and errors[k] < 6, (k, errors[k])
    assert not list(out.glob(".*"))


def test_odd_sizes_are_padded_by_one_pixel_and_said(tmp_path, tiny):
    source = tmp_path / "odd.mkv"
    av_clip(source, 4, width=45, height=31, codec="ffv1", pix_fmt="yuv444p")  # lossless, any size
    out = tmp_path / "out"
    proc = run_in_process("run", source, "--model", tiny, "--out", out, "--frames", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "odd_overlay.mp4: pictures of 45x31 are encoded as 46x32, the last row and column repeated" in proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert (result["width"], result["height"]) == (45, 31)  # the input's size is kept and reported
    info = probe(out / "odd_overlay.mp4")
    assert info["size"] == (46, 32) and len(info["frames"]) == 4
    assert Image.open(out / "odd_frames" / "000000_labels.png").size == (45, 31)


def test_the_inputs_audio_is_copied_up_to_the_last_frame(tmp_path, tiny):
    source = tmp_path / "talk.mp4"
    av_clip(source, 20, width=64, height=48, fps=10, audio_seconds=2.0)
    original = probe(source)
    out = tmp_path / "out"
    proc = run_in_process("run", source, "--model", tiny, "--out", out, "--save", "overlay,mask")
    assert proc.returncode == 0, proc.stderr
    copied = probe(out / "talk_overlay.mp4")
    assert copied["audio"] == "aac" and len(copied["frames"]) == 20
    assert copied["audio_packets"] >= original["audio_packets"] - 1  # remuxed, not re-encoded
    assert copied["audio_seconds"] == pytest.approx(original["audio_seconds"], abs=0.05)
    assert "audio" not in probe(out / "talk_mask.mp4")  # the mask video is a picture of labels: no sound
    proc = run_in_process("run", source, "--model", tiny, "--out", tmp_path / "half", "--max-frames", "10")
    assert proc.returncode == 0, proc.stderr
    half = probe(tmp_path / "half" / "talk_overlay.mp4")
    assert len(half["frames"]) == 10 and half["audio_seconds"] == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_honoured(tmp_path, tiny, rotation):
    source = tmp_path / "phone.mp4"
    av_clip(source, 3, width=64, height=48, rotation=rotation)
    upright = (48, 64) if rotation == 180 else (64, 48)  # (height, width) as displayed
    capture = cv2.VideoCapture(str(source))  # OpenCV turns frames by the same metadata (as players do)
    assert capture.get(cv2.CAP_PROP_ORIENTATION_AUTO) == 1
    expected = [capture.read()[1] for _ in range(3)]
    with VideoSource(str(source)) as video:
        frames = list(video.frames())
        assert (video.height, video.width) == upright and video.rotation == rotation % 360
    for got, want in zip(frames, expected):
        assert got.shape[:2] == upright and np.abs(got.astype(int) - want).max() <= 4  # two BT.601 roundings
    out = tmp_path / "out"
    proc = run_in_process("run", source, "--model", tiny, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert (result["height"], result["width"]) == upright
    assert probe(out / "phone_overlay.mp4")["size"] == upright[::-1]  # written upright, no rotation to apply


@pytest.mark.parametrize("codec,name", [("h264", "h264"), ("hevc", "hevc"), ("vp9", "vp9"), ("mpeg4", "mpeg4")])
def test_codec_choices(tmp_path, tiny, codec, name):
    source = scene_video(tmp_path / "c.mp4", 6, width=64, height=48)
    out = tmp_path / "out"
    proc = run_in_process("run", source, "--model", tiny, "--out", out, "--codec", codec, "--preset", "veryfast")
    assert proc.returncode == 0, proc.stderr
    info = probe(out / "c_overlay.mp4")
    assert (info["codec"], info["pix_fmt"], info["size"], len(info["frames"])) == (name, "yuv420p", (64, 48), 6)
    if codec == "hevc":
        assert info["tag"] == "hvc1"  # what Safari needs for HEVC in MP4


def test_quality_changes_the_file_and_bad_video_flags_are_one_line(tmp_path, tiny):
    source = scene_video(tmp_path / "q.mp4", 6, width=96, height=64)
    sizes = {}
    for quality in ("10", "40"):
        proc = run_in_process("run", source, "--model", tiny, "--out", tmp_path / quality, "--quality", quality)
        assert proc.returncode == 0, proc.stderr
        sizes[quality] = (tmp_path / quality / "q_overlay.mp4").stat().st_size
    assert sizes["10"] > sizes["40"]
    for flags, needle in [
        (("--codec", "av1"), "unknown codec 'av1': choose one of h264, hevc, vp9, mpeg4"),
        (("--quality", "60"), "--quality 60 is out of range for h264: 0 to 51"),
        (("--codec", "mpeg4", "--quality", "0"), "--quality 0 is out of range for mpeg4: 1 to 31"),
        (("--preset", "turbo"), "unknown preset 'turbo'"),
        (("--out-size", "big"), "--out-size takes WIDTHxHEIGHT"),
        (("--preview", "host:port"), "--preview 'host:port': expected [HOST:]PORT"),
    ]:
        proc = run_in_process("run", source, "--model", tiny, "--out", tmp_path / "bad", *flags)
        assert_clean_failure(proc, 2, needle)


def test_nvenc_is_proven_by_a_real_encode_and_falls_back_to_libx264_in_one_log_line(tmp_path, caplog):
    problem = video_io.gpu_encoder_problem("h264_nvenc")
    if problem is None:
        pytest.skip("h264_nvenc really encodes on this machine: there is no fallback to see")
    video_io._log_fallback.cache_clear()
    caplog.set_level(logging.INFO, logger="segtool")
    sink = VideoSink({"overlay": tmp_path / "x.mp4"}, 10.0)
    VideoSink({"overlay": tmp_path / "y.mp4"}, 10.0)  # a second video in the same run: no second line
    assert sink.encoder == "libx264"
    lines = [r.getMessage() for r in caplog.records if "nvenc" in r.getMessage()]
    assert lines == [f"h264_nvenc does not open here ({problem}): encoding with libx264"], lines
    sink.write({"overlay": scene(48, 64)})
    assert sink.close() == {"overlay": str(tmp_path / "x.mp4")} and sink.encoders == {"overlay": "libx264"}
    assert probe(tmp_path / "x.mp4")["codec"] == "h264"
    assert VideoSink({"overlay": tmp_path / "z.mp4"}, 10.0, VideoOutput(codec="vp9")).encoder == "libvpx-vp9"


def test_out_size_paints_and_encodes_there_and_label_pngs_keep_the_input_size(tmp_path, tiny):
    source = scene_video(tmp_path / "s.mp4", 5, width=96, height=64)
    out = tmp_path / "out"
    flags = ("--out-size", "48x32", "--frames", "--save", "overlay,side-by-side")
    proc = run_in_process("run", source, "--model", tiny, "--out", out, *flags)
    assert proc.returncode == 0, proc.stderr
    assert probe(out / "s_overlay.mp4")["size"] == (48, 32)
    assert probe(out / "s_side-by-side.mp4")["size"] == (96, 32)
    assert Image.open(out / "s_frames" / "000004_labels.png").size == (96, 64)


def test_sigterm_mid_video_leaves_a_playable_h264_file(tmp_path, tiny):
    scenes = [scene(120, 160, seed=k) for k in range(7)]
    source = tmp_path / "long.mp4"
    with av.open(str(source), "w") as container:  # H.264 in, as most inputs are
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for k in range(1500):
            frame = av.VideoFrame.from_ndarray(scenes[k % 7], format="bgr24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    out = tmp_path / "out"
    proc = interrupt_segtool(
        "run", source, "--model", tiny, "--out", out, "--frames", "--device", "cpu",
        ready=lambda: any(out.glob(".*.partial/*.png")),  # frames are being written
        signum=signal.SIGTERM, settle=1.0, wait=60, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 143, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "interrupted (SIGTERM)" in proc.stdout
    info = probe(out / "long_overlay.mp4")
    assert info["codec"] == "h264" and 0 < len(info["frames"]) < 1500 and info["announced"] == len(info["frames"])
    assert len(list((out / "long_frames").glob("*.png"))) == len(info["frames"])
    assert not list(out.glob(".*"))


def test_preview_serves_the_live_overlay_as_mjpeg(tmp_path, tiny):
    source = scene_video(tmp_path / "live.mp4", 3000, width=96, height=64, fps=25.0)
    port = free_port()
    out = tmp_path / "out"
    command = [SEGTOOL, "run", str(source), "--model", str(tiny), "--out", str(out), "--preview", f"127.0.0.1:{port}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request("GET", "/stream")
                break
            except ConnectionRefusedError:
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()
                time.sleep(0.1)
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        assert response.readline() == f"--{BOUNDARY}\r\n".encode()
        headers = {}
        while (line := response.readline().strip()) != b"":
            key, value = line.decode().split(": ", 1)
            headers[key.lower()] = value
        assert headers["content-type"] == "image/jpeg"
        picture = cv2.imdecode(np.frombuffer(response.read(int(headers["content-length"])), np.uint8), 1)
        assert picture is not None and picture.shape == (64, 96, 3)
        connection.close()
        page = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        page.request("GET", "/")
        assert b'src="/stream"' in page.getresponse().read()
        page.close()
        process.send_signal(signal.SIGINT)  # nothing, if the run has just finished: both ends are fine
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode in (130, 0), stdout + stderr  # stopped by Ctrl-C, or done before it
    assert f"preview: http://127.0.0.1:{port}/" in stderr and "Traceback" not in stderr
    frames = len(probe(out / "live_overlay.mp4")["frames"])  # playable either way
    assert (0 < frames < 3000) if process.returncode == 130 else frames == 3000, (process.returncode, frames)


def test_preview_keeps_only_the_latest_frame_and_never_blocks_the_publisher():
    host, port = parse_address("0")
    assert (host, port) == ("127.0.0.1", 0) and parse_address("[::1]:8090") == ("::1", 8090)
    with Preview(host, port) as preview:
        frames = [np.full((720, 1280, 3), k, np.uint8) for k in range(3)]
        started = time.perf_counter()
        for k in range(3000):
            preview.publish(frames[k % 3])
        assert time.perf_counter() - started < 1.0  # a reference kept, nothing painted or encoded
        got = preview.jpeg(0, timeout=1.0)
        assert got is not None and got[0] == 3000
        latest = cv2.imdecode(np.frombuffer(got[1], np.uint8), 1)
        assert latest is not None and latest.shape == (540, 960, 3)  # scaled to the preview's long side
        assert abs(int(latest.mean()) - 2) <= 1  # frame 2999 (value 2): the latest one
        assert preview.jpeg(3000, timeout=0.1) is None  # nothing newer: the viewer waits, nothing queues


def test_video_output_checks_its_settings():
    with pytest.raises(Exception, match="unknown codec"):
        VideoOutput(codec="theora")
    assert VideoOutput().codec == "h264" and video_io.codec_threads(3) == 3
    assert Fraction(29.97002997).limit_denominator(1001) == Fraction(30000, 1001)  # NTSC rates stay exact


def test_gpu_script_on_a_machine_without_a_gpu_says_so_in_one_line_and_exits_0(tmp_path):
    fake = tmp_path / "bin" / "nvidia-smi"  # an nvidia-smi that finds no GPU, whatever this machine has
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    fake.chmod(0o755)
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.sh"
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert line == "gpu.sh: no NVIDIA GPU on this machine (nvidia-smi finds none): nothing to measure"
    assert not (tmp_path / "out").exists()
