"""Cached EIT meshes/operators shared by the tests/test_eit_*.py files (built once per session)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

KIT4_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kit4"
if not KIT4_DIR.exists():  # the shared data live beside the repository checkout
    KIT4_DIR = Path("/work/shared/data/kit4")

eit = pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")


@cache
def disk(h: float, n_electrodes: int = 16, coverage: float = 0.5):
    return eit.disk_mesh(1.0, eit.ElectrodeLayout.uniform(n_electrodes, coverage), h=h)


@cache
def small_disk():
    """About 230 cells, 8 electrodes: for gradcheck and Taylor tests."""
    return eit.disk_mesh(1.0, eit.ElectrodeLayout.uniform(8, 0.5), h=0.35, h_electrode=0.12)
