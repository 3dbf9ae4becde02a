"""A small trained test model: a zoo network taught a synthetic task that needs shapes and context.

Random weights hide whether colours, names and class counts line up end to end; a model that really
segments something shows it. The task: textured backgrounds (noise, stripes, gradients, checks in
random colours) with filled discs, rings and triangles in random colours, sizes and positions, possibly
overlapping. Colour says nothing about the class; a ring differs from a disc only by its hollow centre
(context), a triangle from a disc only by its outline (shape).

Classes: 0 background, 1 circle, 2 ring, 3 triangle (``CLASSES``; ``PALETTE`` their colours).
``train`` fine-tunes ``lraspp_mobilenet_v3_large`` from random init (nothing can be downloaded) for a
fixed number of seeded steps on one CPU thread (about two minutes) and returns a plain state dict, what
users have. ``cache_key`` names what the result depends on, so a test run can keep it between runs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from segtool.runtime.model.metadata import IMAGENET_MEAN, IMAGENET_STD
from segtool.runtime.model.preprocess import Normalizer

MODEL = "lraspp_mobilenet_v3_large"
CLASSES = ("background", "circle", "ring", "triangle")
PALETTE = ((20, 20, 20), (230, 60, 40), (40, 150, 230), (250, 200, 30))  # RGB; not VOC's on purpose
SIZE = 96  # training pictures are SIZE x SIZE
CELL, FILLED, JITTER = 48, 0.75, 8.0  # a shape in each CELLxCELL cell with probability FILLED, moved by +-JITTER
RADIUS = (14.0, 20.0)  # in pixels, whatever the picture's size
HOLE = (0.5, 0.65)  # a ring's hole, in radii
TRIANGLE = 1.5  # a triangle's corners lie this many radii from its centre
CONTRAST = 40.0  # spread of a texture's second colour around its first
STEPS, BATCH, LR, RECALIBRATION = 300, 16, 1e-2, 6  # RECALIBRATION: batches that measure BatchNorm statistics
TRAIN_SEED, HELD_OUT_SEED = 0, 1_000_003  # held-out pictures come from another generator


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """float32 HxWx3 BGR texture: blurred noise, stripes, a gradient or checks, in random colours."""
    a = _colour(rng)
    b = np.clip(a + rng.normal(0, CONTRAST, 3), 0, 255).astype(np.float32)  # a second colour near the first
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:  # blotchy noise
        noise = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), float(rng.uniform(1, 4)))
        t = (noise - noise.min()) / max(float(np.ptp(noise)), 1e-6)
    elif kind == 1:  # stripes at any angle
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 24)
        t = 0.5 + 0.5 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    elif kind == 2:  # linear gradient
        angle = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    else:  # checks
        cell = rng.uniform(6, 20)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    return a * (1 - t[..., None]) + b * t[..., None]


def make_sample(rng: np.random.Generator, height: int = SIZE, width: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One picture: (HxWx3 uint8 BGR image, HxW uint8 labels in 0..3). Shapes are drawn in turn, a
    later one over an earlier one; a ring's hole shows what lies beneath it."""
    image = _background(rng, height, width)
    labels = np.zeros((height, width), np.uint8)
    rows, cols = max(1, height // CELL), max(1, width // CELL)
    cells = [(r, c) for r in range(rows) for c in range(cols) if rng.random() < FILLED]
    for r, c in cells or [(int(rng.integers(rows)), int(rng.integers(cols)))]:
        cls = int(rng.integers(1, 4))
        radius = rng.uniform(*RADIUS)
        cx = (c + 0.5) * width / cols + rng.uniform(-JITTER, JITTER)
        cy = (r + 0.5) * height / rows + rng.uniform(-JITTER, JITTER)
        mask = np.zeros((height, width), np.uint8)
        centre = (round(cx), round(cy))
        if cls == 1:
            cv2.circle(mask, centre, round(radius), 1, -1, cv2.LINE_8)
        elif cls == 2:
            cv2.circle(mask, centre, round(radius), 1, -1, cv2.LINE_8)
            cv2.circle(mask, centre, round(radius * rng.uniform(HOLE[0], HOLE[1])), 0, -1, cv2.LINE_8)
        else:
            turn = rng.uniform(0, 2 * math.pi)
            corners = [
                (
                    cx + TRIANGLE * radius * math.cos(turn + k * 2 * math.pi / 3),
                    cy + TRIANGLE * radius * math.sin(turn + k * 2 * math.pi / 3),
                )
                for k in range(3)
            ]
            cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 1, cv2.LINE_8)
        inside = mask.astype(bool)
        image[inside] = _colour(rng)
        labels[inside] = cls
    image += rng.normal(0, rng.uniform(2, 6), image.shape).astype(np.float32)  # sensor noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels


