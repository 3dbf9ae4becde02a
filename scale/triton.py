"""`segtool triton`: a model repository for Triton Inference Server's ONNX Runtime backend (the
default) or its Python backend with segtool's runtime inside (``--backend python``, below and in
``segtool.scale.triton_python``).

Writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx`` (the exported file, unchanged),
with the external data files it names beside it in ``1/`` (ONNX Runtime reads them from the
model's folder: without them Triton cannot load the model).
The config declares the graph's own input and output (``image`` TYPE_FP32 [3, -1, -1] with a
batch dimension when ``max_batch_size`` > 0), and can add instance groups, dynamic batching and
the TensorRT accelerator; segtool's metadata (classes, palette, normalization, weights) rides
along as string parameters. See Triton's model configuration documentation.

``--backend python`` writes ``REPO/NAME/1/model.py`` (``triton_python.MODEL_PY``) beside
``model.onnx``: an encoded image's bytes (``image``, TYPE_UINT8 [-1], ragged batches) in,
``labels`` (TYPE_UINT8 [-1, -1]) and ``shares`` (TYPE_FP32 [classes]) out; ``EXECUTION_ENV_PATH``
names the environment with segtool (default: the one running this command).

An existing ``--repo`` must look like a Triton repository (model folders only, each with a
config.pbtxt or version folders): nothing is written into any other folder.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from segtool.runtime.errors import ModelError, OutputError, UsageError
from segtool.runtime.files.images import atomic_write_bytes
from segtool.runtime.model.external import external_locations, safe_location
from segtool.runtime.model.metadata import PREFIX, REQUIRED
from segtool.runtime.model.segmenter import Segmenter
from segtool.scale.triton_python import MODEL_PY

log = logging.getLogger(__name__)

TYPES = {
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
}
# A model's folder name: letters, digits, "_", "-" and ".", not first ("..", ".hidden", "-flag"), at most 255
# bytes (one path component). Triton refuses "/" and ".." in a model name; this is narrower, and safe as a
# folder name on any system and as a string in config.pbtxt.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


INSTANCES = "instance_group [\n  {{\n    count: {count}\n    kind: KIND_{kind}\n  }}\n]"
TENSORRT = """optimization {
  execution_accelerators {
    gpu_execution_accelerator: [
      {
        name: "tensorrt"
        parameters { key: "precision_mode" value: "PRECISION" }
      }
    ]
  }
}"""


@dataclass(frozen=True)
class TritonOptions:
    name: str | None = None  # default: the file's segtool.model
    max_batch_size: int = 8  # 0: no batching dimension in the config
    instances: int = 1
    kind: str = "gpu"  # gpu or cpu
    tensorrt: bool = False  # TensorRT accelerator in ONNX Runtime (GPU)
    dynamic_batching: bool = False
    max_queue_delay_us: int = 1000
    backend: str = "onnxruntime"  # or python
    python_env: str | None = None  # python backend: EXECUTION_ENV_PATH (None: this environment; "": none)


BACKENDS = ("onnxruntime", "python")


def _dims(shape, batched: bool) -> list[int]:
    dims = [d if isinstance(d, int) else -1 for d in shape]
    return dims[1:] if batched else dims


def _tensor(node, batched: bool) -> str:
    dims = ", ".join(str(d) for d in _dims(node.shape, batched))
    return f"  {{\n    name: {json.dumps(node.name)}\n    data_type: {TYPES[node.type]}\n    dims: [ {dims} ]\n  }}"


def model_name(seg: Segmenter, options: TritonOptions) -> str:
    """The model's name in Triton and its folder in the repository: ``--name``, else the file's
    ``segtool.model``. Either is refused unless it is a plain folder name (``MODEL_NAME``): a name
    from a file is data, and ``../x``, an absolute path or a ``"`` must not decide where files go."""
    name = options.name if options.name is not None else seg.meta.model
    if MODEL_NAME.fullmatch(name):
        return name
    rule = 'letters, digits, "_", "-" and "." (not first), at most 255'
    if options.name is not None:
        raise UsageError(f"--name {name!r} cannot name a Triton model: use {rule}")
    raise ModelError(
        f"model name {name!r} (from the file's metadata) cannot name a Triton model: give one with --name ({rule})"
    )


