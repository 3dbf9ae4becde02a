"""Every torchvision VOC model: the table, parity with PyTorch at odd sizes and a batch, metadata,
and the variants of the mobile models (hardswish/hardsigmoid) on ONNX Runtime's CPU provider."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_in_process, run_segtool, scene

from segtool.export import export_model
from segtool.export.models import MODELS
from segtool.export.parity import Gate, row, sample_batch
from segtool.export.pipeline import build_graph
from segtool.export.zoo import describe_models
from segtool.runtime import Segmenter
from segtool.runtime.model.metadata import IMAGENET_MEAN as MEAN
from segtool.runtime.model.metadata import IMAGENET_STD as STD
from segtool.runtime.model.session import create_session

SMALL = ((1, 3, 64, 96),)
PARITY_SHAPES = ((1, 3, 33, 47), (1, 3, 97, 61), (2, 3, 64, 80))


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """One random-weights export per model, made on first use (small gate shapes keep CI short)."""
    folder = tmp_path_factory.mktemp("zoo")
    made: dict[str, object] = {}

    def get(name: str):
        if name not in made:
            made[name] = export_model(folder / f"{name}.onnx", model=name, weights="random", shapes=SMALL)
        return made[name]

    return get


@pytest.mark.parametrize("name", list(MODELS))
def test_parity_with_pytorch_at_odd_sizes_and_a_batch(name, zoo):
    result = zoo(name)
    graph, _ = build_graph(name, "random", 0)
    session, _ = create_session(str(result.path), "cpu")
    gate = Gate()
    for k, shape in enumerate(PARITY_SHAPES):
        x = sample_batch(shape, MEAN, STD, seed=50 + k)
        with torch.no_grad():
            reference = graph(torch.from_numpy(x)).numpy()
        output = session.run(None, {"image": x})[0]
        assert output.shape == reference.shape == (shape[0], 21, shape[2], shape[3])
        parity = row(shape, reference, output, gate)
        assert parity.passes(gate), (name, parity)  # tolerance scales with the logits (parity.Gate)
        assert parity.ratio is not None and parity.ratio < 0.5 and parity.agreement >= 0.999, (name, parity)


@pytest.mark.parametrize("name", list(MODELS))
def test_metadata_carries_the_published_metrics(name, zoo):
    meta = Segmenter(zoo(name).path, device="cpu", warn_random=False).meta
    published = meta.extra["published"]
    weights = MODELS[name].weights()
    assert published["miou"] == weights.meta["_metrics"]["COCO-val2017-VOC-labels"]["miou"]
    assert published["checkpoint"] in weights.url and meta.model == name


def no_torch(tmp_path) -> dict[str, str]:
    """PYTHONPATH entries that make torch, torchvision and onnx refuse to import."""
    for name in ("torch", "torchvision", "onnx"):
        (tmp_path / "blockers" / name).mkdir(parents=True)
        (tmp_path / "blockers" / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked')\n")
    return {"PYTHONPATH": str(tmp_path / "blockers")}


def test_models_command_lists_all_six(tmp_path):
    proc = run_segtool("models", "--json", env_extra=no_torch(tmp_path))  # no torch needed
    assert proc.returncode == 0, proc.stderr
    rows = {r["model"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(MODELS)
    counted = {r["model"]: r for r in describe_models()}  # built and counted now, published figures from torchvision
    for name, shown in rows.items():
        for key in ("params_m", "gflop", "miou", "pixel_acc", "checkpoint", "sha256_prefix"):
            assert shown[key] == counted[name][key], (name, key)
    lraspp, fcn = rows["lraspp_mobilenet_v3_large"], rows["fcn_resnet50"]
    assert lraspp["params_m"] == pytest.approx(3.22, abs=0.01) and 3 < lraspp["gflop"] < 6
    assert fcn["gflop"] > 50 * lraspp["gflop"] and fcn["miou"] == 60.5
    assert fcn["checkpoint"] == "fcn_resnet50_coco-1167a1af.pth" and fcn["sha256_prefix"] == "1167a1af"
    text = run_in_process("models").stdout
    assert "deeplabv3_mobilenet_v3_large" in text and "57.9" in text
    assert "0.98x (no gain)" in text and "3.90x" in text


def test_the_int8_speedups_shown_are_the_measured_ones():
    """`segtool models` says which models gain from int8: its figures are the 'Choose a model' table's
    in docs/BENCHMARKS.md, and the MobileNet models are the ones that do not gain."""
    from segtool.export.models import CARDS

    doc = (Path(__file__).parent.parent / "docs" / "BENCHMARKS.md").read_text()
    table = doc.split("### Choose a model", 1)[1].split("\n\n- ", 1)[0]
    measured = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in CARDS:
            measured[cells[0]] = float(cells[3].rstrip("x"))
    assert measured == {name: card.int8_speedup for name, card in CARDS.items()}
    pays = {name for name, card in CARDS.items() if card.row(name)["int8_pays"]}
    assert pays == {"fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101"}


def test_info_shows_no_published_metrics_for_random_weights(zoo):
    """The file carries torchvision's figures, but they belong to the published weights only."""
    proc = run_in_process("info", zoo("lraspp_mobilenet_v3_large").path)
    assert proc.returncode == 0 and "n/a (not the published weights)" in proc.stdout, proc.stdout
    assert "57.9" not in proc.stdout


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_mobile_variants_run_on_the_cpu_provider(name, tmp_path, zoo):
    fp32 = Segmenter(zoo(name).path, device="cpu", warn_random=False)
    int8 = export_model(tmp_path / "int8.onnx", model=name, weights="random", shapes=SMALL, verify=False,
                        precision="int8", calibration_count=6, calibration_size=96, force=True)  # fmt: skip
    record = int8.meta.extra["variant"]
    assert 0.0 <= record["agreement"] <= 1.0 and record["split"] == {"calibration": 4, "validation": 2}
    seg = Segmenter(int8.path, device="cpu", warn_random=False)
    assert seg.meta.precision == "int8" and seg.provider == "CPUExecutionProvider"
    image = scene(72, 100, seed=3)
    labels = seg.segment(image)
    assert labels.shape == (72, 100) and labels.max() < 21
    reference = fp32.segment(image)
    assert 0.0 < (labels == reference).mean() <= 1.0  # reported in docs/BENCHMARKS.md; random weights here
    labels_model = export_model(tmp_path / "labels.onnx", model=name, weights="random", shapes=SMALL,
                                labels_output=True)  # fmt: skip
    assert np.array_equal(Segmenter(labels_model.path, device="cpu", warn_random=False).segment(image), reference)


def test_demo_with_a_model_name_falls_back_to_that_model_offline(tmp_path, offline):
    """The README's `segtool demo --model lraspp_mobilenet_v3_large`, with the download failing."""
    proc = run_in_process("demo", "--model", "lraspp_mobilenet_v3_large", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lraspp_mobilenet_v3_large-d234d4ea.pth" in proc.stderr  # the offline message names its checkpoint
    made = Segmenter(tmp_path / "models" / "lraspp_mobilenet_v3_large_random.onnx", device="cpu", warn_random=False)
    assert made.meta.model == "lraspp_mobilenet_v3_large" and made.meta.random_weights
    assert "--model models/lraspp_mobilenet_v3_large_random.onnx" in proc.stdout
    assert (tmp_path / "out" / "sample_labels.png").is_file()
