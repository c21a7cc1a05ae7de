"""Injection/measurement patterns and protocols."""

from __future__ import annotations

import numpy as np
import pytest
from eit_fixtures import eit


def test_skip_patterns():
    c = eit.skip_currents(16, 2)
    assert c.shape == (16, 16) and np.allclose(c.sum(1), 0)
    assert c[0, 0] == 1 and c[0, 3] == -1
    np.testing.assert_array_equal(eit.adjacent_currents(16), eit.skip_currents(16, 0))
    assert eit.opposite_currents(16)[0, 8] == -1
    a = eit.all_against_one_currents(16)
    assert a.shape == (15, 16) and np.linalg.matrix_rank(a) == 15
    assert np.allclose(eit.adjacent_measurements(8).sum(1), 0)


def test_pyeit_protocol_matches_pyeit():
    protocol = pytest.importorskip("pyeit.eit.protocol")
    ours = eit.pyeit_protocol(16)
    theirs = protocol.create(16, dist_exc=1, step_meas=1, parser_meas="std")
    assert ours.n_meas == 208 == theirs.n_exc * theirs.n_meas
    U = np.random.default_rng(0).normal(size=(16, 16))  # potentials, one row per injection
    ref = np.concatenate([U[i, mp[:, 0]] - U[i, mp[:, 1]] for i, mp in enumerate(theirs.meas_mat)])
    np.testing.assert_allclose(ours.measure(U), ref)
    ex = np.zeros((16, 16))
    ex[np.arange(16), theirs.ex_mat[:, 0]] = 1
    ex[np.arange(16), theirs.ex_mat[:, 1]] = -1
    np.testing.assert_array_equal(ours.currents, ex)


def test_protocol_validation():
    with pytest.raises(ValueError, match="sum to zero"):
        eit.Protocol(np.eye(4), eit.adjacent_measurements(4))
    with pytest.raises(ValueError, match="measurements"):
        eit.Protocol(eit.adjacent_currents(4), np.ones((3, 5)))
    with pytest.raises(ValueError, match="keep"):
        eit.Protocol(eit.adjacent_currents(4), eit.adjacent_measurements(4), np.ones((4, 3), bool))
    with pytest.raises(ValueError, match="skip"):
        eit.skip_currents(8, 7)
    with pytest.raises(ValueError, match="injection"):
        eit.make_protocol(8, "bogus")
    p = eit.make_protocol(8, "opposite", "ground")
    assert p.n_meas == 64
