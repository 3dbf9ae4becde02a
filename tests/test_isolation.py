"""The runtime needs no torch, torchvision or onnx: proven in a process where they cannot import."""

from __future__ import annotations

import subprocess
import sys

import cv2
import pytest
from conftest import assert_clean_failure, run_segtool, scene

BLOCKED = ("torch", "torchvision", "onnx", "onnxscript")


@pytest.fixture
def no_torch_env(tmp_path):
    """PYTHONPATH entries that shadow torch, torchvision, onnx with packages that refuse to import."""
    blockers = tmp_path / "blockers"
    for name in BLOCKED:
        (blockers / name).mkdir(parents=True)
        (blockers / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked by this test')\n")
    return {"PYTHONPATH": str(blockers)}


def test_blockers_really_block(no_torch_env):
    import os

    proc = subprocess.run(
        [sys.executable, "-c", "import torch"], capture_output=True, text=True, env={**os.environ, **no_torch_env}
    )
    assert proc.returncode != 0 and "blocked by this test" in proc.stderr


def test_run_and_info_work_without_torch(tmp_path, model_path, no_torch_env):
    src = tmp_path / "img.jpg"
    cv2.imwrite(str(src), scene(33, 45))
    proc = run_segtool("run", src, "--model", model_path, "--out", tmp_path / "o", env_extra=no_torch_env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "img_labels.png").is_file() and (tmp_path / "o" / "img_overlay.jpg").is_file()
    proc = run_segtool("info", model_path, env_extra=no_torch_env)
    assert proc.returncode == 0, proc.stderr
    assert "fcn_resnet50" in proc.stdout


def test_export_without_extra_says_what_to_install(tmp_path, no_torch_env):
    proc = run_segtool("export", "--weights", "random", "--output", tmp_path / "x.onnx", env_extra=no_torch_env)
    assert_clean_failure(proc, 2, "pip install 'segtool[export]'")


def test_importing_runtime_and_cli_loads_no_torch():
    code = f"import sys, segtool.runtime, segtool.cli.main; print(sorted(m for m in {BLOCKED!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
