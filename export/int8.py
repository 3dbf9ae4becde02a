"""int8 with an accuracy target: quantize, check on held-out images, keep the sensitive tensors in fp32.

1. The calibration images are split: two in three calibrate (ONNX Runtime's ``quantize_static``,
   QDQ, per-channel int8 weights, uint8 activations), one in three validates, never calibrated on
   (``MIN_CALIBRATION`` images at least, so that neither side is empty).
2. Agreement is the share of pixels whose label equals the fp32 export's on the validation images:
   the argmax of logits, or the label map itself for a labels-output graph.
3. Below the target, the quantized activation tensors are ranked by sensitivity with ONNX Runtime's
   ``qdq_loss_debug`` tools: each tensor before and after its QuantizeLinear/DequantizeLinear pair
   (the error that pair adds, not the error it inherits), as the mean over channels of the
   per-channel signal-to-quantization-noise ratio, so that one outlier channel that squeezes all
   the others into a few levels is seen. A ReLU that the quantizer folded into a zero-point-0 range
   is applied to the "before" side, or it would count as noise.
4. A tensor stays in fp32 only if no node quantizes it, so its producer *and* all its consumers go
   into ``nodes_to_exclude`` (excluding a convolution alone leaves its neighbours' QDQ pairs on
   both its tensors). The lowest-SQNR tensors are kept in fp32, 1, 2, 4, ... of them, until the
   target holds or the next try would leave more than a quarter of the convolutions unquantized
   (the cap: fp32 convolutions are what costs speed).
   Calibration ranges are computed once and cached.
5. At the cap the variant is refused (``VariantBelowTarget``), unless ``force``; the message gives
   the best agreement reached, the speed-up it would have had, and what to do instead.
6. Never slower than fp32: the median latency of fp32 and int8 on ONNX Runtime's CPU provider is
   measured in this process on one calibration-size input (runs interleaved, so that a busy machine
   slows both alike); an int8 model that is not faster is refused (``VariantSlowerThanFp32``)
   unless ``force``, and the figure is recorded either way (``speedup_vs_fp32``).

Three choices come from NNCF, measured against it (docs/BENCHMARKS.md): MinMax ranges are the mean
of each image's (ONNX Runtime's ``CalibMovingAverage``), the head after the last convolutions stays
in float, and weights use 7 bits (``reduce_range``) unless the file is meant for CPUs with VNNI only.

Which CPUs a file is for (``int8_target``) is a choice of the export, recorded in the file, never the
export host's flags: ``portable`` (the default) quantizes weights to 7 bits, which every x86 CPU adds
without overflow (AVX2's u8 x s8 pairs sum in 16 bits and saturate on full 8-bit weights); ``vnni``
keeps 8 bits, a little closer to fp32, right only where VNNI/AMX compute 8-bit dot products in 32 bits.
A ``vnni`` file on a CPU without VNNI is warned about once when opened (``runtime.model.choice``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    create_activation_matching,
    modify_model_output_intermediate_tensors,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from segtool.runtime.errors import ParityError, UsageError
from segtool.runtime.model.session import cpu_flags, reference_session
from segtool.runtime.tools.agreement import as_labels, label_agreement

from .config import INPUT_NAME, MIN_CALIBRATION

log = logging.getLogger(__name__)
METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")  # the CPU features int8 speed depends on
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_tile")  # 8-bit dot products without AVX2's 16-bit overflow
MIN_GAIN = 0.001  # a try with more tensors in fp32 is kept only if it wins 0.1 point of agreement: they cost speed


class VariantBelowTarget(ParityError):
    """The variant stays below its agreement target even with the sensitive layers in fp32."""


class VariantSlowerThanFp32(ParityError):
    """The int8 variant is not faster than the fp32 model it came from, on this machine's CPU."""


