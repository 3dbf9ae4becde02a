"""`segtool bundle`: bad input is one line and leaves nothing; the requirement list per target;
install.sh's own checks; segtool's wheel remade from installed files. The slow tier makes real
linux-x86_64 bundles from the package index (with video and images only), installs each with
install.sh with the network cut (``unshare -n``), and checks that the installed segtool labels a
picture as this one does, within the size goals."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import assert_clean_failure, run_in_process, run_segtool, scene
from PIL import Image
from tiny import tiny_model

from segtool.runtime.tools import bundle as B

# pyproject.toml's base requirements as a wheel's METADATA writes them
REQUIRES = [
    "numpy>=1.24",
    "opencv-python-headless>=4.8",
    "typer>=0.12",
    "pillow>=10",
    "av>=14",
    "onnxruntime-gpu>=1.20; (sys_platform == 'linux' and platform_machine == 'x86_64') or "
    "(sys_platform == 'win32' and platform_machine == 'AMD64')",
    "onnxruntime>=1.20; (sys_platform != 'linux' or platform_machine != 'x86_64') and "
    "(sys_platform != 'win32' or platform_machine != 'AMD64')",
    "torch>=2.6; extra == 'export'",
]


def leftovers(folder: Path, *expected: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in expected)


@pytest.mark.parametrize("target", list(B.TARGETS))
@pytest.mark.parametrize("video", [True, False])
def test_requirements_per_target(target, video):
    reqs = B.requirements(REQUIRES, B.TARGETS[target], "3.11", video)
    names = [r.split(">=")[0] for r in reqs]
    gpu = target.endswith("-cuda")
    assert names == [
        "numpy",
        "opencv-python-headless",
        "typer",
        "pillow",
        *(["av"] if video else []),
        "onnxruntime-gpu" if gpu else "onnxruntime",
    ]
    assert reqs[-1].endswith(">=1.20")  # segtool's version range is kept


def test_requirements_of_the_installed_segtool():
    """The real metadata: CPU targets get onnxruntime and never onnxruntime-gpu, whatever the host."""
    requires = importlib.metadata.requires("segtool") or []
    for target, spec in B.TARGETS.items():
        names = {r.split(">=")[0].split("<")[0] for r in B.requirements(requires, spec, "3.11", video=False)}
        assert ("onnxruntime-gpu" in names) == (target == "linux-x86_64-cuda"), names
        assert ("onnxruntime" in names) == (target != "linux-x86_64-cuda"), names
        assert "av" not in names and "torch" not in names


def test_platform_tags():
    tags = B.platform_tags(B.TARGETS["linux-aarch64"])
    assert tags[0] == "manylinux2014_aarch64" and "manylinux_2_28_aarch64" in tags
    assert all(t.endswith("_aarch64") for t in tags) and "manylinux_2_36_aarch64" not in tags


@pytest.mark.parametrize(
    "path, dropped",
    [
        ("numpy/_core/tests/test_api.py", True),
        ("numpy/testing/__init__.py", False),
        ("numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so", False),
        ("numpy/f2py/__init__.py", True),
        ("cv2/__init__.pyi", True),
        ("av/frame.pxd", True),
        ("numpy/_core/include/numpy/ndarraytypes.h", True),
        ("onnxruntime/transformers/fusion_attention.py", True),
        ("onnxruntime/capi/onnxruntime_pybind11_state.so", False),
        ("onnxruntime/tools.py", False),
        ("segtool/runtime/tools/bundle.py", False),
    ],
)
def test_droppable(path, dropped):
    assert B.droppable(path) is dropped


def test_bad_target_is_one_line(tiny, tmp_path):
    proc = run_in_process("bundle", tiny, "--target", "linux-sparc", "--output", tmp_path / "b")
    assert_clean_failure(proc, 2, "no bundle target 'linux-sparc'", "linux-aarch64")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("python", ["3", "3.11.2", "py3.11"])
def test_bad_python_is_one_line(tiny, tmp_path, python):
    proc = run_in_process("bundle", tiny, "--target", "linux-x86_64", "--python", python, "-o", tmp_path / "b")
    assert_clean_failure(proc, 2, "--python takes")
    assert leftovers(tmp_path) == []


def test_not_a_model_is_one_line(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    bare = tiny_model(tmp_path / "bare.onnx", props={})
    for model, needle in [
        (tmp_path / "junk.onnx", "not a usable ONNX model"),
        (bare, "has no segtool metadata"),
        (tmp_path / "gone.onnx", "not found"),
        (tmp_path, "a folder"),
    ]:
        proc = run_in_process("bundle", model, "--target", "linux-aarch64", "--output", tmp_path / "b.tar.gz")
        assert_clean_failure(proc, 2, needle)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert leftovers(tmp_path, "junk.onnx", "bare.onnx") == []


def test_existing_output_is_refused(tiny, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    proc = run_in_process("bundle", tiny, "--target", "linux-x86_64", "--output", tmp_path / "b")
    assert_clean_failure(proc, 2, "exists")
    assert leftovers(tmp_path) == ["b"] and (tmp_path / "b" / "keep.txt").read_text() == "mine"


def test_missing_wheel_is_one_line_and_leaves_nothing(tiny, tmp_path):
    """An empty wheelhouse and no index: the first wheel pip cannot find is named, in one line."""
    (tmp_path / "wheelhouse").mkdir()
    out = tmp_path / "out" / "b.tar.gz"
    out.parent.mkdir()
    proc = run_in_process(
        "bundle",
        tiny,
        "--target",
        "linux-aarch64",
        "--output",
        out,
        "--no-index",
        "--find-links",
        tmp_path / "wheelhouse",
    )
    assert_clean_failure(proc, 2, "no wheel of ", "for linux-aarch64 (Python 3.11")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert leftovers(out.parent) == [] and leftovers(tmp_path / "wheelhouse") == []


def fake_bundle(tmp_path: Path, target: str = "linux-x86_64", python: str = "3.11") -> Path:
    """A bundle folder with the real install.sh and no wheels (enough for its own checks)."""
    root = tmp_path / "bundle"
    for sub in ("wheels", "tools", "models"):
        (root / sub).mkdir(parents=True)
    made = B.Bundle(root, target, python, True, models={"tiny.onnx": 1})
    (root / "install.sh").write_text(B.install_script(made))
    return root


def test_install_script_is_posix_and_offline(tmp_path):
    text = B.install_script(B.Bundle(tmp_path, "linux-aarch64", "3.11", True, models={"m.onnx": 1}))
    for shell in ("sh", "bash"):
        subprocess.run([shell, "-n"], input=text, text=True, check=True)
    assert "--no-index --no-deps" in text and "--without-pip" in text and "--version" in text
    assert '[ "$MACHINE" = "aarch64" ]' in text and "python3.11" in text and "@" not in text.replace("$@", "")
    assert "def droppable" in text  # the very rule the sizes are estimated with


@pytest.mark.parametrize(
    "target, python, env, needle",
    [
        ("linux-aarch64", "3.11", {}, "this bundle is for aarch64 (linux-aarch64), this box is x86_64"),
        ("linux-x86_64", "3.9", {}, "this bundle is for Python 3.9"),
        ("linux-x86_64", "3.11", {"PYTHON": "/nonexistent/python3"}, "no /nonexistent/python3 on PATH"),
    ],
)
def test_install_script_refuses_in_one_line(tmp_path, target, python, env, needle):
    if os.uname().machine != "x86_64":
        pytest.skip("the wrong-machine case is written for an x86_64 test machine")
    root = fake_bundle(tmp_path, target, python)
    env = {**os.environ, "PYTHON": sys.executable, **env}
    proc = subprocess.run(
        ["sh", root / "install.sh", tmp_path / "env"], capture_output=True, text=True, env=env, timeout=60
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"install.sh: error: {needle}"), proc.stderr
    assert not (tmp_path / "env").exists()


def test_install_script_keeps_a_prefix_that_exists(tmp_path):
    root = fake_bundle(tmp_path)
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "mine").write_text("x")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["sh", root / "install.sh", tmp_path / "env"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 1 and "exists and is not empty" in proc.stderr, proc.stderr
    assert (tmp_path / "env" / "mine").read_text() == "x"


def test_install_script_removes_a_failed_install(tmp_path):
    """pip fails (a broken wheel): one line, and PREFIX is gone."""
    root = fake_bundle(tmp_path)
    pip = next(Path(p) for p in sys.path if (Path(p) / "pip").is_dir())
    with zipfile.ZipFile(root / "tools" / "pip-0-py3-none-any.whl", "w") as z:  # pip, run from a zip as from its wheel
        for file in (pip / "pip").rglob("*"):
            if file.is_file() and "__pycache__" not in file.parts:
                z.write(file, file.relative_to(pip).as_posix())
    (root / "wheels" / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["sh", root / "install.sh", tmp_path / "env"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 1 and "install.sh: error: pip could not install" in proc.stderr, proc.stderr
    assert "broken-1.0-py3-none-any.whl" in proc.stderr, proc.stderr  # pip ran, and refused that wheel
    assert not (tmp_path / "env").exists()


def fake_installed(site: Path) -> importlib.metadata.Distribution:
    """A distribution as pip leaves it: package, dist-info with RECORD, a script, bytecode."""
    (site / "demo").mkdir(parents=True)
    (site / "demo" / "__init__.py").write_text("VALUE = 42\n")
    (site / "demo" / "__pycache__").mkdir()
    (site / "demo" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0")
    info = site / "demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: numpy>=1\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    (info / "INSTALLER").write_text("pip\n")
    files = [
        "demo/__init__.py",
        "demo/__pycache__/__init__.cpython-311.pyc",
        "demo-1.0.dist-info/METADATA",
        "demo-1.0.dist-info/WHEEL",
        "demo-1.0.dist-info/INSTALLER",
        "../../../bin/demo",
    ]
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files) + "demo-1.0.dist-info/RECORD,,\n")
    (dist,) = importlib.metadata.distributions(path=[str(site)])
    return dist


def test_wheel_from_installed_files(tmp_path):
    """How segtool's own wheel is made when it was installed from a wheel (CI's `pip install .`)."""
    wheel = B.wheel_from_installed(fake_installed(tmp_path / "site"), tmp_path)
    assert wheel.name == "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = sorted(z.namelist())
        record = z.read("demo-1.0.dist-info/RECORD").decode()
    assert names == [
        "demo-1.0.dist-info/METADATA",
        "demo-1.0.dist-info/RECORD",
        "demo-1.0.dist-info/WHEEL",
        "demo/__init__.py",
    ]
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"VALUE = 42\n").digest()).decode().rstrip("=")
    assert f"demo/__init__.py,sha256={digest},11" in record.splitlines()
    assert B.wheel_metadata(wheel, "Requires-Dist") == ["numpy>=1"]
    target = tmp_path / "installed"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", target, wheel],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (target / "demo" / "__init__.py").read_text() == "VALUE = 42\n"


# -- slow tier: real bundles from the package index ------------------------------------------------

GOALS_MB = {True: 450, False: 350}  # linux-x86_64, installed from a CPU bundle: with video, images only


def cut_network() -> list[str]:
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.fail("`unshare -n` does not work here (needs root or user namespaces): the offline install is untested")
    return ["unshare", "-n"]


def du_mb(path: Path) -> float:
    return int(subprocess.run(["du", "-sk", path], capture_output=True, text=True, check=True).stdout.split()[0]) / 1024


@pytest.mark.slow
@pytest.mark.parametrize("video", [True, False], ids=["video", "images-only"])
def test_real_bundle_installs_and_runs_offline(tiny, tmp_path, video):
    output = tmp_path / ("b.tar.gz" if video else "b")
    flags = [] if video else ["--no-video"]
    proc = run_segtool("bundle", tiny, "--target", "linux-x86_64", "--output", output, *flags, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "largest installed:" in proc.stdout and "MiB" in proc.stdout, proc.stdout
    assert leftovers(tmp_path) == [output.name]  # no temporary folder left beside it
    if video:
        with tarfile.open(output) as tar:
            tar.extractall(tmp_path, filter="data")
    root = tmp_path / "b"
    wheels = sorted(p.name for p in (root / "wheels").glob("*.whl"))
    assert any(w.startswith("onnxruntime-") for w in wheels) and not any("onnxruntime_gpu" in w for w in wheels)
    assert any(w.startswith("av-") for w in wheels) == video
    assert "| onnxruntime " in (root / "README.md").read_text()

    prefix = tmp_path / "env"
    python = "/usr/bin/python3" if Path("/usr/bin/python3.11").exists() else sys.executable
    offline = cut_network()
    env = {**os.environ, "PYTHON": python}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a box: bytecode is written as modules are imported
    install = subprocess.run(
        [*offline, "bash", root / "install.sh", prefix], capture_output=True, text=True, env=env, timeout=600
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert "installed segtool" in install.stdout, install.stdout
    assert not (prefix / "bin" / "pip").exists() and not list(prefix.glob("lib/python*/site-packages/pip"))

    image = tmp_path / "street.jpg"
    cv2.imwrite(str(image), scene(120, 160, seed=3))
    inputs = [image]
    if video:
        inputs.append(tmp_path / "walk.mp4")
        writer = cv2.VideoWriter(str(inputs[-1]), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))  # type: ignore[attr-defined]
        for k in range(4):
            writer.write(scene(64, 96, seed=k))
        writer.release()
    ran = subprocess.run(
        [
            *offline,
            prefix / "bin" / "segtool",
            "run",
            *inputs,
            "--model",
            prefix / "models" / tiny.name,
            "--out",
            tmp_path / "out",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    here = run_in_process("run", image, "--model", tiny, "--out", tmp_path / "here", "--device", "cpu")
    assert here.returncode == 0, here.stderr
    labels, expected = (np.asarray(Image.open(tmp_path / d / "street_labels.png")) for d in ("out", "here"))
    assert labels.shape == (120, 160) and np.array_equal(labels, expected)  # class indices, pixel for pixel
    if video:
        assert (tmp_path / "out" / "walk_overlay.mp4").stat().st_size > 0

    runtime_mb = du_mb(prefix) - du_mb(prefix / "models")
    print(f"installed linux-x86_64 {'with video' if video else 'images only'}: {runtime_mb:.0f} MiB after a run")
    assert runtime_mb <= GOALS_MB[video], install.stdout
    shutil.rmtree(prefix)
