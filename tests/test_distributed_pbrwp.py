"""Sharded PBRWP (:mod:`invprob.solvers.samplers.distributed`) against PBRWP in one process.

Two gloo ranks on 127.0.0.1 (``spawn_local``) run each case of :data:`CASES` once (one spawn for all of them, a
module fixture); the parent runs plain PBRWP on the same case. Checked, float64:

- the final particles (each rank's own rows, put back together), ``mean``/``std``, the particle moments and stored
  samples agree to 1e-6 (float rounding of the blocked matrix products, the ring's partial sums and the merged
  moments is all that may differ), the logs to 1e-6 relative, and both ranks return the same result; each rank
  holds and evaluates only its rows;
- the cases cover a 20-D Gaussian potential (kernel-exact), a 16x16 Gaussian deblurring posterior (fused Fourier
  step, kernel-exact, stored samples), a TV posterior (envelope log Z, particles), the generic step with the
  ``"normal"`` preconditioner (centred data gradient) and an uneven shard (N = 7 over 2 ranks);
- one rank equals PBRWP bit for bit; unsupported options raise one-line ValueErrors;
- NCCL with one rank per GPU (one and two GPUs), skipped without them.
"""

from __future__ import annotations

import pytest
import torch

from invprob import Posterior
from invprob.operators import Blur, gaussian_kernel
from invprob.priors import TV, GaussianPrior
from invprob.solvers.samplers import PBRWP, GaussianPotential, ShardedPBRWP, shard_bounds
from invprob.solvers.samplers.distributed import spawn_local

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("single_thread_module")


def gaussian20() -> GaussianPotential:
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=F64))
    return GaussianPotential(Q @ torch.diag(torch.logspace(-1, 0, 20, dtype=F64)) @ Q.T)


def deblur(prior, n: int = 16, device: str = "cpu") -> Posterior:
    op = Blur(gaussian_kernel(1.5), (n, n))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 1, n, n, generator=g, dtype=F64)
    y = op.A(x0)
    y = y + 0.02 * torch.randn(y.shape, generator=g, dtype=F64)
    return Posterior(op, y.to(device), 0.02, prior)


class CountingGaussian(GaussianPotential):
    """A Gaussian potential that records the batch size of every gradient evaluation."""

    def __init__(self, cov):
        super().__init__(cov)
        self.batches: list[int] = []

    def grad(self, x):
        self.batches.append(x.shape[0])
        return super().grad(x)


# name -> (target factory, sampler keywords, run keywords)
CASES = {
    "gaussian20": (gaussian20, dict(T=0.5, step=0.2), dict(n_particles=16, n_iter=40, init_spread=1.0)),
    "deblur_gaussian": (lambda: deblur(GaussianPrior(50.0)), {}, dict(n_particles=8, n_iter=25, keep_samples=16)),
    "deblur_tv": (lambda: deblur(TV(20.0)), dict(uncertainty="particles"), dict(n_particles=8, n_iter=20)),
    "deblur_normal": (lambda: deblur(GaussianPrior(50.0)), dict(preconditioner="normal", uncertainty="particles"),
                      dict(n_particles=8, n_iter=20)),
    "uneven": (gaussian20, dict(T=0.5, step=0.2, logz="envelope", uncertainty="particles"),
               dict(n_particles=7, n_iter=20, init_spread=1.0)),
}


def run_case(cls, name: str) -> dict:
    make, skw, rkw = CASES[name]
    last = {}
    res = cls(**skw).run(make(), rng=0, progress=False, log_every=4, callback=lambda it, x, _: last.update(x=x),
                         **rkw)
    return {"x": last["x"].clone(), "mean": res.mean, "std": res.std, "particle_mean": res.info["particle_mean"],
            "particle_std": res.info["particle_std"], "samples": res.samples, "log": res.info["log"],
            "uncertainty": res.info["uncertainty"]["estimator"], "distributed": res.info.get("distributed"),
            "final_std": res.info["final_particles_std"]}


def sharded_worker(rank: int, world_size: int, names: list[str], extras: bool = True) -> dict:
    """Every named case with ShardedPBRWP; with ``extras`` also the batch sizes the potential saw, the "auto"
    output of a TV posterior and the error of a run with fewer particles than ranks."""
    torch.set_num_threads(1)
    out = {name: run_case(ShardedPBRWP, name) for name in names}
    try:
        ShardedPBRWP(T=0.5, step=0.2).run(gaussian20(), n_particles=2, n_iter=2, rng=0, progress=False)
    except ValueError as exc:
        out["too_few"] = str(exc)
    if extras:
        pot = CountingGaussian(gaussian20().cov)
        ShardedPBRWP(T=0.5, step=0.2, uncertainty="particles").run(pot, n_particles=16, n_iter=10, rng=0,
                                                                   progress=False)
        out["batches"] = pot.batches
        res = ShardedPBRWP().run(deblur(TV(20.0)), n_particles=4, n_iter=3, rng=0, progress=False)
        out["auto_tv"] = res.info["uncertainty"]
    return out


