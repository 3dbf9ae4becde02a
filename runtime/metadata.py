"""What an exported model says about itself, stored as ONNX ``metadata_props``.

Like torchvision's weights enums, everything needed to use the model (classes, palette,
normalization, what the output means) and where it came from (weights, versions, parity)
travels with the weights, here inside the .onnx file. Export writes it with ``to_props``;
the runtime reads it back through ONNX Runtime with ``from_props``, so no torch or onnx
import is needed at run time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from .errors import SegtoolError

FORMAT_VERSION = "1"
PREFIX = "segtool."

OUTPUT_LOGITS = "logits"  # float32 [N, C, H, W]
OUTPUT_LABELS = "labels"  # uint8 [N, H, W], argmax done in the graph


@dataclass(frozen=True)
class ModelMetadata:
    model: str
    classes: tuple[str, ...]
    palette: np.ndarray  # uint8 (len(classes), 3), RGB
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str  # channel order the graph expects: "RGB"
    output: str  # OUTPUT_LOGITS or OUTPUT_LABELS
    weights: dict  # {"kind": "torchvision"|"file"|"random", ...}
    versions: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # other segtool.* keys, parsed JSON where possible

    @property
    def random_weights(self) -> bool:
        return self.weights.get("kind") == "random"

    @property
    def precision(self) -> str:
        """fp32, int8 (CPU-targeted) or fp16 (GPU-targeted)."""
        return str(self.extra.get("precision", "fp32"))

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
        return str(self.weights)

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
    def from_props(cls, props: dict[str, str], source: str = "model") -> "ModelMetadata":
        ours = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not ours:
            raise SegtoolError(f"{source} has no segtool metadata: export it with `segtool export`")
        try:
            if ours.pop("format") != FORMAT_VERSION:
                raise SegtoolError(f"{source} uses an unknown segtool metadata format; re-export it")
            classes = tuple(json.loads(ours.pop("classes")))
            palette = np.array(json.loads(ours.pop("palette")), dtype=np.uint8).reshape(-1, 3)
            meta = cls(
                model=ours.pop("model"),
                classes=classes,
                palette=palette,
                mean=tuple(json.loads(ours.pop("mean"))),
                std=tuple(json.loads(ours.pop("std"))),
                channel_order=ours.pop("channel_order"),
                output=ours.pop("output"),
                weights=json.loads(ours.pop("weights")),
                versions=json.loads(ours.pop("versions", "{}")),
                extra={k: _maybe_json(v) for k, v in ours.items()},
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise SegtoolError(f"{source} has incomplete segtool metadata ({exc}); re-export it") from None
        if len(meta.palette) < len(meta.classes) or meta.channel_order not in ("RGB", "BGR"):
            raise SegtoolError(f"{source} has inconsistent segtool metadata; re-export it")
        if meta.output not in (OUTPUT_LOGITS, OUTPUT_LABELS):
            raise SegtoolError(f"{source} declares an unknown output kind {meta.output!r}")
        return meta


def _maybe_json(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value
