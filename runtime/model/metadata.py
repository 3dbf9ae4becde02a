"""What an exported model says about itself, stored as ONNX ``metadata_props``.

Like torchvision's weights enums, everything needed to use the model (classes, palette,
normalization, what the output means) and where it came from (weights, versions, parity)
travels with the weights, here inside the .onnx file. Export writes it with ``to_props``;
the runtime reads it back through ONNX Runtime with ``from_session``, which validates every
field and checks it against the graph, so a broken file is one clear error naming the field,
never a traceback later. No torch or onnx import is needed at run time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, get_args

import numpy as np

from segtool.runtime.errors import ModelError

FORMAT_VERSION = "1"
PREFIX = "segtool."

OutputKind = Literal["logits", "labels"]
OUTPUT_LOGITS: OutputKind = "logits"  # float32 [N, C, H, W]
OUTPUT_LABELS: OutputKind = "labels"  # uint8 [N, H, W], argmax done in the graph
Precision = Literal["fp32", "int8", "fp16"]  # fp32; int8 for the CPU provider; fp16 for GPU providers
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
#: torchvision's eval transform for ImageNet-trained backbones (RGB in [0, 1]); the default for every export
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_CLASSES = 256  # labels are uint8
NO_METADATA = "has no segtool metadata (not exported by segtool)"
REQUIRED = ("format", "model", "classes", "palette", "mean", "std", "channel_order", "output", "weights")


class Extras(TypedDict, total=False):
    """The optional segtool.* keys an export writes besides the required ones (all JSON in the file)."""

    precision: Precision
    published: dict  # torchvision's published accuracy and checkpoint identity for its weights
    flops: dict  # {"flops", "height", "width", "per_pixel"} of one forward pass
    parity: dict  # the fp32 gate: tolerances, rule, provider, one row per shape
    variant: dict  # int8/fp16: agreement with fp32, target, met, calibration, fp32 tensors
    build: dict  # --model package.module:callable: the call and its settings
    adopted: dict  # `segtool adopt`: the source file, its producer, the input/output it had, what was dropped
    output_stride: int  # the output is 1/stride of the input's height and width (the runtime upsamples it)
    input_size: list  # [height, width] when the graph only takes that size
    reduce_labels: bool  # trained with ground-truth 0 ignored, the rest shifted down (eval does the same)
    agreements: dict  # other engines' label agreement with ONNX Runtime CPU (runtime.tools.precisions, model.choice)


@dataclass(frozen=True)
class ModelMetadata:
    model: str
    classes: tuple[str, ...]
    palette: np.ndarray  # uint8 (len(classes), 3), RGB
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str  # channel order the graph expects: "RGB"
    output: OutputKind
    weights: dict
    versions: dict = field(default_factory=dict)
    extra: Extras = field(default_factory=lambda: Extras())  # other segtool.* keys, parsed JSON where possible

    @property
    def random_weights(self) -> bool:
        return self.weights.get("kind") == "random"

    @property
    def precision(self) -> Precision:
        """fp32, int8 (CPU-targeted) or fp16 (GPU-targeted)."""
        return self.extra.get("precision", "fp32")

    @property
    def weights_label(self) -> str:
        """One short human string for the weights: the thing every output must be honest about."""
        kind = self.weights.get("kind")
        if kind == "random":
            return f"RANDOM weights (seed {self.weights.get('seed')})"
        if kind == "torchvision":
            return f"torchvision {self.weights.get('name')}"
        if kind == "file":
            return f"checkpoint {self.weights.get('file')} (sha256 {str(self.weights.get('sha256'))[:12]})"
        if kind == "adopted":
            return f"adopted ONNX file {self.weights.get('file')} (sha256 {str(self.weights.get('sha256'))[:12]})"
        if kind == "callable":
            return f"the weights {self.weights.get('name')} itself gives"
        if kind == "huggingface":
            return f"Hugging Face folder {self.weights.get('folder')} (sha256 {str(self.weights.get('sha256'))[:12]})"
        plain = ", ".join(f"{k} {v}" for k, v in sorted(self.weights.items()) if isinstance(v, (str, int, float)))
        return plain or "weights of unknown origin"

    @property
    def published(self) -> dict | None:
        """torchvision's published accuracy, only when the weights ARE the ones it was measured on:
        torchvision's download of that enum member, or a local copy of its checkpoint file (same name,
        sha256 starting with the prefix in that name). None for random, other, or adopted weights."""
        published = self.extra.get("published")
        if not isinstance(published, dict):
            return None
        kind = self.weights.get("kind")
        if kind == "torchvision" and self.weights.get("name") == published.get("weights"):
            return published
        prefix = str(published.get("sha256_prefix") or "")
        if (kind == "file" and prefix and self.weights.get("file") == published.get("checkpoint")
                and str(self.weights.get("sha256", "")).startswith(prefix)):  # fmt: skip
            return published
        return None

    @property
    def verified(self) -> bool:
        """Whether this graph was checked against PyTorch: the export's parity gate ran (``extra``
        has parity rows) and every row passed it. False for --no-verify exports and adopted files."""
        parity = self.extra.get("parity")
        rows = parity.get("rows") if isinstance(parity, dict) else None
        if not isinstance(parity, dict) or not isinstance(rows, list) or not rows:
            return False
        least = parity.get("min_agreement", 1.0)
        return all(
            isinstance(r, dict)
            and (r.get("ratio") is None or r["ratio"] <= 1.0)
            and isinstance(r.get("agreement"), (int, float))
            and r["agreement"] >= least
            for r in rows
        )

    @property
    def verified_label(self) -> str:
        """One line on whether the ONNX graph was checked against the PyTorch model it came from."""
        if self.verified:
            rows = self.extra["parity"]["rows"]
            return f"verified: matches PyTorch on {len(rows)} input shape(s) (parity gate)"
        if self.weights.get("kind") == "adopted":
            return "not verified: made outside segtool and adopted, never compared with PyTorch"
        if "parity" in self.extra:
            return "not verified: the parity gate did not pass"
        return "not verified: exported without the parity gate (--no-verify)"

    @property
    def normalization_label(self) -> str:
        return normalization_label(self.mean, self.std, self.channel_order)

    @property
    def output_stride(self) -> int:
        """1, or the factor the graph's output is smaller than its input by (recorded by `segtool adopt`)."""
        stride = self.extra.get("output_stride", 1)
        return stride if isinstance(stride, int) and not isinstance(stride, bool) and stride > 0 else 1

    def to_props(self) -> dict[str, str]:
        props = {
            "format": FORMAT_VERSION,
            "model": self.model,
            "classes": json.dumps(list(self.classes)),
            "palette": json.dumps(np.asarray(self.palette).tolist()),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "channel_order": self.channel_order,
            "output": self.output,
            "weights": json.dumps(self.weights, sort_keys=True),
            "versions": json.dumps(self.versions, sort_keys=True),
        }
        for key, value in self.extra.items():
            props[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return {PREFIX + k: v for k, v in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        """Parse and validate the segtool.* properties; ``ModelError`` naming the first bad field."""
        fields, problems = _parse(props)
        if problems and problems[0] == NO_METADATA:
            raise ModelError(f"{source}: {problems[0]}; an ONNX file made elsewhere becomes a segtool model with "
                             f"`segtool adopt {source} --classes CLASSES.txt`")  # fmt: skip
        if problems:
            raise ModelError(f"{source}: {problems[0]}; re-export it with `segtool export`")
        return cls(**fields)

    @classmethod
    def from_session(cls, session: Any, source: str = "model") -> ModelMetadata:
        """Read from an ONNX Runtime session and check the metadata against the graph's inputs/outputs."""
        props = session.get_modelmeta().custom_metadata_map
        meta = cls.from_props(props, source)
        problems = graph_problems(meta, session.get_inputs(), session.get_outputs())
        if problems:
            raise ModelError(f"{source}: {problems[0]}")
        return meta


def normalization_label(mean, std, channel_order: str) -> str:
    """Mean/std per channel, always named R, G, B (on the 0..255 scale), and the network's order."""
    per = ", ".join(f"{c} {m * 255:.6g}/{s * 255:.6g}" for c, m, s in zip("RGB", mean, std))
    return f"{per} (mean/std of 0..255 pixels); the network takes {channel_order}"


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _numbers(value: Any, length: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == length
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def _parse(props: dict[str, str]) -> tuple[dict, list[str]]:
    """(constructor fields, problems) for segtool.* properties; problems name the field."""
    ours = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
    if not ours:
        return {}, [NO_METADATA]
    missing = [k for k in REQUIRED if k not in ours]
    if missing:
        return {}, [f"segtool metadata is incomplete: no {', '.join(PREFIX + k for k in missing)}"]
    if ours["format"] != FORMAT_VERSION:
        return {}, [f"{PREFIX}format {ours['format']!r} is unknown to this segtool (expects {FORMAT_VERSION})"]
    parsed = {k: _maybe_json(v) for k, v in ours.items()}
    problems = []
    classes, palette = parsed["classes"], parsed["palette"]
    if not (isinstance(classes, list) and 0 < len(classes) <= MAX_CLASSES and all(isinstance(c, str) for c in classes)):
        problems.append(f"{PREFIX}classes must be a list of 1 to {MAX_CLASSES} names")
        classes = []
    if not (isinstance(palette, list) and all(_numbers(c, 3) for c in palette)):
        problems.append(f"{PREFIX}palette must be a list of [r, g, b] triples")
    elif any(not (0 <= v <= 255 and float(v).is_integer()) for c in palette for v in c):
        problems.append(f"{PREFIX}palette has a value outside the integers 0..255")
    elif len(palette) < len(classes):
        problems.append(f"{PREFIX}palette has {len(palette)} colours for {len(classes)} classes")
    for key in ("mean", "std"):
        if not _numbers(parsed[key], 3):
            problems.append(f"{PREFIX}{key} must be 3 finite numbers (got {ours[key][:40]})")
    if _numbers(parsed["std"], 3) and min(parsed["std"]) <= 0:
        problems.append(f"{PREFIX}std must be positive (got {parsed['std']})")
    if parsed["channel_order"] not in ("RGB", "BGR"):
        problems.append(f"{PREFIX}channel_order must be RGB or BGR (got {ours['channel_order'][:20]!r})")
    if parsed["output"] not in (OUTPUT_LOGITS, OUTPUT_LABELS):
        problems.append(f"{PREFIX}output must be logits or labels (got {ours['output'][:20]!r})")
    if not isinstance(parsed["weights"], dict):
        problems.append(f"{PREFIX}weights must be a JSON object")
    versions = parsed.pop("versions", {})
    if not isinstance(versions, dict):
        problems.append(f"{PREFIX}versions must be a JSON object")
    if problems:
        return {}, problems
    fields = {
        "model": str(parsed.pop("model")),
        "classes": tuple(parsed.pop("classes")),
        "palette": np.array(parsed.pop("palette"), dtype=np.uint8).reshape(-1, 3),
        "mean": tuple(float(v) for v in parsed.pop("mean")),
        "std": tuple(float(v) for v in parsed.pop("std")),
        "channel_order": parsed.pop("channel_order"),
        "output": parsed.pop("output"),
        "weights": parsed.pop("weights"),
        "versions": versions,
    }
    parsed.pop("format")
    fields["extra"] = Extras(**parsed)  # type: ignore[typeddict-item]  # unknown keys are kept as they are
    return fields, []


def graph_problems(meta: ModelMetadata, inputs: list, outputs: list) -> list[str]:
    """What in the metadata contradicts the graph (ONNX Runtime NodeArg lists), or does not fit segtool."""
    problems = []
    if len(inputs) != 1 or len(outputs) < 1:
        return [f"a segmentation graph has one input and an output (this one has {len(inputs)} and {len(outputs)})"]
    image, out = inputs[0], outputs[0]
    if len(image.shape) != 4 or (isinstance(image.shape[1], int) and image.shape[1] != 3):
        problems.append(f"input {image.name} is {image.shape}, not [batch, 3, height, width]")
    if image.type not in ("tensor(float)",):
        problems.append(f"input {image.name} is {image.type}, not tensor(float)")
    if meta.output == OUTPUT_LOGITS:
        if out.type not in ("tensor(float)", "tensor(float16)") or len(out.shape) != 4:
            problems.append(
                f"{PREFIX}output says logits but the graph's output {out.name} is {out.type} of rank {len(out.shape)}"
            )
        elif isinstance(out.shape[1], int) and out.shape[1] != len(meta.classes):
            problems.append(
                f"{PREFIX}classes lists {len(meta.classes)} classes but the graph outputs {out.shape[1]} channels"
            )
    elif out.type not in ("tensor(uint8)", "tensor(int64)", "tensor(int32)") or not _labels_shape(out.shape):
        problems.append(
            f"{PREFIX}output says labels but the graph's output {out.name} is {out.type} {out.shape}, not [N, H, W] "
            "or [N, 1, H, W]"
        )
    return problems


def _labels_shape(shape: list) -> bool:
    """[N, H, W], or [N, 1, H, W] as mmdeploy writes them (a named or unknown second dim is taken as 1)."""
    return len(shape) == 3 or (len(shape) == 4 and (shape[1] == 1 or not isinstance(shape[1], int)))


def metadata_problems(session: Any) -> list[str]:
    """Every problem with a session's segtool metadata, for ``segtool info`` (empty if it is sound)."""
    fields, problems = _parse(session.get_modelmeta().custom_metadata_map)
    if problems:
        return problems
    return graph_problems(ModelMetadata(**fields), session.get_inputs(), session.get_outputs())
