"""Coverage of the EIT reconstruction's published uncertainty on synthetic truth, for every prior.

For each synthetic case (circle phantoms: one conductive, one resistive, two inclusions; 1 % and 0.3 % noise; two
inversion meshes) the data are simulated with :func:`invprob.solvers.eit.simulate` on a finer mesh (``0.7 h``, as
``benchmarks/eit_tv_map.py``: no inverse crime), and the default pipeline
(:func:`invprob.solvers.eit.reconstruct`, ``ReconConfig(prior=..., difference=...)``, method ``"auto"``:
Gauss-Newton + Laplace for the Gaussian prior, MAP + PBRWP for TV and L1, published std = Laplace in every case)
runs for the priors gaussian, tv, l1 in absolute and difference mode.

Per prior and mode it reports the share of cells (and of area) whose truth lies in the published ``mean +- 2 std``
(:func:`invprob.solvers.eit.metrics.coverage`), the same in ``log sigma`` (``theta_mean +- 2 theta_std``), the
median std / RMSE ratio, the area-weighted relative L1 error of the mean
(:func:`invprob.solvers.eit.metrics.relative_lp_error`), the calibration status the run records for its std
(``info["uncertainty"]["calibration_status"]``) and the wall time. The target is a coverage in 0.9-0.98 (the
nominal value of a Gaussian +-2 std interval is 0.954; 0.999 would be an interval that is too wide).

The truth on the inversion mesh is the phantom evaluated at each inversion cell's centroid
(``mesh.cell_values(phantom)``: a point value, not a cell average). The pipeline publishes ``mean``/``std`` in
conductivity units (log-normal moments of its ``log sigma`` marginals), so the main comparison is in ``sigma``.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eit_coverage.py --quick   # 2 cases, prints only
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eit_coverage.py           # 12 cases; writes the eit_coverage section
"""

from __future__ import annotations

import argparse
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

TARGET = (0.9, 0.98)
PRIORS = ("gaussian", "tv", "l1")
PHANTOMS = {
    "one conductive": ((0.3, -0.35, 0.3, 2.0),),
    "one resistive": ((-0.3, 0.3, 0.3, 0.5),),
    "two (cond. + res.)": ((0.35, 0.3, 0.3, 2.0), (-0.35, -0.3, 0.3, 0.5)),
}
# (phantom, relative noise, inversion mesh size h): every phantom at both noise levels on both meshes
CASES = tuple((name, noise, h) for h in (0.2, 0.12) for noise in (0.01, 0.003) for name in PHANTOMS)
QUICK_CASES = (("one conductive", 0.01, 0.2), ("two (cond. + res.)", 0.003, 0.2))


def synthetic_cases(cases, seed: int):
    """Yield ``(name, noise, coarse, fine, sim, truth)`` per ``(phantom name, relative noise, h)`` of ``cases``:
    the data simulated on the ``0.7 h`` mesh, the truth the phantom at the ``h`` mesh's centroids (meshes built
    once per ``h``)."""
    import invprob.operators.eit as eit
    from invprob.solvers.eit import Phantom, simulate

    layout = eit.ElectrodeLayout.uniform(16, 0.5)
    meshes: dict[float, tuple] = {}
    for name, noise, h in cases:
        if h not in meshes:
            meshes[h] = (eit.disk_mesh(1.0, layout, h=h), eit.disk_mesh(1.0, layout, h=0.7 * h))
        coarse, fine = meshes[h]
        ph = Phantom(1.0, PHANTOMS[name])
        yield name, noise, coarse, fine, simulate(fine, ph, noise=noise, seed=seed), coarse.cell_values(ph)


