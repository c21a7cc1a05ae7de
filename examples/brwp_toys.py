"""The public BRWP code's toy targets at its settings, with invprob's BRWP, PBRWP, ULA, MLA and SVGD.

The public code is github.com/hyt35/WassersteinProxSampling (Tan, Osher & Li, "Noise-free sampling algorithms via
regularized Wasserstein proximals", arXiv:2308.14945; scripts ``paper_exps/plot_long_gaussian_SGD_WPX.py``,
``plot_double_banana2_SGD_WPX.py``, ``plot_mix_gaussian_SGD_WPX.py``). Its targets (``beta = 1``, density
``exp(-V)``) and settings, re-implemented here (every run: 200 particles drawn from ``N(0, I)``):

=================  ==========================================================  =====  ======  ======================
toy                ``V(x)``                                                     step   iters   T (Z: Monte-Carlo n)
=================  ==========================================================  =====  ======  ======================
gaussian5          ``sum_i a_i x_i^2 / 2``, ``a = 1 / linspace(10, 1, 5)``       0.1    200     0.05-1 (10)
                   (5-D, condition number 10)
double_banana      ``2 (||x|| - 3)^2 - log(e^{-2 (x_0 - 3)^2} + e^{-2 (x_0+3)^2})``  0.1 *  500     0.01-0.2 (25)
mixture            ``||x - a||^2 / 2 - log(1 + e^{-2 a.x})``, ``a = (0.5, 0.5)``  0.1    500     0.01-0.1 (25)
                   (``= -log(N(a, I) + N(-a, I)) + const``)
=================  ==========================================================  =====  ======  ======================

(*) ``paper_exps/`` runs the double banana with step 0.5 for 100 iterations; there ``V``'s curvature along
``x_0`` near the modes is 8, so ULA's contraction factor ``1 - 0.5 * 8 = -3`` diverges (measured: ULA and MLA at
``1e19`` after 20 iterations). We keep its horizon (time 50) with the step 0.1 of its other scripts.

Methods. ``BRWP`` is invprob's BRWP with its Laplace ``log Z`` (closed form for the Gaussian, one envelope step
otherwise); ``BRWP-MC`` is the same step with the public code's Monte-Carlo normaliser
``Z(y) ≈ mean_k exp(-V(y + sqrt(2T) xi_k) / 2)`` (fresh draws every iteration, its sample counts; passed to BRWP
through the potential's ``moreau_envelope`` hook as ``-2 log Z``, see :class:`MonteCarloZ`). ``PBRWP`` and
``MLA`` use ``M`` = the target covariance (exact for the Gaussian: ``M = Sigma``, the closed-form case of
``algorithms.md``; by quadrature on a grid for the 2-D toys), divided by its largest eigenvalue for the double
banana (8.2; undivided, ``M grad V`` would have a Lipschitz constant near 66 against the step 0.1); all methods use
the toy's step (SVGD with the median bandwidth). A run that blows up is reported as diverged. The main comparison
runs at one ``T`` per toy (0.1, 0.1, 0.05); the Gaussian also runs BRWP at every ``T`` of the public script.

What is compared with the published behaviour (the paper's abstract and the repository's own closed forms; the
repository's README states no numbers):

- "variance reduction, characterised in closed form for quadratic potentials": the repository's stationary
  variance ``(1 - T^2 a_i^2) / a_i`` (``var_t`` in its Gaussian script; ``algorithms.md``'s ``Sigma_hat``), against
  the variance of our BRWP particles after 200 iterations, per ``T``; ULA's stationary variance
  ``1 / (a (1 - a eta / 2))`` beside;
- "particles behave in an organised manner, lying on level set contours": the coefficient of variation of the
  nearest-neighbour distances (``nn_cv``: about 0.5 for independent points, near 0 for a lattice) and the spread
  of ``V`` over the particles;
- "fast convergence": ``KL(KDE || target)`` at the last iteration (the estimators of
  ``examples/particle_annulus.py``: Monte Carlo with the exact ``log pi`` in 5-D, where the Gaussian-fit KL
  ``KL(N(mean, cov) || pi)`` is printed too; grid quadrature in 2-D). The public code's own KL (its
  ``compute_energy_standalone_corrected``, a Monte-Carlo estimate of a KL of the regularised density) is not
  reproduced.

Run: ``python examples/brwp_toys.py --out DIR [--quick] [--force] [--seed 0]`` (``--quick``: 60 particles and a
fifth of the iterations). Writes ``brwp_toys.png`` (final particles of every method on every toy; the Gaussian in
its coordinates 0 and 4) and prints the tables.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from particle_annulus import (  # noqa: E402
    Grid,
    grid_covariance,
    grid_log_normaliser,
    kl_grid_kde,
    kl_monte_carlo,
    prepare_out,
    run_sampler,
)

from invprob.potential import Potential  # noqa: E402
from invprob.solvers.samplers import BRWP, MLA, PBRWP, SVGD, ULA, GaussianPotential  # noqa: E402

GAUSS_A = 1.0 / torch.linspace(10.0, 1.0, 5, dtype=torch.float64)
MIX_A = (0.5, 0.5)
TOY_GRID = Grid((-6.0, -6.0), (6.0, 6.0), 0.05)


class DoubleBanana(Potential):
    """``V(x) = 2 (||x|| - 3)^2 - logaddexp(-2 (x_0 - 3)^2, -2 (x_0 + 3)^2)`` on ``(B, 2)``."""

    event_shape = (2,)

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        """``V(x)``, shape ``(B,)``."""
        r = x.norm(dim=1)
        return 2 * (r - 3) ** 2 - torch.logaddexp(-2 * (x[:, 0] - 3) ** 2, -2 * (x[:, 0] + 3) ** 2)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """``4 (||x|| - 3) x / ||x|| + 4 (x_0 - 3 w_+ + 3 w_-) e_0``, ``w_±`` the softmax weights of the bumps."""
        r = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        w = torch.softmax(torch.stack([-2 * (x[:, 0] - 3) ** 2, -2 * (x[:, 0] + 3) ** 2], 1), 1)
        g = 4 * (r - 3) / r * x
        return torch.stack([g[:, 0] + 4 * (x[:, 0] - 3 * w[:, 0] + 3 * w[:, 1]), g[:, 1]], 1)


class SymmetricMixture(Potential):
    """``V(x) = ||x - a||^2 / 2 - log(1 + exp(-2 a.x))`` on ``(B, 2)``: ``0.5 N(a, I) + 0.5 N(-a, I)``."""

    event_shape = (2,)

    def __init__(self, a=MIX_A):
        self.a = torch.as_tensor(a, dtype=torch.float64)

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        """``V(x)``, shape ``(B,)``."""
        a = self.a.to(x)
        return (x - a).square().sum(1) / 2 - torch.nn.functional.softplus(-2 * x @ a)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """``x - a + 2 a sigmoid(-2 a.x)``."""
        a = self.a.to(x)
        return x - a + 2 * a * torch.sigmoid(-2 * x @ a)[:, None]


class MonteCarloZ(Potential):
    """``base`` with the public code's Monte-Carlo normaliser of the BRWP kernel, through ``moreau_envelope``.

    ``moreau_envelope(y, T, M)`` returns ``-(2 / beta) log mean_k exp(-(beta/2) V(y + sqrt(2T/beta) xi_k))``
    (``n_samples`` fresh draws per call, ``M = I`` only), so that BRWP's ``log Z = -(beta/2) e_T`` is the public
    code's estimate up to a constant that cancels in the softmax. It is not a Moreau envelope: the name is the
    hook BRWP reads.
    """

    def __init__(self, base: Potential, n_samples: int, *, seed: int = 0):
        self.base, self.n_samples = base, int(n_samples)
        self.event_shape = base.event_shape
        self.beta = float(getattr(base, "beta", 1.0))
        self.gen = torch.Generator().manual_seed(seed)

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.fn(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.grad(x)

    def moreau_envelope(self, y: torch.Tensor, T: float, precond=None) -> torch.Tensor:
        """The Monte-Carlo ``-(2/beta) log Z(y)`` (class docstring)."""
        b = self.beta
        xi = torch.randn(self.n_samples, *y.shape, generator=self.gen, dtype=y.dtype)
        z = (y[None] + math.sqrt(2 * T / b) * xi).reshape(-1, *y.shape[1:])
        v = self.base.fn(z).reshape(self.n_samples, y.shape[0])
        return -(2 / b) * (torch.logsumexp(-(b / 2) * v, 0) - math.log(self.n_samples))


@dataclass(frozen=True)
class Toy:
    """One toy of the public code: its potential, step, iterations, kernel times, Monte-Carlo Z samples and the
    ``T`` of the main comparison."""

    name: str
    potential: Potential
    step: float
    n_iter: int
    T_list: tuple[float, ...]
    mc_samples: int
    T: float
    m_scale: float = 1.0


def toys() -> dict[str, Toy]:
    """The three toys at the public code's settings (module docstring)."""
    return {
        "gaussian5": Toy("gaussian5", GaussianPotential(cov=torch.diag(1.0 / GAUSS_A)), 0.1, 200,
                         (0.05, 0.1, 0.25, 0.5, 0.999, 1.0), 10, 0.1),
        "double_banana": Toy("double_banana", DoubleBanana(), 0.1, 500, (0.01, 0.05, 0.1, 0.2), 25, 0.1,
                             1 / 8.2216),
        "mixture": Toy("mixture", SymmetricMixture(), 0.1, 500, (0.01, 0.05, 0.1), 25, 0.05),
    }


