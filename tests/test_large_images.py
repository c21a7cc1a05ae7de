"""Large images: bounded memory of the chains' diagnostics, chains that fit a time limit, partial results when a
run is stopped before the diagnostics could run, chunked gradients, and the memory figures of a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invprob import Posterior
from invprob.devices import peak_memory
from invprob.operators import Blur, gaussian_kernel
from invprob.priors import TV, GaussianPrior
from invprob.solvers import deblur as deblur_module
from invprob.solvers.samplers import PBRWP, GaussianPotential, PosteriorLangevin, PosteriorLangevinConfig
from invprob.solvers.samplers import diagnostics as diag_module
from invprob.solvers.samplers.base import Target
from invprob.solvers.samplers.diagnostics import ChainBlocks, DiagnosticsTargets, diagnose


def _states(n_iter=48, n_chains=8, shape=(2, 6, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_iter, n_chains, *shape, generator=g, dtype=torch.float64) * 0.3 + 2.0
    grad = torch.randn(n_iter, n_chains, *shape, generator=g, dtype=torch.float64)
    return z, grad


def _fill(blocks: ChainBlocks, z, grad):
    for k in range(z.shape[0]):
        blocks.update(z[k], grad[k])
    return blocks


def test_float32_blocks_of_large_events_give_the_float64_moments(monkeypatch):
    """Above LARGE_EVENT values the sums are float32: the moments and every diagnostic agree with float64."""
    z, grad = _states()
    center = z[0].mean(0, keepdim=True)
    ref = _fill(ChainBlocks(8, 4, 3, center, control_variates=True), z, grad)
    monkeypatch.setattr(diag_module, "LARGE_EVENT", 10)
    small = _fill(ChainBlocks(8, 4, 3, center, control_variates=True), z, grad)
    assert ref.dtype == torch.float64 and small.dtype == torch.float32
    p = torch.full(z.shape[2:], 0.05, dtype=torch.float64)
    m64, v64, _, d64 = diagnose(ref, DiagnosticsTargets(), p)
    m32, v32, _, d32 = diagnose(small, DiagnosticsTargets(), p)
    assert m32.dtype == torch.float32
    torch.testing.assert_close(m32.double(), m64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v32.double(), v64, rtol=1e-3, atol=1e-6)
    for name in ("rhat_q99", "std_mcse", "ess_q01", "drift"):
        assert getattr(d32, name) == pytest.approx(getattr(d64, name), rel=1e-3, abs=1e-5), name


def test_the_memory_budget_lowers_the_number_of_blocks_but_not_below_eight():
    center = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    per_block = 5 * 4 * 64 * 64 * 8
    assert ChainBlocks(8, 4, 1, center, control_variates=True).max_blocks == 16
    assert ChainBlocks(8, 4, 1, center, control_variates=True, max_bytes=10 * per_block).max_blocks == 10
    assert ChainBlocks(8, 4, 1, center, control_variates=True, max_bytes=per_block).max_blocks == 8
    blocks = ChainBlocks(8, 4, 1, center, control_variates=True, max_bytes=10 * per_block)
    z = torch.randn(25, 8, 1, 64, 64, dtype=torch.float64)
    _fill(blocks, z, z)
    assert len(blocks.blocks) <= 10 and blocks.iterations == 25 - blocks.open_iterations


def test_pooled_blocks_with_a_detail_window_keep_the_moments_and_measure_the_window(monkeypatch):
    """Above POOLED_EVENT values the full-resolution sums are pooled over the groups (4x less memory) and the
    diagnostics run on a central window: the published moments stay those of the per-group sums (up to the
    between-split terms of the control variates), the figures are exactly those of blocks fed the window alone,
    and the stored full-resolution blocks are one group wide."""
    z, grad = _states(n_iter=64, shape=(1, 24, 24))
    center = z[0].mean(0, keepdim=True)
    p = torch.full(z.shape[2:], 0.05, dtype=torch.float64)
    monkeypatch.setattr(diag_module, "POOLED_EVENT", 100)
    view = diag_module.detail_view(lambda x: x, tuple(z.shape[2:]), max_values=256)
    assert view is not None and view(z[0]).shape == (8, 1, 16, 16)
    ref = _fill(ChainBlocks(8, 4, 3, center, control_variates=True), z, grad)
    big = _fill(ChainBlocks(8, 4, 3, center, control_variates=True, detail=view), z, grad)
    win = _fill(ChainBlocks(8, 4, 3, view(center), control_variates=True), view(z.flatten(0, 1)).reshape(
        64, 8, 1, 16, 16), view(grad.flatten(0, 1)).reshape(64, 8, 1, 16, 16))
    assert big.blocks[0][1].shape == (5, 1, 1, 24, 24)  # pooled: one group wide
    m_ref, v_ref, _, _ = diagnose(ref, DiagnosticsTargets(), p)
    m_big, v_big, _, d_big = diagnose(big, DiagnosticsTargets(), p)
    d_win = diagnose(win, DiagnosticsTargets(), view(p[None])[0])[3]
    torch.testing.assert_close(m_big, m_ref, rtol=0, atol=1e-12)  # the pooled mean is the same sum
    torch.testing.assert_close(v_big, v_ref, rtol=0.02, atol=0.0)  # measured 0.45 % at most
    for name in ("rhat_q99", "std_mcse", "ess_q01", "drift", "trend", "mean_error", "pattern_corr"):
        assert getattr(d_big, name) == pytest.approx(getattr(d_win, name), rel=1e-9), name
    assert d_big.failed == d_win.failed
    assert diag_module.detail_view(lambda x: x, (1, 8, 8)) is None  # small events keep per-group sums


def test_blocks_can_be_shortened_only_before_the_first_is_complete():
    z, grad = _states(n_iter=3)
    blocks = ChainBlocks(8, 4, 5, z[0].mean(0, keepdim=True))
    blocks.update(z[0])
    blocks.update(z[1])
    blocks.shorten(2)  # two iterations already summed: the open block closes now
    assert blocks.iterations == 2 and blocks.open_iterations == 0 and blocks.block_len == 2
    blocks.update(z[2])
    with pytest.raises(ValueError, match="before the first block"):
        blocks.shorten(1)


class _StopsAfter(GaussianPotential):
    """A Gaussian whose gradient raises KeyboardInterrupt (what SIGTERM becomes) after ``calls`` evaluations."""

    def __init__(self, calls: int, **kw):
        super().__init__(**kw)
        self.calls = calls

    def grad(self, x):
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return super().grad(x)


def test_chains_interrupted_before_their_diagnostics_report_the_particles_and_say_so():
    """A stop before four blocks used to raise (and the CLI wrote nothing): now the particle moments come back,
    labelled as not the posterior std."""
    cov = torch.diag(torch.tensor([1.0, 0.3, 0.1], dtype=torch.float64))
    counter = _StopsAfter(10**9, cov=cov)

    def run(pot, uncertainty):
        return PBRWP(preconditioner=cov, T=0.5, step=0.2, uncertainty=uncertainty).run(
            pot, n_particles=16, n_iter=40, rng=0, init_spread=1.0, progress=False)

    run(counter, "particles")
    sampler_calls = 10**9 - counter.calls  # the gradients PBRWP itself evaluates; the chains come after
    est = PosteriorLangevin(PosteriorLangevinConfig(stages=1, block_len=50))
    res = run(_StopsAfter(sampler_calls + 30, cov=cov), est)
    unc = res.info["uncertainty"]
    assert unc["stopped_by"] == "interrupted" and unc["converged"] is False
    assert unc["calibration_status"].startswith("not converged: the chains were interrupted")
    assert "not the posterior std" in unc["calibration_status"]
    assert res.std.shape == res.mean.shape == (1, 3) and bool(torch.isfinite(res.std).all())
    torch.testing.assert_close(res.std, res.info["particle_std"].to(res.std.dtype))


def test_a_time_limit_shortens_slow_chains_to_fit_four_blocks():
    op = Blur(gaussian_kernel(1.0), (16, 16))
    y = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    post = Posterior(op, y, 0.05, GaussianPrior(10.0))
    cfg = PosteriorLangevinConfig(time_limit=1e-4, control_variates=False)
    res = PBRWP(preconditioner="posterior", uncertainty=PosteriorLangevin(cfg)).run(
        post, n_particles=8, n_iter=3, rng=0, progress=False)
    unc = res.info["uncertainty"]
    assert unc["stopped_by"] == "time limit" and unc["chain_iterations"] == 4
    assert unc["diagnostics"]["kept_iterations"] == 2 and not unc["converged"]


def test_chunked_gradients_equal_the_batched_ones():
    op = Blur(gaussian_kernel(1.5), (24, 20), boundary="free")
    g = torch.Generator().manual_seed(1)
    y = torch.rand(1, 1, 24, 20, generator=g, dtype=torch.float64)
    post = Posterior(op, op.pad_data(y), 0.02, TV(5.0, eps=0.01))
    x = op.extend(y) + 0.05 * torch.randn(5, 1, *op.domain_shape[-2:], generator=g, dtype=torch.float64)
    f1, g1, d1 = Target(post).evaluate(x)
    chunked = Target(post, chunk_size=2)
    assert chunked.chunked(x) and not Target(post).chunked(x) and not chunked.chunked(x[:2])
    f2, g2, d2 = chunked.evaluate(x)
    torch.testing.assert_close(f2, f1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g2, g1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d2, d1, rtol=1e-12, atol=1e-12)
    f3, g3, d3 = chunked.evaluate(x, need_fn=False, need_data_grad=False)
    assert f3 is None and d3 is None
    torch.testing.assert_close(g3, g1, rtol=1e-12, atol=1e-12)
    assert Target(post).evaluate(x, need_data_grad=False)[2] is None


def test_gram64_by_column_blocks_equals_the_float64_product():
    from invprob.solvers.samplers import pbrwp

    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 1000, generator=g) + 50.0  # float32 rows far from 0: the sums need float64
    b = torch.randn(5, 1000, generator=g) + 50.0
    exact = a.double() @ b.double().T
    got = pbrwp.gram64(a, b, block=64)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, exact, rtol=1e-14, atol=0)


def test_mean_particle_std_equals_the_float64_std():
    from invprob.solvers.samplers.base import mean_particle_std

    x = torch.randn(6, 1, 33, 17, generator=torch.Generator().manual_seed(4))
    assert mean_particle_std(x, block=50) == pytest.approx(float(x.double().std(0).mean()), rel=1e-12)
    assert mean_particle_std(x[:1]) == 0.0


def test_particle_chunk_bounds_the_values_per_evaluation():
    assert deblur_module.particle_chunk(torch.zeros(1, 1, 512, 512)) is None
    assert deblur_module.particle_chunk(torch.zeros(1, 3, 512, 512)) == 1
    n = deblur_module.CHUNK_ABOVE
    assert deblur_module.particle_chunk(torch.zeros(1, n + 1)) == 1


def test_a_run_reports_its_peak_memory():
    y = np.random.default_rng(0).random((1, 24, 24))
    res = deblur_module.deblur(y, deblur_module.DeblurConfig(psf="gaussian:1", noise_std=0.05, weight=5.0,
                                                             method="map", map_max_iter=5))
    mem = res.info["memory"]
    assert mem["peak_rss_mb"] > 10 and mem["cuda_peak_mb"] is None
    assert peak_memory("cpu")["peak_rss_mb"] >= mem["peak_rss_mb"]


def _frame_std(op: Blur, noise: float, prior) -> torch.Tensor:
    """Exact frame std of the Gaussian posterior on ``op``'s domain (dense precision, small grids only)."""
    shape = op.domain_shape
    n = int(torch.tensor(shape).prod())
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    hess = op.A_adjoint(op.A(eye)) / noise**2 + prior.grad(eye)
    cov = torch.linalg.inv(hess.reshape(n, n))
    return op.crop(cov.diagonal().sqrt().reshape(1, *shape))[0, 0]


