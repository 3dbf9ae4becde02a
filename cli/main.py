"""The `segtool` entry point: the typer app (every subcommand, `--version`, `-h`), and errors
turned into one line and an exit code.

Errors are typed (``segtool.runtime.errors``); ``EXIT_CODES`` maps each class to an exit code.
SIGTERM is raised as ``Terminated`` (a KeyboardInterrupt), so every cleanup path of Ctrl-C runs
for it too. Only bugs keep a traceback."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Annotated, Any

import typer
from typer.exceptions import TyperException

from segtool.runtime import errors as E

from . import (
    adopt_cmd,
    bench_cmd,
    bundle_cmd,
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
    tune_cmd,
)
from .common import INTERRUPTED, error_line, install_log_handler

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Export torchvision segmentation models to ONNX and run them without PyTorch.",
)  # fmt: skip


COMMANDS: dict[str, Callable[..., Any]] = {
    "export": export_cmd.export, "run": run_cmd.run, "info": info_cmd.info, "demo": demo_cmd.demo,
    "bench": bench_cmd.bench, "doctor": doctor_cmd.doctor, "eval": eval_cmd.eval_model,
    "compare": compare_cmd.compare, "serve": serve_cmd.serve, "triton": triton_cmd.triton,
    "models": models_cmd.models, "adopt": adopt_cmd.adopt, "bundle": bundle_cmd.bundle, "tune": tune_cmd.tune,
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


__all__ = ["EXIT_CODES", "app", "exit_code", "main"]


# The first class an error is an instance of gives its exit code.
EXIT_CODES = {E.UsageError: 2, E.InputError: 1, E.OutputError: 2, E.ModelError: 2, E.ParityError: 1}


def exit_code(exc: E.SegtoolError) -> int:
    return next((code for cls, code in EXIT_CODES.items() if isinstance(exc, cls)), 1)


def _terminate(signum, frame) -> None:
    raise E.Terminated()


def main() -> None:
    install_log_handler()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(standalone_mode=False)  # segtool, not click, decides what an interrupt prints
    except typer.Abort:
        sys.exit(1)
    except TyperException as exc:  # bad flags: one line, as for every other error
        context = getattr(exc, "ctx", None)
        hint = f" (see `{context.command_path} -h`)" if context is not None else ""
        error_line(getattr(exc, "format_message", exc.__str__)() + hint)
        sys.exit(getattr(exc, "exit_code", 2))
    except E.SegtoolError as exc:
        error_line(str(exc))
        sys.exit(exit_code(exc))
    except KeyboardInterrupt as exc:
        error_line("interrupted" + (" (SIGTERM)" if isinstance(exc, E.Terminated) else ""))
        sys.exit(INTERRUPTED[E.interrupt_name(exc)])
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
