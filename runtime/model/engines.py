"""Inference engines behind ``Segmenter``: one small class per runtime, one tiny interface.

An engine holds one ``.onnx`` file opened on one device and offers:

- ``session``: the graph described as ONNX Runtime's ``InferenceSession`` describes it
  (``get_modelmeta().custom_metadata_map``; ``get_inputs()`` / ``get_outputs()`` with ``.name``,
  ``.shape``, ``.type`` such as "tensor(float)"), so the metadata checks, the KServe route and the
  Triton config read every engine alike;
- ``provider``: what runs it, for people ("CPUExecutionProvider", "OpenVINO CPU f32");
- ``reduced``: the precision it computes in when lower than the file's (bf16, f16), else None;
  ``Segmenter`` accepts such an engine only after the agreement gate (``AGREEMENT_TARGET``);
- ``run(tensor)``: the first output for a float32 [N, 3, H, W] batch; every failure is a typed
  segtool error (``InputError``/``OutOfMemory`` for the input, ``ModelError``/``DeviceError`` otherwise).

``OrtEngine`` wraps an ONNX Runtime session (provider choice and its proof: ``session.py``).
``OpenVinoEngine`` compiles the same file with OpenVINO (``pip install 'segtool[openvino]'``) for
Intel CPUs, GPUs and NPUs: no second artifact. What each OpenVINO device computes in is data
(``OPENVINO_HARDWARE``), not conditions spread over the code.
"""

from __future__ import annotations

import importlib
import mmap
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from segtool.runtime.errors import DeviceError, InputError, ModelError, OutOfMemory, SegtoolError, UsageError
from segtool.runtime.model.external import _varint
from segtool.runtime.model.metadata import PREFIX
from segtool.runtime.model.session import CPU, CUDA
from segtool.runtime.model.session import TENSORRT as TENSORRT_PROVIDER

#: A reduced precision (bf16, f16) is used only when its labels agree with f32 on at least this share of pixels.
AGREEMENT_TARGET = 0.99
GATE_IMAGES = 3  # generated images the gate compares on, at GATE_SIZE (width, height) unless the graph fixes one
GATE_SIZE = (320, 240)

ORT_DEVICES = ("auto", "cpu", "cuda", "tensorrt")
GPU_PROVIDERS = (CUDA, TENSORRT_PROVIDER)  # outputs stay on the device until copied to the host once
OPENVINO = "openvino"


class Engine(Protocol):
    session: Any  # get_modelmeta(), get_inputs(), get_outputs() as ONNX Runtime's InferenceSession has them
    provider: str
    reduced: str | None

    def run(self, tensor: np.ndarray) -> np.ndarray: ...

    def reference(self) -> Engine:
        """The same file computed in f32, for the agreement gate (the engine itself when it is f32)."""
        ...


# ONNX Runtime -------------------------------------------------------------------------------------

# ONNX Runtime's own error classes (Fail, InvalidArgument, RuntimeException, EPFail, ...) derive from
# Exception, not RuntimeError: every one of them is caught by name.
ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    cls for cls in vars(ort_state).values() if isinstance(cls, type) and issubclass(cls, Exception)
)
SESSION_ERRORS: tuple[type[BaseException], ...] = (*ORT_ERRORS, RuntimeError, MemoryError)
# How ONNX Runtime reports a failed run, by class (1.31; measured on the CPU, the GPU cases from its source):
# - an input of the wrong rank, size or type: InvalidArgument;
# - an allocation that fails: MemoryError on the Python side; std::bad_alloc in a kernel (segtool runs without
#   the CPU arena) is RuntimeException "std::bad_alloc"; an arena that cannot grow (the CPU's, CUDA's) is Fail
#   "Failed to allocate memory for requested buffer of size N": ONNX Runtime has no class of its own for it;
# - an execution provider's own failure (TensorRT's): EPFail; a GPU that was reset: DeviceReset;
# - a failing CUDA, cuDNN or cuBLAS call inside a kernel: Fail "CUDA failure N: ..." (no class of its own either).
# The class decides wherever there is one; only Fail, RuntimeException (anything a kernel throws) and a plain
# RuntimeError are told apart by the allocator's and the GPU libraries' own words.
_GENERIC = (ort_state.Fail, ort_state.RuntimeException, RuntimeError)
_DEVICE_ERRORS = tuple(getattr(ort_state, name) for name in ("EPFail", "DeviceReset") if hasattr(ort_state, name))
_ALLOCATION = re.compile(r"bad_alloc|bad allocation|failed to allocate|out of memory|MemoryAllocation", re.I)
_GPU_LIBRARY = re.compile(r"\b(cuda|cudnn|cublas|curand|cufft)\b", re.I)


