"""A tiny segtool model built with onnx.helper: one 1x1 convolution from RGB to 21 class logits.

It loads in milliseconds, so tests that run `segtool` many times (the bad-input matrix, the
fuzz test) do not pay for fcn_resnet50; its metadata is what `segtool export` writes, and can be
broken on purpose field by field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from segtool.runtime import VOC_CLASSES, ModelMetadata, voc_colormap


def tiny_props(**override: str) -> dict[str, str]:
    meta = ModelMetadata("tiny", VOC_CLASSES, voc_colormap(21), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                         "RGB", "logits", {"kind": "random", "seed": 0}, {"segtool": "test"})  # fmt: skip
    props = meta.to_props()
    props.update({f"segtool.{k}": v for k, v in override.items()})
    return props


def tiny_model(path: Path, props: dict[str, str] | None = None, classes: int = 21, input_rank: int = 4,
               labels_graph: bool = False) -> Path:  # fmt: skip
    """Write the tiny model to ``path`` (``props`` replace the metadata; ``classes`` output channels)."""
    weight = np.random.default_rng(0).standard_normal((classes, 3, 1, 1)).astype(np.float32)
    dims: list[str | int] = ["batch", 3, "height", "width"] if input_rank == 4 else ["batch", 3]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)
    nodes = [helper.make_node("Conv", ["image", "w"], ["logits"])]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes, "height", "width"])
    if input_rank != 4:
        nodes = [helper.make_node("Identity", ["image"], ["logits"])]
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    if labels_graph:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["am"], axis=1, keepdims=0))
        nodes.append(helper.make_node("Cast", ["am"], ["labels"], to=TensorProto.UINT8))
        output = helper.make_tensor_value_info("labels", TensorProto.UINT8, ["batch", "height", "width"])
    graph = helper.make_graph(nodes, "tiny", [image], [output], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    default = tiny_props(output="labels") if labels_graph else tiny_props()
    helper.set_model_props(model, default if props is None else props)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
