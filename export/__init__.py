"""segtool's export stage (needs torch, torchvision, onnx): torchvision model -> verified ONNX file.

The names below load lazily, so the model table (``segtool.export.models``) can be read without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ExportConfig
    from .pipeline import ExportResult, build_graph, export_model

__all__ = ["export_model", "build_graph", "ExportConfig", "ExportResult"]
_HOMES = {
    "ExportConfig": ".config",
    "ExportResult": ".pipeline",
    "build_graph": ".pipeline",
    "export_model": ".pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
