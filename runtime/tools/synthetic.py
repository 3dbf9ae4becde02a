"""The one generator of synthetic pictures: smooth random colour blobs, like a photo at a glance.

Used wherever segtool needs an image nobody gave it (the parity gate, int8 calibration without
a folder, benchmark inputs) and by the tests, so all of them see the same kind of picture.
"""

from __future__ import annotations

import cv2
import numpy as np


def smooth_image(height: int, width: int, seed: int = 0, cell: int = 16, noise: int = 0) -> np.ndarray:
    """HxWx3 uint8: a coarse random grid upsampled with cubic interpolation, plus optional noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, height // cell), max(2, width // cell), 3), dtype=np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    if noise:
        image = np.clip(image.astype(np.int16) + rng.integers(-noise, noise + 1, size=image.shape), 0, 255)
    return image.astype(np.uint8)


def street_scene(height: int = 480, width: int = 720) -> np.ndarray:
    """A drawn street scene (sky, road, a car, a person), BGR: the demo's sample, so no photo is shipped."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = np.array([235, 190, 120], np.float32) * (1 - y) + np.array([200, 200, 200], np.float32) * y
    image = np.broadcast_to(sky, (height, width, 3)).astype(np.uint8).copy()
    image[int(height * 0.6) :] = (90, 90, 90)
    cv2.rectangle(
        image, (int(width * 0.1), int(height * 0.45)), (int(width * 0.45), int(height * 0.7)), (40, 40, 180), -1
    )
    for cx in (int(width * 0.17), int(width * 0.38)):
        cv2.circle(image, (cx, int(height * 0.7)), int(height * 0.05), (20, 20, 20), -1)
    px = int(width * 0.7)
    cv2.circle(image, (px, int(height * 0.35)), int(height * 0.04), (150, 180, 220), -1)
    cv2.rectangle(image, (px - 22, int(height * 0.4)), (px + 22, int(height * 0.62)), (120, 60, 30), -1)
    cv2.rectangle(image, (px - 18, int(height * 0.62)), (px + 18, int(height * 0.8)), (60, 40, 20), -1)
    return image
