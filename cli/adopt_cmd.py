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


Classes = Annotated[Optional[Path], Opt("--classes", help="Class names in channel order: one a line, a JSON list, or "
                                        "a Hugging Face config.json (id2label) [read from config.json, pipeline.json "
                                        "or deploy.json beside the model when there is one].")]  # fmt: skip


Palette = Annotated[Optional[Path], Opt(help="Colours, one 'R G B' or '#rrggbb' a line (default: VOC's, "
                                        "then generated).")]  # fmt: skip


Mean = Annotated[Optional[str], Opt(metavar="R,G,B", help="Normalization mean of [0,1] pixels (0..255 values are "
                                    "divided by 255), always in R,G,B order, --bgr or not [ImageNet's "
                                    "0.485,0.456,0.406].")]  # fmt: skip


Std = Annotated[Optional[str], Opt(metavar="R,G,B", help="Normalization std, R,G,B as --mean "
                                   "[ImageNet's 0.229,0.224,0.225].")]  # fmt: skip


Bgr = Annotated[bool, Opt("--bgr", help="The graph takes BGR channel order (default RGB); --mean/--std stay "
                          "R,G,B.")]  # fmt: skip


Output = Annotated[Optional[Path], Opt("--output", "-o", help="The copy to write (default: IN_segtool.onnx beside "
                                       "IN.onnx; never the input unless named here).")]  # fmt: skip


Name = Annotated[Optional[str], Opt(help="Model name in the metadata (default: the file's name).")]


Logits = Annotated[Optional[str], Opt(help="Graph output holding the class scores (default: out, else the first "
                                      "[N,C,H,W] float output not named aux).")]  # fmt: skip


def adopt(
    model: Model,
    classes: Classes = None,
    palette: Palette = None,
    mean: Mean = None,
    std: Std = None,
    bgr: Bgr = False,
    output: Output = None,
    name: Name = None,
    logits: Logits = None,
):
    """Make an ONNX segmentation model exported elsewhere a segtool model: checked, with metadata.

    Beside the file, a Hugging Face config.json / preprocessor_config.json (save_pretrained) or an
    mmdeploy pipeline.json / deploy.json give the class names and normalization; flags override them."""
    from segtool.export.beside import read_beside

    found = read_beside(model)
    if classes is None and found.classes is None:
        raise UsageError(f"--classes is needed: no config.json (id2label), pipeline.json or deploy.json with class "
                         f"names beside {model}")  # fmt: skip
    names: tuple[str, ...] = parse_classes(classes) if classes is not None else found.classes or ()
    classes_from = "--classes" if classes is not None else found.classes_from
    if classes is not None and classes.name == "config.json" and found.mean is None:
        found = _processor_beside(classes, found)
    notes = list(found.notes)
    if classes is not None and found.classes is not None and tuple(names) != found.classes:
        notes.append(f"--classes {classes} overrides {found.classes_from} ({len(found.classes)} names)")
    mean_3, std_3, converted = normalization(mean, std)
    if found.mean is not None and found.std is not None:
        for flag, given, value, theirs in (("--mean", mean, mean_3, found.mean), ("--std", std, std_3, found.std)):
            if given is not None and any(abs(a - b) > 1e-6 for a, b in zip(value, theirs)):
                notes.append(f"{flag} {given} overrides {found.normalization_from}'s "
                             f"{', '.join(f'{v:.4g}' for v in theirs)}")  # fmt: skip
        mean_3 = mean_3 if mean is not None else found.mean
        std_3 = std_3 if std is not None else found.std
    elif mean is None and std is None:
        notes.append("normalization: ImageNet's (nothing beside the model says otherwise; --mean/--std to set it)")
    order = "BGR" if bgr else found.channel_order or "RGB"
    if bgr and found.channel_order == "RGB":
        notes.append(f"--bgr overrides {found.normalization_from}, which feeds the network RGB")
    colours = parse_palette(palette, len(names)) if palette is not None else None
    for note in notes:
        say(f"adopt: {note}", to_stderr=True)
    stage = load_adopt_stage()

    def progress(step: str) -> None:
        say(f"adopt: {step}", to_stderr=True)

    result = stage.adopt_model(
        model,
        names,
        colours,
        mean_3,
        std_3,
        order,
        output,
        name,
        logits,
        progress=progress,
        classes_from=classes_from,
        read_from=notes,
        reduce_labels=found.reduce_labels,
    )
    meta = result.meta
    size = model_bytes(result.path) / 1e6
    data = f" + {', '.join(p.name for p in result.data_files)}" if result.data_files else ", self-contained"
    say(f"wrote {result.path} ({size:.1f} MB{data}, {meta.model}, {len(meta.classes)} classes)")
    dropped = f"; dropped {', '.join(result.dropped)}" if result.dropped else ""
    say(f"  graph: input {result.source_input} -> image, output {result.source_output} -> {meta.output}{dropped}")
    if meta.output == "labels":
        say("  output: class indices (ArgMax in the graph): no class scores, so no confidence or per-class soft output")
    size_note = meta.extra.get("input_size")
    if size_note:
        say(f"  input size: {size_note[1]}x{size_note[0]} only (images are resized to it)")
    if meta.output_stride > 1:
        say(f"  output: 1/{meta.output_stride} of the input size (logits upsampled bilinearly at run time)")
    say(f"  normalization: {meta.normalization_label}{converted}")
    say(f"  {meta.verified_label}")
    err.print(f"next: segtool run IMAGE --model {result.path}", markup=False)


def _processor_beside(config: Path, found):
    """`--classes DIR/config.json`: the normalization of DIR/preprocessor_config.json too."""
    from segtool.export.beside import hf_normalization, hf_processor, hf_reduce_labels

    processor = hf_processor(config.parent)
    if processor is not None:
        found.mean, found.std, notes = hf_normalization(processor)
        found.reduce_labels = hf_reduce_labels(processor)
        found.channel_order, found.normalization_from = "RGB", str(processor)
        found.notes += [f"normalization from {processor}", *notes]
    return found