def test_the_fast_fft_grid_keeps_the_frame_posterior():
    """``fft_size="fast"`` only widens the unobserved band: same frame, same data fit, and the frame's posterior
    std within 1 % of the exact grid's (measured at the edges, where the band could matter most)."""
    k = gaussian_kernel(1.0, size=5)
    exact = Blur(k, (22, 22), boundary="free")
    fast = Blur(k, (22, 22), boundary="free", fft_size="fast")
    assert exact.domain_shape == (1, 26, 26) and fast.domain_shape == (1, 27, 27)
    assert fast.frame_origin == exact.frame_origin == (2, 2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 22, 22, generator=g, dtype=torch.float64)
    ext_e, ext_f = exact.extend(x), fast.extend(x)
    torch.testing.assert_close(exact.crop(exact.A(ext_e)), fast.crop(fast.A(ext_f)))
    u, v = torch.rand(2, 1, 1, 27, 27, generator=g, dtype=torch.float64)
    assert abs(float((fast.A(u) * v).sum() - (u * fast.A_adjoint(v)).sum())) < 1e-10
    prior = GaussianPrior(20.0)
    s_exact, s_fast = _frame_std(exact, 0.02, prior), _frame_std(fast, 0.02, prior)
    assert float(((s_fast - s_exact).abs() / s_exact).max()) < 0.01
    with pytest.raises(ValueError, match="fft_size"):
        Blur(k, (22, 22), boundary="free", fft_size="big")


