"""Result objects returned by the solvers.

Results are frozen dataclasses holding torch tensors; ``save(directory)`` writes ``result.npz`` (float arrays)
and ``info.json`` (everything else) atomically. Plotting lives in :mod:`invprob.apps`, not here.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["MAPResult", "PosteriorResult", "atomic_write_bytes", "atomic_write_json", "jsonable"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def jsonable(value: Any) -> Any:
    """Convert tensors, arrays, numpy scalars, paths and dataclasses to JSON-serialisable values."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 10_000 else f"<array shape={list(value.shape)}>"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return {k: jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(jsonable(obj), indent=2, sort_keys=True).encode())


def _save_npz(path: Path, arrays: dict[str, torch.Tensor | np.ndarray | None]) -> None:
    import io

    buf = io.BytesIO()
    clean = {}
    for k, v in arrays.items():
        if v is None:
            continue
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        clean[k] = np.asarray(v)
    np.savez_compressed(buf, **clean)
    atomic_write_bytes(path, buf.getvalue())


@dataclass(frozen=True)
class MAPResult:
    """A point estimate and how it was obtained.

    Attributes
    ----------
    x : torch.Tensor
        The estimate, same shape as the solver's iterate (``(1, C, H, W)`` for images).
    info : dict
        ``method``, ``iterations``, ``converged``, ``objective`` (history, list of floats), ``time_s``.
    """

    x: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        _save_npz(directory / "result.npz", {"map": self.x})
        atomic_write_json(directory / "info.json", self.info)
        return directory


@dataclass(frozen=True)
class PosteriorResult:
    """Posterior summaries produced by a sampler (or a learned reconstruction).

    Attributes
    ----------
    map : torch.Tensor or None
        A MAP estimate when one was computed (e.g. the sampler's initialisation), else ``None``.
    mean : torch.Tensor
        Posterior-mean estimate, shape ``(1, *event_shape)``.
    std : torch.Tensor
        Pixelwise (or per-cell) standard deviation, same shape as ``mean``.
    samples : torch.Tensor or None
        Thinned samples ``(S, *event_shape)`` when the caller asked for them.
    info : dict
        Iterations, wall time, seed, sampler config, versions, diagnostics, and ``uncertainty``: which
        estimator produced ``std`` (e.g. ``"particles"`` or ``"kernel-mixture"``) and how it was calibrated.
    """

    mean: torch.Tensor
    std: torch.Tensor
    map: torch.Tensor | None = None
    samples: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def credible_interval(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixelwise Gaussian credible interval ``mean +- z * std`` at ``level``."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
        return self.mean - z * self.std, self.mean + z * self.std

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``result.npz`` (map, mean, std, samples) and ``info.json`` into ``directory``."""
        directory = Path(directory)
        _save_npz(
            directory / "result.npz",
            {"map": self.map, "mean": self.mean, "std": self.std, "samples": self.samples},
        )
        atomic_write_json(directory / "info.json", self.info)
        return directory
