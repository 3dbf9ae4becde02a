"""Your own model: any class count, the checkpoint formats people have, any PyTorch network.

Checkpoints are made here from seeded random init (no training: these tests are about formats,
class counts and what the file's metadata says); the parity gate runs on one small shape.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import assert_clean_failure, run_in_process, scene
from PIL import Image

from segtool.cli.export_cmd import normalization
from segtool.export import export_model
from segtool.export.classes import class_names_and_colours, default_names
from segtool.export.graph import SegmentationGraph, probe
from segtool.export.models import get_spec, parse_model_args
from segtool.export.parity import sample_batch
from segtool.export.pipeline import build_graph
from segtool.export.weights import apply_state_dict, read_checkpoint
from segtool.runtime import VOC_CLASSES, voc_colormap
from segtool.runtime.errors import UsageError, WeightsError
from segtool.runtime.model.classes import generated_palette, parse_classes, parse_palette
from segtool.runtime.model.metadata import IMAGENET_MEAN, IMAGENET_STD

SMALL = ((1, 3, 64, 96),)  # one small parity shape: these tests are about formats, not about the gate
SMP_ARGS = ("--model-arg", "encoder_name=resnet34", "--model-arg", "encoder_weights=None")


def seeded_state(model: str, classes: int, seed: int, aux: bool = False) -> dict[str, torch.Tensor]:
    """A fine-tune's state dict: torchvision's builder with ``classes`` outputs, seeded random init."""
    import torchvision.models.segmentation as tv_seg

    torch.manual_seed(seed)
    extra = {"aux_loss": aux} if get_spec(model).has_aux else {}
    net = getattr(tv_seg, model)(weights=None, weights_backbone=None, num_classes=classes, **extra)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def same_weights(graph: SegmentationGraph, state: dict[str, torch.Tensor]) -> bool:
    own = graph.model.state_dict()
    return all(torch.equal(own[k], state[k]) for k in own)


def error_lines(stderr: str) -> list[str]:
    """The error lines (the progress lines before them are not errors)."""
    return [line for line in stderr.splitlines() if not line.startswith("export: ")]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


# -- class names and colours --------------------------------------------------------------------------


def test_class_files_in_every_format(tmp_path, monkeypatch):
    expected = ("background", "road", "lane marking")
    assert parse_classes(write(tmp_path / "c.txt", "background\nroad\nlane marking\n\n")) == expected
    assert parse_classes(write(tmp_path / "c.json", json.dumps(list(expected)))) == expected
    assert parse_classes(write(tmp_path / "o.json", '{"id2label": {"1": "road", "0": "background", "2": '
                                                    '"lane marking"}}')) == expected  # fmt: skip
    with pytest.raises(UsageError, match="named twice"):
        parse_classes(write(tmp_path / "d.txt", "a\nb\na\n"))
    yaml_file = write(tmp_path / "c.yaml", "- background\n- road\n- lane marking\n")
    if importlib.util.find_spec("yaml") is not None:  # PyYAML is optional: with it, YAML lists are read
        assert parse_classes(yaml_file) == expected
    monkeypatch.setitem(sys.modules, "yaml", None)  # without it: one line saying what to do
    with pytest.raises(UsageError, match="PyYAML"):
        parse_classes(yaml_file)


def test_palette_files_and_the_generated_palette(tmp_path):
    palette = parse_palette(write(tmp_path / "p.txt", "0 0 0\n#ff8000\n12, 34, 56\n"), 3)
    assert palette.tolist() == [[0, 0, 0], [255, 128, 0], [12, 34, 56]]
    assert parse_palette(tmp_path / "p.txt", 2).tolist() == [[0, 0, 0], [255, 128, 0]]  # extra colours are cut
    with pytest.raises(UsageError, match="3 colours for 4 classes"):
        parse_palette(tmp_path / "p.txt", 4)
    with pytest.raises(UsageError, match=r"q.txt:2"):
        parse_palette(write(tmp_path / "q.txt", "0 0 0\n300 0 0\n"), 2)
    generated = generated_palette(256)
    assert np.array_equal(generated[:21], voc_colormap(21))  # VOC's colours kept for the first 21
    assert len({tuple(c) for c in generated.tolist()}) == 256  # and distinct after them
    assert np.array_equal(generated_palette(40), generated[:40])  # deterministic, a prefix of the longer one


def test_default_names_are_voc_only_for_a_torchvision_model_with_21_classes():
    assert default_names(21, voc=True) == VOC_CLASSES
    assert default_names(21, voc=False)[:2] == ("class_0", "class_1")
    assert default_names(2, voc=True) == ("class_0", "class_1")
    with pytest.raises(UsageError, match="lists 2 classes but the model has 3"):
        class_names_and_colours(3, ("a", "b"), None, voc=True)


def test_model_args_are_literals_or_text():
    args = parse_model_args(["encoder_name=resnet34", "encoder_weights=None", "classes=3", "sizes=[1, 2]", "s='x'"])
    assert args == {"encoder_name": "resnet34", "encoder_weights": None, "classes": 3, "sizes": [1, 2], "s": "x"}
    assert parse_model_args(["call=__import__('os').system('false')"])["call"] == "__import__('os').system('false')"
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_model_args(["resnet34"])


def test_mean_and_std_on_the_0_255_scale_are_read_as_such():
    values = normalization("123.675, 116.28, 103.53", "58.395,57.12,57.375")
    assert np.allclose(values["mean"], IMAGENET_MEAN) and np.allclose(values["std"], IMAGENET_STD)
    assert normalization("0.5 0.5 0.5", None) == {"mean": (0.5, 0.5, 0.5)}
    with pytest.raises(UsageError, match="three numbers"):
        normalization("0.5,0.5", None)


# -- the checkpoint formats ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fcn2(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 2-class fcn_resnet50 fine-tune, saved as a plain state dict with its auxiliary head."""
    state = seeded_state("fcn_resnet50", 2, seed=11, aux=True)
    path = tmp_path_factory.mktemp("fcn2") / "fcn2.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def deeplab5(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 5-class deeplabv3_mobilenet_v3_large in torchvision's reference-training format."""
    state = seeded_state("deeplabv3_mobilenet_v3_large", 5, seed=12, aux=True)
    args = argparse.Namespace(model="deeplabv3_mobilenet_v3_large", aux_loss=True, dataset="mine", lr=0.02,
                              epochs=30, weights=None, num_classes=5)  # fmt: skip
    params = [torch.zeros(3, requires_grad=True)]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9)
    path = tmp_path_factory.mktemp("deeplab5") / "checkpoint.pth"
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "lr_scheduler": {"last_epoch": 29},
                "epoch": 29, "args": args}, path)  # fmt: skip
    return path, state


