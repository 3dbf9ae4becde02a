#!/usr/bin/env bash
# Lint, format check, architecture contracts and type check, as CI runs them before the tests.
# The packages live in export/, runtime/, cli/, serve/ and scale/ but import each other as
# segtool.*: import-linter and mypy read them through a tree of links named that way
# (.typecheck/, git-ignored). mypy checks the oldest supported Python (pyproject.toml), tests too.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
rm -rf .typecheck && mkdir -p .typecheck/segtool
for pkg in export runtime cli serve scale; do ln -s "../../$pkg" ".typecheck/segtool/$pkg"; done
PYTHONPATH=.typecheck lint-imports
MYPYPATH=.typecheck mypy -p segtool.runtime -p segtool.export -p segtool.cli -p segtool.serve -p segtool.scale
MYPYPATH=.typecheck:tests mypy tests
