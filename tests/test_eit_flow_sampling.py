"""The EIT flow-sampling benchmark (``benchmarks/eit_flow_sampling.py``): its sparse-parametrisation potential has
the gradient it claims (Taylor test, and the autograd path the flows train through), its partition is a partition,
and a tiny run of the whole comparison returns finite errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from taylor import randn, taylor_ratios

pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")
pytestmark = pytest.mark.eit

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("eit_flow_sampling", BENCH / "eit_flow_sampling.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["eit_flow_sampling"] = mod  # its dataclasses look their module up while being made
    spec.loader.exec_module(mod)
    yield mod
    sys.path.remove(str(BENCH))
    sys.modules.pop("eit_flow_sampling", None)


@pytest.fixture(scope="module")
def problem(bench):
    return bench.build_problem(h=0.3, eps_rel=0.5)


def test_partition_covers_every_region(bench):
    rng = np.random.default_rng(0)
    r, a = np.sqrt(rng.uniform(0, 1, 4000)), rng.uniform(0, 2 * np.pi, 4000)
    region = bench.polar_partition(np.stack([r * np.cos(a), r * np.sin(a)], 1))
    assert region.min() == 0 and region.max() == 15 and len(np.unique(region)) == 16
    assert np.all(region[r < 0.35] == 0)
    with pytest.raises(ValueError, match="no cell"):
        bench.polar_partition(np.array([[0.0, 0.0], [0.5, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        bench.polar_partition(np.zeros((3, 3)))


def test_potential_gradient_passes_taylor(problem):
    pot = problem.pot
    assert pot.dim == 16 and int((pot.shift != 0).sum()) >= 1  # the inclusions' regions are recentred
    z, v = randn((3, pot.dim), 1), randn((3, pot.dim), 2)

    def f(x):
        return pot.value_and_grad(x)[0]

    def g(x):
        return pot.value_and_grad(x)[1]

    ratios, rem = taylor_ratios(f, g, z, v, h0=0.5)
    assert torch.all((ratios[1:] > 3.5) & (ratios[1:] < 4.5)), ratios
    # the data part alone is that of EITPosterior chained through B
    _, _, gd = pot.value_and_grad(z)
    _, _, gtheta = pot.post.value_and_grad(pot.theta(z))
    torch.testing.assert_close(gd, pot.scale * gtheta @ pot.B)
    # the autograd path used by train_generative gives the same gradient, in float32 too
    x = z.clone().float().reshape(1, 3, pot.dim).requires_grad_(True)
    (gx,) = torch.autograd.grad(pot.log_prob(x).sum(), x)
    torch.testing.assert_close(-gx.reshape(3, -1).double(), g(z), rtol=1e-4, atol=1e-3)


def test_bad_inputs_are_refused(bench, problem):
    pot = problem.pot
    with pytest.raises(ValueError, match="z must have shape"):
        pot.value_and_grad(torch.zeros(2, pot.dim + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="lambda_ must be a positive"):
        bench.SparseEITPotential(pot.post, pot.B, 0.0, -1.0, 1e-3)
    with pytest.raises(ValueError, match="basis must have shape"):
        bench.SparseEITPotential(pot.post, pot.B[:-1], 0.0, 1.0, 1e-3)


def test_map_is_a_stationary_point(bench, problem):
    z = bench.map_point(problem.pot)
    g = problem.pot.value_and_grad(z[None])[1]
    assert float(g.norm()) < 1e-6 * max(1.0, float(problem.pot.value_and_grad(torch.zeros_like(z)[None])[1].norm()))


def test_tiny_run_returns_finite_errors(bench):
    out = bench.run(quick=True, h=0.3, n_iter=5, ref_iter=40, verbose=False)
    rows = out["rows"]
    assert [r["method"] for r in rows][-2:] == ["RWPO flow, attention='l1'", "RWPO flow, attention='none'"]
    for r in rows:
        for k in ("mean_c", "std_c", "mean_theta", "std_theta"):
            assert np.isfinite(r[k]) and r[k] >= 0, (r["method"], k, r[k])
    text = bench.report(out, 1.0, 0)
    assert "Verdict" in text and "1.99e-2" not in text and "0.0199" in text
