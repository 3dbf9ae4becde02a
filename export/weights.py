"""Where a model's weights come from: torchvision's download, a local checkpoint, or a seed.

Whatever the source, the result is a state dict (or none, for random init) plus an identity
record that goes into the ONNX metadata, so every exported file says what it holds.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from segtool.runtime.errors import WeightsError

from .models import ModelSpec

# torch.hub's convention: "name-<first hex digits of sha256>.ext"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")


class WeightsUnavailable(WeightsError):
    """The pretrained weights could not be fetched (offline, proxy, server down)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(spec: ModelSpec, weights: str, seed: int) -> tuple[dict | None, dict]:
    """Map ``--weights`` (DEFAULT, an enum member name, a path, or 'random') to (state dict, identity)."""
    if weights.lower() == "random":
        return None, {"kind": "random", "seed": seed}
    if weights.upper() == "DEFAULT" or _is_enum_member(spec, weights):
        return _download(spec, None if weights.upper() == "DEFAULT" else weights)
    return load_checkpoint(Path(weights))


def _is_enum_member(spec: ModelSpec, name: str) -> bool:
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
    """Load a local torchvision-style checkpoint safely (tensors only, nothing executed)."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found (use DEFAULT, random, or a checkpoint path)")
    digest = sha256_of(path)
    named = _HASH_IN_NAME.search(path.name)
    if named and not digest.startswith(named.group(1)):
        raise WeightsError(
            f"{path}: sha256 {digest[:12]}... does not match the {named.group(1)} in its "
            "name: the file is corrupt or incomplete"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    for key in ("model", "state_dict"):  # torchvision's references save {"model": ..., "optimizer": ...}
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return obj, {"kind": "file", "file": path.name, "sha256": digest}


def apply_state_dict(model: torch.nn.Module, state: dict, source: str, model_name: str) -> None:
    """Load ``state`` into ``model`` strictly, after dropping what the export does not use.

    ``aux_classifier.*`` (training-only head) and a DataParallel ``module.`` prefix are accepted.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    mismatched = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = [
            f"{len(v)} {what} (e.g. {v[0]})"
            for what, v in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if v
        ]
        raise WeightsError(f"{source} does not fit {model_name}: " + ", ".join(parts))
    model.load_state_dict(state)
