"""PBRWP with its particles sharded over the ranks of a ``torch.distributed`` process group.

Design
------
Under an initialised process group of ``K`` ranks (gloo on the CPU, NCCL with one GPU per rank),
:class:`ShardedPBRWP` gives rank ``r`` a contiguous block of rows of the ``N`` particles
(:func:`shard_bounds`: the first ``N mod K`` ranks hold one row more). Every rank keeps the whole cloud, the same on
all ranks (the interaction needs all ``N`` centred particles on every rank at every step anyway, so replicating
them costs no more memory than the step itself), and *evaluates and updates only its own rows*:

.. code-block:: text

    xm = mean_j x_j, e = x - xm                   on every rank, from the replicated cloud (exact, no collective)
    V, M grad V, e_T, M^-1 e (or its spectrum)    rows of this rank only: the potential's cost is split K ways
    mean_j (data gradient)_j                      all_reduce of a d-vector (generic path, centred Gram only)
    Gram rows G_ij = e_i^T M^-1 e_j, i local      one all_gather of M^-1 e (generic) or of the weighted spectra
                                                  (fused Fourier step): N x d
    diag(G), log Z(x_j)                           one all_gather of N x 2 numbers
    logits, softmax, (I - P) e for rows i         this rank's rows of the N x N logits; N^2 d / K work
    x_i <- x_i - (eta/2) M g_i + (eta/2T)(...)_i  this rank's rows; one all_gather of the new rows (N x d)

so a step costs two ``all_gather`` of an ``N x d`` buffer (uneven shards are zero-padded to the largest), one of
``N x 2`` numbers, on the generic path one ``all_reduce`` of ``d`` numbers, and at a logging iteration one more
``all_gather`` of ``N x 5`` numbers (the log's means over particles). The collectives are the hooks
``_local_rows``/``_all_rows``/``_all_rows_each``/``_particle_mean`` of :class:`~invprob.solvers.samplers.PBRWP`'s
step, whose formulas are PBRWP's own: a ``K``-rank run equals the one-process run up to float rounding (the row
blocks of the matrix products, the partial sums of the mean data gradient), and a one-rank run equals it bit for
bit on the CPU.

Initial particles: every rank draws all ``N`` from the same seed (``rng`` is required), exactly as one process
would; then rank 0's cloud is broadcast once, so that the ranks agree even where the starting point (a MAP
estimate on a GPU) is not bit-reproducible. Burn-in, the streaming moments, stored samples, callbacks and the
uncertainty estimator run on the replicated cloud, identically on every rank: the :class:`~invprob.PosteriorResult`
(mean, std, ``info["particle_mean"]``/``["particle_std"]``) is the same on every rank, and ``info["distributed"]``
says the world size, the backend and this rank's rows.

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
their chains would run redundantly on every rank), and ``rng=None`` (the ranks need one seed).
Cost not sharded: the streaming moments and the estimator's per-iteration work (``O(N d)``, plus the kernel means'
FFT of ``"kernel-exact"`` on a posterior) run on every rank on the whole cloud.

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

from invprob.solvers.samplers.estimators import KernelExact, ParticleMoments, UncertaintyEstimator
from invprob.solvers.samplers.pbrwp import (
    PARTICLES_CALIBRATION,
    PARTICLES_STATUS,
    PBRWP,
    PBRWPState,
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

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean over all ``N`` particles of this rank's rows ``t`` (one ``all_reduce`` of the row sums)."""
        s = t.sum(0, keepdim=True)
        dist.all_reduce(s, group=self.group)
        return s / self.n_particles

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

    # the layout hooks of PBRWP's step ------------------------------------------------------------------------
    def _local_rows(self, state, n):
        return state.shard.rows

    def _all_rows(self, t, state):
        return state.shard.gather(t)

    def _all_rows_each(self, state, *ts):
        return state.shard.gather_each(*ts)

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