@pytest.mark.slow  # exports a real network
def test_two_class_fcn_finetune_exports_with_its_names(fcn2, tmp_path):
    path, state = fcn2
    classes = write(tmp_path / "road.txt", "background\nroad\n")
    result = export_model(tmp_path / "road.onnx", model="fcn_resnet50", weights=str(path), classes_file=classes,
                          shapes=SMALL)  # fmt: skip
    meta = result.meta
    assert meta.classes == ("background", "road") and meta.model == "fcn_resnet50"
    assert np.array_equal(meta.palette, voc_colormap(2))
    assert meta.weights["file"] == "fcn2.pth" and meta.weights["format"] == "state_dict"
    assert "published" not in meta.extra  # torchvision's VOC figures are not about a 2-class model
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = sample_batch((1, 3, 48, 80), IMAGENET_MEAN, IMAGENET_STD, seed=5)
    graph = SegmentationGraph(get_spec("fcn_resnet50").build(2))  # the checkpoint, loaded apart from segtool's code
    graph.model.load_state_dict({k: v for k, v in state.items() if not k.startswith("aux_classifier.")})
    with torch.no_grad():
        expected = graph.eval()(torch.from_numpy(x)).numpy()
    out = session.run(None, {"image": x})[0]
    assert out.shape == (1, 2, 48, 80) and np.abs(out - expected).max() < 1e-3
    info = run_in_process("info", result.path)
    assert info.returncode == 0, info.stderr
    assert "2: background, road" in info.stdout


