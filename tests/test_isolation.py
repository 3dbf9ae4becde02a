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


def blockers(tmp_path, *names: str) -> dict[str, str]:
    """PYTHONPATH entries that make each module in ``names`` fail to import."""
    for name in names:
        (tmp_path / "more" / name).mkdir(parents=True)
        (tmp_path / "more" / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked by this test')\n")
    return {"PYTHONPATH": str(tmp_path / "more")}


def test_a_missing_extra_is_one_line_naming_the_pip_install(tmp_path, tiny):
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), scene(20, 30))
    served = run_segtool("serve", tiny, "--port", "0", env_extra=blockers(tmp_path / "s", "fastapi", "uvicorn"))
    assert_clean_failure(served, 2, "`segtool serve` needs FastAPI and uvicorn", "pip install 'segtool[serve]'")
    rayed = run_segtool(
        "run",
        image,
        "--model",
        tiny,
        "--ray",
        "local",
        "--out",
        tmp_path / "o",
        env_extra=blockers(tmp_path / "r", "ray"),
    )
    assert_clean_failure(rayed, 2, "--ray: Ray cannot be imported", "pip install 'segtool[ray]'")


def test_export_checks_its_arguments_before_it_needs_torch(tmp_path, no_torch_env):
    """Cheap refusals first: a wrong model name or a missing checkpoint is said as such even where
    torch is not installed (they are checked before torch is imported)."""
    missing = run_segtool(
        "export", "--weights", tmp_path / "nope.pth", "--output", tmp_path / "x.onnx", env_extra=no_torch_env
    )
    assert_clean_failure(missing, 2, "nope.pth not found (use DEFAULT, random, or a checkpoint path)")
    unknown = run_segtool("export", "--model", "fcn_resnet5O", "--output", tmp_path / "x.onnx", env_extra=no_torch_env)
    assert_clean_failure(unknown, 2, "unknown model 'fcn_resnet5O'")
