"""`segtool bench`: per-stage timings of still images, video FPS end to end against pure inference,
achieved GFLOP/s against the machine's matmul rate, and the seed's PyTorch pipeline, in one run;
with --engines, every engine that starts here side by side (ONNX Runtime, OpenVINO per device and precision)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from segtool.runtime.errors import UsageError
from segtool.runtime.model.choice import Policy, agreement_record, choose
from segtool.runtime.model.engines import onnx_metadata
from segtool.runtime.model.segmenter import open_engine
from segtool.runtime.tools.benchmark import ENGINE_SIZES, STAGES, bench_engines, bench_report
from segtool.runtime.tools.precisions import summary

from .common import (
    AGREEMENT_TARGET,
    Device,
    JsonOut,
    MinAgreementOpt,
    ModelArg,
    PrecisionOpt,
    err,
    out,
    parse_size,
    policy,
    say,
)

Opt = typer.Option


def bench(
    model: ModelArg,
    sizes: Annotated[Optional[str], Opt(help="Comma list of WIDTHxHEIGHT (default 520x520,1280x853).")] = None,
    image: Annotated[Optional[list[Path]], Opt("--image", help="Image(s) to time at their own size.")] = None,
    video: Annotated[Optional[list[Path]], Opt("--video", help="Video(s): end-to-end vs pure inference FPS.")] = None,
    frames: Annotated[int, Opt(min=1, help="Frames per video.")] = 30,
    size: Annotated[Optional[str], Opt("--size", help="Video inference WIDTHxHEIGHT (e.g. 640x360).")] = None,
    device: Device = "auto",
    runs: Annotated[int, Opt(min=1, help="Timed runs per image.")] = 5,
    warmup: Annotated[int, Opt(min=0, help="Untimed runs first (the first is the cold latency).")] = 1,
    torch_too: Annotated[bool, Opt("--torch", help="Also time the seed's PyTorch eager pipeline.")] = False,
    matmul: Annotated[bool, Opt("--matmul/--no-matmul", help="Measure numpy's fp32 matmul rate.")] = True,
    cache: Annotated[bool, Opt("--cache", help="CPU: use/make the optimized-graph cache.")] = False,
    engines: Annotated[
        bool,
        Opt(
            "--engines",
            help="Every engine that starts here side by side: ONNX Runtime CPU/CUDA, OpenVINO per device "
            "and precision (latency, video FPS, agreement with ONNX Runtime fp32) [sizes 520x520,640x360].",
        ),
    ] = False,
    precision: PrecisionOpt = "auto",
    min_agreement: MinAgreementOpt = AGREEMENT_TARGET,
    json_out: JsonOut = False,
):
    """Time read, preprocess, inference, postprocess, write (median, p90), cold start, memory, video FPS."""
    size_list = [parse_size(s) or (0, 0) for s in (sizes or "").split(",") if s.strip()]
    if engines:
        if device != "auto" or torch_too or cache:
            raise UsageError("--engines measures every engine itself: drop --device, --torch and --cache")
        if not size_list and not image:
            size_list = list(ENGINE_SIZES)
        with err.status("benchmarking every engine"):
            report = bench_engines(model, size_list, list(image or []), list(video or []), runs, warmup, frames,
                                   parse_size(size))  # fmt: skip
            report |= auto_report(model, policy(precision, min_agreement))
        if json_out:
            print(json.dumps(report, indent=2))
        else:
            print_engines(report)
        return
    if not size_list and not image and not video:
        size_list = [(520, 520), (1280, 853)]
    with err.status("benchmarking"):
        report = bench_report(
            model,
            size_list,
            list(image or []),
            list(video or []),
            device,
            runs,
            warmup,
            torch_too,
            matmul,
            cache,
            frames,
            parse_size(size),
        )
    if json_out:
        print(json.dumps(report, indent=2))
    else:
        print_bench(report, model)


def print_bench(report: dict, model: object) -> None:
    rt, pt, mm = report.get("runtime"), report.get("pytorch"), report.get("matmul")
    if rt:
        say(
            f"model {model} ({rt['precision']}, output {rt['output']}, {rt['weights']}) on {rt['provider']}, "
            f"session created in {rt['session_create_s']:.2f} s, peak RSS {rt['peak_rss_mb']:.0f} MB"
        )
    for k, r in enumerate(rt["results"] if rt else []):
        t = pt["results"][k] if pt else None
        out.print(stage_table(r, t))
        pre_post = r["preprocess"]["median_ms"] + r["postprocess"]["median_ms"]
        lines = [f"images/s {r['images_per_s']:.3f}", f"pre+post {pre_post / r['total']['median_ms']:.1%} of e2e"]
        if "gflops_per_s" in r:
            lines.append(f"{r['gflop']:.0f} GFLOP per image, {r['gflops_per_s']:.1f} GFLOP/s achieved")
            if mm:
                lines.append(f"{r['gflops_per_s'] / mm['median_gflops']:.2f}x the matmul rate")
        if t:
            lines.append(f"end-to-end ORT/PyTorch {r['total']['median_ms'] / t['total']['median_ms']:.2f}x")
        say("  " + "; ".join(lines))
    for v in report.get("videos", []):
        say(
            f"{v['video']}: {v['frames']} frames {v['frame_size'][0]}x{v['frame_size'][1]}, inference at "
            f"{v['inference_size'][0]}x{v['inference_size'][1]} on {v['provider']}: pure inference "
            f"{v['pure_inference_fps']:.3f} FPS, end-to-end (decode, infer, overlay mp4) "
            f"{v['end_to_end_fps']:.3f} FPS, ratio {v['ratio']:.3f}"
        )
    if mm:
        say(
            f"numpy fp32 matmul {mm['n']}x{mm['n']}: {mm['median_gflops']:.1f} GFLOP/s median, "
            f"{mm['best_gflops']:.1f} best"
        )


def stage_table(ort_result: dict, torch_result: dict | None) -> Table:
    table = Table(title=f"{ort_result['input']} ({ort_result['width']}x{ort_result['height']})", title_justify="left")
    columns = ["stage", "ORT median ms", "ORT p90 ms"]
    if torch_result:
        columns += ["PyTorch median ms", "PyTorch p90 ms", "ORT / PyTorch"]
    for k, column in enumerate(columns):
        table.add_column(column, justify="left" if k == 0 else "right")
    for stage in (*STAGES, "total"):
        row = [stage, f"{ort_result[stage]['median_ms']:.1f}", f"{ort_result[stage]['p90_ms']:.1f}"]
        if torch_result:
            t = torch_result[stage]["median_ms"]
            row += [
                f"{t:.1f}",
                f"{torch_result[stage]['p90_ms']:.1f}",
                f"{ort_result[stage]['median_ms'] / t:.2f}" if t else "-",
            ]
        table.add_row(*row)
    table.caption = f"cold first run {ort_result['cold_ms']:.0f} ms" + (
        f" (PyTorch {torch_result['cold_ms']:.0f} ms)" if torch_result else ""
    )
    return table


def auto_report(model: Path, rules: Policy) -> dict:
    """The file's agreement record and what --device auto chooses here, for --engines."""
    _, choice = choose(model, None, False, rules, open_engine)
    return {
        "agreements": agreement_record(onnx_metadata(model)),
        "auto_choice": {
            "device": choice.device,
            "line": choice.line,
            "timings_ms": choice.timings_ms,
            "cached": choice.cached,
            "skipped": choice.skipped,
        },
    }


