"""Tooling around the inference path: benchmarks, evaluation, comparison, diagnostics.

The inference path (model, files, jobs) never imports it; an import-linter contract checks that.
"""
