"""Learned KIT4 difference reconstruction (sparse RWPO transformer) against the Gauss-Newton MAP and the background.

Trains (``--train``) the sparse RWPO transformer ("l1") and, with the same budget (steps, batch, particles, data),
its dense-attention and plain-flow baselines on simulated KIT4 cases (:mod:`invprob.solvers.learned.kit4`), ships
the sparse model in ``invprob/data/models/eit_kit4``, and evaluates the shipped model (default) on held-out
synthetic cases (fixed seed, not in the training or validation sets) against the pipeline's Gauss-Newton MAP with the
Gaussian and TV priors (``invprob.solvers.eit.reconstruct``, difference mode, the same reference frame) and the
constant background; then reconstructs the real KIT4 cases (all with targets but 8_x, against ``datamat_1_0``) with
the shipped model next to the pipeline's Gaussian difference MAP (figure, correlations). Writes the ``eit_learned``
section of ``benchmarks/RESULTS.md`` once, at the end.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eit_learned.py --train   # train, ship, evaluate, write
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eit_learned.py           # evaluate the shipped model, write
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eit_learned.py --quick   # smoke run, writes nothing

Simulated sets are cached in ``--cache`` (default ``$TMPDIR/invprob_eit_learned``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import header, markdown_table, write_section  # noqa: E402

SECTION = "eit_learned"
SEEDS = {"train": 1, "val": 2, "test": 4242}  # the held-out test set: seed 4242, never used for training
FIG = HERE / "figures" / "eit_learned_kit4.png"
KIT4_CASES = ("1_1", "1_2", "1_3", "1_4", "2_1", "2_2", "2_3", "2_5", "2_6", "3_2", "3_3", "3_4", "3_5",
              "4_1", "4_2", "4_3", "4_4", "5_1", "6_5")


def _problem():
    import invprob.operators.eit as eit
    from invprob.solvers.learned.kit4 import KIT4Problem

    ref = eit.load_kit4(eit.kit4_data_dir() / "datamat_1_0.mat")
    return KIT4Problem.from_reference(ref), ref


def _dataset(problem, name: str, n: int, cache: Path):
    from invprob.solvers.learned.kit4 import KIT4Samples

    path = cache / f"{name}_{n}_seed{SEEDS[name]}_{problem.fingerprint()['mesh_hash']}.npz"
    if path.exists():
        return KIT4Samples.load(path), 0.0
    t0 = time.perf_counter()
    s = problem.simulate(n, seed=SEEDS[name])
    wall = time.perf_counter() - t0
    cache.mkdir(parents=True, exist_ok=True)
    s.save(path)
    print(f"simulated {n} {name} cases in {wall:.0f} s", flush=True)
    return s, wall


def _frames(problem, samples, i):
    import invprob.operators.eit as eit

    shape = (problem.currents.shape[0], problem.measurements.shape[0])
    data = eit.EITData(problem.currents, problem.measurements, samples.frame[i].reshape(shape))
    ref = eit.EITData(problem.currents, problem.measurements, samples.reference[i].reshape(shape))
    return data, ref


def _fits(problem, samples, cache: Path, name: str):
    """Background fits of each case's reference frame (shared by the learned method and the MAP)."""
    from invprob.solvers.learned.kit4 import fit_reference

    path = cache / f"{name}_{len(samples)}_fits_{problem.fingerprint()['mesh_hash']}.json"
    if path.exists():
        return json.loads(path.read_text())
    fits = [fit_reference(_frames(problem, samples, i)[1], problem.mesh) for i in range(len(samples))]
    path.write_text(json.dumps(fits))
    return fits


# ------------------------------------------------------------------------------------------------- metrics
def _case_metrics(x_hat, sigma_hat, x, sigma_bg, sigma_bg_fit, areas):
    """Errors of one estimate: rel. L1 of sigma and of the log-contrast (unweighted and area weighted), Dice."""
    from invprob.solvers.eit.metrics import dice_scores, segment_three_class

    sigma = sigma_bg * np.exp(x)
    a = areas
    return {
        "l1_sigma": float(np.abs(sigma_hat - sigma).sum() / np.abs(sigma).sum()),
        "l1_log": float(np.abs(x_hat - x).sum() / np.abs(x).sum()),
        "l1_sigma_area": float((a * np.abs(sigma_hat - sigma)).sum() / (a * np.abs(sigma)).sum()),
        "l1_log_area": float((a * np.abs(x_hat - x)).sum() / (a * np.abs(x)).sum()),
        "dice": dice_scores(segment_three_class(sigma_hat, sigma_bg_fit), segment_three_class(sigma, sigma_bg),
                            a)["mean"],
    }