def test_without_a_classes_file_the_names_are_generic(fcn2):
    _, meta = build_graph("fcn_resnet50", str(fcn2[0]))
    assert meta.classes == ("class_0", "class_1") and len(meta.palette) == 2


def test_a_classes_file_of_another_count_is_one_clear_error(fcn2, tmp_path):
    three = write(tmp_path / "three.txt", "a\nb\nc\n")
    proc = run_in_process("export", "--weights", fcn2[0], "--classes", three, "--output", tmp_path / "x.onnx")
    assert_clean_failure(proc, 2, "three.txt lists 3 classes", "fcn2.pth", "has 2")
    assert len(error_lines(proc.stderr)) == 1 and not (tmp_path / "x.onnx").exists()


def test_reference_training_checkpoint_with_args(deeplab5):
    path, state = deeplab5
    checkpoint = read_checkpoint(path)
    assert checkpoint.trained_as == "deeplabv3_mobilenet_v3_large" and checkpoint.num_classes == 5
    assert checkpoint.identity["format"] == "torchvision reference training" and checkpoint.identity["epoch"] == 29
    graph, meta = build_graph("deeplabv3_mobilenet_v3_large", str(path))
    assert meta.classes == tuple(f"class_{k}" for k in range(5)) and same_weights(graph, state)
    with pytest.raises(WeightsError, match=r"trained as deeplabv3_mobilenet_v3_large \(its args.model\).*"
                                           "pass --model deeplabv3_mobilenet_v3_large"):  # fmt: skip
        build_graph("lraspp_mobilenet_v3_large", str(path))


def test_reference_training_args_that_contradict_the_classifier_are_refused(deeplab5, tmp_path):
    path, state = deeplab5
    args = argparse.Namespace(model="deeplabv3_mobilenet_v3_large", num_classes=21)
    bad = tmp_path / "bad.pth"
    torch.save({"model": state, "epoch": 1, "args": args}, bad)
    with pytest.raises(WeightsError, match="args.num_classes is 21 but its classifier has 5 classes"):
        build_graph("deeplabv3_mobilenet_v3_large", str(bad))


def test_dataparallel_prefix_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = seeded_state("lraspp_mobilenet_v3_large", 3, seed=13)
    parallel = tmp_path / "parallel.pth"
    torch.save({"module." + k: v for k, v in state.items()}, parallel)
    graph, meta = build_graph("lraspp_mobilenet_v3_large", str(parallel))
    assert len(meta.classes) == 3 and same_weights(graph, state)
    safe = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safe))
    graph, meta = build_graph("lraspp_mobilenet_v3_large", str(safe))
    assert meta.weights["format"] == "safetensors" and same_weights(graph, state)
    sniffed = tmp_path / "weights.bin"  # found by its content, whatever its name
    sniffed.write_bytes(safe.read_bytes())
    assert read_checkpoint(sniffed).identity["format"] == "safetensors"


def test_a_pickled_whole_model_is_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    whole = tmp_path / "whole.pth"
    torch.save(get_spec("lraspp_mobilenet_v3_large").build(3), whole)
    proc = run_in_process("export", "--model", "lraspp_mobilenet_v3_large", "--weights", whole, "-o", tmp_path / "o")
    assert_clean_failure(proc, 2, "whole.pth", "torchvision.models.segmentation.lraspp.LRASPP", "model.state_dict()")
    (line,) = error_lines(proc.stderr)
    assert "\x1b" not in line and line.endswith("pass that file")


