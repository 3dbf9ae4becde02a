"""`segtool eval` metrics against hand-computed values, bad data, and `segtool compare`.

The CLI runs in this process (``run_in_process``); `eval` and `compare` once each as the console script."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import assert_clean_failure, make_video, make_voc, run_in_process, run_segtool, scene

from segtool.export import export_model
from segtool.runtime import VOC_CLASSES, Segmenter
from segtool.runtime.model.runner import Runner
from segtool.runtime.tools.comparison import compare_models, iter_images
from segtool.runtime.tools.evaluation import ConfusionMatrix, evaluate, read_voc_mask, resize_short_side, voc_samples

# Ground truth and prediction over two images (rows 0-1 and row 2); 255 is void.
TARGET = np.array([[0, 0, 1, 1], [0, 255, 1, 2], [2, 2, 255, 1]], np.uint8)
PRED = np.array([[0, 1, 1, 1], [0, 0, 2, 2], [2, 0, 1, 1]], np.uint8)
# By hand: rows = truth, cols = prediction, void pixels dropped.
EXPECTED = np.array([[2, 1, 0], [0, 3, 1], [1, 0, 2]])  # trace 7 of 10 pixels
EXPECTED_IOU = (2 / (3 + 3 - 2), 3 / (4 + 4 - 3), 2 / (3 + 3 - 2))


class KnownPredictions:
    """A stand-in model behind the ``Runner`` interface: each image is flat grey k*60 and gets prediction k."""

    provider = "test"

    def __init__(self, predictions):
        self.predictions = predictions
        self.meta = SimpleNamespace(classes=VOC_CLASSES)

    def prepare(self, images, color="bgr", max_size=None, size=None):
        return np.stack(images)

    def run(self, tensor):
        return tensor

    def labels_at(self, output, height, width):
        return [self.predictions[round(float(image.mean()) / 60) - 1] for image in output]

    def segment(self, image, color="bgr", max_size=None, size=None, tile=None):
        return self.labels_at(self.prepare([image]), *image.shape[:2])[0]

    def segment_stream(self, frames, color="bgr", max_size=None, size=None, batch=1):
        for frame in frames:
            yield frame, self.segment(frame)


def test_confusion_matrix_miou_and_accuracy_equal_hand_computed_values():
    cm = ConfusionMatrix(3)
    cm.update(TARGET, PRED)
    assert np.array_equal(cm.matrix, EXPECTED)
    assert np.allclose(cm.iou(), EXPECTED_IOU)
    assert cm.miou() == pytest.approx(sum(EXPECTED_IOU) / 3, abs=1e-15)
    assert cm.pixel_accuracy() == 0.7


def test_dataset_reader_and_accumulation_match_by_hand(tmp_path):
    root = make_voc(
        tmp_path / "voc",
        {
            "first": (np.full((2, 4, 3), 60, np.uint8), TARGET[:2]),
            "second": (np.full((1, 4, 3), 120, np.uint8), TARGET[2:]),
        },
    )
    assert np.array_equal(read_voc_mask(root / "SegmentationClass" / "first.png"), TARGET[:2])
    seg: Runner = KnownPredictions([PRED[:2], PRED[2:]])  # type: ignore[assignment]
    result = evaluate(seg, voc_samples(root), resize=None)
    assert np.array_equal(result.confusion.matrix[:3, :3], EXPECTED) and result.confusion.matrix.sum() == 10
    report = result.as_dict()
    assert report["pixel_accuracy"] == 0.7 and report["images"] == 2 and not report["problems"]
    assert report["miou"] == pytest.approx(sum(EXPECTED_IOU) / 3, abs=1e-15)
    assert report["per_class_iou"]["aeroplane"] == pytest.approx(0.6) and report["per_class_iou"]["cat"] is None


@pytest.fixture
def bad_voc(tmp_path):
    good_mask = np.zeros((20, 30), np.uint8)
    good_mask[5:15, 5:25] = 15
    good_mask[4, :] = 255
    outside = good_mask.copy()
    outside[0, 0] = 30
    return make_voc(
        tmp_path / "bad",
        {
            "ok": (scene(20, 30), good_mask),
            "nomask": (scene(20, 30), None),
            "smaller": (scene(20, 30), good_mask[:10]),
            "outside": (scene(20, 30), outside),
        },
    )


def test_bad_samples_are_counted_and_strict_stops(bad_voc, tiny):
    proc = run_in_process("eval", tiny, "--data", bad_voc, "--resize", "none", "--json")
    assert_clean_failure(
        proc,
        1,
        "nomask: no mask",
        "smaller: mask is 30x10 but image is 30x20",
        "outside: mask has values outside 0..20 and 255: [30]",
        "3 of 4 sample(s) skipped",
    )
    report = json.loads(proc.stdout)
    assert report["images"] == 1 and len(report["problems"]) == 3
    strict = run_in_process("eval", tiny, "--data", bad_voc, "--resize", "none", "--strict")
    assert_clean_failure(strict, 1, "nomask: no mask")
    assert "smaller" not in strict.stderr


def test_missing_split_file(tmp_path, tiny):
    proc = run_in_process("eval", tiny, "--data", tmp_path)
    assert_clean_failure(proc, 2, "val.txt not found")


def test_eval_end_to_end_with_a_random_model(tmp_path, model_path):
    samples = {}
    for k in range(3):
        mask = np.zeros((36, 52), np.uint8)
        mask[8:28, 10 + k : 40] = (7, 15, 12)[k]
        mask[7, :] = mask[28, :] = 255
        samples[f"img{k}"] = (scene(36, 52, seed=k), mask)
    root = make_voc(tmp_path / "voc", samples)
    proc = run_segtool("eval", model_path, "--data", root, "--resize", "48", "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["images"] == 3 and 0 <= report["miou"] <= 1 and 0 <= report["pixel_accuracy"] <= 1
    assert set(report["per_class_iou"]) == set(VOC_CLASSES) and report["ignore_index"] == 255
    # every non-void pixel of the masks at evaluation size (short side 48, nearest) is counted once
    counted = sum(int((resize_short_side(m, 48, cv2.INTER_NEAREST_EXACT) != 255).sum()) for _, m in samples.values())
    assert np.array(report["confusion_matrix"]).sum() == counted
    assert "short side 48" in report["protocol"]


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    return export_model(
        tmp_path_factory.mktemp("other") / "seed1.onnx",
        weights="random",
        seed=1,
        verify=False,
        shapes=((1, 3, 32, 32),),
    ).path


def test_compare_model_with_itself_and_with_another(tmp_path, model_path, other_model):
    images = [(f"i{k}", scene(40, 60, seed=k)) for k in range(2)]
    a = Segmenter(model_path, device="cpu", warn_random=False)
    same = compare_models(a, a, images).as_dict()
    assert same["pixel_agreement"] == 1.0 and same["miou_b_vs_a"] == 1.0 and same["max_abs_logit_diff"] == 0.0
    b = Segmenter(other_model, device="cpu", warn_random=False)
    different = compare_models(a, b, images).as_dict()
    assert different["pixel_agreement"] < 0.99 and different["max_abs_logit_diff"] > 0
    assert different["a_inference_ms_median"] > 0 and different["b_inference_ms_median"] > 0


def test_compare_cli_on_an_image_and_video_frames(tmp_path, model_path):
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), scene(30, 40))
    make_video(tmp_path / "clip.mp4", frames=5, width=40, height=30)
    assert [name for name, _ in iter_images([str(image), str(tmp_path / "clip.mp4")], limit=4)] == [
        str(image),
        f"{tmp_path / 'clip.mp4'}#0",
        f"{tmp_path / 'clip.mp4'}#1",
        f"{tmp_path / 'clip.mp4'}#2",
    ]
    proc = run_segtool(
        "compare",
        model_path,
        model_path,
        "--images",
        image,
        "--images",
        tmp_path / "clip.mp4",
        "--limit",
        "4",
        "--json",
        "--max-size-b",
        "20",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["images"] == 4 and report["max_abs_logit_diff"] is None  # B ran at another resolution
    assert 0 < report["pixel_agreement"] <= 1
    problems = []
    names = iter_images([str(tmp_path / "nope.jpg"), str(image)], on_error=lambda n, m: problems.append(m))
    assert [name for name, _ in names] == [str(image)]  # a bad input is reported and skipped
    assert len(problems) == 1 and "no such file" in problems[0]
    bad = run_in_process("compare", model_path, model_path, "--images", tmp_path / "nope.jpg", "--images", image)
    assert_clean_failure(bad, 1, "nope.jpg: no such file")
    assert "pixel agreement" in bad.stdout  # the good image was still compared
    empty = run_in_process("compare", model_path, model_path, "--images", tmp_path / "nope.jpg", "--json")
    assert_clean_failure(empty, 1, "nothing compared")
    assert json.loads(empty.stdout)["pixel_agreement"] is None  # JSON null, never NaN


def test_eval_on_an_empty_split_is_json_null_never_nan(tmp_path, tiny):
    root = make_voc(tmp_path / "voc", {})
    proc = run_in_process("eval", tiny, "--data", root, "--json", "--device", "cpu")
    assert_clean_failure(proc, 1, "no usable sample")
    assert "NaN" not in proc.stdout
    report = json.loads(proc.stdout)
    assert report["miou"] is None and report["pixel_accuracy"] is None and report["images"] == 0
