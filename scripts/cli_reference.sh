#!/usr/bin/env bash
# Rewrite docs/CLI.md from the commands' --help, keeping the hand-written notes in it.
# tests/test_cli_reference.py fails until this runs after a command, flag or help text changes.
# Needs segtool importable (the activated virtualenv); `--check` instead of `--write` only compares.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m segtool.cli.reference --write docs/CLI.md
