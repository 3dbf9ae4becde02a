"""The `segtool` command: one typer app, one module per subcommand.

User errors (``SegtoolError``) end as one line on stderr with their exit code; only bugs
keep a traceback.
"""

from __future__ import annotations

import sys

import typer

from segtool.runtime.errors import SegtoolError

from . import bench_cmd, compare_cmd, demo_cmd, doctor_cmd, eval_cmd, export_cmd, info_cmd, run_cmd
from .console import error_line

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export torchvision segmentation models to ONNX and run them without PyTorch.")
app.command("export")(export_cmd.export)
app.command("run")(run_cmd.run)
app.command("info")(info_cmd.info)
app.command("demo")(demo_cmd.demo)
app.command("bench")(bench_cmd.bench)
app.command("doctor")(doctor_cmd.doctor)
app.command("eval")(eval_cmd.eval_model)
app.command("compare")(compare_cmd.compare)


def main() -> None:
    try:
        app()
    except SegtoolError as exc:
        error_line(str(exc))
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