def _first_line(exc: BaseException, skip: tuple[str, ...] = ()) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith(skip)]
    return (lines or [type(exc).__name__])[0][:160]


def inference_error(exc: BaseException, shape: tuple[int, ...], provider: str) -> SegtoolError:
    """An exception from a session's run -> ``InputError`` when the input is at fault (wrong rank, type
    or size, or too large for memory), else ``DeviceError`` (the execution provider or GPU) or
    ``ModelError`` (a node that fails): a fault of the model or the device, never blamed on the input."""
    first, size = _first_line(exc), "x".join(map(str, shape))
    generic = isinstance(exc, _GENERIC)
    if isinstance(exc, ort_state.InvalidArgument):
        return InputError(f"inference failed on a {size} input ({first})")
    if isinstance(exc, MemoryError) or (generic and _ALLOCATION.search(str(exc))):
        return OutOfMemory(f"inference ran out of memory on a {size} input ({first})")
    if isinstance(exc, _DEVICE_ERRORS) or (generic and _GPU_LIBRARY.search(str(exc))):
        return DeviceError(
            f"{provider} failed during inference on a {size} input ({first}): a fault of the device, not of the input"
        )
    return ModelError(
        f"the model failed during inference on a {size} input ({first}): a fault of the model, not of the input"
    )


class OrtEngine:
    """An ONNX Runtime session (made by ``session.create_session``, which proves its provider started).

    On a GPU, IO binding copies a frame once each way: the input in (``bind_cpu_input``), the output left
    on the device where ONNX Runtime allocates it (``bind_output(name, "cuda")``; a labels-output file's
    ArgMax has run there, so only uint8 labels cross) and copied to the host once (``copy_outputs_to_cpu``).
    """

    name = "onnxruntime"

    def __init__(self, session: Any, provider: str, reduced: str | None = None, reference: Any = None):
        self.session, self.provider = session, provider
        self.reduced = reduced  # fp16 for TensorRT asked to build fp16 engines (tensorrt:fp16), else None
        self._reference = reference  # opens the same file in fp32, for the agreement gate of a reduced one
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.io_binding = provider != CPU

    def run(self, tensor: np.ndarray) -> np.ndarray:
        try:
            if not self.io_binding:
                return self.session.run([self.output_name], {self.input_name: tensor})[0]
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, tensor)
            binding.bind_output(self.output_name, "cuda" if self.provider in GPU_PROVIDERS else "cpu")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        except SESSION_ERRORS as exc:
            raise inference_error(exc, tensor.shape, self.provider) from exc

    def reference(self) -> OrtEngine:
        return self._reference() if self.reduced and self._reference else self


# TensorRT -----------------------------------------------------------------------------------------

TENSORRT = "tensorrt"
TENSORRT_FORMAT = "tensorrt[:fp16][:MIN,OPT,MAX] (WIDTHxHEIGHT or BATCHxWIDTHxHEIGHT each)"


@dataclass(frozen=True)
class TrtTarget:
    fp16: bool = False
    profile: tuple[tuple[int, int, int], ...] = ()  # (batch, height, width) for min, opt, max; () = TensorRT's own


def _profile_shape(text: str, device: str) -> tuple[int, int, int]:
    try:
        values = [int(v) for v in text.lower().split("x")]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or min(values) < 1:
        raise UsageError(f"device {device!r}: {text!r} is not WIDTHxHEIGHT or BATCHxWIDTHxHEIGHT ({TENSORRT_FORMAT})")
    batch, width, height = values if len(values) == 3 else [1, *values]
    return batch, height, width


