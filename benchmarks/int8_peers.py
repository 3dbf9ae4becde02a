"""segtool's int8 beside NNCF's, on one fp32 export, the same frames and the same runtime.

    python benchmarks/int8_peers.py --model lraspp_mobilenet_v3_large --video ../shared/data/walk.mp4
    python benchmarks/int8_peers.py --trained 60      # the synthetic-shapes model, trained for 60 steps

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--weights", default="random", help="random, DEFAULT or a checkpoint")
    parser.add_argument("--trained", type=int, default=0, metavar="STEPS",
                        help="train the synthetic-shapes lraspp (synthetic_task.py) for STEPS steps")  # fmt: skip
    parser.add_argument("--video", type=Path, default=Path("../shared/data/walk.mp4"))
    parser.add_argument("--count", type=int, default=15, help="frames split into calibration/validation")
    parser.add_argument("--test", type=int, default=6, help="further frames no quantizer sees")
    parser.add_argument("--size", type=int, default=256, help="long side of the frames")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    from segtool.export import export_model
    from segtool.export.int8 import agreement, cpu_flags, labels_of, median_latencies, ort_search, split
    from segtool.export.nncf_quantizer import label_agreement_fn
    from segtool.export.variants import calibration_batches

    weights, label = args.weights, f"{args.model} ({args.weights} weights)"
    with tempfile.TemporaryDirectory(prefix="int8-peers-") as tmp:
        if args.trained:
            import torch

            from segtool.export import synthetic_task

            started = time.perf_counter()
            state = synthetic_task.train(steps=args.trained)
            weights = str(Path(tmp) / "trained.pth")
            torch.save(state, weights)
            args.model = synthetic_task.MODEL
            label = f"{args.model} (synthetic shapes, {args.trained} steps, {time.perf_counter() - started:.0f} s)"
        result = export_model(Path(tmp) / "fp32.onnx", model=args.model, weights=weights, verify=False,
                              shapes=((1, 3, 64, 96),))  # fmt: skip
        fp32 = result.path.read_bytes()
        mean, std = result.meta.mean, result.meta.std
    frames, source = calibration_batches(mean, std, args.video, args.count + args.test, args.size)
    calibration, validation = split(frames[: args.count])
    test = frames[args.count :]
    print(f"{label}: {source}; calibration {len(calibration)}, validation {len(validation)}, test {len(test)}")
    ref_validation, ref_test = labels_of(fp32, validation), labels_of(fp32, test)
    quiet = lambda _: None
    models: dict[str, tuple[bytes, float]] = {}

    started = time.perf_counter()
    model, _ = ort_search(fp32, calibration, validation, ref_validation, args.target, "minmax", quiet)
    models["segtool (ort, SQNR search)"] = (model, time.perf_counter() - started)

    proto = onnx.load_from_string(fp32)
    feed = lambda batch: {"image": batch}
    calibration_set = nncf.Dataset(calibration, feed)
    items = list(zip(validation, ref_validation))
    validation_set = nncf.Dataset(items, lambda item: feed(item[0]))
    advanced = AdvancedQuantizationParameters(activations_quantization_params=QuantizationParameters(per_channel=False))
    started = time.perf_counter()
    plain = nncf.quantize(proto, calibration_set, subset_size=len(calibration), advanced_parameters=advanced)
    models["NNCF quantize"] = (plain.SerializeToString(), time.perf_counter() - started)
    started = time.perf_counter()
    controlled = nncf.quantize_with_accuracy_control(
        proto, calibration_set, validation_set, label_agreement_fn(), max_drop=1 - args.target,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
        advanced_quantization_parameters=advanced)  # fmt: skip
    models["NNCF accuracy control"] = (controlled.SerializeToString(), time.perf_counter() - started)

    shape = "x".join(map(str, validation[0].shape))
    print(f"\nheld-out agreement: argmax agreement with fp32 on {len(test)} frames no quantizer saw "
          f"(validation: the {len(validation)} frames the searches select on); speed-up: fp32/int8 median "
          f"latency, ONNX Runtime CPU, {args.runs} runs interleaved on one {shape} input; "
          f"target {args.target:.2%}\n")  # fmt: skip
    print("| model | quantizer | held-out agreement | validation agreement | speed-up vs fp32 | int8 ms | fp32 ms | "
          "quantize time |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, (model, seconds) in models.items():
        fp32_s, int8_s = median_latencies(fp32, model, validation[0], args.runs)
        held = agreement(model, test, ref_test) if test else float("nan")
        print(f"| {label} | {name} | {held:.2%} | {agreement(model, validation, ref_validation):.2%} | "
              f"{fp32_s / int8_s:.2f}x | {int8_s * 1e3:.1f} | {fp32_s * 1e3:.1f} | {seconds:.0f} s |")  # fmt: skip
    flags = subprocess.run(["sh", "-c", r"grep -o -w 'avx2\|avx512f\|avx512_vnni\|amx_tile' /proc/cpuinfo | sort -u"],
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    print(f"\nCPU flags: {' '.join(flags) or ', '.join(cpu_flags()) or 'unknown'}; numpy {np.__version__}, "
          f"nncf {nncf.__version__}")  # fmt: skip


if __name__ == "__main__":
    main()
