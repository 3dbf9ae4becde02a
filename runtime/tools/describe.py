"""Everything `segtool info` shows about a model file, as a plain dict: metadata, the graph's
inputs and outputs with their symbolic dims, providers, and any problem with the metadata."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from segtool.runtime.errors import ModelError
from segtool.runtime.model.metadata import PREFIX, ModelMetadata, graph_problems, metadata_problems
from segtool.runtime.model.session import create_session


def describe(path: Path, device: str = "auto") -> dict:
    """A description of the model at ``path``; broken segtool metadata is listed under "problems"
    (the file is still described as far as it can be), an unreadable file is a ``ModelError``."""
    if not path.is_file():
        raise ModelError(f"model {path} not found")
    try:
        session, provider = create_session(str(path), device)
    except ModelError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"{path}: not a usable ONNX model ({first})") from None
    props = session.get_modelmeta().custom_metadata_map
    problems = metadata_problems(session)
    d: dict = {
        "file": str(path),
        "size_mb": round(path.stat().st_size / 1e6, 1),
        "problems": problems,
        "inputs": [{"name": i.name, "type": i.type, "shape": i.shape} for i in session.get_inputs()],
        "outputs": [{"name": o.name, "type": o.type, "shape": o.shape} for o in session.get_outputs()],
        "providers_available": ort.get_available_providers(),
        "provider_selected": provider,
    }
    if problems:
        d["raw_metadata"] = {k: v[:200] for k, v in props.items() if k.startswith(PREFIX)}
        return d
    meta = ModelMetadata.from_props(props, str(path))
    assert not graph_problems(meta, session.get_inputs(), session.get_outputs())
    return d | {
        "model": meta.model,
        "weights": meta.weights,
        "weights_label": meta.weights_label,
        "random_weights": meta.random_weights,
        "classes": list(meta.classes),
        "palette": meta.palette.tolist(),
        "mean": list(meta.mean),
        "std": list(meta.std),
        "channel_order": meta.channel_order,
        "output_kind": meta.output,
        "precision": meta.precision,
        "versions": meta.versions,
        "extra": meta.extra,
    }