def tensorrt_target(device: str) -> TrtTarget | None:
    """``tensorrt[:fp16][:MIN,OPT,MAX]`` -> what to build TensorRT engines for; None for another device.
    One size fixes the profile (min = opt = max); two are min and max (opt = max); three min, opt, max."""
    parts = device.split(":")
    if parts[0].lower() != TENSORRT:
        return None
    fp16 = False
    profile: tuple[tuple[int, int, int], ...] = ()
    for part in parts[1:]:
        if part.lower() == "fp16" and not fp16:
            fp16 = True
        elif part and not profile:
            shapes = [_profile_shape(s, device) for s in part.split(",")]
            if len(shapes) > 3:
                raise UsageError(f"device {device!r}: at most three sizes, min, opt and max ({TENSORRT_FORMAT})")
            profile = tuple(shapes) if len(shapes) == 3 else (shapes[0], shapes[-1], shapes[-1])
            if any(a > b for low, high in zip(profile, profile[1:]) for a, b in zip(low, high)):
                raise UsageError(f"device {device!r}: the sizes must grow from min to opt to max ({TENSORRT_FORMAT})")
        else:
            raise UsageError(f"unknown device {device!r}: TensorRT devices are written {TENSORRT_FORMAT}")
    return TrtTarget(fp16, profile)


def with_profile(device: str, size: tuple[int, int] | None, batch: int = 1) -> str:
    """``device`` with a TensorRT profile for ``size`` = (width, height) when it is ``tensorrt[:fp16]``
    without one: batches 1 to ``batch`` at that size, so the engine is built once for what `run --size`
    runs. Any other device, or no size, unchanged."""
    target = tensorrt_target(device)
    if target is None or target.profile or size is None:
        return device
    width, height = size
    return f"{device}:1x{width}x{height},{batch}x{width}x{height}"  # a smaller last batch fits too


def tensorrt_options(target: TrtTarget, input_name: str, cache_folder: str) -> dict[str, object]:
    """TensorRT's provider options (ONNX Runtime's TensorRT EP documentation): fp16 or not, an explicit
    optimization profile for the image input when one is given (``trt_profile_{min,opt,max}_shapes``,
    "name:NxCxHxW"; the engine cache checks it and rebuilds when it changes), and the engine and timing
    caches in ``cache_folder``, so engines are built once per model, GPU and TensorRT."""
    options: dict[str, object] = {
        "trt_fp16_enable": target.fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache_folder,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache_folder,
    }
    for which, (batch, height, width) in zip(("min", "opt", "max"), target.profile):
        options[f"trt_profile_{which}_shapes"] = f"{input_name}:{batch}x3x{height}x{width}"
    return options


# OpenVINO -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hardware:
    """One kind of OpenVINO device: the precision segtool computes in unless asked, and the reduced
    precisions one may ask for, each with the OPTIMIZATION_CAPABILITIES entry that shows the device has it."""

    default: str
    reduced: dict[str, str] = field(default_factory=dict)


# OpenVINO's CPU plugin computes in bf16 by default where the CPU has it, and its GPU plugin in f16:
# segtool asks for f32 (INFERENCE_PRECISION_HINT) unless a reduced precision is named and passes the gate.
OPENVINO_HARDWARE = {
    "CPU": Hardware("f32", {"bf16": "BF16", "f16": "FP16"}),
    "GPU": Hardware("f32", {"f16": "FP16"}),
    "NPU": Hardware("f16"),  # NPUs compute in f16: always behind the gate
}
DEVICE_FORMAT = "openvino[:CPU|GPU|GPU.N|NPU[:f32|bf16|f16]]"


@dataclass(frozen=True)
class OvTarget:
    hardware: str  # OpenVINO's device name: CPU, GPU, GPU.1, NPU
    precision: str  # f32, bf16, f16

    @property
    def family(self) -> str:
        return self.hardware.split(".")[0]

    @property
    def device(self) -> str:
        """The --device spelling."""
        default = OPENVINO_HARDWARE[self.family].default
        return f"{OPENVINO}:{self.hardware}" + (f":{self.precision}" if self.precision != default else "")


def openvino_target(device: str) -> OvTarget | None:
    """``openvino[:HARDWARE[:PRECISION]]`` -> what to compile for (``openvino`` alone: the CPU);
    None for a device of ONNX Runtime's; ``UsageError`` for a spelling that means nothing."""
    parts = device.split(":")
    if parts[0].lower() != OPENVINO:
        return None
    hardware = (parts[1] if len(parts) > 1 and parts[1] else "CPU").upper()
    family = hardware.split(".")[0]
    if len(parts) > 3 or family not in OPENVINO_HARDWARE:
        raise UsageError(f"unknown device {device!r}: OpenVINO devices are written {DEVICE_FORMAT}")
    kind = OPENVINO_HARDWARE[family]
    precision = parts[2].lower() if len(parts) > 2 else kind.default
    if precision != kind.default and precision not in kind.reduced:
        offered = ", ".join([kind.default, *kind.reduced])
        raise UsageError(f"device {device!r}: OpenVINO's {family} computes in {offered} (got {precision!r})")
    return OvTarget(hardware, precision)


