"""How far one exported variant drifts from another on the same inputs.

Both models see the same images (or video frames); B is scored against A's labels (pixel
agreement, mIoU of B with A as ground truth), logits are compared where both graphs expose
them at the same resolution (not for tiled images), and each model's time per image (preprocessing,
inference, labels) is kept. Inference goes through the job layer, so large images are tiled as in a run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from segtool.runtime.errors import UsageError
from segtool.runtime.jobs import JobOptions, infer, iter_images
from segtool.runtime.model.runner import Runner
from segtool.runtime.tools.agreement import compare_outputs, label_agreement
from segtool.runtime.tools.evaluation import ConfusionMatrix

__all__ = ["CompareResult", "compare_models", "iter_images"]


@dataclass
class CompareResult:
    confusion: ConfusionMatrix
    images: int = 0
    pixels: int = 0
    agreeing: float = 0.0
    max_abs_logit_diff: float | None = None
    abs_logit_diff_sum: float = 0.0
    logit_count: int = 0
    times_a: list[float] = field(default_factory=list)
    times_b: list[float] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain JSON: a figure that cannot be computed (no image) is None, never NaN."""
        miou = self.confusion.miou()
        return {
            "images": self.images,
            "pixel_agreement": self.agreeing / self.pixels if self.pixels else None,
            "miou_b_vs_a": None if np.isnan(miou) else miou,
            "max_abs_logit_diff": self.max_abs_logit_diff,
            "mean_abs_logit_diff": self.abs_logit_diff_sum / self.logit_count if self.logit_count else None,
            "a_inference_ms_median": float(np.median(self.times_a)) * 1000 if self.times_a else None,
            "b_inference_ms_median": float(np.median(self.times_b)) * 1000 if self.times_b else None,
            "problems": self.problems,
        }


def compare_models(
    seg_a: Runner,
    seg_b: Runner,
    images: Iterable[tuple[str, np.ndarray]],
    max_size_a: int | None = None,
    max_size_b: int | None = None,
    on_image: Callable[[str], None] | None = None,
) -> CompareResult:
    if tuple(seg_a.meta.classes) != tuple(seg_b.meta.classes):
        raise UsageError("the two models have different class lists: nothing to compare")
    result = CompareResult(ConfusionMatrix(len(seg_a.meta.classes)))
    for name, image in images:
        a = infer(seg_a, image, JobOptions(max_size=max_size_a))  # the job layer: tiled when it must be
        b = infer(seg_b, image, JobOptions(max_size=max_size_b))
        labels_a, labels_b, dt_a, dt_b = a.labels, b.labels, a.seconds, b.seconds
        result.confusion.update(labels_a, labels_b)
        result.agreeing += label_agreement(labels_a, labels_b) * labels_a.size
        result.pixels += labels_a.size
        result.images += 1
        result.times_a.append(dt_a)
        result.times_b.append(dt_b)
        if a.output is not None and b.output is not None and a.output.shape == b.output.shape:
            diff = compare_outputs(a.output, b.output)
            if diff.max_abs_diff is not None and diff.mean_abs_diff is not None:
                result.max_abs_logit_diff = max(result.max_abs_logit_diff or 0.0, diff.max_abs_diff)
                result.abs_logit_diff_sum += diff.mean_abs_diff * a.output.size
                result.logit_count += a.output.size
        if on_image:
            on_image(name)
    return result
