"""The sparse RWPO attention layer: the regularized Wasserstein proximal kernel of an L1 prior as attention.

Target convention ``pi(x) ∝ exp(-beta (f(x) + lambda ||x||_1))``; the layer is the backward (diffusion) half
of one forward-backward step, exactly as in ``algorithms.md`` ("Sparse RWPO transformer layer"):

.. code-block:: text

    S(x)        = sign(x) max(|x| - lambda T, 0)                      soft threshold (prox of T lambda||.||_1)
    H(x)        = lambda ||S(x)||_1 + ||S(x) - x||^2 / (2T)           Moreau envelope of lambda||.||_1 (Huber)
    U(x_j, x_l) = -(beta / (4T)) ||x_j - x_l||^2 + (beta/2) H(x_l)    logits; the H term is -log Z(x_l)
    x_j        <- x_j + (h / (2T)) [ S(x_j) - sum_l softmax_l(U(x_j, .)) x_l ]

with ``T = h`` by default (then the weight is 1/2).  The sign of the bias follows from the PBRWP logits
``W_jl = -beta ||x_j - x_l||^2 / (4T) - log Z(x_l)`` with the Laplace form ``log Z(y) = -(beta/2) e_T(y)``,
which is exact for ``V = lambda ||.||_1`` up to a constant (the envelope ``e_T`` is ``H``); since
``S(x) = x - T grad H(x)`` the layer is one BRWP step ``x - (h/2) grad e_T(x) + (h/(2T)) (x - P x)`` on the L1
prior (``tests/test_rwpo_attention.py`` checks this against an independent BRWP step).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from invprob._checks import check_positive

__all__ = ["RWPOAttention", "huber_envelope", "pairwise_sq_dists", "soft_threshold"]


def soft_threshold(x: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """Soft threshold ``sign(x) * max(|x| - tau, 0)``, coordinatewise: the prox of ``tau * ||.||_1``.

    Parameters
    ----------
    x : torch.Tensor
        Any shape.
    tau : float or torch.Tensor
        Threshold ``>= 0`` (``lambda * T`` in the layer); a tensor keeps the result differentiable in it.

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> soft_threshold(torch.tensor([-2.0, 0.5, 3.0]), 1.0)
    tensor([-1.,  0.,  2.])
    """
    return torch.sign(x) * torch.clamp(x.abs() - tau, min=0)


def huber_envelope(x: torch.Tensor, lambda_: float | torch.Tensor, T: float | torch.Tensor) -> torch.Tensor:
    """Moreau envelope of ``lambda_ * ||.||_1`` with parameter ``T``, summed over the last axis.

    ``H(x) = min_z lambda_ ||z||_1 + ||z - x||^2 / (2T) = lambda_ ||S(x)||_1 + ||S(x) - x||^2 / (2T)``,
    coordinatewise the Huber function: ``x^2 / (2T)`` for ``|x| <= lambda_ T``, ``lambda_ |x| - lambda_^2 T / 2``
    beyond. Evaluated as ``q^2 / (2T) + lambda_ (|x| - q)`` with ``q = min(|x|, lambda_ T)``, which neither
    overflows for huge ``|x|`` nor divides by a small ``T`` anything larger than ``lambda_ T``.

    Parameters
    ----------
    x : torch.Tensor
        ``(..., d)``.
    lambda_ : float or torch.Tensor
        L1 weight ``>= 0`` (``0`` gives ``H = 0``).
    T : float or torch.Tensor
        Envelope parameter ``> 0``.

    Returns
    -------
    torch.Tensor
        ``(...)``: one value per point.

    Examples
    --------
    >>> huber_envelope(torch.tensor([[0.5, -3.0]]), 1.0, 1.0)   # 0.125 + (3 - 0.5)
    tensor([2.6250])
    """
    a = x.abs()
    q = torch.minimum(a, torch.as_tensor(lambda_ * T, dtype=a.dtype, device=a.device))
    return (q * q / (2 * T) + lambda_ * (a - q)).sum(-1)


def pairwise_sq_dists(x: torch.Tensor, *, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances between the tokens of each set, in Gram form, scaled for float32 safety.

    Parameters
    ----------
    x : torch.Tensor
        ``(..., N, d)`` particle sets.
    dtype : torch.dtype, optional
        Accumulate the Gram matrix in this dtype (e.g. ``torch.float64`` when norms are large).

    Returns
    -------
    (D, s2) : tuple of torch.Tensor
        ``D`` ``(..., N, N)`` and ``s2`` ``(..., 1, 1)`` with ``||x_j - x_l||^2 = s2 * D_jl``. The tokens are
        centred per set and divided by their largest absolute coordinate ``s`` (``s2 = s^2``), so ``D`` is
        O(d) whatever the scale of ``x``; ``D`` is clamped at 0 and its diagonal is exactly 0. No
        ``N x N x d`` tensor is formed.
    """
    xc = x - x.mean(dim=-2, keepdim=True)
    s = xc.detach().abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    y = xc / s
    if dtype is not None:
        y = y.to(dtype)
    g = (y * y).sum(-1)
    gram = y @ y.transpose(-1, -2)
    d = (g.unsqueeze(-1) + g.unsqueeze(-2) - 2 * gram).clamp_min(0)
    n = x.shape[-2]
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    d = d.masked_fill(eye, 0.0).to(x.dtype)
    return d, s * s


