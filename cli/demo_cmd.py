"""`segtool demo`: the quickstart's main job: export, then segment a sample image.

Offline (no pretrained weights to download) it says so loudly, falls back to random weights
in a separately named model file, and every output it writes is marked as random. That
fallback lives here only; `segtool export` never substitutes weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segtool.export.models import MODELS
from segtool.runtime import Segmenter, segment_image
from segtool.runtime.files.images import atomic_write_bytes, encode_image, ensure_writable_dir
from segtool.runtime.files.sources import IMAGE, Source
from segtool.runtime.tools.synthetic import street_scene

from .common import DEFAULT_MODEL, err, format_shares, random_tag, say
from .export_cmd import load_export_stage, run_export

MODEL = str(DEFAULT_MODEL)


def ensure_model(model: Path, name: str, weights: str, force: bool) -> Path:
    """The pretrained (or --weights) export if possible; else, loudly, a random-weights one beside it."""
    random_model = model.with_name(model.stem + "_random" + model.suffix)
    if model.is_file() and not force:
        err.print(f"using existing {model} (--force to export again)", markup=False)
        return model
    load_export_stage()  # one clear line if segtool[export] is missing
    from segtool.export.weights import WeightsUnavailable

    try:
        return run_export(model, model=name, weights=weights).path
    except WeightsUnavailable as exc:
        err.rule("PRETRAINED WEIGHTS UNAVAILABLE", style="bold red")
        err.print(str(exc), style="red", markup=False)
        err.print(
            "The demo falls back to RANDOM weights: every output below is marked as made with random "
            "weights and its labels are meaningless.",
            style="bold red",
            markup=False,
        )
        err.rule(style="bold red")
    if random_model.is_file() and not force:
        err.print(f"using existing {random_model}", markup=False)
        return random_model
    return run_export(random_model, model=name, weights="random").path


def demo(
    image: Annotated[Optional[Path], typer.Argument(help="Image to segment (default: a drawn sample scene).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("segtool-out"),
    model: Annotated[str, typer.Option("--model", "-m", help="`segtool models` name, or .onnx path.")] = MODEL,
    weights: Annotated[str, typer.Option(help="DEFAULT (download) or a local checkpoint path.")] = "DEFAULT",
    force: Annotated[bool, typer.Option(help="Export again even if the model file exists.")] = False,
):
    """Export fcn_resnet50 (pretrained if downloadable, else loudly random) and segment an image."""
    out_dir = ensure_writable_dir(out_dir)
    path = Path(model) if model.endswith(".onnx") else Path("models") / f"{model}.onnx"
    name = path.stem.split("_random")[0] if path.stem.split("_random")[0] in MODELS else "fcn_resnet50"
    model_file = ensure_model(path, name, weights, force)
    if image is None:
        image = out_dir / "sample.jpg"
        atomic_write_bytes(image, encode_image(street_scene(), ".jpg"))
        err.print(f"made a sample image: {image}", markup=False)
    seg = Segmenter(model_file)
    result = segment_image(seg, Source(IMAGE, str(image), Path(image).stem), out_dir)
    say(f"{result.input}: {format_shares(result.classes)}{random_tag(seg.meta.random_weights)} (on {seg.provider})")
    for kind, written in result.outputs.items():
        say(f"  {kind:8} {written}")
    say(f"next: segtool run YOUR_IMAGES --model {model_file} --out {out_dir}")