def _assert_close(a: dict, b: dict, exact: bool = False) -> None:
    for key in ("x", "mean", "std", "particle_mean", "particle_std", "samples"):
        if a[key] is None:
            assert b[key] is None
            continue
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert a["uncertainty"] == b["uncertainty"]
    # the final spread: reduced over the ranks by merged moments (a different formula from torch's std, also on one
    # rank), so equal to the particles' own tolerance
    assert a["final_std"] == pytest.approx(b["final_std"], rel=0, abs=1e-6)
    for key, vals in a["log"].items():
        if key != "iteration":
            torch.testing.assert_close(torch.tensor(vals), torch.tensor(b["log"][key]), rtol=1e-6, atol=1e-9)


def _whole(ranks: list[dict], name: str) -> dict:
    """A sharded case's result with ``x`` (each rank's own rows, from its callback) put back together."""
    return {**ranks[0][name], "x": torch.cat([r[name]["x"] for r in ranks])}


@pytest.fixture(scope="module")
def two_ranks():
    return spawn_local(sharded_worker, 2, (list(CASES),))


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_equal_one_process(two_ranks, name):
    ref = run_case(PBRWP, name)
    r0, r1 = two_ranks[0][name], two_ranks[1][name]
    _assert_close(ref, _whole(two_ranks, name))
    _assert_close({**r0, "x": ref["x"]}, {**r1, "x": ref["x"]}, exact=True)  # every rank reports the same result
    assert r0["distributed"]["world_size"] == 2 and r1["distributed"]["rank"] == 1
    n = CASES[name][2]["n_particles"]
    assert r1["distributed"]["rows"] == list(shard_bounds(n, 2, 1))
    # each rank holds its rows only: the particles its callback saw are its shard
    assert [r["x"].shape[0] for r in (r0, r1)] == [b - a for a, b in (shard_bounds(n, 2, k) for k in range(2))]


def test_each_rank_evaluates_only_its_rows(two_ranks):
    """Not vacuous: in its 10 steps the potential saw batches of N/2 = 8 particles on each rank, never all 16;
    the agreement with one process is therefore that of a genuinely split computation."""
    for r in range(2):  # (batches of one: the power iteration behind the Lipschitz constant, in _prepare)
        assert [b for b in two_ranks[r]["batches"] if b > 1] == [8] * 10, two_ranks[r]["batches"]


def test_auto_uncertainty_falls_back_to_particles(two_ranks):
    """Where PBRWP's "auto" picks posterior-langevin (a TV posterior), the sharded run reports the particles."""
    unc = two_ranks[0]["auto_tv"]
    assert unc["estimator"] == "particles"
    assert unc["fallback"].startswith("posterior-langevin is not available in distributed mode")


@pytest.mark.parametrize("world_size, counts", [(3, [3, 2, 2]), (4, [2, 2, 2, 1])])
def test_uneven_shards_and_too_few_particles(world_size, counts):
    """7 particles over 3 ranks (rows 3, 2, 2) and over 4 (2, 2, 2, 1: the ring reuses its two receive buffers)
    equal one process; 2 particles cannot be shared by 3 or 4 ranks."""
    got = spawn_local(sharded_worker, world_size, (["uneven"], False))
    ref = run_case(PBRWP, "uneven")
    whole = _whole(got, "uneven")
    for r, g in enumerate(got):
        _assert_close(ref, {**g["uneven"], "x": whole["x"]})
        assert g["uneven"]["x"].shape[0] == counts[r]
        assert g["uneven"]["distributed"]["counts"] == counts and g["uneven"]["distributed"]["rank"] == r
        assert g["too_few"] == f"n_particles (2) must be at least the world size ({world_size})"


