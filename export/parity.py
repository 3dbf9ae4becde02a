"""The parity gate: the ONNX file must behave like the PyTorch model before it is written.

Both run on the same inputs (smooth random images, normalized as the runtime does): the
largest absolute logit difference and the share of pixels with the same argmax are measured
per input shape. Labels-output graphs are compared on labels only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from segtool.runtime.errors import ShapeMismatch
from segtool.runtime.model.session import reference_session
from segtool.runtime.tools.agreement import compare_outputs
from segtool.runtime.tools.synthetic import smooth_image

from .config import Gate
from .graph import INPUT_NAME, SegmentationGraph


@dataclass(frozen=True)
class ParityRow:
    shape: tuple[int, ...]
    max_abs_diff: float | None  # None when the graph outputs labels
    agreement: float  # fraction of pixels with equal labels
    scale: float | None = None  # max(1, max |reference|)
    ratio: float | None = None  # max of |diff| / (atol * scale + rtol * |reference|): <= 1 passes

    def passes(self, gate: Gate) -> bool:
        return (self.ratio is None or self.ratio <= 1.0) and self.agreement >= gate.min_agreement

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


def row(shape, reference: np.ndarray, output: np.ndarray, gate: Gate | None = None) -> ParityRow:
    """One input's comparison; with a ``gate``, the worst element's share of its allowance."""
    diff = compare_outputs(reference, output)
    if diff.max_abs_diff is None or gate is None:
        return ParityRow(tuple(shape), diff.max_abs_diff, diff.agreement)
    magnitude = np.abs(reference.astype(np.float32))
    scale = max(1.0, float(magnitude.max()))
    allowed = gate.atol * scale + gate.rtol * magnitude
    ratio = float((np.abs(output.astype(np.float32) - reference) / allowed).max())
    return ParityRow(tuple(shape), diff.max_abs_diff, diff.agreement, scale, ratio)


def compare(graph: SegmentationGraph, onnx_model: bytes, shapes, mean, std, gate: Gate = Gate()) -> list[ParityRow]:
    session = reference_session(onnx_model)
    rows = []
    for k, shape in enumerate(shapes):
        x = sample_batch(shape, mean, std, seed=k)
        with torch.no_grad():
            ref = graph(torch.from_numpy(x)).numpy()
        try:
            rows.append(row(shape, ref, session.run(None, {INPUT_NAME: x})[0], gate))
        except ShapeMismatch as exc:
            size = "x".join(map(str, shape))
            raise ShapeMismatch(
                f"parity gate failed on a {size} input: PyTorch vs ONNX {exc}; nothing written"
            ) from None
    return rows