def test_mismatched_shapes_name_both_and_the_architecture_they_fit(fcn2, deeplab5, tmp_path):
    _, state = fcn2
    with pytest.raises(WeightsError) as info:
        apply_state_dict(get_spec("fcn_resnet50").build(), state, "fcn2.pth", "fcn_resnet50")
    message = str(info.value)
    assert "classifier.4.weight: checkpoint [2, 512, 1, 1] vs fcn_resnet50 [21, 512, 1, 1]" in message
    assert "it fits fcn_resnet50 with 2 classes" in message
    plain = tmp_path / "deeplab_state.pth"
    torch.save(deeplab5[1], plain)  # no args to say what it is: the shapes do
    proc = run_in_process("export", "--model", "fcn_resnet50", "--weights", plain, "-o", tmp_path / "x.onnx")
    assert_clean_failure(proc, 2, "deeplab_state.pth does not fit fcn_resnet50", "missing keys",
                         "it fits deeplabv3_mobilenet_v3_large with 5 classes: "
                         "pass --model deeplabv3_mobilenet_v3_large")  # fmt: skip
    rgbd = dict(seeded_state("fcn_resnet50", 2, seed=11))
    rgbd["backbone.conv1.weight"] = torch.zeros(64, 4, 7, 7)  # a 4-channel input: fits no table model
    odd = tmp_path / "rgbd.pth"
    torch.save(rgbd, odd)
    proc = run_in_process("export", "--model", "fcn_resnet50", "--weights", odd, "-o", tmp_path / "x.onnx")
    assert_clean_failure(proc, 2, "backbone.conv1.weight: checkpoint [64, 4, 7, 7] vs fcn_resnet50 [64, 3, 7, 7]",
                         "fits none of segtool's torchvision models", "package.module:callable")  # fmt: skip


# -- any PyTorch network ------------------------------------------------------------------------------

TINYNET = '''
import torch


class QuarterNet(torch.nn.Module):
    """Logits at 1/4 of the input size, in a dict, like many segmentation heads."""

    def __init__(self, num_classes: int = 2, width: int = 8):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, stride=2, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(width, width, 3, stride=2, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        return {"out": self.head(self.body(x)), "features": x}
'''


def test_your_own_network_from_the_current_folder(tmp_path):
    write(tmp_path / "segtool_test_quarternet.py", TINYNET)
    write(tmp_path / "names.txt", "sky\nroad\nperson\nother\n")
    out = tmp_path / "quarter.onnx"
    proc = run_in_process("export", "--model", "segtool_test_quarternet:QuarterNet", "--weights", "random",
                          "--model-arg", "width=4", "--classes", "names.txt", "--mean", "0.5,0.5,0.5", "--std",
                          "0.25,0.25,0.25", "--bgr", "-o", out, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "upsamples the network's output" in proc.stderr
    info = json.loads(run_in_process("info", out, "--json").stdout)
    assert info["model"] == "segtool_test_quarternet:QuarterNet"
    assert info["classes"] == ["sky", "road", "person", "other"]
    assert info["mean"] == [0.5] * 3 and info["std"] == [0.25] * 3 and info["channel_order"] == "BGR"
    assert info["extra"]["build"]["kwargs"] == {"width": "4", "num_classes": "4"}  # N went to num_classes
    assert info["outputs"][0]["shape"][1] == 4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((1, 3, 37, 53), np.float32)})[0].shape == (1, 4, 37, 53)


