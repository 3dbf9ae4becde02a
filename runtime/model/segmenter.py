"""``Segmenter``: one exported model, ready to turn images into label maps.

It owns the ONNX Runtime session and everything the file's metadata says about the model;
data flows one way through it: image array -> normalized tensor -> output -> uint8 labels.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path

import numpy as np
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from segtool.runtime.errors import DeviceError, InputError, ModelError, OutOfMemory, SegtoolError
from segtool.runtime.model.metadata import OUTPUT_LABELS, ModelMetadata
from segtool.runtime.model.postprocess import argmax_channels, resize_labels, resize_logits
from segtool.runtime.model.prefetch import prefetch
from segtool.runtime.model.preprocess import Normalizer, resize_for_inference, to_uint8_3ch
from segtool.runtime.model.runner import Size
from segtool.runtime.model.session import CPU, create_session
from segtool.runtime.model.tiling import segment_tiled

log = logging.getLogger(__name__)

# ONNX Runtime's own error classes (Fail, InvalidArgument, RuntimeException, EPFail, ...) derive from
# Exception, not RuntimeError: every one of them is caught by name.
ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    cls for cls in vars(ort_state).values() if isinstance(cls, type) and issubclass(cls, Exception)
)
SESSION_ERRORS: tuple[type[BaseException], ...] = (*ORT_ERRORS, RuntimeError, MemoryError)
_DEVICE_ERRORS = tuple(getattr(ort_state, name) for name in ("EPFail", "DeviceReset") if hasattr(ort_state, name))
# A failed allocation for one input (std::bad_alloc, the CPU or CUDA arena, cudaErrorMemoryAllocation) is that
# input's failure: a smaller one goes through.
_ALLOCATION = re.compile(r"bad_alloc|bad allocation|failed to allocate|out of memory|MemoryAllocation", re.I)
_DEVICE = re.compile(r"cuda|cudnn|cublas|tensorrt|execution provider", re.I)


def inference_error(exc: BaseException, shape: tuple[int, ...], provider: str) -> SegtoolError:
    """An exception from a session's run -> ``InputError`` when the input is at fault (wrong rank, type
    or size, or too large for memory), else ``DeviceError`` (the execution provider or GPU) or
    ``ModelError`` (a node that fails): a fault of the model or the device, never blamed on the input."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    size = "x".join(map(str, shape))
    if isinstance(exc, MemoryError) or _ALLOCATION.search(str(exc)):
        return OutOfMemory(f"inference ran out of memory on a {size} input ({first})")
    if isinstance(exc, ort_state.InvalidArgument):
        return InputError(f"inference failed on a {size} input ({first})")
    if isinstance(exc, _DEVICE_ERRORS) or _DEVICE.search(str(exc)):
        return DeviceError(f"{provider} failed during inference on a {size} input ({first}): a fault of the "
                           "device, not of the input")  # fmt: skip
    return ModelError(f"the model failed during inference on a {size} input ({first}): a fault of the model, "
                      "not of the input")  # fmt: skip


