"""``export_model``: build -> load weights -> ONNX -> metadata -> check -> parity -> atomic write.

Nothing is written unless every step passed; the file then carries its own metadata.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import torch
import torchvision

from segtool.runtime.errors import ModelError, ParityError, SegtoolError, UsageError
from segtool.runtime.files.images import atomic_write_bytes
from segtool.runtime.model.classes import parse_classes
from segtool.runtime.model.metadata import OUTPUT_LABELS, OUTPUT_LOGITS, Extras, ModelMetadata

from . import parity
from .axes import fixed_axes
from .classes import class_names_and_colours
from .config import DEFAULT_MODEL, ExportConfig
from .graph import Probe, SegmentationGraph, export_failure, probe, to_onnx
from .hf import check_post_processing, hf_reduce_labels_of, is_hf_name, load_hf
from .models import CallableSpec, format_call, get_spec, is_callable_name
from .weights import (
    Checkpoint,
    apply_state_dict,
    check_trained_as,
    is_enum_member,
    normalize_keys,
    read_checkpoint,
    resolve_weights,
)

Net = torch.nn.Module


@dataclass
class ExportResult:
    path: Path
    meta: ModelMetadata
    parity: list[parity.ParityRow] = field(default_factory=list)


def _version(dist: str) -> str:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def build_graph(
    model: str = DEFAULT_MODEL, weights: str = "DEFAULT", seed: int = 0, labels_output: bool = False, **settings: Any
) -> tuple[SegmentationGraph, ModelMetadata]:
    """The PyTorch side: the wrapped model with its weights, and the metadata describing it.

    ``settings`` are further ``ExportConfig`` fields (``num_classes``, ``classes_file``, ``model_args``...)."""
    config = ExportConfig(model=model, weights=weights, seed=seed, labels_output=labels_output, **settings)
    return build_from_config(config)


def build_from_config(config: ExportConfig) -> tuple[SegmentationGraph, ModelMetadata]:
    names = parse_classes(config.classes_file) if config.classes_file else None
    if is_hf_name(config.model):
        net, identity, extra, probed = _build_hf(config, names)
        graph = SegmentationGraph(net, config.labels_output, probed.input_multiple, probed.resize_output)
        count, voc_default = probed.classes, False
    elif is_callable_name(config.model):
        net, identity, extra, probed = _build_callable(config, names)
        graph = SegmentationGraph(net, config.labels_output, probed.input_multiple, probed.resize_output)
        count, voc_default = probed.classes, False
    else:
        net, identity, extra, count = _build_table_model(config, names)
        graph = SegmentationGraph(net, config.labels_output, config.input_multiple or 1)
        voc_default = True
    classes, palette = class_names_and_colours(count, names, config.palette_file, voc_default)
    meta = ModelMetadata(
        model=config.model,
        classes=classes,
        palette=palette,
        mean=tuple(config.mean),  # type: ignore[arg-type]  # three numbers (ExportConfig checks)
        std=tuple(config.std),  # type: ignore[arg-type]
        channel_order=config.channel_order,
        output=OUTPUT_LABELS if config.labels_output else OUTPUT_LOGITS,
        weights=identity,
        versions={
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "onnx": onnx.__version__,
            "onnxscript": _version("onnxscript"),
            "onnxruntime": ort.__version__,
            "segtool": _version("segtool"),
            "python": platform.python_version(),
        },
        extra=extra,
    )
    return graph.eval().requires_grad_(False), meta  # never trained here (and FLOP counting hooks need it)


def _count_flag(config: ExportConfig, names: tuple[str, ...] | None) -> int | None:
    """The class count the user stated (--num-classes, or the classes file), checked for agreement."""
    if names is not None and config.num_classes is not None and len(names) != config.num_classes:
        raise UsageError(
            f"--classes {config.classes_file} lists {len(names)} classes but --num-classes is {config.num_classes}"
        )
    if config.num_classes is not None:
        return config.num_classes
    return len(names) if names is not None else None


def _agree(stated: int | None, found: int, where: str, config: ExportConfig, names: tuple[str, ...] | None) -> None:
    """The classes file and --num-classes must match the network's class count (named ``where``)."""
    if stated is None or stated == found:
        return
    if names is not None:
        flag = f"--classes {config.classes_file} lists {len(names)} classes"
    else:
        flag = f"--num-classes is {config.num_classes}"
    raise UsageError(f"{flag} but {where} has {found}: give one name per class, in the order of its outputs")


