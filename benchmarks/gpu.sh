#!/usr/bin/env bash
# The GPU figures in one run, for the day a GPU is lent (designed for < 8 minutes on an H100/H200):
# nvidia-smi and the providers that really start; fcn_resnet50 and lraspp exported (random weights,
# fp32 and fp16); parity of CUDA and TensorRT against PyTorch CUDA on three shapes; fp32/fp16 latency
# at 520x520 and 1920x1080 on CUDA, TensorRT (engine cache) and PyTorch CUDA eager; end-to-end video
# FPS with NVENC; `segtool serve` on CUDA at concurrency 1 and 8; fp16 agreement re-checked on the GPU (the
# export's fp16 gate runs on the CPU: weights rounding only); TensorRT with an explicit profile and its engine
# and timing caches (cold build vs cached open); CUDA IO binding (output on the device) vs session.run;
# what --device auto chooses. Writes a Markdown report to
# $OUT/gpu-bench.md when OUT is set, else ./gpu-bench.md. On a machine without an NVIDIA GPU it says
# so in one line and exits 0.
#
#   bash benchmarks/gpu.sh            # DATA=../shared/data by default (walk.mp4, street.jpg; generated if absent)
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu.sh: no NVIDIA GPU on this machine (nvidia-smi finds none): nothing to measure"
    exit 0
fi
started=$SECONDS
DATA=${DATA:-../shared/data}
PYTHON=${PYTHON:-python}
REPORT=${OUT:+$OUT/gpu-bench.md}
REPORT=${REPORT:-./gpu-bench.md}
MODELS=${MODELS:-$(mktemp -d /tmp/segtool-gpu-XXXXXX)}
mkdir -p "$(dirname "$REPORT")"
step() { echo "== $* ($((SECONDS - started)) s)"; }

step "install: segtool with the CUDA libraries and the exporter (PyTorch)"
if ! "$PYTHON" -m pip install -q '.[cuda,export]' 2>&1 | tail -3; then
    echo "gpu.sh: pip install failed (offline?): going on with what is installed"
fi
{
    echo "# segtool on GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPU cores, $("$PYTHON" -c 'import onnxruntime as o; print("onnxruntime", o.__version__)' 2>&1),"\
         "$("$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' 2>&1),"\
         "$("$PYTHON" -c 'import av; print("PyAV", av.__version__)' 2>&1). All models hold random weights (seed 0)."
    echo
    echo '```'
    nvidia-smi
    echo '```'
} > "$REPORT"
cat "$REPORT"

step "export fcn_resnet50 and lraspp, fp32 and fp16 (in parallel)"
segtool export --weights random --output "$MODELS/fcn.onnx" > "$MODELS/fcn.log" 2>&1 &
segtool export --weights random --fp16 --calibration-count 3 --output "$MODELS/fcn_fp16.onnx" > "$MODELS/fcn_fp16.log" 2>&1 &
segtool export --model lraspp_mobilenet_v3_large --weights random --output "$MODELS/lraspp.onnx" > "$MODELS/lraspp.log" 2>&1 &
segtool export --model lraspp_mobilenet_v3_large --weights random --fp16 --calibration-count 3 \
    --output "$MODELS/lraspp_fp16.onnx" > "$MODELS/lraspp_fp16.log" 2>&1 &
segtool export --weights random --labels-output --no-verify --output "$MODELS/fcn_labels.onnx" \
    > "$MODELS/fcn_labels.log" 2>&1 &
wait
for name in fcn fcn_fp16 lraspp lraspp_fp16 fcn_labels; do
    [ -f "$MODELS/$name.onnx" ] || { echo "export of $name failed:"; tail -3 "$MODELS/$name.log"; } | tee -a "$REPORT"
done
[ -f "$MODELS/fcn.onnx" ] || { echo "gpu.sh: fcn_resnet50 did not export: see $MODELS/fcn.log"; exit 1; }

section() {
    step "$1"
    timeout "${2:-300}" "$PYTHON" benchmarks/gpu_bench.py "$1" --report "$REPORT" --models "$MODELS" --data "$DATA" \
        || echo "gpu.sh: section $1 did not finish (status $?)" | tee -a "$REPORT"
}
section providers 120
section parity 150
section latency 270
step "segtool bench (fcn_resnet50, CUDA: every stage, 520x520 and 1920x1080)"
{
    echo; echo '## `segtool bench` on CUDA, fcn_resnet50 (read, preprocess, inference, postprocess, write)'; echo
    echo '```'
    timeout 120 segtool bench "$MODELS/fcn.onnx" --device cuda --sizes 520x520,1920x1080 --runs 5 --no-matmul 2>&1 | tail -40
    echo '```'
} | tee -a "$REPORT"
section fp16 150
section tensorrt 300
section iobinding 120
section auto 120
section video 240
section serve 150
step "done in $((SECONDS - started)) s: $REPORT"
echo "Total: $((SECONDS - started)) s" >> "$REPORT"
