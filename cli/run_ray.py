"""`segtool run --ray ADDRESS`: the same job on a Ray cluster, with a progress bar on the driver."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from segtool.runtime import JobOptions
from segtool.runtime.errors import UsageError
from segtool.runtime.jobs import outputs_complete
from segtool.runtime.sources import Discovery

from .console import error_line, progress_bar, say

INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}


def run_on_ray(model: Path, discovery: Discovery, out_dir: Path, options: JobOptions, address: str, device: str,
               actors: int, threads: int, gpus: float, skip_existing: bool, quiet: bool, json_out: bool,
               ) -> None:  # fmt: skip
    try:
        from segtool.scale.ray_batch import connect, run_ray
    except ImportError as exc:
        raise UsageError(f"--ray needs {exc.name}: pip install 'segtool[ray]'") from None
    todo = [s for s in discovery.items if not (skip_existing and outputs_complete(s, out_dir, options))]
    existing = len(discovery.items) - len(todo)
    connect(address)
    with progress_bar(disable=quiet or json_out) as bar:
        task = bar.add_task(f"ray {address}", total=len(todo), rate="")
        failed = 0

        def on_row(row: dict) -> None:
            nonlocal failed
            failed += bool(row["error"])
            elapsed = bar.tasks[0].elapsed or 0.0
            done = bar.tasks[0].completed + 1
            bar.update(task, advance=1, rate=f"{failed} failed, {done / elapsed:.2f}/s" if elapsed else "")

        report = run_ray(model, todo, out_dir, options, device, actors, threads, gpus, on_row)
    report.existing = existing
    for failure in report.failures:
        error_line(failure["error"])
    head = f"interrupted ({report.interrupted}): " if report.interrupted else ""
    if json_out:
        print(json.dumps(report.as_dict() | {"manifest": str(out_dir / "manifest.parquet")}, indent=2))
    ok = len(report.rows) - len(report.failures) + existing
    say(f"{head}{len(discovery.items)} input(s): {ok} ok ({existing} already done), {len(report.failures)} failed, "
        f"on Ray ({address}, {actors} actor(s) x {threads} thread(s)) in {report.seconds:.1f} s -> "
        f"{out_dir}/manifest.parquet", to_stderr=json_out)  # fmt: skip
    if report.interrupted:
        raise typer.Exit(INTERRUPTED[report.interrupted])
    if report.failures:
        error_line(f"{len(report.failures)} of {len(discovery.items)} input(s) failed")
        raise typer.Exit(1)
