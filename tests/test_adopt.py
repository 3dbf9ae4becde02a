"""`segtool adopt` and what it needs of the runtime: ONNX files made elsewhere (a plain
``torch.onnx.export`` of a torchvision model with its aux head, one with external data, hand-built
graphs), outputs smaller than the input, fixed-size graphs, and showing only what is true
(published accuracy, "not verified", size with external data, Triton with external data).

Graphs are built with onnx.helper (milliseconds) except the torchvision export, made once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from conftest import assert_clean_failure, imread, run_in_process, run_segtool, scene
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tiny import tiny_props

from segtool.runtime import Segmenter
from segtool.runtime.errors import UsageError
from segtool.runtime.model.classes import generated_palette, parse_classes, parse_palette
from segtool.runtime.model.external import external_locations, model_bytes, model_files
from segtool.runtime.model.metadata import ModelMetadata
from segtool.runtime.model.voc import VOC_CLASSES, voc_colormap

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


# -- builders -------------------------------------------------------------------------------------


def hand_graph(path: Path, classes: int = 4, stride: int = 1, dims=("batch", 3, "height", "width"),
               inputs: int = 1, big: int = 0, labels: bool = False, props: dict[str, str] | None = None,
               seed: int = 0) -> Path:  # fmt: skip
    """A small graph: Conv (kernel = stride = ``stride``) from RGB to ``classes`` logits named ``scores``,
    plus an unused-by-segtool second output ``aux`` (a copy times 2), optionally a second input, an
    initializer of ``big`` floats feeding a zero term, or an ArgMax to uint8 labels."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((classes, 3, stride, stride)).astype(np.float32)
    out_dims = [dims[0], classes] + [d // stride if isinstance(d, int) else f"{d}_s" for d in dims[2:]]
    init = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.float32(2.0), "two")]
    nodes = [helper.make_node("Conv", ["pixels", "w"], ["conv"], strides=[stride, stride])]
    if big:
        init += [numpy_helper.from_array(rng.standard_normal(big).astype(np.float32), "big"),
                 numpy_helper.from_array(np.float32(0.0), "zero")]  # fmt: skip
        nodes += [helper.make_node("ReduceMean", ["big"], ["m"], keepdims=0), helper.make_node("Mul", ["m", "zero"],
                  ["z"]), helper.make_node("Add", ["conv", "z"], ["scores"])]  # fmt: skip
    else:
        nodes.append(helper.make_node("Identity", ["conv"], ["scores"]))
    nodes.append(helper.make_node("Mul", ["scores", "two"], ["aux"]))
    graph_inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, list(dims))]
    if inputs == 2:
        graph_inputs.append(helper.make_tensor_value_info("depth", TensorProto.FLOAT, list(dims)))
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, out_dims),
               helper.make_tensor_value_info("aux", TensorProto.FLOAT, out_dims)]  # fmt: skip
    if labels:
        nodes += [helper.make_node("ArgMax", ["scores"], ["am"], axis=1, keepdims=0),
                  helper.make_node("Cast", ["am"], ["labels"], to=TensorProto.UINT8)]  # fmt: skip
        outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, [out_dims[0], *out_dims[2:]])]
    model = helper.make_model(helper.make_graph(nodes, "hand", graph_inputs, outputs, init),
                              opset_imports=[helper.make_opsetid("", 18)], producer_name="hand")  # fmt: skip
    model.ir_version = 9
    if props:
        helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def classes_file(path: Path, names) -> Path:
    path.write_text("\n".join(names) + "\n")
    return path


def to_external(source: Path, target: Path, location: str = "x.onnx.data") -> Path:
    (target.parent / location).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(onnx.load(str(source)), str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)  # fmt: skip
    return target


def normalized(image_bgr: np.ndarray) -> np.ndarray:
    rgb = image_bgr[:, :, ::-1].astype(np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return ((rgb - mean) / std).transpose(2, 0, 1)[None]


@pytest.fixture(scope="module")
def torchvision_export(tmp_path_factory) -> tuple[Path, Any]:
    """deeplabv3_mobilenet_v3_large with its aux head, random weights, exported by plain torch.onnx.export
    (TorchScript exporter), input ``input``, outputs ``out`` and ``aux``, open batch/height/width."""
    torch.manual_seed(0)
    net = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    ).eval()
    path = tmp_path_factory.mktemp("plain") / "deeplab.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        torch.onnx.export(net, (torch.randn(1, 3, 64, 96),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["out", "aux"],
                          dynamic_axes={"input": axes, "out": axes, "aux": axes})  # fmt: skip
    return path, net


# -- adopting a plain torch.onnx.export file ------------------------------------------------------


