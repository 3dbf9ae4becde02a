"""`segtool info`: what an exported model is, what it takes, and where it would run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from segtool.runtime.model.metadata import NO_METADATA, normalization_label
from segtool.runtime.tools.describe import describe
from segtool.runtime.tools.precisions import summary

from .common import (
    AGREEMENT_TARGET,
    Device,
    JsonOut,
    MinAgreementOpt,
    PrecisionOpt,
    error_line,
    open_model,
    policy,
    say,
)


def dims_text(shape) -> str:
    """[batch, 3, height, width]: symbolic dims by name, fixed ones by value."""
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


SHOWN_APART = (
    "parity",
    "published",
    "output_stride",
    "input_size",
    "precision",
    "agreements",
    "reduce_labels",
)  # own rows


def published_text(d: dict) -> str:
    """torchvision's figures, or why there are none to show for these weights."""
    p = d["published"]
    if not p:
        return "n/a (not the published weights)"
    miou = "n/a" if p.get("miou") is None else f"{p['miou']}"
    acc = "n/a" if p.get("pixel_acc") is None else f"{p['pixel_acc']}"
    return f"mIoU {miou}, pixel accuracy {acc} on {p.get('dataset')} (torchvision's figures for {p.get('weights')})"


def size_text(d: dict) -> str:
    """The size with the external data files (named when there are a few, counted when many)."""
    files = d["external_data"]
    missing = [e["file"] for e in files if e["size_mb"] is None]
    if not files:
        return f"{d['size_mb']} MB"
    if len(files) <= 3:
        named = ", ".join(f"{e['file']} {'MISSING' if e['size_mb'] is None else str(e['size_mb']) + ' MB'}"
                          for e in files)  # fmt: skip
        return f"{d['size_mb']} MB with external data: {named}"
    gone = f", {len(missing)} MISSING (e.g. {missing[0]})" if missing else ""
    return f"{d['size_mb']} MB with {len(files)} external data files{gone}"


def output_text(d: dict) -> str:
    stride = d["output_stride"]
    return d["output_kind"] + (f", 1/{stride} of the input size (upsampled at run time)" if stride > 1 else "")


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
        ("normalization", normalization_label(d["mean"], d["std"], d["channel_order"])),
        ("output", output_text(d)),
        *(
            [("input size", f"{d['input_size'][1]}x{d['input_size'][0]} only (images are resized to it)")]
            if d["input_size"]
            else []
        ),
        *(
            [("ground truth", "reduce_labels: trained with 0 ignored and the other labels down by one (eval too)")]
            if d["extra"].get("reduce_labels")
            else []
        ),
        ("precision", d["precision"]),
        ("verified", d["verified_label"]),
        ("published", published_text(d)),
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
    table += [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in d["extra"].items() if k not in SHOWN_APART]
    agreements = d["extra"].get("agreements")
    if isinstance(agreements, dict):
        where = agreements.get("where", {})
        table.append(
            (
                "agreements",
                f"measured {agreements.get('measured', '?')} with ONNX Runtime "
                f"{where.get('onnxruntime', '?')}, OpenVINO {where.get('openvino', '?')}, CPU flags "
                f"{' '.join(where.get('cpu_flags', [])) or '-'}",
            )
        )
        table += [("", line) for line in summary(agreements)]
    if d.get("auto_choice"):
        table.append(("auto", d["auto_choice"]["line"]))
        table += [("", f"{device}: {why}") for device, why in d["auto_choice"]["skipped"].items()]
    return table + providers


def info(
    model: Annotated[Path, typer.Argument(help="Exported .onnx model.")],
    device: Device = "auto",
    precision: PrecisionOpt = "auto",
    min_agreement: MinAgreementOpt = AGREEMENT_TARGET,
    json_out: JsonOut = False,
):
    """Show a model's metadata, its inputs/outputs with symbolic dims, the providers, the other engines'
    recorded agreement and what --device auto chooses here."""
    d = open_model(describe, model, flag=None, device=device, policy=policy(precision, min_agreement))
    if json_out:
        print(json.dumps(d, indent=2))
    else:
        say(f"{d['file']} ({size_text(d)})")
        for key, value in rows(d):
            say(f"  {key + ':' if key else '':15} {value}")
    for problem in d["problems"]:
        hint = f"; make it a segtool model with `segtool adopt {model} --classes CLASSES.txt`" if (
            problem == NO_METADATA) else ""  # fmt: skip
        error_line(f"{model}: {problem}{hint}")
    if d["problems"]:
        raise typer.Exit(2)
