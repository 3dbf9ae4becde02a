"""`segtool info`: what an exported model is, what it takes, and where it would run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from segtool.runtime.tools.describe import describe

from .common import Device, JsonOut, error_line, open_model, say


def dims_text(shape) -> str:
    """[batch, 3, height, width]: symbolic dims by name, fixed ones by value."""
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def rows(d: dict) -> list[tuple[str, str]]:
    graph = [(f"input {i['name']}", f"{i['type']} {dims_text(i['shape'])}") for i in d["inputs"]]
    graph += [(f"output {o['name']}", f"{o['type']} {dims_text(o['shape'])}") for o in d["outputs"]]
    providers = [("providers", f"available {', '.join(d['providers_available'])}; selected {d['provider_selected']}")]
    if d["problems"]:
        return graph + [(k, v) for k, v in d["raw_metadata"].items()] + providers
    table = [
        ("model", d["model"]),
        ("weights", d["weights_label"]),
        ("classes", f"{len(d['classes'])}: " + ", ".join(d["classes"])),
        ("palette", " ".join(f"{i}:{tuple(c)}" for i, c in enumerate(d["palette"][: len(d["classes"])]))),
        ("normalization", f"{d['channel_order']} in [0,1], mean {d['mean']}, std {d['std']}"),
        ("output", d["output_kind"]),
        ("precision", d["precision"]),
        *graph,
        ("versions", ", ".join(f"{k} {v}" for k, v in d["versions"].items())),
    ]
    parity = d["extra"].get("parity")
    if parity:
        table.append(
            (
                "parity",
                "; ".join(
                    f"{'x'.join(map(str, r['shape']))}: diff "
                    + ("n/a" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}")
                    + f", agreement {r['agreement']:.4%}"
                    for r in parity["rows"]
                ),
            )
        )
    table += [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in d["extra"].items() if k != "parity"]
    return table + providers


def info(
    model: Annotated[Path, typer.Argument(help="Exported .onnx model.")],
    device: Device = "auto",
    json_out: JsonOut = False,
):
    """Show a model's metadata, its inputs/outputs with symbolic dims, and the providers."""
    d = open_model(describe, model, flag=None, device=device)
    if json_out:
        print(json.dumps(d, indent=2))
    else:
        say(f"{d['file']} ({d['size_mb']} MB)")
        for key, value in rows(d):
            say(f"  {key + ':':15} {value}")
    for problem in d["problems"]:
        error_line(f"{model}: {problem}")
    if d["problems"]:
        raise typer.Exit(2)
