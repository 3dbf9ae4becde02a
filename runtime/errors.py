"""segtool's error types: what went wrong, never how the process should exit.

Every user-facing failure is a ``SegtoolError`` subclass; the CLI maps each class to an exit
code (``segtool.cli.main.EXIT_CODES``) and prints one line. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class SegtoolError(Exception):
    """Base class: a failure the user can act on (bad input, missing file, unavailable device)."""


class UsageError(SegtoolError):
    """Flags or arguments that cannot work together or cannot be parsed."""


class InputError(SegtoolError):
    """One input (image, video, sample) cannot be used; a run over many inputs reports it and goes on."""


class OutOfMemory(InputError):
    """One input (or tile) was too large for the memory at hand; smaller tiles may still do."""


class OutputError(SegtoolError):
    """An output cannot be written (folder not writable, disk full, name taken by a directory)."""


class UnencodableSize(OutputError):
    """The video encoder refuses the pictures' size (too wide or too tall for the codec)."""


class ModelError(SegtoolError):
    """The model file is missing, unreadable, or its segtool metadata is broken."""


class DeviceError(ModelError):
    """The requested execution provider cannot be had on this machine."""


class WeightsError(ModelError):
    """Weights cannot be downloaded, read, or do not fit the architecture."""


class ParityError(SegtoolError):
    """The exported graph does not behave like the PyTorch model; carries the measured table."""

    def __init__(self, message: str, rows: list | None = None):
        super().__init__(message)
        self.rows = list(rows or [])


class ShapeMismatch(ParityError):
    """Two outputs that must be compared pixel by pixel differ in shape (e.g. ONNX vs PyTorch in the gate)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup path for an interrupt runs for it too."""


def interrupt_name(exc: KeyboardInterrupt) -> str:
    """ "SIGTERM" for ``Terminated``, "SIGINT" for Ctrl-C."""
    return "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
