"""KIT4 real tank data: every ``datamat_*`` reconstructed absolute and as a difference against ``datamat_1_0``.

Reads the 21 KIT4 files (Hauptmann et al. 2017; see shared/data/kit4/README.md beside the repository), fits
the background conductivity and contact impedance once on the empty tank ``datamat_1_0`` (its relative residual
is the model error; the noise std comes from reciprocal measurement pairs), then for every case computes the
Gauss-Newton MAP and the Laplace posterior (mean and per-cell std) in log-conductivity, absolute and linearised
difference imaging.
Cases whose background changed (``datamat_8_2``) are detected and marked in the figure.

Writes ``eit_kit4_absolute.png``, ``eit_kit4_difference.png`` (MAP | mean | std per case, one panel
per figure) and ``eit_kit4_summary.json`` into ``--out`` (default ``kit4_output``).
Run:  python examples/eit_kit4.py [--out DIR] [--h 0.09]
(about 5 minutes on 2 cores at the default mesh).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="folder with datamat_*.mat (default: kit4_data_dir())")
    ap.add_argument("--out", default="kit4_output", help="output folder (created)")
    ap.add_argument("--h", type=float, default=0.09, help="mesh size relative to the radius 14 cm")
    ap.add_argument("--method", default="gn", choices=("gn", "pbrwp"), help="gn: MAP + Laplace; pbrwp: + 40 particles")
    ap.add_argument("--cases", nargs="*", default=None, help="subset, e.g. 1_1 8_2")
    args = ap.parse_args(argv)

    import invprob.operators.eit as eit
    from invprob.apps.eit_figures import panel_figure
    from invprob.results import atomic_write_json
    from invprob.solvers.eit import ReconConfig, reconstruct
    from invprob.tuning import estimate_noise_reciprocity

    data_dir = Path(args.data) if args.data else eit.kit4_data_dir()
    files = sorted(data_dir.glob("datamat_*.mat"))
    if not files:
        raise SystemExit(f"no datamat_*.mat in {data_dir}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    R, layout = eit.kit4_layout()
    mesh = eit.disk_mesh(R, layout, h=args.h * R)
    ref = eit.load_kit4(data_dir / "datamat_1_0.mat")
    rec = estimate_noise_reciprocity(ref)
    noise, pairs = rec.std, rec.n_pairs
    fit = eit.fit_homogeneous(eit.EIT(mesh, ref.protocol, 0.01), ref.data)
    background = {"sigma": fit.sigma, "contact_impedance": fit.contact_impedance}
    print(
        f"mesh {mesh.n_cells} cells; empty tank: sigma {fit.sigma:.4f}, contact impedance "
        f"{float(np.mean(fit.contact_impedance)):.4f}, misfit {100 * fit.misfit:.2f} %; reciprocity noise "
        f"{noise:.4g} ({pairs} pairs)",
        flush=True,
    )
    cases = [f.stem.replace("datamat_", "") for f in files if f.stem != "datamat_1_0"]
    if args.cases:
        cases = [c for c in cases if c in args.cases]
    rows = {"absolute": [], "difference": []}
    summary = {
        "mesh_cells": mesh.n_cells,
        "background": {"sigma": fit.sigma, "misfit": fit.misfit, "contact_impedance": fit.contact_impedance.tolist()},
        "noise_reciprocity": noise,
        "cases": {},
    }
    t_all = time.perf_counter()
    for case in cases:
        d = eit.load_kit4(data_dir / f"datamat_{case}.mat")
        entry = {}
        for mode in ("absolute", "difference"):
            t0 = time.perf_counter()
            cfg = ReconConfig(method=args.method, difference=mode == "difference")
            res = reconstruct(d, mesh, cfg, reference=ref, radius=R, background=background)
            info = res.info
            changed = bool(info.get("background_check", {}).get("background_changed", False))
            label = f"{case}{' (bg changed!)' if changed else ''}"
            rows[mode].append((label, res))
            entry[mode] = {
                "relative_misfit_map": info["relative_misfit"]["map"],
                "noise_plus_model_error": info["relative_misfit"]["noise_plus_model_error"],
                "background_changed": changed,
                "map_median_sigma": info.get("background_check", {}).get("map_median_sigma"),
                "data_background_sigma": info.get("background_check", {}).get("data_homogeneous_sigma"),
                "map_min": float(res.map.min()),
                "map_max": float(res.map.max()),
                "std_median": float(np.median(res.std)),
                "time_s": time.perf_counter() - t0,
            }
            print(
                f"{case:>4} {mode:<10} misfit {100 * entry[mode]['relative_misfit_map']:.2f} % (noise + model "
                f"{100 * entry[mode]['noise_plus_model_error']:.2f} %), sigma in [{entry[mode]['map_min']:.3g}, "
                f"{entry[mode]['map_max']:.3g}], {entry[mode]['time_s']:.1f} s"
                f"{'  BACKGROUND CHANGED' if changed else ''}",
                flush=True,
            )
        summary["cases"][case] = entry
    for mode, rr in rows.items():
        panel_figure(
            mesh,
            rr,
            out / f"eit_kit4_{mode}.png",
            radius=R,
            title=f"KIT4 {mode} imaging ({mesh.n_cells} cells, {args.method}): MAP | mean | std [S/m-like units]",
        )
    summary["time_s"] = time.perf_counter() - t_all
    atomic_write_json(out / "eit_kit4_summary.json", summary)
    print(
        f"wrote {out}/eit_kit4_absolute.png, eit_kit4_difference.png, eit_kit4_summary.json "
        f"in {summary['time_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
