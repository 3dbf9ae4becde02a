"""PASCAL VOC class names and colour map: the label space of every model segtool ships."""

import numpy as np

VOC_CLASSES = (
    "__background__",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

#: VOC's "void" label: object borders and difficult regions, ignored by evaluation.
VOC_IGNORE_INDEX = 255


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC devkit's colour map (labelcolormap.m), RGB uint8 of shape (n, 3).

    Each class index's bits are spread over the high bits of R, G and B, so the 21 classes
    get distinct colours and 255 (void) gets (224, 224, 192).
    """
    index = np.arange(n)
    cmap = np.zeros((n, 3), dtype=np.int64)
    for shift in range(7, -1, -1):
        for channel in range(3):
            bit = (index >> (3 * (7 - shift) + channel)) & 1
            cmap[:, channel] |= bit << shift
    return cmap.astype(np.uint8)
