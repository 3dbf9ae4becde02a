"""The typer application: every subcommand, `--version`, `-h`."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Annotated, Any

import typer

from . import (
    bench_cmd,
    compare_cmd,
    demo_cmd,
    doctor_cmd,
    eval_cmd,
    export_cmd,
    info_cmd,
    models_cmd,
    run_cmd,
    serve_cmd,
    triton_cmd,
)

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Export torchvision segmentation models to ONNX and run them without PyTorch.",
)  # fmt: skip
COMMANDS: dict[str, Callable[..., Any]] = {
    "export": export_cmd.export, "run": run_cmd.run, "info": info_cmd.info, "demo": demo_cmd.demo,
    "bench": bench_cmd.bench, "doctor": doctor_cmd.doctor, "eval": eval_cmd.eval_model,
    "compare": compare_cmd.compare, "serve": serve_cmd.serve, "triton": triton_cmd.triton,
    "models": models_cmd.models,
}  # fmt: skip
for name, command in COMMANDS.items():
    app.command(name)(command)


def _version(value: bool) -> None:
    if value:
        print(f"segtool {metadata.version('segtool')}")
        raise typer.Exit()


VersionFlag = Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")]


@app.callback()
def _root(version: VersionFlag = False) -> None:
    """Export torchvision segmentation models to ONNX and run them without PyTorch."""
