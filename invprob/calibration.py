"""Where the calibration of an EIT uncertainty output was measured, read from package data shipped in the wheel.

Deblurring std maps no longer come from such a table: their ``calibration_status`` is the verdict of the run's
own convergence diagnostics (:mod:`invprob.solvers.samplers.diagnostics`).

Each problem has a file ``invprob/data/calibration/<problem>.json``::

    {"problem": "eit", "entries": [{"key": {"prior": "gaussian", "std": "laplace", "mode": "absolute"},
                                    "verdict": "measured", "where": "..."}]}

:func:`calibration_status` returns ``"<verdict>: <where>"`` for a configuration listed there (``verdict`` is
``"measured"`` when the benchmark found the std calibrated, ``"miscalibrated"`` when it measured it and found it
off, with the figures in ``where``) and ``"unmeasured"`` otherwise, so a result only claims a calibration that a
benchmark measured, and says so when the measurement failed.
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
    out = []
    for e in data["entries"]:
        verdict = str(e.get("verdict", "measured"))
        if verdict not in ("measured", "miscalibrated"):
            raise ValueError(f"calibration data {name}: verdict must be 'measured' or 'miscalibrated', got {verdict!r}")
        out.append((frozenset((k, str(v)) for k, v in e["key"].items()), f"{verdict}: {e['where']}"))
    return tuple(out)


def calibration_entries(problem: str) -> list[dict]:
    """The measured configurations of ``problem`` (``[{"key": {...}, "where": ...}]``); empty when none.

    Examples
    --------
    >>> any(e["key"]["prior"] == "gaussian" for e in calibration_entries("eit"))
    True
    """
    if not isinstance(problem, str) or not problem:
        raise ValueError(f"problem must be a non-empty string, got {problem!r}")
    return [{"key": dict(sorted(key)), "verdict": status.split(":", 1)[0], "where": status.split(": ", 1)[1]}
            for key, status in _load(problem)]


def calibration_status(problem: str, **key) -> str:
    """``"measured: <where and how>"`` or ``"miscalibrated: <figures>"`` when ``key`` names a configuration of
    ``problem`` that a benchmark measured, else ``"unmeasured"``.

    Examples
    --------
    >>> calibration_status("eit", prior="gaussian", std="laplace", mode="difference").startswith("measured")
    True
    >>> calibration_status("eit", prior="tv", std="laplace", mode="difference").split(":")[0]
    'miscalibrated'
    >>> calibration_status("eit", prior="gaussian", std="sampler", mode="absolute")
    'unmeasured'
    """
    if not isinstance(problem, str) or not problem:
        raise ValueError(f"problem must be a non-empty string, got {problem!r}")
    want = frozenset((k, str(v)) for k, v in key.items())
    for entry_key, status in _load(problem):
        if entry_key == want:
            return status
    return "unmeasured"
