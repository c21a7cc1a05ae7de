"""Bayesian neural-network regression: PBRWP (Adam preconditioner), BRWP, SVGD, ULA and an Adam MAP on one split.

Run: ``python examples/bnn_regression.py [--data diabetes|sine|friedman | --csv PATH --target COL] [--quick]
[--out DIR [--force]]``. The posterior is :class:`invprob.bnn.BNNRegression` (one hidden layer of 50 ReLU units,
Gamma(1, 0.1) priors on the noise and weight precisions, as in Liu & Wang's SVGD experiments), on one random
90/10 split standardised with its training part. Every sampler starts from the same 20 networks and takes the same
number of full-data gradient steps per particle (500; ``--quick``: 60); the MAP is one network trained by
``torch.optim.Adam`` for as many steps. The script prints the test RMSE and test log-likelihood (original units;
mixture over the particles) of each method beside the constant-mean predictor, and with ``--out`` writes
``bnn_regression.png`` (predictive mean against the truth on the test points; for 1-D inputs the predictive band).

The steps below were chosen on a validation part of the diabetes training data (``benchmarks/bnn.py`` tunes them
per data set): PBRWP's Adam preconditioner is created with ``warmup=0``, since ``M = I`` during a warm-up makes the
first steps ``step * grad V`` with ``|grad V|`` in the hundreds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from invprob.bnn import (
    BNNRegression,
    fit_map,
    load_csv_regression,
    load_diabetes,
    make_friedman,
    make_sine,
    predictive_scores,
    split_dataset,
    train_test_splits,
)
from invprob.solvers.samplers import BRWP, PBRWP, SVGD, ULA, AdamPreconditioner

METHODS = ("PBRWP", "BRWP", "SVGD", "ULA", "MAP")
#: default steps (diabetes); benchmarks/bnn.py tunes them per data set on a validation part
STEPS = {"PBRWP": 1e-3, "BRWP": 1e-4, "SVGD": 1e-3, "ULA": 1e-4, "MAP": 1e-2}
T_KERNEL = 1.0  # PBRWP/BRWP kernel time (the package default)
N_PARTICLES = 20  # Liu & Wang's SVGD BNN setting
ULA_SNAPSHOTS = 10  # ULA's ensemble: the chains' states at this many iterations of the second half


def dataset(name: str, *, seed: int = 0):
    """One of the built-in data sets by name."""
    if name == "diabetes":
        return load_diabetes()
    if name == "sine":
        return make_sine(seed=seed)
    if name == "friedman":
        return make_friedman(seed=seed)
    raise ValueError(f"unknown data set {name!r}; use diabetes, sine, friedman or --csv")


def sampler(name: str, step: float):
    """The sampler ``name`` with step ``step`` (one gradient of ``V`` per particle and iteration for all)."""
    if name == "PBRWP":
        return PBRWP(preconditioner=AdamPreconditioner(warmup=0), T=T_KERNEL, step=step, logz="surrogate",
                     uncertainty="particles")
    if name == "BRWP":
        return BRWP(T=T_KERNEL, step=step, logz="surrogate", uncertainty="particles")
    if name == "SVGD":
        return SVGD(step=step, step_rule="adagrad")  # Liu & Wang's AdaGrad rule (their master step 1e-3)
    if name == "ULA":
        return ULA(step=step)
    raise ValueError(f"unknown method {name!r}")


def run_method(name: str, model: BNNRegression, init: torch.Tensor, n_iter: int, step: float, *,
               seed: int = 0) -> tuple[torch.Tensor, dict]:
    """The ensemble of networks ``(N, d)`` that method ``name`` returns, and ``{"wall_s", "max_weight"}``.

    The particle methods return their final particles; ULA the states of its chains at ``ULA_SNAPSHOTS``
    iterations of the second half; MAP one network trained from ``init[0]``.
    """
    t0 = time.perf_counter()
    if name == "MAP":
        theta = fit_map(model, init[:1].double(), n_iter=n_iter, lr=step)
        return theta, {"wall_s": time.perf_counter() - t0, "max_weight": math.nan}
    keep = {n_iter - k * max(1, n_iter // (2 * ULA_SNAPSHOTS)) for k in range(ULA_SNAPSHOTS)}
    states: dict[int, torch.Tensor] = {}

    def callback(it, x, logs):
        if it == n_iter or (name == "ULA" and it in keep):
            states[it] = x.detach().clone()

    res = sampler(name, step).run(model, n_particles=init.shape[0], n_iter=n_iter, rng=seed, init=init,
                                  progress=False, callback=callback)
    theta = torch.cat(list(states.values())) if name == "ULA" else states[n_iter]
    mw = res.info["log"].get("max_weight", [math.nan])[-1]
    return theta, {"wall_s": time.perf_counter() - t0, "max_weight": float(mw)}


def constant_scores(split) -> tuple[float, float]:
    """RMSE and log-likelihood of the constant predictor ``N(mean, var)`` of the training targets."""
    y = split.y_test_raw
    mu, sd = split.scaler.y_mean, split.scaler.y_std
    rmse = float((y - mu).square().mean().sqrt())
    ll = float((-0.5 * (math.log(2 * math.pi * sd**2) + (y - mu).square() / sd**2)).mean())
    return rmse, ll


def run_all(data, *, n_iter: int, steps: dict | None = None, split_seed: int = 0, seed: int = 0,
            methods=METHODS, dtype=torch.float32) -> dict:
    """Every method on split 0 of ``data`` (seeded): ``{name: (scores, info)}`` plus ``"split"``."""
    steps = {**STEPS, **(steps or {})}
    tr, te = train_test_splits(data.n, n_splits=1, seed=split_seed)[0]
    split = split_dataset(data, tr, te)
    model = BNNRegression(split.x_train, split.y_train)
    init = model.initial_particles(N_PARTICLES, seed=seed, dtype=dtype)
    out = {"split": split, "model": model}
    for name in methods:
        try:
            theta, info = run_method(name, model, init, n_iter, steps[name], seed=seed)
            out[name] = (predictive_scores(model, theta, split.x_test, split.y_test_raw, split.scaler), info)
        except (FloatingPointError, ValueError) as err:  # a diverged run is reported, not fatal
            out[name] = (None, {"error": str(err).splitlines()[0]})
    return out


def table(results: dict) -> str:
    rows = [f"{'method':8s} {'test RMSE':>10s} {'test LL':>9s} {'wall s':>7s}"]
    rmse, ll = constant_scores(results["split"])
    for name in METHODS:
        if name not in results:
            continue
        sc, info = results[name]
        if sc is None:
            rows.append(f"{name:8s} diverged: {info['error']}")
        else:
            rows.append(f"{name:8s} {sc.rmse:10.4g} {sc.log_likelihood:9.4g} {info['wall_s']:7.1f}")
    rows.append(f"{'constant':8s} {rmse:10.4g} {ll:9.4g} {'':>7s}")
    return "\n".join(rows)


def plot(results: dict, path: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    split = results["split"]
    names = [n for n in METHODS if n in results and results[n][0] is not None]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    y = split.y_test_raw.numpy()
    one_d = split.x_test.shape[1] == 1
    for ax, name in zip(axes[0], names, strict=True):
        sc = results[name][0]
        m, s = sc.mean.numpy(), sc.std.numpy()
        if one_d:
            xs = split.x_test[:, 0].numpy() * split.scaler.x_std[0] + split.scaler.x_mean[0]
            o = xs.argsort()
            ax.fill_between(xs[o], (m - 2 * s)[o], (m + 2 * s)[o], color="C0", alpha=0.25, label="±2 std")
            ax.plot(xs[o], m[o], color="C0", label="mean")
            ax.scatter(xs, y, s=8, color="k", label="test")
            ax.set_xlabel("x")
        else:
            ax.errorbar(y, m, yerr=2 * s, fmt="o", ms=3, alpha=0.6)
            lo, hi = float(min(y.min(), m.min())), float(max(y.max(), m.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_xlabel("truth")
            ax.set_ylabel("predictive mean ± 2 std")
        ax.set_title(f"{name}: RMSE {sc.rmse:.3g}")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="diabetes", choices=["diabetes", "sine", "friedman"])
    p.add_argument("--csv", help="a local regression table (UCI data.txt or CSV) instead of --data")
    p.add_argument("--target", help="target column of --csv: a header name or a 0-based index")
    p.add_argument("--quick", action="store_true", help="60 gradient steps instead of 500")
    p.add_argument("--out", help="folder for bnn_regression.png (refused when it exists and is not empty)")
    p.add_argument("--force", action="store_true", help="write into an existing non-empty folder")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.csv and args.target is None:
        p.error("--csv needs --target")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        p.error(f"{out} exists and is not empty; pass --force to write into it")
    torch.set_num_threads(1)
    if args.csv:
        target = int(args.target) if args.target.lstrip("-").isdigit() else args.target
        try:
            data = load_csv_regression(args.csv, target)
        except (ValueError, FileNotFoundError) as err:
            p.error(str(err))
    else:
        data = dataset(args.data, seed=args.seed)
    results = run_all(data, n_iter=60 if args.quick else 500, split_seed=args.seed, seed=args.seed)
    print(f"{data.name}: {data.n} rows, {data.x.shape[1]} features, {results['model'].dim} parameters per network")
    print(table(results))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        plot(results, out / "bnn_regression.png", dpi=80 if args.quick else 120)
        print(f"wrote {out / 'bnn_regression.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
