"""The dynamic axes an exported segtool file promises: batch, height and width, symbolic in the file.

An exporter may fix an axis silently (torch.export specializes a dim the network's code ties to the
example input, e.g. a reshape with a literal 1 or a size read as a Python int); such a file would fail
later, on the first batch of two or the first other image size. ``fixed_axes`` names them.
"""

from __future__ import annotations

import onnx

AXES = {0: "batch", 2: "height", 3: "width"}


def fixed_axes(model: onnx.ModelProto) -> list[str]:
    """'batch axis of input image fixed at 1'-style phrases for every promised axis the file fixes."""
    found = []
    for kind, values in (("input", model.graph.input[:1]), ("output", model.graph.output[:1])):
        for value in values:
            dims = value.type.tensor_type.shape.dim
            rank = len(dims)
            axes = AXES if rank == 4 else {0: "batch", 1: "height", 2: "width"} if rank == 3 else {}
            for index, axis in axes.items():
                if dims[index].HasField("dim_value"):
                    found.append(f"the {axis} axis of {kind} {value.name} at {dims[index].dim_value}")
    return found