def import_openvino() -> Any:
    """The ``openvino`` package, or a ``DeviceError`` saying how to install it."""
    try:
        return importlib.import_module("openvino")
    except ImportError as exc:
        raise DeviceError(f"OpenVINO devices need the openvino package: pip install 'segtool[openvino]' "
                          f"({exc})") from None  # fmt: skip


def offered_precisions(core: Any, hardware: str) -> list[str]:
    """The precisions ``hardware`` can compute in: its default, and each reduced one its capabilities list."""
    kind = OPENVINO_HARDWARE[hardware.split(".")[0]]
    capabilities = set(core.get_property(hardware, "OPTIMIZATION_CAPABILITIES"))
    return [kind.default] + [p for p, needs in kind.reduced.items() if needs in capabilities]


@dataclass(frozen=True)
class Port:
    """An input or output as ONNX Runtime's NodeArg gives it (what ``graph_problems`` reads)."""

    name: str
    shape: list[int | None]  # None for a dimension the graph leaves open
    type: str  # "tensor(float)", ...


@dataclass(frozen=True)
class _ModelMeta:
    custom_metadata_map: dict[str, str]


@dataclass(frozen=True)
class GraphView:
    """A graph described the way ONNX Runtime's ``InferenceSession`` describes it."""

    metadata: dict[str, str]
    inputs: list[Port]
    outputs: list[Port]

    def get_modelmeta(self) -> _ModelMeta:
        return _ModelMeta(self.metadata)

    def get_inputs(self) -> list[Port]:
        return self.inputs

    def get_outputs(self) -> list[Port]:
        return self.outputs


# OpenVINO's element type names -> ONNX Runtime's type strings
_OV_TYPES = {"f32": "float", "f16": "float16", "bf16": "bfloat16", "f64": "double", "u8": "uint8", "i8": "int8",
             "u16": "uint16", "i16": "int16", "i32": "int32", "u32": "uint32", "i64": "int64", "u64": "uint64",
             "boolean": "bool"}  # fmt: skip


def _port(port: Any) -> Port:
    shape = port.get_partial_shape()
    dims = [] if shape.rank.is_dynamic else [d.get_length() if d.is_static else None for d in shape]
    kind = port.get_element_type().get_type_name()
    return Port(port.get_any_name(), dims, f"tensor({_OV_TYPES.get(kind, kind)})")


def _fields(buf, pos: int = 0, end: int | None = None):
    """(number, wire type, field start, payload start, field end) of each field of one protobuf
    message, skipping every payload by its length."""
    end = len(buf) if end is None else end
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            payload = pos
        elif wire in (1, 5):
            payload = pos
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length, payload = _varint(buf, pos)
            pos = payload + length
        else:
            raise ValueError(f"wire type {wire}")
        if pos > end:
            raise ValueError("field runs past its message")
        yield number, wire, start, payload, pos


