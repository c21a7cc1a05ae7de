"""What every command of the CLI shares: the parser and help formatter, ``--device``, the output-folder check.

Each command module (:mod:`invprob.apps.cli`, :mod:`invprob.apps.eit_cli`, :mod:`invprob.apps.train_cli`) builds on
these, so a flag means the same thing and fails the same way everywhere.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from invprob.apps.errors import CLIError

__all__ = ["DEVICE_HELP", "Formatter", "Parser", "check_out_dir", "cli_device"]

DEVICE_HELP = "auto, cpu, cuda or cuda:N (any device string torch accepts)"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``invprob deblur: error: ...``) instead of usage + error."""

    def error(self, message):  # noqa: D401 - argparse API
        raise CLIError(f"{message} (see '{self.prog} --help')")


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Raw epilogs (examples) and ``(default: X)`` only where there is a meaningful default."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def cli_device(text: str):
    """``--device`` as a ``torch.device`` (:func:`invprob.devices.resolve_device`), or a one-line CLIError."""
    from invprob.devices import resolve_device

    try:
        return resolve_device(text)
    except ValueError as exc:
        raise CLIError(f"--device: {exc}") from None


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an existing output without ``--force``, a non-folder output, or an unwritable parent (CLIError)."""
    out = Path(out)
    if out.exists() and not force:
        what = "folder" if out.is_dir() else "file"
        raise CLIError(f"output {what} {out} already exists; use --force to replace it")
    if out.exists() and not out.is_dir():
        raise CLIError(f"output {out} exists and is not a folder")
    probe = out.resolve().parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise CLIError(f"cannot write into {probe}: permission denied")
