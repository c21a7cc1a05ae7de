"""Mirror and preconditioned descent in Wasserstein space: the three experiments of examples/wasserstein_descent.py.

Runs the example's experiment functions at their full (non-quick) settings in one run and prints (or, with
``--write``, writes) the ``wasserstein_descent`` section of ``benchmarks/RESULTS.md`` and its three figures
``benchmarks/figures/wasserstein_descent_{interaction,gaussian,preconditioned}.png``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/wasserstein_descent.py            # print the section
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/wasserstein_descent.py --write    # and write it + figures
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

from _report import header, markdown_table, write_section  # noqa: E402


def _example():
    """``examples/wasserstein_descent.py`` as the module ``wasserstein_descent_example`` (this file shares its name)."""
    spec = importlib.util.spec_from_file_location("wasserstein_descent_example",
                                                  HERE.parent / "examples" / "wasserstein_descent.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_ex = _example()
figures, gaussian, interaction, preconditioned = _ex.figures, _ex.gaussian, _ex.interaction, _ex.preconditioned

FIG = HERE / "figures"
PREFIX = "wasserstein_descent_"
TOL_W = 1e-4  # (i): iterations to best final W + TOL_W, as the example
TOL_KL = 1e-6  # (ii): iterations to KL < TOL_KL
REL_TOL = 1e-2  # (iii): iterations to best final + REL_TOL * initial value, as the example


def first_hit(curve: torch.Tensor, level: float) -> int | None:
    hit = (curve <= level).nonzero()
    return int(hit[0]) if len(hit) else None


def _it(k: int | None) -> int | str:
    return "-" if k is None else k


def _mean_it(ks: list[int | None]) -> float | str:
    return "-" if any(k is None for k in ks) else sum(ks) / len(ks)


def verdict(where: str, name: str, base: str, it, base_it, final: float, base_final: float, fmt: str) -> str | None:
    """A plain-words sentence when ``name`` does not beat ``base`` on iterations to tolerance or on final value
    (lower is better for both; ``None``: tolerance not reached); ``None`` when it beats it on both."""
    lost, won = [], []
    its = f"iterations to tolerance {_num(it)} against {_num(base_it)}"
    if it is None and base_it is None:
        lost.append("neither reaches the tolerance")
    elif it is None or (base_it is not None and it >= base_it):
        lost.append(its)
    else:
        won.append(its)
    fin = f"final value {final:{fmt}} against {base_final:{fmt}}"
    (lost if final >= base_final - 1e-12 * abs(base_final) else won).append(fin)
    if not lost:
        return None
    return (f"{where}, {name} does not beat {base}: " + "; ".join(lost)
            + (f" (it is better on {won[0]})" if won else "") + ".")


def _num(k) -> str:
    return "not reached" if k is None else (f"{k:.3g}" if isinstance(k, float) else str(k))


def interaction_section(inter: dict, walls: dict) -> tuple[str, list[str]]:
    best = min(float(v[-1]) for _, v in inter.values())
    rows, iters = [], {}
    for name, (tau, v) in inter.items():
        iters[name] = first_hit(v, best + TOL_W)
        rows.append({"scheme": "WGD (plain)" if name == "WGD" else f"mirror {name}", "tau": tau,
                     "iterations to tol": _it(iters[name]), "final W": float(v[-1]), "wall time (s)": walls[name]})
    n_iter = len(next(iter(inter.values()))[1]) - 1
    text = (f"### (i) Interaction energy W, ill-conditioned Sigma (eigenvalues 1, 0.05), {n_iter} iterations\n\n"
            f"Tolerance: best final W + {TOL_W:g} = {best + TOL_W:.6g} (-1/12 = -0.0833333 is W of particles evenly "
            "spread on the ellipse ||x||^2_{Sigma^-1} = 1/3); "
            "`-`: not reached.\n\n" + markdown_table(rows))
    w_final, w_it = float(inter["WGD"][1][-1]), iters["WGD"]
    notes = [verdict("On the interaction energy", f"mirror descent {name}", "plain WGD", iters[name], w_it,
                     float(v[-1]), w_final, ".6g") for name, (_, v) in inter.items() if name != "WGD"]
    return text, [n for n in notes if n]


def gaussian_section(gauss: dict) -> tuple[str, list[str]]:
    rows, iters = [], {}
    for name, (tau, v) in gauss.items():
        iters[name] = first_hit(v, TOL_KL)
        rows.append({"scheme": name, "tau": tau, f"iterations to KL < {TOL_KL:g}": _it(iters[name]),
                     "final KL": float(v[-1])})
    n_iter = len(next(iter(gauss.values()))[1]) - 1
    text = (f"### (ii) Gaussian target N(0, Sigma), d = 10, Sigma eigenvalues 1 .. 0.01, from N(0, I), {n_iter} "
            "iterations\n\nClosed-form Bures-Wasserstein schemes on (m, C); `bw_forward_backward` is the "
            "Wasserstein gradient (forward-backward) baseline. Final KL values at the 1e-16 level are round-off.\n\n"
            + markdown_table(rows))
    base = iters.get("bw_forward_backward")
    notes = [f"On the Gaussian target, {name} does not beat the Bures-Wasserstein forward-backward scheme: "
             f"iterations to KL < {TOL_KL:g} {_num(k)} against {_num(base)}."
             for name, k in iters.items() if name != "bw_forward_backward"
             and (k is None or (base is not None and k >= base))]  # final KL: all at round-off, not compared
    return text, notes


def preconditioned_section(prec_pairs: dict) -> tuple[str, list[str]]:
    parts, notes = [], []
    for key, curves in prec_pairs.items():
        names = list(curves)
        pairs = next(iter(curves.values())).shape[0]
        n_iter = next(iter(curves.values())).shape[1] - 1
        levels = []
        for p in range(pairs):  # same x0 for every scheme on pair p: one initial value
            start = max(float(c[p, 0]) for c in curves.values())
            levels.append(min(float(c[p, -1]) for c in curves.values()) + REL_TOL * start)
        rows, summary = [], {}
        for name in names:
            c = curves[name]
            ks = [first_hit(c[p], levels[p]) for p in range(pairs)]
            row = {"scheme": name}
            for p in range(pairs):
                row[f"pair {p + 1} iters"] = _it(ks[p])
                row[f"pair {p + 1} final"] = float(c[p, -1])
            row["mean iters"] = _mean_it(ks)
            row["mean final"] = float(c[:, -1].mean())
            summary[name] = (row["mean iters"], row["mean final"])
            rows.append(row)
        parts.append(f"#### {key} ({pairs} pairs, {n_iter} iterations)\n\n" + markdown_table(rows))
        wgd = next(n for n in names if n.startswith("WGD"))
        w_it, w_final = summary[wgd]
        for name in names:
            if name == wgd:
                continue
            it, final = summary[name]
            note = verdict(f"On {key} (means over pairs)", name, wgd, None if it == "-" else it,
                           None if w_it == "-" else w_it, final, w_final, ".4g")
            if note:
                notes.append(note)
    text = ("### (iii) Preconditioned WGD against WGD: 10-D Gaussian mixture (100 particles) onto another\n\n"
            "Per pair, the tolerance is the best final value over the four schemes plus "
            f"{REL_TOL:g} x the initial value; `mean iters` is the mean over pairs (`-` if a pair did not reach "
            "it), `mean final` the mean final value. Each scheme's step is the best of a small grid on the first "
            "pair (shown in its name).\n\n" + "\n".join(parts))
    return text, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write the RESULTS.md section and the figures")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    head = header("Wasserstein descent: mirror, preconditioned and Bures-Wasserstein schemes (arXiv 2406.08938)")
    gen = torch.Generator().manual_seed(args.seed)  # the example's order: (i), (ii), (iii) from one generator
    t0 = time.perf_counter()
    walls: dict = {}
    inter = interaction(False, gen, record=walls)
    t1 = time.perf_counter()
    gauss = gaussian(False, gen)
    t2 = time.perf_counter()
    prec_pairs: dict = {}
    prec = preconditioned(False, gen, record=prec_pairs)
    t3 = time.perf_counter()
    sections = [interaction_section(inter, walls), gaussian_section(gauss), preconditioned_section(prec_pairs)]
    notes = [n for _, ns in sections for n in ns]
    figs = [f"{PREFIX}{n}.png" for n in ("interaction", "gaussian", "preconditioned")]
    text = "\n".join([
        head,
        "Full (non-quick) settings of `examples/wasserstein_descent.py` (its experiment functions, imported), "
        f"float64, 1 torch thread. Wall time: (i) {t1 - t0:.1f} s, (ii) {t2 - t1:.1f} s, (iii) {t3 - t2:.1f} s, "
        f"total {t3 - t0:.1f} s.\n",
        *[s for s, _ in sections],
        "### Where a scheme does not beat the baseline (lower is better for both iterations and final value)\n",
        *([f"- {n}" for n in notes] or ["- every scheme beats its baseline here."]), "",
        " ".join(f"![{n}](figures/{n})" for n in figs),
    ])
    print(text)
    if args.write:
        FIG.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            figures(Path(tmp), inter, gauss, prec, dpi=100)
            for n in ("interaction", "gaussian", "preconditioned"):
                shutil.copy(Path(tmp) / f"{n}.png", FIG / f"{PREFIX}{n}.png")
        write_section("wasserstein_descent", text)
        print(f"\nwrote the wasserstein_descent section of {HERE / 'RESULTS.md'} and {', '.join(figs)}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
