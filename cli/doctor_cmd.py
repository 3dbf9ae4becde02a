"""`segtool doctor`: can this machine run segtool models, and on what?"""

from __future__ import annotations

import typer

from segtool.runtime.tools.diagnostics import diagnose

from .common import error_line, say


def doctor():
    """Report ONNX Runtime, providers, CUDA libraries, CPU features and threads."""
    rows, problems = diagnose()
    for key, value in rows:
        say(f"  {key + ':':15} {value}")
    for problem in problems:
        error_line(problem)
    if problems:
        raise typer.Exit(1)
