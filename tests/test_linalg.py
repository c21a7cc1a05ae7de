"""Batched conjugate gradients and the operator-norm estimators against dense linear algebra."""

import pytest
import torch

from invprob.linalg import conjugate_gradient, lanczos_max_eigenvalue, power_iteration

pytestmark = pytest.mark.usefixtures("single_thread")


def _spd(n: int, cond: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    return q @ torch.diag(ev) @ q.T


def test_cg_matches_dense_solve_per_batch_item(device):
    n = 40
    mats = [_spd(n, 1e3, s).to(device) for s in range(3)]
    g = torch.Generator().manual_seed(5)
    b = torch.randn(3, n, generator=g, dtype=torch.float64).to(device)

    def apply(x):  # a different matrix per batch item: items must converge independently
        return torch.stack([m @ xi for m, xi in zip(mats, x, strict=True)])

    x, info = conjugate_gradient(apply, b, tol=1e-12, max_iter=500)
    ref = torch.stack([torch.linalg.solve(m, bi) for m, bi in zip(mats, b, strict=True)])
    assert info["converged"]
    assert info["relative_residual"] <= 1e-12
    assert float((x - ref).norm() / ref.norm()) < 1e-9
    # in exact arithmetic CG finishes in n steps; a well-conditioned 40-dim problem needs no more than that
    assert info["iterations"] <= 3 * n


def test_cg_warm_start_and_zero_rhs():
    A = _spd(20, 50.0, 1)
    b = torch.randn(2, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = torch.linalg.solve(A, b.T).T
    x, info = conjugate_gradient(lambda v: v @ A.T, b, x0=ref.clone(), tol=1e-10)
    assert info["iterations"] == 0 and torch.allclose(x, ref)
    x0, info0 = conjugate_gradient(lambda v: v @ A.T, torch.zeros(2, 20, dtype=torch.float64))
    assert info0["converged"] and bool((x0 == 0).all())


def test_cg_reports_non_convergence():
    A = _spd(50, 1e6, 3)
    b = torch.randn(1, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    _, info = conjugate_gradient(lambda v: v @ A.T, b, tol=1e-14, max_iter=3)
    assert info["iterations"] == 3 and not info["converged"]


@pytest.mark.parametrize("estimator", [power_iteration, lanczos_max_eigenvalue])
def test_largest_eigenvalue_estimators(estimator):
    A = _spd(30, 10.0, 7)  # well separated top eigenvalues: both methods converge
    lam = estimator(lambda v: v @ A.T, (30,), max_iter=2000, tol=1e-14)
    ref = float(torch.linalg.eigvalsh(A)[-1])
    assert abs(lam - ref) <= 1e-8 * ref


def test_lanczos_on_clustered_spectrum_beats_power_iteration():
    # eigenvalues clustered at the top (like a blur's normal operator): Lanczos converges, power iteration stalls
    n = 400
    g = torch.Generator().manual_seed(0)
    ev = 1.0 - torch.linspace(0, 1, n, dtype=torch.float64) * 0.999
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = q @ torch.diag(ev) @ q.T
    lam = lanczos_max_eigenvalue(lambda v: v @ A.T, (n,))
    assert lam <= 1.0 + 1e-12
    assert abs(lam - 1.0) <= 1e-10
    lam_power = power_iteration(lambda v: v @ A.T, (n,))  # the default 100 iterations
    assert abs(lam_power - 1.0) > 100 * abs(lam - 1.0)
