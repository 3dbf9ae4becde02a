"""``Segmenter``: one exported model, ready to turn images into label maps.

It owns the ONNX Runtime session and everything the file's metadata says about the model;
data flows one way through it: image array -> normalized tensor -> output -> uint8 labels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .errors import SegtoolError
from .metadata import OUTPUT_LABELS, ModelMetadata
from .postprocess import argmax_channels, resize_labels
from .preprocess import Normalizer, resize_for_inference, to_uint8_3ch
from .session import CPU, create_session


class Segmenter:
    """Run an exported segtool model.

    >>> seg = Segmenter("models/fcn_resnet50.onnx")          # device="auto": CUDA if it starts, else CPU
    >>> labels = seg.segment(cv2.imread("street.jpg"))       # HxW uint8 class indices, BGR input
    >>> seg.meta.classes[labels[0, 0]], seg.provider
    """

    def __init__(self, model_path: str | Path, device: str = "auto", threads: int | None = None,
                 warn_random: bool = True, cache: bool = False):
        path = Path(model_path)
        if not path.is_file():
            raise SegtoolError(f"model {path} not found: create it with `segtool export` (or pass --model PATH)", 2)
        try:
            engines = str(path.parent / ".segtool-trt-cache") if cache else None  # TensorRT engine/timing cache
            self.session, self.provider = create_session(str(path), device, threads, cache_dir=engines, cache=cache)
        except SegtoolError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT raises several types for unreadable models
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise SegtoolError(f"{path}: not a usable ONNX model ({first})", 2) from None
        self.path = path
        self.meta = ModelMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, str(path))
        self.input_name = self.session.get_inputs()[0].name
        self.normalize = Normalizer(self.meta.mean, self.meta.std, self.meta.channel_order)
        self.output_name = self.session.get_outputs()[0].name
        # On a GPU, IO binding lets ONNX Runtime place the output itself and copy it to the host once.
        self.io_binding = self.provider != CPU
        if warn_random and self.meta.random_weights:
            print(f"segtool: warning: {path} holds {self.meta.weights_label}: its labels are meaningless "
                  "(for tests and benchmarks only)", file=sys.stderr)
        if self.meta.precision == "fp16" and self.provider == CPU:
            print(f"segtool: warning: {path} is an fp16 model meant for GPU providers; on the CPU it runs "
                  "slower than fp32 (use an fp32 or int8 export there)", file=sys.stderr)

    def prepare(self, images: list[np.ndarray], color: str = "bgr", max_size: int | None = None,
                size: tuple[int, int] | None = None) -> np.ndarray:
        """Equally sized images (any layout ``to_uint8_3ch`` takes) -> [N, 3, h, w] model input,
        at inference resolution (``size`` = (width, height), or long side <= ``max_size``)."""
        ready = [resize_for_inference(to_uint8_3ch(im, color), max_size, size) for im in images]
        return self.normalize(ready, color)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Raw model output for a prepared batch: logits [N, C, h, w] or labels [N, h, w]."""
        if not self.io_binding:
            return self.session.run(None, {self.input_name: tensor})[0]
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, tensor)
        binding.bind_output(self.output_name)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def labels_from_output(self, output: np.ndarray) -> np.ndarray:
        if self.meta.output == OUTPUT_LABELS:
            return output.astype(np.uint8, copy=False)
        return argmax_channels(output)

    def labels_at(self, output: np.ndarray, height: int, width: int) -> list[np.ndarray]:
        """Model output for a batch -> one label map per image, at (height, width)."""
        return [resize_labels(one, height, width) for one in self.labels_from_output(output)]

    def segment_batch(self, images: list[np.ndarray], color: str = "bgr", max_size: int | None = None,
                      size: tuple[int, int] | None = None) -> list[np.ndarray]:
        """Label maps for equally sized images, at their own resolution."""
        h, w = np.asarray(images[0]).shape[:2]
        return self.labels_at(self.run(self.prepare(images, color, max_size, size)), h, w)

    def segment(self, image: np.ndarray, color: str = "bgr", max_size: int | None = None,
                size: tuple[int, int] | None = None) -> np.ndarray:
        """HxW uint8 class indices for one image (BGR by default, as OpenCV reads files).

        ``max_size`` caps the long side used for inference, or ``size`` = (width, height) sets it;
        labels come back at the image's size.
        """
        return self.segment_batch([image], color, max_size, size)[0]

    def segment_video(self, source, max_size: int | None = None, size: tuple[int, int] | None = None,
                      batch: int = 1, max_frames: int | None = None):
        """Yield (frame, labels) for each frame of a video file, URL or camera index, in order.

        Decoding and preprocessing run on a background thread ahead of inference; see
        ``segtool.runtime.video``.
        """
        from .video import VideoSource, segment_frames

        with VideoSource(source) as video:
            yield from segment_frames(self, video.frames(max_frames), max_size=max_size, size=size, batch=batch)
