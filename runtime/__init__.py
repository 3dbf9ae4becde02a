"""segtool's runtime: exported ONNX models -> labels and pictures, with numpy, ONNX Runtime and
OpenCV only (no torch, torchvision or onnx import anywhere under this package)."""

from .errors import SegtoolError
from .imagefiles import atomic_write_bytes, read_image
from .metadata import ModelMetadata
from .segmenter import Segmenter
from .visualize import blend, class_shares, colorize
from .voc import VOC_CLASSES, voc_colormap

__all__ = [
    "Segmenter", "ModelMetadata", "SegtoolError", "VOC_CLASSES", "voc_colormap",
    "read_image", "atomic_write_bytes", "colorize", "blend", "class_shares",
]
