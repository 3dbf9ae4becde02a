"""Running an export from the command line (`export` and `demo`): each stage shown as it starts,
then the parity and variant tables."""

from __future__ import annotations

import time
from pathlib import Path

from segtool.runtime.errors import ParityError, UsageError

from .console import out, say
from .tables import parity_table, variant_table


def load_export_stage():
    """Import the torch side lazily, so the runtime-only install can still run every other command."""
    try:
        from segtool.export import config, pipeline
    except ImportError as exc:
        raise UsageError(
            f"`segtool export` needs PyTorch and ONNX ({exc.name or 'torch'} is not installed): "
            "pip install 'segtool[export]'"
        ) from None
    return config, pipeline


def run_export(output: Path | None, **settings):
    config_module, pipeline = load_export_stage()
    config = config_module.ExportConfig(**settings)
    started = time.perf_counter()

    def progress(stage: str) -> None:
        say(f"export: {stage} ({time.perf_counter() - started:.1f} s)", to_stderr=True)

    try:
        result = pipeline.export_model(output, config, progress)
    except ParityError as exc:
        if exc.rows:  # the fp32 gate's table (a variant below its target carries none)
            out.print(parity_table(exc.rows, config.gate))
        raise
    if result.parity:
        out.print(parity_table(result.parity, config.gate))
    if "variant" in result.meta.extra:
        v = result.meta.extra["variant"]
        out.print(variant_table(v))
        kept = (f"; {len(v['fp32_tensors'])} tensor(s) kept in fp32 ({len(v['excluded_nodes'])} nodes unquantized)"
                if v.get("fp32_tensors") else "")  # fmt: skip
        speed = f"; {v['speedup_vs_fp32']:.2f}x fp32's speed here" if "speedup_vs_fp32" in v else ""
        say(f"{v['precision']} agreement {v['agreement']:.2%} with fp32 on held-out images (target {v['target']:.2%}, "
            f"{'met' if v['met'] else 'NOT met'}){kept}{speed}")  # fmt: skip
    size = result.path.stat().st_size / 1e6
    say(
        f"wrote {result.path} ({size:.1f} MB, {result.meta.model}, {result.meta.weights_label}, "
        f"output {result.meta.output}) in {time.perf_counter() - started:.0f} s"
    )
    return result
