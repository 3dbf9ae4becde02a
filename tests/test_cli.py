"""`segtool run`, `info` and `demo` end to end, and every user error as one line.

The CLI runs in this process (``run_in_process``); `run` and `demo` once each as the console script."""

from __future__ import annotations

import json

import cv2
import numpy as np
from conftest import assert_clean_failure, imread, jpeg, run_in_process, run_segtool, scene
from PIL import Image

from segtool.runtime import blend, voc_colormap
from segtool.runtime.files.colors import stamp
from segtool.runtime.files.pictures import RANDOM_STAMP


def band_height(overlay: np.ndarray) -> int:
    """Rows of the 'RANDOM WEIGHTS' band, checked to be there: mostly black with some white text."""
    white = np.full(overlay.shape, 255, np.uint8)
    rows = int((stamp(white, RANDOM_STAMP) != 255).any(axis=(1, 2)).sum())
    band = overlay[:rows].max(axis=2)
    assert rows and (band < 60).mean() > 0.6 and (band > 200).any(), "no random-weights stamp"
    return rows


def test_run_writes_labels_mask_overlay_at_input_size(tmp_path, model_path, segmenter):
    image = scene(97, 143)
    src = tmp_path / "photo.png"
    cv2.imwrite(str(src), image)
    out = tmp_path / "out"
    proc = run_segtool("run", src, "--model", model_path, "--out", out, "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["random_weights"] is True and summary["provider"] == "CPUExecutionProvider"
    assert "RANDOM weights" in proc.stderr  # the load-time warning
    (result,) = summary["results"]
    assert result["kind"] == "image" and summary["frames"] == 1
    assert abs(sum(result["classes"].values()) - 1) < 1e-9

    labels_png = Image.open(out / "photo_labels.png")
    assert labels_png.mode == "P" and labels_png.size == (143, 97)
    assert "RANDOM" in labels_png.info["Comment"]
    labels = np.array(labels_png)
    assert labels.max() <= 20
    assert np.array_equal(labels, segmenter.segment(image))  # the file holds what the API computes

    mask = imread(out / "photo_mask.png")
    assert mask.shape == image.shape
    assert np.array_equal(mask[..., ::-1], voc_colormap()[labels])

    overlay = imread(out / "photo_overlay.jpg")
    assert overlay.shape == image.shape
    band = band_height(overlay)
    assert 0 < band < 40  # random weights: stamped
    expected = blend(image, mask, 0.5)
    error = np.abs(overlay[band:].astype(int) - expected[band:]).mean()
    assert error < 2.0, error  # JPEG quality 95 vs the exact 50/50 blend


def test_max_size_infers_small_and_returns_full_size(tmp_path, tiny):
    src = tmp_path / "wide.jpg"
    cv2.imwrite(str(src), scene(120, 301))
    proc = run_in_process("run", src, "--model", tiny, "--out", tmp_path, "--max-size", "64", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "wide_labels.png").size == (301, 120)


def test_bad_images_are_reported_and_the_rest_processed(tmp_path, tiny):
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), scene(40, 50))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:-200])
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    proc = run_in_process("run", empty, good, text, truncated, missing, "--model", tiny, "--out", out)
    assert_clean_failure(
        proc,
        1,
        "empty.jpg: empty file",
        "notes.png: not an image",
        "cut.jpg: truncated",
        "missing.jpg: no such file",
        "4 of 5 input(s) failed",
    )
    assert (out / "good_labels.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["good_labels.png", "good_mask.png", "good_overlay.jpg"]


def test_half_a_jpeg_is_refused_although_opencv_would_decode_it(tmp_path):
    from segtool.runtime import InputError, SegtoolError, read_image

    whole = jpeg(300, 400)
    half = tmp_path / "half.jpg"
    half.write_bytes(whole[: len(whole) // 2])
    assert cv2.imread(str(half)) is not None  # libjpeg pads the missing rows with grey and only warns
    try:
        read_image(half)
    except SegtoolError as exc:
        from segtool.cli.main import exit_code

        assert "truncated JPEG" in str(exc) and isinstance(exc, InputError) and exit_code(exc) == 1
    else:
        raise AssertionError("truncated JPEG accepted")
    complete = tmp_path / "whole.jpg"
    complete.write_bytes(whole)
    assert read_image(complete).shape == (300, 400, 3)


def test_missing_model_says_run_export(tmp_path):
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), scene(8, 8))
    proc = run_in_process("run", src, "--model", tmp_path / "nope.onnx")
    assert_clean_failure(proc, 2, "nope.onnx not found", "segtool export")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_corrupt_model_is_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 100)
    proc = run_in_process("info", bad)
    assert_clean_failure(proc, 2, "bad.onnx")


