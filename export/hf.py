"""``segtool export --model hf:DIR``: a local Hugging Face segmentation folder (``save_pretrained``'s
layout: ``config.json``, ``preprocessor_config.json``, the weights) -> the same verified ONNX export.

The network is ``transformers``' ``AutoModelForSemanticSegmentation`` read from the folder only
(``local_files_only``: nothing is downloaded); its ``logits`` (SegFormer's are 1/4 of the input) go
through segtool's graph wrapper like any ``package.module:callable``, so the parity gate compares
the ONNX file with the Hugging Face forward itself. Class names come from ``config.json``'s
``id2label`` and the normalization from ``preprocessor_config.json`` (``beside``), unless flags say
otherwise. Needs the ``hf`` extra (``pip install 'segtool[hf]'``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from segtool.runtime.errors import UsageError

from .beside import HF_CONFIG, HF_PROCESSOR, hf_classes, hf_normalization

PREFIX = "hf:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hf_name(model: str) -> bool:
    return model.startswith(PREFIX)


def hf_folder(model: str) -> Path:
    """The local folder ``hf:DIR`` names, or one line saying why it is not one (nothing is downloaded)."""
    folder = Path(model[len(PREFIX) :]).expanduser()
    if not folder.is_dir():
        text = model[len(PREFIX) :]
        hub = "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1
        hint = (f"; segtool never downloads: `huggingface-cli download {text} --local-dir DIR`, then --model hf:DIR"
                if hub else "")  # fmt: skip
        raise UsageError(f"--model {model}: no local folder {folder}{hint}")
    if not (folder / HF_CONFIG).is_file():
        raise UsageError(f"--model {model}: {folder} has no {HF_CONFIG} (save_pretrained writes one)")
    return folder


def hf_settings(model: str, settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """ExportConfig fields the folder gives (class names, mean/std) where ``settings`` (the flags) do not,
    and one line per value taken from a file. No torch or transformers import."""
    folder = hf_folder(model)
    taken: dict[str, Any] = {}
    notes = []
    if settings.get("classes_file") is None and hf_classes(folder / HF_CONFIG) is not None:
        taken["classes_file"] = folder / HF_CONFIG
        notes.append(f"classes from {folder / HF_CONFIG} (id2label)")
    if (folder / HF_PROCESSOR).is_file():
        mean, std, more = hf_normalization(folder / HF_PROCESSOR)
        for key, value in (("mean", mean), ("std", std)):
            if key not in settings:
                taken[key] = value
        if "mean" not in settings or "std" not in settings:
            notes.append(f"normalization from {folder / HF_PROCESSOR} (image_mean, image_std, rescale_factor)")
        notes += more
    return settings | taken, notes


def _weights_identity(folder: Path, config: Any) -> dict:
    found = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    digest = hashlib.sha256()
    if found is not None:
        with open(found, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return {
        "kind": "huggingface",
        "folder": folder.name,
        "file": found.name if found else None,
        "sha256": digest.hexdigest() if found else None,
        "model_type": getattr(config, "model_type", None),
        "architecture": (getattr(config, "architectures", None) or [None])[0],
    }


def load_hf(model: str, seed: int = 0, random_weights: bool = False):
    """(nn.Module giving [N, C, h, w] logits for [N, 3, H, W] pixels, weights identity)."""
    import torch

    folder = hf_folder(model)
    try:
        from transformers import AutoConfig, AutoModelForSemanticSegmentation
    except ImportError as exc:
        raise UsageError(f"--model hf:DIR needs transformers ({exc.name or 'transformers'} is not installed): "
                         "pip install 'segtool[hf]'") from None  # fmt: skip
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if random_weights:
            torch.manual_seed(seed)
            net = AutoModelForSemanticSegmentation.from_config(config)
            identity: dict = {"kind": "random", "seed": seed}
        else:
            net = AutoModelForSemanticSegmentation.from_pretrained(folder, local_files_only=True)
            identity = _weights_identity(folder, config)
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(
            f"--model {model}: transformers cannot load it as a semantic segmentation model ({first})"
        ) from None

    class LogitsOnly(torch.nn.Module):
        """``model(pixel_values=x).logits``: the tensor segtool's graph wrapper takes."""

        def __init__(self, inner):
            super().__init__()
            self.net = inner

        def forward(self, x):
            return self.net(pixel_values=x).logits

    return LogitsOnly(net.eval()), identity
