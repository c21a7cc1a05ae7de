"""Where the calibration of an EIT uncertainty output was measured, read from package data shipped in the wheel.

Deblurring std maps no longer come from such a table: their ``calibration_status`` is the verdict of the run's
own convergence diagnostics (:mod:`invprob.solvers.samplers.diagnostics`).

Each problem has a file ``invprob/data/calibration/<problem>.json``::

    {"problem": "eit", "entries": [{"key": {"prior": "gaussian", "std": "laplace"}, "where": "..."}]}

:func:`calibration_status` returns ``"measured: <where>"`` for a configuration listed there and ``"unmeasured"``
otherwise, so a result only claims a calibration that a benchmark measured.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

__all__ = ["calibration_entries", "calibration_status"]

_PACKAGE = "invprob.data.calibration"


@functools.cache
def _load(problem: str) -> tuple[tuple[frozenset, str], ...]:
    name = f"{problem}.json"
    try:
        text = resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return ()
    data = json.loads(text)
    if data.get("problem") != problem:
        raise ValueError(f"calibration data {name} is for problem {data.get('problem')!r}, not {problem!r}")
    return tuple((frozenset((k, str(v)) for k, v in e["key"].items()), str(e["where"])) for e in data["entries"])


def calibration_entries(problem: str) -> list[dict]:
    """The measured configurations of ``problem`` (``[{"key": {...}, "where": ...}]``); empty when none.

    Examples
    --------
    >>> any(e["key"]["prior"] == "gaussian" for e in calibration_entries("eit"))
    True
    """
    if not isinstance(problem, str) or not problem:
        raise ValueError(f"problem must be a non-empty string, got {problem!r}")
    return [{"key": dict(sorted(key)), "where": where} for key, where in _load(problem)]


def calibration_status(problem: str, **key) -> str:
    """``"measured: <where and how>"`` when ``key`` names a measured configuration of ``problem``, else
    ``"unmeasured"``.

    Examples
    --------
    >>> calibration_status("eit", prior="gaussian", std="laplace").startswith("measured")
    True
    >>> calibration_status("eit", prior="tv", std="sampler")
    'unmeasured'
    """
    if not isinstance(problem, str) or not problem:
        raise ValueError(f"problem must be a non-empty string, got {problem!r}")
    want = frozenset((k, str(v)) for k, v in key.items())
    for entry_key, where in _load(problem):
        if entry_key == want:
            return f"measured: {where}"
    return "unmeasured"
