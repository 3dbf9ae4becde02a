"""The KServe v2 ("Open Inference Protocol") tensor encoding, as Triton's HTTP endpoint speaks it.

A request or response is a JSON header, optionally followed by raw tensor bytes (Triton's
binary-tensor extension): the header's length is then given in the
``Inference-Header-Content-Length`` HTTP header, and each binary tensor says its size in
``parameters.binary_data_size``, in order. Tensors are row-major, little-endian.

Everything a client sends is checked here and refused with ``InputError`` (400): shapes whose
element count does not fit (``10**23``), numbers no datatype holds, ``parameters`` that are not
objects, JSON nested past Python's recursion limit. Large tensors are converted and written in
steps of ``CHUNK`` values, so that the thread doing it lets the event loop run in between (a
health check stays fast while a large tensor is parsed or a large JSON response is built).

Non-finite numbers: ``NaN`` and ``Infinity`` are not JSON, and no image tensor holds them, so an
input tensor with a NaN or an infinity (JSON literals, or in binary data) is refused with 400.
An output is written as JSON numbers; should a model still produce a NaN or an infinity (finite
inputs that overflow float32, say), that value is written as the JSON string ``"NaN"``,
``"Infinity"`` or ``"-Infinity"``, so that the response stays valid JSON and
``np.array(data, dtype=np.float32)`` (what tritonclient's ``as_numpy`` does) reads it back as
the same value. Binary outputs carry the raw IEEE values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import NoReturn

import numpy as np

from segtool.runtime.errors import InputError

DTYPES = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8, "INT64": np.int64, "INT32": np.int32,
          "FP64": np.float64, "INT8": np.int8, "BOOL": np.bool_}  # fmt: skip
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
HEADER = "Inference-Header-Content-Length"
MAX_RANK = 16  # numpy itself stops at 64; no tensor here needs more than 4
MAX_DIM = 2**40  # a larger dimension cannot fit any body this server takes
CHUNK = 1 << 14  # values converted or written at a time (the event loop can run between two steps)
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # how a JSON output writes them


def decimal_header(value: str | None, name: str) -> int | None:
    """An HTTP header that must be a byte count: ASCII digits only. ``str.isdigit()`` also takes
    "²" or "٣", which ``int()`` refuses or reads as another number; ``InputError`` for those."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise InputError(f"{name} must be a decimal number of bytes (got {value[:40]!r})")
    return int(value)


def parse_request(body: bytes, header_length: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    """(request JSON, input name -> array) from a v2 infer body; ``InputError`` for anything malformed."""
    split = len(body) if header_length is None else header_length
    if not body:
        raise InputError("empty body: a v2 infer request is a JSON header (then binary tensors, if any)")
    if not 0 < split <= len(body):
        raise InputError(f"{HEADER} {header_length} does not fit a body of {len(body)} bytes")
    request = loads(body[:split])
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InputError('the request needs "inputs": a list of tensors')
    if "id" in request and not isinstance(request["id"], str):
        raise InputError('"id" must be a string')
    parameters(request, "the request")
    requested_outputs(request)
    tensors: dict[str, np.ndarray] = {}
    offset = split
    for spec in request["inputs"]:
        name, array, offset = _tensor(spec, body, offset)
        if name in tensors:
            raise InputError(f"input {name!r} is given twice")
        tensors[name] = array
    if offset != len(body):
        raise InputError(f"{len(body) - offset} bytes of binary data are not claimed by any input")
    return request, tensors


def loads(text: bytes) -> object:
    """JSON -> Python, refusing NaN/Infinity literals. The number hooks are Python functions on
    purpose: a thread running the C parser over megabytes of numbers holds the GIL for the whole
    call unless Python code runs now and then."""
    try:
        return json.loads(text, parse_float=_float, parse_int=_int, parse_constant=_constant)
    except RecursionError:
        raise InputError("the request header is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError; ints past Python's digit limit
        raise InputError(f"the request header is not JSON ({str(exc)[:200]})") from None


def _float(text: str) -> float:
    return float(text)


def _int(text: str) -> int:
    return int(text)


def _constant(text: str) -> NoReturn:
    raise InputError(f"{text} is not a JSON number: tensors must hold finite numbers")


def parameters(owner: dict, what: str) -> dict:
    """``owner["parameters"]``: absent or an object."""
    found = owner.get("parameters")
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise InputError(f'{what}: "parameters" must be an object')
    return found


def requested_outputs(request: dict) -> list[dict]:
    """The request's ``outputs``: absent, or a list of objects with a string name."""
    wanted = request.get("outputs")
    if wanted is None:
        return []
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted):
        raise InputError('"outputs" must be a list of objects with a "name"')
    for o in wanted:
        parameters(o, f"output {o['name']!r}")
    return wanted


def _shape(name: str, shape: object) -> list[int]:
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK and
            all(type(d) is int and 0 <= d <= MAX_DIM for d in shape)):  # fmt: skip
        raise InputError(f"input {name}: shape must be a list of at most {MAX_RANK} integers from 0 to {MAX_DIM}")
    return shape


