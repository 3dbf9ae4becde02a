"""Markdown table of benchmarks/zoo.sh's results: python benchmarks/zoo_table.py OUT MODEL..."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    out, models = Path(sys.argv[1]), sys.argv[2:]
    print(
        "| model | fp32 ms @520 | int8 ms @520 | int8 speed-up | street.jpg e2e fp32 / int8 s | video FPS "
        "640x360 fp32 / int8 | peak RSS fp32 / int8 MB | file fp32 / int8 MB | int8 agreement (held-out) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for m in models:
        fp32, int8 = (json.loads((out / f"zoo-bench-{m}{v}.json").read_text())["runtime"] for v in ("", "_int8"))
        video = [json.loads((out / f"zoo-video-{m}{v}.json").read_text())["videos"][0] for v in ("", "_int8")]
        small = [r["results"][0]["inference"]["median_ms"] for r in (fp32, int8)]
        street = [r["results"][1]["total"]["median_ms"] / 1000 for r in (fp32, int8)]
        sizes = [Path(f"models/{m}_random{v}.onnx").stat().st_size / 1e6 for v in ("", "_int8")]
        text = (out / f"zoo-export-int8-{m}.txt").read_text()
        record = next((line for line in text.splitlines() if line.startswith("int8 agreement")), "?")
        agreement = record.split()[2] if record != "?" else "?"
        cells = [
            m,
            f"{small[0]:.0f}",
            f"{small[1]:.0f}",
            f"{small[0] / small[1]:.2f}x",
            f"{street[0]:.2f} / {street[1]:.2f}",
            f"{video[0]['end_to_end_fps']:.2f} / {video[1]['end_to_end_fps']:.2f}",
            f"{fp32['peak_rss_mb']:.0f} / {int8['peak_rss_mb']:.0f}",
            f"{sizes[0]:.1f} / {sizes[1]:.1f}",
            agreement,
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
