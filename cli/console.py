"""Terminal output shared by the commands: results on stdout, messages on stderr.

Library modules log (``logging``); ``install_log_handler`` turns their warnings into
``segtool: warning: ...`` lines here, so the CLI alone decides how messages look.
"""

from __future__ import annotations

import logging
import sys

import cv2
from rich import progress as p
from rich.console import Console

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
