"""Every torchvision VOC model: the table, parity with PyTorch at odd sizes and a batch, metadata,
and the variants of the mobile models (hardswish/hardsigmoid) on ONNX Runtime's CPU provider."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_in_process, run_segtool, scene

from segtool.export import export_model
from segtool.export.config import Gate
from segtool.export.models import INT8_PAYS, MODELS
from segtool.export.parity import row, sample_batch
from segtool.export.pipeline import build_graph
from segtool.runtime import Segmenter
from segtool.runtime.model.metadata import IMAGENET_MEAN as MEAN
from segtool.runtime.model.metadata import IMAGENET_STD as STD
from segtool.runtime.model.session import create_session

SMALL = ((1, 3, 64, 96),)
PARITY_SHAPES = ((1, 3, 33, 47), (1, 3, 97, 61), (2, 3, 64, 80))
# One ResNet and one MobileNet of the zoo beside fcn_resnet50 (tests/test_export.py): the other three
# share their backbones and heads. All six are exported and timed by `segtool bench` in
# docs/BENCHMARKS.md ("Choose a model"), and listed by `segtool models` below.
SAMPLE = ("deeplabv3_resnet50", "lraspp_mobilenet_v3_large")


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


@pytest.mark.parametrize("name", SAMPLE)
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


@pytest.mark.parametrize("name", SAMPLE)
def test_metadata_carries_the_published_metrics(name, zoo):
    """torchvision's card, read from its weights enum at export time, travels in the file."""
    meta = Segmenter(zoo(name).path, device="cpu", warn_random=False).meta
    published = meta.extra["published"]
    weights = MODELS[name].weights()
    assert published["miou"] == weights.meta["_metrics"]["COCO-val2017-VOC-labels"]["miou"]
    assert published["gflops"] == weights.meta["_ops"] and published["params_m"] * 1e6 == pytest.approx(
        weights.meta["num_params"], abs=5e3
    )
    assert published["checkpoint"] in weights.url and meta.model == name


