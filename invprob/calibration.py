"""Where the calibration of an uncertainty output was measured, read from package data shipped in the wheel.

Each problem has a file ``invprob/data/calibration/<problem>.json``::

    {"problem": "deblur", "entries": [{"key": {"method": "pbrwp", "prior": "tv", "boundary": "free"},
                                       "where": "..."}]}

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
    >>> any(e["key"]["method"] == "pbrwp" for e in calibration_entries("deblur"))
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
    >>> calibration_status("deblur", method="pbrwp", prior="tv", boundary="free").startswith("measured")
    True
    >>> calibration_status("deblur", method="ula", prior="l1", boundary="zero")
    'unmeasured'
    """
    if not isinstance(problem, str) or not problem:
        raise ValueError(f"problem must be a non-empty string, got {problem!r}")
    want = frozenset((k, str(v)) for k, v in key.items())
    for entry_key, where in _load(problem):
        if entry_key == want:
            return f"measured: {where}"
    return "unmeasured"
