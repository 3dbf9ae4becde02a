"""Plain-text renderings of results that several lines describe: bench and compare reports."""

from __future__ import annotations

from .console import out, say
from .tables import stage_table


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


def print_compare(r: dict) -> None:
    if r["max_abs_logit_diff"] is None:
        logits = "max |logit diff| n/a (a labels-output graph or different resolutions)"
    else:
        logits = f"max |logit diff| {r['max_abs_logit_diff']:.4g}, mean {r['mean_abs_logit_diff']:.4g}"
    say(
        f"A {r['a']} ({r['a_precision']}) vs B {r['b']} ({r['b_precision']}) on {r['images']} image(s), {r['provider']}"
    )
    say(f"  pixel agreement {100 * r['pixel_agreement']:.3f}%, mIoU of B vs A {100 * r['miou_b_vs_a']:.2f}%, " + logits)
    ratio = r["a_inference_ms_median"] / r["b_inference_ms_median"]
    say(
        f"  inference median: A {r['a_inference_ms_median']:.1f} ms, B {r['b_inference_ms_median']:.1f} ms "
        f"(B is {ratio:.2f}x as fast as A)"
    )
