"""Signals shared by every long-running command: SIGINT, SIGTERM and SIGHUP stop a run at its next safe point.

:func:`handled` (installed by :func:`invprob.apps.cli.main`) turns the first of these signals into
:class:`Interrupted`, a ``KeyboardInterrupt``, so that the stages that already keep their partial result on
Ctrl-C (the MAP, the samplers, the EIT reconstruction) do the same on SIGTERM (what ``timeout``, SLURM, Kubernetes
and systemd send) and SIGHUP. While outputs are written (:func:`deferred`, used by
:func:`invprob.apps.io.staged_directory`) a first signal is only recorded: the folder is finished and published,
then the command exits with the signal's code. A second signal ends the process at once (``os._exit``), after
removing the staging folders not yet published, so no half-written output is left. Exit codes: 130 (INT), 143
(TERM), 129 (HUP).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading

__all__ = ["Interrupted", "deferred", "describe", "exit_code", "handled", "received", "signal_name"]

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Interrupted(KeyboardInterrupt):
    """The first SIGINT/SIGTERM/SIGHUP of a run (a KeyboardInterrupt, so Ctrl-C paths handle it)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(signal_name(signum))


#: Staging folders of this process not yet published (:func:`invprob.apps.io.staged_directory` registers them): a
#: second signal removes them before the process exits.
ACTIVE_STAGING: set = set()


class _State:
    received: int | None = None
    deferring: int = 0


_STATE = _State()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe(signum: int) -> str:
    """``"Ctrl-C (SIGINT)"``, ``"SIGTERM"``, ...: how a message names the signal."""
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal_name(signum)


def received() -> int | None:
    """The signal this run received (None: none)."""
    return _STATE.received


def exit_code(default: int = 130) -> int:
    """``128 + signum`` of the signal received, else ``default``."""
    return 128 + _STATE.received if _STATE.received is not None else default


def _handler(signum, frame):
    if _STATE.received is not None:  # the second signal: stop now, leaving no staging folder behind
        for tmp in list(ACTIVE_STAGING):
            shutil.rmtree(tmp, ignore_errors=True)
        os._exit(128 + signum)
    _STATE.received = signum
    if _STATE.deferring:
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def handled():
    """Install the handlers for the block (main thread only; elsewhere a no-op) and reset the state after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _STATE.received, _STATE.deferring = None, 0
    old = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _STATE.deferring = 0


@contextlib.contextmanager
def deferred():
    """Record, do not raise, a first signal during the block (the caller checks :func:`received` after it)."""
    _STATE.deferring += 1
    try:
        yield
    finally:
        _STATE.deferring -= 1
