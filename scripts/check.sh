#!/usr/bin/env bash
# Lint, format check and type check, as CI runs them before the tests. The packages live in
# export/, runtime/ and cli/ but import each other as segtool.*: mypy reads them through a tree
# of links named that way (.typecheck/, git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
rm -rf .typecheck && mkdir -p .typecheck/segtool
for pkg in export runtime cli serve scale; do ln -s "../../$pkg" ".typecheck/segtool/$pkg"; done
MYPYPATH=.typecheck mypy -p segtool.runtime -p segtool.export -p segtool.cli -p segtool.serve -p segtool.scale
