"""What the OpenAPI schema (``/openapi.json``) says beyond what FastAPI infers: the error answers
(JSON ``{"error": str}``), the request bodies the routes read raw, and the tensor encodings.

An API fuzzer (tests/test_serve_schema.py runs Schemathesis) generates requests from this schema
and checks every answer against it, so it must say what the server does: the status codes, the
media types, the shapes of the JSON.
"""

from __future__ import annotations

from typing import Any

from .protocol import DTYPES, HEADER, NON_FINITE

ERROR: dict[str, Any] = {
    "type": "object", "title": "Error", "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what was wrong, in one line"}},
}  # fmt: skip
WHY = {
    400: "Malformed request: not an image, not a tensor this model takes, bad JSON, a limit passed",
    401: "Missing or wrong API key (Authorization: Bearer KEY)",
    404: "Unknown model or version",
    413: "Request body over the --max-body-mb limit, a video over --max-video-frames, or more work than the "
    "--budget-mp budget of a request (frames x pixels, from the headers, before decoding)",
    500: "A fault of the model or the device, not of the request",
    503: "Busy: the inference queue is full (retry after the Retry-After seconds), or the server is shutting down "
    "(Retry-After too); or the request was not done within --deadline-s and its work was stopped (no Retry-After: "
    "ask for less work)",
}
BINARY = {"type": "string", "format": "binary"}
DATATYPE = {"type": "string", "enum": list(DTYPES)}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for these status codes, each a JSON ``{"error": str}``."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"description": WHY[code], "content": {"application/json": {"schema": ERROR}}}
        if code == 503:
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
        out[code] = entry
    return out


def infer_openapi(model: str, input_name: str, output_name: str) -> dict[str, Any]:
    """``openapi_extra`` of the v2 infer routes: the request body (JSON, or JSON then binary tensors)
    and the binary-header parameter; the path parameters name the one model and version served."""
    tensor = {
        "type": "object", "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": DATATYPE,
            "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
            "data": {"type": "array", "items": {"type": "number"}},
        },
    }  # fmt: skip
    request = {
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "items": tensor},
            "outputs": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"},
                               "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}},
            }},
        },
    }  # fmt: skip
    example = {"inputs": [{"name": input_name, "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [0.5] * 12}],
               "outputs": [{"name": output_name}]}  # fmt: skip
    return {
        "parameters": [{
            "name": HEADER, "in": "header", "required": False, "schema": {"type": "integer", "minimum": 0},
            "description": "Length of the JSON header when binary tensors follow it (Triton's binary tensor extension)",
        }],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": request, "example": example},
            "application/octet-stream": {"schema": BINARY},
        }},
    }  # fmt: skip


def infer_responses() -> dict[int | str, dict[str, Any]]:
    number = {"anyOf": [{"type": "number"}, {"type": "string", "enum": list(NON_FINITE.values())}]}
    output = {
        "type": "object", "required": ["name", "datatype", "shape"],
        "properties": {"name": {"type": "string"}, "datatype": DATATYPE,
                       "shape": {"type": "array", "items": {"type": "integer"}},
                       "data": {"type": "array", "items": number}, "parameters": {"type": "object"}},
    }  # fmt: skip
    response = {
        "type": "object", "title": "InferResponse", "required": ["model_name", "model_version", "outputs"],
        "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                       "id": {"type": "string"}, "outputs": {"type": "array", "items": output}},
    }  # fmt: skip
    content = {"application/json": {"schema": response}, "application/octet-stream": {"schema": BINARY}}
    ok = {"description": "The output tensor: JSON, or a JSON header then binary tensors", "content": content}
    return {200: ok, **errors(400, 404, 413, 500, 503)}


def segment_openapi() -> dict[str, Any]:
    """``openapi_extra`` of ``POST /v1/segment``: the image, raw or as the multipart field ``image``."""
    raw = {"schema": BINARY}
    return {"requestBody": {"required": True, "content": {
        "image/jpeg": raw, "image/png": raw, "application/octet-stream": raw,
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {"image": BINARY}}},
    }}}  # fmt: skip


def segment_responses() -> dict[int | str, dict[str, Any]]:
    summary = {
        "type": "object", "title": "Segmentation",
        "required": ["model", "weights", "random_weights", "provider", "width", "height", "classes", "timings_ms"],
        "properties": {
            "model": {"type": "string"}, "weights": {"type": "string"}, "random_weights": {"type": "boolean"},
            "provider": {"type": "string"}, "width": {"type": "integer"}, "height": {"type": "integer"},
            "classes": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "index": {"type": "integer"}, "share": {"type": "number"},
                "color": {"type": "array", "items": {"type": "integer"}}}}},
            "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
            "mask": {"type": "string", "description": "data: URL of the colour mask PNG (images=true)"},
            "overlay": {"type": "string", "description": "data: URL of the overlay JPEG (images=true)"},
        },
    }  # fmt: skip
    ok = {"description": "JSON summary (output=json), label or mask PNG, or overlay JPEG",
          "content": {"application/json": {"schema": summary}, "image/png": {"schema": BINARY},
                      "image/jpeg": {"schema": BINARY}}}  # fmt: skip
    return {200: ok, **errors(400, 413, 500, 503)}


def video_openapi() -> dict[str, Any]:
    """``openapi_extra`` of ``POST /v1/segment-video``: the video, raw or as the multipart field ``video``."""
    raw = {"schema": BINARY}
    return {"requestBody": {"required": True, "content": {
        "video/mp4": raw, "video/webm": raw, "application/octet-stream": raw,
        "multipart/form-data": {"schema": {"type": "object", "required": ["video"], "properties": {"video": BINARY}}},
    }}}  # fmt: skip


def video_responses() -> dict[int | str, dict[str, Any]]:
    headers = {"X-Segtool-Frames": {"schema": {"type": "integer"}, "description": "frames segmented"},
               "X-Segtool-Random-Weights": {"schema": {"type": "string", "enum": ["true", "false"]}}}  # fmt: skip
    ok = {"description": "The overlay video, H.264 in MP4 (+faststart)", "content": {"video/mp4": {"schema": BINARY}},
          "headers": headers}  # fmt: skip
    return {200: ok, **errors(400, 413, 500, 503)}
