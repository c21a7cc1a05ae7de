"""Mirror and preconditioned descent in Wasserstein space (arXiv 2406.08938), small versions of its experiments.

(i)   interaction energy ``W(z) = ||z||^4_{Sigma^-1}/4 - ||z||^2_{Sigma^-1}/2`` with an ill-conditioned ``Sigma``:
      WGD and mirror descent with the Bregman potentials K2, K2^Sigma, K4, K4^Sigma; ``W(mu_k)`` against
      ``tau * k`` (``interaction.png``);
(ii)  Gaussian target ``N(0, Sigma)``: the Bures-Wasserstein forward-backward, its preconditioned version
      (``phi = int V``) and the entropy mirror descent; ``KL`` against ``k`` and ``tau * k`` (``gaussian.png``);
(iii) preconditioned WGD (``a = 1.25, 1.5, 1.75``) against WGD on sliced-W2, Sinkhorn and energy-distance
      objectives moving a 10-D Gaussian mixture onto another (``preconditioned.png``).

Each experiment prints a table: iterations to reach ``best final value + tol`` and the final value.

    python examples/wasserstein_descent.py --out figs/wasserstein --quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from invprob.solvers.particles import (
    BuresWassersteinFB,
    EnergyDistance,
    GaussianEntropyMirror,
    InteractionEnergy,
    MirrorDescent,
    PreconditionedBuresFB,
    PreconditionedWGD,
    SinkhornDivergence,
    SlicedWasserstein,
    WassersteinGD,
)

F64 = torch.float64


def rotated(eigs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``Q diag(eigs) Q^T`` for a random rotation ``Q``."""
    q = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=gen, dtype=F64))[0]
    return q @ torch.diag(eigs) @ q.T


def table(title: str, curves: dict[str, torch.Tensor], tol: float) -> None:
    """Print iterations to reach ``min final + tol`` and the final value of each curve."""
    best = min(float(c[-1]) for c in curves.values())
    print(f"\n{title} (tolerance: best final + {tol:g} = {best + tol:.6g})")
    print(f"  {'scheme':<26} {'iters to tol':>12} {'final value':>14}")
    for name, c in curves.items():
        hit = (c <= best + tol).nonzero()
        it = str(int(hit[0])) if len(hit) else "-"
        print(f"  {name:<26} {it:>12} {float(c[-1]):>14.6g}")


def interaction(quick: bool, gen: torch.Generator, record: dict | None = None) -> dict[str, tuple[float, torch.Tensor]]:
    """Experiment (i): ``{name: (tau, W(mu_k))}``; ``record`` (optional) receives ``{name: wall time in s}``."""
    sigma = rotated(torch.tensor([1.0, 0.05], dtype=F64), gen)
    F = InteractionEnergy.double_well(sigma)
    x0 = 0.3 * torch.randn(30 if quick else 60, 2, generator=gen, dtype=F64)
    n_iter = 40 if quick else 200
    lam = float(torch.linalg.eigvalsh(torch.linalg.inv(sigma))[-1])
    runs = {  # K4^Sigma: W is 1-smooth relative to it (K4^Sigma - W = q convex), tau = 1; K4: tau = 1/lam_max^2
        "WGD": (WassersteinGD(tau=0.01), None),
        "K2": (MirrorDescent(tau=0.01, bregman="K2"), None),
        "K2_sigma": (MirrorDescent(tau=0.1, bregman="K2_sigma", sigma=sigma), None),
        "K4": (MirrorDescent(tau=1 / lam ** 2, bregman="K4"), None),
        "K4_sigma": (MirrorDescent(tau=1.0, bregman="K4_sigma", sigma=sigma), None),
    }
    out = {}
    for name, (s, _) in runs.items():
        res = s.run(F, x0, n_iter=n_iter)
        out[name] = (s.tau, res.values)
        if record is not None:
            record[name] = float(res.info["wall_time_s"])
    return out


def gaussian(quick: bool, gen: torch.Generator) -> dict[str, tuple[float, torch.Tensor]]:
    """Experiment (ii): ``{name: (tau, KL_k)}`` from ``N(0, I)`` to ``N(0, Sigma)``, ``d = 10`` (5 quick)."""
    d = 5 if quick else 10
    eigs = torch.logspace(0, -2, d, dtype=F64)
    sigma = rotated(eigs, gen)
    n_iter = 150 if quick else 1000
    m0, c0 = torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64)
    schemes = [BuresWassersteinFB(tau=0.9 * float(eigs.min())), PreconditionedBuresFB(tau=0.5),
               GaussianEntropyMirror(tau=0.4)]
    return {s.name: (s.tau, s.run(sigma, m0, c0, n_iter=n_iter).values) for s in schemes}


def mixture(n: int, d: int, gen: torch.Generator, shift: float) -> torch.Tensor:
    """``n`` points of a 3-component Gaussian mixture in ``R^d`` (random centres of norm ~ ``shift``)."""
    centres = shift * torch.randn(3, d, generator=gen, dtype=F64) / d ** 0.5
    labels = torch.randint(0, 3, (n,), generator=gen)
    return centres[labels] + 0.5 * torch.randn(n, d, generator=gen, dtype=F64)


