"""The torchvision segmentation models segtool exports: one table entry each, all with the 21 VOC
classes and torchvision's weights API (``COCO_WITH_VOC_LABELS_V1``). Each entry knows its builder,
its weights enum, and whether it has the training-only auxiliary head that export leaves out.

This table is the single source of model names; it imports torch only when a model is built, so
the CLI can read the names without the [export] extra.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from segtool.runtime.errors import UsageError
from segtool.runtime.model.voc import VOC_CLASSES

if TYPE_CHECKING:
    import torch

PUBLISHED = "COCO-val2017-VOC-labels"  # the data set torchvision's published metrics are measured on


@dataclass(frozen=True)
class ModelSpec:
    name: str  # torchvision builder, e.g. "fcn_resnet50"
    weights_enum: str  # torchvision weights enum, e.g. "FCN_ResNet50_Weights"
    default_weights: str = "COCO_WITH_VOC_LABELS_V1"  # member used for --weights DEFAULT
    has_aux: bool = True  # FCN and DeepLabV3 train with an auxiliary head; LR-ASPP has none
    classes: tuple[str, ...] = VOC_CLASSES

    def weights(self, member: str | None = None):
        import torchvision.models.segmentation as tv_seg

        enum = getattr(tv_seg, self.weights_enum)
        return enum[member or self.default_weights]

    def build(self) -> torch.nn.Module:
        """The architecture without weights and without the auxiliary (training-only) head."""
        import torchvision.models.segmentation as tv_seg

        builder = getattr(tv_seg, self.name)
        extra = {"aux_loss": False} if self.has_aux else {}
        return builder(weights=None, weights_backbone=None, num_classes=len(self.classes), **extra).eval()

    def published(self, member: str | None = None) -> dict:
        """torchvision's published accuracy and checkpoint identity (from the enum: works offline)."""
        w = self.weights(member)
        metrics = w.meta.get("_metrics", {}).get(PUBLISHED, {})
        filename = os.path.basename(w.url)
        return {"weights": f"{type(w).__name__}.{w.name}", "dataset": PUBLISHED, "miou": metrics.get("miou"),
                "pixel_acc": metrics.get("pixel_acc"), "checkpoint": filename,
                "sha256_prefix": filename.rsplit("-", 1)[-1].split(".")[0]}  # fmt: skip


MODELS = {
    spec.name: spec
    for spec in (
        ModelSpec("fcn_resnet50", "FCN_ResNet50_Weights"),
        ModelSpec("fcn_resnet101", "FCN_ResNet101_Weights"),
        ModelSpec("deeplabv3_resnet50", "DeepLabV3_ResNet50_Weights"),
        ModelSpec("deeplabv3_resnet101", "DeepLabV3_ResNet101_Weights"),
        ModelSpec("deeplabv3_mobilenet_v3_large", "DeepLabV3_MobileNet_V3_Large_Weights"),
        ModelSpec("lraspp_mobilenet_v3_large", "LRASPP_MobileNet_V3_Large_Weights", has_aux=False),
    )
}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}: supported: {', '.join(MODELS)}") from None
