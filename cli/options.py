"""Flags shared by several commands, defined once (typer ``Annotated`` types)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.runtime.errors import UsageError

ModelArg = Annotated[Path, typer.Argument(help="Exported .onnx model.")]
Device = Annotated[str, typer.Option(help="auto (CUDA if it starts, else CPU), cpu, cuda or tensorrt.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")]
MaxSize = Annotated[Optional[int], typer.Option("--max-size", min=1, help="Infer with the long side at most N pixels.")]
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