def _uq_metrics(theta_mean, theta_std, mean_c, std_c, x, sigma_bg, areas, crps):
    sigma = sigma_bg * np.exp(x)
    theta = x + math.log(sigma_bg)
    inside = np.abs(mean_c - sigma) <= 2 * std_c
    return {"cov_sigma": float(inside.mean()), "cov_sigma_area": float((areas * inside).sum() / areas.sum()),
            "cov_theta": float(np.mean(np.abs(theta_mean - theta) <= 2 * theta_std)), "crps": float(crps),
            "std_theta": float(np.mean(theta_std))}


def _summ(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def eval_learned(model, problem, test, fits, n_particles: int = 64):
    """Metrics of a learned model's mean/std on the test cases (particles of theta = x + log sigma_bg fitted)."""
    from invprob.solvers.eit.config import lognormal_moments
    from invprob.solvers.learned.training import crps_loss

    areas = np.asarray(problem.mesh.areas)
    t0 = time.perf_counter()
    xs = model.particles(test.cond, n_particles, seed=123)
    wall = (time.perf_counter() - t0) / len(test)
    rows = []
    for i in range(len(test)):
        sb_fit, sb = fits[i]["sigma"], float(test.sigma_bg[i])
        theta = xs[i].double().numpy() + math.log(sb_fit)
        tm, ts = theta.mean(0), theta.std(0, ddof=1)
        mean_c, std_c = lognormal_moments(tm, ts)
        crps = float(crps_loss(torch.as_tensor(theta)[None], torch.as_tensor(test.x[i] + math.log(sb))[None])[0])
        r = _case_metrics(tm - math.log(sb), mean_c, test.x[i], sb, sb_fit, areas)
        r.update(_uq_metrics(tm, ts, mean_c, std_c, test.x[i], sb, areas, crps / theta.shape[1]))
        rows.append(r)
    return rows, wall


def eval_map(problem, test, fits, prior: str, n: int):
    """The pipeline's Gauss-Newton MAP (difference mode, same reference frame and background fit) on ``n`` cases."""
    from invprob.solvers.eit import ReconConfig, reconstruct
    from invprob.solvers.learned.kit4 import gaussian_crps

    areas = np.asarray(problem.mesh.areas)
    cfg = ReconConfig(prior=prior, difference=True, method="gn")
    rows, times, conv = [], [], 0
    for i in range(n):
        data, ref = _frames(problem, test, i)
        sb_fit, sb = fits[i]["sigma"], float(test.sigma_bg[i])
        t0 = time.perf_counter()
        res = reconstruct(data, problem.mesh, cfg, reference=ref, radius=problem.radius,
                          background={"sigma": sb_fit, "contact_impedance": fits[i]["contact_impedance"]})
        times.append(time.perf_counter() - t0)
        conv += bool(res.info["map_solver"].get("converged", True))
        tmap = res.theta_map
        r = _case_metrics(tmap - math.log(sb), res.map, test.x[i], sb, sb_fit, areas)
        theta = test.x[i] + math.log(sb)
        crps = float(np.mean(gaussian_crps(tmap, res.theta_std, theta)))
        r.update(_uq_metrics(tmap, res.theta_std, res.mean, res.std, test.x[i], sb, areas, crps))
        rows.append(r)
        if (i + 1) % 25 == 0:
            print(f"  MAP {prior}: {i + 1}/{n} cases, {statistics.mean(times):.2f} s each", flush=True)
    return rows, statistics.mean(times), conv


def eval_background(problem, test, fits):
    areas = np.asarray(problem.mesh.areas)
    rows = []
    for i in range(len(test)):
        sb_fit, sb = fits[i]["sigma"], float(test.sigma_bg[i])
        n = test.x.shape[1]
        rows.append(_case_metrics(np.full(n, math.log(sb_fit / sb)), np.full(n, sb_fit), test.x[i], sb, sb_fit,
                                  areas))
    return rows


# ------------------------------------------------------------------------------------------------- KIT4 real data
def _wcorr(a, b, w):
    a = a - np.average(a, weights=w)
    b = b - np.average(b, weights=w)
    return float(np.sum(w * a * b) / math.sqrt(np.sum(w * a * a) * np.sum(w * b * b)))


def kit4_cases(model, problem, ref, quick: bool):
    import invprob.operators.eit as eit
    from invprob.solvers.eit import ReconConfig, reconstruct
    from invprob.solvers.learned.kit4 import fit_reference, reconstruct_learned

    fit = fit_reference(ref, problem.mesh)
    areas = np.asarray(problem.mesh.areas)
    out = []
    for case in KIT4_CASES[:3] if quick else KIT4_CASES:
        data = eit.load_kit4(eit.kit4_data_dir() / f"datamat_{case}.mat")
        t0 = time.perf_counter()
        lr = reconstruct_learned(data, ref, model=model, mesh=problem.mesh, background=fit)
        t_l = time.perf_counter() - t0
        t0 = time.perf_counter()
        mr = reconstruct(data, problem.mesh, ReconConfig(prior="gaussian", difference=True, method="gn"),
                         reference=ref, radius=problem.radius, background=fit)
        t_m = time.perf_counter() - t0
        out.append({"case": case, "learned": lr, "map": mr, "t_learned": t_l, "t_map": t_m,
                    "in_range": lr.info["condition"]["in_training_range"],
                    "z_norm": lr.info["condition"]["whitened_norm"],
                    "corr": _wcorr(lr.mean, mr.map, areas),
                    "corr_log": _wcorr(np.log(lr.mean), mr.theta_map, areas)})
        print(f"  KIT4 {case}: corr {out[-1]['corr']:.3f}", flush=True)
    return out


def kit4_figure(problem, cases) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.tri as mtri

    mesh = problem.mesh
    tri = mtri.Triangulation(mesh.points[:, 0], mesh.points[:, 1], mesh.triangles)
    per_row = 4
    nr = -(-len(cases) // per_row)
    fig, axes = plt.subplots(nr, 3 * per_row, figsize=(2.0 * 3 * per_row, 2.2 * nr), squeeze=False)
    smax = float(np.median([np.quantile(c["learned"].std, 0.99) for c in cases]))  # an outlier case saturates
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, c in enumerate(cases):
        r, j = divmod(k, per_row)
        vals = np.concatenate([c["map"].map, c["learned"].mean])
        lo, hi = float(np.quantile(vals, 0.005)), float(np.quantile(vals, 0.995))
        for m, (name, v, cmap, vmin, vmax) in enumerate((
            (f"{c['case']} MAP (Gauss.)", c["map"].map, "viridis", lo, hi),
            (f"learned mean (r={c['corr']:.2f})", c["learned"].mean, "viridis", lo, hi),
            ("learned std" + ("" if c["in_range"] else " (outside training range)"), c["learned"].std, "magma",
             0.0, smax),
        )):
            ax = axes[r, 3 * j + m]
            ax.tripcolor(tri, facecolors=np.asarray(v, float), vmin=vmin, vmax=vmax, cmap=cmap, shading="flat")
            ax.set_aspect("equal")
            ax.set_title(name, fontsize=7)
    fig.suptitle("KIT4 difference reconstructions against datamat_1_0: pipeline Gaussian MAP | learned mean | "
                 "learned std (conductivity; std on one scale for all cases, saturating)", fontsize=9)
    FIG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIG, dpi=80, bbox_inches="tight")
    plt.close(fig)


# ------------------------------------------------------------------------------------------------- main
def _row(label, rows, extra=None):
    r = {"method": label,
         "rel. L1 sigma": f"{_summ(rows, 'l1_sigma'):.4f}",
         "rel. L1 log-contrast": f"{_summ(rows, 'l1_log'):.3f}",
         "rel. L1 sigma (area)": f"{_summ(rows, 'l1_sigma_area'):.4f}",
         "rel. L1 log-contrast (area)": f"{_summ(rows, 'l1_log_area'):.3f}",
         "Dice (3 classes)": f"{_summ(rows, 'dice'):.3f}"}
    if "cov_sigma" in rows[0]:
        r.update({"coverage ±2 std (sigma, cells / area)": f"{_summ(rows, 'cov_sigma'):.3f} / "
                                                              f"{_summ(rows, 'cov_sigma_area'):.3f}",
                  "coverage ±2 std (log sigma)": f"{_summ(rows, 'cov_theta'):.3f}",
                  "CRPS (log sigma, per cell)": f"{_summ(rows, 'crps'):.4f}",
                  "mean std (log sigma)": f"{_summ(rows, 'std_theta'):.3f}"})
    r.update(extra or {})
    return r


def _summary(rows):
    return {k: _summ(rows, k) for k in rows[0]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="store_true", help="train the three models and ship the sparse one")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sets, few steps, writes nothing")
    p.add_argument("--steps", type=int, default=800, help="training steps per model (same for all three)")
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-val", type=int, default=300)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--n-tv", type=int, default=60, help="test cases for the TV MAP (the first N)")
    p.add_argument("--methods", default="l1,dense,none")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "invprob_eit_learned"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.n_train, args.n_val, args.n_test, args.n_tv, args.steps = 200, 40, 12, 4, 10
    cache = Path(args.cache)
    t_all = time.perf_counter()
    from invprob.solvers.learned.kit4 import LearnedKIT4Model, default_model_dir, train_kit4

    problem, ref = _problem()
    test, _ = _dataset(problem, "test", args.n_test, cache)
    fits = _fits(problem, test, cache, "test")
    baselines, shipped = {}, None
    if args.train:
        train, t_sim = _dataset(problem, "train", args.n_train, cache)
        val, _ = _dataset(problem, "val", args.n_val, cache)
        for att in args.methods.split(","):
            model = train_kit4(train, val, problem.fingerprint(), problem.currents, problem.measurements,
                               attention=att, n_iter=args.steps, seed=0)
            rows, t_inf = eval_learned(model, problem, test, fits)
            tr = model.meta["training"]
            baselines[att] = {"summary": _summary(rows), "train_s": tr["wall_s"], "inference_s": t_inf,
                              "std_scale": model.std_scale, "n_params": sum(q.numel() for q in
                                                                           model.network.parameters())}
            print(f"{att}: trained {tr['wall_s']:.0f} s; rel L1 sigma {_summ(rows, 'l1_sigma'):.4f}, log "
                  f"{_summ(rows, 'l1_log'):.3f}, cov {_summ(rows, 'cov_sigma'):.3f}, crps {_summ(rows, 'crps'):.4f}"
                  f", std scale {model.std_scale:.3f}", flush=True)
            if att == "l1":
                shipped = (model, rows)
        if shipped is not None and not args.quick:
            model, rows = shipped
            s = _summary(rows)
            model.meta["heldout"] = {"n_phantoms": len(test), "seed": SEEDS["test"], "n_particles": 64,
                                     "particle_seed": 123, "coverage_2std_sigma": s["cov_sigma"],
                                     "rel_l1_sigma": s["l1_sigma"], "rel_l1_log": s["l1_log"], "crps": s["crps"],
                                     "per_case_l1_log_first8": [r["l1_log"] for r in rows[:8]],
                                     "per_case_l1_sigma_first8": [r["l1_sigma"] for r in rows[:8]]}
            model.meta["baselines_same_budget"] = baselines
            model.meta["data"] = {"n_train": len(train), "n_val": len(val), "seeds": SEEDS,
                                  "simulation_s": t_sim, "phantoms": str(problem.phantoms)}
            model.save(default_model_dir())
            print(f"shipped the l1 model to {default_model_dir()}", flush=True)
    if args.train and shipped is not None:
        model, rows_l = shipped
        _, t_inf = eval_learned(model, problem, test.subset(slice(0, 8)), fits)
    else:
        model = LearnedKIT4Model.load()
        rows_l, t_inf = eval_learned(model, problem, test, fits)
    baselines = baselines or model.meta.get("baselines_same_budget", {})
    print(f"shipped l1: rel L1 sigma {_summ(rows_l, 'l1_sigma'):.4f}, log {_summ(rows_l, 'l1_log'):.3f}, cov "
          f"{_summ(rows_l, 'cov_sigma'):.3f}", flush=True)
    rows_g, t_g, conv_g = eval_map(problem, test, fits, "gaussian", len(test))
    print(f"Gaussian MAP: rel L1 sigma {_summ(rows_g, 'l1_sigma'):.4f}, log {_summ(rows_g, 'l1_log'):.3f}", flush=True)
    n_tv = min(args.n_tv, len(test))
    rows_t, t_t, conv_t = eval_map(problem, test, fits, "tv", n_tv)
    print(f"TV MAP ({n_tv}): rel L1 sigma {_summ(rows_t, 'l1_sigma'):.4f}, log {_summ(rows_t, 'l1_log'):.3f}",
          flush=True)
    rows_b = eval_background(problem, test, fits)
    cases = kit4_cases(model, problem, ref, args.quick)
    if not args.quick:
        kit4_figure(problem, cases)
    wall = time.perf_counter() - t_all
    if args.quick or args.no_write:
        return 0

    # ---------------------------------------------------------------------------------------------- the section
    n = len(test)
    table = [
        _row("learned l1 (shipped; posterior mean of 64 particles)", rows_l,
             {"s per case": f"{t_inf:.3f} (network, batched; + the shared background fit)"}),
        _row(f"Gauss-Newton MAP, Gaussian prior (pipeline difference mode; Laplace std) [{n}]", rows_g,
             {"s per case": f"{t_g:.2f} ({conv_g}/{n} converged)"}),
        _row(f"Gauss-Newton MAP, TV prior (pipeline difference mode; Laplace-majorizer std) [first {n_tv}]", rows_t,
             {"s per case": f"{t_t:.2f} ({conv_t}/{n_tv} converged)"}),
        _row("learned l1 on the TV subset (same cases)", rows_l[:n_tv]),
        _row("Gaussian MAP on the TV subset (same cases)", rows_g[:n_tv]),
        _row("constant background (fitted to the reference frame)", rows_b),
    ]
    cols = list(table[0].keys())
    base_rows = []
    for att, b in baselines.items():
        s = b["summary"]
        base_rows.append({"model": att, "rel. L1 sigma": f"{s['l1_sigma']:.4f}", "rel. L1 log-contrast":
                          f"{s['l1_log']:.3f}", "Dice": f"{s['dice']:.3f}",
                          "coverage ±2 std (sigma)": f"{s['cov_sigma']:.3f}",
                          "CRPS (log sigma, per cell)": f"{s['crps']:.4f}", "spread factor": f"{b['std_scale']:.3f}",
                          "train s": f"{b['train_s']:.0f}", "parameters": b["n_params"]})
    sl, sg, sb = _summary(rows_l), _summary(rows_g), _summary(rows_b)
    checks = [
        ("learned mean beats the Gaussian MAP in rel. L1 of sigma", sl["l1_sigma"] < sg["l1_sigma"]),
        ("learned mean beats the Gaussian MAP in rel. L1 of log sigma", sl["l1_log"] < sg["l1_log"]),
        ("learned mean beats the background in rel. L1 of sigma", sl["l1_sigma"] < sb["l1_sigma"]),
        ("learned mean beats the background in rel. L1 of log sigma", sl["l1_log"] < sb["l1_log"]),
        ("coverage of the learned mean ± 2 std (sigma, cells) in [0.85, 0.99]", 0.85 <= sl["cov_sigma"] <= 0.99),
        ("CRPS of the learned particles below the Laplace posterior's (Gaussian MAP)", sl["crps"] < sg["crps"]),
    ]
    corr = [{"case": c["case"], "corr (sigma, area-weighted)": f"{c['corr']:.3f}",
             "corr (log sigma)": f"{c['corr_log']:.3f}",
             "whitened data norm (in training range?)": f"{c['z_norm']:.1f} ({'yes' if c['in_range'] else 'NO'})",
             "learned s": f"{c['t_learned']:.2f}",
             "MAP s": f"{c['t_map']:.2f}"} for c in cases]
    meta = model.meta
    wdir = default_model_dir()
    size = sum(f.stat().st_size for f in wdir.iterdir() if f.is_file())
    tr = meta.get("training", {})
    text = header("Learned KIT4 difference reconstruction (sparse RWPO transformer) vs Gauss-Newton MAP")
    text += (
        f"- total wall time {wall / 60:.1f} min (this run); the shipped model `invprob/data/models/eit_kit4` "
        f"({size / 1e6:.2f} MB on disk, float32; trained {tr.get('date')}, {tr.get('wall_s', float('nan')):.0f} s, "
        f"{tr.get('n_iter')} steps of {tr.get('batch_size')} cases x {tr.get('n_particles')} particles, CRPS, "
        f"1 torch thread, on {tr.get('n_train')} simulated cases; spread factor {model.std_scale:.3f} set on "
        f"{meta.get('validation', {}).get('n')} validation cases).\n"
        "- problem: the CLI's KIT4 inversion mesh (radius 14, 16 electrodes, h = 0.06 R, "
        f"{problem.n_cells} cells), the archive's 79 patterns x 16 measurements; cases simulated on a finer mesh "
        f"(h = 0.04 R, {problem.fine.n_cells} cells): {problem.phantoms}; background and contact impedance about "
        f"the values fitted to datamat_1_0 (sigma {problem.sigma0:.4f}, z {problem.contact0:.4g}); frame and "
        "reference frame with independent noise.\n"
        "- network: condition = (y - y_ref) / rms(y_ref) projected on its 48 leading principal components "
        "(whitened); first guess = the ridge least-squares linear map from them to the log-contrast (fitted on the "
        "training set, kept fixed), base particles first guess + 0.05 N(0, I); 4 blocks (ResNet drift, hidden 32, "
        "trained) each followed by the sparse RWPO attention (l1, lambda learned from 0.2) / dense attention / "
        "nothing (plain flow); h = T = 1; Adam lr 1e-3 cosine to 1e-4.\n"
        f"- held-out test set: {n} cases, seed {SEEDS['test']} (training seed {SEEDS['train']}, validation seed "
        f"{SEEDS['val']}); every method uses the same background fit of each case's reference frame (homogeneous "
        "conductivity and contact impedance, the pipeline's fit).\n"
        "- metrics per case, then the mean over cases: rel. L1 of sigma = sum |s_hat - s| / sum |s| "
        "(as `benchmarks/rwpo.py`), rel. L1 of the log-contrast x = log(sigma / sigma_bg,true): sum |x_hat - x| / "
        "sum |x| (= rwpo.py's log-sigma error, whose background was 1; the constant background scores about 1), "
        "both unweighted and area weighted; Dice: mean over the three classes of "
        "`metrics.segment_three_class` (20 % contrast, estimate about its fitted background, truth about its own); "
        "coverage: share of cells with |mean - truth| <= 2 std (sigma; the learned std from the log-normal moments "
        "of the particles, the MAP's from the Laplace std); CRPS in log sigma, mean over cells: the fair CRPS of the "
        "64 learned particles, the closed-form Gaussian CRPS of the Laplace posterior N(theta_MAP, std_Laplace^2). "
        "For the MAP rows the estimate of sigma is exp(theta_MAP).\n"
        f"- figure: `benchmarks/figures/eit_learned_kit4.png` (real KIT4 cases: Gaussian MAP | learned mean | "
        "learned std).\n\n"
    )
    text += markdown_table(table, cols)
    text += "\nSame budget (same data, steps, batch, particles, architecture but the attention), trained in the " \
            "`--train` run that shipped the model, on the same held-out set:\n\n"
    text += markdown_table(base_rows) if base_rows else "(no baselines recorded)\n"
    text += "\nAcceptance:\n\n" + "".join(f"- {'PASS' if ok else 'MISS'}: {name}\n" for name, ok in checks)
    text += ("\nReal KIT4 cases (against datamat_1_0), area-weighted Pearson correlation between the learned mean "
             "and the pipeline's Gaussian difference MAP on the same mesh:\n\n")
    text += markdown_table(corr)
    cs = [c["corr"] for c in cases]
    text += f"\nCorrelation over the {len(cs)} cases: median {statistics.median(cs):.3f}, min {min(cs):.3f}, " \
            f"max {max(cs):.3f}. Training range: the whitened difference data's norm is at most " \
            f"{meta.get('training', {}).get('whitened_norm_max', float('nan')):.1f} on the simulated training " \
            "cases; a frame beyond it is flagged (warning and `info['condition']`) and its reconstruction is not " \
            "to be trusted. Learned s: the whole `reconstruct_learned` call (background fit given), MAP s: the " \
            "pipeline's `reconstruct` (background fit given).\n"
    write_section(SECTION, text)
    print(f"wrote the {SECTION} section of {HERE / 'RESULTS.md'} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
