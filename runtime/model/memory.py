"""How much memory this process may still take, and whether an image needs tiling to fit.

The limit is the smallest of: the machine's available memory (/proc/meminfo), the cgroup's
limit minus its usage (containers), and the address-space limit (``ulimit -v``, ``prlimit
--as``) minus what the process has mapped. Whole-image inference is estimated at
``BYTES_PER_PIXEL`` per input pixel: measured with fcn_resnet50 fp32 on ONNX Runtime's CPU
provider (941 MB peak RSS at 1280x853, of which about 300 MB is the runtime itself); smaller
models need less, so the estimate errs on the safe side.
"""

from __future__ import annotations

import math
import resource
from pathlib import Path

BYTES_PER_PIXEL = 600
SAFETY = 0.6  # use at most this share of what is available
MIN_TILE, MAX_TILE = 256, 1024


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _vm_size() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def available_bytes() -> int | None:
    """Bytes this process can still allocate, from every limit that is known (None: none known)."""
    limits = []
    if (free := _meminfo("MemAvailable")) is not None:
        limits.append(free)
    cgroup_max, cgroup_now = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if cgroup_max is not None and cgroup_now is not None:
        limits.append(cgroup_max - cgroup_now)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft - _vm_size())
    return max(0, min(limits)) if limits else None


def auto_tile(pixels: int, bytes_per_pixel: int = BYTES_PER_PIXEL) -> int | None:
    """A tile size when whole-image inference of ``pixels`` would not fit, else None."""
    available = available_bytes()
    if available is None or pixels * bytes_per_pixel <= SAFETY * available:
        return None
    side = int(math.sqrt(max(1.0, SAFETY * available / bytes_per_pixel)))
    return max(MIN_TILE, min(MAX_TILE, side // 32 * 32))
