"""Every export setting in one place, the parity gate's with them (``Gate``), each default stated once.

The CLI's flags, ``segtool demo`` and the Python API all start from ``ExportConfig()``. No torch here:
the CLI checks its arguments before it imports the export stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segtool.runtime.errors import UsageError, WeightsError
from segtool.runtime.files.images import ensure_writable_dir
from segtool.runtime.model.metadata import IMAGENET_MEAN, IMAGENET_STD, MAX_CLASSES, PRECISIONS, Precision

from .models import get_spec

DEFAULT_MODEL = "fcn_resnet50"
DEFAULT_SHAPES = ((1, 3, 333, 517), (2, 3, 256, 256), (1, 3, 520, 520))
METHODS = ("minmax", "percentile", "entropy")
VARIANT_TARGETS = {"int8": 0.99, "fp16": 0.995}  # argmax agreement with fp32 on held-out images
#: int8 weights for which CPUs: portable (7 bits, reduce_range) on any x86 CPU; vnni (8 bits) for VNNI/AMX ones
INT8_TARGETS = ("portable", "vnni")
INPUT_NAME = "image"  # the graph's input, in every export (segtool.export.graph)
MIN_CALIBRATION = 3  # calibration images at least: two in three calibrate, one in three validates (int8.split)


@dataclass(frozen=True)
class Gate:
    """What the exported graph must meet against PyTorch, on every parity input (``segtool.export.parity``).

    Elementwise ``|onnx - torch| <= atol * scale + rtol * |torch|`` (numpy's ``allclose`` with the
    absolute term measured in units of the output's scale, ``max(1, max |torch|)``), and argmax
    agreement >= ``min_agreement``. Scaling the absolute term keeps a checkpoint with large logits
    from being refused for its scale: an exact export differs by float32 rounding, about 1e-6 of
    the scale; a wrong normalization or a dropped layer differs by percents of it.
    """

    atol: float = 1e-4
    rtol: float = 1e-3
    min_agreement: float = 0.999

    def __post_init__(self) -> None:
        if not (0.0 <= self.min_agreement <= 1.0) or self.atol < 0 or self.rtol < 0:
            raise UsageError("the gate needs atol >= 0, rtol >= 0 and 0 <= min_agreement <= 1")

    def describe(self) -> str:
        return f"|diff| <= {self.atol:g}*scale + {self.rtol:g}*|torch|, argmax agreement >= {self.min_agreement:.2%}"


@dataclass(frozen=True)
class ExportConfig:
    model: str = DEFAULT_MODEL  # a torchvision table name, or your own network as package.module:callable
    weights: str = "DEFAULT"  # DEFAULT, a weights enum member, a checkpoint path, or "random"
    seed: int = 0  # for weights="random"
    # -- your own model: classes, normalization, the network's settings
    num_classes: int | None = None  # None: from the checkpoint's classifier, the classes file, or the network
    classes_file: Path | None = None  # class names: one a line, a JSON list/object, or YAML (with PyYAML)
    palette_file: Path | None = None  # colours: `R G B` or #rrggbb a line; None: VOC's, then generated
    model_args: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments of a package.module:callable
    mean: tuple[float, float, float] = IMAGENET_MEAN  # what the network was trained with, in [0, 1]
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"  # RGB or BGR: the channel order the network takes
    input_multiple: int | None = None  # pad height and width in the graph to a multiple; None: found by probing
    verify: bool = True  # run the PyTorch-vs-ONNX parity gate
    gate: Gate = Gate()  # the parity gate's tolerances (--atol, --rtol, --min-agreement)
    shapes: tuple[tuple[int, int, int, int], ...] = DEFAULT_SHAPES
    labels_output: bool = False  # ArgMax inside the graph, uint8 labels out
    precision: Precision = "fp32"  # fp32, int8 (CPU) or fp16 (GPU)
    calibration: Path | None = None  # int8: folder of images or a video; None = generated images
    calibration_count: int = 16  # images (or frames) read: two in three calibrate, one in three validates
    calibration_size: int = 384  # their long side
    calibration_method: str = "minmax"  # minmax, percentile or entropy (docs/BENCHMARKS.md: why minmax)
    variant_min_agreement: float | None = None  # int8/fp16 vs fp32 on held-out images; None: per precision
    force: bool = False  # write a variant below its target anyway (its metadata says so)
    int8_target: str = "portable"  # int8 weights: portable (7-bit, reduce_range: any x86 CPU) or vnni (8-bit)
    agreements: bool = True  # measure and record other engines' agreement (segtool.agreements) once written

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.int8_target not in INT8_TARGETS:
            raise UsageError(f"--int8-target {self.int8_target!r}: {' or '.join(INT8_TARGETS)}")
        if self.calibration_method not in METHODS:
            raise UsageError(f"unknown calibration method {self.calibration_method!r}: {', '.join(METHODS)}")
        if self.calibration_count < MIN_CALIBRATION:
            raise UsageError(
                f"--calibration-count {self.calibration_count}: at least {MIN_CALIBRATION} images are needed "
                "(two in three calibrate, one in three validates)"
            )
        if self.variant_min_agreement is not None and not 0.0 <= self.variant_min_agreement <= 1.0:
            raise UsageError("--int8-min-agreement takes a fraction between 0 and 1, e.g. 0.99")
        if self.num_classes is not None and not 1 <= self.num_classes <= MAX_CLASSES:
            raise UsageError(f"--num-classes {self.num_classes}: 1 to {MAX_CLASSES} (labels are uint8)")
        if self.model_args and ":" not in self.model:
            raise UsageError(f"--model-arg is for your own network (--model package.module:callable), not {self.model}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UsageError(f"--mean and --std take 3 numbers each, std positive (got {self.mean} and {self.std})")
        if self.channel_order not in ("RGB", "BGR"):
            raise UsageError(f"channel order {self.channel_order!r}: RGB or BGR")
        if self.input_multiple is not None and not 1 <= self.input_multiple <= 1024:
            raise UsageError(f"--input-multiple {self.input_multiple}: 1 to 1024")

    @property
    def variant_target(self) -> float:
        if self.variant_min_agreement is not None:
            return self.variant_min_agreement
        return VARIANT_TARGETS.get(self.precision, 1.0)

    @property
    def random_weights(self) -> bool:
        return self.weights.lower() == "random"

    def check_paths(self, output: Path) -> None:
        """Refuse, before any work (and before torch is imported), an output that is not a regular
        file or cannot be written, and a calibration source or checkpoint that does not exist."""
        if output.exists() and not output.is_file():
            raise UsageError(f"--output {output} exists and is not a regular file")
        ensure_writable_dir(output.parent)
        if self.calibration is not None and not Path(self.calibration).exists():
            raise UsageError(f"--calibration {self.calibration}: no such folder or video")
        if ":" not in self.model:
            get_spec(self.model)  # an unknown name: the one line listing the known ones
        named = self.random_weights or re.fullmatch(r"[A-Z][A-Z0-9_]*", self.weights)  # DEFAULT, enum members
        if not named and not Path(self.weights).is_file():
            raise WeightsError(f"weights file {self.weights} not found (use DEFAULT, random, or a checkpoint path)")

    def default_output(self, folder: Path = Path("models")) -> Path:
        """models/<model>[_random][_labels][_int8|_fp16].onnx: random weights never take a pretrained name
        (package.module:callable gives package_module_callable)."""
        parts = [
            re.sub(r"[^\w-]+", "_", self.model),
            "random" if self.random_weights else "",
            "labels" if self.labels_output else "",
            "" if self.precision == "fp32" else self.precision,
        ]
        return folder / ("_".join(p for p in parts if p) + ".onnx")
