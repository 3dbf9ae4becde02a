"""segtool's int8 quantizer with NNCF's choices beside it as it was before them, on one fp32 export,
the same frames and the same runtime.

    python benchmarks/int8_peers.py --model lraspp_mobilenet_v3_large --video ../shared/data/walk.mp4
    python benchmarks/int8_peers.py --trained 300     # the synthetic-shapes lraspp, trained for 300 steps
    python benchmarks/int8_peers.py --checkpoint shapes.pth              # a checkpoint trained before
    # fcn_resnet50 taught the same task (docs/BENCHMARKS.md: 200 steps, batch 8, lr 0.002, 275 s):
    python -c "import torch; from segtool.export import synthetic_task as t; torch.save(t.train(steps=200, \
        model='fcn_resnet50', batch=8, lr=0.002, threads=2), 'fcn_shapes.pth')"
    python benchmarks/int8_peers.py --model fcn_resnet50 --checkpoint fcn_shapes.pth --count 15 --test 12

The first ``--count`` frames are split as the export splits them (two in three calibrate, one in
three validates: segtool's search selects on those); the next ``--test`` frames are used by nobody
and give the held-out agreement. Speed-up is fp32/int8 median latency on ONNX Runtime's CPU provider,
measured in this process (``int8.median_latencies``). Prints a Markdown table and the CPU flags.
Needs the [export] extra. NNCF itself was measured beside these rows until segtool dropped it
(docs/BENCHMARKS.md, 2026-12-01: behind on every checkpoint).
"""

from __future__ import annotations

import argparse
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
    parser.add_argument(
        "--trained",
        type=int,
        default=0,
        metavar="STEPS",
        help="train the synthetic-shapes lraspp (synthetic_task.py) for STEPS steps",
    )
    parser.add_argument("--checkpoint", type=Path, help="a trained synthetic-shapes checkpoint (synthetic_task.py)")
    parser.add_argument(
        "--video",
        type=Path,
        default=Path("../shared/data/walk.mp4"),
        help="frames for untrained models; trained ones use the task's own pictures",
    )
    parser.add_argument("--count", type=int, default=15, help="frames split into calibration/validation")
    parser.add_argument("--test", type=int, default=6, help="further frames no quantizer sees")
    parser.add_argument("--size", type=int, default=256, help="long side of the frames")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from segtool.export import export_model
    from segtool.export.int8 import labels_of, search, split
    from segtool.export.variants import calibration_batches

    weights, label = args.weights, f"{args.model} ({args.weights} weights)"
    with tempfile.TemporaryDirectory(prefix="int8-peers-") as tmp:
        task = args.trained or args.checkpoint
        if args.trained:
            import torch

            from segtool.export import synthetic_task

            started = time.perf_counter()
            state = synthetic_task.train(
                steps=args.trained, model=args.model, threads=torch.get_num_threads(), log=print
            )
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
        result = export_model(
            Path(tmp) / "fp32.onnx",
            model=args.model,
            weights=weights,
            verify=False,
            shapes=((1, 3, 64, 96),),
            **num_classes,
        )
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
    models: dict[str, tuple[bytes, dict, float]] = {}  # name: (model, search outcome, seconds)

    # "plain": every convolution quantized (target 0: no search), the quantizer's choices alone
    choices = {
        "segtool ort, before (global MinMax, logits quantized)": False,
        "segtool ort, now (NNCF's ranges, head in float, 7-bit without VNNI)": True,
    }
    for name, nncf_like in choices.items():
        for plain, target in ((" plain", 0.0), (" + search", args.target)):
            started = time.perf_counter()
            model, outcome = search(fp32, calibration, validation, ref_validation, target, "minmax", quiet, nncf_like)
            models[name + plain] = (model, outcome, time.perf_counter() - started)

    print_table(args, label, fp32, models, validation, ref_validation, test, ref_test)


def print_table(args, label, fp32, models, validation, ref_validation, test, ref_test) -> None:
    from segtool.export.int8 import agreement, int8_flags, median_latencies

    shape = "x".join(map(str, validation[0].shape))
    print(
        f"\nheld-out agreement: argmax agreement with fp32 on {len(test)} frames no quantizer saw "
        f"(validation: the {len(validation)} frames the searches select on); speed-up: fp32/int8 median "
        f"latency, ONNX Runtime CPU, {args.runs} runs interleaved on one {shape} input; "
        f"target {args.target:.2%}\n"
    )
    print(
        "| model | quantizer | held-out agreement | validation agreement | fp32 convolutions | speed-up vs fp32 | "
        "int8 ms | fp32 ms | quantize time |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (model, outcome, seconds) in models.items():
        fp32_s, int8_s = median_latencies(fp32, model, validation[0], args.runs)
        held = agreement(model, test, ref_test) if test else float("nan")
        kept = f"{outcome['fp32_convolutions']} of {outcome['convolutions']}"
        print(
            f"| {label} | {name} | {held:.2%} | {outcome['agreement']:.2%} | {kept} | {fp32_s / int8_s:.2f}x | "
            f"{int8_s * 1e3:.1f} | {fp32_s * 1e3:.1f} | {seconds:.0f} s |",
            flush=True,
        )
    print(f"\nCPU flags: {', '.join(int8_flags()) or 'unknown'}; numpy {np.__version__}")


if __name__ == "__main__":
    main()
