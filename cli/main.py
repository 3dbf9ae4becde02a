"""The `segtool` entry point: runs the typer app and turns errors into one line and an exit code.

Errors are typed (``segtool.runtime.errors``); ``EXIT_CODES`` maps each class to an exit code.
SIGTERM is raised as ``Terminated`` (a KeyboardInterrupt), so every cleanup path of Ctrl-C runs
for it too. Only bugs keep a traceback.
"""

from __future__ import annotations

import signal
import sys

import typer
from typer.exceptions import TyperException

from segtool.runtime import errors as E

from .app import app
from .console import error_line, install_log_handler

__all__ = ["EXIT_CODES", "app", "exit_code", "main"]

# The first class an error is an instance of gives its exit code.
EXIT_CODES = {E.UsageError: 2, E.InputError: 1, E.OutputError: 2, E.ModelError: 2, E.ParityError: 1}
INTERRUPTED = {E.Terminated: 143, KeyboardInterrupt: 130}


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
        sys.exit(INTERRUPTED.get(type(exc), 130))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
