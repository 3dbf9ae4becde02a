"""``adopt_model``: an ONNX file made elsewhere -> a segtool model (needs onnx, not torch).

A segmentation network exported by plain ``torch.onnx.export`` (or any other tool) has no
segtool metadata, may have several outputs (torchvision's ``out`` and ``aux``), other tensor
names, a fixed input size, an output smaller than its input, or its weights in external data
files. Adopting it:

1. checks the graph: exactly one 4-D float image input ``[N, 3, H, W]``; at least one
   ``[N, C, H', W']`` float output;
2. runs it once on ONNX Runtime (CPU) at its fixed size, or at a probe size when H and W are
   open, to learn what the declared shapes may not say: the class channels (checked against the
   class names) and the output stride (H / H');
3. picks the logits output: ``--logits NAME``, else ``out`` (torchvision's main head, over
   ``aux``), else the first 4-D float output whose name does not say aux; the copy keeps only
   that output (the nodes that only fed the others are pruned), renamed ``logits``, and its input
   renamed ``image``, the names every segtool model has (the int8/fp16 variants and Triton's
   config rely on them);
4. writes a copy with segtool's metadata: classes, palette, normalization, the weights' identity
   ``{"kind": "adopted", "file", "sha256"}``, the recorded stride and fixed size, and no parity
   record: the file was never compared with PyTorch, and every output says "not verified";
5. re-opens the copy as the runtime will and checks that it gives the same output as the
   original on the probe input, then moves it into place. External data is carried along: the copy
   is one self-contained file under protobuf's 2 GB limit, else ``OUT.onnx`` + ``OUT.onnx.data``.

The input file is never changed (unless ``output`` names it).
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from segtool.runtime.errors import ModelError, OutputError, UsageError
from segtool.runtime.files.images import ensure_writable_dir, sha256_of
from segtool.runtime.model.classes import generated_palette
from segtool.runtime.model.external import external_locations, safe_location
from segtool.runtime.model.metadata import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_CLASSES,
    OUTPUT_LABELS,
    OUTPUT_LOGITS,
    PREFIX,
    Extras,
    ModelMetadata,
)
from segtool.runtime.model.segmenter import Segmenter
from segtool.runtime.model.session import reference_session

INPUT_NAME, OUTPUT_NAME = "image", "logits"  # as segtool.export.graph names them
PROBE_SIZE = (256, 320)  # (height, width) for graphs with open H and W: multiples of 32 and 64
INLINE_LIMIT = 2_000_000_000  # protobuf's 2 GB, with room for the graph itself
NOT_VERIFIED = "not verified: made outside segtool and adopted, never compared with PyTorch"
_FLOATS = (np.float32, np.float16)
_LABELS = (np.uint8, np.int32, np.int64)


@dataclass
class AdoptResult:
    path: Path
    meta: ModelMetadata
    source_input: str  # the input's name in the original file
    source_output: str  # the output kept (renamed ``logits``)
    dropped: list[str] = field(default_factory=list)  # outputs left out of the copy
    data_files: list[Path] = field(default_factory=list)  # external data written beside the copy


def default_output(source: Path) -> Path:
    """``IN_segtool.onnx`` beside ``IN.onnx``."""
    return source.with_name(f"{source.stem}_segtool.onnx")


def _version(dist: str) -> str:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    """Declared dims: an int when fixed, the symbol's name when named, None when unknown."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]


def _describe(value: onnx.ValueInfoProto) -> str:
    elem = value.type.tensor_type.elem_type
    kind = onnx.TensorProto.DataType.Name(elem).lower() if elem else "unknown type"
    return f"{value.name} ({kind} [{', '.join('?' if d is None else str(d) for d in _dims(value))}])"


def image_input(model: onnx.ModelProto, source: Path) -> onnx.ValueInfoProto:
    """The one image input, or ``ModelError`` saying why the graph does not have one."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]  # IR < 4 lists weights as inputs
    if len(inputs) != 1:
        names = ", ".join(_describe(i) for i in inputs[:4]) + (", ..." if len(inputs) > 4 else "")
        raise ModelError(
            f"{source} has {len(inputs)} inputs ({names or 'none'}): segtool adopts graphs with one "
            "image input [N, 3, H, W]"
        )
    (image,) = inputs
    dims = _dims(image)
    channels_wrong = len(dims) == 4 and isinstance(dims[1], int) and dims[1] != 3
    if image.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or channels_wrong:
        raise ModelError(f"{source}: input {_describe(image)} is not a float [N, 3, H, W] image tensor")
    return image


def probe_input(dims: list[int | str | None]) -> np.ndarray:
    """A deterministic smooth-ish normalized batch at the graph's fixed dims, or the probe size."""
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1
    height = dims[2] if isinstance(dims[2], int) and dims[2] > 0 else PROBE_SIZE[0]
    width = dims[3] if isinstance(dims[3], int) and dims[3] > 0 else PROBE_SIZE[1]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [np.sin(x / 17 + c) + np.cos(y / 23 - c) for c in range(3)]
    return np.ascontiguousarray(np.broadcast_to(np.stack(planes)[None], (batch, 3, height, width)), np.float32)


