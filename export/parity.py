"""The parity gate: the ONNX file must behave like the PyTorch model before it is written.

Both run on the same inputs (smooth random images, normalized as the runtime does): the
largest absolute logit difference and the share of pixels with the same argmax are measured
per input shape. Labels-output graphs are compared on labels only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import onnxruntime as ort
import torch

from .graph import INPUT_NAME, SegmentationGraph

DEFAULT_SHAPES = ((1, 3, 333, 517), (2, 3, 256, 256), (1, 3, 520, 520))


@dataclass(frozen=True)
class ParityRow:
    shape: tuple[int, ...]
    max_abs_diff: float | None  # None when the graph outputs labels
    agreement: float  # fraction of pixels with equal labels

    def passes(self, atol: float, min_agreement: float) -> bool:
        return (self.max_abs_diff is None or self.max_abs_diff <= atol) and self.agreement >= min_agreement

    def as_dict(self) -> dict:
        return asdict(self) | {"shape": list(self.shape)}


def sample_batch(shape, mean, std, seed: int = 0) -> np.ndarray:
    """Smooth random RGB images (blobs, not per-pixel noise), normalized like real input."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    batch = np.empty(shape, dtype=np.float32)
    for i in range(n):
        coarse = rng.integers(0, 256, size=(max(1, h // 16), max(1, w // 16), c), dtype=np.uint8)
        image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, c)
        image = np.clip(image.astype(np.int16) + rng.integers(-12, 13, size=image.shape), 0, 255)
        batch[i] = ((image / np.float32(255) - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)
    return batch


def compare(graph: SegmentationGraph, onnx_model: bytes, shapes, mean, std) -> list[ParityRow]:
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    rows = []
    for k, shape in enumerate(shapes):
        x = sample_batch(shape, mean, std, seed=k)
        with torch.no_grad():
            ref = graph(torch.from_numpy(x)).numpy()
        out = session.run(None, {INPUT_NAME: x})[0]
        if graph.labels_output:
            rows.append(ParityRow(tuple(shape), None, float((out == ref).mean())))
        else:
            diff = float(np.abs(out - ref).max())
            rows.append(ParityRow(tuple(shape), diff, float((out.argmax(1) == ref.argmax(1)).mean())))
    return rows
