"""PBRWP with its particles sharded over processes (``ShardedPBRWP``), checked against one process.

A small deblurring posterior (a smooth random test image, Gaussian blur std 1.5, noise 0.02, a GaussianPrior or
TV) is sampled by :class:`~invprob.solvers.samplers.ShardedPBRWP` on every rank of a
``torch.distributed`` group; rank 0 then runs plain PBRWP in one process with the same seed and prints the
timings and the largest differences of the mean, std and final particles (float rounding only).

Run (gloo on the CPU)::

    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 examples/pbrwp_distributed.py [--size 32] [--particles 32]
    python examples/pbrwp_distributed.py --spawn 2          # the same without torchrun (127.0.0.1 only)

``--device cuda`` uses NCCL with one GPU per rank (``LOCAL_RANK``). ``--prior tv`` samples a TV posterior
(``uncertainty="particles"``); the default GaussianPrior gives the kernel-exact output.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist

from invprob import Posterior
from invprob.operators import Blur, gaussian_kernel
from invprob.priors import TV, GaussianPrior
from invprob.solvers.samplers import PBRWP, ShardedPBRWP
from invprob.solvers.samplers.distributed import spawn_local


def posterior(size: int, prior: str, device: str = "cpu") -> Posterior:
    """The test posterior: a smooth random image, blurred (std 1.5), noise 0.02 (fixed seeds)."""
    g = torch.Generator().manual_seed(0)
    f = torch.fft.rfft2(torch.randn(1, 1, size, size, generator=g, dtype=torch.float64))
    k = torch.fft.fftfreq(size, dtype=torch.float64)[:, None] ** 2 + torch.fft.rfftfreq(size, dtype=torch.float64) ** 2
    x0 = torch.fft.irfft2(f / (1 + 400 * k), s=(size, size))
    x0 = (x0 - x0.min()) / (x0.max() - x0.min())
    op = Blur(gaussian_kernel(1.5), (size, size))
    y = op.A(x0) + 0.02 * torch.randn(1, 1, size, size, generator=g, dtype=torch.float64)
    reg = GaussianPrior(50.0) if prior == "gaussian" else TV(20.0)
    return Posterior(op, y.to(device), 0.02, reg)


def settings(args) -> tuple[dict, dict]:
    """(sampler keywords, run keywords)."""
    skw = {} if args.prior == "gaussian" else {"uncertainty": "particles"}
    return skw, dict(n_particles=args.particles, n_iter=args.iters, rng=args.seed, progress=False)


def run(cls, args, device: str) -> tuple:
    """``(result, final particles, loop seconds per iteration)`` of one run of ``cls``."""
    skw, rkw = settings(args)
    last = {}
    res = cls(**skw).run(posterior(args.size, args.prior, device), callback=lambda it, x, _: last.update(x=x),
                         **rkw)
    return res, last["x"], res.info["time_per_iteration_s"]


def rank_main(rank: int, world_size: int, args) -> dict:
    """Every rank: the sharded run. Rank 0: also the one-process run, and the report."""
    torch.set_num_threads(1)
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}" if args.device == "cuda" else "cpu"
    t0 = time.perf_counter()
    res, x, per_it = run(ShardedPBRWP, args, device)
    wall = time.perf_counter() - t0
    out = {"rank": rank, "wall_s": wall, "per_iteration_s": per_it}
    if rank == 0:
        t0 = time.perf_counter()
        ref, x1, per_it1 = run(PBRWP, args, device)
        wall1 = time.perf_counter() - t0
        lo, hi = res.info["distributed"]["rows"]  # a rank holds (and its callback sees) only its own rows
        diff = {k: float((a.cpu() - b.cpu()).abs().max()) for k, a, b in
                (("mean", res.mean, ref.mean), ("std", res.std, ref.std), ("rank 0's particles", x, x1[lo:hi]))}
        print(f"{args.size}x{args.size} deblurring, {args.prior} prior, N = {args.particles}, {args.iters} "
              f"iterations, {res.info['uncertainty']['estimator']} output, device {device}")
        print(f"sharded over {world_size} ranks: {per_it * 1e3:8.2f} ms/iteration, {wall:6.2f} s in all "
              f"(rows {res.info['distributed']['counts']})")
        print(f"one process:          {per_it1 * 1e3:8.2f} ms/iteration, {wall1:6.2f} s in all")
        print("largest |sharded - one process|: " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
        out |= {"diff": diff, "wall_one_s": wall1}
    if dist.is_initialized():
        dist.barrier()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=32, help="image side (default 32)")
    p.add_argument("--particles", type=int, default=32)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--prior", choices=("gaussian", "tv"), default="gaussian")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--spawn", type=int, default=0, help="spawn this many local ranks instead of using torchrun")
    args = p.parse_args(argv)
    backend = "nccl" if args.device == "cuda" else "gloo"
    if args.spawn:
        spawn_local(rank_main, args.spawn, (args,), backend=backend)
        return 0
    if "RANK" not in os.environ:
        p.error("launch with torchrun (e.g. torchrun --nproc-per-node 2 ...) or pass --spawn K")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend)
    try:
        rank_main(dist.get_rank(), dist.get_world_size(), args)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
