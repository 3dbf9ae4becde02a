"""`segtool info`: what an exported model is, what it takes, and where it would run."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import typer

from segtool.runtime import Segmenter

from .console import out


def describe(seg: Segmenter) -> dict:
    meta = seg.meta
    return {
        "file": str(seg.path),
        "size_mb": round(seg.path.stat().st_size / 1e6, 1),
        "model": meta.model,
        "weights": meta.weights,
        "random_weights": meta.random_weights,
        "classes": list(meta.classes),
        "palette": meta.palette.tolist(),
        "mean": list(meta.mean),
        "std": list(meta.std),
        "channel_order": meta.channel_order,
        "output_kind": meta.output,
        "inputs": [{"name": i.name, "type": i.type, "shape": i.shape} for i in seg.session.get_inputs()],
        "outputs": [{"name": o.name, "type": o.type, "shape": o.shape} for o in seg.session.get_outputs()],
        "versions": meta.versions,
        "extra": meta.extra,
        "providers_available": ort.get_available_providers(),
        "provider_selected": seg.provider,
    }


def dims_text(shape) -> str:
    """[batch, 3, height, width]: symbolic dims by name, fixed ones by value."""
    return "[" + ", ".join(map(str, shape)) + "]"


def weights_text(d: dict) -> str:
    text = json.dumps(d["weights"], sort_keys=True)
    return ("RANDOM (meaningless labels) " + text) if d["random_weights"] else text


def info(
    model: Path = typer.Argument(..., help="An .onnx file written by `segtool export`."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or tensorrt: which provider to try."),
    json_out: bool = typer.Option(False, "--json", help="Print the description as JSON."),
):
    """Show a model's metadata, its inputs/outputs with symbolic dims, and the providers."""
    d = describe(Segmenter(model, device=device, warn_random=False))
    if json_out:
        print(json.dumps(d, indent=2))
        return
    out.print(f"[bold]{d['file']}[/] ({d['size_mb']} MB)")
    rows = [
        ("model", d["model"]),
        ("weights", weights_text(d)),
        ("classes", f"{len(d['classes'])}: " + ", ".join(d["classes"])),
        ("palette", " ".join(f"{i}:{tuple(c)}" for i, c in enumerate(d["palette"][: len(d["classes"])]))),
        ("normalization", f"{d['channel_order']} in [0,1], mean {d['mean']}, std {d['std']}"),
        ("output", d["output_kind"]),
    ]
    rows += [(f"input {i['name']}", f"{i['type']} {dims_text(i['shape'])}") for i in d["inputs"]]
    rows += [(f"output {o['name']}", f"{o['type']} {dims_text(o['shape'])}") for o in d["outputs"]]
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in d["versions"].items())))
    parity = d["extra"].get("parity")
    if parity:
        cells = [f"{'x'.join(map(str, r['shape']))}: diff "
                 + ("n/a" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}")
                 + f", agreement {r['agreement']:.4%}" for r in parity["rows"]]
        rows.append(("parity", "; ".join(cells)))
    for key, value in d["extra"].items():
        if key != "parity":
            rows.append((key, json.dumps(value) if not isinstance(value, str) else value))
    rows.append(("providers", f"available {', '.join(d['providers_available'])}; selected {d['provider_selected']}"))
    for key, value in rows:
        out.print(f"  {key + ':':15} {value}", markup=False)

