"""The command-line error type: one clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "CLIError"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A user error (bad input, bad option, refused overwrite) reported as ``invprob: error: <message>``.

    Raised by the application code (:mod:`invprob.apps`) before anything is written; :func:`invprob.apps.cli.main`
    prints the message on one line and returns exit code 2.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
