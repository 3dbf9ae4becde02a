"""`segtool serve`: the HTTP service (KServe v2 / Triton protocol, /v1/segment, /metrics, a page)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.runtime import Segmenter
from segtool.runtime.errors import UsageError
from segtool.runtime.jobs import DEFAULT_LONG_SIDE

from .common import Device, open_model, say

Opt = typer.Option


def serve(
    model: Annotated[Path, typer.Argument(help="Exported .onnx model.")],
    host: Annotated[str, Opt(help="Address to bind (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, Opt(min=0, max=65535, help="Port.")] = 8000,
    name: Annotated[Optional[str], Opt(help="Model name in the v2 protocol (default: from the file).")] = None,
    device: Device = "auto",
    max_queue: Annotated[int, Opt(min=0, help="Requests that may wait for inference; more get 503.")] = 8,
    max_body_mb: Annotated[float, Opt(min=0.001, help="Largest request body; larger get 413.")] = 32.0,
    max_pixels: Annotated[int, Opt(min=1, help="Largest image or tensor (N*H*W); larger get 400.")] = 40_000_000,
    max_size: Annotated[
        int,
        Opt(
            "--max-size",
            min=0,
            help="/v1/segment infers with this long side unless a request gives max_size; 0: full resolution.",
        ),
    ] = DEFAULT_LONG_SIDE,
    max_video_frames: Annotated[
        int, Opt(min=1, help="/v1/segment-video: most frames a video may have; longer get 413.")
    ] = 250,
    api_key: Annotated[Optional[str], Opt(envvar="SEGTOOL_API_KEY", help="Require Bearer KEY.")] = None,
    drain_s: Annotated[int, Opt(min=1, help="On SIGTERM: seconds to finish requests in flight.")] = 30,
):
    """Serve a model over HTTP until SIGTERM or Ctrl-C (then drain the requests in flight and exit 0)."""
    try:
        import uvicorn

        from segtool.serve import ServeSettings, create_app
    except ImportError as exc:
        raise UsageError(f"`segtool serve` needs FastAPI and uvicorn ({exc.name or exc}): "
                         "pip install 'segtool[serve]'") from None  # fmt: skip
    seg = open_model(Segmenter, model, device=device)
    settings = ServeSettings(name, max_queue, max_body_mb, max_pixels, api_key, max_size, max_video_frames)
    app = create_app(seg, settings)
    say(f"serving {model} as {app.state.service.name!r} ({seg.meta.weights_label}) on {seg.provider}: "
        f"http://{host}:{port}/ (v2 protocol under /v2, metrics at /metrics)", to_stderr=True)  # fmt: skip
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=drain_s)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # uvicorn handles SIGTERM itself (stop accepting, drain)
    uvicorn.Server(config).run()
    say("segtool serve: stopped", to_stderr=True)
