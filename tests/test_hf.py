"""`segtool export --model hf:DIR`: a local Hugging Face folder (a tiny random-init SegFormer written
by ``save_pretrained`` here), exported with dynamic batch/height/width, gated against the Hugging
Face forward, and run: labels equal to the image processor + model + post-processing's own.

The export itself is slow tier; the refusals are fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
import torch
import transformers  # the test extra has it: CI runs these tests
from conftest import assert_clean_failure, run_in_process, scene

from segtool.runtime import Segmenter

NAMES = ["sky", "road", "car"]
LABELS: dict[str, Any] = {
    "num_labels": 3,
    "id2label": dict(enumerate(NAMES)),
    "label2id": {n: k for k, n in enumerate(NAMES)},
}
STAGES: dict[str, Any] = {"out_features": ["stage1", "stage2", "stage3", "stage4"]}  # a backbone's four outputs


def tiny_segformer(folder: Path) -> Path:
    """A random-init SegFormer with tiny sizes, as ``save_pretrained`` writes it, plus its processor config."""
    torch.manual_seed(0)
    sizes: dict[str, Any] = {
        "num_encoder_blocks": 2,
        "depths": [1, 1],
        "sr_ratios": [2, 1],
        "hidden_sizes": [8, 16],
        "patch_sizes": [7, 3],
        "strides": [4, 2],
        "num_attention_heads": [1, 2],
        "mlp_ratios": [2, 2],
        "decoder_hidden_size": 16,
        "num_labels": 3,
        "id2label": dict(enumerate(NAMES)),
        "label2id": {n: k for k, n in enumerate(NAMES)},
    }
    config = transformers.SegformerConfig(**sizes)  # keywords the config's stub does not list (num_labels)
    transformers.SegformerForSemanticSegmentation(config).save_pretrained(folder)
    processor = transformers.SegformerImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.slow  # exports a network with torch.onnx
def test_hf_folder_exports_with_dynamic_axes_and_matches_the_hf_pipeline(tmp_path):
    folder = tiny_segformer(tmp_path / "segformer")
    out = tmp_path / "segformer.onnx"
    proc = run_in_process("export", "--model", f"hf:{folder}", "-o", out, "--no-agreements")
    assert proc.returncode == 0, proc.stderr
    assert "classes from" in proc.stderr and "normalization from" in proc.stderr
    assert "Hugging Face folder segformer" in proc.stdout and '{"' not in proc.stdout
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in onnx.load(str(out)).graph.input]
    assert [type(d) for d in dims[0]] == [str, int, str, str]  # batch, height, width symbolic
    info = json.loads(run_in_process("info", out, "--json").stdout)
    assert info["classes"] == NAMES and info["mean"] == [0.5] * 3 and info["verified"] is True
    assert any(r["shape"][0] == 2 for r in info["extra"]["parity"]["rows"])  # the gate's batch of two ran
    image = scene(96, 128, seed=1)
    cv2.imwrite(str(tmp_path / "p.png"), image)
    ran = run_in_process("run", tmp_path / "p.png", "--model", out, "--out", tmp_path / "pics", "--device", "cpu")
    assert ran.returncode == 0, ran.stderr
    from PIL import Image

    labels = np.array(Image.open(tmp_path / "pics" / "p_labels.png"))
    # the Hugging Face way: its processor (no resize, so both see the same pixels), forward, post-processing
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    model = transformers.AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
    inputs = processor(images=image[:, :, ::-1].copy(), do_resize=False, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    expected = processor.post_process_semantic_segmentation(outputs, target_sizes=[(96, 128)])[0].numpy()
    assert np.mean(labels == expected) >= 0.999


def test_a_hub_id_without_a_local_copy_is_one_line(tmp_path):
    proc = run_in_process("export", "--model", "hf:nvidia/segformer-b0-finetuned-ade-512-512", "-o",
                          tmp_path / "x.onnx", cwd=tmp_path)  # fmt: skip
    assert_clean_failure(proc, 2, "no local folder", "never downloads", "huggingface-cli download")


def test_a_folder_without_config_json_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_in_process("export", "--model", f"hf:{tmp_path / 'empty'}", "-o", tmp_path / "x.onnx")
    assert_clean_failure(proc, 2, "has no config.json")


def tiny_mask2former(folder: Path) -> Path:
    """A random-init Mask2Former (query-based: class and mask queries, no per-pixel logits), tiny sizes."""
    torch.manual_seed(0)
    backbone = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 32], depths=[1, 1, 1, 1], **STAGES)
    sizes: dict[str, Any] = {
        "feature_size": 32,
        "mask_feature_size": 32,
        "hidden_dim": 32,
        "encoder_feedforward_dim": 32,
        "dim_feedforward": 32,
        "num_queries": 5,
        "encoder_layers": 1,
        "decoder_layers": 2,
        "num_attention_heads": 2,
        **LABELS,
    }
    config = transformers.Mask2FormerConfig(backbone_config=backbone, **sizes)
    transformers.Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    transformers.Mask2FormerImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return folder


def tiny_upernet(folder: Path) -> Path:
    """A random-init UperNet on ConvNeXt (pyramid pooling to 1, 2, 3 and 6 bins), tiny sizes."""
    torch.manual_seed(0)
    backbone = transformers.ConvNextConfig(hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], **STAGES)
    sizes: dict[str, Any] = {"hidden_size": 16, "auxiliary_in_channels": 16, "auxiliary_channels": 8, **LABELS}
    config = transformers.UperNetConfig(backbone_config=backbone, **sizes)
    transformers.UperNetForSemanticSegmentation(config).save_pretrained(folder)
    transformers.SegformerImageProcessor().save_pretrained(folder)  # UperNet's hub folders use this processor
    return folder


def tiny_maskformer(folder: Path) -> Path:
    """A random-init MaskFormer (query-based; a DETR decoder), tiny sizes."""
    torch.manual_seed(0)
    backbone = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 32], depths=[1, 1, 1, 1], **STAGES)
    decoder = transformers.DetrConfig(
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=5,
    )
    sizes: dict[str, Any] = {"fpn_feature_size": 32, "mask_feature_size": 32, **LABELS}
    config = transformers.MaskFormerConfig(backbone_config=backbone, decoder_config=decoder, **sizes)
    transformers.MaskFormerForInstanceSegmentation(config).save_pretrained(folder)
    transformers.MaskFormerImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return folder


def tiny_oneformer(folder: Path) -> Path:
    """A random-init OneFormer (query-based, told its task in text) with a tiny CLIP tokenizer of single letters."""
    torch.manual_seed(0)
    backbone = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 32], depths=[1, 1, 1, 1], **STAGES)
    sizes: dict[str, Any] = {
        "hidden_dim": 32,
        "conv_dim": 32,
        "mask_dim": 32,
        "encoder_feedforward_dim": 32,
        "dim_feedforward": 32,
        "num_queries": 6,
        "encoder_layers": 1,
        "decoder_layers": 2,
        "num_attention_heads": 2,
        "task_seq_len": 8,
        "text_encoder_context_length": 8,
        "text_encoder_width": 32,
        "text_encoder_num_layers": 1,
        "text_encoder_proj_layers": 1,
        "text_encoder_n_ctx": 2,
        "text_encoder_vocab_size": 64,
        **LABELS,
    }
    config = transformers.OneFormerConfig(backbone_config=backbone, **sizes)
    transformers.OneFormerForUniversalSegmentation(config).save_pretrained(folder)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: k for k, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    images = transformers.OneFormerImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3, num_text=2)
    transformers.OneFormerProcessor(
        image_processor=images, tokenizer=tokenizer, max_seq_length=8, task_seq_length=8
    ).save_pretrained(folder)
    return folder


def hf_own(folder: Path, image: np.ndarray, auto: Any) -> Any:
    """The Hugging Face way: its processor (no resize), the model, the processor's semantic post-processing
    (with the per-class scores the labels are the argmax of: ``.segmentation``, ``.segmentation_scores``)."""
    model = auto.from_pretrained(folder).eval()
    rgb = image[:, :, ::-1].copy()
    if model.config.model_type == "oneformer":  # told its task in text, through the full processor
        processor = transformers.AutoProcessor.from_pretrained(folder)
        inputs = processor(images=rgb, task_inputs=["semantic"], do_resize=False, return_tensors="pt")
        given = {"pixel_values": inputs["pixel_values"], "task_inputs": inputs["task_inputs"]}
    else:
        processor = transformers.AutoImageProcessor.from_pretrained(folder)
        given = {"pixel_values": processor(images=rgb, do_resize=False, return_tensors="pt")["pixel_values"]}
    with torch.no_grad():
        outputs = model(**given)
    return processor.post_process_semantic_segmentation(
        outputs, target_sizes=[image.shape[:2]], return_segmentation_scores=True
    )[0]


@pytest.mark.slow  # exports four networks with torch.onnx
@pytest.mark.parametrize("kind", ["mask2former", "maskformer", "oneformer", "upernet"])
def test_query_and_pyramid_pooling_models_export_and_match_their_own_pipeline(tmp_path, kind):
    """Mask2Former, MaskFormer, OneFormer: the semantic post-processing is in the graph, checked against the processor's
    at export (OneFormer's task prompt tokenized by its own processor). UperNet: its pyramid pooling
    (adaptive pools to 2, 3 and 6 bins) computed for each size, not the example's."""
    build, auto = {
        "mask2former": (tiny_mask2former, transformers.AutoModelForUniversalSegmentation),
        "maskformer": (tiny_maskformer, transformers.AutoModelForUniversalSegmentation),
        "oneformer": (tiny_oneformer, transformers.AutoModelForUniversalSegmentation),
        "upernet": (tiny_upernet, transformers.AutoModelForSemanticSegmentation),
    }[kind]
    folder = build(tmp_path / kind)
    out = tmp_path / f"{kind}.onnx"
    proc = run_in_process("export", "--model", f"hf:{folder}", "-o", out, "--no-agreements")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(run_in_process("info", out, "--json").stdout)
    assert info["classes"] == NAMES and info["verified"] is True
    if kind != "upernet":
        checked = info["extra"]["build"]["post_processing"]
        assert (
            checked["reference"] == f"{type(transformers.AutoImageProcessor.from_pretrained(folder)).__name__}"
            ".post_process_semantic_segmentation"
        )
        assert checked["argmax_agreement"] >= 0.999
    for height, width in ((96, 128), (160, 224)):  # sizes the processor does not pad (multiples of 32)
        image = scene(height, width, seed=height)
        cv2.imwrite(str(tmp_path / f"p{height}.png"), image)
        ran = run_in_process(
            "run", tmp_path / f"p{height}.png", "--model", out, "--out", tmp_path / "pics", "--device", "cpu"
        )
        assert ran.returncode == 0, ran.stderr
        from PIL import Image

        labels = np.array(Image.open(tmp_path / "pics" / f"p{height}_labels.png"))
        reference = hf_own(folder, image, auto)
        assert np.mean(labels == reference.segmentation.numpy()) >= 0.999
        if kind != "upernet":  # at random init a query model labels nearly every pixel alike: compare the scores
            seg = Segmenter(out, device="cpu", warn_random=False)
            scores = seg.run(seg.prepare([image]))[0]
            expected = reference.segmentation_scores.numpy()
            np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-4 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize(
    "config, needle",
    [
        ({"id2label": {"0": "sky", "one": "road"}}, "id2label key 'one' is not an integer class index"),
        ({"id2label": {"0": "sky", "1": "road"}, "num_labels": 3}, "num_labels is 3 but id2label names 2 classes"),
    ],
)
def test_a_bad_config_json_in_the_folder_is_one_line(tmp_path, config, needle):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"model_type": "segformer"} | config))
    proc = run_in_process("export", "--model", f"hf:{tmp_path / 'bad'}", "-o", tmp_path / "x.onnx")
    assert_clean_failure(proc, 2, needle)
    assert not (tmp_path / "x.onnx").exists()


def test_oneformer_prompt_needs_only_the_tokenizer(tmp_path, monkeypatch):
    """OneFormer's image processor reads class-info files (from the hub when not local): the export takes
    the task prompt from the tokenizer alone, the same tokens the processor gives."""
    from segtool.export.hf import load_hf

    folder = tiny_oneformer(tmp_path / "oneformer")
    processor = transformers.AutoProcessor.from_pretrained(folder)
    expected = processor(images=[np.zeros((8, 8, 3), np.uint8)], task_inputs=["semantic"], return_tensors="pt")
    settings = json.loads((folder / "processor_config.json").read_text())
    settings["image_processor"] |= {"class_info_file": "not_here.json", "repo_path": "shi-labs/oneformer_demo"}
    (folder / "processor_config.json").write_text(json.dumps(settings))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    net, _ = load_hf(f"hf:{folder}")
    assert torch.equal(net.task, expected["task_inputs"])
