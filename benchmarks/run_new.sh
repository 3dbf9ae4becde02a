#!/usr/bin/env bash
# The figures added with the library core, reliability, serve, scale-out and zoo work, in one run.
# Needs segtool[export,serve,ray,test] and ../shared/data/{street.jpg,walk.mp4}; writes $OUT/*.
# (benchmarks/zoo.sh makes the models/*_random*.onnx files it uses.)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-bench-out}
M=models/fcn_resnet50_random.onnx
mkdir -p "$OUT"
run() { local name=$1; shift; echo "\$ $*" | tee "$OUT/$name.txt"; "$@" 2>&1 | tee -a "$OUT/$name.txt"; }
run png_size python benchmarks/png_size.py $M "$DATA/street.jpg"
run tiling python benchmarks/tiling_bench.py $M "$DATA/street.jpg" --tiles 512,768
run serve python benchmarks/serve_bench.py $M "$DATA/street.jpg" --max-size 512 --requests 12
run ray python benchmarks/ray_bench.py $M "$DATA/walk.mp4" --images 40 --max-size 320
run lraspp_walk segtool run "$DATA/walk.mp4" --model models/lraspp_mobilenet_v3_large_random.onnx --size 640x360 \
    --out "$OUT/walk-lraspp" --device cpu