def target_covariance(toy: Toy) -> torch.Tensor:
    """The preconditioner ``M``: ``m_scale`` times the target covariance (exact for the Gaussian, by quadrature on
    :data:`TOY_GRID` in 2-D)."""
    if isinstance(toy.potential, GaussianPotential):
        return toy.m_scale * toy.potential.cov
    return toy.m_scale * grid_covariance(toy.potential, TOY_GRID)


def samplers(toy: Toy, *, seed: int = 0) -> dict:
    """``{name: (sampler, potential it runs on)}``: the six methods of the main comparison on ``toy``."""
    m, eta, T = target_covariance(toy), toy.step, toy.T
    pot = toy.potential
    return {
        "PBRWP": (PBRWP(preconditioner=m, T=T, step=eta, uncertainty="particles"), pot),
        "BRWP": (BRWP(T=T, step=eta, uncertainty="particles"), pot),
        "BRWP-MC": (BRWP(T=T, step=eta, logz="exact", uncertainty="particles"),
                    MonteCarloZ(pot, toy.mc_samples, seed=seed)),
        "ULA": (ULA(step=eta), pot),
        "MLA": (MLA(step=eta, preconditioner=m), pot),
        "SVGD": (SVGD(step=eta), pot),
    }


# ---------------------------------------------------------------------------------------------------- measures
KDE_H = {"gaussian5": 1.0, "double_banana": 0.25, "mixture": 0.3}  # fixed KDE bandwidths of the KL estimators


