"""What the files beside an ONNX model say about using it: class names and normalization.

Two layouts are read (JSON only, no transformers or mmdeploy import):

- Hugging Face's ``save_pretrained``: ``config.json`` (``id2label``, ``num_labels``) and
  ``preprocessor_config.json`` (``image_mean``, ``image_std``, ``do_rescale``/``rescale_factor``,
  ``do_normalize``, ``size``, ``do_reduce_labels``/``reduce_labels``). The processor rescales
  pixels by ``rescale_factor`` then normalizes; in segtool's units (pixels in [0, 1], R,G,B) that
  is mean / (255 * factor) and std / (255 * factor).
- mmdeploy's work folder: ``pipeline.json`` (its ``Normalize`` transform: ``mean``, ``std`` on
  0..255 pixels, ``to_rgb``) and ``deploy.json``; class names from a ``classes`` list in either.
  mmcv normalizes after the optional BGR->RGB swap, so with ``to_rgb`` false the network takes BGR
  and the listed mean/std are B,G,R: segtool keeps them R,G,B (reversed) with order BGR.

``Found.notes`` says what was taken from where, one line each; a file that contradicts itself or
is not what its name says is one ``UsageError`` naming it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segtool.runtime.errors import UsageError

HF_CONFIG, HF_PROCESSOR = "config.json", "preprocessor_config.json"
HF_PROCESSORS = (HF_PROCESSOR, "processor_config.json")  # the second: a processor with a tokenizer (OneFormer)
MM_PIPELINE, MM_DEPLOY = "pipeline.json", "deploy.json"


@dataclass
class Found:
    classes: tuple[str, ...] | None = None
    classes_from: str = ""
    mean: tuple[float, float, float] | None = None  # R,G,B of [0, 1] pixels
    std: tuple[float, float, float] | None = None
    channel_order: str | None = None
    normalization_from: str = ""
    reduce_labels: bool = False  # training ignored ground-truth 0 and shifted the other classes down by one
    notes: list[str] = field(default_factory=list)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: not readable JSON ({exc})") from None


def _triple(value: Any, path: Path, key: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    ok = isinstance(value, list) and len(value) == 3
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok:
        raise UsageError(f"{path}: {key} must be three numbers (got {json.dumps(value)[:60]})")
    return float(value[0]), float(value[1]), float(value[2])


def hf_classes(path: Path) -> tuple[str, ...] | None:
    """Class names from ``config.json``'s ``id2label`` (keys 0..N-1), checked against ``num_labels``."""
    config = _load(path)
    labels = config.get("id2label") if isinstance(config, dict) else None
    if labels is None:
        return None
    if not isinstance(labels, dict) or not labels:
        raise UsageError(f"{path}: id2label must be an object of index -> name")
    try:
        indexed = {int(k): v for k, v in labels.items()}
    except ValueError:
        bad = next(k for k in labels if not k.strip().lstrip("-").isdigit())
        raise UsageError(f"{path}: id2label key {bad!r} is not an integer class index") from None
    if sorted(indexed) != list(range(len(indexed))):
        raise UsageError(f"{path}: id2label keys must be 0..{len(indexed) - 1} (got {sorted(indexed)[:8]})")
    if not all(isinstance(v, str) and v for v in indexed.values()):
        raise UsageError(f"{path}: id2label values must be class names")
    count = config.get("num_labels")
    if count is not None and count != len(indexed):
        raise UsageError(f"{path}: num_labels is {count} but id2label names {len(indexed)} classes")
    return tuple(indexed[k] for k in range(len(indexed)))


def hf_processor(folder: Path) -> Path | None:
    """The image processor's config in a Hugging Face folder: ``preprocessor_config.json``, or a full
    processor's ``processor_config.json`` (transformers 5 nests the image processor's settings in it)."""
    if (folder / HF_PROCESSOR).is_file():
        return folder / HF_PROCESSOR
    full = folder / HF_PROCESSORS[1]
    if not full.is_file():
        return None
    config = _load(full)
    return full if isinstance(config, dict) and isinstance(config.get("image_processor"), dict) else None


def _image_processor(path: Path) -> Any:
    config = _load(path)
    if isinstance(config, dict) and isinstance(config.get("image_processor"), dict):
        return config["image_processor"]
    return config