def _build_table_model(config: ExportConfig, names: tuple[str, ...] | None) -> tuple[Net, dict, Extras, int]:
    """A torchvision model with the class count of its weights (the checkpoint's classifier)."""
    spec = get_spec(config.model)
    stated = _count_flag(config, names)
    checkpoint: Checkpoint | None = None
    if config.random_weights or config.weights.upper() == "DEFAULT" or is_enum_member(spec, config.weights):
        state, identity = resolve_weights(spec, config.weights, config.seed)
    else:
        checkpoint = read_checkpoint(Path(config.weights))
        state, identity = checkpoint.state, checkpoint.identity
    source = identity.get("file", config.weights)
    found = None
    if state is not None:  # the keys as the table model spells them (no module. prefix, no aux head)
        state = normalize_keys(state, spec.build(device="meta").state_dict())
        found = spec.classes_in(state)
    if checkpoint is not None:
        check_trained_as(checkpoint, source, spec.name, found)
    if found is None:  # random weights, or a checkpoint without the classifier (apply_state_dict says so)
        count = stated or len(spec.classes)
    else:
        count = found
        where = f"torchvision's {identity.get('name')}" if checkpoint is None else f"the checkpoint {source}"
        classifier = spec.classifier[0]
        if state is not None and classifier in state:
            where += f" ({classifier} {list(state[classifier].shape)})"
        _agree(stated, found, where, config, names)
    torch.manual_seed(config.seed)
    net = spec.build(count)
    if state is not None:
        apply_state_dict(net, state, source, spec.name)
    extra: Extras = {"published": spec.published()} if count == len(spec.classes) else {}  # torchvision's figures
    return net, identity, extra, count


def _build_callable(config: ExportConfig, names: tuple[str, ...] | None) -> tuple[Net, dict, Extras, Probe]:
    """Your own network: package.module:callable(**model_args), its weights, and what probing it showed."""
    spec = CallableSpec(config.model, config.model_args)
    stated = _count_flag(config, names)
    checkpoint = None
    if config.random_weights:
        identity: dict = {"kind": "random", "seed": config.seed}
    elif config.weights.upper() == "DEFAULT":
        identity = {"kind": "callable", "name": config.model}  # the weights the callable itself gives
    else:
        checkpoint = read_checkpoint(Path(config.weights))
        identity = checkpoint.identity
    torch.manual_seed(config.seed)
    net, kwargs = spec.build(stated)
    if checkpoint is not None:
        apply_state_dict(net, checkpoint.state, identity["file"], config.model)
    probed = probe(net, format_call(config.model, kwargs), config.input_multiple)
    if checkpoint is not None:
        check_trained_as(replace(checkpoint, trained_as=None), identity["file"], config.model, probed.classes)
    _agree(stated, probed.classes, f"{format_call(config.model, kwargs)}'s output", config, names)
    build = {
        "callable": config.model,
        "kwargs": {k: repr(v) for k, v in kwargs.items()},
        "input_multiple": probed.input_multiple,
        "resized_output": probed.resize_output,
    }
    return net, identity, Extras(build=build), probed


def _build_hf(config: ExportConfig, names: tuple[str, ...] | None) -> tuple[Net, dict, Extras, Probe]:
    """A local Hugging Face folder (``hf:DIR``) through transformers, probed like your own network."""
    net, identity = load_hf(config.model, config.seed, config.random_weights)
    probed = probe(net, config.model, config.input_multiple)
    _agree(_count_flag(config, names), probed.classes, f"{config.model}'s logits", config, names)
    build = {"huggingface": config.model, "input_multiple": probed.input_multiple,
             "resized_output": probed.resize_output}  # fmt: skip
    checked = check_post_processing(net, config.model)
    if checked is not None:
        build["post_processing"] = checked
    extra = Extras(build=build)
    if hf_reduce_labels_of(config.model):
        extra["reduce_labels"] = True
    return net, identity, extra, probed