def log_target(toy: Toy):
    """The exact normalised ``log pi`` of ``toy`` (closed form for the Gaussian, grid-normalised in 2-D)."""
    pot = toy.potential
    if isinstance(pot, GaussianPotential):
        log_z = 0.5 * float(torch.logdet(2 * math.pi * pot.cov))
    else:
        log_z = grid_log_normaliser(pot, TOY_GRID)
    return lambda x: -pot.fn(x) - log_z


def exact_samples(toy: Toy, n: int, *, seed: int) -> torch.Tensor:
    """``n`` independent samples of the target (closed form, or from the grid density with in-cell jitter)."""
    gen = torch.Generator().manual_seed(seed + 1)
    pot = toy.potential
    if isinstance(pot, GaussianPotential):
        return torch.randn(n, pot.dim, generator=gen, dtype=torch.float64) * pot.cov.diagonal().sqrt()
    nodes = TOY_GRID.nodes()
    idx = torch.multinomial(torch.softmax(-pot.fn(nodes), 0), n, replacement=True, generator=gen)
    return nodes[idx] + TOY_GRID.spacing * (torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5)


def kl(toy: Toy, x: torch.Tensor, *, seed: int = 0) -> float:
    """``KL(KDE || target)`` with the toy's fixed bandwidth: grid quadrature in 2-D, Monte Carlo in 5-D."""
    h = KDE_H[toy.name]
    if x.shape[1] == 2:
        return kl_grid_kde(x, log_target(toy)(TOY_GRID.nodes()), TOY_GRID, h=h)
    return kl_monte_carlo(x, log_target(toy), h=h, seed=seed)


