#!/usr/bin/env bash
# int8 against its agreement target on stand-in checkpoints (no trained weights can be had here):
# fcn_resnet50 with measured BatchNorm statistics and 40 Adam steps towards colour labels (so its
# logits have margins, as trained ones do; segtool.export.checkpoints), seeds 1 and 2, each as it is
# and with one early channel rescaled 300x (the same function; the outlier that breaks int8 in
# practice). Each is exported with --int8 --force against the default 99% target, calibrated on
# frames of walk.mp4; the record of every try is printed from the file's metadata. Then
# `segtool compare` runs the fp32 export and the int8 one on street.jpg (never calibrated on) in one
# process: their pixel agreement there and int8's speed-up with its exclusions in place.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-bench-out}
mkdir -p "$OUT/int8"
for seed in 1 2; do
    for outlier in 0 300; do
        name="fcn_s${seed}_o${outlier}"
        python -m segtool.export.checkpoints fcn_resnet50 "$seed" "$OUT/int8/$name.pth" --train-steps 40 \
            --outlier "$outlier" > /dev/null
        segtool export --weights "$OUT/int8/$name.pth" --output "$OUT/int8/${name}_fp32.onnx" > /dev/null 2>&1
        segtool export --weights "$OUT/int8/$name.pth" --int8 --force --calibration "$DATA/walk.mp4" \
            --output "$OUT/int8/$name.onnx" > "$OUT/int8/$name.txt" 2>&1
        python - "$name" "$OUT/int8/$name.onnx" <<'PY'
import json, sys
from segtool.runtime import Segmenter
v = Segmenter(sys.argv[2], device="cpu", warn_random=False).meta.extra["variant"]
keys = ("agreement_before", "agreement", "fp32_tensors", "excluded_nodes", "history", "speedup_vs_fp32", "split")
print(sys.argv[1], json.dumps({k: v[k] for k in keys}))
PY
        segtool compare "$OUT/int8/${name}_fp32.onnx" "$OUT/int8/$name.onnx" --images "$DATA/street.jpg" --device cpu \
            2>&1
    done
done
