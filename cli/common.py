"""What every command shares: stdout/stderr helpers, the log handler, shared flags, size and
kind parsing, opening a model with a hint that names only commands and flags that exist.

Library modules log (``logging``); ``install_log_handler`` turns their warnings into
``segtool: warning: ...`` lines here, so the CLI alone decides how messages look."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import cv2
import typer
from rich import progress as p
from rich.console import Console

from segtool.runtime.errors import ModelError, UsageError
from segtool.runtime.model.choice import Choice, Policy
from segtool.runtime.model.engines import AGREEMENT_TARGET

# Piped output (not a terminal) gets room for the tables instead of rich's default 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


err = Console(stderr=True, highlight=False, soft_wrap=True)


class _WarningLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = "warning" if record.levelno >= logging.WARNING else "info"
        print(f"segtool: {level}: {record.getMessage()}", file=sys.stderr, flush=True)


def install_log_handler(verbose: bool = False) -> None:
    root = logging.getLogger("segtool")
    if not any(isinstance(h, _WarningLines) for h in root.handlers):
        root.addHandler(_WarningLines())
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def error_line(message: str) -> None:
    """One line, no traceback: how every user error ends."""
    print(f"segtool: error: {message}", file=sys.stderr, flush=True)


def say(message: str, to_stderr: bool = False) -> None:
    """A plain line (no rich markup: file names may hold brackets)."""
    (err if to_stderr else out).print(message, markup=False)


def format_shares(shares: dict[str, float], limit: int = 6) -> str:
    items = list(shares.items())
    text = ", ".join(f"{name.strip('_')} {share:.1%}" for name, share in items[:limit])
    return text + (f", +{len(items) - limit} more" if len(items) > limit else "")


def random_tag(random_weights: bool) -> str:
    return " [RANDOM WEIGHTS]" if random_weights else ""


def gui_available() -> bool:
    """Whether cv2.imshow can open a window (not in opencv-python-headless, not without a display)."""
    try:
        cv2.namedWindow("segtool")
        cv2.destroyWindow("segtool")
        return True
    except cv2.error:
        return False


def progress_bar(disable: bool) -> p.Progress:
    """Description, bar, done/total, rate, elapsed and ETA, on stderr."""
    columns = (p.TextColumn("{task.description}"), p.BarColumn(), p.MofNCompleteColumn(),
               p.TextColumn("{task.fields[rate]}"), p.TimeElapsedColumn(), p.TextColumn("eta"),
               p.TimeRemainingColumn())  # fmt: skip
    return p.Progress(*columns, console=err, disable=disable)


ModelArg = Annotated[Path, typer.Argument(help="Exported .onnx model.")]


Device = Annotated[
    str,
    typer.Option(
        help="auto: CUDA if it starts, else the fastest CPU engine among ONNX Runtime and those the file records "
        f"(segtool tune) as labelling at least --min-agreement ({AGREEMENT_TARGET:.0%}) of pixels alike, in a "
        "precision this CPU has natively (timed once here, cached); cpu (ONNX Runtime), cuda, "
        "tensorrt[:fp16][:MIN,OPT,MAX] (sizes WxH or NxWxH: TensorRT's optimization profile; for run, none given: "
        "--size at batches 1 to --batch), or OpenVINO (pip "
        "install 'segtool[openvino]'): openvino (its CPU), openvino:GPU, openvino:NPU; openvino:CPU:bf16 or "
        "openvino:GPU:f16 compute in reduced precision, used only if their labels agree with f32 on "
        f"{AGREEMENT_TARGET:.0%} of pixels."
    ),
]


PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="--device auto: auto (also bf16/f16 engines the file records at --min-agreement) or fp32 (never a "
        "reduced precision).",
    ),
]


MinAgreementOpt = Annotated[
    float,
    typer.Option(
        "--min-agreement",
        min=0.0,
        max=1.0,
        help="Smallest share of pixels a reduced precision must label as the file's own precision does (--device "
        "auto's choice, the gate of openvino:CPU:bf16 and the like).",
    ),
]


def policy(precision: str = "auto", min_agreement: float = AGREEMENT_TARGET) -> Policy:
    """--precision and --min-agreement as what --device auto may choose."""
    return Policy(min_agreement, precision)


JsonOut = Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")]


MaxSize = Annotated[
    Optional[int],
    typer.Option(
        "--max-size",
        min=0,
        help="Infer with the long side at most N pixels; 0: full resolution [default: full resolution for images, "
        "640 for videos and streams].",
    ),
]


OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]


def parse_size(text: str | None) -> tuple[int, int] | None:
    """WIDTHxHEIGHT -> (width, height); None for no text."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w > 0 and h > 0:
            return w, h
    except ValueError:
        pass
    raise UsageError(f"--size takes WIDTHxHEIGHT, e.g. 640x360 (got {text!r})")


def parse_kinds(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in allowed]
    if unknown or not kinds:
        raise UsageError(f"{flag} takes a comma list of {', '.join(allowed)} (got {text!r})")
    return kinds


DEFAULT_MODEL = Path("models/fcn_resnet50.onnx")


T = TypeVar("T")


def default_model(folder: Path = DEFAULT_MODEL.parent) -> Path:
    """``models/fcn_resnet50.onnx``; when it is not there, the one model in ``models/`` (the offline
    demo writes ``fcn_resnet50_random.onnx``), said on stderr. Several or none: the usual hint."""
    candidates = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
    if DEFAULT_MODEL.is_file() or len(candidates) != 1:
        return DEFAULT_MODEL
    say(f"using {candidates[0]}, the one model in {folder}/ (--model PATH to choose another)", to_stderr=True)
    return candidates[0]


def missing_model_hint(path: Path, flag: str | None) -> str:
    """What to do about a model file that is not there."""
    others = sorted(path.parent.glob("*.onnx")) if path.parent.is_dir() else []
    if others and flag:
        return f"; models in {path.parent}/: {', '.join(p.name for p in others[:4])} (pass one with {flag} PATH)"
    return (
        f"; make it with `segtool export --output {path}` (pretrained weights need internet, or pass "
        "--weights CHECKPOINT), or run `segtool demo`, which falls back to random weights offline"
    )


def open_model(factory: Callable[..., T], path: Path, flag: str | None = "--model", **kwargs) -> T:
    """``factory(path, **kwargs)`` (a Segmenter), with the hint added when the file is missing."""
    if Path(path).is_dir():
        inside = sorted(Path(path).glob("*.onnx"))
        raise ModelError(f"model {path} is a folder, not an .onnx file"
                         + (f"; in it: {', '.join(p.name for p in inside[:4])}" if inside else ""))  # fmt: skip
    if not Path(path).is_file():
        raise ModelError(f"model {path} not found" + missing_model_hint(Path(path), flag))
    opened = factory(path, **kwargs)
    choice = getattr(opened, "choice", None)
    if isinstance(choice, Choice) and (choice.timings_ms or choice.skipped):  # auto chose among recorded engines
        say(choice.line, to_stderr=True)
    return opened


#: exit codes of an interrupted run, by signal name (128 + the signal number)
INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}
