"""``POST /v1/segment``: an encoded image in the body (raw ``image/*`` or the multipart field
``image``); out comes JSON (classes, shares, size, timings, model identity), the paletted label
PNG that `segtool run` writes, the colour mask PNG, or the overlay JPEG.

``POST /v1/segment-video``: a short video in the body (raw, or the multipart field ``video``),
bounded by the body limit, the pixel limit per frame and ``--max-video-frames`` (the request's
``max_frames`` takes the first frames only); out comes the overlay as H.264 MP4 (``+faststart``),
which browsers play. The upload is written to a private temporary folder for FFmpeg, opened only
with container demuxers that never follow a name inside the file, and removed when the answer is made.

Both are held to the compute budget (``budget.py``: 413 from the headers, before decoding) and run on
the worker's lanes (``worker.py``: images are not kept waiting behind a video; past the deadline, or
when the client leaves, the work is stopped)."""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from segtool.runtime.errors import InputError, OutputError, UnencodableSize
from segtool.runtime.files.pictures import Painter
from segtool.runtime.files.sources import VIDEO, Source
from segtool.runtime.files.video import refuse_unsafe_container
from segtool.runtime.files.video_settings import VideoOutput
from segtool.runtime.jobs import JobOptions, process

from . import budget
from .schema import errors, segment_openapi, segment_responses, video_openapi, video_responses
from .worker import LONG_MP

Output = Literal["json", "labels", "mask", "overlay"]
MEDIA = {"labels": "image/png", "mask": "image/png", "overlay": "image/jpeg"}


async def upload_bytes(service, request: Request, name: str = "image") -> bytes:
    """The raw body, or the multipart file field ``name``; read under the body limit either way."""
    body = await service.body(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        request._body = body  # parse what was read under the size limit  # noqa: SLF001
        form = await request.form()
        field = form.get(name)
        if field is None or isinstance(field, str):
            raise InputError(f'multipart body without a file field named "{name}"')
        return await field.read()
    return body


class FrameLimit(InputError):
    """A video longer than ``--max-video-frames``."""

    status = 413


def header_text(text: str) -> str:
    """A header value from any text (a model name from a file's metadata, FFmpeg's words): ASCII on
    one line, since a newline or control byte in a header fails the whole response."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split()).encode("ascii", "replace").decode()


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
        data = await upload_bytes(service, request, "image")
        long_side = service.settings.max_size if max_size is None else max_size
        pixels = budget.check_image(data, long_side or None, seg.fixed_size, service.settings.budget_mp)
        lane = "long" if pixels > LONG_MP * 1e6 else "short"
        kinds = {"json": ("mask", "overlay") if images else (), "labels": ("labels",), "mask": ("mask",),
                 "overlay": ("overlay",)}[output]  # fmt: skip
        painter = Painter(meta, alpha)

        def work():
            started = time.perf_counter()
            options = JobOptions(max_size=long_side or None, alpha=alpha, max_pixels=service.settings.max_pixels)
            done = process(seg, data, options, painter=painter, kinds=kinds)  # decoded as `segtool run` does
            try:
                encoded = {kind: painter.encode(kind, picture) for kind, picture in done.pictures.items()}
            except OutputError as exc:  # in memory, so only the picture's size can be at fault (JPEG: 65535 px)
                raise InputError(f"request body: {exc}; ask for output=labels or mask (PNG)") from None
            return done, encoded, (time.perf_counter() - started) * 1000

        done, encoded, work_ms = await service.infer(work, lane, request)
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

    @router.post("/v1/segment-video", openapi_extra=video_openapi(), responses={**video_responses(), **keyed})
    async def segment_video(
        request: Request,
        max_size: Annotated[int | None, Query(ge=0, le=8192)] = None,  # None: --max-size; 0: full resolution
        alpha: Annotated[float, Query(ge=0.0, le=1.0)] = 0.5,
        max_frames: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,  # only the first frames
    ):
        data = await upload_bytes(service, request, "video")
        if not data:
            raise InputError("request body: empty")
        limit = service.settings.max_video_frames
        first = max_frames if max_frames and max_frames <= limit else None  # else: the whole video, up to the limit
        long_side = service.settings.max_size if max_size is None else max_size
        folder = Path(tempfile.mkdtemp(prefix="segtool-upload-"))
        path = folder / "upload"

        def header() -> tuple[int, int, int | None]:
            path.write_bytes(data)
            refuse_unsafe_container(str(path), "request body")
            return budget.video_header(str(path))

        def work():
            try:
                options = JobOptions(video_kinds=("overlay",), video_max_size=long_side or None, alpha=alpha,
                                     max_pixels=service.settings.max_pixels, max_frames=first or limit + 1,
                                     video_output=VideoOutput(codec="h264"))  # fmt: skip
                done = process(seg, Source(VIDEO, str(path), "upload"), options, folder, Painter(meta, alpha))
                if done.frames > limit:
                    raise FrameLimit(f"request body: a video over {limit} frames (--max-video-frames)")
                return done, Path(done.outputs["overlay"]).read_bytes()
            except UnencodableSize as exc:  # the request's frame size, not the server, is at fault
                raise InputError(str(exc).replace(str(folder / "upload_overlay.mp4"), "the overlay")) from None
            finally:  # also when the request was answered already (stopped): the work cleans up after itself
                shutil.rmtree(folder, ignore_errors=True)

        try:
            width, height, frames = await asyncio.to_thread(header)
            if first is None and frames and frames > limit:
                raise FrameLimit(
                    f"request body: a video over {limit} frames (--max-video-frames): {frames} in its header"
                )
            budget.check_video(width, height, frames, first or limit, service.settings.max_pixels,
                               service.settings.budget_mp)  # fmt: skip
            done, video = await service.infer(work, "long", request)
        except InputError as exc:  # the temporary path is nobody's business
            raise type(exc)(str(exc).replace(str(path), "request body")) from None
        finally:  # a job that never ran (refused, queue full, stopped while waiting) leaves its upload here
            shutil.rmtree(folder, ignore_errors=True)
        headers = {
            "X-Segtool-Frames": str(done.frames), "X-Segtool-Model": header_text(meta.model),
            "X-Segtool-Weights": header_text(meta.weights_label),
            "X-Segtool-Random-Weights": "true" if meta.random_weights else "false",
        }  # fmt: skip
        if done.error:  # decoding stopped early: the frames before it are in the video
            headers["X-Segtool-Stopped-Early"] = header_text(done.error.replace(done.input, "request body"))[:300]
        return Response(video, media_type="video/mp4", headers=headers)

    return router
