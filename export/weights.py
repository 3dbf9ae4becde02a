"""Where a model's weights come from: torchvision's download, a local checkpoint, or a seed.

Whatever the source, the result is a state dict (or none, for random init) plus an identity
record that goes into the ONNX metadata, so every exported file says what it holds.

The checkpoint formats people have, all read without running anything from the file:

- a plain state dict (``torch.save(model.state_dict(), PATH)``), DataParallel's ``module.``
  prefixes included, the auxiliary head's keys present or not;
- torchvision's reference-training checkpoint, ``{"model": ..., "optimizer": ..., "epoch": ...,
  "args": argparse.Namespace}``: ``argparse.Namespace`` is the one class allowed besides tensors
  (``torch.serialization.safe_globals``), and its ``model``/``num_classes`` are checked against the
  export; a state dict under ``state_dict`` (Lightning, whose ``model.``-style prefix is dropped
  when that is what makes the keys fit) or ``model_state_dict`` works too;
- ``.safetensors`` files (the ``safetensors`` package, in the [export] extra).

A pickled whole model (``torch.save(model)``) is refused: loading it would run code named in the
file. The message says to save ``model.state_dict()`` instead.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segtool.runtime.errors import UsageError, WeightsError
from segtool.runtime.files.images import sha256_of

from .models import MODELS, ModelSpec

# torch.hub's convention: "name-<first hex digits of sha256>.ext", checked for torchvision's own files
# only (a user's "unet-20240101.pth" carries a date, not a hash)
PUBLISHED_FILES = frozenset(os.path.basename(spec.weights().url) for spec in MODELS.values())
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: where a training script keeps the state dict inside a bigger dict (the first that is one wins)
STATE_KEYS = ("model", "state_dict", "model_state_dict", "model_state")
AUX_PREFIX = "aux_classifier."
SHOWN = 3  # keys or shapes named in a "does not fit" message, per kind


class WeightsUnavailable(WeightsError):
    """The pretrained weights could not be fetched (offline, proxy, server down)."""


@dataclass
class Checkpoint:
    """A checkpoint file's weights and what the file says about how they were trained."""

    state: dict[str, torch.Tensor]
    identity: dict  # {"kind": "file", "file", "sha256", "format"[, "epoch"]}: into the metadata
    trained_as: str | None = None  # args.model of a reference-training checkpoint
    num_classes: int | None = None  # args.num_classes, where the training script had one


def resolve_weights(spec: ModelSpec, weights: str, seed: int) -> tuple[dict | None, dict]:
    """Map ``--weights`` (DEFAULT, an enum member name, a path, or 'random') to (state dict, identity)."""
    if weights.lower() == "random":
        return None, {"kind": "random", "seed": seed}
    if weights.upper() == "DEFAULT" or is_enum_member(spec, weights):
        return _download(spec, None if weights.upper() == "DEFAULT" else weights)
    return load_checkpoint(Path(weights))


def is_enum_member(spec: ModelSpec, name: str) -> bool:
    try:
        spec.weights(name)
        return not os.path.exists(name)
    except KeyError:
        return False


def _download(spec: ModelSpec, member: str | None) -> tuple[dict, dict]:
    w = spec.weights(member)
    filename = os.path.basename(w.url)
    try:
        state = w.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash is a RuntimeError
        reason = getattr(exc, "reason", None) or exc
        raise WeightsUnavailable(
            f"cannot download pretrained weights {w.url} ({reason}). Fetch {filename} on a machine with "
            f"internet and pass it with --weights PATH/{filename}, or place it in "
            f"{os.path.join(torch.hub.get_dir(), 'checkpoints')}/"
        ) from None
    return state, {"kind": "torchvision", "name": f"{type(w).__name__}.{w.name}", "file": filename}


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """Load a local checkpoint safely (tensors only, nothing executed): (state dict, identity)."""
    checkpoint = read_checkpoint(path)
    return checkpoint.state, checkpoint.identity


