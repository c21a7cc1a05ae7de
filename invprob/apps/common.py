"""What every command of the CLI shares: the parser and help formatter, ``--device``, the output-folder check.

Each command module (:mod:`invprob.apps.cli`, :mod:`invprob.apps.eit_cli`, :mod:`invprob.apps.train_cli`) builds on
these, so a flag means the same thing and fails the same way everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from invprob.apps.errors import CLIError

__all__ = ["DEVICE_HELP", "MAX_ITERS", "MAX_PARTICLES", "OUTPUT_MARK", "SEED_MAX", "bounded_int", "capped_threads",
           "seed_type", "Formatter", "Parser", "check_out_dir", "check_free_space", "check_out_file",
           "check_writable_parent",
           "cli_device", "replaceable_output"]

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


#: Seeds go to numpy's and torch's generators: non-negative and below 2^63 for both.
SEED_MAX = 2**63 - 1
#: The most sampler iterations and particles a command accepts (a typo such as --iters 10000000 would otherwise
#: run for days: an explicit budget is not cut by --time-limit).
MAX_ITERS = 100_000
MAX_PARTICLES = 10_000


def bounded_int(name: str, lo: int, hi: int | None = None):
    """An argparse ``type`` for an integer option within ``[lo, hi]``: the message names the option and range."""
    def parse(text: str) -> int:
        try:
            v = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            rng = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"must be {rng}, got {v}")
        return v

    parse.__name__ = name.lstrip("-")
    return parse


def seed_type(name: str = "--seed"):
    return bounded_int(name, 0, SEED_MAX)


def capped_threads(threads: int | None) -> tuple[int | None, str | None]:
    """``--threads`` capped to the cores this process may use (``os.sched_getaffinity``), with a note when cut:
    more OpenMP threads than cores spin against each other (a 32x32 MAP with 32 threads on 2 cores did not finish
    in 120 s; 2 threads: 7 s)."""
    if threads is None:
        return None, None
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if threads > cores:
        return cores, f"--threads {threads} is more than the {cores} core(s) available: using {cores}"
    return threads, None


def cli_device(text: str):
    """``--device`` as a ``torch.device`` (:func:`invprob.devices.resolve_device`), or a one-line CLIError."""
    from invprob.devices import resolve_device

    try:
        return resolve_device(text)
    except ValueError as exc:
        raise CLIError(f"--device: {exc}") from None


#: Written into every output folder invprob publishes: what makes a folder replaceable by ``--force``.
OUTPUT_MARK = ".invprob-output.json"


def check_out_dir(out: Path, force: bool, *, inputs: tuple = ()) -> None:
    """Refuse (CLIError) an existing output without ``--force``, a non-folder output, an unwritable parent, and,
    with ``--force``, any folder that is not an invprob output folder (:func:`replaceable_output`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"output {out} exists and is not a folder; give a folder name for --out")
    if out.exists() and not force:
        raise CLIError(f"output folder {out} already exists; use --force to replace it")
    if out.exists():
        replaceable_output(out, inputs)
    check_writable_parent(out)


def check_out_file(out: Path, force: bool, *, inputs: tuple = ()) -> None:
    """Refuse an existing output file without ``--force``, a folder, or (even with ``--force``) an input."""
    out = Path(out)
    if out.is_dir():
        raise CLIError(f"output {out} is a folder; give a file name")
    for inp in inputs:
        if Path(inp).exists() and out.exists() and os.path.samefile(out, inp):
            raise CLIError(f"output {out} is the input {inp}; --force never overwrites an input")
    if out.exists() and not force:
        raise CLIError(f"output file {out} already exists; use --force to replace it")
    check_writable_parent(out)


def replaceable_output(out: Path, inputs: tuple = ()) -> None:
    """Raise a CLIError unless ``out`` is a folder that ``--force`` may replace: one invprob published (it holds
    :data:`OUTPUT_MARK`) with nothing else in it than what the mark lists, which is neither the current folder
    nor one of its parents, and which holds no input."""
    res = out.resolve()
    cwd = Path.cwd().resolve()
    if res == cwd or res in cwd.parents:
        raise CLIError(f"--out {out} is the current folder or one of its parents; --force will not replace it")
    for inp in inputs:
        if inp is None:
            continue
        ip = Path(inp).resolve()
        if res == ip or res in ip.parents:
            raise CLIError(f"--out {out} holds the input {inp}; --force will not replace it")
    mark = out / OUTPUT_MARK
    try:
        listed = set(json.loads(mark.read_text()).get("files", []))
    except (OSError, ValueError, AttributeError):
        raise CLIError(f"--out {out} is not an invprob output folder (no valid {OUTPUT_MARK}); --force only "
                       "replaces folders invprob wrote: choose another --out") from None
    foreign = sorted(p.name for p in out.iterdir() if p.name != OUTPUT_MARK and p.name not in listed)
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise CLIError(f"--out {out} holds files invprob did not write ({shown}); --force will not delete them: "
                       "choose another --out")


def check_free_space(out: Path, need_bytes: int) -> None:
    """Refuse (CLIError) before the long work when the output's file system has less room than the outputs need
    (estimated by the caller), rather than failing with ENOSPC after the computation."""
    import shutil

    probe = Path(out).resolve().parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        raise CLIError(f"not enough free space in {probe} for the outputs: about {need_bytes / 1e6:.1f} MB needed, "
                       f"{free / 1e6:.1f} MB free")


def check_writable_parent(out: Path) -> None:
    probe = out.resolve().parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise CLIError(f"cannot write into {probe}: permission denied")