def run_case(sim, mesh, truth: np.ndarray, prior: str, difference: bool, seed: int) -> dict:
    """One default-pipeline reconstruction and its coverage / error figures against ``truth`` (sigma per cell)."""
    from invprob.solvers.eit import ReconConfig, reconstruct
    from invprob.solvers.eit.metrics import coverage, relative_lp_error

    cfg = ReconConfig(prior=prior, difference=difference, seed=seed)
    t0 = time.perf_counter()
    try:
        res = reconstruct(sim.data, mesh, cfg, reference=sim.reference, truth=truth, radius=1.0)
    except ValueError as exc:  # the pipeline gave up (e.g. the sampler diverged): recorded, not hidden
        return {"failed": f"{type(exc).__name__}: {exc}", "wall": time.perf_counter() - t0,
                "method": cfg.resolved_method}
    wall = time.perf_counter() - t0
    areas = np.asarray(res.areas)
    cov = coverage(res.mean, res.std, truth, areas)
    cov_log = coverage(res.theta_mean, res.theta_std, np.log(truth), areas)
    rmse = float(np.sqrt(np.mean((res.mean - truth) ** 2)))
    unc = res.info["uncertainty"]
    out = {
        "method": res.info["method"]["used"],
        "estimator": unc["estimator"],
        "calibration": unc["calibration_status"],
        "coverage": cov["cells"],
        "coverage_area": cov["area"],
        "coverage_log": cov_log["cells"],
        "std_over_rmse": float(np.median(res.std)) / rmse,
        "rel_l1": relative_lp_error(res.mean, truth, areas, 1),
        "wall": wall,
        "pipeline_coverage": res.info["errors"]["coverage_2std"],  # the pipeline's own count, cross-check
        "coverage_sampler": float("nan"),
        "fallback": None,
        "failed": None,
    }
    if res.std_sampler is not None:
        out["coverage_sampler"] = coverage(res.mean, res.std_sampler, truth, areas)["cells"]
        out["fallback"] = res.info["sampler"].get("fallback")
    return out


def in_target(v: float) -> bool:
    return TARGET[0] <= v <= TARGET[1]


def summarise(records: list[dict]) -> list[dict]:
    rows = []
    for prior in PRIORS:
        for mode in ("absolute", "difference"):
            every = [r for r in records if r["prior"] == prior and r["mode"] == mode]
            rs = [r for r in every if not r["failed"]]
            if not rs:
                if every:
                    rows.append({"prior": prior, "mode": mode, "runs": f"0 (failed {len(every)})"})
                continue
            cov = [r["coverage"] for r in rs]
            samp = [r["coverage_sampler"] for r in rs if np.isfinite(r["coverage_sampler"])]
            status = sorted({r["calibration"].split(":")[0] for r in rs})
            rows.append({
                "prior": prior, "mode": mode, "method (std)": f"{rs[0]['method']} ({rs[0]['estimator']})",
                "runs": f"{len(rs)}" + (f" (failed {len(every) - len(rs)})" if len(every) > len(rs) else ""),
                "coverage ±2std (cells)": statistics.mean(cov),
                "min-max": f"{min(cov):.3f}-{max(cov):.3f}",
                "coverage (area)": statistics.mean(r["coverage_area"] for r in rs),
                "coverage (log sigma)": statistics.mean(r["coverage_log"] for r in rs),
                "runs in 0.9-0.98": f"{sum(in_target(c) for c in cov)}/{len(rs)}",
                "median std / RMSE": statistics.mean(r["std_over_rmse"] for r in rs),
                "rel. L1 of mean": statistics.mean(r["rel_l1"] for r in rs),
                "calibration_status": ", ".join(status),
                "coverage with sampler std": statistics.mean(samp) if samp else "",
                "sampler fallbacks": sum(bool(r["fallback"]) for r in rs) if rs[0]["method"] == "pbrwp" else "",
                "wall s per run": statistics.mean(r["wall"] for r in rs),
            })
    return rows


