"""`segtool eval` on the user's own masks (fast: the ``tiny`` model).

A paletted PNG's pixel is its class index whatever its palette says; 8-bit greyscale likewise; an
RGB mask is mapped through the model's own palette; an index at or past the class count (255
aside) is an error naming the file and the values; segtool's own ``*_labels.png`` is ground truth.
"""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
from conftest import assert_clean_failure, imread, run_in_process, scene
from PIL import Image
from tiny import tiny_model, tiny_props

from segtool.runtime import Segmenter
from segtool.runtime.tools.evaluation import read_mask

SIX = ["background", "road", "car", "tree", "sky", "person"]
OWN_PALETTE = [[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200], [90, 90, 90], [250, 250, 0]]


def six_class_model(path):
    props = tiny_props(classes=json.dumps(SIX), palette=json.dumps(OWN_PALETTE))
    return tiny_model(path, props, classes=6)


def png(array: np.ndarray, mode: str, palette: list[int] | None = None) -> bytes:
    picture = Image.fromarray(array, mode=mode)
    if palette is not None:
        picture.putpalette(palette)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def voc_folder(root, image: np.ndarray, mask_png: bytes):
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "JPEGImages" / "one.jpg"), image)
    (root / "SegmentationClass" / "one.png").write_bytes(mask_png)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("one\n")
    return root


def predicted(model, root) -> np.ndarray:
    image = imread(root / "JPEGImages" / "one.jpg")
    return Segmenter(model, device="cpu", warn_random=False).segment(image)


def test_paletted_mask_is_read_by_index_whatever_its_palette(tmp_path):
    labels = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    odd_palette = [v for k in range(256) for v in ((k * 37) % 256, (k * 91) % 256, (k * 13) % 256)]
    (tmp_path / "m.png").write_bytes(png(labels, "P", odd_palette))
    (tmp_path / "g.png").write_bytes(png(labels, "L"))
    assert np.array_equal(read_mask(tmp_path / "m.png"), labels)
    assert np.array_equal(read_mask(tmp_path / "g.png"), labels)


def test_rgb_mask_maps_through_the_models_own_palette(tmp_path):
    labels = np.array([[0, 1, 2], [3, 4, 5]], np.uint8)
    rgb = np.array(OWN_PALETTE, np.uint8)[labels]
    (tmp_path / "rgb.png").write_bytes(png(rgb, "RGB"))
    assert np.array_equal(read_mask(tmp_path / "rgb.png", np.array(OWN_PALETTE)), labels)
    stray = rgb.copy()
    stray[0, 0] = (1, 2, 3)
    (tmp_path / "stray.png").write_bytes(png(stray, "RGB"))
    try:
        read_mask(tmp_path / "stray.png", np.array(OWN_PALETTE))
    except Exception as exc:
        assert "stray.png" in str(exc) and "#010203" in str(exc)
    else:
        raise AssertionError("a colour outside the palette was accepted")


