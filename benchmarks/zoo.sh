#!/usr/bin/env bash
# Every model of `segtool models` side by side, in one run on one machine (random weights):
# fp32 and int8 latency at 520x520 and end to end on street.jpg (`segtool bench`), video FPS on
# walk.mp4 at 640x360 (`segtool bench --video`), peak RSS and file size. int8 is exported with
# --int8-min-agreement 0 (no exclusions: random weights cannot meet a real target; its agreement
# with fp32 on held-out images is still measured and printed). Results: $OUT/zoo-*.json
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-bench-out}
MODELS=${MODELS:-"lraspp_mobilenet_v3_large deeplabv3_mobilenet_v3_large fcn_resnet50 deeplabv3_resnet50 fcn_resnet101 deeplabv3_resnet101"}
mkdir -p "$OUT" models
for m in $MODELS; do
    segtool export --model "$m" --weights random --output "models/${m}_random.onnx" > "$OUT/zoo-export-$m.txt" 2>&1
    segtool export --model "$m" --weights random --int8 --int8-min-agreement 0 \
        --output "models/${m}_random_int8.onnx" > "$OUT/zoo-export-int8-$m.txt" 2>&1
    for v in "" _int8; do
        segtool bench "models/${m}_random${v}.onnx" --sizes 520x520 --image "$DATA/street.jpg" --runs 2 --warmup 1 \
            --device cpu --no-matmul --json > "$OUT/zoo-bench-$m$v.json"
        segtool bench "models/${m}_random${v}.onnx" --video "$DATA/walk.mp4" --frames 8 --size 640x360 \
            --device cpu --no-matmul --json > "$OUT/zoo-video-$m$v.json"
    done
done
python benchmarks/zoo_table.py "$OUT" $MODELS
