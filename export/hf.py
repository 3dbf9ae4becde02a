"""``segtool export --model hf:DIR``: a local Hugging Face segmentation folder (``save_pretrained``'s
layout: ``config.json``, ``preprocessor_config.json``, the weights) -> the same verified ONNX export.

The network is ``transformers``' ``AutoModelForSemanticSegmentation`` read from the folder only
(``local_files_only``: nothing is downloaded); its ``logits`` (SegFormer's are 1/4 of the input) go
through segtool's graph wrapper like any ``package.module:callable``, so the parity gate compares
the ONNX file with the Hugging Face forward itself. A query-based model (``QUERY_MODELS``:
Mask2Former, MaskFormer, OneFormer) loads as ``AutoModelForUniversalSegmentation`` and goes in
through ``hf_nets.QueryScores``, its image processor's semantic post-processing as graph ops.
Class names come from ``config.json``'s ``id2label`` and the normalization from
``preprocessor_config.json`` (``beside``), unless flags say otherwise. Needs the ``hf`` extra
(``pip install 'segtool[hf]'``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segtool.runtime.errors import UsageError

from .beside import HF_CONFIG, hf_classes, hf_normalization, hf_processor, hf_reduce_labels

PREFIX = "hf:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class QueryModel:
    """A query-based model (class and mask queries, no per-pixel logits) and its image processor's semantic
    post-processing: ``mask_size`` is the size its masks are first resized to (Mask2Former: 384x384)."""

    processor: str  # transformers' image processor class, whose post_process_semantic_segmentation is the reference
    mask_size: tuple[int, int] | None
    task: bool = False  # takes its task as text (OneFormer): "the task is semantic", tokenized by its processor


QUERY_MODELS = {
    "mask2former": QueryModel("Mask2FormerImageProcessor", (384, 384)),
    "maskformer": QueryModel("MaskFormerImageProcessor", None),
    "oneformer": QueryModel("OneFormerImageProcessor", None, task=True),
}
SEMANTIC_TASK = "the task is semantic"  # OneFormer's processor: f"the task is {task}"


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
    processor = hf_processor(folder)
    if processor is not None:
        mean, std, more = hf_normalization(processor)
        for key, value in (("mean", mean), ("std", std)):
            if key not in settings:
                taken[key] = value
        if "mean" not in settings or "std" not in settings:
            notes.append(f"normalization from {processor} (image_mean, image_std, rescale_factor)")
        notes += more
    return settings | taken, notes


def hf_reduce_labels_of(model: str) -> bool:
    """Whether the folder's image processor reduced the labels in training (``do_reduce_labels``)."""
    processor = hf_processor(hf_folder(model))
    return processor is not None and hf_reduce_labels(processor)


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

    from .hf_nets import LogitsOnly, QueryScores

    folder = hf_folder(model)
    try:
        import transformers
        from transformers import AutoConfig
    except ImportError as exc:
        raise UsageError(f"--model hf:DIR needs transformers ({exc.name or 'transformers'} is not installed): "
                         "pip install 'segtool[hf]'") from None  # fmt: skip
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        query = QUERY_MODELS.get(config.model_type)
        auto = (
            transformers.AutoModelForUniversalSegmentation if query else transformers.AutoModelForSemanticSegmentation
        )
        if random_weights:
            torch.manual_seed(seed)
            net = auto.from_config(config)
            identity: dict = {"kind": "random", "seed": seed}
        else:
            net = auto.from_pretrained(folder, local_files_only=True)
            identity = _weights_identity(folder, config)
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(
            f"--model {model}: transformers cannot load it as a semantic segmentation model ({first})"
        ) from None

    if query is None:
        return LogitsOnly(net.eval()), identity
    task = _task_tokens(folder, model, int(config.task_seq_len)) if query.task else None
    return QueryScores(net.eval(), query.mask_size, query.processor, task), identity


def _task_tokens(folder: Path, model: str, length: int):
    """OneFormer's semantic task prompt as its processor tokenizes it: input ids times attention mask,
    [1, length] (the model's ``task_seq_len``). Only the tokenizer is loaded: OneFormer's image processor
    reads class-info files, from the hub where they are not local."""
    import torch
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        tokens = tokenizer([SEMANTIC_TASK], padding="max_length", max_length=length, truncation=True)
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UsageError(
            f"--model {model}: OneFormer takes its task as text, and the folder's processor (its "
            f"tokenizer: tokenizer.json or vocab.json + merges.txt) does not load ({first})"
        ) from None
    return torch.tensor(tokens["input_ids"]) * torch.tensor(tokens["attention_mask"])


def check_post_processing(net, model: str, height: int = 96, width: int = 128) -> dict | None:
    """For a query-based model: the labels of ``QueryScores`` upsampled to the image (what the ONNX file
    computes) against its image processor's own ``post_process_semantic_segmentation``, on one random
    image. A record for the file; ``ModelError`` below 99.9% agreement. None for a per-pixel model."""
    import torch
    import torch.nn.functional as F
    import transformers

    from segtool.runtime.errors import ModelError

    processor_name = getattr(net, "processor", None)
    if processor_name is None:
        return None
    kind = getattr(transformers, processor_name)
    processor = kind.__new__(kind)  # its post-processing reads no settings; __init__ may read files (OneFormer's)
    torch.manual_seed(0)
    x = torch.randn(1, 3, height, width)
    with torch.no_grad():
        expected = processor.post_process_semantic_segmentation(net.queries(x), target_sizes=[(height, width)])[0]
        scores = F.interpolate(net(x), size=(height, width), mode="bilinear", align_corners=False)
    agreement = float((scores.argmax(1)[0] == expected).float().mean())
    record = {
        "reference": f"{processor_name}.post_process_semantic_segmentation",
        "shape": [1, 3, height, width],
        "argmax_agreement": agreement,
    }
    if agreement < 0.999:
        raise ModelError(
            f"{model}: segtool's semantic post-processing agrees with {record['reference']} on only "
            f"{100 * agreement:.2f}% of pixels (transformers {transformers.__version__}); not exported"
        )
    return record
