"""The RWPO transformer: density tracking, conditioning, save/load, reconstruction, devices."""

from __future__ import annotations

import pytest
import torch

from invprob.results import PosteriorResult
from invprob.solvers.learned import RWPOAttention, RWPOConfig, RWPOTransformer


def _randomise(model: RWPOTransformer, seed: int = 0, scale: float = 0.3) -> RWPOTransformer:
    """Non-zero potentials (an untrained model is the identity drift)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.mark.parametrize("attention", ["l1", "dense", "none"])
def test_joint_logdet_is_the_exact_change_of_variables(attention):
    torch.manual_seed(0)
    model = _randomise(RWPOTransformer(RWPOConfig(dim=2, n_blocks=2, hidden=8, attention=attention, lambda_=0.7,
                                                  h=0.1, T=0.3))).double()
    x0 = torch.randn(5, 2, dtype=torch.float64)
    out = model.flow(x0, logdet="joint")
    full = torch.autograd.functional.jacobian(lambda z: model.flow(z).x, x0).reshape(10, 10)
    expected = torch.linalg.slogdet(full)[1]
    torch.testing.assert_close(out.logdet.sum(), expected)


def test_exact_logdet_matches_mean_field_jacobian_without_attention():
    torch.manual_seed(1)
    model = _randomise(RWPOTransformer(RWPOConfig(dim=3, n_blocks=3, hidden=8, attention="none"))).double()
    x0 = torch.randn(4, 3, dtype=torch.float64)
    for mode in ("exact", "joint"):
        ld = model.flow(x0, logdet=mode).logdet
        for i in range(4):
            jac = torch.autograd.functional.jacobian(lambda z, i=i: model.flow(z[None]).x[0], x0[i])
            torch.testing.assert_close(ld[i], torch.linalg.slogdet(jac)[1])
    # divergence = first order of the log-determinant; Hutchinson estimates the divergence
    div = model.flow(x0, logdet="divergence").logdet
    hut = torch.stack([model.flow(x0, logdet="hutchinson", n_probes=64,
                                  generator=torch.Generator().manual_seed(s)).logdet for s in range(20)]).mean(0)
    assert (hut - div).abs().max() < 0.1 * div.abs().max() + 0.02


def test_hjb_residual_zero_for_untrained_and_positive_after():
    model = RWPOTransformer(RWPOConfig(dim=2, n_blocks=3, hidden=8))
    x0, _ = model.base_sample(16, generator=torch.Generator().manual_seed(0))
    assert float(model.flow(x0, hjb=True).hjb.detach()) == 0.0
    _randomise(model)
    assert float(model.flow(x0, hjb=True).hjb.detach()) > 0.0


def test_untrained_block_is_pure_attention():
    cfg = RWPOConfig(dim=3, n_blocks=1, hidden=8, lambda_=0.5, h=0.2)
    model = RWPOTransformer(cfg)
    x = torch.randn(2, 10, 3)
    torch.testing.assert_close(model(x), RWPOAttention(0.5, 0.2)(x))


def test_forward_backward_block_with_quadratic_drift():
    """With phi = ||x||^2 a / 2 the block is x - h a x followed by the L1 layer (forward-backward splitting)."""
    model = RWPOTransformer(RWPOConfig(dim=2, n_blocks=1, hidden=4, lambda_=1.0, h=0.1))
    with torch.no_grad():
        model.potentials[0].quad.fill_(2.0)
    x = torch.randn(8, 2)
    torch.testing.assert_close(model(x), RWPOAttention(1.0, 0.1)(x - 0.1 * 2.0 * x))


def test_conditioning_shapes_and_errors():
    model = RWPOTransformer(RWPOConfig(dim=4, cond_dim=3, n_blocks=2, hidden=8, first_guess=True))
    g = torch.Generator().manual_seed(0)
    y = torch.randn(5, 3)
    xs = model.sample(7, y, generator=g)
    assert xs.shape == (5, 7, 4)
    assert model.sample(7, y[0], generator=g).shape == (1, 7, 4)
    x = torch.randn(5, 7, 4)
    with pytest.raises(ValueError, match="cond is required"):
        model.flow(x)
    with pytest.raises(ValueError, match="cond must have"):
        model.flow(x, torch.randn(5, 2))
    with pytest.raises(ValueError, match="cond must have"):
        model.flow(x, torch.randn(4, 3))
    with pytest.raises(ValueError, match="x must have shape"):
        model.flow(torch.randn(5, 7, 3), y)
    with pytest.raises(ValueError, match="cond_dim=0"):
        RWPOTransformer(RWPOConfig(dim=2)).flow(torch.randn(4, 2), torch.randn(3))


def test_config_validation():
    with pytest.raises(ValueError, match="attention"):
        RWPOConfig(dim=2, attention="sparse")
    with pytest.raises(ValueError, match="h must"):
        RWPOConfig(dim=2, h=0)
    with pytest.raises(ValueError, match="lambda_"):
        RWPOConfig(dim=2, lambda_=-1)
    with pytest.raises(ValueError, match="unknown model config"):
        RWPOConfig.from_dict({"dim": 2, "heads": 4})
    with pytest.raises(ValueError, match="first_guess"):
        RWPOConfig(dim=2, first_guess=True)


def test_save_load_roundtrip(tmp_path):
    model = _randomise(RWPOTransformer(RWPOConfig(dim=3, cond_dim=2, n_blocks=2, hidden=8, learn_lambda=True,
                                                  first_guess=True)))
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").exists() and (tmp_path / "m" / "model.pt").exists()
    loaded = RWPOTransformer.load(tmp_path / "m")
    assert loaded.config == model.config
    y = torch.randn(2)
    a = model.reconstruct(y, 16, seed=3)
    b = loaded.reconstruct(y, 16, seed=3)
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.std, b.std)
    with pytest.raises(ValueError, match="config.json"):
        RWPOTransformer.load(tmp_path / "missing")


def test_reconstruct_returns_posterior_result():
    model = _randomise(RWPOTransformer(RWPOConfig(dim=6, cond_dim=4, n_blocks=2, hidden=8, first_guess=True)))
    res = model.reconstruct(torch.randn(4), n_particles=32, seed=0)
    assert isinstance(res, PosteriorResult)
    assert res.mean.shape == (1, 6) and res.std.shape == (1, 6) and res.samples.shape == (32, 6)
    assert res.map is None and res.info["n_particles"] == 32 and "uncertainty" in res.info
    again = model.reconstruct(torch.randn(4), n_particles=32, seed=0)
    assert not torch.equal(res.mean, again.mean)  # depends on y
    same = model.reconstruct(torch.zeros(4), n_particles=32, seed=1), model.reconstruct(torch.zeros(4), 32, seed=1)
    torch.testing.assert_close(same[0].mean, same[1].mean)
    with pytest.raises(ValueError, match="y must have shape"):
        model.reconstruct(torch.randn(5))
    with pytest.raises(ValueError, match="cond_dim"):
        RWPOTransformer(RWPOConfig(dim=2)).reconstruct(torch.randn(2))


def test_float64_and_no_grad_inference():
    model = RWPOTransformer(RWPOConfig(dim=2, n_blocks=2, hidden=8)).double()
    x = model.sample(10, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float64 and not x.requires_grad


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_gpu_agreement():
    torch.manual_seed(0)
    cpu = _randomise(RWPOTransformer(RWPOConfig(dim=3, n_blocks=2, hidden=8))).double()
    gpu = RWPOTransformer(cpu.config).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    a = cpu.flow(x, logdet="joint")
    b = gpu.flow(x.cuda(), logdet="joint")
    torch.testing.assert_close(a.x, b.x.cpu())
    torch.testing.assert_close(a.logdet, b.logdet.cpu())
