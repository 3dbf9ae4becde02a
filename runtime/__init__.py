"""segtool's runtime: exported ONNX models -> labels and pictures, with numpy, ONNX Runtime,
OpenCV and Pillow only (no torch, torchvision or onnx import anywhere under this package)."""

from .errors import (
    DeviceError,
    InputError,
    ModelError,
    OutputError,
    ParityError,
    SegtoolError,
    UsageError,
    WeightsError,
)
from .imagefiles import atomic_write_bytes, read_image
from .jobs import JobOptions, iter_images, run_sources, segment_image, segment_video
from .metadata import ModelMetadata
from .outputs import Painter
from .segmenter import Segmenter
from .sources import expand
from .visualize import blend, class_shares, colorize
from .voc import VOC_CLASSES, voc_colormap

__all__ = [
    "Segmenter",
    "ModelMetadata",
    "Painter",
    "VOC_CLASSES",
    "voc_colormap",
    "JobOptions",
    "segment_image",
    "segment_video",
    "run_sources",
    "iter_images",
    "expand",
    "read_image",
    "atomic_write_bytes",
    "colorize",
    "blend",
    "class_shares",
    "SegtoolError",
    "UsageError",
    "InputError",
    "OutputError",
    "ModelError",
    "DeviceError",
    "WeightsError",
    "ParityError",
]
