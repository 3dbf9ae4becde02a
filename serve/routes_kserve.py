"""The KServe v2 / Open Inference Protocol routes, as Triton Inference Server serves them over HTTP.

Input ``image``: FP32 [N, 3, H, W], normalized RGB (what the ONNX file takes); output: the
file's own output (``logits`` FP32 [N, C, H, W] or ``labels`` UINT8 [N, H, W]). Code written
against these routes (e.g. with ``tritonclient.http``) works unchanged against a Triton server
that serves the same ONNX file.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from segtool.runtime.errors import InputError

from .protocol import HEADER, NAMES, binary_outputs, encode_response, parse_request


def _dims(shape) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def kserve_router(service) -> APIRouter:
    router = APIRouter(prefix="/v2")
    seg = service.seg
    graph_in, graph_out = seg.session.get_inputs()[0], seg.session.get_outputs()[0]
    out_type = "UINT8" if seg.meta.output == "labels" else "FP32"
    model_metadata = {
        "name": service.name, "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": graph_in.name, "datatype": "FP32", "shape": _dims(graph_in.shape)}],
        "outputs": [{"name": graph_out.name, "datatype": out_type, "shape": _dims(graph_out.shape)}],
        "parameters": {"segtool.classes": list(seg.meta.classes), "segtool.weights": seg.meta.weights_label,
                       "segtool.random_weights": seg.meta.random_weights},
    }  # fmt: skip

    def known(name: str, version: str | None = None) -> JSONResponse | None:
        if name != service.name or version not in (None, "", "1"):
            return JSONResponse({"error": f"unknown model {name!r} (serving {service.name!r}, version 1)"}, 404)
        return None

    @router.get("")
    def server_metadata():
        return {"name": "segtool", "version": service.version, "extensions": ["binary_tensor_data"]}

    @router.get("/health/live")
    def live():
        return {"live": True}

    @router.get("/health/ready")
    def ready():
        return {"ready": True}

    @router.get("/models/{name}")
    @router.get("/models/{name}/versions/{version}")
    def get_model_metadata(name: str, version: str | None = None):
        return known(name, version) or model_metadata

    @router.get("/models/{name}/ready")
    @router.get("/models/{name}/versions/{version}/ready")
    def model_ready(name: str, version: str | None = None):
        return known(name, version) or {"name": name, "ready": True}

    @router.post("/models/{name}/infer")
    @router.post("/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None):
        if missing := known(name, version):
            return missing
        body = await service.body(request)
        length = request.headers.get(HEADER)
        if length is not None and not length.isdigit():
            raise InputError(f"{HEADER} must be a number")
        parsed, tensors = parse_request(body, int(length) if length else None)
        tensor = check_image(tensors, graph_in.name, service.settings.max_pixels)
        wanted = [o.get("name") for o in parsed.get("outputs") or [] if isinstance(o, dict)]
        if any(n != graph_out.name for n in wanted):
            raise InputError(f"unknown output requested: {wanted} (this model has {graph_out.name!r})")
        result = await service.infer(lambda: seg.run(np.ascontiguousarray(tensor, dtype=np.float32)))
        result = result.astype(np.uint8) if out_type == "UINT8" else result.astype(np.float32, copy=False)
        binary = binary_outputs(parsed, [graph_out.name])
        content, header = encode_response(service.name, "1", {graph_out.name: result}, binary, parsed.get("id"))
        headers = {HEADER: str(header)} if header is not None else {}
        media = "application/octet-stream" if header is not None else "application/json"
        return Response(content, media_type=media, headers=headers)

    return router


def check_image(tensors: dict[str, np.ndarray], name: str, max_pixels: int) -> np.ndarray:
    """The one input the model takes: FP32 [N, 3, H, W], within the pixel limit."""
    if set(tensors) != {name}:
        raise InputError(f"this model takes exactly one input named {name!r} (got {sorted(tensors)})")
    tensor = tensors[name]
    if NAMES[tensor.dtype] != "FP32":
        raise InputError(f"input {name} must be FP32 (got {NAMES[tensor.dtype]})")
    if tensor.ndim != 4 or tensor.shape[1] != 3 or min(tensor.shape) < 1:
        raise InputError(f"input {name} must be [N, 3, H, W] with N, H, W >= 1 (got {list(tensor.shape)})")
    n, _, h, w = tensor.shape
    if n * h * w > max_pixels:
        raise InputError(f"input {name}: {n}x{h}x{w} pixels is over the {max_pixels:,} limit (--max-pixels)")
    return tensor