def read_checkpoint(path: Path) -> Checkpoint:
    """The weights of a checkpoint file in any of the formats of the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found (use DEFAULT, random, or a checkpoint path)")
    digest = sha256_of(path)
    named = _HASH_IN_NAME.search(path.name) if path.name in PUBLISHED_FILES else None  # torchvision's own names
    if named and not digest.startswith(named.group(1)):
        raise WeightsError(
            f"{path}: sha256 {digest[:12]}... does not match the {named.group(1)} in its "
            "name: the file is corrupt or incomplete"
        )
    identity: dict[str, Any] = {"kind": "file", "file": path.name, "sha256": digest}
    if _is_safetensors(path):
        return Checkpoint(_tensors_only(path, _load_safetensors(path), "file"), identity | {"format": "safetensors"})
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return Checkpoint(dict(obj), identity | {"format": "state_dict"})
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    key = next((k for k in STATE_KEYS if isinstance(obj.get(k), Mapping)), None)
    if key is None:
        keys = ", ".join(map(str, list(obj)[:6]))
        raise WeightsError(
            f"{path}: not a state dict of tensors, and none of {', '.join(STATE_KEYS)} holds one (its keys: {keys})"
        )
    state = _tensors_only(path, obj[key], repr(key))
    args = obj.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    elif not isinstance(args, Mapping):
        args = {}
    layout = "torchvision reference training" if key == "model" and "args" in obj else f"state dict under {key!r}"
    identity["format"] = layout
    if isinstance(obj.get("epoch"), int):
        identity["epoch"] = obj["epoch"]
    model = args.get("model")
    count = args.get("num_classes")
    trained_as = model if isinstance(model, str) else None
    num_classes = count if isinstance(count, int) and not isinstance(count, bool) else None
    return Checkpoint(state, identity, trained_as, num_classes)


def _is_safetensors(path: Path) -> bool:
    """By name, or by content: an 8-byte little-endian header length, then the JSON header."""
    if path.suffix.lower() == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _load_safetensors(path: Path) -> dict:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise UsageError(
            f"{path}: reading .safetensors needs the safetensors package: "
            "pip install safetensors (it is in segtool[export])"
        ) from None
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({_first_sentence(exc)})") from None


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, with argparse.Namespace (a training script's args) allowed."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _UNSUPPORTED_GLOBAL.search(str(exc))
        if found:
            raise WeightsError(
                f"{path}: holds a pickled Python object ({found.group(1)}), not only tensors, and segtool never "
                "runs code from a checkpoint. Save the weights alone with torch.save(model.state_dict(), "
                "'weights.pth') and pass that file"
            ) from None
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({_first_sentence(exc)})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, AttributeError, ImportError) as exc:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({_first_sentence(exc)})") from None


def _first_sentence(exc: BaseException) -> str:
    """The error's first sentence on one line, without terminal colour codes, never cut inside it."""
    text = " ".join(_ANSI.sub("", str(exc)).split()) or type(exc).__name__
    end = re.search(r"[.;:](\s|$)", text)
    sentence = text[: end.start()] if end else text
    return sentence if len(sentence) <= 200 else f"{type(exc).__name__}, {len(text)} characters of message"


def _tensors_only(path: Path, state: Mapping, where: str) -> dict[str, torch.Tensor]:
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None or not state:
        what = f"holds a {type(state[bad]).__name__} at {bad!r}" if bad is not None else "is empty"
        raise WeightsError(f"{path}: the state dict in {where} {what}, not a state dict of tensors")
    return {str(k): v for k, v in state.items()}


# -- fitting a state dict to a network -------------------------------------------------------------


