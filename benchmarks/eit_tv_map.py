"""Graph-TV (and L1) MAP of the EIT reconstruction: the old Levenberg-Marquardt Gauss-Newton (lagged diffusivity, at
most ``map_max_iter`` = 20 iterations) against the primal-dual Newton method the pipeline now runs for the TV prior
(``invprob.solvers.eit.run_map``: :func:`~invprob.solvers.eit.primal_dual_newton`, at most ``PD_ITER_FACTOR x 20``;
``--priors l1`` runs it on the L1 prior too, which the pipeline leaves on Gauss-Newton).

Two sets of cases, both set up as the pipeline does (:func:`~invprob.solvers.eit.build_prior`, weight 10 / R, eps
1e-2, the 1e-3 pull to the background):

- ``synthetic``: circle phantoms (one conductive / one resistive inclusion, two inclusions) simulated on a finer
  mesh, 0.3 % and 1 % noise, absolute and difference imaging, background / contact impedance / noise fitted by the
  pipeline's stages (:func:`fit_background`, :func:`estimate_noise`, :func:`build_posterior`);
- ``heldout``: the first ``--heldout`` (phantom, data) pairs of the learned-EIT benchmark (``benchmarks/rwpo.py``
  ``--part eit-map``: :class:`~invprob.solvers.learned.EITPhantomProblem`, h = 0.075, about 2250 cells, generator
  seed 4242, 1 % noise), nonlinear model from the known background, as in that benchmark.

Per group: the fraction that reached its tolerance within the cap ("converged"), iterations, seconds per data set,
the area-weighted relative L1 error of sigma (and the Dice score of the three-class segmentation,
:mod:`invprob.solvers.eit.metrics`), for the old and the new solver.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eit_tv_map.py --quick   # small meshes, a few cases, no RESULTS.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eit_tv_map.py           # all cases; writes the eit_tv_map section
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _report import header, markdown_table, write_section  # noqa: E402

PHANTOMS = {
    "one conductive": ((0.3, -0.35, 0.3, 2.0),),
    "one resistive": ((-0.3, 0.3, 0.3, 0.5),),
    "two (conductive + resistive)": ((0.35, 0.3, 0.3, 2.0), (-0.35, -0.3, 0.3, 0.5)),
}


def solve_both(post, theta0, config, truth, areas, background: float) -> list[dict]:
    """The old solver (:func:`gauss_newton`, ``map_max_iter``) and the new one (:func:`primal_dual_newton`)."""
    from invprob.solvers.eit import PD_ITER_FACTOR, gauss_newton, primal_dual_newton, run_map
    from invprob.solvers.eit.metrics import dice_scores, relative_lp_error, segment_three_class

    seg_truth = segment_three_class(truth, background)
    out = []
    for solver in ("old", "new"):
        t0 = time.perf_counter()
        if solver == "old":
            res = gauss_newton(post, theta0, max_iter=config.map_max_iter)
        elif config.prior == "tv":
            res = run_map(post, theta0, config)
        else:
            res = primal_dual_newton(post, theta0, max_iter=PD_ITER_FACTOR * config.map_max_iter)
        dt = time.perf_counter() - t0
        sigma = np.exp(res.x[0].numpy())
        seg = segment_three_class(sigma, background)
        out.append({"solver": solver, "converged": bool(res.info["converged"]), "iterations": res.info["iterations"],
                    "time": dt, "objective": res.info["objective"][-1],
                    "rel_l1": relative_lp_error(sigma, truth, areas, 1),
                    "dice": dice_scores(seg, seg_truth, areas)["mean"]})
    return out


def synthetic_cases(args):
    """Yield ``(group, post, theta0, config, truth, areas, background)`` for the circle phantoms."""
    import invprob.operators.eit as eit
    from invprob.priors.mesh import MeshGraph
    from invprob.solvers.eit import (
        Phantom,
        ReconConfig,
        build_posterior,
        build_prior,
        estimate_noise,
        fit_background,
        simulate,
    )

    layout = eit.ElectrodeLayout.uniform(16, 0.5)
    coarse = eit.disk_mesh(1.0, layout, h=args.h)
    fine = eit.disk_mesh(1.0, layout, h=0.7 * args.h)
    graph = MeshGraph.from_mesh(coarse)
    noises = (0.01,) if args.quick else (0.003, 0.01)
    seeds = range(1) if args.quick else range(args.seeds)
    for prior_name in args.priors:
        for name, circles in PHANTOMS.items():
            ph = Phantom(1.0, circles)
            truth = coarse.cell_values(ph)
            for noise in noises:
                for seed in seeds:
                    sim = simulate(fine, ph, noise=noise, seed=seed)
                    for diff in (False, True):
                        cfg = ReconConfig(prior=prior_name, difference=diff)
                        fit = fit_background(sim.data, coarse, cfg, reference=sim.reference)
                        nm = estimate_noise(sim.data, cfg, fit, reference=sim.reference)
                        prior = build_prior(cfg, graph, math.log(fit.sigma), 1.0)
                        post = build_posterior(cfg, fit, nm, prior, sim.data, reference=sim.reference)
                        th0 = torch.full((1, coarse.n_cells), math.log(fit.sigma), dtype=torch.float64)
                        group = (f"synthetic {coarse.n_cells} cells, {prior_name}, "
                                 f"{'difference' if diff else 'absolute'}")
                        yield group, f"{name}, {100 * noise:g} %", post, th0, cfg, truth, coarse.areas, 1.0


def heldout_cases(args):
    """The first ``args.heldout`` pairs of ``benchmarks/rwpo.py --part eit-map`` (nonlinear model, known background)."""
    from invprob.eit_posterior import EITPosterior
    from invprob.operators.eit import LogConductivityForward
    from invprob.priors.mesh import MeshGraph
    from invprob.solvers.eit import ReconConfig, build_prior
    from invprob.solvers.learned.eit_problem import EITPhantomProblem

    problem = EITPhantomProblem(h=0.075, n_electrodes=16, noise=0.01, seed=0)
    x_test, c_test = problem.simulate(64, generator=torch.Generator().manual_seed(4242))  # rwpo.py's EIT_HELDOUT
    graph = MeshGraph.from_mesh(problem.mesh)
    forward = LogConductivityForward(problem.op)
    for prior_name in args.priors:
        cfg = ReconConfig(prior=prior_name)
        prior = build_prior(cfg, graph, 0.0, 1.0)
        for i in range(min(args.heldout, 64)):
            y = problem.y_bg + problem.scale * c_test[i].double()
            post = EITPosterior(forward, y, problem.noise * float(y.pow(2).mean().sqrt()), prior)
            th0 = torch.zeros(1, problem.dim, dtype=torch.float64)
            truth = x_test[i].double().exp().numpy()
            yield (f"held-out {problem.dim} cells, {prior_name}, absolute", f"pair {i}", post, th0, cfg, truth,
                   np.asarray(problem.mesh.areas), 1.0)


def summarise(records: list[dict]) -> list[dict]:
    rows = []
    for group in dict.fromkeys(r["group"] for r in records):
        for solver in ("old", "new"):
            rs = [r for r in records if r["group"] == group and r["solver"] == solver]
            its = [r["iterations"] for r in rs]
            rows.append({
                "cases": group, "solver": "Gauss-Newton (old, cap 20)" if solver == "old" else "primal-dual Newton",
                "converged": f"{sum(r['converged'] for r in rs)}/{len(rs)}",
                "iterations (mean, max)": f"{statistics.mean(its):.1f}, {max(its)}",
                "s per data set": statistics.mean(r["time"] for r in rs),
                "rel. L1 sigma": statistics.mean(r["rel_l1"] for r in rs),
                "mean Dice": statistics.mean(r["dice"] for r in rs),
                "objective - new": statistics.mean(r["objective"] - r["new_objective"] for r in rs),
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few small cases; prints only (no RESULTS.md)")
    ap.add_argument("--h", type=float, default=None, help="synthetic inversion mesh size (0.15 quick, 0.1 full)")
    ap.add_argument("--seeds", type=int, default=2, help="noise seeds per synthetic case (full run)")
    ap.add_argument("--heldout", type=int, default=None, help="held-out pairs (1 quick, 64 full; 0: none)")
    ap.add_argument("--priors", default="tv", help="comma-separated priors among tv, l1")
    args = ap.parse_args(argv)
    args.h = args.h or (0.15 if args.quick else 0.1)
    args.heldout = (1 if args.quick else 64) if args.heldout is None else args.heldout
    args.priors = [p.strip() for p in args.priors.split(",") if p.strip()]
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    records = []
    for source in (synthetic_cases, heldout_cases):
        for group, case, post, th0, cfg, truth, areas, bg in source(args):
            old, new = solve_both(post, th0, cfg, truth, areas, bg)
            for r in (old, new):
                records.append({**r, "group": group, "case": case, "new_objective": new["objective"]})
            print(f"{group} | {case}: old {old['iterations']} it conv={old['converged']} {old['time']:.2f} s "
                  f"L1 {old['rel_l1']:.4f} | new {new['iterations']} it conv={new['converged']} {new['time']:.2f} s "
                  f"L1 {new['rel_l1']:.4f} | objective old - new {old['objective'] - new['objective']:.3g}",
                  flush=True)
    rows = summarise(records)
    text = header("EIT graph-TV MAP: Gauss-Newton (old) vs primal-dual Newton (pipeline)")
    text += (f"- total wall time {(time.perf_counter() - t_start) / 60:.1f} min, 1 torch thread; priors as "
             "`build_prior` makes them (TV weight 10 / R, eps 1e-2, pull 1e-3); synthetic: simulated on a 0.7 h "
             "mesh, 16 electrodes, background/contact/noise fitted by the pipeline's stages; held-out: "
             "`benchmarks/rwpo.py --part eit-map`'s pairs. \"converged\": the solver's own tolerance reached "
             "within its cap (old: relative decrease < 1e-7 in 20 iterations; new: relative decrease < 1e-8 and "
             "max |delta log sigma| < 1e-3, or relative gradient < 1e-8, within 60). rel. L1 and Dice area "
             "weighted (`invprob.solvers.eit.metrics`); \"objective - new\": the old solver's final smoothed "
             "objective minus the new one's (> 0: the new one went lower).\n\n")
    text += markdown_table(rows)
    print(text)
    if not args.quick:
        write_section("eit_tv_map", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
