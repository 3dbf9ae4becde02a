"""The parity gate: the ONNX file must behave like the PyTorch model before it is written.

Both run on the same inputs (smooth random images, normalized as the runtime does): the
largest absolute logit difference and the share of pixels with the same argmax are measured
per input shape. Labels-output graphs are compared on labels only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnxruntime as ort
import torch

from segtool.runtime.agreement import compare_outputs
from segtool.runtime.synthetic import smooth_image

from .graph import INPUT_NAME, SegmentationGraph


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
    n, c, h, w = shape
    batch = np.empty(shape, dtype=np.float32)
    for i in range(n):
        image = smooth_image(h, w, seed=seed * 1000 + i, noise=12)
        batch[i] = ((image / np.float32(255) - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)
    return batch


def row(shape, reference: np.ndarray, output: np.ndarray) -> ParityRow:
    diff = compare_outputs(reference, output)
    return ParityRow(tuple(shape), diff.max_abs_diff, diff.agreement)


def compare(graph: SegmentationGraph, onnx_model: bytes, shapes, mean, std) -> list[ParityRow]:
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    rows = []
    for k, shape in enumerate(shapes):
        x = sample_batch(shape, mean, std, seed=k)
        with torch.no_grad():
            ref = graph(torch.from_numpy(x)).numpy()
        rows.append(row(shape, ref, session.run(None, {INPUT_NAME: x})[0]))
    return rows
