"""The torchvision segmentation models segtool knows how to export: one table entry each.

Adding another torchvision segmentation model (deeplabv3_resnet50, lraspp_mobilenet_v3_large,
...) is one more ``ModelSpec``: its builder and weights enum names in torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.models.segmentation as tv_seg

from segtool.runtime.errors import UsageError
from segtool.runtime.voc import VOC_CLASSES


@dataclass(frozen=True)
class ModelSpec:
    name: str  # torchvision builder, e.g. "fcn_resnet50"
    weights_enum: str  # torchvision weights enum, e.g. "FCN_ResNet50_Weights"
    default_weights: str  # member used for --weights DEFAULT
    classes: tuple[str, ...] = VOC_CLASSES

    def weights(self, member: str | None = None):
        enum = getattr(tv_seg, self.weights_enum)
        return enum[member or self.default_weights]

    def build(self) -> torch.nn.Module:
        """The architecture without weights and without the auxiliary (training-only) head."""
        builder = getattr(tv_seg, self.name)
        return builder(weights=None, weights_backbone=None, num_classes=len(self.classes), aux_loss=False).eval()


MODELS = {spec.name: spec for spec in (ModelSpec("fcn_resnet50", "FCN_ResNet50_Weights", "COCO_WITH_VOC_LABELS_V1"),)}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}: supported: {', '.join(MODELS)}") from None