def run_original(source: Path, input_name: str, tensor: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the original graph for ``tensor`` (ONNX Runtime, CPU)."""
    try:
        session = reference_session(str(source))
    except Exception as exc:
        raise ModelError(f"{source}: ONNX Runtime cannot load it ({_first_line(exc)})") from None
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, {input_name: tensor})
    except Exception as exc:
        shape = "x".join(map(str, tensor.shape))
        raise ModelError(f"{source}: ONNX Runtime cannot run it on a {shape} input ({_first_line(exc)})") from None
    return {name: np.asarray(v) for name, v in zip(names, values)}


def is_labels(value: np.ndarray, batch: int) -> bool:
    """Class indices computed in the graph (ArgMax): integer [N, H, W] or [N, 1, H, W]."""
    shaped = value.ndim == 3 or (value.ndim == 4 and value.shape[1] == 1)
    return shaped and value.dtype in _LABELS and value.shape[0] == batch


def pick_output(outputs: dict[str, np.ndarray], batch: int, wanted: str | None, source: Path) -> str:
    """The logits output: ``wanted``, else ``out``, else the first 4-D float one not named aux; a graph
    with no such output, the first labels output (integer [N, H, W] or [N, 1, H, W])."""
    candidates = [n for n, v in outputs.items() if v.ndim == 4 and v.dtype in _FLOATS and v.shape[0] == batch]
    labels = [n for n, v in outputs.items() if is_labels(v, batch)]
    listed = ", ".join(f"{n} ({v.dtype} {list(v.shape)})" for n, v in outputs.items())
    if wanted is not None:
        if wanted not in outputs:
            raise UsageError(f"--logits {wanted}: {source} has no output of that name (outputs: {listed})")
        if wanted not in candidates + labels:
            raise UsageError(
                f"--logits {wanted} is {outputs[wanted].dtype} {list(outputs[wanted].shape)}, not "
                "[N, C, H, W] float class scores nor [N, H, W] / [N, 1, H, W] integer labels"
            )
        return wanted
    if not candidates and labels:
        return labels[0]
    if not candidates:
        raise ModelError(
            f"{source} has no [N, C, H, W] float output of class scores nor [N, H, W] / [N, 1, H, W] integer "
            f"labels (outputs: {listed})"
        )
    if "out" in candidates:
        return "out"
    return next((n for n in candidates if "aux" not in n.lower()), candidates[0])


def output_stride(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> int | None:
    """1 when the output is the input's size, s when it is 1/s of it (rounded either way), else None."""
    (h, w), (oh, ow) = in_hw, out_hw
    if (oh, ow) == (h, w):
        return 1
    if not (0 < oh < h and 0 < ow < w):
        return None
    stride = round(h / oh)
    fits = lambda n, o: o in (n // stride, -(-n // stride))
    return stride if stride > 1 and fits(h, oh) and fits(w, ow) else None


# --- graph surgery: keep one output, prune, rename ----------------------------------------------


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _names_used(graph: onnx.GraphProto) -> set[str]:
    """Every value name the graph (and its subgraphs) reads or writes."""
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for sub in _subgraphs(node):
            names |= _names_used(sub)
    names.discard("")
    return names


def prune(graph: onnx.GraphProto, keep: str) -> list[str]:
    """Keep only the output ``keep`` and what computes it; returns the outputs dropped."""
    dropped = [o.name for o in graph.output if o.name != keep]
    kept_output = [o for o in graph.output if o.name == keep]
    del graph.output[:]
    graph.output.extend(kept_output)
    needed = {keep}
    nodes = []
    for node in reversed(graph.node):  # ONNX keeps nodes in topological order
        if any(o in needed for o in node.output if o):
            nodes.append(node)
            needed.update(i for i in node.input if i)
            for sub in _subgraphs(node):  # outer-scope values a branch or loop body reads
                needed |= _names_used(sub)
    nodes.reverse()
    del graph.node[:]
    graph.node.extend(nodes)
    for field_name in ("initializer", "value_info"):
        kept = [v for v in getattr(graph, field_name) if v.name in needed]
        del getattr(graph, field_name)[:]
        getattr(graph, field_name).extend(kept)
    kept_sparse = [s for s in graph.sparse_initializer if s.values.name in needed]
    del graph.sparse_initializer[:]
    graph.sparse_initializer.extend(kept_sparse)
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name in needed or i.name not in initializers]
    del graph.input[:]
    graph.input.extend(inputs)
    return dropped


def rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename the value ``old`` to ``new`` everywhere it is read or written (subgraphs included)."""
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        for names in (node.input, node.output):
            for k, name in enumerate(names):
                if name == old:
                    names[k] = new
        for sub in _subgraphs(node):
            rename(sub, old, new)


def rename_clear(graph: onnx.GraphProto, old: str, new: str) -> None:
    """``rename``, first moving any other value already called ``new`` out of the way."""
    if old == new:
        return
    used = _names_used(graph)
    if new in used:
        spare = next(f"{new}_{k}" for k in range(len(used) + 1) if f"{new}_{k}" not in used)
        rename(graph, new, spare)
    rename(graph, old, new)


# --- the whole step ------------------------------------------------------------------------------


def adopt_model(
    source: str | Path,
    classes: Sequence[str],
    palette: np.ndarray | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    channel_order: str = "RGB",
    output: str | Path | None = None,
    name: str | None = None,
    logits: str | None = None,
    inline_limit: int = INLINE_LIMIT,
    progress: Callable[[str], None] = lambda stage: None,
    agreements: bool = True,
    classes_from: str = "--classes",
    read_from: Sequence[str] = (),
    reduce_labels: bool = False,
) -> AdoptResult:
    """Write a segtool copy of the ONNX file ``source`` (see the module docstring); returns what was written."""
    source = Path(source)
    if not source.is_file():
        raise ModelError(f"model {source} not found")
    output = Path(output) if output is not None else default_output(source)
    if output.exists() and not output.is_file():
        raise UsageError(f"--output {output} exists and is not a regular file")
    ensure_writable_dir(output.parent)
    classes = tuple(classes)
    if not 0 < len(classes) <= MAX_CLASSES:
        raise UsageError(f"{len(classes)} class names: segtool takes 1 to {MAX_CLASSES}")
    palette = generated_palette(len(classes)) if palette is None else np.asarray(palette, dtype=np.uint8)
    if palette.shape != (len(classes), 3):
        raise UsageError(f"the palette has {len(palette)} colours for {len(classes)} classes")
    if channel_order not in ("RGB", "BGR"):
        raise UsageError(f"channel order {channel_order!r}: RGB or BGR")
    mean_3 = tuple(float(v) for v in mean)
    std_3 = tuple(float(v) for v in std)
    if len(mean_3) != 3 or len(std_3) != 3 or min(std_3) <= 0:
        raise UsageError(f"mean and std take 3 numbers each, std positive (got {list(mean_3)}, {list(std_3)})")

    progress(f"reading {source}")
    data_names = external_locations(source)
    try:
        model = onnx.load(str(source))  # external data is read in from beside the file
    except Exception as exc:
        raise ModelError(f"{source}: not a readable ONNX model ({_first_line(exc)})") from None
    image = image_input(model, source)
    dims = _dims(image)
    x = probe_input(dims)
    progress(f"running it once on ONNX Runtime (CPU) at {'x'.join(map(str, x.shape))}")
    outputs = run_original(source, image.name, x)
    chosen = pick_output(outputs, x.shape[0], logits, source)
    reference = outputs[chosen]
    labels_output = is_labels(reference, x.shape[0])
    if labels_output and reference.size and int(reference.max()) >= len(classes):
        raise UsageError(
            f"{classes_from} names {len(classes)} classes but output {chosen} holds class index "
            f"{int(reference.max())} on the probe input: it must name one class per index"
        )
    if not labels_output and reference.shape[1] != len(classes):
        raise UsageError(
            f"{classes_from} names {len(classes)} classes for the {reference.shape[1]} channels of output "
            f"{chosen}: it must name one class per channel, in channel order"
        )
    stride = output_stride(x.shape[2:], reference.shape[-2:])
    if stride is None:
        raise ModelError(
            f"{source}: output {chosen} is {reference.shape[-2]}x{reference.shape[-1]} for a "
            f"{x.shape[2]}x{x.shape[3]} input, not the input's size or 1/N of it"
        )
    fixed = all(isinstance(d, int) and d > 0 for d in dims[2:])

    kept_as = OUTPUT_LABELS if labels_output else OUTPUT_NAME  # as segtool's own --labels-output names it
    progress(f"keeping output {chosen} as {kept_as}, input {image.name} as {INPUT_NAME}")
    source_input = image.name
    dropped = prune(model.graph, chosen)
    rename_clear(model.graph, source_input, INPUT_NAME)
    rename_clear(model.graph, chosen, kept_as)
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p) or "unknown"
    identity: dict = {"kind": "adopted", "file": source.name, "sha256": sha256_of(source)}
    if data_names:
        identity["external_data"] = {loc: sha256_of(source.parent / safe_location(loc, source)) for loc in data_names}
    extra: Extras = {
        "precision": "fp16" if reference.dtype == np.float16 else "fp32",
        "adopted": {
            "source": source.name,
            "producer": producer,
            "input": source_input,
            "output": chosen,
            "dropped_outputs": dropped,
            "verified": NOT_VERIFIED,
            "probe": {"input": list(x.shape), "output": list(reference.shape)},
            "read_from": list(read_from),
        },
    }
    if reduce_labels:
        extra["reduce_labels"] = True
    if stride > 1:
        extra["output_stride"] = stride
    if fixed:
        extra["input_size"] = [int(dims[2]), int(dims[3])]  # type: ignore[arg-type]  # ints: checked above
    meta = ModelMetadata(
        model=name or source.stem,
        classes=classes,
        palette=palette,
        mean=mean_3,
        std=std_3,
        channel_order=channel_order,
        output=OUTPUT_LABELS if labels_output else OUTPUT_LOGITS,
        weights=identity,
        versions={
            "source_producer": producer,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "segtool": _version("segtool"),
            "python": platform.python_version(),
        },
        extra=extra,
    )
    others = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(others)
    onnx.helper.set_model_props(model, {p.key: p.value for p in others} | meta.to_props())
    data_files = _write_checked(model, output, x, reference, inline_limit, progress, chosen)
    if agreements:
        from segtool.runtime.tools.precisions import record_agreements

        meta = record_agreements(output, meta, None, progress)
    return AdoptResult(output, meta, source_input, chosen, dropped, data_files)


def _serialized_size(model: onnx.ModelProto) -> int:
    try:
        return model.ByteSize()
    except Exception:  # past what protobuf can count
        return 1 << 62


def _write_checked(
    model: onnx.ModelProto,
    output: Path,
    x: np.ndarray,
    reference: np.ndarray,
    inline_limit: int,
    progress: Callable[[str], None],
    chosen: str,
) -> list[Path]:
    """Write into a scratch folder beside ``output``, open it as the runtime will, compare with the
    original's output (``chosen``) on the probe input, then move the file(s) into place; the
    external data files written beside it."""
    scratch = Path(tempfile.mkdtemp(prefix=".segtool-adopt-", dir=output.parent))
    try:
        staged = scratch / output.name
        data_name = f"{output.name}.data"
        if _serialized_size(model) <= inline_limit:
            progress(f"writing one self-contained file {output}")
            staged.write_bytes(model.SerializeToString())
            data_files = []
        else:
            progress(f"writing {output} with its weights in {data_name} (over protobuf's 2 GB)")
            onnx.save_model(
                model,
                str(staged),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
            data_files = [data_name]
        progress("checking the copy: the runtime opens it and gives the original's output")
        seg = Segmenter(staged, device="cpu", warn_random=False)
        got = seg.forward(x)
        if got.size == reference.size and got.dtype not in _FLOATS:  # labels: [N, 1, H, W] comes back [N, H, W]
            reference = reference.reshape(got.shape)
        scale = max(1.0, float(np.abs(reference.astype(np.float32)).max()))
        if got.shape != reference.shape or not np.allclose(got, reference, rtol=1e-4, atol=1e-5 * scale):
            raise ModelError(
                f"the adopted copy of output {chosen} differs from the original's on the probe input; "
                f"nothing written to {output}"
            )
        del seg
        for name in data_files:  # the data first: the model never names a file that is not there yet
            (scratch / name).replace(output.parent / name)
        staged.replace(output)
    except OSError as exc:
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [output.parent / name for name in data_files]
