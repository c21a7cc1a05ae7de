"""The bridge from Wasserstein preconditioned descent to sampling: PBRWP/BRWP with the nonlinear drift
preconditioner ``grad h*`` (``PBRWP(drift=...)``) against the linear preconditioner ``M``.

The step ``x_i <- x_i - eta grad h*(v_i)`` acts on PBRWP's velocity ``v_i = (1/2)[M grad V(x_i) - (x_i - sum_j
P_ij x_j)/T]`` (``grad h* = identity`` is PBRWP itself), with Bonet et al.'s ``h*(v) = (||v||^a + 1)^{1/a} - 1``
and its rescaled form ``h*_s(v) = s^2 h*(v / s)`` (``grad h*_s(v) = s grad h*(v / s)``: unit-free; ``s`` is set
relative to the initial velocity norm). Two problems:

(a) Ill-conditioned Gaussians (``d = 2`` and ``10``, rotated, condition number 50, mean 0.3; 200 particles from
    ``mean + 1 + N(0, 2 Sigma)``): the Gaussian KL of the particle cloud to the scheme's closed-form invariant
    law ``N(mean, Sigma_hat(T, M))`` against the iterations; every scheme at the best step of a grid (``eta L`` in
    0.1 ... 2, ``L`` the Lipschitz constant of ``M grad V`` in the ``M`` metric); iterations to ``KL < tol`` with
    ``tol`` three times the finite-N floor ``d(d+1)/(4N)`` (at least 0.02), and the KL after the budget.
(b) The TV deblur of the sampler benchmark at 64^2 (cameraman, Gaussian blur std 1.5, noise 0.01, ``TV(7.5,
    eps=0.01)``), 16 particles started at the data ``y``: PSNR of the particle mean against a reference posterior
    mean (16 MLA chains, ``M`` = the posterior preconditioner, 3000 iterations after 600 burn-in) against the
    iterations, for PBRWP with ``M = posterior`` and BRWP (``M = I``), each plain and with ``grad h*``.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/drift_preconditioning.py            # print the tables
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/drift_preconditioning.py --write    # and write RESULTS.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import header, markdown_table, write_section  # noqa: E402

from invprob import Posterior  # noqa: E402
from invprob.operators import Blur, gaussian_kernel  # noqa: E402
from invprob.priors import TV  # noqa: E402
from invprob.solvers.particles import gaussian_kl, power_h_star_grad  # noqa: E402
from invprob.solvers.samplers import MLA, PBRWP, GaussianPotential  # noqa: E402

F64 = torch.float64
STEP_GRID = (0.1, 0.25, 0.5, 1.0, 2.0)
PSNR_GOAL = 33.0  # dB of the particle mean vs the reference mean (the plain schemes' plateau is about 35 dB)


def kl_tolerance(d: int, n: int) -> float:
    """Three times the finite-N floor ``d(d+1)/(4N)`` of the Gaussian KL of N exact samples, at least 0.02."""
    return max(0.02, 3 * d * (d + 1) / (4 * n))


def scaled_h_star_grad(a: float, s: float):
    """``grad h*_s(v) = s grad h*(v / s)`` with ``h*`` of :func:`power_h_star_grad` (a user ``h*``)."""
    g = power_h_star_grad(a)

    def grad(v: torch.Tensor) -> torch.Tensor:
        return s * g(v / s)

    grad.__qualname__ = f"scaled_h_star_grad(a={a:g}, s={s:.3g})"
    return grad


# --------------------------------------------------------------------------------------------- (a) Gaussians
def gaussian(d: int, cond: float = 50.0) -> GaussianPotential:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    ev = torch.logspace(0, -math.log10(cond), d, dtype=F64)
    return GaussianPotential(q @ torch.diag(ev) @ q.T, mean=torch.full((d,), 0.3, dtype=F64))


def kl_trace(pot, sampler, init, n_iter, S_hat, every=10) -> list[tuple[int, float]]:
    """``(iteration, KL(N(m, C) | N(mean, S_hat)))`` every ``every`` iterations (inf once the cloud blows up)."""
    trace: list[tuple[int, float]] = []

    def cb(it, x, logs):
        if it % every == 0 or it == n_iter:
            if not bool(torch.isfinite(x).all()):
                trace.append((it, math.inf))
                return
            C = torch.cov(x.T)
            try:
                kl = float(gaussian_kl(x.mean(0) - pot.mean, C, S_hat))
            except RuntimeError:  # C singular (a collapsed cloud)
                kl = math.inf
            trace.append((it, kl if math.isfinite(kl) else math.inf))

    try:
        sampler.run(pot, n_particles=init.shape[0], n_iter=n_iter, rng=0, init=init, progress=False,
                    callback=cb, log_every=n_iter)
    except FloatingPointError:
        trace.append((n_iter, math.inf))
    return trace


def first_below(trace, tol) -> int | None:
    return next((it for it, kl in trace if kl < tol), None)


def gaussian_init(pot: GaussianPotential, n: int) -> torch.Tensor:
    """The shared start: ``n`` particles from ``mean + 1 + N(0, 2 Sigma)`` (seed 5)."""
    g = torch.Generator().manual_seed(5)
    z = torch.randn(n, pot.dim, generator=g, dtype=F64)
    return pot.mean + 1.0 + z @ torch.linalg.cholesky(2 * pot.cov).T


@dataclass(frozen=True)
class GridBest:
    """The best step of a grid for one scheme: fewest iterations to the tolerance, then the lowest final KL."""

    step: float  # eta L
    hit: float  # iterations to KL < tol (inf: not reached)
    final: float  # KL after the budget
    trace: list
    wall_s: float

    def columns(self, tol: float, n_iter: int) -> dict:
        return {"best eta L": self.step, "KL tol": tol,
                "iterations to KL < tol": "not reached" if self.hit == math.inf else int(self.hit),
                f"KL after {n_iter}": self.final if math.isfinite(self.final) else "inf (singular or diverged cloud)",
                "grid wall s": self.wall_s}


def best_of_grid(pot, kw: dict, L: float, init, n_iter: int, tol: float, steps) -> GridBest:
    """Run ``PBRWP(step=s / L, **kw)`` for every ``s`` in ``steps`` against the closed-form invariant law."""
    S_hat = pot.pbrwp_invariant_covariance(kw["T"], kw["preconditioner"])
    best, t0 = None, time.perf_counter()
    for s in steps:
        tr = kl_trace(pot, PBRWP(step=s / L, uncertainty="particles", **kw), init, n_iter, S_hat)
        hit = first_below(tr, tol)
        key = (hit if hit is not None else math.inf, tr[-1][1])
        if best is None or key < best[0]:
            best = (key, s, tr)
    (hit, final), s, tr = best
    return GridBest(s, hit, final, tr, time.perf_counter() - t0)


def gaussian_schemes(pot, quick: bool) -> list[tuple[str, dict, float]]:
    """``(label, PBRWP keywords, L)``: BRWP (M = I, T below Sigma's smallest eigenvalue) and PBRWP (M = Sigma,
    T = 0.5), plain and with ``grad h*`` (a = 1.5, 1.75)."""
    lam_min = float(torch.linalg.eigvalsh(pot.cov)[0])
    eye = torch.eye(pot.dim, dtype=F64)
    bases = [("BRWP (M = I)", dict(preconditioner=eye, T=0.5 * lam_min), 1.0 / lam_min),
             ("PBRWP (M = Sigma)", dict(preconditioner=pot.cov, T=0.5), 1.0)]
    drifts = [(None, None)] + [(f"h*, a = {a}", power_h_star_grad(a)) for a in ((1.5,) if quick else (1.5, 1.75))]
    out = []
    for base, kw, L in bases:
        for name, drift in drifts:
            out.append((base if name is None else f"{base} + {name}", {**kw, "drift": drift}, L))
    return out


def gaussian_part(quick: bool) -> tuple[list[dict], dict]:
    rows, traces = [], {}
    n_iter = 600 if quick else 1500
    N = 100 if quick else 200
    for d in (2, 10):
        tol = kl_tolerance(d, N)
        pot = gaussian(d)
        init = gaussian_init(pot, N)
        for label, kw, L in gaussian_schemes(pot, quick):
            best = best_of_grid(pot, kw, L, init, n_iter, tol, STEP_GRID[1::2] if quick else STEP_GRID)
            traces[(d, label)] = best.trace
            rows.append({"d": d, "scheme": label, "T": kw["T"], **best.columns(tol, n_iter)})
            print(rows[-1], flush=True)
    return rows, traces


# --------------------------------------------------------------------------------------------- (b) TV deblur
def tv_posterior(n: int) -> Posterior:
    from skimage import data
    from skimage.transform import resize

    x0 = torch.tensor(resize(data.camera() / 255.0, (n, n), anti_aliasing=True), dtype=torch.float32)
    op = Blur(gaussian_kernel(1.5), (n, n))
    y = op.A(x0[None, None]) + 0.01 * torch.randn(1, 1, n, n, generator=torch.Generator().manual_seed(0))
    return Posterior(op, y, 0.01, TV(7.5, eps=0.01))


def psnr(a: torch.Tensor, ref: torch.Tensor) -> float:
    mse = float((a.double() - ref.double()).pow(2).mean())
    peak = float(ref.double().max() - ref.double().min())
    return 10 * math.log10(peak**2 / mse) if mse > 0 else math.inf


def psnr_trace(post, sampler, ref, n_iter, every=20) -> list[tuple[int, float]]:
    trace: list[tuple[int, float]] = []

    def cb(it, x, logs):
        if it % every == 0 or it == n_iter:
            trace.append((it, psnr(x.mean(0, keepdim=True), ref) if bool(torch.isfinite(x).all()) else -math.inf))

    init = post.y.expand(16, *post.y.shape[1:]).clone()
    try:
        sampler.run(post, n_particles=16, n_iter=n_iter, rng=0, init=init, progress=False, callback=cb,
                    log_every=n_iter)
    except FloatingPointError:
        trace.append((n_iter, -math.inf))
    return trace


def velocity_scale(post, kw) -> float:
    """Median velocity norm of one plain step from the data (the unit of the rescaled ``h*``)."""
    seen = {}

    def cb(it, x, logs):
        seen["x"] = x.clone()

    init = post.y.expand(16, *post.y.shape[1:]).clone()
    PBRWP(uncertainty="particles", **kw).run(post, n_particles=16, n_iter=1, rng=0, init=init, progress=False,
                                             callback=cb, log_every=1)
    return float((seen["x"] - init).flatten(1).norm(dim=1).median())


def tv_part(quick: bool) -> tuple[list[dict], dict]:
    n = 32 if quick else 64
    post = tv_posterior(n)
    ref_iter = 300 if quick else 3000
    t0 = time.perf_counter()
    ref = MLA(preconditioner="posterior", step_scale=0.25).run(post, n_particles=16, n_iter=ref_iter + ref_iter // 5,
                                                               burn_in=ref_iter // 5, rng=11, init=post.y,
                                                               progress=False).mean
    print(f"TV reference mean {time.perf_counter() - t0:.0f} s", flush=True)
    n_iter = 200 if quick else 1000
    rows, traces = [], {}
    bases = [("PBRWP (M = posterior)", dict(preconditioner="posterior", T=1.0)),
             ("BRWP (M = I)", dict(preconditioner="identity", T=1.0))]
    for base, kw in bases:
        plain = PBRWP(uncertainty="particles", **kw)
        eta0 = None
        variants = [(base, plain, None)]
        unit = velocity_scale(post, kw)
        for a in (1.5,):
            for f in ((1.0,) if quick else (0.1, 1.0, 10.0)):
                variants.append((f"{base} + h*_s, a = {a}, s = {f:g} |v0|", None, scaled_h_star_grad(a, f * unit)))
        for label, smp, drift in variants:
            t0 = time.perf_counter()
            if smp is None:
                best = None
                for m in ((1.0,) if quick else (0.25, 1.0, 4.0)):
                    tr = psnr_trace(post, PBRWP(uncertainty="particles", step=m * eta0, drift=drift, **kw), ref,
                                    n_iter)
                    if best is None or tr[-1][1] > best[1][-1][1]:
                        best = (m, tr)
                mult, tr = best
            else:
                mult, tr = 1.0, psnr_trace(post, smp, ref, n_iter)
                eta0 = float(smp.run(post, n_particles=2, n_iter=1, rng=0, init=post.y, progress=False,
                                     log_every=1).info["step"])
            traces[label] = tr
            hit = next((it for it, p in tr if p >= PSNR_GOAL), None)
            rows.append({"scheme": label, "step / default": mult,
                         f"iterations to {PSNR_GOAL:g} dB": hit or "not reached",
                         f"PSNR after {n_iter} (dB)": tr[-1][1], "best PSNR (dB)": max(p for _, p in tr),
                         "wall s": time.perf_counter() - t0})
            print(rows[-1], flush=True)
    return rows, traces


# --------------------------------------------------------------------------------------------- report
def figure(gauss: dict, tv: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, d in zip(axes[:2], (2, 10), strict=True):
        for (dd, label), tr in gauss.items():
            if dd == d:
                it, kl = zip(*tr, strict=True)
                ax.semilogy(it, [min(k, 1e3) for k in kl], label=label, lw=1.2)
        ax.set(title=f"Gaussian d = {d}, cond 50 (best step each)", xlabel="iteration",
               ylabel="KL to the invariant law")
        ax.legend(fontsize=6)
    for label, tr in tv.items():
        it, p = zip(*tr, strict=True)
        axes[2].plot(it, [max(v, 0) for v in p], label=label, lw=1.0)
    axes[2].set(title="TV deblur 64^2: particle mean vs reference", xlabel="iteration", ylabel="PSNR (dB)")
    axes[2].legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="write the RESULTS.md section and the figure")
    ap.add_argument("--quick", action="store_true", help="small settings (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    g_rows, g_tr = gaussian_part(args.quick)
    t_rows, t_tr = tv_part(args.quick)
    text = header("PBRWP/BRWP with the nonlinear drift preconditioner grad h* against linear M")
    text += f"- total wall time: {time.perf_counter() - t0:.0f} s\n\n"
    text += "(a) Ill-conditioned Gaussians, best step of the grid per scheme:\n\n" + markdown_table(g_rows)
    text += "\n(b) TV deblur 64^2, 16 particles from y, PSNR of the particle mean vs the reference mean:\n\n"
    text += markdown_table(t_rows) + "\n" + SUMMARY_PLACEHOLDER
    print(text)
    if args.write:
        fig = HERE / "figures" / "drift_preconditioning.png"
        figure(g_tr, t_tr, fig)
        write_section("drift_preconditioning", text + f"\n![drift preconditioning](figures/{fig.name})\n")
    return 0


SUMMARY_PLACEHOLDER = ""

if __name__ == "__main__":
    raise SystemExit(main())
