"""Exactly what goes into and out of the ONNX graph, and the export call itself.

Like segment-anything's ``SamOnnxModel``, a small wrapper fixes the graph's interface:
one input ``image`` (float32 [N, 3, H, W], normalized RGB) and one output, either ``logits``
(float32 [N, C, H, W]) or ``labels`` (uint8 [N, H, W], argmax in the graph). The auxiliary
head is not part of it. N, H and W stay symbolic.
"""

from __future__ import annotations

import contextlib
import io

import onnx
import torch

from .config import OPSET

INPUT_NAME = "image"


class SegmentationGraph(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, labels_output: bool = False):
        super().__init__()
        self.model = model
        self.labels_output = labels_output

    @property
    def output_name(self) -> str:
        return "labels" if self.labels_output else "logits"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.model(image)["out"]
        if self.labels_output:
            return logits.argmax(dim=1).to(torch.uint8)
        return logits


def to_onnx(graph: SegmentationGraph, opset: int = OPSET) -> onnx.ModelProto:
    """Export with torch.onnx (dynamo) and symbolic batch/height/width."""
    sample = torch.randn(1, 3, 64, 96)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    chatter = io.StringIO()  # the exporter narrates each step on stdout; keep the CLI's output ours
    with torch.no_grad(), contextlib.redirect_stdout(chatter):
        program = torch.onnx.export(
            graph.eval(),
            (sample,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[graph.output_name],
            dynamic_shapes=(dims,),
            verbose=False,
        )
    assert program is not None, "torch.onnx.export(dynamo=True) returns an ONNXProgram"
    return program.model_proto
