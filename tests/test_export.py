"""The exported graph: symbolic dims, metadata, validity, and parity with PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import SEED, assert_clean_failure, run_in_process

from segtool.export import export_model
from segtool.export.config import Gate
from segtool.export.models import get_spec
from segtool.export.parity import sample_batch
from segtool.export.weights import WeightsUnavailable, apply_state_dict, load_checkpoint, resolve_weights
from segtool.runtime import VOC_CLASSES, SegtoolError, voc_colormap
from segtool.runtime.errors import ParityError
from segtool.runtime.model.metadata import IMAGENET_MEAN as MEAN
from segtool.runtime.model.metadata import IMAGENET_STD as STD

# Stated tolerances for PyTorch vs ONNX Runtime (CPU), fp32 (see README "Parity").
MAX_ABS_DIFF = 2e-4
MIN_AGREEMENT = 0.9999


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_graph_has_symbolic_batch_height_width_and_passes_checker(model_path):
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    (image,), (logits,) = model.graph.input, model.graph.output
    assert image.name == "image" and logits.name == "logits"
    in_dims, out_dims = dims(image), dims(logits)
    assert in_dims[1] == 3 and out_dims[1] == 21
    for d in (in_dims[0], in_dims[2], in_dims[3], out_dims[0], out_dims[2], out_dims[3]):
        assert isinstance(d, str) and d, (in_dims, out_dims)
    assert in_dims[2] != in_dims[3]  # height and width are independent symbols
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert not any("aux" in init.name for init in model.graph.initializer)


def test_metadata_describes_the_model(model_path):
    props = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    assert props["segtool.model"] == "fcn_resnet50"
    assert tuple(json.loads(props["segtool.classes"])) == VOC_CLASSES
    assert np.array_equal(np.array(json.loads(props["segtool.palette"])), voc_colormap(21))
    assert json.loads(props["segtool.mean"]) == list(MEAN) and json.loads(props["segtool.std"]) == list(STD)
    assert props["segtool.channel_order"] == "RGB"
    assert json.loads(props["segtool.weights"]) == {"kind": "random", "seed": SEED}
    versions = json.loads(props["segtool.versions"])
    assert versions["torch"] == torch.__version__ and {"torchvision", "onnx", "segtool"} <= versions.keys()
    rows = json.loads(props["segtool.parity"])["rows"]
    assert len(rows) >= 3 and any(r["shape"][0] == 2 for r in rows)


def test_export_prints_parity_table(export_run):
    _, proc = export_run
    assert "parity: PyTorch vs ONNX Runtime" in proc.stdout
    assert "1x3x333x517" in proc.stdout and "2x3x256x256" in proc.stdout
    assert "RANDOM weights (seed 0)" in proc.stdout


@pytest.mark.parametrize(
    "shape",
    [(1, 3, 1, 1), (1, 3, 32, 32), (1, 3, 333, 517), (1, 3, 520, 520), (2, 3, 64, 96)],
    ids=lambda s: "x".join(map(str, s)),
)
def test_onnxruntime_matches_pytorch(model_path, torch_graph, shape):
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    x = sample_batch(shape, MEAN, STD, seed=sum(shape))
    with torch.no_grad():
        ref = torch_graph(torch.from_numpy(x)).numpy()
    out = session.run(None, {"image": x})[0]
    assert out.shape == ref.shape == (shape[0], 21, shape[2], shape[3])
    assert np.abs(out - ref).max() <= MAX_ABS_DIFF
    assert (out.argmax(1) == ref.argmax(1)).mean() >= MIN_AGREEMENT


@pytest.mark.slow  # exports a real network
def test_failing_gate_writes_nothing(tmp_path):
    target = tmp_path / "never.onnx"
    with pytest.raises(ParityError) as failed:
        export_model(target, weights="random", shapes=((1, 3, 40, 56),), gate=Gate(atol=0.0, min_agreement=1.0))
    assert failed.value.rows[0].max_abs_diff > 0  # fp32 kernels differ a little: a zero gate cannot pass
    assert "was not written" in str(failed.value)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def test_checkpoint_roundtrip_drops_aux_head_and_records_sha(tmp_path, torch_graph):
    state = {k: v.clone() for k, v in torch_graph.model.state_dict().items()}
    state["aux_classifier.4.weight"] = torch.zeros(21, 256, 1, 1)
    path = tmp_path / "mine.pth"
    torch.save({"model": state, "epoch": 3}, path)
    loaded, identity = load_checkpoint(path)
    assert identity["kind"] == "file" and len(identity["sha256"]) == 64
    net = get_spec("fcn_resnet50").build()
    apply_state_dict(net, loaded, path.name, "fcn_resnet50")
    key = "classifier.4.weight"
    assert torch.equal(net.state_dict()[key], torch_graph.model.state_dict()[key])


def test_checkpoint_that_does_not_fit_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(8, 3, 3, 3), "head.weight": torch.zeros(2)}, path)
    state, _ = load_checkpoint(path)
    with pytest.raises(SegtoolError, match="does not fit fcn_resnet50: .*missing keys.*unexpected keys.*shape"):
        apply_state_dict(get_spec("fcn_resnet50").build(), state, path.name, "fcn_resnet50")


def test_checkpoint_whose_name_hash_disagrees_is_refused(tmp_path):
    path = tmp_path / "fcn_resnet50_coco-1167a1af.pth"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(SegtoolError, match="corrupt or incomplete"):
        load_checkpoint(path)


def test_corrupt_weights_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    proc = run_in_process("export", "--weights", bad, "--output", tmp_path / "x.onnx")
    assert_clean_failure(proc, 2, "broken.pth", "not a readable PyTorch checkpoint")
    assert not (tmp_path / "x.onnx").exists()


def test_download_failure_names_the_checkpoint(offline):
    with pytest.raises(WeightsUnavailable) as info:
        resolve_weights(get_spec("fcn_resnet50"), "DEFAULT", 0)
    message = str(info.value)
    assert "fcn_resnet50_coco-1167a1af.pth" in message and "--weights PATH" in message
    from segtool.cli.main import exit_code

    assert exit_code(info.value) == 2


def test_unwritable_output_and_missing_calibration_are_refused_before_exporting(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_in_process("export", "--weights", "random", "--output", blocker / "sub" / "x.onnx")
    assert_clean_failure(proc, 2, "not writable")
    proc = run_in_process(
        "export", "--weights", "random", "--int8", "--calibration", tmp_path / "nope", "--output", tmp_path / "x.onnx"
    )
    assert_clean_failure(proc, 2, "--calibration", "no such folder or video")
    assert not (tmp_path / "x.onnx").exists()