def test_readme_3d_example_prints_what_the_readme_says(tmp_path):
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    m = re.search(r"<!-- readme-example-3d -->\s*```python\n(.*?)```", readme, re.S)
    assert m, "README lost its marked 3-D example"
    said = re.search(r"It prints `(PSNR [0-9.]+ dB \(data\) -> [0-9.]+ dB \(3-D TV MAP\))`", readme)
    assert said, "README lost the 3-D example's printed line"
    out = subprocess.run([sys.executable, "-c", m.group(1)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == said.group(1)


def test_fourier_preconditioner_chunked_over_the_batch_gives_the_same_products(monkeypatch):
    from invprob.solvers.samplers import preconditioners as pre

    sym = 1.0 + torch.rand(16, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    P = pre.FourierPreconditioner(sym, (16, 16))
    v = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    whole = [P.apply(v), P.sqrt_apply(v), P.inv_apply(v)]
    monkeypatch.setattr(pre, "FFT_CHUNK_ABOVE", 10)
    for a, b in zip(whole, [P.apply(v), P.sqrt_apply(v), P.inv_apply(v)], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


@pytest.mark.parametrize("chunk_above", [10, 10**9])
def test_fourier_preconditioner_apply_in_place_writes_m_v_into_v(monkeypatch, chunk_above):
    from invprob.solvers.samplers import preconditioners as pre

    monkeypatch.setattr(pre, "FFT_CHUNK_ABOVE", chunk_above)
    sym = 1.0 + torch.rand(16, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    P = pre.FourierPreconditioner(sym, (16, 16))
    v = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = P.apply(v)
    out = P.apply_(v)
    assert out is v
    torch.testing.assert_close(v, expected, rtol=0, atol=1e-13)
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    M = pre.MatrixPreconditioner(torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)))
    expected = M.apply(w)
    assert M.apply_(w) is w  # the generic form: through apply
    torch.testing.assert_close(w, expected)
