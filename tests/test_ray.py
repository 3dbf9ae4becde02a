"""`segtool run --ray` on a local Ray instance (2 CPUs) started once for these tests (ray.cluster_utils)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import interrupt_segtool, run_segtool, scene, scene_video
from PIL import Image

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[dict[str, str]]:
    """A one-node cluster (2 CPUs) on loopback, reached as `--ray auto` through RAY_ADDRESS; token auth
    off (it is for clusters reached over a network). Its own processes only are stopped afterwards
    (`ray stop --force` would stop every Ray process on the machine)."""
    from ray.cluster_utils import Cluster

    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    )
    try:
        yield {"RAY_ADDRESS": cluster.address, "RAY_AUTH_MODE": "disabled"}
    finally:
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for k in range(4):
        cv2.imwrite(str(folder / f"img{k}.jpg"), scene(60 + 7 * k, 80 + 5 * k, seed=k))
    (folder / "broken.png").write_bytes(b"not a png")
    scene_video(folder / "clip.mp4", frames=3, width=48, height=32)
    return folder


def ray_run(ray_cluster, inputs, model, out, *flags):
    args = ["run", inputs, "--model", model, "--out", out, "--ray", "auto", "--device", "cpu", "--num-actors", "2"]
    return run_segtool(*args, "--actor-threads", "1", *flags, env_extra=ray_cluster, timeout=600)


def test_ray_labels_equal_a_plain_run_and_the_manifest_records_everything(ray_cluster, inputs, model_path, tmp_path):
    plain = run_segtool("run", inputs, "--model", model_path, "--out", tmp_path / "plain", "--device", "cpu")
    assert plain.returncode == 1  # broken.png
    proc = ray_run(ray_cluster, inputs, model_path, tmp_path / "ray")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "broken.png: not an image" in proc.stderr and "1 of 6 input(s) failed" in proc.stderr
    for k in range(4):
        ours = np.array(Image.open(tmp_path / "ray" / f"img{k}_labels.png"))
        theirs = np.array(Image.open(tmp_path / "plain" / f"img{k}_labels.png"))
        assert np.array_equal(ours, theirs), k
        assert (tmp_path / "ray" / f"img{k}_overlay.jpg").read_bytes() == (
            tmp_path / "plain" / f"img{k}_overlay.jpg"
        ).read_bytes()
    assert cv2.VideoCapture(str(tmp_path / "ray" / "clip_overlay.mp4")).read()[0]
    rows = pq.read_table(tmp_path / "ray" / "manifest.parquet").to_pylist()
    assert len(rows) == 6
    by_name = {Path(r["source"]).name: r for r in rows}
    assert by_name["broken.png"]["error"] and "not an image" in by_name["broken.png"]["error"]
    good = by_name["img2.jpg"]
    assert good["error"] is None and (good["width"], good["height"]) == (90, 74)
    assert json.loads(good["outputs"])["labels"].endswith("img2_labels.png")
    assert sum(json.loads(good["classes"]).values()) == pytest.approx(1.0)
    assert by_name["clip.mp4"]["frames"] == 3 and by_name["clip.mp4"]["kind"] == "video"
    assert not list((tmp_path / "ray").glob(".*"))


def test_skip_existing_does_no_work_the_second_time(ray_cluster, inputs, tiny, tmp_path):
    out = tmp_path / "out"
    assert ray_run(ray_cluster, inputs, tiny, out).returncode == 1
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "manifest.parquet"}
    time.sleep(0.05)
    again = ray_run(ray_cluster, inputs, tiny, out, "--skip-existing", "--json")
    assert ", 5 already done" in again.stderr, again.stdout + again.stderr
    summary = json.loads(again.stdout)
    assert summary["existing"] == 5 and summary["inputs"] == 6 and summary["failed"] == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "manifest.parquet"} == stamps
    plain = run_segtool("run", inputs, "--model", tiny, "--out", out, "--skip-existing", "--json")
    assert json.loads(plain.stdout)["existing"] == 5
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "manifest.parquet"} == stamps


def test_ctrl_c_of_the_driver_leaves_no_partial_file(ray_cluster, model_path, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(40):
        cv2.imwrite(str(folder / f"p{k:02d}.jpg"), scene(240, 320, seed=k))
    out = tmp_path / "out"
    proc = interrupt_segtool(
        "run",
        folder,
        "--model",
        model_path,
        "--out",
        out,
        "--ray",
        "auto",
        "--device",
        "cpu",
        ready=lambda: any(out.glob("*_overlay.jpg")),
        signum=signal.SIGINT,
        wait=180,
        timeout=180,
        env_extra=ray_cluster,
    )
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    done = [p for p in out.iterdir() if not p.name.startswith(".") and p.suffix in (".png", ".jpg")]
    assert 0 < len(done) < 120
    for path in done:
        Image.open(path).load()  # complete, never half-written
    assert len(pq.read_table(out / "manifest.parquet")) < 40
