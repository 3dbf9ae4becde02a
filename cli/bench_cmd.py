"""`segtool bench`: per-stage timings, achieved GFLOP/s against the machine's matmul rate, and
the seed's PyTorch pipeline on the same inputs in the same run."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import typer
from rich.table import Table

from segtool.runtime import SegtoolError
from segtool.runtime.benchmark import STAGES, bench_runtime, matmul_gflops, sample_file

from .console import err, out
from .run_cmd import parse_size


def run_torch(model_name: str, seed: int, inputs: list[Path], runs: int, warmup: int, device: str) -> dict:
    """The PyTorch pipeline in a child process: its own imports, its own peak memory."""
    command = [sys.executable, "-m", "segtool.export.torch_bench", model_name, str(seed), str(runs), str(warmup),
               device, *map(str, inputs)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        if "No module named" in last:
            raise SegtoolError(f"--torch needs PyTorch: pip install 'segtool[export]' ({last})", 2)
        raise SegtoolError(f"the PyTorch benchmark failed: {last}", 1)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stage_table(ort_result: dict, torch_result: dict | None) -> Table:
    table = Table(title=f"{ort_result['input']} ({ort_result['width']}x{ort_result['height']})", title_justify="left")
    table.add_column("stage")
    table.add_column("ORT median ms", justify="right")
    table.add_column("ORT p90 ms", justify="right")
    if torch_result:
        table.add_column("PyTorch median ms", justify="right")
        table.add_column("PyTorch p90 ms", justify="right")
        table.add_column("ORT / PyTorch", justify="right")
    for stage in (*STAGES, "total"):
        row = [stage, f"{ort_result[stage]['median_ms']:.1f}", f"{ort_result[stage]['p90_ms']:.1f}"]
        if torch_result:
            t = torch_result[stage]["median_ms"]
            row += [f"{t:.1f}", f"{torch_result[stage]['p90_ms']:.1f}",
                    f"{ort_result[stage]['median_ms'] / t:.2f}" if t else "-"]
        table.add_row(*row)
    cold = f"cold first run {ort_result['cold_ms']:.0f} ms"
    if torch_result:
        cold += f" (PyTorch {torch_result['cold_ms']:.0f} ms)"
    table.caption = cold
    return table


def bench(
    model: Path = typer.Argument(..., help="Exported .onnx model."),
    sizes: str = typer.Option(None, help="Comma list of WIDTHxHEIGHT [520x520,1280x853 without --image]."),
    image: list[Path] = typer.Option(None, "--image", help="Real image(s) to time at their own size."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or tensorrt."),
    runs: int = typer.Option(5, min=1, help="Timed runs per input."),
    warmup: int = typer.Option(1, min=0, help="Untimed runs first (the first is also the cold latency)."),
    torch_too: bool = typer.Option(False, "--torch", help="Also time the seed's PyTorch eager pipeline."),
    matmul: bool = typer.Option(True, "--matmul/--no-matmul", help="Measure numpy's fp32 matmul rate."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    cache: bool = typer.Option(False, "--cache", help="CPU: use/make the optimized-graph cache."),
    video: Path = typer.Option(None, "--video", help="Instead: video FPS, end-to-end vs pure inference."),
    frames: int = typer.Option(30, min=1, help="--video: number of frames."),
    size: str = typer.Option(None, "--size", help="--video: inference WIDTHxHEIGHT (e.g. 640x360)."),
):
    """Time preprocess, inference, postprocess per stage (median, p90), cold start and memory."""
    if video is not None:
        from segtool.runtime import Segmenter
        from segtool.runtime.benchmark import bench_video

        seg = Segmenter(model, device=device, warn_random=False)
        with err.status(f"timing {frames} frames twice"):
            r = bench_video(seg, video, frames, parse_size(size), None)
        r |= {"provider": seg.provider, "weights": seg.meta.weights_label}
        if json_out:
            print(json.dumps(r, indent=2))
        else:
            out.print(f"{r['video']}: {r['frames']} frames {r['frame_size'][0]}x{r['frame_size'][1]}, inference at "
                      f"{r['inference_size'][0]}x{r['inference_size'][1]} on {r['provider']}: pure inference "
                      f"{r['pure_inference_fps']:.3f} FPS, end-to-end (decode, infer, overlay mp4) "
                      f"{r['end_to_end_fps']:.3f} FPS, ratio {r['ratio']:.3f}", markup=False)
        return
    with tempfile.TemporaryDirectory(prefix="segtool-bench-inputs-") as tmp:
        size_list = [parse_size(s) for s in (sizes or "").split(",") if s.strip()]
        if not size_list and not image:
            size_list = [(520, 520), (1280, 853)]
        inputs = [sample_file(h, w, Path(tmp)) for w, h in size_list] + list(image or [])
        with err.status("timing ONNX Runtime"):
            report = {"runtime": bench_runtime(model, inputs, device, runs, warmup, cache)}
        if torch_too:
            with err.status("timing PyTorch eager (separate process)"):
                rt = report["runtime"]
                torch_device = "cuda" if rt["provider"] != "CPUExecutionProvider" else "cpu"
                # Same architecture; seeded weights (timing does not depend on the weights' values).
                report["pytorch"] = run_torch(rt["model"], rt["weights_record"].get("seed", 0), inputs, runs, warmup,
                                              torch_device)
        if matmul:
            with err.status("measuring the fp32 matmul rate"):
                report["matmul"] = matmul_gflops()
    if json_out:
        print(json.dumps(report, indent=2))
        return
    rt, pt = report["runtime"], report.get("pytorch")
    out.print(f"model {model} ({rt['precision']}, output {rt['output']}, {rt['weights']}) on {rt['provider']}, "
              f"session created in {rt['session_create_s']:.2f} s", markup=False)
    for k, r in enumerate(rt["results"]):
        t = pt["results"][k] if pt else None
        out.print(stage_table(r, t))
        pre_post = r["preprocess"]["median_ms"] + r["postprocess"]["median_ms"]
        lines = [f"images/s {r['images_per_s']:.3f}",
                 f"pre+post {pre_post / r['total']['median_ms']:.1%} of end-to-end"]
        if "gflops_per_s" in r:
            lines.append(f"{r['gflop']:.0f} GFLOP per image, {r['gflops_per_s']:.1f} GFLOP/s achieved")
            if "matmul" in report:
                lines.append(f"{r['gflops_per_s'] / report['matmul']['median_gflops']:.2f}x the matmul rate")
        if t:
            lines.append(f"end-to-end ORT/PyTorch {r['total']['median_ms'] / t['total']['median_ms']:.2f}x")
        out.print("  " + "; ".join(lines), markup=False)
    if "matmul" in report:
        m = report["matmul"]
        out.print(f"numpy fp32 matmul {m['n']}x{m['n']}: {m['median_gflops']:.1f} GFLOP/s median, "
                  f"{m['best_gflops']:.1f} best", markup=False)
    memory = f"peak RSS: ONNX Runtime process {rt['peak_rss_mb']:.0f} MB"
    if pt:
        memory += f", PyTorch process {pt['peak_rss_mb']:.0f} MB (ratio {rt['peak_rss_mb'] / pt['peak_rss_mb']:.2f})"
    out.print(memory, markup=False)
