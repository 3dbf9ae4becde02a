"""`segtool run --ray HOST:PORT` on a real two-node Ray cluster on this machine (ray.cluster_utils:
a head and a worker node, 1 CPU each, on loopback), and what a lost node or a silent address gives."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SEGTOOL, assert_clean_failure, run_in_process, run_segtool, scene
from PIL import Image
from servers import free_port

ENV = {"RAY_AUTH_MODE": "disabled"}  # token auth is for clusters reached over a network
KINDS = ("labels.png", "mask.png", "overlay.jpg")


@pytest.fixture
def cluster(monkeypatch) -> Iterator[tuple]:
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    node: dict[str, Any] = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    try:
        worker = cluster.add_node(**node)
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        cluster.shutdown()


def images(folder: Path, count: int, scale: int = 1) -> Path:
    folder.mkdir()
    for k in range(count):
        size = (scale * (48 + 4 * (k % 5)), scale * (64 + 8 * (k % 3)))
        cv2.imwrite(str(folder / f"p{k:02d}.jpg"), scene(*size, seed=k))
    return folder


def complete(out: Path) -> set[str]:
    stems = {p.name.rsplit("_", 1)[0] for p in out.glob("p*_*")}
    return {s for s in stems if all((out / f"{s}_{kind}").is_file() for kind in KINDS)}


@pytest.mark.ray
def test_two_nodes_write_each_input_once_into_one_folder_as_a_plain_run(cluster, tiny, tmp_path):
    ray_cluster, worker = cluster
    inputs = images(tmp_path / "in", 12)
    plain = run_in_process("run", inputs, "--model", tiny, "--out", tmp_path / "plain", "--device", "cpu")
    assert plain.returncode == 0, plain.stderr
    started = time.perf_counter()
    flags = ["--device", "cpu", "--num-actors", "2", "--actor-threads", "1"]
    out = tmp_path / "ray"
    proc = run_segtool(
        "run", inputs, "--model", tiny, "--out", out, "--ray", ray_cluster.address, *flags, env_extra=ENV, timeout=300
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    stems = sorted(p.stem for p in inputs.iterdir())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_{kind}" for s in stems for kind in KINDS] + ["manifest.parquet"]
    )  # every output once, nothing else: no temporary file
    for stem in stems:
        ours, theirs = out / f"{stem}_labels.png", tmp_path / "plain" / f"{stem}_labels.png"
        assert np.array_equal(np.array(Image.open(ours)), np.array(Image.open(theirs))), stem
        assert (out / f"{stem}_overlay.jpg").read_bytes() == (tmp_path / "plain" / f"{stem}_overlay.jpg").read_bytes()
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert sorted(Path(r["source"]).stem for r in rows) == stems  # one row per input
    nodes = {r["node"] for r in rows}
    assert nodes == {ray_cluster.head_node.node_id, worker.node_id}, nodes
    assert all(r["host"] and r["error"] is None for r in rows)
    print(f"ray cluster: 2 nodes, {len(stems)} inputs, {len(rows) * 3} outputs in {seconds:.1f} s")


@pytest.mark.ray
def test_a_node_lost_mid_job_is_one_line_and_skip_existing_does_exactly_the_rest(cluster, tiny, tmp_path):
    ray_cluster, worker = cluster
    inputs, out = images(tmp_path / "in", 40, scale=6), tmp_path / "out"  # ~300x400: a job of seconds
    command = [SEGTOOL, "run", inputs, "--model", tiny, "--out", out, "--ray", ray_cluster.address, "--device", "cpu"]
    env = {**os.environ, **ENV}
    process = subprocess.Popen(
        list(map(str, command)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 180
        while not complete(out) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        at_loss = len(complete(out))
        ray_cluster.remove_node(worker)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "Traceback" not in stdout + stderr, stderr
    assert 0 < at_loss < 40, "the node was not lost mid-job"
    done = complete(out)
    if process.returncode == 0:  # finished on the surviving node
        assert len(done) == 40
    else:
        assert process.returncode == 1, stderr
        (line,) = [line for line in stderr.splitlines() if line.startswith("segtool: error")]
        assert "lost a node or an actor mid-job" in line and "--skip-existing" in line, stderr
        said = int(line.split(" of 40 input(s) have their outputs")[0].rsplit(" ", 1)[1])
        assert at_loss <= said <= len(done), line  # the surviving actor may finish one more
    assert not list(out.glob(".*")), "temporary files left behind"
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("p*_*")}
    again = run_segtool(
        "run",
        inputs,
        "--model",
        tiny,
        "--out",
        out,
        "--ray",
        ray_cluster.address,
        "--device",
        "cpu",
        "--num-actors",
        "1",
        "--skip-existing",
        "--json",
        env_extra=ENV,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["existing"] == len(done) and summary["ok"] == 40 - len(done)
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {Path(r["source"]).stem for r in rows} == {f"p{k:02d}" for k in range(40)} - done
    assert complete(out) == {f"p{k:02d}" for k in range(40)} and not list(out.glob(".*"))
    assert all(out.joinpath(name).stat().st_mtime_ns == stamp for name, stamp in stamps.items() if name[:3] in done)
    print(
        f"node lost after {at_loss} of 40: exit {process.returncode}, {len(done)} done; the rerun did {summary['ok']}"
    )


def test_an_address_where_no_cluster_answers_is_one_line_at_once(tiny, tmp_path):
    images(tmp_path / "in", 1)
    started = time.monotonic()
    proc = run_in_process(
        "run", tmp_path / "in", "--model", tiny, "--out", tmp_path / "out", "--ray", f"127.0.0.1:{free_port()}"
    )
    assert_clean_failure(proc, 2, "no Ray cluster answers at 127.0.0.1:")
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert time.monotonic() - started < 30 and len(errors) == 1, proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("address", ["nohost", "host:port", "ray://:10001", "10.0.0.1:99999"])
def test_an_address_that_names_no_endpoint_is_one_line(tiny, tmp_path, address):
    images(tmp_path / "in", 1)
    proc = run_in_process("run", tmp_path / "in", "--model", tiny, "--out", tmp_path / "out", "--ray", address)
    assert_clean_failure(proc, 2, f"--ray {address!r}: give local, auto, HOST:PORT or ray://HOST:PORT")