def count_flops(graph: SegmentationGraph, height: int = 520, width: int = 520) -> dict:
    """FLOPs of one forward pass (2 per multiply-add, torch's counter), stored so the benchmark
    can report achieved GFLOP/s; convolution cost grows with the pixel count."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        graph(torch.zeros(1, 3, height, width))  # through the wrapper: a network may need its input padded
    total = counter.get_total_flops()
    return {"flops": int(total), "height": height, "width": width, "per_pixel": total / (height * width)}


def export_model(
    output: str | Path | None = None,
    config: ExportConfig | None = None,
    progress: Callable[[str], None] = lambda stage: None,
    **overrides,
) -> ExportResult:
    """Export ``config.model`` to ``output`` (default: ``config.default_output()``); returns the result.

    Keyword ``overrides`` replace fields of ``config`` (``export_model("m.onnx", weights="random")``).
    ``progress`` hears each stage as it starts. A failing parity gate raises ``ParityError`` with
    the table, and nothing is written. ``precision`` int8 or fp16 derives that variant from the
    verified fp32 graph and records its agreement with fp32 in the metadata (``segtool.variant``).
    """
    config = replace(config or ExportConfig(), **overrides)
    output = Path(output) if output is not None else config.default_output()
    config.check_paths(output)  # found now, not after a minute of exporting
    progress("loading weights")
    graph, meta = build_from_config(config)
    notes = []
    if graph.input_multiple > 1:
        notes.append(f"pads height and width to a multiple of {graph.input_multiple} (the network needs it)")
    if graph.resize_output:
        notes.append("upsamples the network's output to the input's size")
    if notes:
        progress(f"the graph {' and '.join(notes)}, so it takes any image size")
    progress("counting FLOPs")
    extra: Extras = {**meta.extra, "flops": count_flops(graph), "precision": config.precision}
    progress("exporting to ONNX (torch.onnx, dynamo)")
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    torch_log.setLevel(logging.CRITICAL)  # a failed first try logs torch's guard tracebacks
    first_failure: Exception | None = None
    try:
        proto = to_onnx(graph)
    except Exception as exc:  # a network that cannot take a batch of two: exported as before; the axis check names it
        proto, first_failure = None, exc
    finally:
        torch_log.setLevel(level)
    if proto is None:
        try:
            proto = to_onnx(graph, batch=1)
        except Exception:  # the exporter's own failure: one line (the first try's), the model's fault, not the input's
            assert first_failure is not None
            why = export_failure(first_failure)
            raise ModelError(f"torch.onnx cannot export {meta.model} ({why}); {output} was not written") from None
    proto.producer_name, proto.producer_version = "segtool", _version("segtool")
    proto.doc_string = f"{meta.model} ({meta.weights_label}) exported by segtool"
    progress("checking the graph (onnx.checker)")
    onnx.checker.check_model(proto, full_check=True)
    fixed = fixed_axes(proto)
    if fixed:
        raise ModelError(f"the export fixed {fixed[0]}: the network's code ties it to the example input (a literal "
                         f"size, or a size read as a number); segtool files take any batch, height and width; "
                         f"{output} was not written")  # fmt: skip
    rows: list[parity.ParityRow] = []
    if config.verify:
        gate = config.gate
        progress(f"parity gate: PyTorch vs ONNX Runtime on {len(config.shapes)} shapes")
        try:
            rows = parity.compare(graph, proto.SerializeToString(), config.shapes, meta.mean, meta.std, gate)
        except SegtoolError:
            raise
        except Exception as exc:  # PyTorch or ONNX Runtime cannot run a gate shape: one line, no traceback
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
            raise ParityError(f"parity gate could not run ({type(exc).__name__}: {first}); {output} was not written",
                              []) from None  # fmt: skip
        extra["parity"] = {
            **asdict(gate),
            "rule": gate.describe(),
            "provider": "CPUExecutionProvider",
            "rows": [r.as_dict() for r in rows],
        }
        if not all(r.passes(gate) for r in rows):
            message = (
                f"parity gate failed ({gate.describe()}): ONNX output differs from PyTorch; {output} was not written"
            )
            raise ParityError(message, rows)
    if config.precision != "fp32":
        from .variants import make_variant

        progress(f"making the {config.precision} variant")
        data, record = make_variant(proto.SerializeToString(), config, meta.mean, meta.std, progress)
        extra["variant"] = record
        proto = onnx.load_from_string(data)
        del proto.metadata_props[:]
    meta = replace(meta, extra=extra)
    onnx.helper.set_model_props(proto, meta.to_props())
    progress(f"writing {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, proto.SerializeToString())
    if config.agreements:
        from segtool.runtime.tools.precisions import record_agreements

        meta = record_agreements(output, meta, config.calibration, progress)
    return ExportResult(output, meta, rows)
