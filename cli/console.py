"""Terminal output shared by the commands: results on stdout, messages on stderr."""

from __future__ import annotations

import sys

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[yellow]segtool: warning:[/] {message}", markup=True)


def error_line(message: str) -> None:
    """One line, no traceback: how every user error ends."""
    print(f"segtool: error: {message}", file=sys.stderr, flush=True)


def format_shares(shares: dict[str, float], limit: int = 6) -> str:
    items = list(shares.items())
    text = ", ".join(f"{name.strip('_')} {share:.1%}" for name, share in items[:limit])
    return text + (f", +{len(items) - limit} more" if len(items) > limit else "")
