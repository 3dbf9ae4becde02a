"""Every export setting in one place, with the parity gate's defaults stated once.

The CLI's flags, ``segtool demo`` and the Python API all start from ``ExportConfig()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segtool.runtime.errors import UsageError

DEFAULT_MODEL = "fcn_resnet50"
DEFAULT_SHAPES = ((1, 3, 333, 517), (2, 3, 256, 256), (1, 3, 520, 520))
PRECISIONS = ("fp32", "int8", "fp16")


@dataclass(frozen=True)
class ExportConfig:
    model: str = DEFAULT_MODEL
    weights: str = "DEFAULT"  # DEFAULT, a weights enum member, a checkpoint path, or "random"
    seed: int = 0  # for weights="random"
    verify: bool = True  # run the PyTorch-vs-ONNX parity gate
    atol: float = 1e-3  # gate: largest allowed |onnx - torch| logit difference
    min_agreement: float = 0.999  # gate: smallest allowed argmax agreement
    shapes: tuple[tuple[int, int, int, int], ...] = DEFAULT_SHAPES
    labels_output: bool = False  # ArgMax inside the graph, uint8 labels out
    precision: str = "fp32"  # fp32, int8 (CPU) or fp16 (GPU)
    calibration: Path | None = None  # int8: folder of images or a video; None = generated images
    calibration_count: int = 8
    calibration_size: int = 384
    opset: int = 18

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if not (0.0 <= self.min_agreement <= 1.0) or self.atol < 0:
            raise UsageError("the gate needs atol >= 0 and 0 <= min_agreement <= 1")

    @property
    def random_weights(self) -> bool:
        return self.weights.lower() == "random"

    def default_output(self, folder: Path = Path("models")) -> Path:
        """models/<model>[_random][_labels][_int8|_fp16].onnx: random weights never take a pretrained name."""
        parts = [
            self.model,
            "random" if self.random_weights else "",
            "labels" if self.labels_output else "",
            "" if self.precision == "fp32" else self.precision,
        ]
        return folder / ("_".join(p for p in parts if p) + ".onnx")
