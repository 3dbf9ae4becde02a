"""An image-only install: PyAV (``av``) is imported only where a video is opened, so images, `info`,
`doctor` and `bench` work without it, and a video says in one line what to install. Proven in a
process where ``import av`` fails (as tests/test_isolation.py does for torch)."""

from __future__ import annotations

import subprocess
import sys

import cv2
from conftest import assert_clean_failure, make_video, run_segtool, scene


def no_av(tmp_path) -> dict[str, str]:
    """PYTHONPATH entries that shadow ``av`` with a package that refuses to import."""
    (tmp_path / "blockers" / "av").mkdir(parents=True)
    (tmp_path / "blockers" / "av" / "__init__.py").write_text("raise ImportError('av is blocked by this test')\n")
    return {"PYTHONPATH": str(tmp_path / "blockers")}


def test_the_blocker_really_blocks(tmp_path):
    import os

    env = {**os.environ, **no_av(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", "import av"], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "blocked by this test" in proc.stderr


def test_importing_runtime_and_cli_loads_no_pyav():
    code = "import sys, segtool.runtime, segtool.cli.main; print('av' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_images_info_doctor_and_bench_work_without_pyav_and_a_video_says_what_to_install(tmp_path, tiny):
    env = no_av(tmp_path)
    image = tmp_path / "img.jpg"
    cv2.imwrite(str(image), scene(40, 56))
    ran = run_segtool("run", image, "--model", tiny, "--out", tmp_path / "o", env_extra=env)
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "o" / "img_labels.png").is_file() and (tmp_path / "o" / "img_overlay.jpg").is_file()
    quick = ("--sizes", "32x32", "--runs", "1", "--warmup", "0", "--no-matmul", "--device", "cpu")
    for args in (("info", tiny), ("doctor",), ("bench", tiny, "--image", image, *quick)):
        proc = run_segtool(*args, env_extra=env)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stderr)

    video = tmp_path / "clip.mp4"
    make_video(video, frames=3)
    refused = run_segtool("run", video, image, "--model", tiny, "--out", tmp_path / "v", env_extra=env)
    assert_clean_failure(refused, 2, "clip.mp4: videos need PyAV", "pip install av")
    assert [line for line in refused.stderr.splitlines() if "error" in line] == [refused.stderr.splitlines()[-1]]
    assert not (tmp_path / "v" / "img_labels.png").exists()  # refused before any work
    bench = run_segtool("bench", tiny, "--video", video, *quick, env_extra=env)
    assert_clean_failure(bench, 2, "videos need PyAV", "pip install av")
