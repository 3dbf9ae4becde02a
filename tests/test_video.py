"""Videos, folders, globs, streams and cameras through `segtool run` and the Python API.

The CLI runs in this process (``run_in_process``), but for Ctrl-C, which needs a real process."""

from __future__ import annotations

import json
import signal

import cv2
import numpy as np
import pytest
from conftest import assert_clean_failure, interrupt_segtool, jpeg, make_video, read_video, run_in_process, scene
from PIL import Image

from segtool.runtime.files.sources import BAD, IMAGE, VIDEO, expand
from segtool.runtime.files.video import VideoSource


def test_video_output_keeps_count_size_fps_and_matches_image_path(tmp_path, model_path, segmenter):
    source = tmp_path / "clip.mp4"
    decoded = make_video(source, frames=7, fps=12.0)
    out = tmp_path / "out"
    proc = run_in_process(
        "run",
        source,
        "--model",
        model_path,
        "--out",
        out,
        "--frames",
        "--json",
        "--save",
        "overlay,mask,side-by-side",
        "--batch",
        "3",
        "--device",
        "cpu",  # the engine ``segmenter`` runs on: the comparison below is exact
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    (result,) = summary["results"]
    assert result["frames"] == 7 and summary["provider"] and result["fps"] > 0
    assert abs(sum(result["classes"].values()) - 1) < 1e-9  # pixel shares over all frames
    overlay, fps = read_video(out / "clip_overlay.mp4")
    assert len(overlay) == 7 and overlay[0].shape == decoded[0].shape and fps == pytest.approx(12.0)
    side, _ = read_video(out / "clip_side-by-side.mp4")
    assert len(side) == 7 and side[0].shape == (48, 128, 3)
    assert len(read_video(out / "clip_mask.mp4")[0]) == 7
    with VideoSource(str(source)) as video:  # segtool's decode: OpenCV's VideoCapture rounds differently
        frames = list(video.frames())
    assert len(frames) == 7
    for k, frame in enumerate(frames):  # frame k's labels == the image path's labels for that frame
        labels = np.array(Image.open(out / "clip_frames" / f"{k:06d}_labels.png"))
        assert np.array_equal(labels, segmenter.segment(frame)), k
    assert not list(out.glob(".*"))  # no temporary file left


def test_opencv_frame_and_same_pixels_as_rgb_give_identical_labels(tmp_path, segmenter):
    source = tmp_path / "c.mp4"
    decoded = make_video(source, frames=3)
    with VideoSource(str(source)) as video:
        streamed = list(segmenter.segment_stream(video.frames()))
    assert len(streamed) == 3
    for (frame, labels), opencv in zip(streamed, decoded):
        # OpenCV's own decode (FFmpeg's converter) differs by rounding only: same channel order
        assert np.abs(frame.astype(int) - opencv).max() <= 3
        bgr = frame
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        assert np.array_equal(labels, segmenter.segment(rgb, color="rgb"))
        assert np.array_equal(labels, segmenter.segment(bgr))
    # The seed's bug, for contrast: BGR pixels declared as RGB form a different model input.
    assert not np.array_equal(segmenter.prepare([decoded[0]], "bgr"), segmenter.prepare([decoded[0]], "rgb"))


def test_folder_with_bad_files_goes_on_and_lists_them(tmp_path, tiny):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.jpg"), scene(30, 40, 1))
    cv2.imwrite(str(folder / "sub" / "a.jpg"), scene(30, 40, 2))
    (folder / "empty.png").write_bytes(b"")
    whole = jpeg(200, 200)
    (folder / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.txt").write_text("shopping list\n")
    out = tmp_path / "out"
    proc = run_in_process("run", folder, "--recursive", "--model", tiny, "--out", out, "--json")
    assert_clean_failure(proc, 1, "empty.png: empty file", "cut.jpg: truncated JPEG", "2 of 4 input(s) failed")
    assert "notes.txt" not in proc.stderr  # not media: skipped and counted, not a failure
    summary = json.loads(proc.stdout)
    assert (summary["inputs"], summary["ok"], summary["failed"], summary["skipped"]) == (4, 2, 2, 1)
    assert sorted(r["input"] for r in summary["results"]) == [str(folder / "a.jpg"), str(folder / "sub" / "a.jpg")]
    assert (out / "a_labels.png").is_file() and (out / "sub" / "a_labels.png").is_file()  # no collision


def test_expand_detects_kinds_globs_and_folders(tmp_path):
    (tmp_path / "d" / "deep").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "d" / "x.png"), scene(8, 8))
    cv2.imwrite(str(tmp_path / "d" / "deep" / "y.png"), scene(8, 8))
    (tmp_path / "noext").write_bytes(cv2.imencode(".png", scene(8, 8))[1].tobytes())  # found by its bytes
    make_video(tmp_path / "v.mp4", 2)
    flat = expand([str(tmp_path / "d")]).items
    assert [(i.kind, i.stem) for i in flat] == [(IMAGE, "x")]
    deep = expand([str(tmp_path / "d")], recursive=True).items
    assert [(i.kind, i.stem) for i in deep] == [(IMAGE, "deep/y"), (IMAGE, "x")]
    globbed = expand([str(tmp_path / "d" / "**" / "*.png")]).items
    assert sorted(i.stem for i in globbed) == ["x", "y"]
    items = expand(
        [
            str(tmp_path / "v.mp4"),
            str(tmp_path / "noext"),
            str(tmp_path / "none*.jpg"),
            "rtsp://camera.local/live",
            str(tmp_path / "d" / "x.png"),
        ],
        cameras=[0],
    ).items
    assert [i.kind for i in items] == [VIDEO, IMAGE, BAD, VIDEO, IMAGE, VIDEO]
    assert items[3].live and items[5].live and items[5].location == 0 and not items[0].live


