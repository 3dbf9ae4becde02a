#!/usr/bin/env bash
# Quickstart, main job: a virtualenv with segtool[export], then `segtool demo`: export fcn_resnet50
# (pretrained when it can be downloaded; loudly random otherwise) and segment a sample image.
# Extra arguments go to `segtool demo` (for example an image path).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
.venv/bin/pip install -q '.[export]'
exec .venv/bin/segtool demo "$@"
