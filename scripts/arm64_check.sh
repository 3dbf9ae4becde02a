#!/usr/bin/env bash
# segtool on an emulated 64-bit Arm CPU, rerunnable by anyone with root on a Debian/Ubuntu x86_64 box
# (apt-get install debootstrap qemu-user-static binfmt-support). docs/EDGE.md has what it printed.
#
#   scripts/arm64_check.sh [--root DIR] [--cache DIR] [--model FILE] [--cpus "max cortex-a72"] [--frames N]
#                          [--size WxH]   (defaults: --cache ~/.cache/segtool-arm64, --root CACHE/root, 3, 320x240)
#
# 1. a Debian bookworm arm64 root made with debootstrap (kept in --root and reused: make it once);
# 2. `segtool bundle MODEL --target linux-aarch64` on this host, installed in that root with the
#    network cut (unshare -n);
# 3. `segtool doctor` and `segtool run` on a picture and a few video frames in the root, under qemu-user
#    with each CPU of --cpus (qemu's default `max`; `cortex-a72` is the Raspberry Pi 4's core, Armv8.0:
#    no dot product, no fp16), and the same `segtool run` on this host;
# 4. the labels PNGs compared pixel by pixel: exit 1 where a CPU agrees with this host on < 99.9%.
#
# The model (unless --model names one) is lraspp_mobilenet_v3_large trained for two minutes on segtool's
# synthetic shapes task (segtool.export.synthetic_task; cached in --cache): its labels vary from pixel to
# pixel, where a random-weights model labels nearly every pixel the same (an agreement that says little);
# and qemu runs it in minutes (fcn_resnet50 is ~70x the work). The inputs are pictures of that task.
# The root sees a minimal /sys (the host's makes ONNX Runtime's CPU detection crash under qemu-user);
# ONNX Runtime then prints one "Unknown CPU vendor" warning, an artefact of emulation that a real
# board does not show.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/segtool-arm64
root= model= cpus="max cortex-a72" frames=3 size=320x240
while [ $# -gt 0 ]; do
    case $1 in
        --root) root=$2; shift 2 ;;
        --cache) cache=$2; shift 2 ;;
        --model) model=$(realpath "$2"); shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --frames) frames=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "arm64_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
root=${root:-$cache/root}
[ "$(id -u)" = 0 ] || { echo "arm64_check: needs root (debootstrap, chroot, mount, unshare)" >&2; exit 2; }
for tool in debootstrap qemu-aarch64-static unshare update-binfmts; do
    command -v "$tool" >/dev/null || { echo "arm64_check: $tool missing: apt-get install debootstrap qemu-user-static binfmt-support" >&2; exit 2; }
done
segtool=$repo/.venv/bin/segtool python=$repo/.venv/bin/python
[ -x "$segtool" ] || { echo "arm64_check: no $segtool: make the venv (README, Install)" >&2; exit 2; }
mkdir -p "$cache"
cache=$(realpath "$cache")
step() { echo "== $*"; }
seconds() { echo $(( $(date +%s) - $1 )); }

step "qemu-user for aarch64 binaries (binfmt_misc)"
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
qemu-aarch64-static --version | head -1

if [ ! -x "$root/usr/bin/python3" ]; then
    step "debootstrap bookworm arm64 into $root (once; a few minutes)"
    t=$(date +%s)
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv bookworm "$root" \
        http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
        || { tail -5 "$cache/debootstrap.log"; echo "arm64_check: debootstrap failed ($cache/debootstrap.log)" >&2; exit 1; }
    echo "root made in $(seconds "$t") s"
fi
# What ONNX Runtime's cpuinfo reads under /sys, and nothing else of the host's.
mkdir -p "$root/sys/devices/system/cpu"
cores=$(nproc)
echo "0-$((cores - 1))" >"$root/sys/devices/system/cpu/possible"
echo "0-$((cores - 1))" >"$root/sys/devices/system/cpu/present"

# In the root, with the network cut, /proc mounted, QEMU_CPU picking the emulated CPU.
in_root() {  # CPU COMMAND...
    local cpu=$1; shift
    QEMU_CPU=$cpu unshare -n -m /bin/sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' "$root" "$@"
}

if [ -z "$model" ]; then
    model=$cache/shapes.onnx
    if [ ! -f "$model" ]; then
        if [ ! -f "$cache/shapes.pth" ]; then
            step "train lraspp_mobilenet_v3_large on segtool's synthetic shapes task (once; about 2 min of a core)"
            "$python" - "$cache" <<'EOF'
import sys
from pathlib import Path

import torch

from segtool.export import synthetic_task as task

torch.save(task.train(), Path(sys.argv[1]) / "shapes.pth.partial")
EOF
            mv "$cache/shapes.pth.partial" "$cache/shapes.pth"
        fi
        "$python" -c "import sys; from pathlib import Path; from segtool.export import synthetic_task as t; t.write_task_files(Path(sys.argv[1]))" "$cache"
        step "segtool export the trained model on this host"
        "$segtool" export --model lraspp_mobilenet_v3_large --weights "$cache/shapes.pth" \
            --classes "$cache/classes.txt" --palette "$cache/palette.txt" --output "$model"
    fi