class SkipNet(torch.nn.Module):
    """Down twice, up twice, with skip connections: only sizes divisible by 4 fit (a U-Net in small)."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.down1, self.down2 = torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.Conv2d(4, 4, 3, 2, 1)
        self.head = torch.nn.Conv2d(7, classes, 1)

    def forward(self, x):
        d1 = self.down1(x)
        u1 = torch.cat([torch.nn.functional.interpolate(self.down2(d1), scale_factor=2.0), d1], 1)[:, :4]
        return self.head(torch.cat([torch.nn.functional.interpolate(u1, scale_factor=2.0), x], 1))


def test_a_network_that_needs_a_size_multiple_is_padded_in_the_graph(tmp_path, monkeypatch):
    module = type(sys)("segtool_test_skipnet")
    module.SkipNet = SkipNet  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "segtool_test_skipnet", module)
    result = export_model(tmp_path / "skip.onnx", model="segtool_test_skipnet:SkipNet", weights="random",
                          num_classes=3, shapes=((1, 3, 64, 96), (2, 3, 37, 53)))  # fmt: skip
    extra: dict = dict(result.meta.extra)
    assert extra["build"]["input_multiple"] == 4 and extra["build"]["kwargs"] == {"classes": "3"}
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((1, 3, 45, 70), np.float32)})[0].shape == (1, 3, 45, 70)


def test_probe_finds_the_multiple_a_network_needs():
    import segmentation_models_pytorch as smp

    net = smp.FPN(encoder_name="resnet18", encoder_weights=None, classes=2).eval()  # refuses sizes not /32
    found = probe(net, "fpn")
    assert (found.classes, found.input_multiple, found.resize_output) == (2, 32, False)
    graph = SegmentationGraph(net, input_multiple=found.input_multiple).eval()
    with torch.no_grad():
        assert graph(torch.zeros(1, 3, 37, 53)).shape == (1, 2, 37, 53)


@pytest.mark.slow  # exports a real network
def test_smp_unet_exported_gated_and_run(tmp_path):
    import segmentation_models_pytorch as smp

    torch.manual_seed(3)
    unet = smp.Unet(encoder_name="resnet34", encoder_weights=None, classes=3)
    checkpoint = tmp_path / "unet.pth"
    torch.save({"state_dict": unet.state_dict(), "epoch": 7}, checkpoint)
    names = write(tmp_path / "names.json", '["background", "car", "person"]')
    out = tmp_path / "unet.onnx"
    wrong = write(tmp_path / "two.txt", "a\nb\n")  # the CLI's --model-arg path, failing fast on the class count
    proc = run_in_process("export", "--model", "segmentation_models_pytorch:Unet", *SMP_ARGS, "--model-arg",
                          "classes=3", "--classes", wrong, "--weights", checkpoint, "-o", out)  # fmt: skip
    assert_clean_failure(proc, 2, "two.txt lists 2 classes", "has 3")
    proc = run_in_process("export", "--model", "segmentation_models_pytorch:Unet", *SMP_ARGS, "--num-classes", "2",
                          "--weights", checkpoint, "-o", out)  # fmt: skip
    assert_clean_failure(proc, 2, "segmentation_head.0.weight: checkpoint [3, 16, 3, 3] vs "
                         "segmentation_models_pytorch:Unet [2, 16, 3, 3]", "pass --num-classes 3")  # fmt: skip
    model_args = parse_model_args(["encoder_name=resnet34", "encoder_weights=None"])
    result = export_model(out, model="segmentation_models_pytorch:Unet", model_args=model_args, weights=str(checkpoint),
                          classes_file=names, shapes=((1, 3, 64, 96), (1, 3, 50, 70)))  # fmt: skip
    assert result.meta.model == "segmentation_models_pytorch:Unet" and len(result.parity) == 2
    extra: dict = dict(result.meta.extra)
    assert extra["build"]["kwargs"]["classes"] == "3"  # the classes file's count went to `classes`
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), scene(45, 70, seed=2))  # neither side a multiple of 32
    ran = run_in_process("run", image, "--model", out, "--out", tmp_path / "o", "--device", "cpu")
    assert ran.returncode == 0, ran.stderr
    labels = np.array(Image.open(tmp_path / "o" / "street_labels.png"))
    assert labels.shape == (45, 70) and labels.max() < 3
    info = run_in_process("info", out)
    assert "3: background, car, person" in info.stdout and "segmentation_models_pytorch:Unet" in info.stdout


def test_only_torchvisions_file_names_are_read_as_carrying_a_hash(tmp_path):
    """A date in a user's file name is no sha256 prefix; a published checkpoint's name is one."""
    import torch

    from segtool.export.weights import read_checkpoint

    dated = tmp_path / "unet-20240101.pth"
    torch.save({"w": torch.zeros(2)}, dated)
    assert read_checkpoint(dated).identity["file"] == dated.name
    published = tmp_path / "fcn_resnet50_coco-1167a1af.pth"
    torch.save({"w": torch.zeros(2)}, published)
    with pytest.raises(WeightsError, match="corrupt or incomplete"):
        read_checkpoint(published)


FIXED_BATCH = '''
import torch


class FixedBatch(torch.nn.Module):
    """A wrapper that ties the batch to the example's 1 (a literal in a reshape)."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, num_classes, 1)

    def forward(self, x):
        return self.conv(x.reshape(1, 3, x.shape[2], x.shape[3]))


