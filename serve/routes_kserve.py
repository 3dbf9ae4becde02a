"""The KServe v2 / Open Inference Protocol routes, as Triton Inference Server serves them over HTTP.

Input ``image``: FP32 [N, 3, H, W], normalized RGB (what the ONNX file takes); output: the
file's own output (``logits`` FP32 [N, C, H, W] or ``labels`` UINT8 [N, H, W]). Code written
against these routes (e.g. with ``tritonclient.http``) works unchanged against a Triton server
that serves the same ONNX file.

A request is parsed, run and its response built on the inference worker (a body over
``INLINE_BYTES`` is parsed there too), never on the event loop: a 30 MB JSON response takes
seconds to write, and the health routes must answer meanwhile.
"""

# no `from __future__ import annotations`: FastAPI reads the route signatures, whose Annotated path
# parameters are local to kserve_router (the schema names the one model served)
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from segtool.runtime.errors import InputError

from .budget import OverBudget
from .protocol import (
    HEADER,
    NAMES,
    binary_outputs,
    decimal_header,
    encode_response,
    output_values,
    parse_request,
    requested_outputs,
)
from .schema import errors, infer_openapi, infer_responses

INLINE_BYTES = 64 * 1024  # smaller bodies are parsed (and refused, if malformed) on the event loop at once
MAX_JSON_VALUES = 16_000_000  # a larger output only as binary data (as JSON it would take ~300 MB and a minute)


def _dims(shape) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def kserve_router(service) -> APIRouter:
    router = APIRouter(prefix="/v2")
    seg = service.seg
    graph_in, graph_out = seg.session.get_inputs()[0], seg.session.get_outputs()[0]
    labels_out = seg.meta.output == "labels"
    out_type = "UINT8" if labels_out else "FP32"
    model_metadata = {
        "name": service.name, "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": graph_in.name, "datatype": "FP32", "shape": _dims(graph_in.shape)}],
        "outputs": [{"name": graph_out.name, "datatype": out_type, "shape": _dims(graph_out.shape)}],
        "parameters": {"segtool.classes": list(seg.meta.classes), "segtool.weights": seg.meta.weights_label,
                       "segtool.random_weights": seg.meta.random_weights},
    }  # fmt: skip
    # the schema names the one model and version served; any other answers 404
    Name = Annotated[str, Path(json_schema_extra={"enum": [service.name]})]
    Version = Annotated[str, Path(json_schema_extra={"enum": ["1"]})]
    keyed: dict[int | str, dict[str, Any]] = errors(401) if service.settings.api_key else {}  # not on health
    unknown = {**errors(404), **keyed}

    def known(name: str, version: str | None = None) -> JSONResponse | None:
        if name != service.name or version not in (None, "", "1"):
            return JSONResponse({"error": f"unknown model {name!r} (serving {service.name!r}, version 1)"}, 404)
        return None

    @router.get("", responses=keyed)
    async def server_metadata():
        return {"name": "segtool", "version": service.version, "extensions": ["binary_tensor_data"]}

    @router.get("/health/live")
    async def live():
        return {"live": True}

    @router.get("/health/ready")
    async def ready():
        return {"ready": True}

    @router.get("/models/{name}", responses=unknown)
    async def get_model_metadata(name: Name):
        return known(name) or model_metadata

    @router.get("/models/{name}/versions/{version}", responses=unknown)
    async def get_version_metadata(name: Name, version: Version):
        return known(name, version) or model_metadata

    @router.get("/models/{name}/ready", responses=unknown)
    async def model_ready(name: Name):
        return known(name) or {"name": name, "ready": True}

    @router.get("/models/{name}/versions/{version}/ready", responses=unknown)
    async def version_ready(name: Name, version: Version):
        return known(name, version) or {"name": name, "ready": True}

    async def infer(name: str, request: Request, version: str | None = None):
        if missing := known(name, version):
            return missing
        body = await service.body(request)
        length = decimal_header(request.headers.get(HEADER), HEADER)

        def prepare() -> tuple[dict, np.ndarray, set[str]]:
            parsed, tensors = parse_request(body, length)
            tensor = check_image(tensors, graph_in.name, service.settings.max_pixels, service.settings.budget_mp)
            wanted = [o["name"] for o in requested_outputs(parsed)]
            if any(n != graph_out.name for n in wanted):
                raise InputError(f"unknown output requested: {wanted[:4]} (this model has {graph_out.name!r})")
            binary = binary_outputs(parsed, [graph_out.name])
            values = output_values(tensor.shape, len(seg.meta.classes), labels_out)
            if graph_out.name not in binary and values > MAX_JSON_VALUES:
                raise InputError(f"the output would hold {values:,} values, over the {MAX_JSON_VALUES:,} a JSON "
                                 "response may carry: ask for it as binary data")  # fmt: skip
            return parsed, np.ascontiguousarray(tensor, dtype=np.float32), binary

        def work(prepared: tuple[dict, np.ndarray, set[str]] | None) -> tuple[bytes, int | None]:
            parsed, tensor, binary = prepared or prepare()
            result = seg.forward(tensor)  # the graph's own output, as Triton would answer (no upsampling)
            result = result.astype(np.uint8) if labels_out else result.astype(np.float32, copy=False)
            return encode_response(service.name, "1", {graph_out.name: result}, binary, parsed.get("id"))

        prepared = prepare() if len(body) <= INLINE_BYTES else None
        content, header = await service.infer(lambda: work(prepared), "short", request)
        headers = {HEADER: str(header)} if header is not None else {}
        media = "application/octet-stream" if header is not None else "application/json"
        return Response(content, media_type=media, headers=headers)

    extra = infer_openapi(service.name, graph_in.name, graph_out.name)
    responses = {**infer_responses(), **keyed}

    @router.post("/models/{name}/infer", openapi_extra=extra, responses=responses)
    async def model_infer(name: Name, request: Request):
        return await infer(name, request)

    @router.post("/models/{name}/versions/{version}/infer", openapi_extra=extra, responses=responses)
    async def version_infer(name: Name, version: Version, request: Request):
        return await infer(name, request, version)

    return router


def check_image(tensors: dict[str, np.ndarray], name: str, max_pixels: int, budget_mp: float = 0.0) -> np.ndarray:
    """The one input the model takes: FP32 [N, 3, H, W], within the pixel limit and the compute budget."""
    if set(tensors) != {name}:
        raise InputError(f"this model takes exactly one input named {name!r} (got {sorted(tensors)[:4]})")
    tensor = tensors[name]
    if NAMES[tensor.dtype] != "FP32":
        raise InputError(f"input {name} must be FP32 (got {NAMES[tensor.dtype]})")
    if tensor.ndim != 4 or tensor.shape[1] != 3 or min(tensor.shape) < 1:
        raise InputError(f"input {name} must be [N, 3, H, W] with N, H, W >= 1 (got {list(tensor.shape)})")
    n, _, h, w = tensor.shape
    if n * h * w > max_pixels:
        raise InputError(f"input {name}: {n}x{h}x{w} pixels is over the {max_pixels:,} limit (--max-pixels)")
    if budget_mp and n * h * w > budget_mp * 1e6:
        raise OverBudget(f"input {name}: {n}x{h}x{w} pixels is {n * h * w / 1e6:.1f} MP of work, over the "
                         f"{budget_mp:g} MP budget of a request (--budget-mp)")  # fmt: skip
    return tensor