def _tensor(spec: object, body: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InputError("each input needs a name, a shape, a datatype and data")
    name, dtype_name = spec["name"], spec.get("datatype")
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise InputError(f"input {name}: unknown datatype {str(dtype_name)[:40]!r} (one of {', '.join(DTYPES)})")
    shape = _shape(name, spec.get("shape"))
    dtype = np.dtype(DTYPES[dtype_name]).newbyteorder("<")
    count = math.prod(shape)  # a Python int: never wraps around
    size = parameters(spec, f"input {name}").get("binary_data_size")
    if size is not None:
        if type(size) is not int or size != count * dtype.itemsize or size > len(body) - offset:
            raise InputError(f"input {name}: binary_data_size {str(size)[:40]} does not match shape {shape} of "
                             f"{dtype_name} or the {len(body) - offset} bytes left in the body")  # fmt: skip
        array = np.frombuffer(body, dtype, count, offset).reshape(shape)
        _finite(name, array)
        return name, array, offset + size
    data = spec.get("data")
    if not isinstance(data, list):
        raise InputError(f"input {name}: data must be a list of {dtype_name} numbers (or binary_data_size)")
    array = _array(name, data, dtype, dtype_name)
    if array.size != count:
        raise InputError(f"input {name}: {array.size} values for shape {shape}")
    if array.ndim > 1 and list(array.shape) != shape:
        raise InputError(f"input {name}: nested data of shape {list(array.shape)} for shape {shape} (or send it flat)")
    array = array.reshape(shape)
    _finite(name, array)
    return name, array, offset


def _array(name: str, data: list, dtype: np.dtype, dtype_name: str) -> np.ndarray:
    """A JSON list -> array: flat lists in steps of ``CHUNK`` values, nested ones at once."""
    try:
        if data and isinstance(data[0], list):
            return np.asarray(data, dtype=dtype)
        array = np.empty(len(data), dtype)
        for start in range(0, len(data), CHUNK):
            array[start : start + CHUNK] = data[start : start + CHUNK]
        return array
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise InputError(f"input {name}: data is not a list of {dtype_name} numbers, or one does not fit "
                         f"{dtype_name}") from None  # fmt: skip


def _finite(name: str, array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"input {name}: NaN or infinity in the tensor (values must be finite)")


def output_values(shape: tuple[int, ...], classes: int, labels: bool) -> int:
    """How many values the model's output holds for an input of ``shape`` [N, 3, H, W]."""
    n, _, h, w = shape
    return n * h * w * (1 if labels else classes)


def encode_response(model: str, version: str, outputs: dict[str, np.ndarray], binary: set[str],
                    request_id: str | None = None) -> tuple[bytes, int | None]:  # fmt: skip
    """(body, JSON header length or None): outputs named in ``binary`` go as raw bytes after the JSON.

    Built in steps of ``CHUNK`` values (call it off the event loop: a large JSON output takes seconds)."""
    head: dict = {"model_name": model, "model_version": version}
    if request_id:
        head["id"] = request_id
    entries, blobs = [], []
    for name, array in outputs.items():
        entry: dict = {"name": name, "datatype": NAMES[array.dtype], "shape": list(array.shape)}
        if name in binary:
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
            entries.append(json.dumps(entry).encode())
        else:  # {"name": ..., "shape": [...], "data": [...]}
            entries.append(json.dumps(entry)[:-1].encode() + b', "data": [' + b",".join(_values(array)) + b"]}")
    header = json.dumps(head)[:-1].encode() + b', "outputs": [' + b", ".join(entries) + b"]}"
    return (header + b"".join(blobs), len(header)) if blobs else (header, None)


def _values(array: np.ndarray) -> Iterator[bytes]:
    """The array's values as JSON numbers, ``CHUNK`` at a time, non-finite ones as strings."""
    flat = array.reshape(-1)
    for start in range(0, flat.size, CHUNK):
        part = flat[start : start + CHUNK]
        values = part.tolist()
        if part.dtype.kind == "f" and not np.isfinite(part).all():
            values = [v if math.isfinite(v) else NON_FINITE[str(v)] for v in values]
        yield json.dumps(values, allow_nan=False)[1:-1].encode()


def binary_outputs(request: dict, output_names: list[str]) -> set[str]:
    """Which outputs the client wants as binary data (Triton's rules: per output, or all by default)."""
    wanted = requested_outputs(request)
    default = bool(parameters(request, "the request").get("binary_data_output", False))
    if not wanted:
        return set(output_names) if default else set()
    return {o["name"] for o in wanted if parameters(o, "output").get("binary_data", default)}