def test_adopt_plain_torch_export_keeps_out_and_runs(torchvision_export, tmp_path):
    source, net = torchvision_export
    local = shutil.copy(source, tmp_path / "deeplab.onnx")
    before = Path(local).read_bytes()
    classes = classes_file(tmp_path / "voc.txt", VOC_CLASSES)
    proc = run_segtool("adopt", local, "--classes", classes)  # the console script, as a user types it
    assert proc.returncode == 0, proc.stderr
    adopted = tmp_path / "deeplab_segtool.onnx"  # the default: beside the input
    assert "dropped aux" in proc.stdout and "not verified" in proc.stdout
    assert Path(local).read_bytes() == before  # the input is untouched
    graph = onnx.load(str(adopted)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits"]
    seg = Segmenter(adopted, device="cpu", warn_random=False)
    meta = seg.meta
    assert meta.weights["kind"] == "adopted" and meta.weights["file"] == "deeplab.onnx"
    assert len(meta.weights["sha256"]) == 64 and meta.model == "deeplab" and not meta.verified
    assert meta.extra["adopted"]["output"] == "out" and meta.extra["adopted"]["dropped_outputs"] == ["aux"]
    assert meta.classes == VOC_CLASSES and np.array_equal(meta.palette, voc_colormap(21))
    assert meta.output_stride == 1 and "input_size" not in meta.extra
    image = scene(70, 90, seed=2)
    with torch.no_grad():
        expected = net(torch.from_numpy(normalized(image)))["out"].numpy()  # `out`, not `aux` (same shape)
    got = seg.run(seg.prepare([image]))
    assert got.shape == expected.shape == (1, 21, 70, 90)
    assert np.abs(got - expected).max() <= 1e-3 * max(1.0, float(np.abs(expected).max()))
    assert np.array_equal(seg.segment(image), expected[0].argmax(0).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "street.jpg"), image)
    ran = run_in_process("run", tmp_path / "street.jpg", "--model", adopted, "--out", tmp_path / "o", "--device", "cpu")
    assert ran.returncode == 0, ran.stderr
    written = np.array(Image.open(tmp_path / "o" / "street_labels.png"))  # paletted: the class indices
    assert np.array_equal(written, seg.segment(imread(tmp_path / "street.jpg")))


def test_adopt_carries_external_data_into_one_file(torchvision_export, tmp_path):
    source, net = torchvision_export
    external = to_external(source, tmp_path / "ext" / "x.onnx")
    assert external_locations(external) == ["x.onnx.data"]
    assert model_bytes(external) > 10 * external.stat().st_size  # the weights are in the data file
    classes = classes_file(tmp_path / "voc.txt", VOC_CLASSES)
    proc = run_in_process("adopt", external, "--classes", classes, "--output", tmp_path / "out" / "m.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "self-contained" in proc.stdout
    written = tmp_path / "out" / "m.onnx"
    assert external_locations(written) == [] and sorted(p.name for p in written.parent.iterdir()) == ["m.onnx"]
    shutil.rmtree(tmp_path / "ext")  # the copy needs nothing of the original
    image = scene(40, 56, seed=1)
    with torch.no_grad():
        expected = net(torch.from_numpy(normalized(image)))["out"].numpy()
    seg = Segmenter(written, device="cpu", warn_random=False)
    assert np.abs(seg.run(seg.prepare([image])) - expected).max() <= 1e-3 * max(1.0, float(np.abs(expected).max()))


def test_adopt_writes_external_data_past_the_inline_limit(tmp_path):
    from segtool.export.adopt import adopt_model

    source = hand_graph(tmp_path / "h.onnx", big=50_000)
    result = adopt_model(source, ["a", "b", "c", "d"], output=tmp_path / "o" / "h.onnx", inline_limit=1000)
    assert [p.name for p in result.data_files] == ["h.onnx.data"]
    assert model_files(result.path) == [result.path, result.path.parent / "h.onnx.data"]
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["h.onnx", "h.onnx.data"]  # no scratch left
    seg = Segmenter(result.path, device="cpu", warn_random=False)
    assert seg.segment(scene(16, 24)).shape == (16, 24)


def test_default_output_and_explicit_overwrite(tmp_path):
    source = hand_graph(tmp_path / "net.onnx")
    classes = classes_file(tmp_path / "c.txt", "abcd")
    before = source.read_bytes()
    assert run_in_process("adopt", source, "--classes", classes).returncode == 0
    assert source.read_bytes() == before and (tmp_path / "net_segtool.onnx").is_file()
    proc = run_in_process("adopt", source, "--classes", classes, "--output", source, "--name", "mine")
    assert proc.returncode == 0, proc.stderr
    assert Segmenter(source, device="cpu", warn_random=False).meta.model == "mine"  # named explicitly: replaced


def test_several_inputs_are_refused_in_one_line(tmp_path):
    source = hand_graph(tmp_path / "two.onnx", inputs=2)
    proc = run_in_process("adopt", source, "--classes", classes_file(tmp_path / "c.txt", "abcd"))
    assert_clean_failure(proc, 2, "has 2 inputs", "pixels", "depth", "one image input")
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("adopt: ")]  # progress lines aside
    assert len(lines) == 1 and not (tmp_path / "two_segtool.onnx").exists()


def test_wrong_class_count_and_bad_logits_name_are_usage_errors(tmp_path):
    source = hand_graph(tmp_path / "h.onnx", classes=4)
    proc = run_in_process("adopt", source, "--classes", classes_file(tmp_path / "c.txt", "abc"))
    assert_clean_failure(proc, 2, "--classes names 3 classes for the 4 channels of output scores")
    proc = run_in_process("adopt", source, "--classes", tmp_path / "c.txt", "--logits", "nope")
    assert_clean_failure(proc, 2, "--logits nope", "scores", "aux")
    labels_only = hand_graph(tmp_path / "l.onnx", labels=True)
    proc = run_in_process("adopt", labels_only, "--classes", classes_file(tmp_path / "d.txt", "abc"))
    assert_clean_failure(proc, 2, "--classes names 3 classes but output labels holds class index 3")