def config_text(seg: Segmenter, options: TritonOptions) -> str:
    """config.pbtxt (protobuf text format of Triton's ModelConfig) for the model ``seg`` holds."""
    if options.kind not in ("gpu", "cpu"):
        raise UsageError(f"--kind takes gpu or cpu (got {options.kind!r})")
    if options.backend not in BACKENDS:
        raise UsageError(f"--backend takes {' or '.join(BACKENDS)} (got {options.backend!r})")
    if options.tensorrt and options.kind != "gpu":
        raise UsageError("--tensorrt needs --kind gpu")
    if options.tensorrt and options.backend != "onnxruntime":
        raise UsageError("--tensorrt is ONNX Runtime's accelerator: it needs --backend onnxruntime")
    meta = seg.meta
    batched = options.max_batch_size > 0
    if batched and seg.fixed_batch is not None:  # Triton batches along a dimension the graph leaves open
        log.warning(
            "the graph takes batches of exactly %d: writing max_batch_size 0 (no batching by Triton)", seg.fixed_batch
        )
        if options.dynamic_batching:
            raise UsageError(
                "--dynamic-batching needs a graph with an open batch dimension (this one takes batches of "
                f"exactly {seg.fixed_batch}); use --max-batch 0"
            )
        batched = False
    if options.backend == "python":
        ragged = "\n    allow_ragged_batch: true" if batched else ""  # images of any length in one batch
        image = f'  {{\n    name: "image"\n    data_type: TYPE_UINT8\n    dims: [ -1 ]{ragged}\n  }}'
        labels = '  {\n    name: "labels"\n    data_type: TYPE_UINT8\n    dims: [ -1, -1 ]\n  }'
        shares = f'  {{\n    name: "shares"\n    data_type: TYPE_FP32\n    dims: [ {len(meta.classes)} ]\n  }}'
        inputs, outputs = image, f"{labels},\n{shares}"
    else:
        inputs = ",\n".join(_tensor(i, batched) for i in seg.session.get_inputs())
        outputs = ",\n".join(_tensor(o, batched) for o in seg.session.get_outputs())
    lines = [
        f"name: {json.dumps(model_name(seg, options))}",
        f"backend: {json.dumps(options.backend)}",
        f"max_batch_size: {options.max_batch_size if batched else 0}",
        f"input [\n{inputs}\n]",
        f"output [\n{outputs}\n]",
        INSTANCES.format(count=options.instances, kind=options.kind.upper()),
    ]
    if options.dynamic_batching:
        if not batched:
            raise UsageError("--dynamic-batching needs --max-batch N > 0")
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {options.max_queue_delay_us}\n}}")
    if options.tensorrt:
        precision = "FP16" if meta.precision == "fp16" else "FP32"
        lines.append(TENSORRT.replace("PRECISION", precision))
    props = meta.to_props()  # the file's own segtool.* properties: the required ones and the precision
    parameters = {PREFIX + key: props[PREFIX + key] for key in REQUIRED} | {PREFIX + "precision": meta.precision}
    for key in ("output_stride", "input_size"):  # what a client must know to use the raw output
        if PREFIX + key in props:
            parameters[PREFIX + key] = props[PREFIX + key]
    if options.backend == "python" and (env := python_env(options)):
        parameters["EXECUTION_ENV_PATH"] = env
    for key, value in parameters.items():
        lines.append(f"parameters {{\n  key: {json.dumps(key)}\n  value: {{ string_value: {json.dumps(value)} }}\n}}")
    return "\n".join(lines) + "\n"


def python_env(options: TritonOptions) -> str:
    """EXECUTION_ENV_PATH for the Python backend: ``--python-env``, else this environment when the
    backend can activate it (it sources ``bin/activate``), else none (the server's own Python must
    then import segtool)."""
    if options.python_env is not None:
        if options.python_env and not (Path(options.python_env) / "bin" / "activate").is_file():
            raise UsageError(f"--python-env {options.python_env}: no bin/activate there (a venv or conda prefix)")
        return str(Path(options.python_env).resolve()) if options.python_env else ""
    if (Path(sys.prefix) / "bin" / "activate").is_file():
        return sys.prefix
    log.warning(
        "%s has no bin/activate: Triton's Python must import segtool by itself (or give --python-env)", sys.prefix
    )
    return ""


def check_repository(repo: Path) -> None:
    """Refuse to write into a folder that is not (or not yet) a Triton model repository."""
    if not repo.exists():
        return
    if not repo.is_dir():
        raise UsageError(f"--repo {repo} is not a folder")
    for entry in sorted(repo.iterdir()):
        if entry.name.startswith("."):
            continue
        model_folder = entry.is_dir() and (
            (entry / "config.pbtxt").is_file() or any(v.is_dir() and v.name.isdigit() for v in entry.iterdir())
        )
        if not model_folder:
            what = f"{entry.name}/ has no config.pbtxt" if entry.is_dir() else f"{entry.name} is a file"
            raise UsageError(
                f"--repo {repo} is not a Triton model repository ({what}): give a new or empty folder, or a repository"
            )


def write_repository(model: Path, repo: Path, options: TritonOptions = TritonOptions(), device: str = "cpu") -> Path:
    """Write (or replace) one model's folder in a Triton model repository; returns that folder."""
    seg = Segmenter(model, device=device, warn_random=False)  # opens with its external data, or fails here
    text = config_text(seg, options)
    data = [safe_location(location, model) for location in external_locations(model)]
    missing = [str(model.parent / d) for d in data if not (model.parent / d).is_file()]
    if missing:
        raise ModelError(f"{model}: external data file {missing[0]} not found")
    check_repository(repo)
    folder = repo / model_name(seg, options)
    version = folder / "1"
    try:
        version.mkdir(parents=True, exist_ok=True)
        for relative in data:  # the data first: model.onnx never names files that are not there yet
            target = version / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy(model.parent / relative, target)
        _copy(model, version / "model.onnx")
        if options.backend == "python":
            atomic_write_bytes(version / "model.py", MODEL_PY.encode())
    except OSError as exc:
        raise OutputError(f"cannot write the Triton repository {folder}: {exc.strerror or exc}") from None
    atomic_write_bytes(folder / "config.pbtxt", text.encode())
    return folder


def _copy(source: Path, target: Path) -> None:
    temp = target.with_name(f".{target.name}.partial")
    try:
        shutil.copyfile(source, temp)
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