def _entry(buf, payload: int, end: int) -> tuple[str, str]:
    """A StringStringEntryProto's (key, value)."""
    entry = {n: bytes(buf[at:stop]).decode("utf-8") for n, w, _, at, stop in _fields(buf, payload, end) if w == 2}
    return entry.get(1, ""), entry.get(2, "")


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` (ModelProto field 14, key/value entries), read from its bytes:
    one pass over the top-level fields, skipping the graph by its length. No onnx package needed."""
    props: dict[str, str] = {}
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            for number, wire, _, payload, end in _fields(buf):
                if number == 14 and wire == 2:
                    key, value = _entry(buf, payload, end)
                    props[key] = value
    except (OSError, ValueError, IndexError) as exc:
        raise ModelError(f"{path}: its metadata cannot be read ({exc})") from None
    return props


def onnx_input_names(path: str | Path) -> list[str]:
    """The graph's input names (GraphProto field 11, less those that are initializers, as files of
    IR < 4 list them), read from the file's bytes; ``ModelError`` for a file that is not ONNX."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            graph = next((p, e) for n, w, _, p, e in _fields(buf) if n == 7 and w == 2)
            names: list[str] = []
            initializers: set[str] = set()
            for number, wire, _, payload, end in _fields(buf, *graph):
                if number in (5, 11) and wire == 2:  # TensorProto (name: 8) or ValueInfoProto (name: 1)
                    field = 8 if number == 5 else 1
                    name = next(
                        (bytes(buf[a:b]).decode() for n, _, _, a, b in _fields(buf, payload, end) if n == field), ""
                    )
                    (initializers.add(name) if number == 5 else names.append(name))
    except (OSError, ValueError, IndexError, StopIteration) as exc:
        raise ModelError(f"{path}: its graph cannot be read ({exc or 'no graph'})") from None
    return [n for n in names if n not in initializers]


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def with_metadata(data: bytes, props: dict[str, str]) -> bytes:
    """An ONNX file's bytes with ``props`` set in its ``metadata_props``: entries under those keys are
    replaced, everything else kept byte for byte (no onnx package, no re-serialization of the graph)."""
    kept = []
    for number, wire, start, payload, end in _fields(data):
        if number == 14 and wire == 2 and _entry(data, payload, end)[0] in props:
            continue
        kept.append(data[start:end])
    for key, value in props.items():
        kept.append(_length_field(14, _length_field(1, key.encode()) + _length_field(2, value.encode())))
    return b"".join(kept)


def _text(value: Any) -> str:
    return value.astype(str) if hasattr(value, "astype") else str(value)


def openvino_metadata(model: Any, path: str | Path) -> dict[str, str]:
    """The file's metadata_props as OpenVINO read them: in its rt_info under "framework" (2024 and
    later) or at the top level (older); from the file's bytes if that OpenVINO kept none of segtool's."""
    info = model.get_rt_info()
    keys = list(info.keys())
    found: dict[str, str] = {}
    if "framework" in keys:
        framework = info["framework"]
        framework = getattr(framework, "value", framework)
        if isinstance(framework, dict):
            found.update((str(k), _text(v)) for k, v in framework.items())
    found.update((k, _text(info[k])) for k in keys if k.startswith(PREFIX))
    if not any(k.startswith(PREFIX) for k in found):
        return onnx_metadata(path)
    return found


_OV_NOISE = ("Exception from ", "Check '")  # OpenVINO's source locations before the message itself
# the input does not fit the model's input port (rank, channels, type); a node failing inside is the model's fault
_OV_INPUT = re.compile(r"ParameterMismatch|set the input tensor|set new shape|with new dims|model input", re.I)
_OV_DEVICE = re.compile(r"\bGPU\b|\bNPU\b|OpenCL|\bcl[A-Z]\w+|level.?zero|\bze[A-Z]\w+|device", re.I)


def openvino_error(exc: BaseException, shape: tuple[int, ...], provider: str) -> SegtoolError:
    """An exception from an OpenVINO inference -> the typed error (as ``inference_error`` for ONNX Runtime)."""
    first, size = _first_line(exc, _OV_NOISE), "x".join(map(str, shape))
    if isinstance(exc, MemoryError) or _ALLOCATION.search(str(exc)):
        return OutOfMemory(f"inference ran out of memory on a {size} input ({first})")
    if _OV_INPUT.search(str(exc)):
        return InputError(f"inference failed on a {size} input ({first})")
    if _OV_DEVICE.search(str(exc)):
        return DeviceError(f"{provider} failed during inference on a {size} input ({first}): a fault of the "
                           "device, not of the input")  # fmt: skip
    return ModelError(f"the model failed during inference on a {size} input ({first}): a fault of the model, "
                      "not of the input")  # fmt: skip


class OpenVinoEngine:
    """The file compiled by OpenVINO for one device, in f32 unless a reduced precision is asked for.

    Opening proves the device works: the file is compiled and a small input runs through it, so an
    explicit device that cannot start is a ``DeviceError`` here, never a silent fallback later.
    """

    name = OPENVINO

    def __init__(self, path: str | Path, target: OvTarget, threads: int | None = None, cache_dir: str | None = None):
        ov = import_openvino()
        core = ov.Core()
        self.path, self.target, self.threads = Path(path), target, threads
        available = list(core.available_devices)
        if target.hardware not in available and not any(d.startswith(target.hardware + ".") for d in available):
            instead = " or ".join([f"openvino:{d}" for d in available] + ["cpu"])
            raise DeviceError(f"device {target.device!r} is not available: OpenVINO {ov.__version__.split('-')[0]} "
                              f"sees {', '.join(available) or 'no device'} here (use --device {instead})")  # fmt: skip
        offered = offered_precisions(core, target.hardware)
        if target.precision not in offered:
            raise DeviceError(f"device {target.device!r}: this {target.hardware} cannot compute in {target.precision} "
                              f"(it offers {', '.join(offered)})")  # fmt: skip
        try:
            model = core.read_model(str(path))
        except Exception as exc:
            raise ModelError(f"{path}: not a usable ONNX model for OpenVINO ({_first_line(exc, _OV_NOISE)})") from None
        self.session = GraphView(
            openvino_metadata(model, path), [_port(p) for p in model.inputs], [_port(p) for p in model.outputs]
        )
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": target.precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads and target.family == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        if cache_dir:
            config["CACHE_DIR"] = cache_dir  # compiled blobs, reused when the file and OpenVINO are the same
        self.provider = f"OpenVINO {target.hardware} {target.precision}"
        self.reduced = target.precision if target.precision != "f32" else None
        try:
            self.compiled = core.compile_model(model, target.hardware, config)
            self.request = self.compiled.create_infer_request()
        except Exception as exc:
            raise DeviceError(f"OpenVINO could not compile {path} for {target.hardware} "
                              f"({_first_line(exc, _OV_NOISE)}); use --device cpu") from None  # fmt: skip
        self.lock = threading.Lock()  # one infer request: one inference at a time
        try:
            self.run(np.zeros(probe_shape(self.session.inputs[0].shape), np.float32))
        except SegtoolError as exc:
            raise DeviceError(f"device {target.device!r} compiled {path} but cannot run it ({exc})") from None

    def run(self, tensor: np.ndarray) -> np.ndarray:
        try:
            with self.lock:
                return self.request.infer({0: tensor}, share_inputs=True)[0]  # outputs are copies
        except (RuntimeError, MemoryError, TypeError, ValueError) as exc:
            raise openvino_error(exc, tensor.shape, self.provider) from exc

    def reference(self) -> OpenVinoEngine:
        """The same file on OpenVINO's CPU in f32: what the agreement gate compares a reduced precision with."""
        return OpenVinoEngine(self.path, OvTarget("CPU", "f32"), self.threads)


def probe_shape(dims: list) -> tuple[int, ...]:
    """A small input the graph takes: its fixed dimensions, 1 for an open batch, 64 for an open side."""
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
    defaults = (1, 3, 64, 64)
    return tuple(f or defaults[k] for k, f in enumerate(fixed[:4]))


# The agreement gate -------------------------------------------------------------------------------


def gate_images(size: tuple[int, int] | None = None, count: int = GATE_IMAGES) -> list[np.ndarray]:
    """``count`` HxWx3 uint8 pictures of smooth random colour blobs (BGR), at ``size`` (width, height)."""
    width, height = size or GATE_SIZE
    images = []
    for seed in range(count):
        coarse = np.random.default_rng(seed).integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), np.uint8)
        images.append(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC))
    return images


@dataclass(frozen=True)
class PrecisionCheck:
    """A reduced precision against f32 on the same inputs: the share of pixels with the same label."""

    precision: str
    agreement: float
    target: float
    images: int
    size: tuple[int, int]  # (width, height)
    reference: str  # what computed the f32 labels
    pixels: int = 0  # pixels compared (0: images x size)
    recorded: str | None = None  # the pictures of a figure read from the file's record, not measured now

    @property
    def passed(self) -> bool:
        return self.agreement >= self.target

    def describe(self) -> str:
        if self.recorded is not None:
            return (
                f"{self.precision} labels agree with f32 ({self.reference}) on {self.agreement:.2%} of "
                f"{self.pixels} pixels ({self.recorded}; recorded in the file; target {self.target:.2%})"
            )
        return (f"{self.precision} labels agree with f32 ({self.reference}) on {self.agreement:.2%} of pixels of "
                f"{self.images} generated {self.size[0]}x{self.size[1]} images (target {self.target:.0%})")  # fmt: skip


def openvino_variants() -> list[str]:
    """``--device`` spellings for every OpenVINO device here, in every precision it can compute in
    (f32 first); empty without the openvino package."""
    try:
        ov = import_openvino()
    except DeviceError:
        return []
    core = ov.Core()
    found = []
    for hardware in core.available_devices:
        if hardware.split(".")[0] in OPENVINO_HARDWARE:
            found += [OvTarget(hardware, p).device for p in offered_precisions(core, hardware)]
    return found