def test_unwritable_output_folder_is_reported_before_work(tmp_path, tiny):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), scene(8, 8))
    proc = run_in_process("run", src, "--model", tiny, "--out", blocker / "sub")
    assert_clean_failure(proc, 2, "not writable")


def test_bad_device_is_one_line(tmp_path, tiny):
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), scene(8, 8))
    proc = run_in_process("run", src, "--model", tiny, "--device", "quantum")
    assert_clean_failure(proc, 2, "unknown device")


def test_info_shows_symbolic_dims_and_metadata(model_path):
    proc = run_in_process("info", model_path, "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert d["outputs"][0]["shape"] == ["batch", 21, "height", "width"]
    assert d["weights"] == {"kind": "random", "seed": 0} and d["random_weights"] is True
    assert len(d["classes"]) == 21
    chosen = d["auto_choice"]  # --device auto: ONNX Runtime's CPU, or another engine the file's record allows
    assert d["provider_selected"] == chosen["provider"]
    assert chosen["provider"] in d["providers_available"] or chosen["provider"].startswith("OpenVINO")
    text = run_in_process("info", model_path).stdout
    assert "[batch, 3, height, width]" in text and "RANDOM" in text and "parity" in text


def test_demo_offline_falls_back_loudly_to_random(tmp_path, model_path, offline_env):
    """The quickstart's main job: no download -> loud notice, random model, every output marked.
    The console script, offline (torchvision patched in the child by ``offline_env``)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "fcn_resnet50_random.onnx").symlink_to(model_path)  # reuse the session's export: skip 40 s
    proc = run_segtool(
        "demo", "--model", models / "fcn_resnet50.onnx", "--out", tmp_path / "out", env_extra=offline_env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PRETRAINED WEIGHTS UNAVAILABLE" in proc.stderr and "fcn_resnet50_coco-1167a1af.pth" in proc.stderr
    assert "[RANDOM WEIGHTS]" in proc.stdout
    assert not (models / "fcn_resnet50.onnx").exists()  # no random model under the pretrained name
    assert "RANDOM" in Image.open(tmp_path / "out" / "sample_labels.png").info["Comment"]
    assert band_height(imread(tmp_path / "out" / "sample_overlay.jpg")) > 0


def test_version_short_help_and_bracketed_help_text():
    version = run_in_process("--version")
    assert version.returncode == 0 and version.stdout.startswith("segtool ")
    short = run_in_process("run", "-h")
    assert short.returncode == 0 and "--max-pixels" in short.stdout
    assert "(default: images labels,mask,overlay; videos overlay)" in " ".join(short.stdout.split())
    export_help = " ".join(run_in_process("export", "-h").stdout.split())
    assert "[1e-4]" in export_help and "[0.999]" in export_help  # brackets survive: no rich markup


def test_folder_run_counts_are_consistent_and_skip_non_media(tmp_path, tiny):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"a{k}.png"), scene(16, 20, k))
    (folder / "notes.txt").write_text("x")
    (folder / "labels.json").write_text("{}")
    (folder / "bad.jpg").write_bytes(b"")
    out = folder / "out"  # inside the input tree: never read back
    for _ in range(2):
        proc = run_in_process("run", folder, "-r", "--model", tiny, "--out", out, "--device", "cpu")
        assert proc.returncode == 1, proc.stderr
        assert "4 input(s): 3 ok, 1 failed, 2 non-media file(s) skipped" in proc.stdout
    assert not (out / "out").exists() and not list(out.glob("*_labels_labels.png"))
    line = next(line for line in proc.stdout.splitlines() if line.startswith(str(folder / "a0.png")))
    assert " s -> " in line and "a0_labels.png" in line and "FPS" not in line


def test_run_without_model_finds_the_one_model_in_models(tmp_path, tiny):
    """After the offline quickstart, models/ holds fcn_resnet50_random.onnx only: `segtool run IMAGE` uses it."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fcn_resnet50_random.onnx").write_bytes(tiny.read_bytes())
    (tmp_path / "street.jpg").write_bytes(jpeg(seed=3))
    proc = run_in_process("run", "street.jpg", "--out", "o", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "using models/fcn_resnet50_random.onnx, the one model in models/" in proc.stderr
    assert (tmp_path / "o" / "street_labels.png").is_file()
    (tmp_path / "models" / "other.onnx").write_bytes(tiny.read_bytes())  # two: no guess, the usual hint
    proc = run_in_process("run", "street.jpg", "--out", "o", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 2 and "models/fcn_resnet50.onnx not found" in proc.stderr, proc.stderr
