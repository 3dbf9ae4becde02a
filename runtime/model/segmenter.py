"""``Segmenter``: one exported model, ready to turn images into label maps.

It owns the engine that runs the file (ONNX Runtime, or OpenVINO for ``--device openvino...``;
``segtool.runtime.model.engines``) and everything the file's metadata says about the model;
data flows one way through it: image array -> normalized tensor -> output -> uint8 labels.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segtool.runtime.errors import DeviceError, ModelError, SegtoolError, UsageError
from segtool.runtime.model.choice import Choice, Policy, cache_dir, choose, file_sha256, int8_warning
from segtool.runtime.model.engines import (
    AGREEMENT_TARGET,
    DEVICE_FORMAT,
    GATE_SIZE,
    OPENVINO_HARDWARE,
    ORT_DEVICES,
    Engine,
    OpenVinoEngine,
    OrtEngine,
    PrecisionCheck,
    gate_images,
    onnx_input_names,
    openvino_target,
    tensorrt_options,
    tensorrt_target,
)
from segtool.runtime.model.metadata import OUTPUT_LABELS, ModelMetadata
from segtool.runtime.model.postprocess import argmax_channels, resize_labels, resize_logits
from segtool.runtime.model.prefetch import prefetch
from segtool.runtime.model.preprocess import Normalizer, resize_for_inference, to_uint8_3ch
from segtool.runtime.model.runner import Size
from segtool.runtime.model.session import CPU, create_session
from segtool.runtime.model.tiling import segment_tiled

log = logging.getLogger(__name__)


def open_engine(path: Path, device: str = "auto", threads: int | None = None, cache: bool = False) -> Engine:
    """The engine for ``device``: OpenVINO for ``openvino[:HARDWARE[:PRECISION]]``, else ONNX Runtime
    (``auto``: CUDA when it really starts, else the CPU). ``cache`` keeps compiled work beside the
    model: ORT's optimized CPU graph, TensorRT engines, OpenVINO's compiled blobs."""
    target = openvino_target(device)
    if target is not None:
        return OpenVinoEngine(path, target, threads, str(path.parent / ".segtool-ov-cache") if cache else None)
    trt = tensorrt_target(device)
    if trt is not None:  # engines and timings cached: beside the model with cache, else in the user's cache folder
        folder = path.parent / ".segtool-trt-cache" if cache else cache_dir() / "tensorrt" / file_sha256(path)[:16]
        folder.mkdir(parents=True, exist_ok=True)
        name = onnx_input_names(path)[0] if trt.profile else "image"  # the profile names the image input
        options = tensorrt_options(trt, name, str(folder))
        session, provider = create_session(str(path), "tensorrt", threads, str(folder), cache, trt_options=options)
        fp32 = lambda: OrtEngine(*create_session(str(path), "cuda", threads))  # noqa: E731  # the gate's reference
        return OrtEngine(session, provider, "fp16" if trt.fp16 else None, fp32)
    if device not in ORT_DEVICES:
        raise UsageError(f"unknown device {device!r}: choose one of {', '.join(ORT_DEVICES)} or {DEVICE_FORMAT}")
    engines = str(path.parent / ".segtool-trt-cache") if cache else None  # TensorRT engine/timing cache
    return OrtEngine(*create_session(str(path), device, threads, cache_dir=engines, cache=cache))


class Segmenter:
    """Run an exported segtool model.

    >>> seg = Segmenter("models/fcn_resnet50.onnx")          # device="auto": CUDA if it starts, else CPU
    >>> labels = seg.segment(cv2.imread("street.jpg"))       # HxW uint8 class indices, BGR input
    >>> seg.meta.classes[labels[0, 0]], seg.provider

    ``device="openvino"`` (or ``openvino:GPU``, ``openvino:NPU``) compiles the same file with OpenVINO,
    in f32; ``openvino:CPU:bf16`` or ``openvino:GPU:f16`` compute in a reduced precision, accepted only
    when its labels agree with f32 on ``AGREEMENT_TARGET`` of the pixels (``precision_check``).
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        warn_random: bool = True,
        cache: bool = False,
        policy: Policy | None = None,
    ):
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"model {path} not found")
        self.choice: Choice | None = None  # what --device auto chose and why (segtool.runtime.model.choice)
        try:
            if device == "auto":
                self.engine, self.choice = choose(path, threads, cache, policy or Policy(), open_engine)
            else:
                self.engine = open_engine(path, device, threads, cache)
        except SegtoolError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: not a usable ONNX model ({first})") from None
        self.path = path
        self.provider = self.engine.provider
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
        self.precision_check: PrecisionCheck | None = None
        if self.engine.reduced:
            recorded = self.choice.check if self.choice else None  # auto: the file's record stands for the gate
            target = policy.min_agreement if policy else AGREEMENT_TARGET
            self.precision_check = recorded or self._check_precision(device, target)
            self.provider = f"{self.engine.provider} ({self.precision_check.agreement:.2%} f32 agreement)"
        if warn_random and self.meta.random_weights:
            log.warning(
                "%s holds %s: its labels are meaningless (for tests and benchmarks only)", path, self.meta.weights_label
            )
        if warning := int8_warning(self.meta, path):
            log.warning("%s", warning)
        if self.meta.precision == "fp16" and self.provider == CPU:
            log.warning(
                "%s is an fp16 model meant for GPU providers; on the CPU it runs slower than fp32 "
                "(use an fp32 or int8 export there)",
                path,
            )

    @property
    def session(self) -> Any:
        """The graph as ONNX Runtime describes it (``get_inputs()``, ``get_outputs()``, ``get_modelmeta()``):
        ONNX Runtime's session itself, or the OpenVINO engine's description of the same file."""
        return self.engine.session

    @session.setter
    def session(self, value: Any) -> None:
        self.engine.session = value

    @property
    def io_binding(self) -> bool:
        """ONNX Runtime on a GPU: the output placed by ORT and copied to the host once."""
        return bool(getattr(self.engine, "io_binding", False))

    @io_binding.setter
    def io_binding(self, value: bool) -> None:
        self.engine.io_binding = value  # type: ignore[attr-defined]  # ONNX Runtime's engine only

    def _check_precision(self, device: str, target: float | None = None) -> PrecisionCheck:
        """The agreement gate: labels in the engine's reduced precision against f32 on generated images;
        a ``DeviceError`` with the figure when they agree on less than ``target`` (``AGREEMENT_TARGET``)
        of the pixels."""
        reference = self.engine.reference()
        size = self.fixed_size or GATE_SIZE
        tensors = [self.prepare([image], size=size) for image in gate_images(size)]
        same = [np.mean(self._labels(self.forward(t)) == self._labels(self.forward(t, reference))) for t in tensors]
        check = PrecisionCheck(
            str(self.engine.reduced),
            float(np.mean(same)),
            target or AGREEMENT_TARGET,
            len(tensors),
            size,
            reference.provider,
        )
        if not check.passed:
            ov = openvino_target(device)
            family = ov.family if ov else "CPU"
            f32 = f"openvino:{family}" if OPENVINO_HARDWARE[family].default == "f32" else "openvino:CPU"
            f32 = f32 if ov or not tensorrt_target(device) else "tensorrt"
            raise DeviceError(f"device {device!r} refused: {check.describe()}; use --device {f32} for f32")
        log.warning("%s on %s: %s", self.path, self.engine.provider, check.describe())
        return check

    def _labels(self, output: np.ndarray) -> np.ndarray:
        return output.astype(np.uint8, copy=False) if self.meta.output == OUTPUT_LABELS else argmax_channels(output)

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

    def forward(self, tensor: np.ndarray, engine: Engine | None = None) -> np.ndarray:
        """The graph's own output for a prepared batch (at its own resolution), cut into the graph's
        batch size when it has a fixed one; on ``engine`` when given (the gate's f32 reference)."""
        step = self.fixed_batch
        if step is None or tensor.shape[0] == step:
            return self._run_once(tensor, engine)
        parts = []
        for start in range(0, tensor.shape[0], step):
            chunk = tensor[start : start + step]
            filled = len(chunk)
            if filled < step:  # the last chunk, padded with copies of its last image
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - filled, axis=0)])
            parts.append(self._run_once(np.ascontiguousarray(chunk), engine)[:filled])
        return np.concatenate(parts)

    def _run_once(self, tensor: np.ndarray, engine: Engine | None) -> np.ndarray:
        """One engine call; labels [N, 1, H, W] (mmdeploy's layout) come back as [N, H, W]."""
        output = (engine or self.engine).run(tensor)
        if self.meta.output == OUTPUT_LABELS and output.ndim == 4:
            return output[:, 0]
        return output

    def labels_at(self, output: np.ndarray, height: int, width: int) -> list[np.ndarray]:
        """Model output for a batch -> one uint8 label map per image, at (height, width)."""
        return [resize_labels(one, height, width) for one in self._labels(output)]

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
