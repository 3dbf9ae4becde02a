"""Opening a model from the command line, with a hint that names only commands and flags that exist."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from segtool.runtime.errors import ModelError

DEFAULT_MODEL = Path("models/fcn_resnet50.onnx")
T = TypeVar("T")


def missing_model_hint(path: Path, flag: str | None) -> str:
    """What to do about a model file that is not there."""
    others = sorted(path.parent.glob("*.onnx")) if path.parent.is_dir() else []
    if others and flag:
        return f"; models in {path.parent}/: {', '.join(p.name for p in others[:4])} (pass one with {flag} PATH)"
    return (
        f"; make it with `segtool export --output {path}` (pretrained weights need internet, or pass "
        "--weights CHECKPOINT), or run `segtool demo`, which falls back to random weights offline"
    )


def open_model(factory: Callable[..., T], path: Path, flag: str | None = "--model", **kwargs) -> T:
    """``factory(path, **kwargs)`` (a Segmenter), with the hint added when the file is missing."""
    if not Path(path).is_file():
        raise ModelError(f"model {path} not found" + missing_model_hint(Path(path), flag))
    return factory(path, **kwargs)
