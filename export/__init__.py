"""segtool's export stage (needs torch, torchvision, onnx): torchvision model -> verified ONNX file."""

from .config import ExportConfig
from .pipeline import ExportResult, build_graph, export_model

__all__ = ["export_model", "build_graph", "ExportConfig", "ExportResult"]
