#!/usr/bin/env bash
# Every figure in docs/BENCHMARKS.md, in one run on one machine. Needs segtool[export] installed,
# and ../shared/data/{street.jpg,walk.mp4} beside the checkout (or DATA=folder). Results: $OUT (bench-out/).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-bench-out}
mkdir -p "$OUT" models
M=models/fcn_resnet50_random
run() { local name=$1; shift; echo "\$ $*" | tee "$OUT/$name.txt"; "$@" 2>&1 | tee -a "$OUT/$name.txt"; }
run export_fp32 segtool export --weights random --output $M.onnx
run export_labels segtool export --weights random --labels-output --output ${M}_labels.onnx
run export_int8 segtool export --weights random --int8 --output ${M}_int8.onnx
run export_labels_int8 segtool export --weights random --int8 --labels-output --output ${M}_labels_int8.onnx
run bench_fp32 segtool bench $M.onnx --sizes 520x520 --image "$DATA/street.jpg" --torch --runs 5 --warmup 1 --device cpu
run bench_labels segtool bench ${M}_labels.onnx --sizes 520x520 --image "$DATA/street.jpg" --runs 5 --warmup 1 --device cpu
run bench_int8 segtool bench ${M}_int8.onnx --sizes 520x520 --image "$DATA/street.jpg" --torch --runs 5 --warmup 1 --device cpu
run bench_labels_int8 segtool bench ${M}_labels_int8.onnx --sizes 520x520 --image "$DATA/street.jpg" --runs 5 --warmup 1 --device cpu --no-matmul
run bench_video segtool bench $M.onnx --video "$DATA/walk.mp4" --frames 30 --size 640x360 --device cpu
run memory_sweep python benchmarks/memory_sweep.py $M.onnx
run compare_street segtool compare $M.onnx ${M}_int8.onnx --images "$DATA/street.jpg" --device cpu
run compare_walk segtool compare $M.onnx ${M}_int8.onnx --images "$DATA/walk.mp4" --limit 10 --max-size 640 --device cpu