class Segmenter:
    """Run an exported segtool model.

    >>> seg = Segmenter("models/fcn_resnet50.onnx")          # device="auto": CUDA if it starts, else CPU
    >>> labels = seg.segment(cv2.imread("street.jpg"))       # HxW uint8 class indices, BGR input
    >>> seg.meta.classes[labels[0, 0]], seg.provider
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        warn_random: bool = True,
        cache: bool = False,
    ):
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"model {path} not found")
        try:
            engines = str(path.parent / ".segtool-trt-cache") if cache else None  # TensorRT engine/timing cache
            self.session, self.provider = create_session(str(path), device, threads, cache_dir=engines, cache=cache)
        except SegtoolError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: not a usable ONNX model ({first})") from None
        self.path = path
        self.meta = ModelMetadata.from_session(self.session, str(path))
        self.input_name = self.session.get_inputs()[0].name
        self.normalize = Normalizer(self.meta.mean, self.meta.std, self.meta.channel_order)
        self.output_name = self.session.get_outputs()[0].name
        # A graph made elsewhere may take one size only (exported without dynamic axes): every image
        # is resized to it, and batches are cut to its batch size.
        shape = self.session.get_inputs()[0].shape
        fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
        self.fixed_batch: int | None = fixed[0]
        self.fixed_size: Size | None = (fixed[3], fixed[2]) if fixed[2] and fixed[3] else None  # (width, height)
        # On a GPU, IO binding lets ONNX Runtime place the output itself and copy it to the host once.
        self.io_binding = self.provider != CPU
        if warn_random and self.meta.random_weights:
            log.warning(
                "%s holds %s: its labels are meaningless (for tests and benchmarks only)", path, self.meta.weights_label
            )
        if self.meta.precision == "fp16" and self.provider == CPU:
            log.warning(
                "%s is an fp16 model meant for GPU providers; on the CPU it runs slower than fp32 "
                "(use an fp32 or int8 export there)",
                path,
            )

    def prepare(
        self, images: list[np.ndarray], color: str = "bgr", max_size: int | None = None, size: Size | None = None
    ) -> np.ndarray:
        """Equally sized images (any layout ``to_uint8_3ch`` takes) -> [N, 3, h, w] model input,
        at inference resolution (``size`` = (width, height), or long side <= ``max_size``; a graph
        that takes one size only gets that size)."""
        size = self.fixed_size or size
        ready = [resize_for_inference(to_uint8_3ch(im, color), max_size, size) for im in images]
        return self.normalize(ready, color)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Model output for a prepared batch at the batch's own height and width: logits [N, C, H, W]
        or labels [N, H, W]. A graph whose output is smaller (stride 4 or 8, as SegFormer-style
        networks give) has its logits upsampled bilinearly before any argmax, as torchvision's
        models do inside the graph, or its labels with nearest neighbours."""
        output = self.forward(tensor)
        height, width = tensor.shape[2:]
        if self.meta.output == OUTPUT_LABELS:
            if output.shape[1:] == (height, width):
                return output
            return np.stack([resize_labels(one.astype(np.uint8), height, width) for one in output])
        return resize_logits(output, height, width)

    def forward(self, tensor: np.ndarray) -> np.ndarray:
        """The graph's own output for a prepared batch (at its own resolution), cut into the graph's
        batch size when it has a fixed one."""
        step = self.fixed_batch
        if step is None or tensor.shape[0] == step:
            return self._session_run(tensor)
        parts = []
        for start in range(0, tensor.shape[0], step):
            chunk = tensor[start : start + step]
            filled = len(chunk)
            if filled < step:  # the last chunk, padded with copies of its last image
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - filled, axis=0)])
            parts.append(self._session_run(np.ascontiguousarray(chunk))[:filled])
        return np.concatenate(parts)

    def _session_run(self, tensor: np.ndarray) -> np.ndarray:
        try:
            if not self.io_binding:
                return self.session.run([self.output_name], {self.input_name: tensor})[0]
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, tensor)
            binding.bind_output(self.output_name)
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        except SESSION_ERRORS as exc:
            raise inference_error(exc, tensor.shape, self.provider) from exc

    def labels_at(self, output: np.ndarray, height: int, width: int) -> list[np.ndarray]:
        """Model output for a batch -> one uint8 label map per image, at (height, width)."""
        labels = output.astype(np.uint8, copy=False) if self.meta.output == OUTPUT_LABELS else argmax_channels(output)
        return [resize_labels(one, height, width) for one in labels]

    def segment_batch(
        self, images: list[np.ndarray], color: str = "bgr", max_size: int | None = None, size: Size | None = None
    ) -> list[np.ndarray]:
        """Label maps for equally sized images, at their own resolution."""
        h, w = np.asarray(images[0]).shape[:2]
        return self.labels_at(self.run(self.prepare(images, color, max_size, size)), h, w)

    def segment(
        self,
        image: np.ndarray,
        color: str = "bgr",
        max_size: int | None = None,
        size: Size | None = None,
        tile: int | None = None,
    ) -> np.ndarray:
        """HxW uint8 class indices for one image (BGR by default, as OpenCV reads files).

        ``max_size`` caps the long side used for inference, or ``size`` = (width, height) sets it;
        labels come back at the image's size. ``tile`` runs overlapping tile x tile windows when the
        inference resolution is larger (``segtool.runtime.model.tiling``), for images too big for memory;
        a graph that takes one size only is never tiled (it always infers at that size).
        """
        if tile and not self.fixed_size:
            ready = resize_for_inference(to_uint8_3ch(image, color), max_size, size)
            if max(ready.shape[:2]) > tile:
                height, width = np.asarray(image).shape[:2]
                return resize_labels(segment_tiled(self, ready, color, tile), height, width)
        return self.segment_batch([image], color, max_size, size)[0]

    def segment_stream(
        self,
        frames: Iterable[np.ndarray],
        color: str = "bgr",
        max_size: int | None = None,
        size: Size | None = None,
        batch: int = 1,
    ) -> Generator[tuple[np.ndarray, np.ndarray], None, None]:
        """(frame, labels) for each frame of any iterable, in order.

        Frames are grouped into batches of ``batch`` equally sized frames, and decoding plus
        preprocessing of the next group runs on a background thread while the model works.
        """

        def prepared(group: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
            return group, self.prepare(group, color, max_size, size)

        for group, tensor in prefetch(_groups(frames, batch), prepared):
            h, w = group[0].shape[:2]
            yield from zip(group, self.labels_at(self.run(tensor), h, w))


def _groups(frames: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    """Consecutive frames of one shape, at most ``size`` per group."""
    group: list[np.ndarray] = []
    for frame in frames:
        if group and (len(group) == size or frame.shape != group[0].shape):
            yield group
            group = []
        group.append(frame)
    if group:
        yield group