def normalize_keys(state: Mapping[str, torch.Tensor], own: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``state`` with the key spellings training leaves that ``own`` (a model's state dict) lacks:
    DataParallel's ``module.``, a wrapper's common first component (Lightning's ``model.``) when
    dropping it is what makes the keys fit, and the auxiliary head when the model has none."""
    out = {k.removeprefix("module."): v for k, v in state.items()}
    if out and not (out.keys() & own.keys()):
        first = {k.split(".", 1)[0] for k in out}
        if len(first) == 1 and all("." in k for k in out):
            stripped = {k.split(".", 1)[1]: v for k, v in out.items()}
            if stripped.keys() & own.keys():
                out = stripped
    if not any(k.startswith(AUX_PREFIX) for k in own):
        out = {k: v for k, v in out.items() if not k.startswith(AUX_PREFIX)}
    return out


@dataclass(frozen=True)
class Fit:
    """How a state dict compares with a network's own."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, list[int], list[int]]]  # (key, checkpoint shape, model shape)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def compare(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> Fit:
    """Keys the model has and the state lacks, the reverse, and shared keys whose shapes differ
    (in the model's order, then the checkpoint's)."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shared = [k for k in own if k in state]
    mismatched = [(k, list(state[k].shape), list(own[k].shape)) for k in shared if state[k].shape != own[k].shape]
    return Fit(missing, unexpected, mismatched)


def fitting_models(state: Mapping[str, torch.Tensor]) -> list[tuple[str, int]]:
    """(name, class count) of every table model the state dict fits exactly (shapes only: the
    candidates are built on the meta device, without memory or initialization)."""
    fits = []
    for spec in MODELS.values():
        try:
            count = spec.classes_in(state)
        except WeightsError:
            continue
        if count is None:
            continue
        own = spec.build(count, device="meta").state_dict()
        if compare(normalize_keys(state, own), own).ok:
            fits.append((spec.name, count))
    return fits


def mismatch_message(source: str, model_name: str, fit: Fit, state: Mapping[str, torch.Tensor]) -> str:
    """One line: what does not fit (the first few keys, both shapes), what it does fit, what to do."""
    parts = []
    if fit.missing:
        parts.append(f"missing keys: {len(fit.missing)} (e.g. {', '.join(fit.missing[:SHOWN])})")
    if fit.unexpected:
        parts.append(f"unexpected keys: {len(fit.unexpected)} (e.g. {', '.join(fit.unexpected[:SHOWN])})")
    if fit.mismatched:
        shapes = "; ".join(f"{k}: checkpoint {a} vs {model_name} {b}" for k, a, b in fit.mismatched[:SHOWN])
        parts.append(f"shape mismatches: {len(fit.mismatched)} ({shapes})")
    return f"{source} does not fit {model_name}: {', '.join(parts)}; {remedy(model_name, fit, state)}"


def remedy(model_name: str, fit: Fit, state: Mapping[str, torch.Tensor]) -> str:
    fits = fitting_models(state)
    if fits:
        names = " or ".join(f"{name} with {n} classes" for name, n in fits)
        other = next((name for name, _ in fits if name != model_name), None)
        return f"it fits {names}" + (f": pass --model {other}" if other else "")
    if fit.mismatched and not (fit.missing or fit.unexpected) and all(a[1:] == b[1:] for _, a, b in fit.mismatched):
        theirs, ours = {a[0] for _, a, _ in fit.mismatched}, {b[0] for _, _, b in fit.mismatched}
        if len(theirs) == len(ours) == 1:  # only the output layer differs, in its class count
            count = theirs.pop()
            return (
                f"the checkpoint has {count} classes where {model_name} was built with {ours.pop()}: "
                f"pass --num-classes {count} (or the --model-arg that sets its class count)"
            )
    return (
        "it fits none of segtool's torchvision models (see `segtool models`); for another architecture, "
        "pass --model package.module:callable with the --model-arg settings it was trained with"
    )


def apply_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, model_name: str) -> None:
    """Load ``state`` into ``model`` strictly, after dropping what the export does not use.

    ``aux_classifier.*`` (training-only head, when ``model`` has none), DataParallel's ``module.``
    prefix and a wrapper's common prefix are accepted. Anything else that does not fit is one
    ``WeightsError`` naming the first few keys and shapes, and the architectures the weights fit.
    """
    own = model.state_dict()
    state = normalize_keys(state, own)
    fit = compare(state, own)
    if not fit.ok:
        raise WeightsError(mismatch_message(source, model_name, fit, state))
    model.load_state_dict(state)


def check_trained_as(checkpoint: Checkpoint, source: str, model_name: str, count: int | None) -> None:
    """A reference-training checkpoint's ``args`` must agree with the export: the same model, and
    ``args.num_classes`` (where the script had it) equal to the classifier's class count."""
    if checkpoint.trained_as and checkpoint.trained_as != model_name:
        raise WeightsError(
            f"{source} was trained as {checkpoint.trained_as} (its args.model), not {model_name}: "
            f"pass --model {checkpoint.trained_as}"
        )
    if checkpoint.num_classes is not None and count is not None and checkpoint.num_classes != count:
        raise WeightsError(
            f"{source}: its args.num_classes is {checkpoint.num_classes} but its classifier has "
            f"{count} classes: the checkpoint is inconsistent"
        )
