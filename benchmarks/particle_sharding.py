"""Sharded PBRWP (``ShardedPBRWP``, gloo on 127.0.0.1) against PBRWP in one process: the cost of the collectives.

Cameraman at 64x64, Gaussian blur std 1.5, noise 0.01; N = 64 particles, 50 iterations, float64, one intra-op
thread per process. Three step paths: a GaussianPrior (fused Fourier step, kernel-exact output), TV (fused Fourier
step, envelope log Z, particle output) and the GaussianPrior with the ``"normal"`` preconditioner (generic step,
centred data gradient). Rows: PBRWP in one process with 1 and 2 threads, and ShardedPBRWP on 1 and 2 ranks (one
thread each). ``ms/it`` is the loop time per iteration (the slowest rank; the MAP start and the estimator's
finalisation are outside it), best of ``--repeats``; ``|d mean|``/``|d std|`` are the largest differences of the
output against the one-process run (float rounding only).

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/particle_sharding.py           # print and write the section
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/particle_sharding.py --quick   # a smoke run, nothing written
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import header, markdown_table, write_section  # noqa: E402

from invprob import Posterior  # noqa: E402
from invprob.operators import Blur, gaussian_kernel  # noqa: E402
from invprob.priors import TV, GaussianPrior  # noqa: E402
from invprob.solvers.samplers import PBRWP, ShardedPBRWP  # noqa: E402
from invprob.solvers.samplers.distributed import spawn_local  # noqa: E402

# name -> (prior, sampler keywords)
CASES = {
    "gaussian prior, Fourier step": ("gaussian", {}),
    "TV, Fourier step": ("tv", {"uncertainty": "particles"}),
    "gaussian prior, generic step": ("gaussian", {"preconditioner": "normal", "uncertainty": "particles"}),
}


NOTE = ("Three step paths: a GaussianPrior (fused Fourier step, kernel-exact output), TV (fused Fourier step, "
        "envelope log Z, particles) and the GaussianPrior with the 'normal' preconditioner (generic step). ms/it: "
        "the loop time per iteration (the slowest rank; MAP start and finalisation outside it); time ratio: against "
        "PBRWP in one process with one thread; rows held per process: the particles a process holds in the loop "
        "(a sharded rank holds only its own; the interaction passes row blocks round a ring); |d mean|, |d std|: "
        "largest differences of the output against that run. One intra-op thread per rank.")


def posterior(size: int, prior: str) -> Posterior:
    """Cameraman (skimage) resized to ``size``, blurred (std 1.5), noise 0.01 (seed 0)."""
    from skimage import data
    from skimage.transform import resize

    x0 = torch.tensor(resize(data.camera() / 255.0, (size, size), anti_aliasing=True), dtype=torch.float64)
    op = Blur(gaussian_kernel(1.5), (size, size))
    g = torch.Generator().manual_seed(0)
    y = op.A(x0[None, None])
    y = y + 0.01 * torch.randn(y.shape, generator=g, dtype=torch.float64)
    return Posterior(op, y, 0.01, GaussianPrior(50.0) if prior == "gaussian" else TV(20.0))


def timed_run(cls, case: str, size: int, n: int, n_iter: int, repeats: int) -> dict:
    """The best loop time per iteration of ``repeats`` runs, and the last run's mean and std."""
    prior, kw = CASES[case]
    post = posterior(size, prior)
    best, res = float("inf"), None
    for _ in range(repeats):
        res = cls(**kw).run(post, n_particles=n, n_iter=n_iter, rng=0, progress=False)
        best = min(best, res.info["time_per_iteration_s"])
    rows = (res.info.get("distributed") or {}).get("counts", [n])
    return {"per_it": best, "mean": res.mean, "std": res.std, "rows": max(rows)}


def rank_worker(rank: int, world_size: int, cases: list[str], size: int, n: int, n_iter: int,
                repeats: int) -> dict:
    torch.set_num_threads(1)
    return {case: timed_run(ShardedPBRWP, case, size, n, n_iter, repeats) for case in cases}


def rows_for(case: str, one: dict, two_threads: dict, sharded: dict[int, list[dict]]) -> list[dict]:
    base = one["per_it"]
    out = [{"case": case, "run": "PBRWP, 1 process, 1 thread", "ms/it": 1e3 * base, "time ratio": 1.0,
            "rows held per process": one["rows"], "|d mean|": 0.0, "|d std|": 0.0},
           {"case": case, "run": "PBRWP, 1 process, 2 threads", "ms/it": 1e3 * two_threads["per_it"],
            "time ratio": two_threads["per_it"] / base, "rows held per process": two_threads["rows"],
            "|d mean|": 0.0, "|d std|": 0.0}]
    for k, ranks in sharded.items():
        per_it = max(r[case]["per_it"] for r in ranks)
        out.append({"case": case, "run": f"ShardedPBRWP, {k} rank{'s' if k > 1 else ''} (gloo)", "ms/it": 1e3 * per_it,
                    "time ratio": per_it / base, "rows held per process": max(r[case]["rows"] for r in ranks),
                    "|d mean|": max(float((r[case]["mean"] - one["mean"]).abs().max()) for r in ranks),
                    "|d std|": max(float((r[case]["std"] - one["std"]).abs().max()) for r in ranks)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small settings (32x32, N = 16, 10 iterations); no writing")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    size, n, n_iter, repeats = (32, 16, 10, 1) if args.quick else (64, 64, 50, args.repeats)
    cases = list(CASES)
    sharded = {k: spawn_local(rank_worker, k, (cases, size, n, n_iter, repeats)) for k in (1, 2)}
    rows = []
    for case in cases:
        torch.set_num_threads(1)
        one = timed_run(PBRWP, case, size, n, n_iter, repeats)
        torch.set_num_threads(2)
        two = timed_run(PBRWP, case, size, n, n_iter, repeats)
        rows += rows_for(case, one, two, sharded)
    torch.set_num_threads(1)
    text = header("Sharded PBRWP over processes (gloo) against one process")
    text += (f"\n{size}x{size} cameraman, N = {n}, {n_iter} iterations, float64, best of {repeats}. {NOTE}\n\n"
             + markdown_table(rows))
    print(text)
    if not args.quick:
        write_section("particle_sharding", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