def notes(rows: list[dict], records: list[dict]) -> str:
    failed = [r for r in records if r["failed"]]
    rows = [r for r in rows if "coverage ±2std (cells)" in r]
    records = [r for r in records if not r["failed"]]
    within = [f"{r['prior']} {r['mode']}" for r in rows if in_target(r["coverage ±2std (cells)"])]
    wide = [f"{r['prior']} {r['mode']} ({r['coverage ±2std (cells)']:.3f})" for r in rows
            if r["coverage ±2std (cells)"] > TARGET[1]]
    narrow = [f"{r['prior']} {r['mode']} ({r['coverage ±2std (cells)']:.3f})" for r in rows
              if r["coverage ±2std (cells)"] < TARGET[0]]
    within_area = [f"{r['prior']} {r['mode']}" for r in rows if in_target(r["coverage (area)"])]
    wheres = sorted({r["calibration"] for r in records})
    fallbacks = sorted({str(r["fallback"]) for r in records if r["fallback"]})
    mismatch = max(abs(r["coverage"] - r["pipeline_coverage"]) for r in records)
    text = (f"Target {TARGET[0]}-{TARGET[1]} (mean cell coverage over the cases): within it: "
            f"{', '.join(within) or 'none'}; above it (std too wide): {', '.join(wide) or 'none'}; below it "
            f"(std too narrow): {', '.join(narrow) or 'none'}. Judged on the area-weighted coverage instead, within "
            f"the target: {', '.join(within_area) or 'none'} (the many small cells near the electrodes, where "
            "the std is large, weigh more in the cell count than in the area). ")
    text += ("\"median std / RMSE\" is the median published std over the cells divided by the RMSE of the mean "
             "(both sigma, unweighted cells): about 1 when the std has the size of the error, although a few "
             "large errors on the inclusion edges can dominate the RMSE. \"coverage with sampler std\": the same "
             "count with PBRWP's own std (`std_sampler`, not published by default). Calibration status recorded "
             f"by the runs: {'; '.join(wheres)}. ")
    if fallbacks:
        text += (f"Sampler fallbacks (kernel-langevin diverged, the particles' spread is then PBRWP's std): "
                 f"{'; '.join(fallbacks)}. ")
    for r in failed:
        text += f"FAILED run ({r['case']}, {r['prior']} {r['mode']}, left out of the table): {r['failed']}. "
    text += (f"The benchmark's coverage (`invprob.solvers.eit.metrics.coverage`) and the pipeline's own "
             f"`info['errors']['coverage_2std']` differ by at most {mismatch:.2g}.\n")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 cases; prints only (no RESULTS.md)")
    ap.add_argument("--seed", type=int, default=0, help="noise seed of the simulation and the sampler's seed")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    t_start = time.perf_counter()
    records: list[dict] = []
    cases = QUICK_CASES if args.quick else CASES
    for name, noise, coarse, fine, sim, truth in synthetic_cases(cases, args.seed):
        case = f"{name}, {100 * noise:g} %, {coarse.n_cells} cells (data {fine.n_cells})"
        for prior in PRIORS:
            for difference in (False, True):
                r = run_case(sim, coarse, truth, prior, difference, args.seed)
                r.update(case=case, prior=prior, mode="difference" if difference else "absolute")
                records.append(r)
                if r["failed"]:
                    print(f"{case} | {prior} {r['mode']}: FAILED after {r['wall']:.1f} s: {r['failed']}", flush=True)
                    continue
                print(f"{case} | {prior} {r['mode']}: coverage {r['coverage']:.3f} (area {r['coverage_area']:.3f}, "
                      f"log {r['coverage_log']:.3f}, sampler std {r['coverage_sampler']:.3f}), std/RMSE "
                      f"{r['std_over_rmse']:.2f}, L1 {r['rel_l1']:.4f}, {r['wall']:.1f} s", flush=True)
    rows = summarise(records)
    per_case = [{"case": r["case"], "prior": r["prior"], "mode": r["mode"], "coverage": "FAILED"} if r["failed"] else
                {"case": r["case"], "prior": r["prior"], "mode": r["mode"], "coverage": r["coverage"],
                 "area": r["coverage_area"], "log sigma": r["coverage_log"], "std / RMSE": r["std_over_rmse"],
                 "rel. L1": r["rel_l1"],
                 "sampler std cov.": r["coverage_sampler"] if np.isfinite(r["coverage_sampler"]) else "",
                 "fallback": "yes" if r["fallback"] else "", "s": r["wall"]} for r in records]
    text = header("EIT: coverage of the published mean ± 2 std on synthetic truth, per prior")
    text += (f"- total wall time {(time.perf_counter() - t_start) / 60:.1f} min, 1 torch thread, seed {args.seed}; "
             f"{len(cases)} cases (phantom, noise, inversion mesh), each simulated with `simulate` on a 0.7 h mesh, "
             "16 electrodes (adjacent protocol), contact impedance 0.01, homogeneous reference frame; "
             "`reconstruct(data, mesh, ReconConfig(prior=p, difference=d), reference=...)`, method auto; truth = "
             "the phantom at the inversion cells' centroids; coverage of the published conductivity mean ± 2 std "
             "(log-normal moments of the log sigma marginals), and of theta_mean ± 2 theta_std in log sigma.\n\n")
    text += markdown_table(rows) + "\n"
    text += notes(rows, records) + "\n"
    text += "Per run:\n\n" + markdown_table(per_case)
    print(text)
    if not args.quick:
        write_section("eit_coverage", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
