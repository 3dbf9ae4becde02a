"""Checkpoints that stand in for trained weights where none can be downloaded.

torchvision's random init leaves every BatchNorm an identity (running mean 0, variance 1, weight 1,
bias 0), so activations grow layer after layer and folding or quantizing BatchNorm is never really
exercised. ``realistic_state_dict`` gives BatchNorms affine parameters drawn around 1 and 0 and
*measured* running statistics: the model runs in train mode over smooth random images (cumulative
averages, ``momentum=None``), then switches to eval. What it cannot give is a trained model's
confidence: its class logits stay nearly tied on most pixels, so quantization noise flips far more
labels than it would with trained weights (docs/BENCHMARKS.md). Used by the tests and the int8 benchmarks;
its outputs are still meaningless labels, and files made from it say "checkpoint".
"""

from __future__ import annotations

from pathlib import Path

import torch

from .models import get_spec
from .parity import sample_batch

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def realistic_state_dict(model: str, seed: int = 0, batches: int = 6, batch_size: int = 4, size: int = 160) -> dict:
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
    net.eval()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def save_realistic_checkpoint(model: str, seed: int, path: Path) -> Path:
    """Write it as torchvision's reference scripts do ({"model": state_dict}), for --weights PATH."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": realistic_state_dict(model, seed)}, path)
    return path


if __name__ == "__main__":
    import sys

    name, seed, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    print(save_realistic_checkpoint(name, seed, out))
