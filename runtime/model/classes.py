"""Class names and palettes from files, without torch: shared by `segtool adopt` and `segtool export`.

- classes: one name a line (blank lines at the end ignored), a JSON list of names, a JSON object
  mapping indices 0..n-1 to names (also Hugging Face's ``{"id2label": {...}}`` config), or a YAML
  list when PyYAML is installed (``.yaml``/``.yml``).
- palette: one colour a line, ``R G B`` (0..255, spaces or commas) or ``#rrggbb``; a JSON list of
  ``[r, g, b]`` triples also works.
- ``generated_palette(n)``: the VOC colours for the first 21 classes, then distinct colours spread
  over the hue circle (deterministic: the same n always gives the same colours).

Every problem is one ``UsageError`` line naming the file (and the line where there is one).
"""

from __future__ import annotations

import colorsys
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from segtool.runtime.errors import UsageError
from segtool.runtime.model.voc import voc_colormap

MAX_CLASSES = 256  # labels are uint8 (as segtool.runtime.model.metadata.MAX_CLASSES)
VOC_COLOURS = 21
_HEX = re.compile(r"#?([0-9a-fA-F]{6})")


def _read(path: Path, what: str) -> str:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} file {path} not found")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} file {path}: cannot be read as UTF-8 text ({exc})") from None


def _structured(path: Path, text: str) -> Any | None:
    """A JSON (or, for .yaml/.yml, YAML) document, or None when the text is plain lines."""
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UsageError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write one name a line"
                             ) from None  # fmt: skip
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{path}: not valid JSON ({exc})") from None
    return None


def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of every line up to the last non-blank one."""
    lines = [(k, line.strip()) for k, line in enumerate(text.splitlines(), start=1)]
    while lines and not lines[-1][1]:
        lines.pop()
    return lines


def _names_from(path: Path, document: Any) -> list[str]:
    if isinstance(document, dict) and isinstance(document.get("id2label"), dict):
        document = document["id2label"]
    if isinstance(document, dict):
        try:
            indexed = {int(k): v for k, v in document.items()}
        except (TypeError, ValueError):
            raise UsageError(f"{path}: an object of classes maps indices 0..n-1 to names") from None
        if sorted(indexed) != list(range(len(indexed))):
            raise UsageError(f"{path}: class indices must be 0..{len(indexed) - 1} with none missing")
        document = [indexed[k] for k in range(len(indexed))]
    if not isinstance(document, list):
        raise UsageError(f"{path}: expected a list of class names (got {type(document).__name__})")
    bad = next((k for k, name in enumerate(document) if not isinstance(name, str) or not name.strip()), None)
    if bad is not None:
        raise UsageError(f"{path}: class {bad} is {document[bad]!r}, not a name")
    return [name.strip() for name in document]


def parse_classes(path: str | Path) -> tuple[str, ...]:
    """Class names in index order from ``path`` (see the module docstring for the formats)."""
    path = Path(path)
    text = _read(path, "classes")
    document = _structured(path, text)
    if document is not None:
        names = _names_from(path, document)
    else:
        names = []
        for number, name in _lines(text):
            if not name:
                raise UsageError(f"{path}:{number}: empty line; every line names one class, in index order")
            names.append(name)
    if not names:
        raise UsageError(f"{path}: no class names in it")
    if len(names) > MAX_CLASSES:
        raise UsageError(f"{path}: {len(names)} classes; segtool's uint8 labels hold at most {MAX_CLASSES}")
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        if name in seen:
            raise UsageError(f"{path}: class {name!r} is named twice (indices {seen[name]} and {k})")
        seen[name] = k
    return tuple(names)


def _colour(path: Path, where: str, value: Any) -> list[int]:
    if isinstance(value, str):
        text = value.strip()
        match = _HEX.fullmatch(text)
        if match:
            return [int(match.group(1)[i : i + 2], 16) for i in (0, 2, 4)]
        value = [v for v in re.split(r"[\s,]+", text.strip("()[]")) if v]
    try:
        rgb = [float(v) for v in value]
    except (TypeError, ValueError):
        rgb = []
    if len(rgb) != 3 or not all(v.is_integer() and 0 <= v <= 255 for v in rgb):
        raise UsageError(f"{path}{where}: {str(value)[:40]!r} is not a colour (R G B in 0..255, or #rrggbb)")
    return [int(v) for v in rgb]


def parse_palette(path: str | Path, n: int) -> np.ndarray:
    """uint8 (n, 3) RGB colours for ``n`` classes from ``path``; more colours than classes are cut."""
    path = Path(path)
    text = _read(path, "palette")
    document = _structured(path, text)
    if document is not None:
        if not isinstance(document, list):
            raise UsageError(f"{path}: expected a list of colours")
        colours = [_colour(path, f" colour {k}", value) for k, value in enumerate(document)]
    else:
        colours = []
        for number, line in _lines(text):
            if not line:
                raise UsageError(f"{path}:{number}: empty line; every line gives one class's colour, in index order")
            colours.append(_colour(path, f":{number}", line))
    if len(colours) < n:
        raise UsageError(f"{path}: {len(colours)} colours for {n} classes")
    return np.array(colours[:n], dtype=np.uint8).reshape(n, 3)


def generated_palette(n: int) -> np.ndarray:
    """uint8 (n, 3): VOC's colours for the first 21 classes, then distinct hues (golden-angle steps,
    three brightness levels); deterministic, and no colour repeats."""
    colours = [tuple(int(v) for v in c) for c in voc_colormap(min(n, VOC_COLOURS))]
    used = set(colours)
    k = 0
    while len(colours) < n:
        hue = (k * 0.6180339887) % 1.0
        saturation, value = ((0.85, 0.95), (0.55, 0.8), (0.95, 0.6))[k % 3]
        rgb = tuple(round(255 * v) for v in colorsys.hsv_to_rgb(hue, saturation, value))
        k += 1
        if rgb not in used:
            used.add(rgb)
            colours.append(rgb)
    return np.array(colours, dtype=np.uint8).reshape(n, 3)