def test_eval_with_own_palette_mask_is_exact(tmp_path):
    model = six_class_model(tmp_path / "six.onnx")
    image = scene(40, 60)
    root = tmp_path / "data"
    voc_folder(root, image, b"")
    truth = predicted(model, root)
    odd_palette = [v for k in range(256) for v in (255 - k, k, (k * 7) % 256)]  # nothing like VOC's
    (root / "SegmentationClass" / "one.png").write_bytes(png(truth, "P", odd_palette))
    proc = run_in_process("eval", model, "--data", root, "--resize", "none", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["pixel_accuracy"] == 1.0 and report["images"] == 1 and not report["problems"]


def test_eval_rgb_mask_in_the_models_palette(tmp_path):
    model = six_class_model(tmp_path / "six.onnx")
    root = voc_folder(tmp_path / "data", scene(40, 60), b"")
    truth = predicted(model, root)
    (root / "SegmentationClass" / "one.png").write_bytes(png(np.array(OWN_PALETTE, np.uint8)[truth], "RGB"))
    proc = run_in_process("eval", model, "--data", root, "--resize", "none", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pixel_accuracy"] == 1.0


def test_out_of_range_indices_are_an_error_naming_file_and_values(tmp_path):
    model = six_class_model(tmp_path / "six.onnx")
    mask = np.zeros((40, 60), np.uint8)
    mask[0, 0], mask[5, 5], mask[9, 9] = 7, 25, 255
    root = voc_folder(tmp_path / "data", scene(40, 60), png(mask, "P", [0, 0, 0] * 256))
    proc = run_in_process("eval", model, "--data", root, "--resize", "none")
    assert_clean_failure(proc, 1, "one.png", "outside 0..5 and 255: [7, 25]", "nothing evaluated")


def test_segtools_own_labels_png_is_ground_truth(tmp_path):
    model = six_class_model(tmp_path / "six.onnx")
    image = scene(40, 60)
    root = voc_folder(tmp_path / "data", image, b"")
    cv2.imwrite(str(tmp_path / "one.png"), imread(root / "JPEGImages" / "one.jpg"))
    ran = run_in_process("run", tmp_path / "one.png", "--model", model, "--out", tmp_path / "out", "--device", "cpu")
    assert ran.returncode == 0, ran.stderr
    (root / "SegmentationClass" / "one.png").write_bytes((tmp_path / "out" / "one_labels.png").read_bytes())
    proc = run_in_process("eval", model, "--data", root, "--resize", "none", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pixel_accuracy"] == 1.0


def test_reduce_labels_recorded_by_adopt_is_applied_by_eval(tmp_path):
    """A model trained with Hugging Face's do_reduce_labels (ADE20K's way: 0 is "other", ignored) is
    evaluated on masks as written: 0 ignored, the other indices down by one, as its training saw them."""
    folder = tmp_path / "hf"
    folder.mkdir()
    six_class_model(folder / "model.onnx")
    (folder / "config.json").write_text(json.dumps({"id2label": dict(enumerate(SIX)), "num_labels": 6}))
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_reduce_labels": True}))
    adopted = tmp_path / "adopted.onnx"
    proc = run_in_process("adopt", folder / "model.onnx", "-o", adopted)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(run_in_process("info", adopted, "--json").stdout)["extra"]["reduce_labels"] is True
    root = voc_folder(tmp_path / "data", scene(40, 60), b"")
    written = predicted(adopted, root).astype(np.uint8) + 1  # the dataset's indices: class k is k + 1
    written[:5] = 0  # "other": ignored in training, so in eval
    (root / "SegmentationClass" / "one.png").write_bytes(png(written, "L"))
    proc = run_in_process("eval", adopted, "--data", root, "--resize", "none", "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "reduce_labels on (the model file records it)" in proc.stderr
    report = json.loads(proc.stdout)
    assert report["pixel_accuracy"] == 1.0 and report["reduce_labels"] is True
    as_written = run_in_process(
        "eval", adopted, "--data", root, "--resize", "none", "--no-reduce-labels", "--json", "--device", "cpu"
    )
    assert as_written.returncode == 0 and "reduce_labels off (--no-reduce-labels)" in as_written.stderr
    assert json.loads(as_written.stdout)["pixel_accuracy"] < 0.5  # every index one too high
    # an RGB mask in the model's own colours holds the model's classes already: not reduced again
    truth = predicted(adopted, root)
    colours = Segmenter(adopted, device="cpu", warn_random=False).meta.palette
    (root / "SegmentationClass" / "one.png").write_bytes(png(np.asarray(colours, np.uint8)[truth], "RGB"))
    coloured = run_in_process("eval", adopted, "--data", root, "--resize", "none", "--json", "--device", "cpu")
    assert coloured.returncode == 0, coloured.stderr
    assert json.loads(coloured.stdout)["pixel_accuracy"] == 1.0
