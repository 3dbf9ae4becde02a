"""``POST /v1/segment``: an encoded image in the body (raw ``image/*`` or the multipart field
``image``); out comes JSON (classes, shares, size, timings, model identity), the paletted label
PNG that `segtool run` writes, the colour mask PNG, or the overlay JPEG."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from segtool.runtime.errors import InputError
from segtool.runtime.files.pictures import Painter
from segtool.runtime.jobs import JobOptions, process

from .schema import errors, segment_openapi, segment_responses

Output = Literal["json", "labels", "mask", "overlay"]
MEDIA = {"labels": "image/png", "mask": "image/png", "overlay": "image/jpeg"}


async def image_bytes(service, request: Request) -> bytes:
    body = await service.body(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        request._body = body  # parse what was read under the size limit  # noqa: SLF001
        form = await request.form()
        field = form.get("image")
        if field is None or isinstance(field, str):
            raise InputError('multipart body without a file field named "image"')
        return await field.read()
    return body


def segment_router(service) -> APIRouter:
    router = APIRouter()
    seg, meta = service.seg, service.seg.meta

    keyed = errors(401) if service.settings.api_key else {}

    @router.post("/v1/segment", openapi_extra=segment_openapi(), responses={**segment_responses(), **keyed})
    async def segment(
        request: Request,
        output: Output = "json",
        max_size: Annotated[int | None, Query(ge=0, le=8192)] = None,  # None: --max-size; 0: full resolution
        alpha: Annotated[float, Query(ge=0.0, le=1.0)] = 0.5,
        images: bool = False,
    ):
        received = time.perf_counter()
        data = await image_bytes(service, request)
        kinds = {"json": ("mask", "overlay") if images else (), "labels": ("labels",), "mask": ("mask",),
                 "overlay": ("overlay",)}[output]  # fmt: skip
        painter = Painter(meta, alpha)

        def work():
            started = time.perf_counter()
            long_side = service.settings.max_size if max_size is None else max_size
            options = JobOptions(max_size=long_side or None, alpha=alpha, max_pixels=service.settings.max_pixels)
            done = process(seg, data, options, painter=painter, kinds=kinds)  # decoded as `segtool run` does
            encoded = {kind: painter.encode(kind, picture) for kind, picture in done.pictures.items()}
            return done, encoded, (time.perf_counter() - started) * 1000

        done, encoded, work_ms = await service.infer(work)
        if output != "json":
            return Response(encoded[output], media_type=MEDIA[output])
        index = {name: k for k, name in enumerate(meta.classes)}
        body = {
            "model": meta.model, "weights": meta.weights_label, "random_weights": meta.random_weights,
            "provider": seg.provider, "width": done.width, "height": done.height, "verified": meta.verified,
            "classes": [{"name": name, "index": index[name], "share": share,
                         "color": [int(c) for c in meta.palette[index[name]]]} for name, share in done.classes.items()],
            "timings_ms": {"segment": round(done.seconds * 1000, 2), "worker": round(work_ms, 2),
                           "total": round((time.perf_counter() - received) * 1000, 2)},
        }  # fmt: skip
        for kind, blob in encoded.items():
            body[kind] = f"data:{MEDIA[kind]};base64,{base64.b64encode(blob).decode()}"
        return JSONResponse(body)

    return router
