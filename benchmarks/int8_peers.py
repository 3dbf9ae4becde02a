"""segtool's int8 beside NNCF's, on one fp32 export, the same frames and the same runtime.

    python benchmarks/int8_peers.py --model lraspp_mobilenet_v3_large --video ../shared/data/walk.mp4
    python benchmarks/int8_peers.py --trained 300     # the synthetic-shapes lraspp, trained for 300 steps
    python benchmarks/int8_peers.py --checkpoint shapes.pth              # a checkpoint trained before
    # fcn_resnet50 taught the same task (docs/BENCHMARKS.md: 200 steps, batch 8, lr 0.002, 275 s):
    python -c "import torch; from segtool.export import synthetic_task as t; torch.save(t.train(steps=200, \
        model='fcn_resnet50', batch=8, lr=0.002, threads=2), 'fcn_shapes.pth')"
    python benchmarks/int8_peers.py --model fcn_resnet50 --checkpoint fcn_shapes.pth --count 15 --test 12

The first ``--count`` frames are split as the export splits them (two in three calibrate, one in
three validates: segtool's search and NNCF's accuracy control both select on those); the next
``--test`` frames are used by nobody and give the held-out agreement. Speed-up is fp32/int8 median
latency on ONNX Runtime's CPU provider, measured in this process (``int8.median_latencies``).
Prints a Markdown table and the CPU flags. Needs the [export] and [int8] extras.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def report_task_scores(checkpoint: str, model: str) -> None:
    """How well the checkpoint segments held-out task pictures (so the table says what was quantized)."""
    import torch

    from segtool.export import synthetic_task as task
    from segtool.export.models import get_spec

    net = get_spec(model).build(num_classes=len(task.CLASSES))
    net.load_state_dict(torch.load(checkpoint, weights_only=True), strict=False)
    pictures = task.make_set(task.HELD_OUT_SEED, 16, 144, 192)
    with torch.no_grad():
        predicted = net(task.to_tensor([p for p, _ in pictures]))["out"].argmax(1).numpy()
    scores = task.scores(predicted, np.stack([t for _, t in pictures]))
    print("task scores on 16 held-out pictures: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--weights", default="random", help="random, DEFAULT or a checkpoint")
    parser.add_argument("--trained", type=int, default=0, metavar="STEPS",
                        help="train the synthetic-shapes lraspp (synthetic_task.py) for STEPS steps")  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, help="a trained synthetic-shapes checkpoint (synthetic_task.py)")
    parser.add_argument("--video", type=Path, default=Path("../shared/data/walk.mp4"),
                        help="frames for untrained models; trained ones use the task's own pictures")  # fmt: skip
    parser.add_argument("--count", type=int, default=15, help="frames split into calibration/validation")
    parser.add_argument("--test", type=int, default=6, help="further frames no quantizer sees")
    parser.add_argument("--size", type=int, default=256, help="long side of the frames")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-nncf", action="store_true", help="segtool's rows only (NNCF's accuracy control is slow)")
    args = parser.parse_args()

    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
        QuantizationParameters,
    )

    from segtool.export import export_model
    from segtool.export.int8 import labels_of, ort_search, split
    from segtool.export.nncf_quantizer import label_agreement_fn, unquantized_convolutions
    from segtool.export.variants import calibration_batches

    weights, label = args.weights, f"{args.model} ({args.weights} weights)"
    with tempfile.TemporaryDirectory(prefix="int8-peers-") as tmp:
        task = args.trained or args.checkpoint
        if args.trained:
            import torch

            from segtool.export import synthetic_task

            started = time.perf_counter()
            state = synthetic_task.train(steps=args.trained, model=args.model, threads=torch.get_num_threads(),
                                         log=print)  # fmt: skip
            weights = str(Path(tmp) / "trained.pth")
            torch.save(state, weights)
            label = f"{args.model} (synthetic shapes, {args.trained} steps, {time.perf_counter() - started:.0f} s)"
            report_task_scores(weights, args.model)
        elif args.checkpoint:
            from segtool.export import synthetic_task

            weights = str(args.checkpoint)
            label = f"{args.model} (synthetic shapes, {args.checkpoint.name})"
            report_task_scores(weights, args.model)
        num_classes = {"num_classes": len(synthetic_task.CLASSES)} if task else {}
        result = export_model(Path(tmp) / "fp32.onnx", model=args.model, weights=weights, verify=False,
                              shapes=((1, 3, 64, 96),), **num_classes)  # fmt: skip
        fp32 = result.path.read_bytes()
        mean, std = result.meta.mean, result.meta.std
    if task:  # the task's own pictures, from a generator the training never used
        from segtool.runtime.model.preprocess import Normalizer

        pictures = synthetic_task.make_set(synthetic_task.HELD_OUT_SEED + 7, args.count + args.test, 144, 192)
        frames = [Normalizer(mean, std)([image], "bgr") for image, _ in pictures]
        source = f"{len(frames)} held-out synthetic pictures (144x192)"
    else:
        frames, source = calibration_batches(mean, std, args.video, args.count + args.test, args.size)
    calibration, validation = split(frames[: args.count])
    test = frames[args.count :]
    print(f"{label}: {source}; calibration {len(calibration)}, validation {len(validation)}, test {len(test)}")
    ref_validation, ref_test = labels_of(fp32, validation), labels_of(fp32, test)
    quiet = lambda _: None
    models: dict[str, tuple[bytes, float]] = {}

    # "plain": every convolution quantized (target 0: no search), the quantizer's choices alone
    for name, nncf_like in (("segtool ort, before (global MinMax, logits quantized)", False),
                            ("segtool ort, now (NNCF's ranges, head in float, 7-bit without VNNI)", True)):  # fmt: skip
        for plain, target in ((" plain", 0.0), (" + search", args.target)):
            started = time.perf_counter()
            model, _ = ort_search(fp32, calibration, validation, ref_validation, target, "minmax", quiet, nncf_like)
            models[name + plain] = (model, time.perf_counter() - started)

    proto = onnx.load_from_string(fp32)
    if args.no_nncf:
        return print_table(args, label, fp32, models, calibration, validation, ref_validation, test, ref_test)
    feed = lambda batch: {"image": batch}
    calibration_set = nncf.Dataset(calibration, feed)
    items = list(zip(validation, ref_validation))
    validation_set = nncf.Dataset(items, lambda item: feed(item[0]))
    advanced = AdvancedQuantizationParameters(activations_quantization_params=QuantizationParameters(per_channel=False))
    started = time.perf_counter()
    plain = nncf.quantize(proto, calibration_set, subset_size=len(calibration), advanced_parameters=advanced)
    models["NNCF quantize"] = (plain.SerializeToString(), time.perf_counter() - started)
    cap = max(1, unquantized_convolutions(proto)[1] // 4)  # as segtool's own search, and export --quantizer nncf
    started = time.perf_counter()
    controlled = nncf.quantize_with_accuracy_control(
        proto, calibration_set, validation_set, label_agreement_fn(), max_drop=1 - args.target,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
        advanced_quantization_parameters=advanced,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=cap))  # fmt: skip
    models["NNCF accuracy control"] = (controlled.SerializeToString(), time.perf_counter() - started)

    print_table(args, label, fp32, models, calibration, validation, ref_validation, test, ref_test)


def print_table(args, label, fp32, models, calibration, validation, ref_validation, test, ref_test) -> None:
    import nncf
    import onnx

    from segtool.export.int8 import agreement, cpu_flags, median_latencies
    from segtool.export.nncf_quantizer import unquantized_convolutions

    shape = "x".join(map(str, validation[0].shape))
    print(f"\nheld-out agreement: argmax agreement with fp32 on {len(test)} frames no quantizer saw "
          f"(validation: the {len(validation)} frames the searches select on); speed-up: fp32/int8 median "
          f"latency, ONNX Runtime CPU, {args.runs} runs interleaved on one {shape} input; "
          f"target {args.target:.2%}\n")  # fmt: skip
    print("| model | quantizer | held-out agreement | validation agreement | fp32 convolutions | speed-up vs fp32 | "
          "int8 ms | fp32 ms | quantize time |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (model, seconds) in models.items():
        fp32_s, int8_s = median_latencies(fp32, model, validation[0], args.runs)
        held = agreement(model, test, ref_test) if test else float("nan")
        kept, convolutions = unquantized_convolutions(onnx.load_from_string(model))
        print(f"| {label} | {name} | {held:.2%} | {agreement(model, validation, ref_validation):.2%} | "
              f"{kept} of {convolutions} | {fp32_s / int8_s:.2f}x | {int8_s * 1e3:.1f} | {fp32_s * 1e3:.1f} | "
              f"{seconds:.0f} s |", flush=True)  # fmt: skip
    flags = subprocess.run(["sh", "-c", r"grep -o -w 'avx2\|avx512f\|avx512_vnni\|amx_tile' /proc/cpuinfo | sort -u"],
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    print(f"\nCPU flags: {' '.join(flags) or ', '.join(cpu_flags()) or 'unknown'}; numpy {np.__version__}, "
          f"nncf {nncf.__version__}")  # fmt: skip


if __name__ == "__main__":
    main()
