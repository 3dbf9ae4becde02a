"""Code in a network that computes with its input's size, traced so the ONNX file keeps the size symbolic.

``torch.export`` records a size that the network turns into a plain number or a constant as the
example's value. Three such idioms are common in segmentation networks; ``AnySize`` (a torch
function mode, active around the network in ``SegmentationGraph``) computes each from the sizes
themselves, with the same numbers:

- ``torch.as_tensor`` of a list of sizes (Mask2Former's ``spatial_shapes``);
- ``torch.linspace(start, end, steps=size)`` (Mask2Former's reference points);
- ``adaptive_avg_pool2d`` to a fixed grid larger than 1x1 (UperNet's and PSPNet's pyramid pooling):
  exported as is, its bins are those of the example's size, wrong (or an invalid index) at any other.

Outside an export (plain numbers) each call runs unchanged except the pooling, computed as two
averaging matrices with PyTorch's bins: row i spans [floor(i*H/k), ceil((i+1)*H/k)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _symbolic(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_symbolic(v) for v in value)
    return isinstance(value, torch.SymInt)


def _stack(value: object, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(value, (list, tuple)):
        return torch.stack([_stack(v, dtype) for v in value])
    return torch.scalar_tensor(value, dtype=dtype)  # type: ignore[arg-type]  # an int or a SymInt


def averaging(size, bins: int, like: torch.Tensor) -> torch.Tensor:
    """[bins, size]: row i averages the inputs of adaptive pooling's bin i."""
    i = torch.arange(bins, device=like.device)
    start = (i * size) // bins
    end = ((i + 1) * size + bins - 1) // bins
    j = torch.arange(size, device=like.device)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def adaptive_avg_pool2d(x: torch.Tensor, output_size) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` for any input size; a global pool (1x1) or a ``None`` side as PyTorch's."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    size = tuple(x.shape[-2 + k] if side is None else side for k, side in enumerate(size))  # None: the input's
    if size == (1, 1):
        return F.adaptive_avg_pool2d(x, 1)
    exact = x.float()  # the averaging weights (1/3...) in float32 whatever x is
    rows = averaging(x.shape[-2], size[0], exact)
    cols = averaging(x.shape[-1], size[1], exact)
    return (rows @ exact @ cols.transpose(0, 1)).to(x.dtype)


class AnySize(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.adaptive_avg_pool2d:
            return adaptive_avg_pool2d(*args, **kwargs)
        if func is torch.as_tensor and args and _symbolic(args[0]):
            return _stack(args[0], kwargs.get("dtype") or torch.long).to(kwargs.get("device"))
        if func is torch.linspace:
            named = dict(zip(("start", "end", "steps"), args)) | kwargs
            steps = named.get("steps")
            if isinstance(steps, torch.SymInt):
                kind = named.get("dtype") or torch.get_default_dtype()
                ramp = torch.arange(steps, dtype=kind, device=named.get("device"))
                return named["start"] + ramp * ((named["end"] - named["start"]) / torch.sym_max(steps - 1, 1))
        return func(*args, **kwargs)