def print_engines(report: dict) -> None:
    machine = report["machine"]
    say(f"{report['model']} on {machine['cpu']}, {machine['cores']} cores, flags {' '.join(machine['flags']) or '-'}; "
        f"median of {report['runs']} runs")  # fmt: skip
    ran = [r for r in report["engines"] if "results" in r]
    sizes = [f"{t['width']}x{t['height']}" for t in ran[0]["results"]] if ran else []
    table = Table(title_justify="left")
    for k, column in enumerate(["device", "runs on", "open s", *[f"{s} ms" for s in sizes], "agreement", "video FPS"]):
        table.add_column(column, justify="left" if k < 2 else "right")
    for r in ran:
        times = [f"{t['inference']['median_ms']:.1f}" for t in r["results"]]
        agreement = min((t["agreement"] for t in r["results"] if "agreement" in t), default=None)
        fps = ", ".join(f"{v['end_to_end_fps']:.2f}" for v in r["videos"]) or "-"
        table.add_row(r["device"], r["provider"], f"{r['open_s']:.1f}", *times,
                      "-" if agreement is None else f"{agreement:.2%}", fps)  # fmt: skip
    out.print(table)
    for r in report["engines"]:
        if "error" in r:
            say(f"  {r['device']}: {r['error']}")
    if report["reference_classes"] == 1:
        say("  ONNX Runtime's labels hold one class only (random weights?): every agreement is then 100%")
    for key, what in (("fastest_full_precision", "in the file's own precision"), ("fastest", "of all")):
        best = next((r for r in ran if r["device"] == report[key]), None)
        if best and (key == "fastest_full_precision" or best["reduced"]):
            say(f"fastest here {what}: --device {best['device']} ({best['provider']})")
    say("agreement: the lowest share of pixels labelled as ONNX Runtime's CPU labels them")
    record = report.get("agreements")
    for line in summary(record) if record else ["none recorded in the file (`segtool tune MODEL` measures them)"]:
        say(f"recorded agreement: {line}")
    if report.get("auto_choice"):
        say(report["auto_choice"]["line"])
