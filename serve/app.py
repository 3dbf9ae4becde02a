"""The FastAPI application: ``create_app(model, settings)``; mount it in any ASGI server.

Routes: ``POST /v1/segment`` (an encoded image in; JSON, a label PNG, a mask or an overlay
out), ``POST /v1/segment-video`` (a short video in, the overlay as H.264 MP4 out), the KServe
v2 / Triton HTTP protocol under ``/v2`` (health, metadata, ``infer`` with JSON or binary
tensors), ``GET /metrics`` (Prometheus) and ``GET /`` (a page to try the model). The server
never fetches a URL or opens a path named in a request: images and videos arrive in the body.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from segtool.runtime import Segmenter
from segtool.runtime.errors import InputError, ModelError
from segtool.runtime.jobs import DEFAULT_LONG_SIDE

from .metrics import Metrics
from .routes_kserve import kserve_router
from .routes_segment import segment_router
from .schema import errors
from .worker import InferenceWorker, Overloaded, Stopped, TurnEngine

HEALTH = ("/v2/health/live", "/v2/health/ready")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    name: str | None = None  # model name in the v2 protocol (default: the file's segtool.model)
    max_queue: int = 8  # requests that may wait for the worker; beyond: 503
    max_body_mb: float = 32.0  # larger bodies: 413
    max_pixels: int = 40_000_000  # larger images or tensors: 400
    api_key: str | None = None  # bearer token required on everything but the health routes
    max_size: int = DEFAULT_LONG_SIDE  # /v1/segment infers with this long side unless the request says (0: full)
    max_video_frames: int = 250  # /v1/segment-video: longer videos get 413
    budget_mp: float = 600.0  # most megapixels one request may have computed (frames x pixels); beyond: 413
    deadline_s: float = 60.0  # a request not done this long after its body was read is stopped: 503 (0: none)


class Service:
    """What the routes share: the model, its worker, the settings and the metrics."""

    def __init__(self, seg: Segmenter, settings: ServeSettings):
        self.settings = settings
        self.name = settings.name or seg.meta.model
        self.worker = InferenceWorker(settings.max_queue, settings.deadline_s or None)
        # the same model and session, its calls taking the worker's turns and stopped with their request
        self.seg = copy.copy(seg)
        self.seg.engine = TurnEngine(seg.engine, self.worker.turn)
        self.metrics = Metrics()
        self.version = metadata.version("segtool")

    async def infer(self, fn, lane: str = "short", request: Request | None = None):
        """Run ``fn`` on the worker's ``lane``, timing it; ``Overloaded`` when the lane is full, ``Stopped``
        past the deadline or when the client of ``request`` goes away."""
        self.metrics.queue.set(self.worker.waiting)

        def timed():
            with self.metrics.in_progress.track_inprogress(), self.metrics.inference.time():
                return fn()

        try:
            return await self.worker.run(timed, lane, (lambda: disconnected(request)) if request else None)
        finally:
            self.metrics.queue.set(self.worker.waiting)

    async def body(self, request: Request) -> bytes:
        """The request body, refused with ``TooLarge`` past the limit (before reading it, if declared)."""
        limit = int(self.settings.max_body_mb * 1024 * 1024)
        declared = request.headers.get("content-length", "")
        # ASCII digits only: str.isdigit() takes "²", which int() refuses; anything else is left to the
        # HTTP server's framing, and the bytes that arrive are counted below either way
        if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            raise TooLarge(limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(limit)
            chunks.append(chunk)
        return b"".join(chunks)


async def disconnected(request: Request) -> None:
    """Returns when the client of ``request`` (its body read) goes away; never, if that cannot be seen."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # noqa: BLE001 - a receive that fails tells nothing about the client
        await asyncio.Event().wait()


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"request body over the {limit / 1024 / 1024:g} MB limit (--max-body-mb)")


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(
    model: str | Path | Segmenter, settings: ServeSettings = ServeSettings(), device: str = "auto"
) -> FastAPI:
    """The service for one model (a path or an open ``Segmenter``)."""
    seg = model if isinstance(model, Segmenter) else Segmenter(model, device=device)
    service = Service(seg, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # `segtool serve` stops the work still running at --drain-s (``stop_after``); inside another server,
        # it is stopped here. Off the event loop, and bounded: a call in flight is cut at its next node.
        await asyncio.to_thread(service.worker.close)

    app = FastAPI(title="segtool", version=service.version, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service
    app.include_router(segment_router(service))
    app.include_router(kserve_router(service))

    expected = f"Bearer {settings.api_key}".encode() if settings.api_key else b""

    @app.middleware("http")
    async def guard_and_count(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path
        # bytes, not str: compare_digest refuses non-ASCII str, and a header may hold any byte (Starlette
        # decodes headers as latin-1, so encoding back gives the bytes received)
        supplied = request.headers.get("authorization", "").encode("latin-1")
        if expected and path not in HEALTH and not hmac.compare_digest(supplied, expected):
            response: Response = error(401, "missing or wrong API key (Authorization: Bearer KEY)")
        else:
            try:
                response = await call_next(request)
            except TooLarge as exc:
                response = error(413, str(exc))
        route = getattr(request.scope.get("route"), "path", "unmatched")
        service.metrics.requests.labels(route, str(response.status_code)).inc()
        service.metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        service.metrics.rejected.inc()
        return error(503, "busy: the inference queue is full, retry shortly", {"Retry-After": "1"})

    @app.exception_handler(Stopped)
    async def stopped(request: Request, exc: Stopped):
        service.metrics.abandoned.labels(exc.reason).inc()
        if exc.reason == "client":  # nobody reads the answer: nginx's 499, as for a client gone mid-upload
            log.warning("%s %s: the client left; its work was stopped", request.method, request.url.path)
            return Response(status_code=499)
        if exc.reason == "shutdown":
            return error(503, "the server is shutting down: retry shortly", {"Retry-After": "1"})
        # 503, not 408: browsers send a request again by themselves after a 408, and this one would only
        # take as long again; no Retry-After either, for the same reason
        return error(503, f"deadline: the request was not done within {settings.deadline_s:g} s (--deadline-s) "
                          "and its work was stopped; ask for a smaller max_size, fewer frames (max_frames) or a "
                          "smaller image")  # fmt: skip

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError):
        return error(getattr(exc, "status", 400), str(exc))  # 413 for a video over --max-video-frames

    # A fault of the model or the device (a node that fails, a CUDA error; DeviceError is a ModelError) during a
    # request: 500, logged. Never 400, the request was fine; not 503 either, which here means "busy, retry shortly"
    # (the full queue, with Retry-After): a broken model or device does not pass with a retry, and someone must look.
    @app.exception_handler(ModelError)
    async def model_fault(request: Request, exc: ModelError):
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error(500, str(exc))

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge):
        return error(413, str(exc))

    # A client that goes away during its upload: one line, no traceback. Nobody reads the answer; its
    # status is nginx's 499 ("client closed request"), counted in the metrics like any other.
    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, exc: ClientDisconnect):
        log.warning("%s %s: the client left before its request body was read", request.method, request.url.path)
        return Response(status_code=499)

    # FastAPI's and Starlette's own refusals (422 for a query parameter, 400 for a broken multipart body,
    # 404, 405) in the same {"error": str} form; a 422 keeps FastAPI's "detail" list as well
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        detail = jsonable_encoder(exc.errors())
        where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in detail[:4])
        return JSONResponse({"error": f"invalid request: {where}", "detail": detail}, status_code=422)

    # A bug (an exception no handler above knows): still a JSON answer, and the traceback in the log.
    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.error("%s %s: unexpected %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
        return error(500, f"internal error ({type(exc).__name__})")

    keyed = errors(401) if settings.api_key else {}
    text: dict[int | str, dict[str, Any]] = {
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
    }

    @app.get("/metrics", response_class=Response, responses={**text, **keyed})
    def prometheus() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, responses=keyed)
    def page() -> str:
        return resources.files("segtool.serve").joinpath("page.html").read_text()

    return app