def test_merged_moments_equal_one_accumulator():
    """Welford.merge (how the ranks' moments are combined) equals updating one accumulator with all rows."""
    from invprob.solvers.samplers.base import Welford

    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(k, 5, generator=g, dtype=F64) + 3.0 for k in (3, 1, 4)]
    one, merged = Welford(), Welford()
    for r in rows:
        one.update(r)
    for r in rows:
        part = Welford()
        part.update(r)
        merged.merge(part.count, part.mean, part.m2)
    merged.merge(0, torch.zeros(5, dtype=F64), torch.zeros(5, dtype=F64))  # an empty part adds nothing
    assert merged.count == 8
    torch.testing.assert_close(merged.mean, torch.cat(rows).mean(0), rtol=0, atol=1e-14)
    torch.testing.assert_close(merged.variance(), torch.cat(rows).var(0), rtol=1e-13, atol=0)
    torch.testing.assert_close(merged.variance(), one.variance(), rtol=1e-13, atol=0)


def one_rank_worker(rank: int, world_size: int, names: list[str]) -> dict:
    torch.set_num_threads(1)
    return {name: run_case(ShardedPBRWP, name) for name in names}


def test_one_rank_is_pbrwp_bit_for_bit():
    names = ["gaussian20", "deblur_normal", "deblur_gaussian"]
    (got,) = spawn_local(one_rank_worker, 1, (names,), init="tcp")
    for name in names:
        _assert_close(run_case(PBRWP, name), got[name], exact=True)
        assert got[name]["distributed"]["counts"] == [CASES[name][2]["n_particles"]]


@pytest.mark.parametrize("kwargs, message", [
    (dict(momentum=0.5), "ShardedPBRWP does not support momentum (use PBRWP in one process)"),
    (dict(drift=lambda v: v), "ShardedPBRWP does not support drift (use PBRWP in one process)"),
    (dict(preconditioner="adam"), "ShardedPBRWP needs a fixed preconditioner; adaptive ones (adam, fisher) are not "
                                  "supported in distributed mode"),
    (dict(uncertainty="posterior-langevin"), "ShardedPBRWP supports uncertainty in ('auto', 'particles', "
                                             "'kernel-exact'), got 'posterior-langevin'"),
    (dict(uncertainty="kernel-langevin"), "ShardedPBRWP supports uncertainty in ('auto', 'particles', "
                                          "'kernel-exact'), got 'kernel-langevin'"),
])
def test_unsupported_options_raise_one_line_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        ShardedPBRWP(**kwargs)
    assert str(err.value) == message


def test_run_needs_a_seed_and_a_process_group():
    pot = gaussian20()
    with pytest.raises(ValueError, match=r"^ShardedPBRWP needs rng= \(an int seed"):
        ShardedPBRWP().run(pot, n_particles=4, n_iter=2, progress=False)
    with pytest.raises(ValueError, match="^ShardedPBRWP needs an initialised torch.distributed process group"):
        ShardedPBRWP().run(pot, n_particles=4, n_iter=2, rng=0, progress=False)


def test_shard_bounds_cover_the_particles():
    for n in (2, 7, 16):
        for k in (1, 2, 3):
            if k > n:
                continue
            b = [shard_bounds(n, k, r) for r in range(k)]
            assert b[0][0] == 0 and b[-1][1] == n and all(b[i][1] == b[i + 1][0] for i in range(k - 1))
            assert max(s - a for a, s in b) - min(s - a for a, s in b) <= 1
    with pytest.raises(ValueError, match="rank must be in"):
        shard_bounds(4, 2, 2)


def nccl_worker(rank: int, world_size: int) -> dict:
    """The Gaussian deblurring case on GPU ``rank`` (data on the device, so the run is there too)."""
    _, skw, rkw = CASES["deblur_gaussian"]
    post = deblur(GaussianPrior(50.0), device=f"cuda:{rank}")
    res = ShardedPBRWP(**skw).run(post, rng=0, progress=False, **rkw)
    assert res.mean.device.type == "cuda"
    return {"mean": res.mean.cpu(), "std": res.std.cpu(), "distributed": res.info["distributed"]}


@pytest.mark.cuda
@pytest.mark.parametrize("world_size", [1, 2])
def test_nccl_equals_one_process(world_size):
    """NCCL, one rank per GPU, against PBRWP on the CPU (float64; FFTs and products round differently)."""
    if torch.cuda.device_count() < world_size:
        pytest.skip(f"needs {world_size} CUDA devices")
    got = spawn_local(nccl_worker, world_size, backend="nccl")
    make, skw, rkw = CASES["deblur_gaussian"]
    ref = PBRWP(**skw).run(make(), rng=0, progress=False, **rkw)
    for g in got:
        assert g["distributed"]["backend"] == "nccl"
        torch.testing.assert_close(g["mean"], ref.mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(g["std"], ref.std, rtol=0, atol=1e-6)
