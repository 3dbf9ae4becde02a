"""Checkpoints that stand in for trained weights where none can be downloaded.

torchvision's random init leaves every BatchNorm an identity (running mean 0, variance 1, weight 1,
bias 0), so activations grow layer after layer and folding or quantizing BatchNorm is never really
exercised. ``realistic_state_dict`` gives BatchNorms affine parameters drawn around 1 and 0 and
*measured* running statistics: the model runs in train mode over smooth random images (cumulative
averages, ``momentum=None``), then switches to eval.

What that cannot give is a trained model's confidence: its class logits stay nearly tied on most
pixels, so quantization noise flips far more labels than it would with trained weights. With
``train_steps``, the model then takes that many Adam steps (BatchNorm statistics frozen) towards a
task it can learn from smooth images alone: each pixel's class is the VOC palette colour nearest to
its own colour. That gives it margins between its top logits, as training does.

``with_outlier_channel`` reproduces the failure that breaks int8 in practice: one channel whose
range is hundreds of times its neighbours', so per-tensor uint8 quantization leaves the others a few
levels. It rescales one channel after a ReLU and divides the next convolution's weights for that
channel by the same factor, which leaves the model's function unchanged (ReLU is positively
homogeneous). Used by the tests and the int8 benchmarks; the labels stay meaningless, and files
made from these checkpoints say "checkpoint".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from segtool.runtime.model.metadata import IMAGENET_MEAN, IMAGENET_STD
from segtool.runtime.model.voc import voc_colormap

from .models import get_spec
from .parity import sample_batch

MEAN, STD = IMAGENET_MEAN, IMAGENET_STD
# (BatchNorm before a ReLU, the next convolution's weight, that weight's input-channel axis)
OUTLIER_SITES = {
    "resnet": ("backbone.layer1.0.bn1", "backbone.layer1.0.conv2.weight", 1),
    "mobilenet": ("backbone.2.block.0.1", "backbone.2.block.1.0.weight", 0),  # the next conv is depthwise
}


def realistic_state_dict(
    model: str, seed: int = 0, batches: int = 6, batch_size: int = 4, size: int = 160, train_steps: int = 0
) -> dict:
    torch.manual_seed(seed)
    net = get_spec(model).build()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(0.6 + 0.8 * torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
                module.reset_running_stats()
                module.momentum = None  # cumulative average over all batches seen
        net.train()
        for k in range(batches):
            shape = (batch_size, 3, size, size + 32 * (k % 3))
            net(torch.from_numpy(sample_batch(shape, MEAN, STD, seed=seed * 100 + k)))
    if train_steps:
        _train_on_colours(net, seed, train_steps)
    net.eval()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _train_on_colours(net: torch.nn.Module, seed: int, steps: int, size: int = 128) -> None:
    """Adam steps towards "each pixel's class is its nearest VOC palette colour", BatchNorm frozen."""
    palette = torch.from_numpy(voc_colormap(21).astype(np.float32)).view(1, 21, 3, 1, 1)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()  # keep the measured statistics
    for step in range(steps):
        x = torch.from_numpy(sample_batch((4, 3, size, size), MEAN, STD, seed=seed * 7919 + step))
        colours = (x * std + mean) * 255
        target = ((colours[:, None] - palette) ** 2).sum(2).argmin(1)
        loss = torch.nn.functional.cross_entropy(net(x)["out"], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def with_outlier_channel(state_dict: dict, model: str, factor: float = 300.0, channel: int = 5) -> dict:
    """The same function, with one early activation channel ``factor`` times larger (see the module doc)."""
    bn, weight, axis = OUTLIER_SITES["mobilenet" if "mobilenet" in model else "resnet"]
    out = {k: v.clone() for k, v in state_dict.items()}
    out[f"{bn}.weight"][channel] *= factor
    out[f"{bn}.bias"][channel] *= factor
    out[weight].select(axis, channel).div_(factor)
    return out


def save_realistic_checkpoint(model: str, seed: int, path: Path, train_steps: int = 0, outlier: float = 0.0) -> Path:
    """Write it as torchvision's reference scripts do ({"model": state_dict}), for --weights PATH."""
    state = realistic_state_dict(model, seed, train_steps=train_steps)
    if outlier:
        state = with_outlier_channel(state, model, outlier)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write a stand-in checkpoint (see the module docstring).")
    parser.add_argument("model")
    parser.add_argument("seed", type=int)
    parser.add_argument("output", type=Path)
    parser.add_argument("--train-steps", type=int, default=0, help="Adam steps on colour labels (confidence)")
    parser.add_argument("--outlier", type=float, default=0.0, help="rescale one early channel by this factor")
    args = parser.parse_args()
    print(save_realistic_checkpoint(args.model, args.seed, args.output, args.train_steps, args.outlier))
