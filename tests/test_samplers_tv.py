"""TV deblurring: the default PBRWP output (posterior-langevin) against a reference chain on the same posterior.

Cameraman 48^2, Gaussian blur 1.5, noise 0.01, TV(7.5, eps = 0.01) (the eps-smoothed TV is the target of every
sampler here). Reference: 16 MLA chains x 3000 iterations (preconditioner "posterior", step 0.25 / L).
Measured when written: a second, independent reference agrees to std ratio 1.00, smoothed-std correlation
0.97, mean PSNR 39.3 dB; the default PBRWP output (kernel chains with control variates): std ratio 1.04,
correlation 0.97, band ratios 1.04/0.97/1.02, mean PSNR 37.8 dB against the reference mean (the MAP: 32.0 dB).
Before the control variates: std ratio 1.09, correlation 0.86, mean 35.3 dB. The default is now the
self-checking chains on the posterior itself (``"posterior-langevin"``); its status must say "converged".
"""

from __future__ import annotations

import pytest
import torch

from invprob import Posterior
from invprob.operators import Blur, gaussian_kernel
from invprob.priors import TV
from invprob.solvers.map import map_estimate
from invprob.solvers.samplers import MLA, PBRWP
from invprob.solvers.samplers.uncertainty import calibration_report, psnr

pytestmark = pytest.mark.usefixtures("single_thread_module")  # one intra-op thread (shared CI box)


@pytest.mark.slow
def test_default_output_is_calibrated_on_tv_deblur():
    from skimage import data
    from skimage.transform import resize

    n = 48
    x0 = torch.tensor(resize(data.camera() / 255.0, (n, n), anti_aliasing=True), dtype=torch.float32)
    op = Blur(gaussian_kernel(1.5), (n, n))
    y = op.A(x0[None, None]) + 0.01 * torch.randn(1, 1, n, n, generator=torch.Generator().manual_seed(0))
    post = Posterior(op, y, 0.01, TV(7.5, eps=0.01))
    x_map = map_estimate(post, max_iter=500).x
    kappa = TV(7.5).curvature_from(x_map) / 4
    ref_post = Posterior(op, y, 0.01, TV(7.5, eps=0.01, curvature=kappa))  # M^-1 = A^T A / s^2 + kappa D^T D + c I
    ref = MLA(preconditioner="posterior", step_scale=0.25).run(
        ref_post, n_particles=16, n_iter=3000, burn_in=600, rng=1, init=x_map, progress=False, keep_samples=400)
    res = PBRWP().run(post, n_particles=40, n_iter=100, rng=0, init=x_map, progress=False, keep_samples=400)
    assert res.info["uncertainty"]["estimator"] == "posterior-langevin"
    assert res.info["uncertainty"]["calibration_status"].startswith("converged"), res.info["uncertainty"]
    assert res.info["preconditioner"]["kind"] == "posterior"
    rep = calibration_report(res, std_ref=ref.std, mean_ref=ref.mean, reference_samples=ref.samples)
    assert 0.8 <= rep["std_ratio_median"] <= 1.25, rep
    assert rep["corr_smoothed"] >= 0.85, rep
    assert all(0.7 <= b <= 1.4 for b in rep["band_ratios"]), rep
    # the mean moves off the MAP towards the posterior mean (36 dB at 128^2 is a benchmark figure)
    assert rep["psnr_mean_vs_ref"] > psnr(x_map, ref.mean) + 4.0, rep
    # the faithful particles collapse here too
    assert float((res.info["particle_std"] / ref.std).median()) < 0.2