def hf_normalization(path: Path) -> tuple[tuple[float, float, float], tuple[float, float, float], list[str]]:
    """(mean, std) in segtool's units from a Hugging Face image processor config, and notes."""
    config = _image_processor(path)
    if not isinstance(config, dict):
        raise UsageError(f"{path}: not an image processor config (a JSON object)")
    factor = config.get("rescale_factor", 1 / 255) if config.get("do_rescale", True) else 1.0
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
        raise UsageError(f"{path}: rescale_factor must be a positive number (got {factor!r})")
    if config.get("do_normalize", True):
        mean = _triple(config.get("image_mean", [0.5] * 3), path, "image_mean")
        std = _triple(config.get("image_std", [0.5] * 3), path, "image_std")
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if min(std) <= 0:
        raise UsageError(f"{path}: image_std must be positive (got {list(std)})")
    scale = 255 * float(factor)
    to_unit = lambda values: (values[0] / scale, values[1] / scale, values[2] / scale)  # noqa: E731
    notes = []
    size = config.get("size") or config.get("crop_size")
    if isinstance(size, dict) and size:
        shown = "x".join(str(size[k]) for k in ("width", "height") if k in size) or json.dumps(size)
        notes.append(f"{path.name}: the processor resizes to {shown}; segtool runs at the image's own size "
                     "unless `run --size`/`--max-size` say otherwise")  # fmt: skip
    if config.get("do_reduce_labels", config.get("reduce_labels")):
        notes.append(f"{path.name}: reduce_labels was on in training (ground-truth 0 was ignored, classes shifted "
                     "down by one); the class names follow config.json's id2label")  # fmt: skip
    return to_unit(mean), to_unit(std), notes


def hf_reduce_labels(path: Path) -> bool:
    """Whether a Hugging Face image processor config has ``do_reduce_labels`` (older: ``reduce_labels``) on."""
    config = _image_processor(path)
    return isinstance(config, dict) and bool(config.get("do_reduce_labels", config.get("reduce_labels")))


def _walk(value: Any):
    """Every dict inside a JSON value."""
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def mmdeploy(folder: Path) -> Found:
    found = Found()
    for name in (MM_PIPELINE, MM_DEPLOY):
        path = folder / name
        if not path.is_file():
            continue
        for item in _walk(_load(path)):
            if item.get("reduce_zero_label") is True:  # mmseg's LoadAnnotations: HF's reduce_labels
                found.reduce_labels = True
            names = item.get("classes")
            if found.classes is None and isinstance(names, list) and names and all(isinstance(n, str) for n in names):
                found.classes, found.classes_from = tuple(names), f"{name} (classes)"
            if item.get("type") == "Normalize" and found.mean is None:
                mean = _triple(item.get("mean"), path, "Normalize mean")
                std = _triple(item.get("std"), path, "Normalize std")
                if min(std) <= 0:
                    raise UsageError(f"{path}: Normalize std must be positive (got {list(std)})")
                rgb = bool(item.get("to_rgb", False))
                if not rgb:  # listed in the network's order, B,G,R
                    mean, std = mean[::-1], std[::-1]
                found.mean = (mean[0] / 255, mean[1] / 255, mean[2] / 255)
                found.std = (std[0] / 255, std[1] / 255, std[2] / 255)
                found.channel_order = "RGB" if rgb else "BGR"
                found.normalization_from = f"{name} (Normalize, to_rgb {str(rgb).lower()})"
    return found


def read_beside(source: Path) -> Found:
    """Class names and normalization from the configs beside ``source`` (none found: all None)."""
    folder = Path(source).parent
    found = mmdeploy(folder)
    if (folder / HF_CONFIG).is_file():
        names = hf_classes(folder / HF_CONFIG)
        if names is not None:
            found.classes, found.classes_from = names, f"{HF_CONFIG} (id2label)"
    processor = hf_processor(folder)
    if processor is not None:
        found.mean, found.std, notes = hf_normalization(processor)
        found.reduce_labels = hf_reduce_labels(processor)
        found.channel_order = "RGB"
        found.normalization_from = f"{processor.name} (image_mean, image_std, rescale_factor)"
        found.notes += notes
    if found.classes is not None:
        found.notes.insert(0, f"classes: {len(found.classes)} from {found.classes_from}")
    if found.mean is not None:
        found.notes.insert(1 if found.classes else 0, f"normalization from {found.normalization_from}")
    return found
