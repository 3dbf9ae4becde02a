"""Every Python block in the README runs, as written, against generated files.

The blocks name files a user would have (street.jpg, walk.mp4, a VOC tree, exported models, a
running `segtool serve` as SERVER); this test makes small stand-ins in a temporary folder and
runs each block there in a fresh interpreter, so the README cannot drift from the API.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import scene
from servers import Server
from test_eval_compare import make_voc

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def server(model_path):
    """The `segtool serve` that the README's client example talks to (its SERVER)."""
    running = Server(model_path)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, model_path, int8_model):
    root = tmp_path_factory.mktemp("readme")
    (root / "models").mkdir()
    (root / "models" / "fcn_resnet50_random.onnx").symlink_to(model_path)
    (root / "models" / "fcn_resnet50_random_int8.onnx").symlink_to(int8_model)
    cv2.imwrite(str(root / "street.jpg"), scene(240, 320, seed=5))
    writer = cv2.VideoWriter(str(root / "walk.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (96, 64))
    for k in range(6):
        writer.write(scene(64, 96, seed=k))
    writer.release()
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 15
    make_voc(root / "VOCdevkit" / "VOC2012", {"a": (scene(48, 64, seed=1), mask)})
    return root


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, workdir, server):
    code = f"SERVER = {server.url.removeprefix('http://')!r}\n" + BLOCKS[index]
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README block {index}:\n{BLOCKS[index]}\n{proc.stdout}\n{proc.stderr}"