def no_torch(tmp_path) -> dict[str, str]:
    """PYTHONPATH entries that make torch, torchvision and onnx refuse to import."""
    for name in ("torch", "torchvision", "onnx"):
        (tmp_path / "blockers" / name).mkdir(parents=True)
        (tmp_path / "blockers" / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked')\n")
    return {"PYTHONPATH": str(tmp_path / "blockers")}


def test_models_command_lists_all_six_with_torchvisions_figures():
    proc = run_segtool("models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["model"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(MODELS)
    for name, shown in rows.items():  # torchvision's card, read from its weights enum when asked
        weights = MODELS[name].weights()
        assert shown["miou"] == weights.meta["_metrics"]["COCO-val2017-VOC-labels"]["miou"], name
        assert shown["gflops"] == weights.meta["_ops"] and shown["checkpoint"] in weights.url, name
    lraspp, fcn = rows["lraspp_mobilenet_v3_large"], rows["fcn_resnet50"]
    assert lraspp["params_m"] == pytest.approx(3.22, abs=0.01) and fcn["gflops"] > 50 * lraspp["gflops"]
    assert fcn["miou"] == 60.5 and fcn["pixel_acc"] == 91.4
    assert fcn["checkpoint"] == "fcn_resnet50_coco-1167a1af.pth" and fcn["sha256_prefix"] == "1167a1af"
    text = run_in_process("models").stdout
    assert "deeplabv3_mobilenet_v3_large" in text and "57.9" in text
    assert "0.98x (no gain)" in text and "3.90x" in text


def test_models_command_without_torch_lists_the_six_and_says_what_to_install(tmp_path):
    blocked = no_torch(tmp_path)
    proc = run_segtool("models", "--json", env_extra=blocked)
    assert proc.returncode == 0, proc.stderr
    rows = {r["model"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(MODELS) and rows["fcn_resnet50"]["int8_speedup_measured"] == 3.9
    assert "miou" not in rows["fcn_resnet50"] and "pip install 'segtool[export]'" in proc.stderr
    table = run_segtool("models", env_extra=blocked)
    assert table.returncode == 0 and "0.98x (no gain)" in table.stdout
    assert "pip install 'segtool[export]'" in table.stdout


def measured_int8_speedups(doc: str) -> list[dict[str, float]]:
    """Each Markdown table of ``doc`` with an "int8 speed-up" column: {model: figure} for its model rows."""
    tables = []
    for in_table, group in groupby(doc.splitlines(), key=lambda line: line.startswith("|")):
        lines = list(group)
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        if not in_table or "int8 speed-up" not in header:
            continue
        column = header.index("int8 speed-up")
        figures = {}
        for line in lines[1:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            figure = cells[column].strip("*").rstrip("x") if len(cells) > column else ""
            if cells[0] in MODELS and figure.replace(".", "", 1).isdigit():
                figures[cells[0]] = float(figure)
        tables.append(figures)
    return tables


def test_the_int8_speedups_shown_are_the_measured_ones():
    """`segtool models` says which models gain from int8: its figures are those of the docs/BENCHMARKS.md
    table that lists all six (wherever that table sits), and the MobileNet models do not gain."""
    doc = (Path(__file__).parent.parent / "docs" / "BENCHMARKS.md").read_text()
    shown = {name: spec.int8_speedup for name, spec in MODELS.items()}
    assert shown in [t for t in measured_int8_speedups(doc) if t.keys() == MODELS.keys()], shown
    pays = {name for name, speedup in shown.items() if speedup >= INT8_PAYS}
    assert pays == {"fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101"}


def test_info_shows_no_published_metrics_for_random_weights(zoo):
    """The file carries torchvision's figures, but they belong to the published weights only."""
    proc = run_in_process("info", zoo("lraspp_mobilenet_v3_large").path)
    assert proc.returncode == 0 and "n/a (not the published weights)" in proc.stdout, proc.stdout
    assert "57.9" not in proc.stdout


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large"])
def test_mobile_variants_run_on_the_cpu_provider(name, tmp_path, zoo):
    fp32 = Segmenter(zoo(name).path, device="cpu", warn_random=False)
    int8 = export_model(
        tmp_path / "int8.onnx",
        model=name,
        weights="random",
        shapes=SMALL,
        verify=False,
        precision="int8",
        calibration_count=6,
        calibration_size=96,
        force=True,
    )
    record = int8.meta.extra["variant"]
    assert 0.0 <= record["agreement"] <= 1.0 and record["split"] == {"calibration": 4, "validation": 2}
    seg = Segmenter(int8.path, device="cpu", warn_random=False)
    assert seg.meta.precision == "int8" and seg.provider == "CPUExecutionProvider"
    image = scene(72, 100, seed=3)
    labels = seg.segment(image)
    assert labels.shape == (72, 100) and labels.max() < 21
    reference = fp32.segment(image)
    assert 0.0 < (labels == reference).mean() <= 1.0  # reported in docs/BENCHMARKS.md; random weights here
    labels_model = export_model(
        tmp_path / "labels.onnx", model=name, weights="random", shapes=SMALL, labels_output=True
    )
    assert np.array_equal(Segmenter(labels_model.path, device="cpu", warn_random=False).segment(image), reference)


@pytest.mark.slow  # exports a real network
def test_demo_with_a_model_name_falls_back_to_that_model_offline(tmp_path, offline):
    """The README's `segtool demo --model lraspp_mobilenet_v3_large`, with the download failing."""
    proc = run_in_process("demo", "--model", "lraspp_mobilenet_v3_large", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lraspp_mobilenet_v3_large-d234d4ea.pth" in proc.stderr  # the offline message names its checkpoint
    made = Segmenter(tmp_path / "models" / "lraspp_mobilenet_v3_large_random.onnx", device="cpu", warn_random=False)
    assert made.meta.model == "lraspp_mobilenet_v3_large" and made.meta.random_weights
    assert "--model models/lraspp_mobilenet_v3_large_random.onnx" in proc.stdout
    assert (tmp_path / "out" / "sample_labels.png").is_file()
