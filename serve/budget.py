"""The per-request compute budget (``--budget-mp``): frames x pixels, from the headers alone.

What a request costs, in megapixels:

- an image: its size at inference (its header's size, the long side capped by ``max_size``; a graph
  that takes one size only infers at that size), which is what the model computes;
- a video: frames x the frames' own size (each frame is decoded, painted and encoded at its own size,
  and inferred at most at it). The frames are the container header's count (else its duration x
  frame rate), never more than the request's ``max_frames`` or ``--max-video-frames``; a header
  without them counts that limit, and one without the frame size counts ``--max-pixels`` a frame.

A request over the budget is refused with 413 before a pixel of it is decoded.
"""

from __future__ import annotations

import math

from segtool.runtime.errors import InputError
from segtool.runtime.files.images import header_size
from segtool.runtime.model.preprocess import inference_size
from segtool.runtime.model.runner import Size


class OverBudget(InputError):
    status = 413


def _refuse(what: str, pixels: float, budget_mp: float, advice: str) -> None:
    if pixels > budget_mp * 1e6:
        raise OverBudget(f"request body: {what} is {pixels / 1e6:.1f} MP of work, over the {budget_mp:g} MP "
                         f"budget of a request (--budget-mp); {advice}")  # fmt: skip


def check_image(data: bytes, max_size: int | None, fixed: Size | None, budget_mp: float) -> int:
    """The image's pixels at inference, from its header (0 where the header gives no size: the decoder
    refuses it); ``OverBudget`` when they are over the budget."""
    size = header_size(data)
    if size is None:
        return 0
    width, height = size
    at = inference_size(height, width, max_size, fixed)
    what = f"a {width}x{height} image" + (f" inferred at {at[0]}x{at[1]}" if at != size else "")
    _refuse(what, at[0] * at[1], budget_mp, "ask for a smaller max_size")
    return at[0] * at[1]


def video_header(path: str) -> tuple[int, int, int | None]:
    """(width, height, frames) from a video container's header, 0 or None where it does not say; the
    frames are counted from the duration and frame rate where the count is missing."""
    import av

    try:
        with av.open(path, metadata_errors="replace") as container:
            if not container.streams.video:
                raise InputError("request body: no video stream")
            stream = container.streams.video[0]
            context = stream.codec_context
            width, height = (context.width, context.height) if context is not None else (0, 0)
            frames = stream.frames if stream.frames > 0 else None
            rate = stream.average_rate or stream.guessed_rate
            if frames is None and stream.duration and stream.time_base and rate:
                frames = math.ceil(float(stream.duration * stream.time_base * rate))
    except InputError:
        raise
    except Exception as exc:  # FFmpeg's errors
        raise InputError(f"request body: cannot open the video ({str(exc).strip()[:160]})") from None
    return width, height, frames


def check_video(
    width: int, height: int, frames: int | None, limit: int, max_pixels: int | None, budget_mp: float
) -> None:
    """``OverBudget`` when ``frames`` (at most ``limit``) frames of width x height are over the budget."""
    count = min(frames or limit, limit)
    known = width > 0 and height > 0
    pixels = width * height if known else (max_pixels or 0)
    size = f"{width}x{height}" if known else "a size the header does not give (counted at --max-pixels)"
    _refuse(f"{count} frames of {size}", count * pixels, budget_mp, "ask for fewer frames (max_frames)")