def gaussian_fit_kl(x: torch.Tensor, cov: torch.Tensor) -> float:
    """``KL(N(mean(x), cov(x)) || N(0, cov))`` (the 5-D Gaussian's moment-matched KL)."""
    m, c = x.mean(0), torch.cov(x.T)
    p = torch.linalg.inv(cov)
    return 0.5 * float(torch.trace(p @ c) + m @ p @ m - x.shape[1] + torch.logdet(cov) - torch.logdet(c))


def nn_cv(x: torch.Tensor) -> float:
    """Coefficient of variation of the nearest-neighbour distances (about 0.5 for independent points in 2-D,
    near 0 on a lattice)."""
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    nn = d.min(1).values
    return float(nn.std() / nn.mean())


def measures(toy: Toy, x: torch.Tensor | None, wall: float, *, seed: int = 0) -> dict:
    """One table row: KL, Gaussian-fit KL (5-D), ``nn_cv``, std of ``V`` over the particles, wall time."""
    if x is None:
        return {"KL": float("nan"), "fit KL": float("nan"), "nn_cv": float("nan"), "std V": float("nan"),
                "wall s": wall, "note": "diverged"}
    fit = gaussian_fit_kl(x, toy.potential.cov) if isinstance(toy.potential, GaussianPotential) else float("nan")
    return {"KL": kl(toy, x, seed=seed), "fit KL": fit, "nn_cv": nn_cv(x), "std V": float(toy.potential.fn(x).std()),
            "wall s": wall, "note": ""}


