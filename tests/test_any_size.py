"""Size-dependent code inside a network keeps the ONNX file's height and width symbolic (``AnySize``):
adaptive pooling to a grid (UperNet's, PSPNet's pyramid pooling), ``torch.as_tensor`` of sizes and
``torch.linspace`` over a size (Mask2Former's pixel decoder). Each is exported once, at 64x96, and run
by ONNX Runtime at other sizes against PyTorch's own function."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from segtool.export.any_size import AnySize
from segtool.export.graph import SegmentationGraph, to_onnx


@pytest.mark.parametrize("bins", [1, 2, 3, 6, (2, 5), (None, 3)])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (6, 6), (13, 29), (64, 96)])
def test_adaptive_pooling_has_pytorchs_bins_at_every_size(bins, size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    with AnySize():
        ours = torch.nn.AdaptiveAvgPool2d(bins)(x)
    torch.testing.assert_close(ours, F.adaptive_avg_pool2d(x, bins), rtol=1e-5, atol=1e-6)


class SizeDependent(torch.nn.Module):
    """Logits [N, 3, H, W] that depend on all three idioms."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        pooled = F.interpolate(torch.nn.AdaptiveAvgPool2d((None, 3))(x), size=(height, width), mode="nearest")
        pooled = pooled + F.interpolate(torch.nn.AdaptiveAvgPool2d(3)(x), size=(height, width), mode="nearest")
        sizes = torch.as_tensor([(height, width)], dtype=torch.long).to(x.dtype)  # [[H, W]]
        ramp = torch.linspace(0.5, height - 0.5, steps=height, dtype=x.dtype)[None, None, :, None]
        return pooled + ramp / sizes[0, 0] + x * sizes[0, 1] / 100


def test_size_dependent_code_exports_for_any_size():
    graph = SegmentationGraph(SizeDependent()).eval()
    session = ort.InferenceSession(to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 64, 96), (1, 3, 37, 50), (2, 3, 100, 61)):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[2]))
        with torch.no_grad():
            expected = SizeDependent()(x).numpy()  # PyTorch's own pooling, as_tensor and linspace
        got = session.run(None, {"image": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