class AnyBatch(FixedBatch):
    def forward(self, x):
        return self.conv(x)


class NoOnnxOp(FixedBatch):
    def forward(self, x):  # singular values: an op torch.onnx has no ONNX function for
        return self.conv(x) + torch.linalg.svdvals(x.mean(1)).mean()
'''


def test_an_export_that_fixes_the_batch_is_refused_in_one_line(tmp_path):
    write(tmp_path / "segtool_test_fixedbatch.py", FIXED_BATCH)
    out = tmp_path / "fixed.onnx"
    proc = run_in_process(
        "export",
        "--model",
        "segtool_test_fixedbatch:FixedBatch",
        "--weights",
        "random",
        "--no-agreements",
        "-o",
        out,
        cwd=tmp_path,
    )
    assert_clean_failure(proc, 2, "the export fixed the batch axis", "at 1", "was not written")
    assert not out.exists()


def test_a_network_torch_onnx_cannot_export_is_one_line_naming_the_op(tmp_path):
    write(tmp_path / "segtool_test_fixedbatch.py", FIXED_BATCH)
    out = tmp_path / "svd.onnx"
    proc = run_in_process(
        "export",
        "--model",
        "segtool_test_fixedbatch:NoOnnxOp",
        "--weights",
        "random",
        "--no-agreements",
        "-o",
        out,
        cwd=tmp_path,
    )
    assert_clean_failure(
        proc,
        2,
        "torch.onnx cannot export segtool_test_fixedbatch:NoOnnxOp",
        "No ONNX function found for aten._linalg_svd",
        "was not written",
    )
    assert not out.exists()


def test_a_gate_that_cannot_run_is_one_line_and_the_weights_line_is_plain(tmp_path, monkeypatch):
    write(tmp_path / "segtool_test_fixedbatch.py", FIXED_BATCH)
    out = tmp_path / "any.onnx"
    args = ("export", "--model", "segtool_test_fixedbatch:AnyBatch", "--no-agreements", "-o", out)
    from segtool.export import parity

    def cannot_run(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: image\nmore")

    with monkeypatch.context() as patch:
        patch.setattr(parity, "compare", cannot_run)
        proc = run_in_process(*args, cwd=tmp_path)
    assert_clean_failure(proc, 1, "parity gate could not run", "INVALID_ARGUMENT", "was not written")
    assert not out.exists()
    proc = run_in_process(*args, cwd=tmp_path)  # DEFAULT weights: what the callable gives
    assert proc.returncode == 0, proc.stderr
    assert "the weights segtool_test_fixedbatch:AnyBatch itself gives" in proc.stdout and '{"' not in proc.stdout
