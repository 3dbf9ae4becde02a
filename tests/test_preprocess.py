"""numpy preprocessing and argmax against torchvision / numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from segtool.runtime import SegtoolError
from segtool.runtime.model.postprocess import argmax_channels, resize_labels
from segtool.runtime.model.preprocess import Normalizer, resize_for_inference, to_uint8_3ch

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def rgb():
    return np.random.default_rng(1).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


def torchvision_reference(rgb: np.ndarray) -> np.ndarray:
    return T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])(rgb).numpy()


def test_matches_torchvision_for_rgb_and_bgr_input(rgb):
    ref = torchvision_reference(rgb)
    norm = Normalizer(MEAN, STD, "RGB")
    from_rgb = norm([rgb], color="rgb")[0]
    from_bgr = norm([np.ascontiguousarray(rgb[:, :, ::-1])], color="bgr")[0]
    assert from_rgb.dtype == np.float32 and from_rgb.shape == (3, 37, 53)
    assert np.abs(from_rgb - ref).max() <= 1e-6
    assert np.abs(from_bgr - ref).max() <= 1e-6


def test_batch_stacks_images_in_order(rgb):
    other = 255 - rgb
    batch = Normalizer(MEAN, STD)([rgb, other], color="rgb")
    assert batch.shape == (2, 3, 37, 53)
    assert np.abs(batch[1] - torchvision_reference(other)).max() <= 1e-6


def test_gray_alpha_and_16bit_are_converted(rgb):
    gray = rgb[:, :, 0]
    assert np.array_equal(to_uint8_3ch(gray), np.dstack([gray] * 3))
    assert np.array_equal(to_uint8_3ch(gray[:, :, None]), np.dstack([gray] * 3))
    bgra = np.dstack([rgb, np.full(gray.shape, 7, np.uint8)])
    assert np.array_equal(to_uint8_3ch(bgra), rgb)
    assert np.array_equal(to_uint8_3ch(rgb.astype(np.uint16) * 257), rgb)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((4, 4, 3), np.float32),
        np.zeros((0, 4, 3), np.uint8),
        np.zeros((2, 2, 2, 3), np.uint8),
    ],
)
def test_unusable_arrays_raise_segtool_error(bad):
    with pytest.raises(SegtoolError):
        to_uint8_3ch(bad)


def test_resize_for_inference_shrinks_only_or_sets_size():
    image = np.zeros((300, 600, 3), np.uint8)
    assert resize_for_inference(image, 150).shape == (75, 150, 3)
    assert resize_for_inference(image, 1000) is image
    assert resize_for_inference(image, None) is image
    assert resize_for_inference(image, size=(640, 360)).shape == (360, 640, 3)
    assert resize_for_inference(image, 150, size=(64, 32)).shape == (32, 64, 3)  # size wins


def test_argmax_matches_numpy_including_ties():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 21, 19, 23)).astype(np.float32)
    logits[:, 5] = logits[:, 3]  # exact ties: the lower index must win, as in np.argmax / torch / ONNX
    logits[0, :, 0, 0] = 1.0
    labels = argmax_channels(logits)
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, logits.argmax(1))
    assert np.array_equal(labels, torch.from_numpy(logits).argmax(1).numpy())
    assert labels[0, 0, 0] == 0


def test_resize_labels_keeps_label_values():
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    big = resize_labels(labels, 6, 8)
    assert big.shape == (6, 8) and np.array_equal(big[::2, ::2], labels)
