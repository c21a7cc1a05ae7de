"""FEM CEM against the independent Fourier-series solution on the homogeneous unit disk."""

from __future__ import annotations

import numpy as np
import pytest
from eit_fixtures import disk, eit

Z = 0.1


@pytest.fixture(scope="module")
def reference():
    lay = eit.ElectrodeLayout.uniform(16, 0.5)
    cur = eit.adjacent_currents(16)
    U, err = eit.disk_cem_potentials(cur, lay.angles, lay.widths, Z, n_modes=1024, return_error=True)
    return cur, U, err


def test_fourier_reference_converges(reference):
    cur, U, err = reference
    assert err < 1e-4  # change from 512 to 1024 modes
    np.testing.assert_allclose(U.sum(axis=1), 0, atol=1e-12)
    T = cur @ U.T  # reciprocity of the reference: (I_j . U_i) is symmetric
    assert np.abs(T - T.T).max() < 1e-10 * np.abs(T).max()


def test_fem_matches_fourier_with_observed_order(reference):
    cur, Uref, _ = reference
    hs, errs, cells = [0.1, 0.05, 0.027], [], []
    for h in hs:
        m = disk(h)
        op = eit.EIT(m, eit.Protocol(cur, eit.ground_measurements(16)), Z)
        U = op.potentials(np.ones(m.n_cells))
        errs.append(np.linalg.norm(U - Uref) / np.linalg.norm(Uref))
        cells.append(m.n_cells)
    assert np.all(np.diff(errs) < 0)
    assert 8000 < cells[-1] < 14000 and errs[-1] < 0.01
    order_h = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert order_h > 0.8, (errs, order_h)


def test_reference_rejects_bad_input():
    with pytest.raises(ValueError, match="contact_impedance"):
        eit.disk_cem_potentials(eit.adjacent_currents(4), [0, 1, 2, 3], [0.1] * 4, 0.0)
    with pytest.raises(ValueError, match="currents"):
        eit.disk_cem_potentials(eit.adjacent_currents(5), [0, 1, 2, 3], [0.1] * 4, 0.1)
