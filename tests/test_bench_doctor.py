"""`segtool bench` (schema and a tiny run; no speed assertions) and `segtool doctor`.

The JSON bench runs the console script (its peak RSS is a process's own), as does `doctor`; the
table runs the CLI in this process."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest
from conftest import run_in_process, run_segtool

STAGES = ("read", "preprocess", "inference", "postprocess", "write", "total")


def test_bench_json_schema_with_torch(model_path):
    proc = run_segtool(
        "bench",
        model_path,
        "--sizes",
        "48x40,33x21",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--torch",
        "--no-matmul",
        "--json",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rt, pt = report["runtime"], report["pytorch"]
    assert rt["provider"] == "CPUExecutionProvider" and rt["peak_rss_mb"] > 0 and pt["peak_rss_mb"] > 0
    assert [(r["width"], r["height"]) for r in rt["results"]] == [(48, 40), (33, 21)]
    for result in rt["results"] + pt["results"]:
        for stage in STAGES:
            assert result[stage]["n"] == 2 and 0 <= result[stage]["median_ms"] <= result[stage]["p90_ms"]
        assert result["cold_ms"] > 0 and result["images_per_s"] > 0
    for r in rt["results"]:  # FLOPs come from the export's metadata: 520x520 ~ 285 GFLOP scaled by pixels
        assert r["gflop"] == pytest.approx(285e9 * r["width"] * r["height"] / 520**2 / 1e9, rel=0.05)
        assert r["gflops_per_s"] > 0


def test_bench_table_and_matmul(model_path):
    proc = run_in_process("bench", model_path, "--sizes", "32x32", "--runs", "1", "--warmup", "0", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "inference" in proc.stdout and "GFLOP/s achieved" in proc.stdout and "numpy fp32 matmul" in proc.stdout
    assert "the matmul rate" in proc.stdout and "peak RSS" in proc.stdout


def test_doctor_reports_this_machine():
    proc = run_segtool("doctor")
    assert proc.returncode == 0, proc.stderr
    assert ort.__version__ in proc.stdout
    for provider in ort.get_available_providers():
        assert provider in proc.stdout
    assert "CPU features" in proc.stdout and "logical cores" in proc.stdout
