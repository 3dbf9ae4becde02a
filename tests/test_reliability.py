"""Write failures, signals, tiling, bounded decoding and memory limits.

The CLI runs in this process (``run_in_process``), but for SIGTERM and the address-space limit,
which need a real process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import interrupt_segtool, run_in_process, scene, scene_video, write_video
from PIL import Image
from tiny import tiny_model

from segtool.runtime import JobOptions, Segmenter, segment_image
from segtool.runtime.files.sources import IMAGE, Source
from segtool.runtime.model.tiling import segment_tiled, window_starts


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``folder``: a disk that fills up (the tests run as root in CI)."""
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def assert_all_complete(folder: Path) -> None:
    """Every file under a real name decodes whole; no hidden temporary file is left."""
    assert not [p for p in folder.rglob(".*")], list(folder.rglob(".*"))
    for path in folder.rglob("*"):
        if path.suffix in (".png", ".jpg"):
            Image.open(path).load()  # raises on a half-written file
        elif path.suffix == ".mp4":
            capture = cv2.VideoCapture(str(path))
            assert capture.isOpened() and capture.read()[0], path


def test_disk_full_while_writing_images(tmp_path, tiny):
    inputs = []
    for k in range(12):
        inputs.append(tmp_path / f"img{k:02d}.jpg")
        cv2.imwrite(str(inputs[-1]), np.random.default_rng(k).integers(0, 256, (300, 400, 3), np.uint8))
    with small_disk(tmp_path / "full", "400k") as out:
        proc = run_in_process("run", *inputs, "--model", tiny, "--out", out, "--device", "cpu")
        written = sorted(p.name for p in out.iterdir())
        assert_all_complete(out)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "disk full" in proc.stderr and "input(s) failed" in proc.stderr
    assert any(name.endswith("_labels.png") for name in written)  # the first images were written


def test_disk_full_while_writing_a_video(tmp_path, tiny):
    noise = (np.random.default_rng(k).integers(0, 256, (240, 320, 3), np.uint8) for k in range(60))
    source = write_video(tmp_path / "clip.mp4", noise, fps=25.0)
    with small_disk(tmp_path / "full", "200k") as out:
        proc = run_in_process("run", source, "--model", tiny, "--out", out, "--device", "cpu")
        assert not (out / "clip_overlay.mp4").exists()  # nothing under the real name
        assert_all_complete(out)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "clip_overlay.mp4" in proc.stderr and "does not play back" in proc.stderr


