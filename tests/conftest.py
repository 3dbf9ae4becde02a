"""Shared fixtures: one random-weights export through the real `segtool export` command.

Every test that needs a model uses this file; the PyTorch model it came from is rebuilt from
the same seed, so parity can be checked independently of the export's own gate.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SEGTOOL = str(Path(sys.executable).with_name("segtool"))
SEED = 0


def run_segtool(*args, env_extra=None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run the installed console script as a user would; returns the completed process."""
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([SEGTOOL, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """A user error: the expected exit code, no traceback, and a message naming what went wrong."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.fixture(scope="session")
def export_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "fcn_random.onnx"
    proc = run_segtool("export", "--weights", "random", "--seed", SEED, "--output", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


@pytest.fixture(scope="session")
def model_path(export_run) -> Path:
    return export_run[0]


@pytest.fixture(scope="session")
def int8_model(tmp_path_factory) -> Path:
    """A small-calibration int8 variant (no gate: the fp32 export is checked elsewhere)."""
    from segtool.export import export_model

    out = tmp_path_factory.mktemp("int8") / "int8.onnx"
    small = ((1, 3, 64, 96),)
    return export_model(out, weights="random", seed=SEED, verify=False, precision="int8", shapes=small,
                        calibration_count=6, calibration_size=96, variant_min_agreement=0.5).path  # fmt: skip


@pytest.fixture(scope="session")
def torch_graph():
    from segtool.export import build_graph

    graph, _ = build_graph("fcn_resnet50", "random", SEED)
    return graph


@pytest.fixture(scope="session")
def segmenter(model_path):
    from segtool.runtime import Segmenter

    return Segmenter(model_path, device="cpu", warn_random=False)


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random BGR picture: blobs of colour, like a photo at a glance (the runtime's own generator)."""
    from segtool.runtime.tools.synthetic import smooth_image

    return smooth_image(height, width, seed=seed, cell=12)


def voc_meta(random_weights: bool = True):
    """Metadata of a VOC model, as an export would write it (for painting without a model file)."""
    from segtool.runtime import VOC_CLASSES, ModelMetadata, voc_colormap

    weights = {"kind": "random", "seed": 0} if random_weights else {"kind": "torchvision", "name": "X.Y"}
    return ModelMetadata("fcn_resnet50", VOC_CLASSES, voc_colormap(21), (0.485, 0.456, 0.406),
                         (0.229, 0.224, 0.225), "RGB", "logits", weights)  # fmt: skip


def labels_png(labels: np.ndarray) -> bytes:
    """A VOC paletted PNG of ``labels`` (all 256 VOC colours, 255 = void), by the runtime's own painter."""
    from segtool.runtime import Painter, voc_colormap

    painter = Painter(voc_meta())
    painter.palette_rgb = voc_colormap()
    return painter.labels_png(labels)
