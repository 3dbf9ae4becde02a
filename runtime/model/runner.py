"""``Runner``: what the job layer, tiling, comparison and evaluation need of a model.

``Segmenter`` is the implementation; the engine under it (ONNX Runtime or OpenVINO,
``segtool.runtime.model.engines``) changes nothing for its callers.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Protocol, runtime_checkable

import numpy as np

from segtool.runtime.model.metadata import ModelMetadata

Size = tuple[int, int]  # (width, height)


@runtime_checkable
class Runner(Protocol):
    meta: ModelMetadata
    provider: str

    def prepare(self, images: list[np.ndarray], color: str = "bgr", max_size: int | None = None,
                size: Size | None = None) -> np.ndarray: ...  # fmt: skip

    def run(self, tensor: np.ndarray) -> np.ndarray: ...

    def labels_at(self, output: np.ndarray, height: int, width: int) -> list[np.ndarray]: ...

    def segment(self, image: np.ndarray, color: str = "bgr", max_size: int | None = None, size: Size | None = None,
                tile: int | None = None) -> np.ndarray: ...  # fmt: skip

    def segment_stream(self, frames: Iterable[np.ndarray], color: str = "bgr", max_size: int | None = None,
                       size: Size | None = None, batch: int = 1,
                       ) -> Generator[tuple[np.ndarray, np.ndarray], None, None]: ...  # fmt: skip