def test_stream_url_opened_through_opencv(tmp_path, tiny):
    source = tmp_path / "cam.mp4"
    make_video(source, frames=4)
    proc = run_in_process("run", f"file://{source}", "--model", tiny, "--out", tmp_path / "o", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert len(read_video(tmp_path / "o" / "cam_overlay.mp4")[0]) == 4


def test_unopenable_camera_and_corrupt_video_are_clear_errors(tmp_path, tiny):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    proc = run_in_process("run", bad, "--camera", "57", "--model", tiny, "--out", tmp_path / "o")
    assert_clean_failure(proc, 1, "broken.mp4: cannot open", "camera 57: cannot open", "2 of 2 input(s) failed")
    assert not list((tmp_path / "o").iterdir())  # nothing half-written


def test_show_without_gui_is_one_line(tmp_path, tiny):
    from segtool.cli.common import gui_available

    source = tmp_path / "a.png"
    cv2.imwrite(str(source), scene(8, 8))
    if gui_available():  # a desktop OpenCV build: nothing to refuse here
        return
    proc = run_in_process("run", source, "--model", tiny, "--show")
    assert_clean_failure(proc, 2, "--show needs OpenCV with GUI support")


def test_ctrl_c_mid_video_leaves_a_playable_file(tmp_path, model_path):
    source = tmp_path / "long.mp4"
    make_video(source, frames=400, width=96, height=64)
    out = tmp_path / "out"
    proc = interrupt_segtool(
        "run", source, "--model", model_path, "--out", out, "--device", "cpu",
        ready=lambda: any(out.glob(".*.partial.mp4")),  # the writer has started (its hidden temporary file)
        signum=signal.SIGINT, settle=2.0, wait=120, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "interrupted" in proc.stdout
    frames, _ = read_video(out / "long_overlay.mp4")
    assert 0 < len(frames) < 400 and frames[0].shape == (64, 96, 3)
    assert not list(out.glob(".*"))
