"""What segtool can build: the torchvision segmentation models (one table entry each) and any
PyTorch network named as ``package.module:callable``.

The table's models come with the 21 VOC classes and torchvision's weights API
(``COCO_WITH_VOC_LABELS_V1``); each entry knows its builder, its weights enum, whether it has the
training-only auxiliary head that export leaves out, and which weights hold its class count (the
last convolution of ``classifier``), so a fine-tuned checkpoint with any number of classes builds
the network that fits it. torchvision's published figures (accuracy, size, GFLOPS, checkpoint) are
read from its weights enums (``ModelSpec.published``); the int8 speed-up, measured here, is the one
figure the table keeps.

``CallableSpec`` is the user's own network: a function or class that returns an ``nn.Module``,
imported from the module the user names on their command line (their code, like
``uvicorn app:main``) and called with their keyword arguments, parsed as Python literals
(``ast.literal_eval``, never ``eval``). Nothing read from a checkpoint is ever imported or run.

This module is the single source of model names; it imports torch only when a model is built, so
the CLI can read the names without the [export] extra.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from segtool.runtime.errors import UsageError, WeightsError
from segtool.runtime.model.voc import VOC_CLASSES

if TYPE_CHECKING:
    import torch

PUBLISHED = "COCO-val2017-VOC-labels"  # the data set torchvision's published metrics are measured on
#: int8 is worth offering where it is at least this much faster than fp32 (below: the export's speed
#: gate may refuse it on a machine like the one measured)
INT8_PAYS = 1.5


@dataclass(frozen=True)
class ModelSpec:
    name: str  # torchvision builder, e.g. "fcn_resnet50"
    weights_enum: str  # torchvision weights enum, e.g. "FCN_ResNet50_Weights"
    default_weights: str = "COCO_WITH_VOC_LABELS_V1"  # member used for --weights DEFAULT
    has_aux: bool = True  # FCN and DeepLabV3 train with an auxiliary head; LR-ASPP has none
    classes: tuple[str, ...] = VOC_CLASSES
    # the weights whose first dimension is the class count (FCN and DeepLabV3: the head's last conv)
    classifier: tuple[str, ...] = ("classifier.4.weight",)
    # fp32/int8 inference time at 520x520, measured: benchmarks/zoo.sh on a 2-core AVX-512 VNNI CPU
    # (docs/BENCHMARKS.md, "Choose a model"); it depends on the CPU and is smaller without VNNI
    int8_speedup: float = 0.0

    def weights(self, member: str | None = None):
        import torchvision.models.segmentation as tv_seg

        enum = getattr(tv_seg, self.weights_enum)
        return enum[member or self.default_weights]

    def build(self, num_classes: int | None = None, device: str | None = None) -> torch.nn.Module:
        """The architecture without weights and without the auxiliary (training-only) head, with
        ``num_classes`` outputs (default: the 21 VOC classes). ``device="meta"`` builds only the
        shapes (no memory, no init), to compare a checkpoint with an architecture."""
        import torch
        import torchvision.models.segmentation as tv_seg

        builder = getattr(tv_seg, self.name)
        extra = {"aux_loss": False} if self.has_aux else {}
        with torch.device(device) if device else contextlib.nullcontext():
            net = builder(weights=None, weights_backbone=None, num_classes=num_classes or len(self.classes), **extra)
        return net.eval()

    def classes_in(self, state: Mapping[str, Any]) -> int | None:
        """The class count a state dict was trained for: the first dimension of the classifier's last
        convolution (LR-ASPP: both of its classifiers, which must agree); None if it has none of them."""
        counts = {key: tuple(state[key].shape)[0] for key in self.classifier if key in state}
        if len(set(counts.values())) > 1:
            found = ", ".join(f"{k} has {n}" for k, n in counts.items())
            raise WeightsError(f"the checkpoint's classifiers disagree on the class count: {found}")
        return next(iter(counts.values()), None)

    def published(self, member: str | None = None) -> dict:
        """torchvision's card for the weights, from its weights enum (needs torchvision, not the network):
        accuracy, checkpoint identity, and size and GFLOPS as torchvision counts them (with the
        training-only auxiliary head that export leaves out)."""
        w = self.weights(member)
        metrics = w.meta.get("_metrics", {}).get(PUBLISHED, {})
        filename = os.path.basename(w.url)
        return {
            "weights": f"{type(w).__name__}.{w.name}",
            "dataset": PUBLISHED,
            "miou": metrics.get("miou"),
            "pixel_acc": metrics.get("pixel_acc"),
            "checkpoint": filename,
            "sha256_prefix": filename.rsplit("-", 1)[-1].split(".")[0],
            "params_m": round(w.meta["num_params"] / 1e6, 2),
            "gflops": w.meta.get("_ops"),
            "checkpoint_mb": w.meta.get("_file_size"),
        }


LRASPP_CLASSIFIERS = ("classifier.low_classifier.weight", "classifier.high_classifier.weight")
MODELS = {
    spec.name: spec
    for spec in (
        ModelSpec("fcn_resnet50", "FCN_ResNet50_Weights", int8_speedup=3.90),
        ModelSpec("fcn_resnet101", "FCN_ResNet101_Weights", int8_speedup=3.81),
        ModelSpec("deeplabv3_resnet50", "DeepLabV3_ResNet50_Weights", int8_speedup=3.03),
        ModelSpec("deeplabv3_resnet101", "DeepLabV3_ResNet101_Weights", int8_speedup=3.23),
        ModelSpec("deeplabv3_mobilenet_v3_large", "DeepLabV3_MobileNet_V3_Large_Weights", int8_speedup=1.19),
        ModelSpec(
            "lraspp_mobilenet_v3_large",
            "LRASPP_MobileNet_V3_Large_Weights",
            has_aux=False,
            classifier=LRASPP_CLASSIFIERS,
            int8_speedup=0.98,
        ),
    )
}


def is_callable_name(name: str) -> bool:
    """``package.module:callable`` (the user's own network) rather than a table name."""
    return ":" in name


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise UsageError(
            f"unknown model {name!r}: supported: {known}; or your own network as package.module:callable"
        ) from None


# -- the user's own network ------------------------------------------------------------------------

_CALLABLE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
#: the parameters a class count is passed as, first match wins (torchvision/timm, Pytorch-UNet, smp)
COUNT_PARAMETERS = ("num_classes", "n_classes", "classes")


def parse_model_args(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> keyword arguments. A value is a Python literal (``3``, ``None``,
    ``'x'``, ``[1, 2]``, ``True``; ``ast.literal_eval``, never ``eval``), otherwise the plain string."""
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-arg takes KEY=VALUE, e.g. encoder_name=resnet34 (got {item!r})")
        try:
            kwargs[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            kwargs[key] = text.strip()
    return kwargs


def format_call(name: str, kwargs: Mapping[str, Any]) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


@dataclass(frozen=True)
class CallableSpec:
    """``package.module:callable`` and the keyword arguments it is called with."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _CALLABLE.fullmatch(self.name):
            raise UsageError(
                f"--model {self.name!r}: name your own network as package.module:callable, "
                "e.g. segmentation_models_pytorch:Unet"
            )

    def resolve(self) -> Callable[..., Any]:
        """Import the module (the working folder first on the path, as ``python -m`` has it)."""
        module_name, _, attribute = self.name.partition(":")
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(
                f"--model {self.name}: cannot import {module_name} ({exc}); install it, or run "
                "segtool in the folder that holds it"
            ) from None
        except Exception as exc:  # the user's module failed while importing: their error, in one line
            raise UsageError(f"--model {self.name}: importing {module_name} failed: {one_line(exc)}") from None
        for part in attribute.split("."):
            if not hasattr(target, part):
                raise UsageError(f"--model {self.name}: {module_name} has no {attribute}")
            target = getattr(target, part)
        if not callable(target):
            raise UsageError(f"--model {self.name}: {attribute} is a {type(target).__name__}, not a function or class")
        return target

    def count_parameter(self, target: Callable[..., Any]) -> str | None:
        """The parameter ``target`` takes the class count as (num_classes, n_classes, or an int classes)."""
        try:
            parameters = inspect.signature(target).parameters
        except (TypeError, ValueError):
            return None
        for name in COUNT_PARAMETERS:
            p = parameters.get(name)
            if p is None or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                continue
            if name != "classes" or p.annotation in (int, "int") or type(p.default) is int:
                return name
        return None

    def build(self, num_classes: int | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The network, and the keyword arguments it was called with (``num_classes`` goes to the
        callable's class-count parameter unless a --model-arg sets that already)."""
        import torch

        target = self.resolve()
        kwargs = dict(self.kwargs)
        parameter = self.count_parameter(target)
        if num_classes is not None and parameter and parameter not in kwargs:
            kwargs[parameter] = num_classes
        call = format_call(self.name, kwargs)
        try:
            net = target(**kwargs)
        except Exception as exc:  # the user's code: its error in one line, with the call that raised it
            hint = ""
            try:
                takes = inspect.signature(target).parameters
            except (TypeError, ValueError):
                takes = {}  # type: ignore[assignment]
            if "encoder_weights" in takes and "encoder_weights" not in kwargs:
                hint = "; to skip the pretrained encoder download, pass --model-arg encoder_weights=None"
            raise UsageError(f"{call} failed: {one_line(exc)}{hint}") from None
        if not isinstance(net, torch.nn.Module):
            raise UsageError(f"{call} returned a {type(net).__name__}, not a torch.nn.Module")
        return net.eval(), kwargs


def one_line(exc: BaseException) -> str:
    """An exception as one line (its type and message, whitespace folded, long ones shortened)."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