def make_set(seed: int, count: int, height: int = SIZE, width: int = SIZE) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` pictures from ``seed`` (use ``HELD_OUT_SEED`` for pictures the model never saw)."""
    rng = np.random.default_rng(seed)
    return [make_sample(rng, height, width) for _ in range(count)]


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """BGR uint8 pictures -> the batch an exported model gets from them: the runtime's own normalization."""
    return torch.from_numpy(Normalizer(IMAGENET_MEAN, IMAGENET_STD)(images, "bgr"))


def train(
    steps: int = STEPS,
    batch: int = BATCH,
    seed: int = TRAIN_SEED,
    lr: float = LR,
    log: Callable[[str], None] | None = None,
    model: str = MODEL,
    threads: int = 1,
) -> dict[str, torch.Tensor]:
    """Seeded, deterministic training from random init on ``threads`` CPU threads (1: the same
    result on any machine); the eval-mode state dict of ``model`` (any of segtool's zoo models; the
    tests use ``MODEL``, the benchmarks fcn_resnet50 too).

    AdamW with a one-cycle schedule, shapes weighted over background in the loss, and the last
    BatchNorm of every residual block started at zero (each block starts as the identity: a deep
    network from scratch learns faster). Last, the BatchNorm statistics are measured afresh on the
    finished weights: torchvision's MobileNetV3 keeps them with momentum 0.01, which after a few
    hundred steps still remembers the first ones."""
    from torchvision.models.mobilenetv3 import InvertedResidual
    from torchvision.models.resnet import Bottleneck

    from .models import get_spec

    previous, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)  # no spinning on a busy machine either
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        net = get_spec(model).build(num_classes=len(CLASSES))
        for block in net.modules():
            if isinstance(block, InvertedResidual) and block.use_res_connect:  # MobileNetV3's residual blocks
                torch.nn.init.zeros_(block.block[-1][1].weight)
            elif isinstance(block, Bottleneck):  # ResNet's
                torch.nn.init.zeros_(block.bn3.weight)
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
        weight = torch.tensor([1.0] + [2.0] * (len(CLASSES) - 1))  # shapes count twice: most pixels are background
        rng = np.random.default_rng(seed)
        net.train()
        for step in range(steps):
            x, y = _batch(rng, batch)
            loss = torch.nn.functional.cross_entropy(net(x)["out"], y, weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if log and (step % 25 == 0 or step == steps - 1):
                log(f"step {step}: loss {loss.item():.3f}")
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # a plain average over the batches below (the state dict keeps no momentum)
        with torch.no_grad():
            for _ in range(RECALIBRATION):
                net(_batch(rng, batch)[0])
    finally:
        torch.set_num_threads(previous)
        torch.use_deterministic_algorithms(deterministic)
    net.eval()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _batch(rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    pictures = [make_sample(rng) for _ in range(batch)]
    return to_tensor([p[0] for p in pictures]), torch.from_numpy(np.stack([p[1] for p in pictures]).astype(np.int64))


def cache_key() -> str:
    """What the trained weights depend on: this file (the task, the training and its settings) and the
    versions of the libraries that draw the pictures and compute the steps."""
    import torchvision

    digest = hashlib.sha256(Path(__file__).read_bytes())
    for version in (torch.__version__, torchvision.__version__, np.__version__, cv2.__version__):
        digest.update(version.encode() + b"\0")
    return digest.hexdigest()[:16]


def held_out_picture(height: int = 144, width: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """The first held-out picture of this size in which every class appears."""
    rng = np.random.default_rng(HELD_OUT_SEED)
    while True:
        image, labels = make_sample(rng, height, width)
        if len(np.unique(labels)) == len(CLASSES):
            return image, labels


def scores(predicted: np.ndarray, truth: np.ndarray, classes: int = len(CLASSES)) -> dict[str, float]:
    """Pixel accuracy and each class's IoU (``iou_<name>``) of label maps against the ground truth."""
    out = {"pixel_accuracy": float((predicted == truth).mean())}
    for k in range(classes):
        union = np.logical_or(predicted == k, truth == k).sum()
        out[f"iou_{CLASSES[k]}"] = float(np.logical_and(predicted == k, truth == k).sum() / union) if union else 1.0
    return out


def write_task_files(folder: Path) -> tuple[Path, Path]:
    """classes.txt (one name a line) and palette.txt ('R G B' a line) for ``segtool export``."""
    folder.mkdir(parents=True, exist_ok=True)
    classes, palette = folder / "classes.txt", folder / "palette.txt"
    classes.write_text("".join(f"{name}\n" for name in CLASSES))
    palette.write_text("".join(f"{r} {g} {b}\n" for r, g, b in PALETTE))
    return classes, palette
