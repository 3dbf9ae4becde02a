"""The modules between a Hugging Face model and segtool's graph wrapper: what goes into the graph.

``LogitsOnly`` takes a per-pixel model's ``logits``; ``QueryScores`` turns a query-based model's class
and mask queries into per-pixel class scores exactly as its image processor's semantic
post-processing does, so the ONNX file outputs scores like any other and runs everywhere segtool does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class LogitsOnly(torch.nn.Module):
    """``model(pixel_values=x).logits``: the tensor segtool's graph wrapper takes."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.net = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x).logits


class QueryScores(torch.nn.Module):
    """Per-pixel class scores of a query-based model, as its image processor's
    ``post_process_semantic_segmentation`` computes them: softmax over each query's classes without the
    null class, sigmoid over its mask, summed over queries (the einsum). The graph wrapper then
    upsamples them to the input's size, as the processor does for ``target_sizes``. ``task``: OneFormer's
    tokenized "the task is semantic" [1, L], a constant of the graph."""

    def __init__(
        self, inner: torch.nn.Module, mask_size: tuple[int, int] | None, processor: str, task: torch.Tensor | None
    ):
        super().__init__()
        self.net = inner
        self.mask_size = mask_size
        self.processor = processor  # the image processor class whose post-processing this is
        self.register_buffer("task", task, persistent=False)

    def queries(self, x: torch.Tensor):
        """The model's own output (class_queries_logits, masks_queries_logits...)."""
        task: torch.Tensor | None = self.task  # type: ignore[assignment]  # a buffer, or None
        if task is None:
            return self.net(pixel_values=x)
        return self.net(pixel_values=x, task_inputs=task.expand(x.shape[0], -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.queries(x)
        masks = out.masks_queries_logits
        if self.mask_size is not None:
            masks = F.interpolate(masks, size=self.mask_size, mode="bilinear", align_corners=False)
        classes = out.class_queries_logits.softmax(dim=-1)[..., :-1]
        return torch.einsum("bqc,bqhw->bchw", classes, masks.sigmoid())
