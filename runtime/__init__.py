"""segtool's runtime: exported ONNX models -> labels and pictures, with numpy, ONNX Runtime,
OpenCV and Pillow only (no torch, torchvision or onnx import anywhere under this package)."""

import os

# OpenCV's and FFmpeg's own log lines would print beside segtool's one line per bad input: silence
# them before cv2 loads (set either variable yourself to see them again).
_QUIET_OPENCV = "OPENCV_LOG_LEVEL" not in os.environ
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

import cv2  # noqa: E402

if _QUIET_OPENCV:  # cv2 may have been imported before segtool, and read the variable then
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


from segtool.runtime.errors import (
    DeviceError,
    InputError,
    ModelError,
    OutputError,
    ParityError,
    SegtoolError,
    UsageError,
    WeightsError,
)
from segtool.runtime.files.colors import blend, class_shares, colorize
from segtool.runtime.files.images import atomic_write_bytes, read_image
from segtool.runtime.files.pictures import Painter
from segtool.runtime.files.sources import expand
from segtool.runtime.jobs import JobOptions, iter_images, run_sources, segment_image, segment_video
from segtool.runtime.model.metadata import ModelMetadata
from segtool.runtime.model.segmenter import Segmenter
from segtool.runtime.model.voc import VOC_CLASSES, voc_colormap

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
