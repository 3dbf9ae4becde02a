"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a single line on stderr and the exit code it carries; anything else
is a bug and keeps its traceback.
"""


class SegtoolError(Exception):
    """A user-facing error: bad input, missing file, unavailable device."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
