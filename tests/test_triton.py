"""`segtool triton`: the written config parses with Triton's own ModelConfig schema, field by field.

The first test runs the console script; the others run the CLI in this process."""

from __future__ import annotations

import json
import sys
from importlib import metadata

import pytest
from conftest import assert_clean_failure, run_in_process, run_segtool
from google.protobuf import text_format
from tiny import tiny_model, tiny_props
from tritonclient.grpc import model_config_pb2 as mc

from segtool.scale import triton_python
from segtool.scale.triton_python import MODEL_PY


def parse(path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def test_config_for_gpu_with_batching_and_tensorrt(tmp_path, model_path):
    proc = run_segtool(
        "triton",
        model_path,
        "--repo",
        tmp_path / "repo",
        "--name",
        "street",
        "--max-batch",
        "4",
        "--instances",
        "2",
        "--kind",
        "gpu",
        "--tensorrt",
        "--dynamic-batching",
    )
    assert proc.returncode == 0, proc.stderr
    assert "tritonserver --model-repository" in proc.stdout
    folder = tmp_path / "repo" / "street"
    assert (folder / "1" / "model.onnx").read_bytes() == model_path.read_bytes()
    config = parse(folder / "config.pbtxt")
    assert config.name == "street" and config.backend == "onnxruntime" and config.max_batch_size == 4
    (image,) = config.input
    assert (image.name, image.data_type, list(image.dims)) == ("image", mc.TYPE_FP32, [3, -1, -1])
    (logits,) = config.output
    assert (logits.name, logits.data_type, list(logits.dims)) == ("logits", mc.TYPE_FP32, [21, -1, -1])
    (group,) = config.instance_group
    assert group.count == 2 and group.kind == mc.ModelInstanceGroup.KIND_GPU
    assert config.dynamic_batching.max_queue_delay_microseconds == 1000
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP32"
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert json.loads(parameters["segtool.classes"])[15] == "person"
    assert json.loads(parameters["segtool.weights"]) == {"kind": "random", "seed": 0}
    assert json.loads(parameters["segtool.mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert parameters["segtool.output"] == "logits" and parameters["segtool.channel_order"] == "RGB"


def test_config_without_batching_keeps_the_batch_dim_and_labels_output(tmp_path):
    model = tiny_model(tmp_path / "labels.onnx", labels_graph=True)
    proc = run_in_process("triton", model, "--repo", tmp_path / "repo", "--max-batch", "0", "--kind", "cpu")
    assert proc.returncode == 0, proc.stderr
    config = parse(tmp_path / "repo" / "tiny" / "config.pbtxt")
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [-1, 3, -1, -1]
    assert (config.output[0].name, config.output[0].data_type, list(config.output[0].dims)) == (
        "labels",
        mc.TYPE_UINT8,
        [-1, -1, -1],
    )
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert not config.HasField("dynamic_batching") and not config.HasField("optimization")


def test_contradictory_flags_are_one_line(tmp_path, tiny):
    proc = run_in_process("triton", tiny, "--repo", tmp_path / "r", "--kind", "cpu", "--tensorrt")
    assert_clean_failure(proc, 2, "--tensorrt needs --kind gpu")
    proc = run_in_process("triton", tiny, "--repo", tmp_path / "r", "--max-batch", "0", "--dynamic-batching")
    assert_clean_failure(proc, 2, "--dynamic-batching needs --max-batch")


@pytest.mark.parametrize("name", ["../../escaped", "/abs/path", 'a"b', "..", "a/b", "-x", "x y", ""])
def test_a_model_name_that_is_no_folder_name_is_refused_and_nothing_is_written(tmp_path, name):
    """The name from the file's metadata is data: before, ``../../escaped`` wrote outside --repo and
    a ``"`` broke config.pbtxt."""
    model = tiny_model(tmp_path / "named.onnx", tiny_props(model=name))
    repo = tmp_path / "work" / "a" / "repo"
    proc = run_in_process("triton", model, "--repo", repo, "--kind", "cpu", cwd=tmp_path)
    assert_clean_failure(proc, 2, f"model name {name!r} (from the file's metadata) cannot name a Triton model")
    assert "--name" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["named.onnx"]


@pytest.mark.parametrize("name", ["../escaped", 'a"b', "."])
def test_a_name_flag_that_is_no_folder_name_is_refused(tmp_path, tiny, name):
    proc = run_in_process("triton", tiny, "--repo", tmp_path / "repo", "--name", name, "--kind", "cpu")
    assert_clean_failure(proc, 2, f"--name {name!r} cannot name a Triton model")
    assert not (tmp_path / "repo").exists() and not (tmp_path / "escaped").exists()


def test_dots_inside_a_name_are_fine(tmp_path, tiny):
    proc = run_in_process("triton", tiny, "--repo", tmp_path / "repo", "--name", "fcn.v1-2_b", "--kind", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert parse(tmp_path / "repo" / "fcn.v1-2_b" / "config.pbtxt").name == "fcn.v1-2_b"


def test_python_backend_repository_takes_encoded_images_and_runs_segtool(tmp_path, tiny):
    proc = run_in_process(
        "triton",
        tiny,
        "--repo",
        tmp_path / "repo",
        "--backend",
        "python",
        "--kind",
        "cpu",
        "--dynamic-batching",
        "--queue-delay-us",
        "20000",
    )
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "repo" / "tiny"
    assert (folder / "1" / "model.onnx").read_bytes() == tiny.read_bytes()
    assert (folder / "1" / "model.py").read_text() == MODEL_PY and "segtool.scale.triton_python" in MODEL_PY
    config = parse(folder / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 8
    (image,) = config.input
    assert (image.name, image.data_type, list(image.dims), image.allow_ragged_batch) == (
        "image",
        mc.TYPE_UINT8,
        [-1],
        True,
    )
    labels, shares = config.output
    assert (labels.name, labels.data_type, list(labels.dims)) == ("labels", mc.TYPE_UINT8, [-1, -1])
    assert (shares.name, shares.data_type, list(shares.dims)) == ("shares", mc.TYPE_FP32, [21])
    assert config.dynamic_batching.max_queue_delay_microseconds == 20000
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert parameters["EXECUTION_ENV_PATH"] == sys.prefix and json.loads(parameters["segtool.classes"])[0]


def test_python_backend_flags_that_cannot_work_are_one_line(tmp_path, tiny):
    proc = run_in_process("triton", tiny, "--repo", tmp_path / "r", "--backend", "python", "--tensorrt")
    assert_clean_failure(proc, 2, "--tensorrt is ONNX Runtime's accelerator")
    proc = run_in_process("triton", tiny, "--repo", tmp_path / "r", "--backend", "tf", "--kind", "cpu")
    assert_clean_failure(proc, 2, "--backend takes onnxruntime or python")
    proc = run_in_process(
        "triton", tiny, "--repo", tmp_path / "r", "--backend", "python", "--kind", "cpu", "--python-env", tmp_path
    )
    assert_clean_failure(proc, 2, "no bin/activate there")
    proc = run_in_process("triton", tiny, "--repo", tmp_path / "r", "--kind", "cpu", "--check")
    assert_clean_failure(proc, 2, "--check needs --backend python")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("inside", ["notes.txt", "photos/"])
def test_a_folder_that_is_no_triton_repository_is_refused_and_left_alone(tmp_path, tiny, inside):
    repo = tmp_path / "home"
    (repo / "photos").mkdir(parents=True)
    (repo / "photos" / "a.jpg").write_bytes(b"x")
    if inside == "notes.txt":
        (repo / "notes.txt").write_text("mine")
        (repo / "photos" / "config.pbtxt").write_text("")  # a model folder, but a file beside it
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    proc = run_in_process("triton", tiny, "--repo", repo, "--kind", "cpu")
    what = "notes.txt is a file" if inside == "notes.txt" else "photos/ has no config.pbtxt"
    assert_clean_failure(proc, 2, f"--repo {repo} is not a Triton model repository ({what})")
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before


def test_a_repository_gets_a_second_model(tmp_path, tiny):
    assert run_in_process("triton", tiny, "--repo", tmp_path / "r", "--kind", "cpu").returncode == 0
    proc = run_in_process("triton", tiny, "--repo", tmp_path / "r", "--kind", "cpu", "--name", "other")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"tiny", "other"}


def test_check_without_tritonserver_is_one_line_and_writes_nothing(tmp_path, tiny, monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(triton_python.metadata, "distribution", missing)
    proc = run_in_process("triton", tiny, "--repo", tmp_path / "r", "--backend", "python", "--kind", "cpu", "--check")
    assert_clean_failure(proc, 2, "tritonserver is not installed: pip install --no-deps 'nvidia-pytriton>=0.5'")
    assert not (tmp_path / "r").exists()
