"""Cached EIT meshes/operators shared by the tests/test_eit_*.py files (built once per session)."""

from __future__ import annotations

from functools import cache

import pytest

eit = pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")
KIT4_DIR = eit.kit4_data_dir()


@cache
def disk(h: float, n_electrodes: int = 16, coverage: float = 0.5):
    return eit.disk_mesh(1.0, eit.ElectrodeLayout.uniform(n_electrodes, coverage), h=h)


@cache
def small_disk():
    """About 230 cells, 8 electrodes: for gradcheck and Taylor tests."""
    return eit.disk_mesh(1.0, eit.ElectrodeLayout.uniform(8, 0.5), h=0.35, h_electrode=0.12)
