"""Exactly what goes into and out of the ONNX graph, and the export call itself.

Like segment-anything's ``SamOnnxModel``, a small wrapper fixes the graph's interface:
one input ``image`` (float32 [N, 3, H, W], normalized as the metadata says) and one output, either
``logits`` (float32 [N, C, H, W]) or ``labels`` (uint8 [N, H, W], argmax in the graph). The
auxiliary head is not part of it. N, H and W stay symbolic.

The network inside may return a tensor, torchvision's ``{"out": ...}``, or a tuple whose first item
is the masks (segmentation_models_pytorch with ``aux_params``). A network that only takes sizes
divisible by its stride (an FPN on ResNet: 32) gets its input padded to that multiple inside the graph and
its output cropped back; one whose output is smaller than its input is upsampled (bilinear, as
torchvision's heads do). ``probe`` finds both by running the network on two small images, so the
ONNX file takes any image size, as the torchvision models do.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from unittest import mock

import onnx
import torch
import torch.nn.functional as F

from segtool.runtime.errors import UsageError

from .any_size import AnySize
from .config import INPUT_NAME
from .models import one_line

OPSET = 18  # the ONNX opset of every export (torch.onnx, dynamo)
PROBE_SIZES = ((64, 96), (67, 101))  # a size every stride up to 32 divides, and an odd one
MULTIPLES = (2, 4, 8, 16, 32, 64, 128)


def masks_of(output: object) -> torch.Tensor:
    """The [N, C, H, W] masks in what a segmentation network returns."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("out"), torch.Tensor):
        return output["out"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    kind = f"a dict with keys {', '.join(map(str, output))}" if isinstance(output, Mapping) else type(output).__name__
    raise UsageError(f"the network returns {kind}: segtool takes a tensor [N, classes, H, W] or a dict with 'out'")


class SegmentationGraph(torch.nn.Module):
    def __init__(
        self, model: torch.nn.Module, labels_output: bool = False, input_multiple: int = 1, resize_output: bool = False
    ):
        super().__init__()
        self.model = model
        self.labels_output = labels_output
        self.input_multiple = input_multiple
        self.resize_output = resize_output

    @property
    def output_name(self) -> str:
        return "labels" if self.labels_output else "logits"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2], image.shape[-1]
        x = image
        if self.input_multiple > 1:
            m = self.input_multiple
            x = F.pad(image, (0, (width + m - 1) // m * m - width, 0, (height + m - 1) // m * m - height))
        with AnySize():
            logits = masks_of(self.model(x))
        if self.resize_output:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.input_multiple > 1:
            logits = logits[:, :, :height, :width]
        if self.labels_output:
            return logits.argmax(dim=1).to(torch.uint8)
        return logits


@dataclass(frozen=True)
class Probe:
    """What running the network on small images showed."""

    classes: int  # output channels
    input_multiple: int  # 1: any size works
    resize_output: bool  # the output is smaller (or larger) than its input


def _masks_at(model: torch.nn.Module, height: int, width: int) -> torch.Tensor | None:
    try:
        with torch.no_grad():
            return masks_of(model(torch.zeros(1, 3, height, width)))
    except UsageError:
        raise
    except Exception:  # a network that refuses the size (smp checks it) or whose shapes stop fitting
        return None


def probe(model: torch.nn.Module, name: str, input_multiple: int | None = None) -> Probe:
    """Run ``model`` on small images: its class count, the size multiple it needs, whether its
    output must be upsampled to the input's size. One ``UsageError`` if it is no segmentation network."""
    height, width = PROBE_SIZES[0]
    try:
        with torch.no_grad():
            first = masks_of(model(torch.zeros(1, 3, height, width)))
    except UsageError as exc:
        raise UsageError(f"{name}: {exc}") from None
    except Exception as exc:
        raise UsageError(f"{name} does not run on a 1x3x{height}x{width} image ({one_line(exc)})") from None
    if first.dim() != 4 or first.shape[0] != 1:
        raise UsageError(
            f"{name} returns a tensor of shape {list(first.shape)} for a 1x3x{height}x{width} image, "
            "not [1, classes, height, width]"
        )
    classes = int(first.shape[1])
    resize = tuple(first.shape[-2:]) != (height, width)
    if input_multiple is None:
        odd_h, odd_w = PROBE_SIZES[1]
        for m in (1, *MULTIPLES):
            h, w = -(-odd_h // m) * m, -(-odd_w // m) * m
            out = _masks_at(model, h, w)
            if out is None or out.dim() != 4 or out.shape[1] != classes:
                continue
            if resize or tuple(out.shape[-2:]) == (h, w):
                input_multiple = m
                break
        else:
            raise UsageError(
                f"{name} runs on 64x96 images but not on {odd_w}x{odd_h} ones, even padded to a multiple of "
                f"{MULTIPLES[-1]}: pass --input-multiple N"
            )
    return Probe(classes, input_multiple, resize)


def to_onnx(graph: SegmentationGraph, batch: int = 2) -> onnx.ModelProto:
    """Export with torch.onnx (dynamo) and symbolic batch/height/width. The example has a batch of two:
    torch.export specializes a dim whose example size is 1 (SegFormer's batch ends up fixed at 1).
    The axes are ``Dim.DYNAMIC``: torch.export may narrow their range (Mask2Former's: at least 33) but
    refuses to fix them; a range it narrows is not enforced by the ONNX file."""
    sample = torch.randn(batch, 3, 64, 96)
    dims = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    chatter = io.StringIO()  # the exporter narrates each step on stdout; keep the CLI's output ours
    # transformers' torch._check of sizes (OneFormer's) would go into the graph as ops ONNX does not have;
    # the parity gate checks the file at other sizes instead
    no_checks = mock.patch.dict(os.environ, {"TRANSFORMERS_DISABLE_TORCH_CHECK": "1"})
    with torch.no_grad(), contextlib.redirect_stdout(chatter), no_checks:
        program = torch.onnx.export(
            graph.eval(),
            (sample,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[graph.output_name],
            dynamic_shapes=(dims,),
            verbose=False,
        )
    assert program is not None, "torch.onnx.export(dynamo=True) returns an ONNXProgram"
    return _named_axes(program.model_proto)


def export_failure(exc: BaseException) -> str:
    """The line of a torch.onnx failure that says what went wrong (its exception summary's first)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = (lines or [type(exc).__name__])[0]
    if "## Exception summary" in lines and lines.index("## Exception summary") + 1 < len(lines):
        line = lines[lines.index("## Exception summary") + 1]
    line = re.sub(r"<class '[\w.]*?(\w+)'>: ", "", line)  # the exporter's own error class
    return re.sub(r"<OpOverload\(op='([^']+)', overload='[^']*'\)>", r"\1", line)[:240]


def _named_axes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Call the input's symbolic axes batch, height and width (the exporter's names are s0, s1...),
    wherever they appear in the graph."""
    names = {0: "batch", 2: "height", 3: "width"}
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    rename = {dims[k].dim_param: v for k, v in names.items() if k < len(dims) and dims[k].dim_param}
    graph = proto.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]
    return proto