def test_the_output_not_named_aux_is_kept_and_logits_picks_another(tmp_path):
    from segtool.export.adopt import adopt_model

    source = hand_graph(tmp_path / "h.onnx")
    image = scene(12, 20)
    main = Segmenter(adopt_model(source, "abcd", output=tmp_path / "a.onnx").path, device="cpu", warn_random=False)
    aux = adopt_model(source, "abcd", output=tmp_path / "b.onnx", logits="aux")
    other = Segmenter(aux.path, device="cpu", warn_random=False)
    assert main.meta.extra["adopted"]["output"] == "scores" and aux.dropped == ["scores"]
    tensor = main.prepare([image])
    assert np.allclose(other.run(tensor), 2 * main.run(tensor))


# -- outputs smaller than the input ---------------------------------------------------------------


def test_stride_4_output_is_upsampled_bilinearly_before_the_argmax(tmp_path):
    source = hand_graph(tmp_path / "s4.onnx", classes=5, stride=4)
    proc = run_in_process("adopt", source, "--classes", classes_file(tmp_path / "c.txt", "abcde"))
    assert proc.returncode == 0, proc.stderr
    assert "1/4 of the input size" in proc.stdout
    adopted = tmp_path / "s4_segtool.onnx"
    seg = Segmenter(adopted, device="cpu", warn_random=False)
    assert seg.meta.output_stride == 4 and seg.meta.extra["output_stride"] == 4
    image = scene(64, 96, seed=5)
    tensor = seg.prepare([image])
    raw = seg.forward(tensor)
    assert raw.shape == (1, 5, 16, 24)
    expected = torch.nn.functional.interpolate(torch.from_numpy(raw), size=(64, 96), mode="bilinear",
                                               align_corners=False).numpy()  # fmt: skip
    got = seg.run(tensor)
    assert got.shape == (1, 5, 64, 96) and np.abs(got - expected).max() < 1e-4
    labels = seg.segment(image)
    assert labels.shape == (64, 96) and np.mean(labels == expected[0].argmax(0)) > 0.999
    tiled = seg.segment(image, tile=48)  # windows of 48: each window's output upsampled to the window
    assert tiled.shape == (64, 96) and np.mean(tiled == labels) > 0.9
    info = run_in_process("info", adopted)
    assert info.returncode == 0 and "1/4 of the input size" in info.stdout
    assert json.loads(run_in_process("info", adopted, "--json").stdout)["output_stride"] == 4


def test_stride_8_labels_output_is_upsampled_with_nearest(tmp_path):
    path = hand_graph(tmp_path / "l8.onnx", classes=21, stride=8, labels=True, props=tiny_props(output="labels"))
    seg = Segmenter(path, device="cpu", warn_random=False)
    tensor = seg.prepare([scene(40, 64, seed=3)])
    raw = seg.forward(tensor)
    assert raw.shape == (1, 5, 8)
    up = seg.run(tensor)
    assert up.shape == (1, 40, 64) and np.array_equal(up[0], np.kron(raw[0], np.ones((8, 8), np.uint8)))


def test_fixed_size_graph_is_fed_its_size_and_batches_are_cut(tmp_path):
    source = hand_graph(tmp_path / "fixed.onnx", classes=4, stride=2, dims=(1, 3, 32, 48))
    proc = run_in_process("adopt", source, "--classes", classes_file(tmp_path / "c.txt", "abcd"))
    assert proc.returncode == 0, proc.stderr
    assert "input size: 48x32 only" in proc.stdout and "1/2 of the input size" in proc.stdout
    seg = Segmenter(tmp_path / "fixed_segtool.onnx", device="cpu", warn_random=False)
    assert seg.meta.extra["input_size"] == [32, 48] and seg.fixed_batch == 1
    frames = [scene(50, 70, seed=k) for k in range(3)]
    streamed = [labels for _, labels in seg.segment_stream(frames, batch=3)]  # the graph takes batches of 1
    assert [s.shape for s in streamed] == [(50, 70)] * 3
    assert all(np.array_equal(s, seg.segment(f)) for s, f in zip(streamed, frames))
    assert seg.prepare([frames[0]], max_size=20).shape == (1, 3, 32, 48)


def test_int8_variant_of_an_adopted_file(tmp_path):
    from segtool.export.adopt import adopt_model
    from segtool.export.config import ExportConfig
    from segtool.export.variants import make_variant

    adopted = adopt_model(hand_graph(tmp_path / "h.onnx", stride=4), "abcd", output=tmp_path / "a.onnx")
    config = ExportConfig(precision="int8", calibration_count=3, calibration_size=48, force=True,
                          shapes=((1, 3, 48, 64),))  # fmt: skip
    data, record = make_variant(adopted.path.read_bytes(), config, adopted.meta.mean, adopted.meta.std)
    assert record["precision"] == "int8" and len(record["vs_fp32"]) == 1
    int8 = tmp_path / "int8.onnx"
    model = onnx.load_from_string(data)
    onnx.helper.set_model_props(model, adopted.meta.to_props())
    int8.write_bytes(model.SerializeToString())
    assert Segmenter(int8, device="cpu", warn_random=False).segment(scene(48, 64)).shape == (48, 64)