fi

step "inputs: a $size picture and a video of $frames frames of the shapes task, never seen in training"
inputs=$cache/inputs
mkdir -p "$inputs"
"$python" - "$inputs" "$size" "$frames" <<'EOF'
import sys
from pathlib import Path

import av
import cv2

from segtool.export import synthetic_task as task

inputs, (width, height), frames = Path(sys.argv[1]), map(int, sys.argv[2].split("x")), int(sys.argv[3])
picture, _ = task.held_out_picture(height, width)  # every class appears in it
cv2.imwrite(str(inputs / "picture.png"), picture)
with av.open(str(inputs / "video.mp4.partial"), "w", format="mp4") as out:
    stream = out.add_stream("libx264", rate=5, options={"crf": "18"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for image, _ in task.make_set(task.HELD_OUT_SEED + 1, frames, height, width):
        out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
    out.mux(stream.encode(None))
(inputs / "video.mp4.partial").replace(inputs / "video.mp4")
EOF

step "segtool bundle MODEL --target linux-aarch64 (this host, from the package index)"
rm -rf "$cache/bundle"
t=$(date +%s)
"$segtool" bundle "$model" --target linux-aarch64 --output "$cache/bundle"
echo "bundle made in $(seconds "$t") s ($(du -sh "$cache/bundle" | cut -f1))"

step "install.sh in the arm64 root, network cut (unshare -n)"
rm -rf "$root/opt/bundle" "$root/opt/segtool" "$root/opt/check"
cp -r "$cache/bundle" "$root/opt/bundle"
cp "$inputs/picture.png" "$root/opt/bundle/picture.png"
cp -L "$inputs/video.mp4" "$root/opt/bundle/video.mp4"
t=$(date +%s)
in_root max /bin/sh /opt/bundle/install.sh /opt/segtool
echo "installed in $(seconds "$t") s (emulated)"
model_in_root=/opt/segtool/models/$(basename "$model")
[ -f "$root$model_in_root" ] || { echo "arm64_check: install.sh put no $model_in_root in the root" >&2; exit 1; }

run_args=(--device cpu --save labels)
video_args=(--max-frames "$frames" --frames)
step "segtool run on this host ($(uname -m))"
rm -rf "$cache/out" && mkdir -p "$cache/out"
t=$(date +%s)
"$segtool" run "$inputs/picture.png" -m "$model" -o "$cache/out/host/picture" "${run_args[@]}"
"$segtool" run "$inputs/video.mp4" -m "$model" -o "$cache/out/host/video" "${run_args[@]}" "${video_args[@]}"
echo "host: $(seconds "$t") s"

status=0
for cpu in $cpus; do
    step "QEMU_CPU=$cpu: segtool doctor"
    in_root "$cpu" /opt/segtool/bin/segtool doctor || { echo "doctor exited $? under $cpu"; status=1; }
    step "QEMU_CPU=$cpu: segtool run (picture, then $frames video frames)"
    t=$(date +%s)
    in_root "$cpu" /opt/segtool/bin/segtool run /opt/bundle/picture.png -m "$model_in_root" \
        -o "/opt/check/$cpu/picture" "${run_args[@]}"
    in_root "$cpu" /opt/segtool/bin/segtool run /opt/bundle/video.mp4 -m "$model_in_root" \
        -o "/opt/check/$cpu/video" "${run_args[@]}" "${video_args[@]}"
    echo "$cpu: $(seconds "$t") s (emulated)"
    cp -r "$root/opt/check/$cpu" "$cache/out/$cpu"
    step "QEMU_CPU=$cpu: labels against this host's"
    "$python" - "$cache/out/host" "$cache/out/$cpu" "$cpu" <<'EOF' || status=1
import sys
from pathlib import Path

import numpy as np
from PIL import Image

host, arm, cpu = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
files = sorted(p.relative_to(host) for p in host.rglob("*.png") if "label" in p.name)
same = total = 0
counts = np.zeros(256, np.int64)
for rel in files:
    if not (arm / rel).is_file():
        sys.exit(f"{cpu}: {rel} missing from the Arm run")
    a, b = np.asarray(Image.open(host / rel)), np.asarray(Image.open(arm / rel))
    if a.shape != b.shape:
        sys.exit(f"{cpu}: {rel} is {b.shape} on Arm, {a.shape} here")
    same, total = same + int((a == b).sum()), total + a.size
    counts += np.bincount(a.ravel(), minlength=256)
    print(f"  {rel}: {100 * (a == b).mean():.3f}% of {a.size} pixels agree")
if not files:
    sys.exit(f"{cpu}: no labels PNGs written on this host")
share = 100 * same / total
classes = ", ".join(f"{k}: {100 * n / total:.1f}%" for k, n in enumerate(counts) if n)
print(f"  this host's labels, share of pixels by class: {classes}")
print(f"{cpu}: {share:.3f}% of {total} pixels agree with {len(files)} labels PNGs of this host")
sys.exit(0 if share >= 99.9 else 1)
EOF
done
[ $status = 0 ] && echo "arm64_check: passed under $cpus" || echo "arm64_check: FAILED (see above)"
exit $status
