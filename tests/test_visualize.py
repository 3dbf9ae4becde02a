"""Palette, paletted PNG, masks, overlays and shares."""

from __future__ import annotations

import io

import numpy as np
from conftest import imdecode, labels_png, voc_meta
from PIL import Image

from segtool.runtime import Painter, blend, class_shares, colorize, voc_colormap

# The PASCAL VOC devkit's colour for each of the 21 classes (VOC2012 devkit, labelcolormap).
VOC_TABLE = [
    (0, 0, 0),
    (128, 0, 0),
    (0, 128, 0),
    (128, 128, 0),
    (0, 0, 128),
    (128, 0, 128),
    (0, 128, 128),
    (128, 128, 128),
    (64, 0, 0),
    (192, 0, 0),
    (64, 128, 0),
    (192, 128, 0),
    (64, 0, 128),
    (192, 0, 128),
    (64, 128, 128),
    (192, 128, 128),
    (0, 64, 0),
    (128, 64, 0),
    (0, 192, 0),
    (128, 192, 0),
    (0, 64, 128),
]


def test_palette_is_the_voc_colormap():
    cmap = voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    assert [tuple(c) for c in cmap[:21]] == VOC_TABLE
    assert tuple(cmap[255]) == (224, 224, 192)  # VOC "void"
    assert len({tuple(c) for c in cmap}) == 256


def test_paletted_png_roundtrips_labels_and_palette():
    labels = np.random.default_rng(0).integers(0, 21, size=(41, 67), dtype=np.uint8)
    labels[0, :5] = 255
    data = labels_png(labels)
    image = Image.open(io.BytesIO(data))
    assert image.mode == "P" and image.size == (67, 41)
    assert np.array_equal(np.array(image), labels)
    palette = image.getpalette()
    assert palette is not None and np.array_equal(np.array(palette[: 256 * 3]).reshape(-1, 3), voc_colormap())
    assert "RANDOM weights" in image.info["Comment"]
    colours = imdecode(data)  # viewers see the colours
    assert np.array_equal(colours[..., ::-1], voc_colormap()[labels])


def test_mask_png_keeps_colours_and_carries_the_weights_note():
    data = Painter(voc_meta()).mask_png(np.full((5, 6, 3), (9, 20, 30), np.uint8))
    assert "RANDOM weights" in Image.open(io.BytesIO(data)).info["Comment"]
    assert np.array_equal(imdecode(data), np.full((5, 6, 3), (9, 20, 30)))


def test_colorize_and_blend():
    labels = np.array([[0, 15], [20, 1]], np.uint8)
    mask = colorize(labels, voc_colormap())
    assert tuple(mask[0, 1]) == (192, 128, 128) and tuple(mask[1, 0]) == (0, 64, 128)
    image = np.random.default_rng(0).integers(0, 256, size=(2, 2, 3), dtype=np.uint8)
    expected = np.round(image * 0.5 + mask * 0.5).astype(np.uint8)  # halves round to even, like OpenCV
    assert np.array_equal(blend(image, mask, 0.5), expected)
    assert np.array_equal(blend(image, mask, 0.0), image)


def test_class_shares():
    labels = np.array([[0, 0, 15, 15], [15, 15, 15, 7]], np.uint8)
    names = [f"c{i}" for i in range(21)]
    shares = class_shares(labels, names)
    assert list(shares) == ["c15", "c0", "c7"]
    assert shares["c15"] == 5 / 8 and abs(sum(shares.values()) - 1) < 1e-12
