"""`segtool bundle`: an offline install bundle (wheels, models, install.sh) for a target box."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.runtime.tools.bundle import TARGETS, archive_name, make_bundle, mib

from .common import JsonOut, say

Opt = typer.Option


def bundle(
    models: Annotated[list[Path], typer.Argument(help="segtool models (.onnx) to put in the bundle.")],
    target: Annotated[str, Opt("--target", help=f"The box: {', '.join(TARGETS)}.")],
    output: Annotated[Path, Opt("--output", "-o", help="A new folder, or FILE.tar.gz.")],
    python: Annotated[
        Optional[str], Opt(help="The box's Python as X.Y [default: 3.11, as in Debian and Raspberry Pi OS bookworm].")
    ] = None,
    video: Annotated[bool, Opt("--video/--no-video", help="With PyAV for videos, or images only (smaller).")] = True,
    find_links: Annotated[
        Optional[list[str]], Opt("--find-links", help="Also take wheels from this folder or page (repeatable).")
    ] = None,
    index_url: Annotated[Optional[str], Opt("--index-url", help="The package index to download from.")] = None,
    no_index: Annotated[bool, Opt("--no-index", help="No package index: only --find-links.")] = False,
    json_out: JsonOut = False,
):
    """Wheels for the target, the models, install.sh (no network on the box) and a README."""
    index = [f"--find-links={link}" for link in find_links or []]
    index += [f"--index-url={index_url}"] if index_url else []
    index += ["--no-index"] if no_index else []
    command = shlex.join(["segtool", *sys.argv[1:]]) if sys.argv[1:2] == ["bundle"] else "segtool bundle"
    made = make_bundle(models, target, output, python, video, index, command)
    if json_out:
        print(json.dumps(made.as_dict(), indent=2))
        return
    kind = "with video" if video else "images only"
    say(
        f"wrote {output}: {mib(made.bytes)} for {target}, Python {made.python}, {kind}; "
        f"installed about {mib(made.installed_bytes)} before bytecode"
    )
    say("  largest installed: " + ", ".join(f"{c.name} {mib(c.installed_bytes)}" for c in made.components[:6]))
    say("  models: " + ", ".join(f"{name} {mib(size)}" for name, size in made.models.items()))
    folder = archive_name(output)
    unpack = f"tar xzf {output.name} && " if folder else ""
    say(f"  on the box: {unpack}bash {folder or output.name}/install.sh PREFIX   (README.md in the bundle)")
