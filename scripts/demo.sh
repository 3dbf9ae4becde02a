#!/usr/bin/env bash
# Quickstart, main job: a virtualenv with segtool[export], then `segtool demo`: export fcn_resnet50
# (pretrained when it can be downloaded; loudly random otherwise) and segment a sample image.
# The package is installed on the first run and again only when the code changed since.
# Extra arguments go to `segtool demo` (for example an image path).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
stamp=.venv/.segtool-installed
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml export runtime cli serve scale -newer "$stamp" -print -quit)" ]; then
    .venv/bin/pip install -q '.[export]'
    touch "$stamp"
fi
exec .venv/bin/segtool demo "$@"