def test_sigterm_mid_video_finalizes_a_playable_file(tmp_path, tiny):
    scenes = [scene(120, 160, seed=k) for k in range(7)]
    source = write_video(tmp_path / "long.mp4", (scenes[k % 7] for k in range(3000)), fps=25.0)
    out = tmp_path / "out"
    proc = interrupt_segtool(
        "run", source, "--model", tiny, "--out", out, "--frames", "--device", "cpu",
        ready=lambda: any(out.glob(".*.partial/*.png")),  # frames are being written (the hidden new folder)
        signum=signal.SIGTERM, settle=1.0, wait=60, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 143, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "interrupted (SIGTERM)" in proc.stdout
    capture = cv2.VideoCapture(str(out / "long_overlay.mp4"))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    assert 0 < frames < 3000 and capture.read()[0]
    assert len(list((out / "long_frames").glob("*.png"))) == frames  # the frame folder matches the video
    assert_all_complete(out)


def test_frames_folder_is_replaced_whole(tmp_path, tiny):
    def clip(frames: int) -> Path:
        return scene_video(tmp_path / "c.mp4", frames, width=32, height=24)

    out = tmp_path / "out"
    assert run_in_process("run", clip(9), "--model", tiny, "--out", out, "--frames").returncode == 0
    assert len(list((out / "c_frames").iterdir())) == 9
    assert run_in_process("run", clip(4), "--model", tiny, "--out", out, "--frames").returncode == 0
    assert sorted(p.name for p in (out / "c_frames").iterdir()) == [f"{k:06d}_labels.png" for k in range(4)]
    assert_all_complete(out)


@pytest.mark.parametrize("length,tile,stride", [(10, 4, 3), (100, 32, 24), (33, 40, 30), (257, 256, 192)])
def test_windows_cover_the_length_and_end_at_the_edge(length, tile, stride):
    starts = window_starts(length, tile, stride)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all() and starts[0] == 0 and min(length, starts[-1] + tile) == length
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("labels_graph", [False, True])
def test_tiled_equals_whole_for_a_pointwise_model(tmp_path, labels_graph):
    """A 1x1-convolution model has no context, so any tiling must give exactly the whole-image labels:
    this checks the window placement and the band bookkeeping of the blend."""
    seg = Segmenter(tiny_model(tmp_path / "t.onnx", labels_graph=labels_graph), device="cpu", warn_random=False)
    image = scene(301, 457, seed=8)
    whole = seg.segment(image)
    for tile in (64, 100, 300, 1000):
        assert np.array_equal(seg.segment(image, tile=tile), whole), tile
    assert np.array_equal(segment_tiled(seg, image, "bgr", 96, overlap=0), whole)


def test_tiled_fcn_is_close_to_whole_image(segmenter):
    image = scene(200, 260, seed=4)
    whole = segmenter.segment(image)
    tiled = segmenter.segment(image, tile=160)
    assert tiled.shape == whole.shape and tiled.dtype == np.uint8
    assert (tiled == whole).mean() > 0.5  # windows see less context; the benchmark reports the real figure


def test_auto_tiling_when_memory_is_short(tmp_path, tiny, monkeypatch):
    import segtool.runtime.model.memory as memory

    cv2.imwrite(str(tmp_path / "a.png"), scene(600, 800, seed=1))
    source = Source(IMAGE, str(tmp_path / "a.png"), "a")
    seg = Segmenter(tiny, device="cpu", warn_random=False)
    roomy = segment_image(seg, source, tmp_path / "o1", JobOptions())
    monkeypatch.setattr(memory, "available_bytes", lambda: 100 * 1024 * 1024)
    tight = segment_image(seg, source, tmp_path / "o2", JobOptions())
    assert roomy.tiled is None and tight.tiled is not None and 256 <= tight.tiled <= 1024
    assert np.array_equal(np.array(Image.open(tight.outputs["labels"])), np.array(Image.open(roomy.outputs["labels"])))


def test_reduced_jpeg_decoding_keeps_full_size_labels(tmp_path, tiny):
    big = tmp_path / "big.jpg"
    cv2.imwrite(str(big), scene(1200, 1600, seed=2))
    out = tmp_path / "out"
    proc = run_in_process("run", big, "--model", tiny, "--out", out, "--max-size", "300", "--json")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert (result["width"], result["height"]) == (1600, 1200)
    assert Image.open(out / "big_labels.png").size == (1600, 1200)
    assert Image.open(out / "big_overlay.jpg").size == (400, 300)  # pictures at the decoded (1/4) size


#: `segtool ARGS` with its peak address space (VmPeak) written at exit to the file in $SEGTOOL_PEAK_FILE.
PEAK_WRAPPER = """
import atexit, os, sys
from segtool.cli.main import main
def peak():
    line = next(line for line in open("/proc/self/status") if line.startswith("VmPeak:"))
    open(os.environ["SEGTOOL_PEAK_FILE"], "w").write(str(int(line.split()[1]) * 1024))
atexit.register(peak)
sys.argv[0] = "segtool"
main()
"""


def tiled_run(photo: Path, out: Path, model: Path, tile: int, limit: int | None = None) -> tuple[int, str]:
    """Run `segtool run PHOTO --tile TILE` (under ``prlimit --as=LIMIT``): its tile, and its peak address space."""
    peak = out.with_suffix(".peak")
    command = [sys.executable, "-c", PEAK_WRAPPER, "run", str(photo), "--tile", str(tile), "--model", str(model),
               "--out", str(out), "--device", "cpu", "--save", "labels"]  # fmt: skip
    if limit:
        command = ["prlimit", f"--as={limit}", *command]
    env = {**os.environ, "SEGTOOL_PEAK_FILE": str(peak)}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    used = re.search(r"tiled (\d+)px", proc.stdout)
    assert used, proc.stdout
    assert Image.open(out / f"{photo.stem}_labels.png").size == (3000, 2000)
    return int(used.group(1)), peak.read_text()


def test_3000x2000_in_768px_tiles_under_3gb_of_address_space(tmp_path, model_path):
    """The issue's case: 768 px tiles fit in 3 GB on AVX-512 CPUs, not on an AVX2-only one, where
    the retry in smaller tiles (next test) writes the labels instead of a traceback."""
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), scene(2000, 3000, seed=3))
    tile, _ = tiled_run(photo, tmp_path / "out", model_path, 768, limit=3_000_000_000)
    assert tile <= 768


def test_a_real_allocation_failure_is_retried_in_smaller_tiles(tmp_path, model_path):
    """The limit is what a run in 384 px tiles needed on this CPU (measured) plus 512 MB; asking for
    the whole 3000x2000 image in one window needs gigabytes more (fcn_resnet50's layer4 alone holds
    three 375x250x2048 float tensors), so its allocations fail for real on any CPU, and the input is
    retried in halved tiles until one fits, with the same labels as the unlimited run at that size."""
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), scene(2000, 3000, seed=3))
    _, peak = tiled_run(photo, tmp_path / "free", model_path, 384)
    limit = int(peak) + 512 * 1024 * 1024
    tile, _ = tiled_run(photo, tmp_path / "limited", model_path, 3072, limit=limit)
    assert tile < 3072, f"the whole image fitted in {limit} bytes of address space"
    if tile == 384:
        free, limited = (np.array(Image.open(tmp_path / d / "photo_labels.png")) for d in ("free", "limited"))
        assert np.array_equal(free, limited)


def test_read_only_output_folder_is_one_line_before_any_work(tmp_path, tiny):
    cv2.imwrite(str(tmp_path / "a.png"), scene(20, 30))
    with small_disk(tmp_path / "ro", "100k") as out:
        subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        proc = run_in_process("run", tmp_path / "a.png", "--model", tiny, "--out", out)
        assert not list(out.iterdir())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"output folder {out} is not writable (read-only file system)" in proc.stderr
