"""`segtool serve`: the HTTP service (KServe v2 / Triton protocol, /v1/segment, /metrics, a page)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.runtime import Segmenter
from segtool.runtime.errors import UsageError
from segtool.runtime.jobs import DEFAULT_LONG_SIDE

from .common import AGREEMENT_TARGET, Device, MinAgreementOpt, PrecisionOpt, open_model, policy, say

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
    budget_mp: Annotated[
        float,
        Opt(
            min=0.001,
            help="Most megapixels of work one request may ask for (an image's pixels at inference; a video's "
            "frames x frame pixels, from its header); more get 413 before decoding.",
        ),
    ] = 600.0,
    deadline_s: Annotated[
        float,
        Opt(
            min=0,
            help="A request not answered this many seconds after its body was read gets 503 and its work is "
            "stopped; 0: no deadline.",
        ),
    ] = 60.0,
    api_key: Annotated[Optional[str], Opt(envvar="SEGTOOL_API_KEY", help="Require Bearer KEY.")] = None,
    drain_s: Annotated[
        int, Opt(min=1, help="On SIGTERM: seconds to finish requests in flight; then they get 503 and it exits.")
    ] = 30,
    precision: PrecisionOpt = "auto",
    min_agreement: MinAgreementOpt = AGREEMENT_TARGET,
):
    """Serve a model over HTTP until SIGTERM or Ctrl-C (then drain the requests in flight and exit 0)."""
    try:
        import uvicorn

        from segtool.serve import ServeSettings, create_app
    except ImportError as exc:
        raise UsageError(f"`segtool serve` needs FastAPI and uvicorn ({exc.name or exc}): "
                         "pip install 'segtool[serve]'") from None  # fmt: skip
    seg = open_model(Segmenter, model, device=device, policy=policy(precision, min_agreement))
    settings = ServeSettings(name=name, max_queue=max_queue, max_body_mb=max_body_mb, max_pixels=max_pixels,
                             api_key=api_key, max_size=max_size, max_video_frames=max_video_frames,
                             budget_mp=budget_mp, deadline_s=deadline_s)  # fmt: skip
    app = create_app(seg, settings)
    worker = app.state.service.worker

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            # uvicorn waits --drain-s for the requests in flight, then cancels them: stop their work just
            # before, so that each gets its 503 and the process exits within --drain-s
            worker.stop_after(max(0.0, drain_s - 0.5))
            await super().shutdown(sockets)

    say(f"serving {model} as {app.state.service.name!r} ({seg.meta.weights_label}) on {seg.provider}: "
        f"http://{host}:{port}/ (v2 protocol under /v2, metrics at /metrics)", to_stderr=True)  # fmt: skip
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=drain_s)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # uvicorn handles SIGTERM itself (stop accepting, drain)
    Server(config).run()
    if worker.busy:  # a model call past its last node check: the process must not wait for it, nor unwind under it
        say("segtool serve: stopped (a model call still running was abandoned)", to_stderr=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    say("segtool serve: stopped", to_stderr=True)