def _scheme(a: float | None, tau: float) -> WassersteinGD | PreconditionedWGD:
    return WassersteinGD(tau=tau) if a is None else PreconditionedWGD(tau=tau, a=a)


def preconditioned(quick: bool, gen: torch.Generator,
                   record: dict | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Experiment (iii): ``{objective: {scheme: mean over pairs of F(mu_k)}}``. Each scheme runs at the step of a
    small grid (multiples of a base step per objective) with the best final value on the first pair. ``record``
    (optional) receives the per-pair curves ``{objective: {scheme (tau): tensor (pairs, n_iter + 1)}}``."""
    n, d = (48, 10) if quick else (100, 10)
    pairs, n_iter = (1, 30) if quick else (3, 100)
    base = {"sliced_w2": 5.0, "sinkhorn": 0.5, "energy_distance": 2.0}
    grid = (0.25, 1.0) if quick else (0.25, 1.0, 4.0)
    schemes = {"WGD": None, "PWGD a=1.25": 1.25, "PWGD a=1.5": 1.5, "PWGD a=1.75": 1.75}
    steps: dict[tuple[str, str], float] = {}
    curves: dict[tuple[str, str], list[torch.Tensor]] = {}
    for _ in range(pairs):
        x0, y = mixture(n, d, gen, 4.0), mixture(n, d, gen, 4.0) + 1.0
        objectives = {"sliced_w2": SlicedWasserstein(y, n_projections=50 if quick else 200, seed=0),
                      "sinkhorn": SinkhornDivergence(y, eps=1.0, n_iter=30 if quick else 50),
                      "energy_distance": EnergyDistance(y)}
        for key, F in objectives.items():
            for name, a in schemes.items():
                if (key, name) not in steps:
                    runs = {g * base[key]: _scheme(a, g * base[key]).run(F, x0, n_iter=n_iter).values for g in grid}
                    steps[key, name] = min(runs, key=lambda t: float(runs[t][-1]))
                    v = runs[steps[key, name]]
                else:
                    v = _scheme(a, steps[key, name]).run(F, x0, n_iter=n_iter).values
                curves.setdefault((key, name), []).append(v)
    if record is not None:
        record.update({key: {f"{name} (tau={steps[key, name]:.3g})": torch.stack(curves[key, name])
                             for name in schemes} for key in base})
    return {key: {f"{name} (tau={steps[key, name]:.3g})": torch.stack(curves[key, name]).mean(0)
                  for name in schemes} for key in base}


def figures(out: Path, inter: dict, gauss: dict, prec: dict, dpi: int = 110) -> None:
    """Write ``interaction.png``, ``gaussian.png`` and ``preconditioned.png``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    w_min = min(float(v.min()) for _, v in inter.values())
    for name, (tau, v) in inter.items():
        gap = (v - w_min).clamp_min(1e-12)
        k = torch.arange(len(v))
        axes[0].semilogy(k, gap, label=f"{name} (tau={tau:.3g})", ls="--" if name == "K2" else "-")
        axes[1].loglog(tau * (k[1:]), gap[1:], ls="--" if name == "K2" else "-")
    axes[0].set(xlabel="iteration", ylabel="W(mu_k) - min W", title="interaction energy, ill-conditioned Sigma")
    axes[1].set(xlabel="tau * iteration")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "interaction.png", dpi=dpi)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, (tau, v) in gauss.items():
        for ax, t in zip(axes, (torch.arange(len(v)), tau * torch.arange(len(v))), strict=True):
            ax.semilogy(t, v.clamp_min(1e-16), label=f"{name} (tau={tau:.3g})")
    axes[0].set(xlabel="iteration", ylabel="KL(mu | pi)")
    axes[1].set(xlabel="tau * iteration", xscale="log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "gaussian.png", dpi=dpi)
    fig, axes = plt.subplots(1, len(prec), figsize=(5 * len(prec), 4))
    for ax, (key, curves) in zip(axes, prec.items(), strict=True):
        for name, v in curves.items():
            ax.semilogy(v.clamp_min(1e-12), label=name)
        ax.set(title=key, xlabel="iteration")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "preconditioned.png", dpi=dpi)
    plt.close("all")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the PNG figures")
    p.add_argument("--force", action="store_true", help="write into an existing non-empty folder")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())) and not args.force:
        print(f"error: {args.out} exists and is not an empty folder (use --force)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    inter = interaction(args.quick, gen)
    table("(i) interaction energy W", {k: v for k, (_, v) in inter.items()}, 1e-4)
    gauss = gaussian(args.quick, gen)
    table("(ii) Gaussian target, KL", {k: v for k, (_, v) in gauss.items()}, 1e-6)
    prec = preconditioned(args.quick, gen)
    for key, curves in prec.items():
        table(f"(iii) {key}", curves, 1e-2 * float(max(c[0] for c in curves.values())))
    figures(args.out, inter, gauss, prec)
    print(f"\nfigures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