# ---------------------------------------------------------------------------------------------------- runs
def run_toy(toy: Toy, n_particles: int, n_iter: int, *, seed: int = 0, keep: set[int] | None = None) -> dict:
    """Every method of :func:`samplers` on ``toy`` from one shared ``N(0, I)`` initialisation:
    ``{name: (snapshots or None when it diverged, wall time)}``; ``keep`` defaults to ``{n_iter}``."""
    d = toy.potential.event_shape[0]
    init = torch.randn(n_particles, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    keep = {n_iter} if keep is None else keep
    out = {}
    for name, (smp, pot) in samplers(toy, seed=seed).items():
        t0 = time.perf_counter()
        try:
            out[name] = run_sampler(smp, pot, init, n_iter, keep, seed=seed)
        except FloatingPointError:
            out[name] = (None, time.perf_counter() - t0)
    return out


def variance_sweep(toy: Toy, n_particles: int, n_iter: int, *, seed: int = 0) -> list[dict]:
    """BRWP at every ``T`` of the public Gaussian script, and ULA: the particle variance of the stiffest
    (``a = 1``) and the softest (``a = 0.1``) coordinate against the closed-form stationary variance
    (``(1 - T^2 a^2) / a`` for BRWP, ``1 / (a (1 - a eta / 2))`` for ULA)."""
    a = GAUSS_A
    init = torch.randn(n_particles, len(a), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    runs = [(T, BRWP(T=T, step=toy.step, uncertainty="particles"), (1 - T**2 * a**2) / a) for T in toy.T_list]
    runs.append(("ULA", ULA(step=toy.step), 1 / (a * (1 - a * toy.step / 2))))
    rows = []
    for T, smp, closed in runs:
        snaps, _ = run_sampler(smp, toy.potential, init, n_iter, {n_iter}, seed=seed)
        var = snaps[n_iter].var(0)
        rows.append({"method": "BRWP" if T != "ULA" else "ULA", "T": T, "var a=1": float(var[-1]),
                     "closed a=1": float(closed[-1]), "var a=0.1": float(var[0]), "closed a=0.1": float(closed[0])})
    return rows


def fmt_rows(rows: list[dict]) -> str:
    """Plain-text table of a list of dicts (floats to 4 significant digits)."""
    cols = list(rows[0])
    cell = [[f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    w = [max(len(c), *(len(x[i]) for x in cell)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w[i]) for i, c in enumerate(cols))]
    lines += ["  ".join(x[i].rjust(w[i]) for i in range(len(cols))) for x in cell]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- figure
def toy_density(toy: Toy, n: int = 161) -> tuple:
    """``(axis, axis, density image)`` of a 2-D toy, or of the Gaussian's coordinates 0 and 4."""
    g = torch.linspace(-6, 6, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.ravel(), yy.ravel()], 1)
    if isinstance(toy.potential, GaussianPotential):
        v = 0.5 * (pts[:, 0] ** 2 * GAUSS_A[0] + pts[:, 1] ** 2 * GAUSS_A[-1])
    else:
        v = toy.potential.fn(pts)
    return g.numpy(), g.numpy(), torch.exp(-v).reshape(n, n).numpy()


def plot(results: dict, path: Path, dpi: int) -> None:
    """Rows: toys; columns: methods; the final particles over the density contours."""
    import matplotlib.pyplot as plt

    tys = toys()
    names = list(next(iter(results.values())))
    fig, axes = plt.subplots(len(results), len(names), figsize=(2.2 * len(names), 2.3 * len(results)),
                             squeeze=False)
    for r, (tname, runs) in enumerate(results.items()):
        g0, g1, dens = toy_density(tys[tname])
        for c, name in enumerate(names):
            ax = axes[r, c]
            ax.contour(g0, g1, dens, levels=6, cmap="Greys", linewidths=0.6)
            snaps = runs[name][0]
            if snaps is None:
                ax.text(0, 0, "diverged", ha="center", va="center")
            else:
                x = snaps[max(snaps)]
                x = x[:, [0, -1]] if x.shape[1] > 2 else x
                ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=3, color="C3")
            ax.set_xlim(-6, 6)
            ax.set_ylim(-6, 6)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(tname, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


FIGURE = "brwp_toys.png"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quick", action="store_true", help="60 particles, a fifth of the iterations")
    p.add_argument("--force", action="store_true", help="overwrite an existing figure in --out")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    prepare_out(p, out, [FIGURE], args.force)
    torch.set_num_threads(1)
    n_part = 60 if args.quick else 200
    results = {}
    for name, toy in toys().items():
        n_iter = max(20, toy.n_iter // 5) if args.quick else toy.n_iter
        results[name] = run_toy(toy, n_part, n_iter, seed=args.seed)
        rows = [{"method": m, **measures(toy, None if s is None else s[max(s)], w, seed=args.seed)}
                for m, (s, w) in results[name].items()]
        floor = exact_samples(toy, n_part, seed=args.seed)
        rows.append({"method": "exact", **measures(toy, floor, 0.0, seed=args.seed), "note": "iid samples"})
        print(f"\n{name}: {n_part} particles, {n_iter} iterations, step {toy.step}, T {toy.T}")
        print(fmt_rows(rows))
    g = toys()["gaussian5"]
    n_iter = max(20, g.n_iter // 5) if args.quick else g.n_iter
    print(f"\ngaussian5: particle variance against the closed-form stationary variance after {n_iter} iterations")
    print(fmt_rows(variance_sweep(g, n_part, n_iter, seed=args.seed)))
    plot(results, out / FIGURE, dpi=70 if args.quick else 110)
    print(f"wrote {out / FIGURE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
