"""`segtool adopt`: an ONNX file made elsewhere (plain ``torch.onnx.export``, another tool) -> a
segtool model that `run`, `serve`, `triton`, `bench` and `compare` take (needs the onnx package)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.runtime.errors import UsageError
from segtool.runtime.model.classes import parse_classes, parse_palette
from segtool.runtime.model.external import model_bytes
from segtool.runtime.model.metadata import IMAGENET_MEAN, IMAGENET_STD

from .common import err, say

Opt = typer.Option


def parse_triple(text: str | None, flag: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
    """``r,g,b`` (or ``"r g b"``) -> three floats; ``default`` for no text."""
    if text is None:
        return default
    try:
        values = tuple(float(v) for v in re.split(r"[\s,]+", text.strip()) if v)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise UsageError(f"{flag} takes three numbers R,G,B, e.g. {flag} {','.join(map(str, default))} (got {text!r})")
    return values


def normalization(mean: str | None, std: str | None) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """(mean, std) in segtool's units (RGB in [0, 1]), and a note when 0..255 values were converted."""
    m, s = parse_triple(mean, "--mean", IMAGENET_MEAN), parse_triple(std, "--std", IMAGENET_STD)
    if min(s) <= 0:
        raise UsageError(f"--std must be positive (got {','.join(map(str, s))})")
    if max(m) > 1.0 or max(s) > 1.0:  # mmsegmentation style: 123.675,116.28,103.53 / 58.395,57.12,57.375
        scaled = lambda values: tuple(round(v / 255, 10) for v in values)
        return scaled(m), scaled(s), " (given in 0..255, divided by 255)"
    return m, s, ""


def load_adopt_stage():
    try:
        from segtool.export import adopt
    except ImportError as exc:
        raise UsageError(f"`segtool adopt` needs the onnx package ({exc.name or 'onnx'} is not installed): "
                         "pip install 'segtool[export]'") from None  # fmt: skip
    return adopt


Model = Annotated[Path, typer.Argument(help="ONNX file made elsewhere, e.g. by torch.onnx.export.")]


Classes = Annotated[Path, Opt("--classes", help="Class names in channel order: one a line, or a JSON list.")]


Palette = Annotated[Optional[Path], Opt(help="Colours, one 'R G B' or '#rrggbb' a line (default: VOC's, "
                                        "then generated).")]  # fmt: skip


Mean = Annotated[Optional[str], Opt(help="Normalization mean R,G,B of [0,1] pixels (0..255 values are divided "
                                    "by 255) [ImageNet's 0.485,0.456,0.406].")]  # fmt: skip


Std = Annotated[Optional[str], Opt(help="Normalization std R,G,B [ImageNet's 0.229,0.224,0.225].")]


Bgr = Annotated[bool, Opt("--bgr", help="The graph takes BGR channel order (default RGB).")]


Output = Annotated[Optional[Path], Opt("--output", "-o", help="The copy to write (default: IN_segtool.onnx beside "
                                       "IN.onnx; never the input unless named here).")]  # fmt: skip


Name = Annotated[Optional[str], Opt(help="Model name in the metadata (default: the file's name).")]


Logits = Annotated[Optional[str], Opt(help="Graph output holding the class scores (default: out, else the first "
                                      "[N,C,H,W] float output not named aux).")]  # fmt: skip


def adopt(
    model: Model,
    classes: Classes,
    palette: Palette = None,
    mean: Mean = None,
    std: Std = None,
    bgr: Bgr = False,
    output: Output = None,
    name: Name = None,
    logits: Logits = None,
):
    """Make an ONNX segmentation model exported elsewhere a segtool model: checked, with metadata."""
    names = parse_classes(classes)
    colours = parse_palette(palette, len(names)) if palette is not None else None
    mean_3, std_3, converted = normalization(mean, std)
    stage = load_adopt_stage()

    def progress(step: str) -> None:
        say(f"adopt: {step}", to_stderr=True)

    result = stage.adopt_model(model, names, colours, mean_3, std_3, "BGR" if bgr else "RGB", output, name, logits,
                               progress=progress)  # fmt: skip
    meta = result.meta
    size = model_bytes(result.path) / 1e6
    data = f" + {', '.join(p.name for p in result.data_files)}" if result.data_files else ", self-contained"
    say(f"wrote {result.path} ({size:.1f} MB{data}, {meta.model}, {len(meta.classes)} classes)")
    dropped = f"; dropped {', '.join(result.dropped)}" if result.dropped else ""
    say(f"  graph: input {result.source_input} -> image, output {result.source_output} -> logits{dropped}")
    size_note = meta.extra.get("input_size")
    if size_note:
        say(f"  input size: {size_note[1]}x{size_note[0]} only (images are resized to it)")
    if meta.output_stride > 1:
        say(f"  output: 1/{meta.output_stride} of the input size (logits upsampled bilinearly at run time)")
    say(f"  normalization: {meta.channel_order}, mean {list(meta.mean)}, std {list(meta.std)}{converted}")
    say(f"  {meta.verified_label}")
    err.print(f"next: segtool run IMAGE --model {result.path}", markup=False)
