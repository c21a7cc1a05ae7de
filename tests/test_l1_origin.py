"""The Haar tiling of the L1 prior anchored to the observed frame on the free boundary's extended grid."""

from __future__ import annotations

import pytest
import torch

from invprob.operators import Blur, gaussian_kernel
from invprob.priors import L1


def _frame_and_domain(origin=(3, 5), size=(32, 40), margin=(6, 10)):
    g = torch.Generator().manual_seed(0)
    frame = torch.randn(2, 1, *size, generator=g, dtype=torch.float64)
    dom = torch.zeros(2, 1, size[0] + margin[0], size[1] + margin[1], dtype=torch.float64)
    dom[..., origin[0]:origin[0] + size[0], origin[1]:origin[1] + size[1]] = frame
    return frame, dom


def test_anchored_prior_on_the_extended_grid_is_the_frame_prior():
    frame, dom = _frame_and_domain()
    on_frame = L1(2.0, "haar", levels=3).fn(frame)
    torch.testing.assert_close(L1(2.0, "haar", levels=3, origin=(3, 5)).fn(dom), on_frame, rtol=1e-12, atol=1e-12)
    # anchored to the extended grid instead (the old behaviour), the blocks straddle the frame: another prior
    assert not torch.allclose(L1(2.0, "haar", levels=3).fn(dom), on_frame, rtol=1e-3)


def test_anchored_transform_is_orthonormal_and_its_prox_exact():
    _, dom = _frame_and_domain()
    prior = L1(0.7, "haar", levels=3, origin=(3, 5))
    c = prior.analysis(dom)
    torch.testing.assert_close(prior.synthesis(c), dom, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c.norm(), dom.norm(), rtol=1e-12, atol=1e-12)
    p = prior.prox(dom, 0.3)
    obj = lambda z: 0.5 * ((z - dom) ** 2).flatten(1).sum(1) + 0.3 * prior.fn(z)  # noqa: E731
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        z = p + 1e-3 * torch.randn(p.shape, generator=g, dtype=p.dtype)
        assert bool((obj(p) <= obj(z) + 1e-12).all())


def test_free_blur_declares_the_frame_origin_and_the_pipeline_uses_it():
    from invprob.solvers.deblur import make_prior

    op = Blur(gaussian_kernel(2.0), (1, 32, 32), boundary="free")
    kh = op.kernel.shape[0]
    assert op.frame_origin == (kh // 2, kh // 2)
    assert Blur(gaussian_kernel(2.0), (1, 32, 32)).frame_origin == (0, 0)
    assert make_prior("l1", 1.0, origin=op.frame_origin).origin == op.frame_origin


@pytest.mark.parametrize("origin", [(-1, 0), (1.5, 0), (1,), "ab"])
def test_bad_origin_is_refused(origin):
    with pytest.raises(ValueError, match="origin"):
        L1(1.0, "haar", origin=origin)