def test_bench_compare_serve_and_triton_take_an_adopted_file(tmp_path):
    from fastapi.testclient import TestClient
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from segtool.serve import ServeSettings, create_app

    source = hand_graph(tmp_path / "h.onnx", stride=4)
    assert run_in_process("adopt", source, "--classes", classes_file(tmp_path / "c.txt", "abcd")).returncode == 0
    adopted = tmp_path / "h_segtool.onnx"
    cv2.imwrite(str(tmp_path / "p.png"), scene(40, 60))
    bench = run_in_process("bench", adopted, "--sizes", "64x48", "--runs", "1", "--no-matmul", "--device", "cpu")
    assert bench.returncode == 0, bench.stderr
    compare = run_in_process("compare", adopted, adopted, "--images", tmp_path / "p.png", "--device", "cpu")
    assert compare.returncode == 0, compare.stderr
    with TestClient(create_app(Segmenter(adopted, device="cpu", warn_random=False), ServeSettings())) as client:
        body = client.post("/v1/segment", content=(tmp_path / "p.png").read_bytes()).json()
    assert body["verified"] is False and (body["width"], body["height"]) == (60, 40)
    assert run_in_process("triton", adopted, "--repo", tmp_path / "repo", "--kind", "cpu").returncode == 0
    config = text_format.Parse((tmp_path / "repo" / "h" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert [i.name for i in config.input] == ["image"] and [o.name for o in config.output] == ["logits"]
    assert config.parameters["segtool.output_stride"].string_value == "4"


# -- showing only what is true --------------------------------------------------------------------

PUBLISHED = {"weights": "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1", "dataset": "COCO-val2017-VOC-labels",
             "miou": 60.5, "pixel_acc": 91.4, "checkpoint": "fcn_resnet50_coco-1167a1af.pth",
             "sha256_prefix": "1167a1af"}  # fmt: skip
PARITY: dict[str, Any] = {
    "atol": 1e-4,
    "rtol": 1e-3,
    "min_agreement": 0.999,
    "rule": "...",
    "provider": "CPUExecutionProvider",
    "rows": [{"shape": [1, 3, 64, 64], "max_abs_diff": 1e-6, "agreement": 1.0, "scale": 3.0, "ratio": 0.01}],
}


def tiny_with(path: Path, weights: dict, **extra) -> Path:
    props = tiny_props(weights=json.dumps(weights), **{k: json.dumps(v) for k, v in extra.items()})
    return hand_graph(path, classes=21, props=props)


@pytest.mark.parametrize(
    ("weights", "shown"),
    [
        ({"kind": "torchvision", "name": PUBLISHED["weights"], "file": PUBLISHED["checkpoint"]}, True),
        ({"kind": "file", "file": PUBLISHED["checkpoint"], "sha256": "1167a1af" + "0" * 56}, True),
        ({"kind": "file", "file": "mine.pth", "sha256": "ab" * 32}, False),
        ({"kind": "random", "seed": 0}, False),
        ({"kind": "adopted", "file": "x.onnx", "sha256": "cd" * 32}, False),
        ({"kind": "torchvision", "name": "FCN_ResNet50_Weights.OTHER", "file": "x.pth"}, False),
    ],
)
def test_published_accuracy_only_for_the_published_weights(tmp_path, weights, shown):
    path = tiny_with(tmp_path / "m.onnx", weights, published=PUBLISHED)
    text = run_in_process("info", path, "--device", "cpu").stdout
    described = json.loads(run_in_process("info", path, "--json", "--device", "cpu").stdout)
    assert ("60.5" in text) is shown and ("mIoU 60.5" in text) is shown
    assert ("n/a (not the published weights)" in text) is not shown
    assert (described["published"] == PUBLISHED) is shown and (described["published"] is None) is not shown
    assert ("published" in described["extra"]) is shown  # the stored figures are not passed on either


def test_verified_only_with_a_passing_parity_gate(tmp_path):
    random = {"kind": "random", "seed": 0}
    gated = tiny_with(tmp_path / "gated.onnx", random, parity=PARITY)
    skipped = tiny_with(tmp_path / "skipped.onnx", random)  # an export with --no-verify has no parity record
    failing = dict(PARITY, rows=[dict(PARITY["rows"][0], ratio=3.0)])
    failed = tiny_with(tmp_path / "failed.onnx", random, parity=failing)
    metas = {p.stem: Segmenter(p, device="cpu", warn_random=False).meta for p in (gated, skipped, failed)}
    assert [metas[k].verified for k in ("gated", "skipped", "failed")] == [True, False, False]
    assert "verified: matches PyTorch on 1 input shape" in run_in_process("info", gated).stdout
    assert "not verified: exported without the parity gate (--no-verify)" in run_in_process("info", skipped).stdout
    assert json.loads(run_in_process("info", skipped, "--json").stdout)["verified"] is False

    from fastapi.testclient import TestClient

    from segtool.serve import ServeSettings, create_app

    image = cv2.imencode(".png", scene(20, 30))[1].tobytes()
    for path, verified in ((gated, True), (skipped, False)):
        with TestClient(create_app(Segmenter(path, device="cpu", warn_random=False), ServeSettings())) as client:
            assert client.post("/v1/segment", content=image).json()["verified"] is verified


def test_info_size_counts_external_data(tmp_path):
    big = hand_graph(tmp_path / "big.onnx", classes=21, big=400_000, props=tiny_props())
    external = to_external(big, tmp_path / "ext" / "m.onnx", location="m.onnx.data")
    assert external.stat().st_size < 100_000
    described = json.loads(run_in_process("info", external, "--json").stdout)
    assert described["size_mb"] == round(model_bytes(external) / 1e6, 1) == 1.6
    assert [Path(e["file"]).name for e in described["external_data"]] == ["m.onnx.data"]
    assert "1.6 MB with external data" in run_in_process("info", external).stdout
    assert described["external_data"][0]["size_mb"] == 1.6
    (tmp_path / "ext" / "m.onnx.data").unlink()
    assert_clean_failure(run_in_process("info", external), 2, str(external))  # ONNX Runtime cannot open it


def test_triton_carries_external_data_along(tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    props = tiny_props()
    source = hand_graph(tmp_path / "src.onnx", classes=21, big=100_000, props=props)
    external = to_external(source, tmp_path / "ext" / "m.onnx", location="weights/m.bin")
    proc = run_in_process("triton", external, "--repo", tmp_path / "repo", "--kind", "cpu")
    assert proc.returncode == 0, proc.stderr
    version = tmp_path / "repo" / "tiny" / "1"
    assert (version / "weights" / "m.bin").read_bytes() == (tmp_path / "ext" / "weights" / "m.bin").read_bytes()
    shutil.rmtree(tmp_path / "ext")  # the repository stands alone
    image = scene(16, 16)
    assert Segmenter(version / "model.onnx", device="cpu", warn_random=False).segment(image).shape == (16, 16)
    config = text_format.Parse((version.parent / "config.pbtxt").read_text(), mc.ModelConfig())
    assert config.max_batch_size == 8
    fixed = hand_graph(tmp_path / "fixed.onnx", classes=21, dims=(1, 3, 16, 16), props=props)
    assert run_in_process("triton", fixed, "--repo", tmp_path / "r2", "--name", "f", "--kind", "cpu").returncode == 0
    config = text_format.Parse((tmp_path / "r2" / "f" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [1, 3, 16, 16]  # batch fixed at 1


def test_triton_refuses_a_model_whose_external_data_is_missing(tmp_path):
    source = hand_graph(tmp_path / "src.onnx", classes=21, props=tiny_props())
    external = to_external(source, tmp_path / "ext" / "m.onnx")
    (tmp_path / "ext" / "x.onnx.data").unlink()
    proc = run_in_process("triton", external, "--repo", tmp_path / "repo", "--kind", "cpu")
    assert_clean_failure(proc, 2, str(external))
    assert not (tmp_path / "repo" / "tiny" / "1" / "model.onnx").exists()


# -- classes and palette files --------------------------------------------------------------------


def test_classes_files_in_every_format(tmp_path):
    (tmp_path / "c.txt").write_text("road\n  sidewalk \nbuilding\n\n\n")
    (tmp_path / "c.json").write_text('["road", "sidewalk", "building"]')
    (tmp_path / "id2label.json").write_text('{"id2label": {"1": "sidewalk", "0": "road", "2": "building"}}')
    (tmp_path / "c.yaml").write_text("- road\n- sidewalk\n- building\n")
    for name in ("c.txt", "c.json", "id2label.json", "c.yaml"):
        assert parse_classes(tmp_path / name) == ("road", "sidewalk", "building"), name
    (tmp_path / "gap.txt").write_text("road\n\nbuilding\n")
    (tmp_path / "twice.txt").write_text("road\nroad\n")
    with pytest.raises(UsageError, match=r"gap.txt:2: empty line"):
        parse_classes(tmp_path / "gap.txt")
    with pytest.raises(UsageError, match="named twice"):
        parse_classes(tmp_path / "twice.txt")
    with pytest.raises(UsageError, match="not found"):
        parse_classes(tmp_path / "none.txt")


def test_palette_files_and_the_generated_palette(tmp_path):
    (tmp_path / "p.txt").write_text("255 0 0\n#00ff00\n0, 0, 255\n9 9 9\n")
    assert parse_palette(tmp_path / "p.txt", 3).tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    with pytest.raises(UsageError, match="4 colours for 5 classes"):
        parse_palette(tmp_path / "p.txt", 5)
    (tmp_path / "bad.txt").write_text("255 0\n")
    with pytest.raises(UsageError, match=r"bad.txt:1"):
        parse_palette(tmp_path / "bad.txt", 1)
    palette = generated_palette(150)
    assert palette.shape == (150, 3) and palette.dtype == np.uint8
    assert np.array_equal(palette[:21], voc_colormap(21))
    assert len({tuple(c) for c in palette}) == 150 and np.array_equal(palette, generated_palette(150))


def test_adopt_with_palette_mean_std_and_bgr(tmp_path):
    source = hand_graph(tmp_path / "h.onnx", classes=3)
    (tmp_path / "p.txt").write_text("#010203\n4 5 6\n7 8 9\n")
    proc = run_in_process("adopt", source, "--classes", classes_file(tmp_path / "c.txt", "xyz"), "--palette",
                          tmp_path / "p.txt", "--mean", "123.675,116.28,103.53", "--std", "58.395 57.12 57.375",
                          "--bgr")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    meta: ModelMetadata = Segmenter(tmp_path / "h_segtool.onnx", device="cpu", warn_random=False).meta
    assert meta.palette.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]] and meta.channel_order == "BGR"
    assert meta.mean == pytest.approx((0.485, 0.456, 0.406)) and meta.std == pytest.approx((0.229, 0.224, 0.225))
    bad = run_in_process("adopt", source, "--classes", tmp_path / "c.txt", "--mean", "1,2")
    assert_clean_failure(bad, 2, "--mean takes three numbers")


# -- one normalization contract: --mean/--std are R,G,B whatever --bgr says ----------------------

RGB_MEAN, RGB_STD = (0.8, 0.5, 0.2), (0.1, 0.3, 0.6)  # far apart, so applying them to the wrong channel shows


def identity_bgr_graph(path: Path) -> Path:
    """A network whose labels depend on channel order: logits = its three (normalized) input channels."""
    weight = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    node = helper.make_node("Conv", ["bgr", "w"], ["scores"])
    image = helper.make_tensor_value_info("bgr", TensorProto.FLOAT, ["n", 3, "h", "w"])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3, "h", "w"])
    graph = helper.make_graph([node], "order", [image], [scores], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save_model(model, str(path))
    return path


def test_mean_std_are_rgb_under_bgr_and_match_the_torch_forward(tmp_path):
    source = identity_bgr_graph(tmp_path / "order.onnx")
    mean_255 = ",".join(f"{v * 255:g}" for v in RGB_MEAN)
    std_255 = ",".join(f"{v * 255:g}" for v in RGB_STD)
    proc = run_in_process("adopt", source, "--classes", classes_file(tmp_path / "c.txt", "bgr"), "--bgr",
                          "--mean", mean_255, "--std", std_255)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "R 204/25.5, G 127.5/76.5, B 51/153" in proc.stdout and "network takes BGR" in proc.stdout
    image = scene(64, 96, seed=7)  # BGR, as OpenCV reads it
    # the contract as documented, in torch: B,G,R planes, each with its own channel's mean and std
    x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    bgr_mean = torch.tensor(RGB_MEAN[::-1]).view(1, 3, 1, 1)
    bgr_std = torch.tensor(RGB_STD[::-1]).view(1, 3, 1, 1)
    weight = torch.eye(3).view(3, 3, 1, 1)
    expected = torch.nn.functional.conv2d((x - bgr_mean) / bgr_std, weight).argmax(1)[0].numpy()
    wrong = torch.nn.functional.conv2d((x - torch.tensor(RGB_MEAN).view(1, 3, 1, 1)) /
                                       torch.tensor(RGB_STD).view(1, 3, 1, 1), weight).argmax(1)[0].numpy()  # fmt: skip
    assert np.mean(wrong == expected) < 0.9  # the test can tell the two readings apart
    labels = Segmenter(tmp_path / "order_segtool.onnx", device="cpu", warn_random=False).segment(image)
    assert np.mean(labels == expected) == 1.0
    info = run_in_process("info", tmp_path / "order_segtool.onnx")
    assert "R 204/25.5, G 127.5/76.5, B 51/153" in info.stdout
    same = run_in_process("adopt", source, "--classes", tmp_path / "c.txt", "--bgr", "-o", tmp_path / "b.onnx",
                          "--mean", ",".join(map(str, RGB_MEAN)), "--std", ",".join(map(str, RGB_STD)))  # fmt: skip
    assert same.returncode == 0 and Segmenter(tmp_path / "b.onnx", device="cpu").meta.mean == RGB_MEAN


# -- the files beside the model: Hugging Face's save_pretrained, mmdeploy's work folder -----------

HF_PROCESSOR = {"image_processor_type": "SegformerImageProcessor", "do_resize": True, "size": {"height": 512,
                "width": 512}, "do_rescale": True, "rescale_factor": 0.00392156862745098, "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_reduce_labels": False}  # fmt: skip


def hf_folder(folder: Path, names=("sky", "road", "car"), processor: dict | None = HF_PROCESSOR, **config) -> Path:
    """An ONNX file in a folder laid out as ``save_pretrained`` writes one (config and processor config)."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = {str(k): n for k, n in enumerate(names)}
    document = {"architectures": ["SegformerForSemanticSegmentation"], "id2label": labels,
                "label2id": {n: k for k, n in enumerate(names)}, "model_type": "segformer"} | config  # fmt: skip
    (folder / "config.json").write_text(json.dumps(document))
    if processor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return hand_graph(folder / "model.onnx", classes=3)


def hf_reference(source: Path, image_bgr: np.ndarray) -> np.ndarray:
    """The labels as the processor and the graph give them: rescale by 1/255, (x - 0.5) / 0.5, RGB."""
    import onnxruntime as ort

    rgb = image_bgr[:, :, ::-1].astype(np.float32) * np.float32(0.00392156862745098)
    x = ((rgb - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    return session.run(["scores"], {"pixels": x})[0].argmax(1)[0]


def test_adopt_reads_hugging_face_configs_beside_the_model(tmp_path):
    source = hf_folder(tmp_path / "hf")
    proc = run_in_process("adopt", source)
    assert proc.returncode == 0, proc.stderr
    assert "classes: 3 from config.json (id2label)" in proc.stderr
    assert "normalization from preprocessor_config.json" in proc.stderr and "resizes to 512x512" in proc.stderr
    seg = Segmenter(tmp_path / "hf" / "model_segtool.onnx", device="cpu", warn_random=False)
    assert seg.meta.classes == ("sky", "road", "car") and seg.meta.mean == pytest.approx((0.5, 0.5, 0.5))
    assert seg.meta.extra["adopted"]["read_from"][0] == "classes: 3 from config.json (id2label)"
    image = scene(48, 64, seed=2)
    assert np.mean(seg.segment(image) == hf_reference(source, image)) == 1.0
    # flags still win, each conflict one line
    flags = run_in_process("adopt", source, "-o", tmp_path / "f.onnx", "--mean", "0.485,0.456,0.406")
    assert flags.returncode == 0, flags.stderr
    assert "--mean 0.485,0.456,0.406 overrides preprocessor_config.json" in flags.stderr
    assert Segmenter(tmp_path / "f.onnx", device="cpu").meta.mean == (0.485, 0.456, 0.406)


def test_a_full_processors_processor_config_json_is_read_too(tmp_path):
    """transformers 5 saves a processor with a tokenizer (OneFormer's) as processor_config.json, the image
    processor's settings nested under "image_processor"."""
    source = hf_folder(tmp_path / "hf", processor=None)
    nested = {"processor_class": "OneFormerProcessor", "image_processor": HF_PROCESSOR | {"do_reduce_labels": True}}
    (tmp_path / "hf" / "processor_config.json").write_text(json.dumps(nested))
    proc = run_in_process("adopt", source)
    assert proc.returncode == 0, proc.stderr
    assert "normalization from processor_config.json" in proc.stderr
    seg = Segmenter(tmp_path / "hf" / "model_segtool.onnx", device="cpu", warn_random=False)
    assert seg.meta.mean == pytest.approx((0.5, 0.5, 0.5)) and seg.meta.extra["reduce_labels"] is True


def test_a_processor_config_json_without_an_image_processor_is_no_normalization(tmp_path):
    source = hf_folder(tmp_path / "hf", processor=None)
    (tmp_path / "hf" / "processor_config.json").write_text(json.dumps({"processor_class": "SomeTextProcessor"}))
    proc = run_in_process("adopt", source)
    assert proc.returncode == 0, proc.stderr
    assert "normalization: ImageNet's" in proc.stderr
    seg = Segmenter(tmp_path / "hf" / "model_segtool.onnx", device="cpu", warn_random=False)
    assert seg.meta.mean == pytest.approx((0.485, 0.456, 0.406))


def test_classes_config_json_elsewhere_brings_its_processor(tmp_path):
    hf_folder(tmp_path / "hf")
    lone = hand_graph(tmp_path / "lone.onnx", classes=3)
    proc = run_in_process("adopt", lone, "--classes", tmp_path / "hf" / "config.json")
    assert proc.returncode == 0, proc.stderr
    assert Segmenter(tmp_path / "lone_segtool.onnx", device="cpu").meta.mean == pytest.approx((0.5, 0.5, 0.5))
    (tmp_path / "bare").mkdir()
    bare = run_in_process("adopt", hand_graph(tmp_path / "bare" / "b.onnx", classes=3))
    assert_clean_failure(bare, 2, "--classes is needed", "config.json")


@pytest.mark.parametrize(
    "config, needle",
    [
        ({"num_labels": 5}, "num_labels is 5 but id2label names 3 classes"),
        ({"id2label": {"0": "a", "one": "b", "2": "c"}}, "id2label key 'one' is not an integer"),
        ({"id2label": {"0": "a", "1": "b", "2": "c", "3": "d"}}, "config.json (id2label) names 4 classes for the 3"),
    ],
)
def test_a_bad_config_json_is_one_clear_line(tmp_path, config, needle):
    source = hf_folder(tmp_path / "hf", **config)
    proc = run_in_process("adopt", source)
    assert_clean_failure(proc, 2, needle)
    assert not (tmp_path / "hf" / "model_segtool.onnx").exists()


def test_adopt_reads_mmdeploys_pipeline_json(tmp_path):
    folder = tmp_path / "work_dir"
    folder.mkdir()
    source = hand_graph(folder / "end2end.onnx", classes=3)
    normalize = {"type": "Normalize", "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395],
                 "to_rgb": False}  # fmt: skip
    pipeline = {"pipeline": {"input": ["img"], "output": ["post_output"], "tasks": [
        {"type": "Task", "module": "Transform", "name": "Preprocess", "input": ["img"], "output": ["prep_output"],
         "transforms": [{"type": "LoadImageFromFile"}, normalize, {"type": "ImageToTensor", "keys": ["img"]}]},
        {"name": "segmentor", "type": "Task", "module": "Net", "input": ["prep_output"], "output": ["infer_output"]},
        {"type": "Task", "module": "mmseg", "name": "postprocess", "component": "ResizeMask",
         "params": {"num_classes": 3, "classes": ["ground", "wall", "sky"]}}]}}  # fmt: skip
    (folder / "pipeline.json").write_text(json.dumps(pipeline))
    (folder / "deploy.json").write_text(json.dumps({"version": "1.3.1", "task": "Segmentor", "models": [
        {"name": "mmseg", "net": "end2end.onnx", "backend": "onnxruntime"}]}))  # fmt: skip
    proc = run_in_process("adopt", source)
    assert proc.returncode == 0, proc.stderr
    assert "classes: 3 from pipeline.json (classes)" in proc.stderr and "to_rgb false" in proc.stderr
    meta = Segmenter(folder / "end2end_segtool.onnx", device="cpu", warn_random=False).meta
    assert meta.classes == ("ground", "wall", "sky") and meta.channel_order == "BGR"
    assert meta.mean == pytest.approx((0.485, 0.456, 0.406)) and meta.std == pytest.approx((0.229, 0.224, 0.225))


# -- labels-output files: ArgMax in the graph, int64 [N, 1, H, W] (mmdeploy) or [N, H, W] ----------


def argmax_graph(path: Path, keepdims: int, dtype: int = TensorProto.INT64, props: dict | None = None) -> Path:
    """Conv to 4 class scores, then ArgMax (and a Cast to ``dtype``): the class index per pixel."""
    weight = np.random.default_rng(3).standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w"], ["scores"]),
             helper.make_node("ArgMax", ["scores"], ["am"], axis=1, keepdims=keepdims),
             helper.make_node("Cast", ["am"], ["output"], to=dtype)]  # fmt: skip
    dims: list[str | int] = ["batch", 1, "height", "width"] if keepdims else ["batch", "height", "width"]
    graph = helper.make_graph(nodes, "mmdeploy", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                              ["batch", 3, "height", "width"])], [helper.make_tensor_value_info("output", dtype, dims)],
                              [numpy_helper.from_array(weight, "w")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if props:
        helper.set_model_props(model, props)
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize(
    ("keepdims", "dtype"), [(1, TensorProto.INT64), (0, TensorProto.INT64), (0, TensorProto.INT32)]
)
def test_labels_output_files_adopt_and_run_everywhere(tmp_path, keepdims, dtype):
    from fastapi.testclient import TestClient

    from segtool.serve import ServeSettings, create_app

    source = argmax_graph(tmp_path / "end2end.onnx", keepdims, dtype)
    proc = run_in_process("adopt", source, "--classes", classes_file(tmp_path / "c.txt", "abcd"))
    assert proc.returncode == 0, proc.stderr
    assert "output -> labels" in proc.stdout
    adopted = tmp_path / "end2end_segtool.onnx"
    seg = Segmenter(adopted, device="cpu", warn_random=False)
    image = scene(40, 60, seed=4)
    # the original graph's own labels, on the input segtool builds
    import onnxruntime as ort

    original = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    expected = original.run(None, {"input": seg.prepare([image])})[0].reshape(40, 60)
    assert seg.meta.output == "labels" and np.mean(seg.segment(image) == expected) == 1.0
    cv2.imwrite(str(tmp_path / "p.png"), image)
    ran = run_in_process("run", tmp_path / "p.png", "--model", adopted, "--out", tmp_path / "out", "--json",
                         "--device", "cpu")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    shares = json.loads(ran.stdout)["results"][0]["classes"]
    pictured = np.array(Image.open(tmp_path / "out" / "p_labels.png"))
    assert np.array_equal(pictured, expected)
    counted = {n: float(np.mean(pictured == k)) for k, n in enumerate("abcd") if (pictured == k).any()}
    assert shares == pytest.approx(counted, abs=1e-4)
    with TestClient(create_app(seg, ServeSettings())) as client:
        response = client.post("/v1/segment", content=(tmp_path / "p.png").read_bytes())
    assert response.status_code == 200 and (response.json()["width"], response.json()["height"]) == (60, 40)
    compare = run_in_process("compare", adopted, adopted, "--images", tmp_path / "p.png", "--device", "cpu")
    assert compare.returncode == 0, compare.stderr
    root = tmp_path / "voc"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    cv2.imwrite(str(root / "JPEGImages" / "p.jpg"), image)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("p\n")
    truth = seg.segment(imread(root / "JPEGImages" / "p.jpg"))
    cv2.imwrite(str(root / "SegmentationClass" / "p.png"), truth)  # 8-bit greyscale indices
    evaluated = run_in_process("eval", adopted, "--data", root, "--resize", "none", "--json", "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["pixel_accuracy"] == 1.0


def test_hand_written_metadata_on_an_n1hw_labels_graph_runs(tmp_path):
    path = argmax_graph(tmp_path / "l.onnx", 1, props=tiny_props(output="labels", classes=json.dumps(list("abcd")),
                                                                  palette=json.dumps([[0, 0, 0]] * 4)))  # fmt: skip
    labels = Segmenter(path, device="cpu", warn_random=False).segment(scene(20, 30))
    assert labels.shape == (20, 30) and labels.dtype == np.uint8 and labels.max() < 4