def split(batches: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(calibration, validation): every third batch validates; ``UsageError`` if either side would be empty."""
    if len(batches) < MIN_CALIBRATION:
        raise UsageError(
            f"int8/fp16 need at least {MIN_CALIBRATION} calibration images (two in three calibrate, "
            f"one in three validates); got {len(batches)}"
        )
    calibration = [b for k, b in enumerate(batches) if k % 3 != 2]
    validation = [b for k, b in enumerate(batches) if k % 3 == 2]
    return calibration, validation


def labels_of(model: bytes, batches: list[np.ndarray]) -> list[np.ndarray]:
    """The model's labels for each batch: argmax of its logits, or its own label map (labels-output graphs)."""
    session = reference_session(model)
    return [as_labels(np.asarray(session.run(None, {INPUT_NAME: b})[0])) for b in batches]


def agreement(model: bytes, batches: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Pixel-weighted label agreement with ``reference`` labels; ``UsageError`` with nothing to measure on."""
    pixels = sum(ref.size for ref in reference)
    if not batches or not pixels:
        raise UsageError(
            f"no held-out images to measure agreement on: give at least {MIN_CALIBRATION} calibration "
            "images (one in three validates)"
        )
    labels = labels_of(model, batches)
    same = sum(label_agreement(ours, ref) * ref.size for ours, ref in zip(labels, reference, strict=True))
    return same / pixels


def median_latencies(fp32_model: bytes, model: bytes, batch: np.ndarray, runs: int = 5) -> tuple[float, float]:
    """(fp32, variant) median seconds per run on ONNX Runtime's CPU provider, one warm-up each, runs interleaved."""
    sessions = [reference_session(fp32_model), reference_session(model)]
    for session in sessions:
        session.run(None, {INPUT_NAME: batch})
    times: list[list[float]] = [[], []]
    for _ in range(runs):
        for k, session in enumerate(sessions):
            started = time.perf_counter()
            session.run(None, {INPUT_NAME: batch})
            times[k].append(time.perf_counter() - started)
    return float(np.median(times[0])), float(np.median(times[1]))


def float_inputs(model: onnx.ModelProto, names: set[str]) -> None:
    """Feed the nodes ``names`` their inputs unquantized: a DequantizeLinear(QuantizeLinear(t)) in
    front of one is bypassed, and pairs that nothing reads any more are removed. (Excluding a node
    from quantization still leaves the pair its quantized producer puts on its output.)"""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.name not in names:
            continue
        for k, tensor in enumerate(node.input):
            dq = producer.get(tensor)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
    while True:
        read = {tensor for node in graph.node for tensor in node.input} | {o.name for o in graph.output}
        pairs = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        unused = [n for n in pairs if not any(out in read for out in n.output)]
        if not unused:
            return
        for node in unused:
            graph.node.remove(node)


def int8_flags() -> list[str]:
    """This CPU's features that int8 speed depends on (VNNI, AMX); [] where /proc/cpuinfo is not."""
    flags = set(cpu_flags())
    return [flag for flag in INT8_FLAGS if flag in flags]


def vnni() -> bool:
    """Whether this CPU has VNNI (8-bit dot products without the 16-bit overflow of AVX2's)."""
    return any(flag in VNNI_FLAGS for flag in int8_flags())


class Feeds(CalibrationDataReader):
    """Batches as ONNX Runtime's quantization tools read them."""

    def __init__(self, batches: list[np.ndarray]):
        self.feeds = iter({INPUT_NAME: batch} for batch in batches)

    def get_next(self):
        return next(self.feeds, None)


class Quantizer:
    """One fp32 model, pre-processed once, calibrated once; quantized with any exclusion list."""

    def __init__(
        self,
        fp32_model: bytes,
        calibration: list[np.ndarray],
        method: str,
        workdir: Path,
        nncf_like: bool = True,
        int8_target: str = "portable",
    ):
        self.workdir, self.calibration, self.method, self.nncf_like = workdir, calibration, method, nncf_like
        self.reduce_range = nncf_like and int8_target == "portable"
        (workdir / "fp32.onnx").write_bytes(fp32_model)
        quant_pre_process(str(workdir / "fp32.onnx"), str(workdir / "pre.onnx"), skip_symbolic_shape=True)
        model = onnx.load(str(workdir / "pre.onnx"))
        for k, node in enumerate(model.graph.node):  # nodes_to_exclude works by name: every node gets one
            node.name = node.name or f"segtool_unnamed_{k}"
        onnx.save(model, str(workdir / "pre.onnx"))
        self.convolutions = [n.name for n in model.graph.node if n.op_type == "Conv"]
        self.producer = {tensor: node for node in model.graph.node for tensor in node.output}
        self.touching: dict[str, list[str]] = {}  # tensor -> its producer and consumers
        for node in model.graph.node:
            for tensor in [*node.output, *node.input]:
                self.touching.setdefault(tensor, []).append(node.name)
        self.head = self.head_nodes(model)

    def head_nodes(self, model: onnx.ModelProto) -> list[str]:
        """The nodes between the last convolutions and the graph's outputs (the final Resize, an Add
        of two classifiers, an ArgMax): left in float, the logits get no quantize/dequantize pair,
        as NNCF leaves them."""
        names, todo, seen = [], [o.name for o in model.graph.output], set()
        while todo:
            node = self.producer.get(todo.pop())
            if node is None or node.name in seen or node.op_type == "Conv":
                continue
            seen.add(node.name)
            names.append(node.name)
            todo += [tensor for tensor in node.input if tensor in self.producer]
        return names

    def within_cap(self, ranking: list[tuple[str, float]], cap: int) -> list[tuple[str, float]]:
        """The longest head of ``ranking`` that keeps at most ``cap`` convolutions unquantized."""
        convolutions = set(self.convolutions)
        for count in range(1, len(ranking) + 1):
            if len(convolutions.intersection(self.nodes_for([t for t, _ in ranking[:count]]))) > cap:
                return ranking[: count - 1]
        return ranking

    def nodes_for(self, tensors: list[str]) -> list[str]:
        """The nodes to exclude so that none of ``tensors`` is quantized.

        The quantizer folds a ReLU or Clip into its input's quantization range, so keeping such an
        activation's output in fp32 means keeping its input in fp32 too.
        """
        names, todo, seen = [], list(tensors), set()
        while todo:
            tensor = todo.pop(0)
            if tensor in seen:
                continue
            seen.add(tensor)
            names += self.touching.get(tensor, [])
            node = self.producer.get(tensor)
            if node is not None and node.op_type in ("Relu", "Clip"):
                todo.append(node.input[0])
        return list(dict.fromkeys(names))

    def quantize(self, exclude: list[str]) -> bytes:
        out = self.workdir / "int8.onnx"
        nncf_like = self.nncf_like
        moving = nncf_like and self.method == "minmax"
        ranges = self.workdir / ("ranges_avg.json" if moving else "ranges.json")
        quantize_static(
            str(self.workdir / "pre.onnx"),
            str(out),
            Feeds(self.calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(dict.fromkeys([*exclude, *(self.head if nncf_like else [])])),
            reduce_range=self.reduce_range,
            extra_options={"CalibMovingAverage": True} if moving else {},
            calibrate_method=getattr(CalibrationMethod, METHODS[self.method]),
            calibration_cache_path=str(ranges),
        )
        if not nncf_like:
            return out.read_bytes()
        model = onnx.load(str(out))
        float_inputs(model, set(self.head))
        return model.SerializeToString()

    def sensitivity(self, qdq_model: bytes, batch: np.ndarray) -> list[tuple[str, float]]:
        """Quantized activation tensors with their SQNR in dB, most sensitive (lowest) first."""
        (self.workdir / "qdq.onnx").write_bytes(qdq_model)
        augmented = self.workdir / "augmented.onnx"
        modify_model_output_intermediate_tensors(str(self.workdir / "qdq.onnx"), str(augmented))
        matching = create_activation_matching(collect_activations(str(augmented), Feeds([batch])))
        relu_folded = _zero_point_zero(onnx.load(str(self.workdir / "qdq.onnx")))
        scored = {}
        for tensor, pair in matching.items():
            if "pre_qdq" not in pair or "post_qdq" not in pair or tensor not in self.touching:
                continue
            before = np.maximum(pair["pre_qdq"], 0) if tensor in relu_folded else pair["pre_qdq"]
            scored[tensor] = channel_sqnr(before, pair["post_qdq"])
        return sorted(scored.items(), key=lambda item: item[1])


def channel_sqnr(reference: np.ndarray, quantized: np.ndarray) -> float:
    """Mean over channels (axis 1) of 10·log10(signal / noise), each channel capped at 100 dB."""
    ref = np.asarray(reference, np.float64)
    noisy = np.asarray(quantized, np.float64)
    if ref.ndim < 2:
        ref, noisy = ref.reshape(1, 1, -1), noisy.reshape(1, 1, -1)
    axes = tuple(k for k in range(ref.ndim) if k != 1)
    signal, noise = (ref**2).sum(axes), ((ref - noisy) ** 2).sum(axes)
    keep = signal > 0
    if not keep.any():
        return 100.0
    ratio = 10 * np.log10(signal[keep] / np.maximum(noise[keep], signal[keep] * 1e-10))
    return float(np.minimum(ratio, 100.0).mean())


def _zero_point_zero(qdq_model: onnx.ModelProto) -> set[str]:
    """Tensors quantized as uint8 with zero point 0: a range that starts at 0 (a folded ReLU, or no negatives)."""
    constants = {init.name: init for init in qdq_model.graph.initializer}
    found = set()
    for node in qdq_model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in constants:
            zero_point = onnx.numpy_helper.to_array(constants[node.input[2]])
            if zero_point.dtype == np.uint8 and zero_point.size == 1 and int(zero_point) == 0:
                found.add(node.input[0])
    return found


Progress = Callable[[str], None]


def search(
    fp32_model: bytes,
    calibration: list[np.ndarray],
    validation: list[np.ndarray],
    reference: list[np.ndarray],
    target: float,
    method: str,
    progress: Progress,
    nncf_like: bool = True,
    int8_target: str = "portable",
) -> tuple[bytes, dict]:
    """ONNX Runtime's int8, with the most sensitive tensors kept in fp32 up to the cap while below ``target``.
    ``nncf_like``: NNCF's choices (mean of per-image ranges, head in float, 7-bit weights for ``portable``)."""
    with tempfile.TemporaryDirectory(prefix="segtool-int8-") as tmp:
        quantizer = Quantizer(fp32_model, calibration, method, Path(tmp), nncf_like, int8_target)
        progress(f"int8: calibrating ({method}) on {len(calibration)} images, validating on {len(validation)}")
        model = first = quantizer.quantize([])
        reached = before = agreement(model, validation, reference)
        history: list[dict] = [{"fp32_tensors": 0, "excluded_nodes": 0, "agreement": before}]
        kept: list[tuple[str, float]] = []
        excluded: list[str] = []
        cap = max(1, len(quantizer.convolutions) // 4)  # convolutions left in fp32, at most
        if reached < target:
            ranking = quantizer.within_cap(quantizer.sensitivity(first, validation[0]), cap)
            count = 1
            while reached < target and count <= len(ranking):
                below = f"int8: agreement {reached:.2%} < {target:.2%}"
                progress(f"{below}: keeping the {count} most sensitive tensor(s) in fp32")
                nodes = quantizer.nodes_for([tensor for tensor, _ in ranking[:count]])
                candidate = quantizer.quantize(nodes)
                tried = agreement(candidate, validation, reference)
                history.append({"fp32_tensors": count, "excluded_nodes": len(nodes), "agreement": tried})
                if tried >= reached + MIN_GAIN:  # keep the best model seen, and fp32 tensors only where they pay
                    model, reached, kept, excluded = candidate, tried, ranking[:count], nodes
                count = len(ranking) if count < len(ranking) <= count * 2 else count * 2
    outcome = {
        "agreement_before": before,
        "agreement": reached,
        "excluded_nodes": excluded,
        "fp32_tensors": [{"tensor": t, "sqnr_db": round(db, 2)} for t, db in kept],
        "fp32_convolutions": len(set(excluded) & set(quantizer.convolutions)),
        "convolutions": len(quantizer.convolutions),
        "cap": cap,
        "history": history,
        "method": method,
        "int8_target": target_record(int8_target, quantizer.reduce_range),
    }
    return model, outcome


def target_record(int8_target: str, reduce_range: bool) -> dict:
    """What the file assumes of the CPU it runs on (``runtime.model.choice.int8_warning`` reads it)."""
    return {
        "name": int8_target,
        "weight_bits": 7 if reduce_range else 8,
        "reduce_range": reduce_range,
        "assumes_vnni": not reduce_range,
        "export_cpu_vnni": vnni(),  # the export host's own, for the record: it chose nothing
    }


def quantize_with_target(
    fp32_model: bytes,
    batches: list[np.ndarray],
    target: float,
    method: str = "minmax",
    force: bool = False,
    progress: Progress = log.info,
    int8_target: str = "portable",
) -> tuple[bytes, dict]:
    """The int8 model and the record of how it was made.

    ``VariantBelowTarget`` if it cannot reach ``target``, ``VariantSlowerThanFp32`` if it is not
    faster than fp32 here; neither with ``force`` (the record says so)."""
    calibration, validation = split(batches)
    reference = labels_of(fp32_model, validation)
    model, outcome = search(
        fp32_model, calibration, validation, reference, target, method, progress, int8_target=int8_target
    )
    progress("int8: timing fp32 and int8 on ONNX Runtime CPU")
    fp32_s, int8_s = median_latencies(fp32_model, model, validation[0])
    speedup = fp32_s / int8_s
    reached = outcome["agreement"]
    record = {
        **outcome,
        "target": target,
        "met": reached >= target,
        "split": {"calibration": len(calibration), "validation": len(validation)},
        "speedup_vs_fp32": round(speedup, 3),
        "faster_than_fp32": speedup > 1.0,
        "latency_ms": {"fp32": round(fp32_s * 1e3, 3), "int8": round(int8_s * 1e3, 3)},
        "speed_input": list(validation[0].shape),
        "cpu_flags": int8_flags(),
    }
    if force:
        return model, record
    if reached < target:
        raise VariantBelowTarget(below_target_message(record, len(validation)))
    if speedup <= 1.0:
        raise VariantSlowerThanFp32(slower_message(record))
    return model, record


def below_target_message(record: dict, held_out: int) -> str:
    reached, target = record["agreement"], record["target"]
    return (
        f"int8 reaches at best {reached:.2%} argmax agreement with fp32 on {held_out} held-out images, below the "
        f"{target:.2%} target, even with its most sensitive tensors in fp32 up to the cap ({record['cap']} of its "
        f"{record['convolutions']} convolutions unquantized); it would have run at "
        f"{record['speedup_vs_fp32']:.2f}x fp32's speed here; nothing written. Choices: a lower target "
        f"(--int8-min-agreement {int(reached * 1000) / 1000:.3f}), more or more varied calibration images "
        "(--calibration FOLDER|VIDEO, --calibration-count), --force (writes it, marked as below target), "
        "or --fp16 for a GPU"
    )


def slower_message(record: dict) -> str:
    shape = "x".join(map(str, record["speed_input"]))
    flags = ", ".join(record["cpu_flags"]) or "unknown"
    latency = record["latency_ms"]
    return (
        f"int8 is not faster than fp32 on this CPU: median {latency['int8']:.1f} ms vs {latency['fp32']:.1f} ms "
        f"for fp32 ({record['speedup_vs_fp32']:.2f}x) on ONNX Runtime CPU, one {shape} input (CPU flags: {flags}); "
        "nothing written: keep the fp32 model here (--force writes the int8 one anyway)"
    )
