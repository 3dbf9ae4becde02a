"""Everything `segtool info` shows about a model file, as a plain dict: metadata, the graph's
inputs and outputs with their symbolic dims, providers, and any problem with the metadata.

Only what is true is shown: torchvision's published accuracy only for the weights it was
measured on (``ModelMetadata.published``), whether the graph was verified against PyTorch, and
the size of the model with its external data files."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from segtool.runtime.errors import ModelError
from segtool.runtime.model.choice import Choice, Policy, choose
from segtool.runtime.model.external import model_files
from segtool.runtime.model.metadata import PREFIX, ModelMetadata, graph_problems, metadata_problems
from segtool.runtime.model.segmenter import open_engine


def describe(path: Path, device: str = "auto", policy: Policy | None = None) -> dict:
    """A description of the model at ``path``; broken segtool metadata is listed under "problems"
    (the file is still described as far as it can be), an unreadable file is a ``ModelError``.
    With ``auto``, what it chooses here and why ("auto_choice"; the file's record: extra "agreements")."""
    if not path.is_file():
        raise ModelError(f"model {path} not found")
    choice: Choice | None = None
    try:
        if device == "auto":
            engine, choice = choose(path, None, False, policy or Policy(), open_engine)
        else:
            engine = open_engine(path, device)  # ONNX Runtime, or OpenVINO for --device openvino...
        provider = engine.provider
        if choice is not None and not isinstance(engine.session, ort.InferenceSession):
            engine = open_engine(path, "cpu")  # the file's own names of its dims, which OpenVINO does not keep
        session = engine.session
    except ModelError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"{path}: not a usable ONNX model ({first})") from None
    props = session.get_modelmeta().custom_metadata_map
    problems = metadata_problems(session)
    try:
        files = model_files(path)
    except ModelError:  # ONNX Runtime read it: the size is then the file's own
        files = [path]
    d: dict = {
        "file": str(path),
        "size_mb": round(sum(f.stat().st_size for f in files if f.is_file()) / 1e6, 1),  # with external data
        "external_data": [
            {"file": str(f), "size_mb": round(f.stat().st_size / 1e6, 1) if f.is_file() else None} for f in files[1:]
        ],
        "problems": problems,
        "inputs": [{"name": i.name, "type": i.type, "shape": i.shape} for i in session.get_inputs()],
        "outputs": [{"name": o.name, "type": o.type, "shape": o.shape} for o in session.get_outputs()],
        "providers_available": ort.get_available_providers(),
        "provider_selected": provider,
        "auto_choice": None
        if choice is None
        else {
            "device": choice.device,
            "provider": choice.provider,
            "why": choice.why,
            "line": choice.line,
            "timings_ms": choice.timings_ms,
            "cached": choice.cached,
            "skipped": choice.skipped,
        },
    }
    if problems:
        d["raw_metadata"] = {k: v[:200] for k, v in props.items() if k.startswith(PREFIX)}
        return d
    meta = ModelMetadata.from_props(props, str(path))
    assert not graph_problems(meta, session.get_inputs(), session.get_outputs())
    published = meta.published
    return d | {
        "model": meta.model,
        "weights": meta.weights,
        "weights_label": meta.weights_label,
        "random_weights": meta.random_weights,
        "verified": meta.verified,
        "verified_label": meta.verified_label,
        "published": published,  # None unless the weights are the ones torchvision measured
        "output_stride": meta.output_stride,
        "input_size": meta.extra.get("input_size"),
        "classes": list(meta.classes),
        "palette": meta.palette.tolist(),
        "mean": list(meta.mean),
        "std": list(meta.std),
        "channel_order": meta.channel_order,
        "output_kind": meta.output,
        "precision": meta.precision,
        "versions": meta.versions,
        # the stored published figures stay out of sight when they are not about these weights
        "extra": {k: v for k, v in meta.extra.items() if k != "published" or published is not None},
    }
