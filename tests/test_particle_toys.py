"""The particle-sampler toy suite: the example scripts run and write their figures, the KL estimators are right on
cases with a known answer, the annulus is normalised and the public BRWP toys' gradients are right."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    """``examples/<name>.py`` as a module (examples are scripts, not a package)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def annulus():
    return _load("particle_annulus")


@pytest.fixture(scope="module")
def toys():
    return _load("brwp_toys")


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


# ------------------------------------------------------------------------------------------------ the scripts
@pytest.mark.slow
def test_annulus_example_runs_quick_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "ann"
    res = _run([str(EXAMPLES / "particle_annulus.py"), "--quick", "--out", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("particle_annulus_snapshots.png", "particle_annulus_kl.png"):
        assert (out / name).stat().st_size > 5000, name
    for method in ("PBRWP", "BRWP", "ULA", "MLA", "SVGD", "exact"):
        assert any(line.startswith(method) for line in res.stdout.splitlines()), res.stdout
    again = _run([str(EXAMPLES / "particle_annulus.py"), "--quick", "--out", str(out)], tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr


@pytest.mark.slow
def test_brwp_toys_example_runs_quick(tmp_path):
    out = tmp_path / "toys"
    res = _run([str(EXAMPLES / "brwp_toys.py"), "--quick", "--out", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "brwp_toys.png").stat().st_size > 5000
    for toy in ("gaussian5", "double_banana", "mixture"):
        assert f"\n{toy}:" in res.stdout, res.stdout
    assert "closed a=1" in res.stdout  # the variance table against the public closed form
    again = _run([str(EXAMPLES / "brwp_toys.py"), "--quick", "--out", str(out)], tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr


# ------------------------------------------------------------------------------------------------ estimators
def _gauss_logpdf(x: torch.Tensor, mean, sd: float) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=torch.float64)
    return -(x - m).square().sum(1) / (2 * sd**2) - math.log(2 * math.pi * sd**2)


def test_grid_kl_of_two_gaussians_matches_the_closed_form(annulus):
    grid = annulus.Grid((-8.0, -8.0), (8.0, 8.0), 0.05)
    nodes = grid.nodes()
    # KL(N(m1, s1^2 I) || N(m2, s2^2 I)) in 2-D = 2 log(s2/s1) + (2 s1^2 + |m1 - m2|^2) / (2 s2^2) - 1
    m1, s1, m2, s2 = (0.5, -1.0), 0.8, (0.0, 0.3), 1.3
    exact = 2 * math.log(s2 / s1) + (2 * s1**2 + 0.25 + 1.69) / (2 * s2**2) - 1
    got = annulus.kl_grid(_gauss_logpdf(nodes, m1, s1), _gauss_logpdf(nodes, m2, s2), grid.cell)
    assert got == pytest.approx(exact, rel=1e-6)
    assert annulus.kl_grid(_gauss_logpdf(nodes, m2, s2), _gauss_logpdf(nodes, m2, s2), grid.cell) == \
        pytest.approx(0.0, abs=1e-8)


def test_both_kde_kls_match_the_closed_form_for_a_one_point_kde(annulus):
    # the KDE of one particle x1 with bandwidth h is N(x1, h^2 I): its KL to N(0, s^2 I) is known
    x1, h, s = torch.tensor([[0.7, -0.4]], dtype=torch.float64), 0.6, 1.5
    exact = 2 * math.log(s / h) + (2 * h**2 + float(x1.square().sum())) / (2 * s**2) - 1
    grid = annulus.Grid((-8.0, -8.0), (8.0, 8.0), 0.05)
    log_p = _gauss_logpdf(grid.nodes(), (0.0, 0.0), s)
    assert annulus.kl_grid_kde(x1, log_p, grid, h=h) == pytest.approx(exact, rel=1e-4)
    mc = annulus.kl_monte_carlo(x1, lambda z: _gauss_logpdf(z, (0.0, 0.0), s), h=h, n_samples=40000, seed=3)
    assert mc == pytest.approx(exact, abs=0.02)


def test_kde_of_target_samples_gives_a_small_kl_and_a_wrong_cloud_a_large_one(annulus):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=gen, dtype=torch.float64)
    grid = annulus.Grid((-7.0, -7.0), (7.0, 7.0), 0.05)
    log_p = _gauss_logpdf(grid.nodes(), (0.0, 0.0), 1.0)
    small = annulus.kl_grid_kde(x, log_p, grid, h=0.3)
    wrong = annulus.kl_grid_kde(0.4 * x + 1.0, log_p, grid, h=0.3)
    assert small < 0.1
    assert wrong > 5 * small
    mc = annulus.kl_monte_carlo(x, lambda z: _gauss_logpdf(z, (0.0, 0.0), 1.0), h=0.3, n_samples=8000, seed=1)
    assert mc == pytest.approx(small, abs=0.03)  # the two estimators agree when the KDE lives inside the grid


# ------------------------------------------------------------------------------------------------ targets
def test_annulus_density_is_normalised_and_its_gradient_is_right(annulus):
    target = annulus.Annulus()
    fine = annulus.Grid((-9.5, -5.5), (9.5, 5.5), 0.025)  # a wider, finer grid than the one that normalised it
    mass = float(target.log_density(fine.nodes()).exp().sum()) * fine.cell
    assert mass == pytest.approx(1.0, abs=1e-4)
    # analytic: Z = int exp(-(||Dx|| - R)^2 / (2 S^2)) dx = (1 / det D) int_0^inf exp(-(r - R)^2 / (2 S^2)) 2 pi r dr
    r = torch.linspace(0, 10, 200001, dtype=torch.float64)
    radial = float((torch.exp(-(r - annulus.R) ** 2 / (2 * annulus.S**2)) * 2 * math.pi * r).sum() * (r[1] - r[0]))
    assert target.log_z == pytest.approx(math.log(radial / (annulus.D_DIAG[0] * annulus.D_DIAG[1])), abs=1e-6)
    _check_gradient(target, torch.tensor([[1.0, 0.5], [-3.0, 1.9], [4.2, -0.1], [0.3, -2.5]], dtype=torch.float64))


def _check_gradient(pot, x: torch.Tensor, eps: float = 1e-6) -> None:
    g = pot.grad(x)
    fd = torch.zeros_like(x)
    for k in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, k] = eps
        fd[:, k] = (pot.fn(x + e) - pot.fn(x - e)) / (2 * eps)
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-7)


def test_double_banana_and_mixture_gradients_match_finite_differences(toys):
    gen = torch.Generator().manual_seed(2)
    x = 3 * torch.randn(16, 2, generator=gen, dtype=torch.float64)
    _check_gradient(toys.DoubleBanana(), x)
    _check_gradient(toys.SymmetricMixture(), x)


def test_mixture_is_the_symmetric_gaussian_mixture(toys):
    # V = ||x - a||^2/2 - log(1 + exp(-2 a.x)) is -log(N(a, I) + N(-a, I)) up to a constant
    a = torch.tensor([0.5, 0.5], dtype=torch.float64)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    mix = -torch.logaddexp(-(x - a).square().sum(1) / 2, -(x + a).square().sum(1) / 2)
    diff = toys.SymmetricMixture().fn(x) - mix
    torch.testing.assert_close(diff, diff[:1].expand_as(diff))


def test_monte_carlo_z_estimates_the_log_normaliser_of_a_gaussian_kernel(toys):
    # for V = x^2/2 (1-D) Z(y) ∝ E_{z ~ N(y, 2T)} exp(-z^2/4) = exp(-y^2 / (4 (1 + T))) / sqrt(1 + T): the
    # estimate -2 log Z must be y^2 / (2 (1 + T)) + const
    from invprob.solvers.samplers import GaussianPotential

    T = 0.1
    mc = toys.MonteCarloZ(GaussianPotential(cov=torch.eye(1)), 20000, seed=0)
    y = torch.tensor([[-1.5], [0.0], [1.0], [2.0]], dtype=torch.float64)
    got = mc.moreau_envelope(y, T)
    want = y[:, 0] ** 2 / (2 * (1 + T))
    torch.testing.assert_close(got - got[1], want - want[1], atol=0.03, rtol=0.0)
