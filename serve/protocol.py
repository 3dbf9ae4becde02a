"""The KServe v2 ("Open Inference Protocol") tensor encoding, as Triton's HTTP endpoint speaks it.

A request or response is a JSON header, optionally followed by raw tensor bytes (Triton's
binary-tensor extension): the header's length is then given in the
``Inference-Header-Content-Length`` HTTP header, and each binary tensor says its size in
``parameters.binary_data_size``, in order. Tensors are row-major, little-endian.
"""

from __future__ import annotations

import json

import numpy as np

from segtool.runtime.errors import InputError

DTYPES = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8, "INT64": np.int64, "INT32": np.int32,
          "FP64": np.float64, "INT8": np.int8, "BOOL": np.bool_}  # fmt: skip
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
HEADER = "Inference-Header-Content-Length"


def parse_request(body: bytes, header_length: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    """(request JSON, input name -> array) from a v2 infer body; ``InputError`` for anything malformed."""
    split = len(body) if header_length is None else header_length
    if not 0 < split <= len(body):
        raise InputError(f"{HEADER} {header_length} does not fit a body of {len(body)} bytes")
    try:
        request = json.loads(body[:split])
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"the request header is not JSON ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InputError('the request needs "inputs": a list of tensors')
    tensors, offset = {}, split
    for spec in request["inputs"]:
        name, array, offset = _tensor(spec, body, offset)
        tensors[name] = array
    if offset != len(body):
        raise InputError(f"{len(body) - offset} bytes of binary data are not claimed by any input")
    return request, tensors


def _tensor(spec: object, body: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InputError("each input needs a name, a shape, a datatype and data")
    name, dtype_name, shape = spec["name"], spec.get("datatype"), spec.get("shape")
    if dtype_name not in DTYPES:
        raise InputError(f"input {name}: unknown datatype {dtype_name!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise InputError(f"input {name}: shape must be a list of non-negative integers")
    dtype = np.dtype(DTYPES[dtype_name]).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * dtype.itemsize or offset + size > len(body):
            raise InputError(f"input {name}: binary_data_size {size} does not match shape {shape} of {dtype_name}")
        array = np.frombuffer(body, dtype, count, offset).reshape(shape)
        return name, array, offset + size
    try:
        array = np.asarray(spec.get("data"), dtype=dtype)
    except (TypeError, ValueError):
        raise InputError(f"input {name}: data is not a list of {dtype_name} numbers") from None
    if array.size != count:
        raise InputError(f"input {name}: {array.size} values for shape {shape}")
    return name, array.reshape(shape), offset


def encode_response(model: str, version: str, outputs: dict[str, np.ndarray], binary: set[str],
                    request_id: str | None = None) -> tuple[bytes, int | None]:  # fmt: skip
    """(body, JSON header length or None): outputs named in ``binary`` go as raw bytes after the JSON."""
    header: dict = {"model_name": model, "model_version": version, "outputs": []}
    if request_id:
        header["id"] = request_id
    blobs = []
    for name, array in outputs.items():
        entry: dict = {"name": name, "datatype": NAMES[array.dtype], "shape": list(array.shape)}
        if name in binary:
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel().tolist()
        header["outputs"].append(entry)
    head = json.dumps(header).encode()
    return (head + b"".join(blobs), len(head)) if blobs else (head, None)


def binary_outputs(request: dict, output_names: list[str]) -> set[str]:
    """Which outputs the client wants as binary data (Triton's rules: per output, or all by default)."""
    wanted = request.get("outputs")
    default = bool((request.get("parameters") or {}).get("binary_data_output", False))
    if not wanted:
        return set(output_names) if default else set()
    return {
        o["name"] for o in wanted if isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data", default)
    }
