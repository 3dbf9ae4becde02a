"""The class names and colours an export writes into the file's metadata (no torch needed).

The files are parsed by ``segtool.runtime.model.classes`` (shared with `segtool adopt`); this
module decides what a model with ``count`` classes is called when no file says so:

- names: the ``--classes`` file's; without one, VOC's 21 names for a torchvision model that really
  has 21 classes, otherwise ``class_0 ... class_{n-1}``;
- colours: the ``--palette`` file's; without one, VOC's colours for the first 21 classes and
  distinct generated ones after them (``generated_palette``: deterministic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segtool.runtime.errors import UsageError
from segtool.runtime.model.classes import generated_palette, parse_palette
from segtool.runtime.model.voc import VOC_CLASSES


def default_names(count: int, voc: bool) -> tuple[str, ...]:
    """VOC's names (``voc`` and exactly 21 classes), otherwise class_0 ... class_{count-1}."""
    if voc and count == len(VOC_CLASSES):
        return VOC_CLASSES
    return tuple(f"class_{k}" for k in range(count))


def class_names_and_colours(
    count: int, names: tuple[str, ...] | None, palette_file: Path | None, voc: bool
) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, uint8 (count, 3) RGB palette) for a model with ``count`` output classes."""
    if names is not None and len(names) != count:
        raise UsageError(f"the classes file lists {len(names)} classes but the model has {count}")
    names = names if names is not None else default_names(count, voc)
    palette = parse_palette(palette_file, count) if palette_file is not None else generated_palette(count)
    return names, palette
