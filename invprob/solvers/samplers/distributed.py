"""PBRWP with its particles sharded over the ranks of a ``torch.distributed`` process group.

Design
------
Under an initialised process group of ``K`` ranks (gloo on the CPU, NCCL with one GPU per rank),
:class:`ShardedPBRWP` gives rank ``r`` a contiguous block of rows of the ``N`` particles
(:func:`shard_bounds`: the first ``N mod K`` ranks hold one row more). **Each rank holds only its rows** from the
first step on: it evaluates and updates them, and the interaction between all ``N`` particles (the ``N x N`` Gram
and the mixing ``sum_j P_ij e_j``) is computed by passing row blocks round a ring of ranks
(:meth:`ParticleShard.ring`), so no rank ever holds the whole cloud in the loop:

.. code-block:: text

    xm = mean_j x_j                               all_reduce of a d-vector (the rows' sums)
    e = x - xm, V, M grad V, e_T, M^-1 e          this rank's rows: the potential's cost is split K ways
    mean_j (data gradient)_j                      all_reduce of a d-vector (generic path, centred Gram only)
    Gram rows G_ij = e_i^T M^-1 e_j, i local      ring: K - 1 hops of one row block (M^-1 e, or the weighted
                                                  spectra of the fused Fourier step), each overlapped with the
                                                  (rows x block) product of the block in hand
    diag(G), log Z(x_j)                           one all_gather of N x 2 numbers
    logits, softmax rows, (I - P)                 this rank's rows of the N x N matrices
    x_i <- x_i - (eta/2) M g_i + (eta/2T) sum_j (I - P)_ij e_j
                                                  ring again: the blocks of e, accumulated in place

Memory per rank: its ``N/K`` rows and their step buffers, two row blocks in flight, and ``(N/K) x N`` matrices.
The post-burn-in moments (Welford) and the ``kernel-exact`` estimator's kernel means are accumulated on each
rank's rows and merged over the ranks once, at the end (:meth:`ParticleShard.merged`, Chan et al.'s update in rank
order); stored samples are gathered at the end. The formulas are PBRWP's own (the hooks ``_row_offset``,
``_gram_rows``, ``_mix_into``, ``_all_rows_each``, ``_particle_sum``, ``_particle_mean`` of its step): a
``K``-rank run equals the one-process run up to float rounding (the blocked matrix products, the ring's partial
sums, the merged moments), and a one-rank run equals it bit for bit on the CPU.

Initial particles: every rank draws all ``N`` from the same seed (``rng`` is required), exactly as one process
would; then rank 0's cloud is broadcast once, so that the ranks agree even where the starting point (a MAP
estimate on a GPU) is not bit-reproducible, and each rank keeps its rows (the whole initial cloud exists once,
before the first step). A stored draw of the ``kernel-exact`` mixture draws the noise of all ``N`` rows from the
shared generator and keeps its own (a transient ``N x d`` buffer at a stored iteration), so that the samples equal
one process's. The :class:`~invprob.PosteriorResult` (mean, std, ``info["particle_mean"]``/``["particle_std"]``,
samples) is the same on every rank; a ``callback`` sees this rank's rows; ``info["distributed"]`` says the world
size, the backend and this rank's rows.

Supported (the rest raises a one-line ``ValueError``)
----------------------------------------------------
- both step paths (the generic one and the fused Fourier step of a circular-blur posterior with a
  Fourier-diagonal ``M``), every ``logz`` rule, fixed preconditioners (``"auto"``, ``"posterior"``, ``"normal"``,
  ``"identity"``, matrices, callables);
- ``uncertainty`` ``"particles"`` and ``"kernel-exact"``; ``"auto"`` resolves as in PBRWP, except that where it
  would give ``"posterior-langevin"`` (or ``"kernel-langevin"``) it gives ``"particles"`` (said in
  ``info["uncertainty"]["fallback"]``).

Not supported: adaptive preconditioners (``"adam"``, ``"fisher"``: their state would have to be reduced over the
ranks), ``momentum`` and ``drift``, the Langevin-chain estimators (``"kernel-langevin"``, ``"posterior-langevin"``:
their chains would start from particles no rank holds all of), and ``rng=None`` (the ranks need one seed).

Launch: ``torchrun --nproc-per-node 2 examples/pbrwp_distributed.py``, or :func:`spawn_local` (gloo on
127.0.0.1, the tests' and benchmark's way).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from invprob.solvers.samplers.base import Welford, mean_particle_std
from invprob.solvers.samplers.estimators import KernelExact, ParticleMoments, UncertaintyEstimator
from invprob.solvers.samplers.pbrwp import (
    PARTICLES_CALIBRATION,
    PARTICLES_STATUS,
    PBRWP,
    PBRWPState,
    gram64,
)
from invprob.solvers.samplers.preconditioners import ADAPTIVE_PRECONDITIONER_NAMES

__all__ = ["ParticleShard", "ShardedPBRWP", "ShardedPBRWPState", "shard_bounds", "spawn_local"]

SHARDED_UNCERTAINTY = ("auto", "particles", "kernel-exact")


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s contiguous rows of ``n`` particles over ``world_size`` ranks.

    The first ``n % world_size`` ranks hold ``n // world_size + 1`` rows, the others ``n // world_size``.

    Examples
    --------
    >>> [shard_bounds(7, 3, r) for r in range(3)]
    [(0, 3), (3, 5), (5, 7)]
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    base, extra = divmod(int(n), int(world_size))
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


@dataclass(frozen=True)
class ParticleShard:
    """This rank's rows of the particles and the collectives of the sharded step over ``group``.

    rank, world_size : int
        In ``group`` (None: the default group).
    n_particles : int
        ``N``, all ranks together.
    group : ProcessGroup or None
    """

    rank: int
    world_size: int
    n_particles: int
    group: Any = None

    @classmethod
    def of(cls, n_particles: int, group=None) -> ParticleShard:
        """The shard of the calling rank in ``group`` (an initialised process group)."""
        return cls(dist.get_rank(group), dist.get_world_size(group), int(n_particles), group)

    @property
    def counts(self) -> tuple[int, ...]:
        """Rows per rank."""
        return tuple(b - a for a, b in (shard_bounds(self.n_particles, self.world_size, r)
                                        for r in range(self.world_size)))

    @property
    def rows(self) -> slice:
        """This rank's rows."""
        return slice(*shard_bounds(self.n_particles, self.world_size, self.rank))

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's per-particle rows ``t`` -> the rows of all ``N`` particles, in rank order, on every rank
        (one ``all_gather``, shards zero-padded to the largest)."""
        counts = self.counts
        pad = max(counts) - t.shape[0]
        buf = t.contiguous() if pad == 0 else torch.cat([t, t.new_zeros((pad, *t.shape[1:]))])
        parts = [torch.empty_like(buf) for _ in counts]
        dist.all_gather(parts, buf, group=self.group)
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])

    def gather_each(self, *ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:meth:`gather` of each of the per-particle vectors ``ts`` (``(rows,)`` each, real) in one collective:
        stacked as columns in their promoted dtype, gathered, split and cast back (exact)."""
        dtype = ts[0].dtype
        for t in ts[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        cols = self.gather(torch.stack([t.to(dtype) for t in ts], 1))
        return tuple(c.to(t.dtype).contiguous() for c, t in zip(cols.unbind(1), ts, strict=True))

    @property
    def offset(self) -> int:
        """The index among all ``N`` particles of this rank's first row."""
        return self.rows.start

    def _global(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over all ``N`` particles of this rank's rows ``t`` (one ``all_reduce`` of the row sums)."""
        s = t.sum(0, keepdim=True)
        dist.all_reduce(s, group=self.group)
        return s

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean over all ``N`` particles of this rank's rows ``t`` (one ``all_reduce`` of the row sums)."""
        return self.sum(t).div_(self.n_particles)

    def ring(self, block: torch.Tensor, visit: Callable[[slice, torch.Tensor], None]) -> None:
        """Pass this rank's rows ``block`` round the ring of ranks: ``visit(rows, b)`` is called once for every
        rank's block ``b`` (its own first), ``rows`` being where ``b``'s particles sit among all ``N``.

        Besides ``block`` each rank holds at most two padded blocks (the one arriving and, from the second hop on,
        the one it works on; never ``block`` itself as a receive buffer): ``K - 1`` sends and receives of one
        block, each overlapped with the work on the block in hand.
        """
        counts, k = self.counts, self.world_size
        pad = max(counts) - block.shape[0]
        cur = block.contiguous() if pad == 0 else torch.cat([block, block.new_zeros((pad, *block.shape[1:]))])
        pool = [torch.empty_like(cur) for _ in range(min(2, k - 1))]
        for hop in range(k):
            src = (self.rank - hop) % k
            reqs, nxt = [], None
            if hop < k - 1:  # send what we hold onwards while working on it; receive the next block
                nxt = pool[hop % len(pool)]
                reqs = [dist.isend(cur, self._global((self.rank + 1) % k), group=self.group),
                        dist.irecv(nxt, self._global((self.rank - 1) % k), group=self.group)]
            visit(slice(*shard_bounds(self.n_particles, k, src)), cur[:counts[src]])
            for r in reqs:
                r.wait()
            cur = nxt

    def gram_rows(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a_i^T b_j`` in float64 for this rank's rows ``i`` and all ``N`` particles ``j`` (:func:`gram64` block
        by block as ``b``'s rows travel round the ring)."""
        out = torch.empty((a.shape[0], self.n_particles), dtype=torch.float64, device=a.device)

        def visit(rows, blk):
            out[:, rows] = gram64(a, blk)

        self.ring(b, visit)
        return out

    def mix_into(self, out: torch.Tensor, W: torch.Tensor, e: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """``out_i += alpha sum_j W_ij e_j`` over all ``N`` particles (``e``'s rows travel round the ring)."""
        self.ring(e, lambda rows, blk: out.addmm_(W[:, rows], blk, alpha=alpha))
        return out

    def merged(self, w: Welford) -> Welford:
        """The streaming moments of all ranks' rows: each rank's ``(count, mean, m2)`` gathered and merged in rank
        order by Chan et al.'s update (what one process accumulating all rows computes, up to rounding)."""
        counts = torch.tensor([float(w.count)], dtype=torch.float64, device=w.mean.device)
        parts = [torch.empty_like(counts) for _ in range(self.world_size)]
        dist.all_gather(parts, counts, group=self.group)
        stacked = torch.stack([w.mean, w.m2])
        moments = [torch.empty_like(stacked) for _ in range(self.world_size)]
        dist.all_gather(moments, stacked, group=self.group)
        out = Welford()
        for c, (m, m2) in zip(parts, moments, strict=True):
            out.merge(int(c.item()), m, m2)
        return out

    def broadcast_(self, t: torch.Tensor) -> torch.Tensor:
        """Overwrite ``t`` (in place) with rank 0's copy."""
        src = 0 if self.group is None else dist.get_global_rank(self.group, 0)
        dist.broadcast(t, src=src, group=self.group)
        return t

    def describe(self) -> dict:
        rows = self.rows
        return {"world_size": self.world_size, "rank": self.rank, "backend": str(dist.get_backend(self.group)),
                "rows": [rows.start, rows.stop], "counts": list(self.counts)}


@dataclass
class ShardedPBRWPState(PBRWPState):
    """:class:`~invprob.solvers.samplers.PBRWPState` plus this rank's :class:`ParticleShard`."""

    shard: ParticleShard | None = None

    def noise_like(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The noise one process would give this rank's rows ``x``: drawn for all ``N`` particles (the same
        generator on every rank), this rank's rows kept. Only an estimator's stored draws use it (a transient
        ``N x d`` buffer at a stored iteration)."""
        full = torch.randn((self.shard.n_particles, *x.shape[1:]), generator=gen, dtype=x.dtype, device=gen.device)
        return full[self.shard.rows].to(x.device)


class ShardedPBRWP(PBRWP):
    """PBRWP with the particles sharded over a ``torch.distributed`` process group (module docstring).

    Call :meth:`run` on every rank of ``group`` with the same arguments (the same target, ``n_particles``,
    ``n_iter``, an int ``rng``); every rank returns the same :class:`~invprob.PosteriorResult`, equal to
    ``PBRWP(...).run(...)`` in one process up to float rounding.

    Parameters
    ----------
    preconditioner, T, step, **kwargs
        As :class:`~invprob.solvers.samplers.PBRWP` (fixed preconditioners only; no ``momentum``, ``drift``).
    uncertainty : "auto" | "particles" | "kernel-exact" | ParticleMoments | KernelExact
    group : ProcessGroup, optional
        The ranks that share the particles (default: the default group).

    Examples
    --------
    >>> import torch
    >>> from invprob.solvers.samplers import ShardedPBRWP
    >>> ShardedPBRWP(momentum=0.5)
    Traceback (most recent call last):
    ...
    ValueError: ShardedPBRWP does not support momentum (use PBRWP in one process)
    """

    name = "ShardedPBRWP"

    def __init__(self, preconditioner: Any = "auto", *, T: float = 1.0, step: float | None = None,
                 uncertainty: str | UncertaintyEstimator = "auto", group=None, **kwargs):
        for key in ("momentum", "drift"):
            if kwargs.get(key) is not None:
                raise ValueError(f"ShardedPBRWP does not support {key} (use PBRWP in one process)")
        if (isinstance(preconditioner, str) and preconditioner in ADAPTIVE_PRECONDITIONER_NAMES) or (
                not isinstance(preconditioner, str) and getattr(preconditioner, "adaptive", False) is True):
            raise ValueError("ShardedPBRWP needs a fixed preconditioner; adaptive ones (adam, fisher) are not "
                             "supported in distributed mode")
        if isinstance(uncertainty, UncertaintyEstimator):
            if not isinstance(uncertainty, ParticleMoments | KernelExact):
                raise ValueError("ShardedPBRWP supports the ParticleMoments and KernelExact estimators only, got "
                                 f"{type(uncertainty).__name__}")
        elif uncertainty not in SHARDED_UNCERTAINTY:
            raise ValueError(f"ShardedPBRWP supports uncertainty in {SHARDED_UNCERTAINTY}, got {uncertainty!r}")
        super().__init__(preconditioner, T=T, step=step, uncertainty=uncertainty, **kwargs)
        self.group = group

    def run(self, target, *, rng: int | torch.Generator | None = None, progress: bool = True, **kwargs):
        """:meth:`PBRWP.run <invprob.solvers.samplers.base.Sampler.run>` on every rank of the group (same
        arguments; ``rng`` required; the progress bar on rank 0 only)."""
        if rng is None:
            raise ValueError("ShardedPBRWP needs rng= (an int seed or generator, the same on every rank)")
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("ShardedPBRWP needs an initialised torch.distributed process group "
                             "(torch.distributed.init_process_group, or torchrun)")
        progress = progress and dist.get_rank(self.group) == 0
        return super().run(target, rng=rng, progress=progress, **kwargs)

    def _prepare(self, target, x, gen) -> ShardedPBRWPState:
        shard = ParticleShard.of(x.shape[0], self.group)
        if x.shape[0] < shard.world_size:
            raise ValueError(f"n_particles ({x.shape[0]}) must be at least the world size ({shard.world_size})")
        shard.broadcast_(x)  # rank 0's initial cloud on every rank (in place: the run loop's tensor)
        state = super()._prepare(target, x, gen)
        if state.precond.adaptive:
            raise ValueError("ShardedPBRWP needs a fixed preconditioner; adaptive ones are not supported")
        out = ShardedPBRWPState(**{f.name: getattr(state, f.name) for f in fields(state)}, shard=shard)
        out.info["distributed"] = shard.describe()
        return out

    def _estimator(self, target, precond, closed, x) -> UncertaintyEstimator:
        est = super()._estimator(target, precond, closed, x)
        if isinstance(est, ParticleMoments | KernelExact):
            return est
        return ParticleMoments(PARTICLES_CALIBRATION, status=PARTICLES_STATUS,
                               fallback=f"{est.name} is not available in distributed mode (ShardedPBRWP); raw "
                                        "particle spread reported")

    # the loop: this rank's rows only ------------------------------------------------------------------------
    def _loop(self, tgt, x, state, gen, cfg, progress, callback):
        shard = state.shard
        x = x[shard.rows].clone()  # the whole initial cloud is freed here: from now on, this rank's rows only
        loop = super()._loop(tgt, x, state, gen, cfg, progress, callback)
        loop.stats = shard.merged(loop.stats)
        state.estimator.merge_streams(shard.merged)
        loop.kept = [shard.gather(k) for k in loop.kept]
        return loop

    def _final_std(self, x, state):
        shard = state.shard
        if shard.n_particles < 2:
            return 0.0

        def column_std(cols):  # the std over all ranks' rows of a float64 column block
            w = Welford()
            w.update(cols)
            return shard.merged(w).std()

        return mean_particle_std(x, column_std=column_std)

    def _all_finite(self, x, state):
        bad = torch.tensor([0.0 if super()._all_finite(x, state) else 1.0], device=x.device)
        dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=state.shard.group)  # every rank stops together
        return not bool(bad.item())

    # the layout hooks of PBRWP's step ------------------------------------------------------------------------
    def _row_offset(self, state):
        return state.shard.offset

    def _gram_rows(self, a, b, state):
        return state.shard.gram_rows(a, b)

    def _mix_into(self, out, W, e, state, alpha=1.0):
        return state.shard.mix_into(out, W, e, alpha)

    def _all_rows_each(self, state, *ts):
        return state.shard.gather_each(*ts)

    def _particle_sum(self, t, state):
        return state.shard.sum(t)

    def _particle_mean(self, t, state):
        return state.shard.mean(t)


# ---------------------------------------------------------------------------------------------------- launching
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawned(rank: int, world_size: int, backend: str, init_method: str, fn: Callable, args: tuple,
             out_dir: str) -> None:
    """One spawned rank: join the group, run ``fn(rank, world_size, *args)``, save its return value."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn_local(fn: Callable, world_size: int, args: tuple = (), *, backend: str = "gloo",
                init: str = "file") -> list:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` local processes in one process group; their return
    values, in rank order.

    ``fn`` must be importable (a module-level function) and its return value picklable (tensors are saved with
    ``torch.save``). ``backend``: ``"gloo"`` (CPU) or ``"nccl"`` (rank ``r`` on GPU ``r``). ``init``: ``"file"``
    (a rendezvous file in a fresh temporary folder) or ``"tcp"`` (a free port on 127.0.0.1). Each rank runs with
    ``GLOO_SOCKET_IFNAME=lo`` unless set otherwise.
    """
    import torch.multiprocessing as mp

    if init not in ("file", "tcp"):
        raise ValueError(f"init must be 'file' or 'tcp', got {init!r}")
    with tempfile.TemporaryDirectory(prefix="invprob-dist-") as tmp:
        method = f"file://{tmp}/rendezvous" if init == "file" else f"tcp://127.0.0.1:{_free_port()}"
        mp.spawn(_spawned, args=(world_size, backend, method, fn, tuple(args), tmp), nprocs=world_size, join=True)
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