class RWPOAttention(nn.Module):
    """Sparse RWPO attention: one backward regularized-Wasserstein-proximal step for ``lambda_ ||x||_1``.

    Tokens are particles; the softmax runs over keys jointly over all coordinates (not per coordinate), in
    the log domain; sets of particles are independent along the leading axes.

    Parameters
    ----------
    lambda_ : float
        L1 weight ``>= 0``. ``0`` gives the dense (prior-free) RWPO attention, the baseline.
    h : float
        Step ``> 0``.
    beta : float
        Inverse temperature ``> 0``.
    T : float, optional
        Kernel parameter ``> 0`` (default ``h``); the diffusion weight is ``h / (2T)``.
    learn_lambda, learn_h : bool
        Make ``lambda_`` (log-parametrised, so it needs ``lambda_ > 0``) or ``h`` trainable parameters.
        Otherwise they are buffers; the layer is always differentiable in its input.
    distance_dtype : torch.dtype, optional
        Accumulate the pairwise distances in this dtype (``torch.float64`` for large norms in float32).

    Examples
    --------
    >>> layer = RWPOAttention(lambda_=1.0, h=0.1)
    >>> x = torch.randn(4, 64, 2)            # 4 independent sets of 64 particles in 2-D
    >>> layer(x).shape
    torch.Size([4, 64, 2])
    """

    def __init__(
        self,
        lambda_: float,
        h: float,
        beta: float = 1.0,
        T: float | None = None,
        *,
        learn_lambda: bool = False,
        learn_h: bool = False,
        distance_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        lam = check_positive("lambda_", lambda_, allow_zero=True)
        h = check_positive("h", h)
        self.beta = check_positive("beta", beta)
        self._tie_T = T is None
        T = h if T is None else check_positive("T", T)
        if learn_lambda and lam == 0:
            raise ValueError("lambda_ must be positive when learn_lambda=True (it is log-parametrised)")
        self.learn_lambda, self.learn_h = bool(learn_lambda), bool(learn_h)
        self.distance_dtype = distance_dtype
        if learn_lambda:
            self.log_lambda = nn.Parameter(torch.tensor(math.log(lam)))
        else:
            self.register_buffer("lambda_buf", torch.tensor(lam))
        if learn_h:
            self.log_h = nn.Parameter(torch.tensor(math.log(h)))
        else:
            self.register_buffer("h_buf", torch.tensor(h))
        self.register_buffer("T_buf", torch.tensor(T))

    # -- parameters ------------------------------------------------------------------------------------
    @property
    def lambda_(self) -> torch.Tensor:
        return self.log_lambda.exp() if self.learn_lambda else self.lambda_buf

    @property
    def h(self) -> torch.Tensor:
        return self.log_h.exp() if self.learn_h else self.h_buf

    @property
    def T(self) -> torch.Tensor:
        return self.h if self._tie_T else self.T_buf

    def extra_repr(self) -> str:
        return (
            f"lambda_={float(self.lambda_):.4g}, h={float(self.h):.4g}, beta={self.beta:.4g}, "
            f"T={float(self.T):.4g}, learn_lambda={self.learn_lambda}, learn_h={self.learn_h}"
        )

    # -- the layer -------------------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``U(x_j, x_l)`` ``(..., N, N)`` (rows: queries ``j``, columns: keys ``l``), finite for any input."""
        lam, T = self.lambda_.to(x.dtype), self.T.to(x.dtype)
        d, s2 = pairwise_sq_dists(x, dtype=self.distance_dtype)
        big = torch.finfo(x.dtype).max / 8
        coef = (self.beta / (4 * T) * s2).clamp(max=big / (4 * x.shape[-1] + 4))
        dist = -(coef * d)
        bias = (0.5 * self.beta * huber_envelope(x, lam, T)).clamp(max=big)
        return dist + bias.unsqueeze(-2)

    def forward(self, x: torch.Tensor, *, return_weights: bool = False):
        """Apply the layer to particle sets ``x`` of shape ``(..., N, d)``.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, d)`` or ``(S, N, d)`` (any leading axes are independent sets).
        return_weights : bool
            Also return the attention matrix ``P`` ``(..., N, N)``.

        Returns
        -------
        torch.Tensor or (torch.Tensor, torch.Tensor)
            The moved particles, same shape as ``x`` (and ``P``).
        """
        if x.ndim < 2:
            raise ValueError(f"x must have shape (..., N, d) with at least 2 axes, got shape {tuple(x.shape)}")
        lam, h, T = self.lambda_.to(x.dtype), self.h.to(x.dtype), self.T.to(x.dtype)
        p = torch.softmax(self.logits(x), dim=-1)
        out = x + (h / (2 * T)) * (soft_threshold(x, lam * T) - p @ x)
        return (out, p) if return_weights else out

    def query_jacobian(self, x: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
        """Jacobian ``d out_j / d x_j`` ``(..., N, d, d)`` with keys and values held fixed (mean-field).

        ``J_j = I + (h/(2T)) [diag(1{|x_j| > lambda T}) - (beta/(2T)) C_j]`` with
        ``C_j = sum_l P_jl (x_l - m_j)(x_l - m_j)^T`` the attention-weighted covariance of the keys seen by
        query ``j`` and ``m_j = sum_l P_jl x_l``. Costs ``N d^2`` per set: for small ``d``.
        """
        lam, h, T = self.lambda_.to(x.dtype), self.h.to(x.dtype), self.T.to(x.dtype)
        if p is None:
            p = torch.softmax(self.logits(x), dim=-1)
        m = p @ x
        second = torch.einsum("...jl,...la,...lb->...jab", p, x, x)
        cov = second - m.unsqueeze(-1) * m.unsqueeze(-2)
        active = (x.abs() > lam * T).to(x.dtype)
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        return eye + (h / (2 * T)) * (torch.diag_embed(active) - (self.beta / (2 * T)) * cov)

    def joint_jacobian(self, x: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
        """Full Jacobian of the layer over a whole particle set: ``(..., N, d, N, d)``, entry ``[j, a, l, b]``
        ``= d out_{j,a} / d x_{l,b}`` (queries, keys and values all moved).

        ``d (P x)_j / d x_l = P_jl I + delta_jl (beta/(2T)) C_j + P_jl (x_l - m_j) w_jl^T`` with
        ``w_jl = (beta/(2T)) (x_j - x_l) + (beta/2) grad H(x_l)``. Costs ``(N d)^2`` memory: small sets only.
        """
        lam, h, T = self.lambda_.to(x.dtype), self.h.to(x.dtype), self.T.to(x.dtype)
        if p is None:
            p = torch.softmax(self.logits(x), dim=-1)
        n, d = x.shape[-2], x.shape[-1]
        c = h / (2 * T)
        grad_h = (x - soft_threshold(x, lam * T)) / T
        m = p @ x
        dl = x.unsqueeze(-3) - m.unsqueeze(-2)  # [j, l] -> x_l - m_j
        w = (self.beta / (2 * T)) * (x.unsqueeze(-2) - x.unsqueeze(-3)) + (self.beta / 2) * grad_h.unsqueeze(-3)
        eye_d = torch.eye(d, dtype=x.dtype, device=x.device)
        eye_n = torch.eye(n, dtype=x.dtype, device=x.device)
        dpx = torch.einsum("...jl,ab->...jalb", p, eye_d) + torch.einsum("...jl,...jla,...jlb->...jalb", p, dl, w)
        cov_term = self.query_jacobian(x, p) - eye_d - c * torch.diag_embed((x.abs() > lam * T).to(x.dtype))
        # query_jacobian = I + c [diag(active) - (beta/(2T)) C_j]  ->  cov_term = -c (beta/(2T)) C_j
        diag = c * torch.diag_embed((x.abs() > lam * T).to(x.dtype)) + cov_term  # (..., N, d, d)
        jac = -c * dpx + torch.einsum("jl,...jab->...jalb", eye_n, diag)
        return jac + torch.einsum("jl,ab->jalb", eye_n, eye_d)

    def query_divergence(
        self, x: torch.Tensor, p: torch.Tensor | None = None, *, probes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Divergence ``tr(J_j - I)`` ``(..., N)`` of the layer's displacement in its query (keys fixed).

        Exact and ``O(N^2 d)`` (no ``d x d`` matrices): ``tr C_j = sum_l P_jl ||x_l||^2 - ||m_j||^2``. With
        ``probes`` ``(K, ..., N, d)`` (Rademacher vectors) returns instead the Hutchinson estimate
        ``mean_k v_k^T (J_j - I) v_k``.
        """
        lam, h, T = self.lambda_.to(x.dtype), self.h.to(x.dtype), self.T.to(x.dtype)
        if p is None:
            p = torch.softmax(self.logits(x), dim=-1)
        m = p @ x
        c = h / (2 * T)
        active = (x.abs() > lam * T).to(x.dtype)
        if probes is None:
            xc = x - x.mean(dim=-2, keepdim=True)
            mc = m - x.mean(dim=-2, keepdim=True)
            tr_cov = p @ (xc * xc).sum(-1, keepdim=True)
            tr_cov = (tr_cov.squeeze(-1) - (mc * mc).sum(-1)).clamp_min(0)
            return c * (active.sum(-1) - (self.beta / (2 * T)) * tr_cov)
        # v^T C_j v = sum_l P_jl ((x_l - m_j) . v)^2 = sum_l P_jl (x_l . v)^2 - (m_j . v)^2, v per query
        xv = torch.einsum("k...la,k...ja->k...jl", x.expand_as(probes), probes)
        mv = (m.unsqueeze(0) * probes).sum(-1)
        vcv = (p.unsqueeze(0) * xv * xv).sum(-1) - mv * mv
        vdv = (active.unsqueeze(0) * probes * probes).sum(-1)
        return (c * (vdv - (self.beta / (2 * T)) * vcv)).mean(0)
