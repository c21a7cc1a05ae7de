"""PBRWP (preconditioned backward regularized Wasserstein proximal) and BRWP (``M = I``), with a calibrated output.

One step, exactly as in ``algorithms.md``:

.. code-block:: text

    W_ij  = -beta ||x_i - x_j||^2_{M^-1} / (4T) - log Z(x_j)         (N x N logits, float64, Gram form)
    P     = softmax_j(W_ij)
    x_i  <- x_i - (eta/2) M grad V(x_i) + (eta/(2T)) (x_i - sum_j P_ij x_j)

with ``log Z(y) = -(beta/2) e_T(y)`` (Laplace rule) and ``e_T(y) = min_z V(z) + ||z - y||^2_{M^-1}/(2T)``.

Cost. For a circulant blur and a Fourier-diagonal ``M`` (the defaults on a circular-blur posterior) the step runs
in Fourier with the same formulas (``info["fourier_step"]``): one ``rfft2`` of the centred particles, one of the
prior gradient, one ``irfft2`` for ``M grad V``; the ``M^-1`` Gram (float64), ``g^T M g`` and the data term of
``V`` at the one-step envelope point by Parseval on the half spectrum. Measured at 256^2, N = 40 (one CPU
thread): 1.3-1.4x the time of N batched ULA steps, against 2.1x for the spatial path (``benchmarks/RESULTS.md``,
section ``pbrwp_cost``).

The particles of this deterministic scheme collapse at image scale (``algorithms.md``, "the high-dimensional
trap"): their spread is a few per cent of the posterior std. The particle moments stay available
(``uncertainty="particles"``, and always in ``info["particle_mean"]``/``info["particle_std"]``); the default
output is the moments of the regularized density ``WProx(rho_N) = (1/N) sum_j K(., x_j)``,

.. code-block:: text

    K(z, x) ∝ exp(-(beta/2) [V(z) + ||z - x||^2_{M^-1}/(2T)])
    mean = average kernel mean;  cov = average kernel covariance + covariance of the kernel means

- ``"kernel-exact"``: quadratic ``V`` (a :class:`~invprob.Posterior` with a GaussianPrior and a circular blur
  and a Fourier-diagonal ``M``, or a potential with ``kernel_moments``): each kernel is Gaussian with precision
  ``(beta/2)(Q + M^{-1}/T)`` and mean ``mu + (I + T M Q)^{-1}(x_j - mu)``; the kernel means are accumulated
  (Welford) over the post-burn-in iterations and the kernel variance is added exactly (FFT).
- ``"kernel-langevin"``: any posterior (TV, L1): the kernels are sampled directly. Kernel ``j``'s potential
  ``U_j(z) = V(z)/2 + ||z - x_j||^2_{M^-1}/(4T)`` (density ``exp(-beta U_j)``) is strongly convex in the
  ``M`` metric; a short preconditioned Langevin chain per particle (batched over particles, preconditioner
  ``2T M/(1+T)``, the exact inverse of ``U_j``'s quadratic part when ``M^{-1}`` is the data curvature), started
  at the final particles, gives the mixture moments from its states after ``kernel_burn_in``. The moments use
  zero-variance control variates (Assaraf & Caffarel 1999; Mira, Solgi & Imparato 2013) whenever ``diag(M)``
  is known (Fourier-diagonal, matrix and identity ``M``): with ``P = 2T M/(1+T)`` and ``g = P grad U_j(z)``,
  ``E_K[g] = 0`` and ``E_K[(z - m)_i g_i] = P_ii / beta`` by integration by parts, so per chain
  ``m_j = mean(z) - a mean(g)`` and ``Var_j = var(z) - a (cov(z, g) - P_ii/beta)`` with ``a = cov(z, g)/var(g)``
  per pixel. For a Gaussian kernel with ``P`` its covariance both are exact from any state (no Langevin step
  bias); for TV they cut the Monte-Carlo error of mean and std several-fold (measured in
  ``benchmarks/RESULTS.md``). ``info["uncertainty"]`` records ``control_variates`` and the plain estimate's
  mean std beside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from invprob._checks import check_positive
from invprob.solvers.samplers.base import Sampler, Welford, randn_like, weighted_sq_sum
from invprob.solvers.samplers.preconditioners import (
    FourierPreconditioner,
    make_preconditioner,
    tv_curvature_from_map,
)

__all__ = ["BRWP", "PBRWP", "PBRWPConfig"]

LOGZ = ("auto", "exact", "envelope", "surrogate", "none")
UNCERTAINTY = ("auto", "particles", "kernel-exact", "kernel-langevin")


@dataclass(frozen=True)
class PBRWPConfig:
    """Configuration of PBRWP.

    T : float
        Kernel time (> 0). Default 1: with ``M`` equal to the posterior covariance the kernel ``K(., x)`` is then
        the posterior itself for a Gaussian target (kernel std ratio ``sqrt(2T/(1+T))``), while the faithful
        particles collapse (their invariant law ``(1 - T^2) Sigma`` is a point mass); use ``T < 1`` to study the
        particles themselves (the closed-form invariant law needs ``T M < Sigma``).
    step : float or None
        Step ``eta`` (> 0); ``None`` -> ``step_scale / L`` (``L``: Lipschitz constant of ``M grad V`` in the
        ``M`` metric).
    preconditioner : "auto" | "normal" | "posterior" | "identity" | callable | matrix | Preconditioner
        ``"auto"``: ``"posterior"`` (exact posterior covariance by FFT) for a GaussianPrior with a circular blur,
        and for a TV prior with a circular blur (``tv_curvature`` below); ``"normal"`` for other linear
        posteriors; ``"identity"`` for plain
        potentials. Measured on the 64^2 Gaussian deblur (N = 40, T = 0.9): ``"posterior"`` gives band variance
        ratios 0.95/0.95/0.94, ``"normal"`` with c = 1 gives 1.05/1.22/1.95 (the high band, set by the prior,
        is miscalibrated because M^-1 lacks the prior's curvature).
    c : float
        Shift of ``M^{-1} = A^T A/sigma_n^2 + c I`` (``"normal"``) or of ``"posterior"``.
    tv_curvature : float or None
        ``"posterior"`` preconditioner with a TV prior: ``M^{-1} = A^T A/sigma_n^2 + tv_curvature D^T D + c I``.
        With ``preconditioner="auto"``, a TV prior and a circular blur, ``None`` means
        ``tv_curvature_scale * weight / rms|grad x_MAP|`` (:func:`tv_curvature_from_map` at the initial point).
    tv_curvature_scale : float
        Measured at 128^2 (cameraman, theta 7.5, T = 1): scale 1 gives band variance ratios 1.00/0.68/0.40
        against a reference chain, 0.5 gives 1.00/0.85/0.65, 0.25 gives 0.99/0.95/0.95 (default), 0.125 gives
        1.05/1.15/1.50.
    logz : {"auto", "exact", "envelope", "surrogate", "none"}
        ``"exact"``: the potential's ``moreau_envelope`` or the FFT closed form (quadratic posterior, Fourier
        ``M``); ``"envelope"``: ``e_T`` bounded above by ``envelope_iters`` preconditioned gradient steps on
        ``z -> V(z) + ||z - y||^2_{M^-1}/(2T)`` from ``y``; ``"surrogate"``: ``V(y) - (T/2) grad V^T M grad V``;
        ``"none"``: ``Z`` constant. ``"auto"``: exact when available, else envelope.
    envelope_iters : int
    prior_gradient, lam
        Drift of non-smooth priors (see :class:`~invprob.solvers.samplers.base.Target`): ``"smooth"`` (default:
        the prior's ``eps``-smoothed gradient, as :meth:`Posterior.grad`) or ``"moreau"``
        (``(x - prox_{lam R}(x))/lam``, ``lam = 1/L_data`` unless given).
    uncertainty : {"auto", "particles", "kernel-exact", "kernel-langevin"}
        Which estimator produces ``mean``/``std`` (see the module docstring); ``"auto"`` = kernel-exact where it
        exists, kernel-langevin for other posteriors, particles for plain potentials without closed forms.
    kernel_steps, kernel_burn_in, kernel_step_scale, kernel_noise
        The kernel chains of ``"kernel-langevin"``: steps in all, discarded steps, step as a fraction of
        ``1/L_kernel``; ``kernel_noise="langevin"`` uses ``sqrt(2 eta / beta)``, ``"exact-quadratic"`` uses
        ``sqrt(eta (2 - eta) / beta)`` (no step bias on the kernel's quadratic part when its preconditioner is
        exact).
    kernel_rounds : int
        ``1``: the kernels sit on the PBRWP particles (``WProx(rho_N)`` as defined). ``r > 1``: after each of the
        first ``r - 1`` rounds of kernel chains the whole cloud is shifted onto the mean of its kernel mixture
        (a fixed-point iteration ``x* = E_{K(., x*)}[z]``; for a quadratic ``V`` with ``M = Q^-1`` and ``T = 1``
        the shift halves the distance to the posterior mean each round). Recorded in ``info``.
    kernel_control_variates : bool
        Zero-variance control variates for the kernel-langevin moments (module docstring); used when the
        preconditioner knows its diagonal, else the plain pooled moments (said in ``info``).
    """

    T: float = 1.0
    step: float | None = None
    step_scale: float = 0.5
    preconditioner: Any = "auto"
    c: float = 1.0
    tv_curvature: float | None = None
    tv_curvature_scale: float = 0.25
    logz: str = "auto"
    envelope_iters: int = 1
    prior_gradient: str = "auto"
    lam: float | None = None
    uncertainty: str = "auto"
    kernel_steps: int = 60
    kernel_burn_in: int = 20
    kernel_step_scale: float = 0.5
    kernel_noise: str = "langevin"
    kernel_rounds: int = 2
    kernel_control_variates: bool = True

    def __post_init__(self):
        check_positive("T", self.T)
        if self.step is not None:
            check_positive("step", self.step)
        check_positive("step_scale", self.step_scale)
        check_positive("c", self.c)
        check_positive("kernel_step_scale", self.kernel_step_scale)
        if self.lam is not None:
            check_positive("lam", self.lam)
        if self.logz not in LOGZ:
            raise ValueError(f"logz must be one of {LOGZ}, got {self.logz!r}")
        if self.uncertainty not in UNCERTAINTY:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY}, got {self.uncertainty!r}")
        if self.kernel_noise not in ("langevin", "exact-quadratic"):
            raise ValueError(f"kernel_noise must be 'langevin' or 'exact-quadratic', got {self.kernel_noise!r}")
        if int(self.kernel_rounds) < 1:
            raise ValueError(f"kernel_rounds must be a positive integer, got {self.kernel_rounds!r}")
        if int(self.envelope_iters) < 1:
            raise ValueError(f"envelope_iters must be a positive integer, got {self.envelope_iters!r}")
        if int(self.kernel_steps) < 1 or not 0 <= int(self.kernel_burn_in) < int(self.kernel_steps):
            raise ValueError("kernel_steps must be >= 1 and 0 <= kernel_burn_in < kernel_steps, got "
                             f"{self.kernel_steps!r}, {self.kernel_burn_in!r}")


class PBRWP(Sampler):
    """Preconditioned backward regularized Wasserstein proximal sampler (interacting particles).

    Parameters
    ----------
    preconditioner : "auto" | "normal" | "posterior" | "identity" | callable | matrix
        ``M``; ``"normal"`` = ``(A^T A/sigma_n^2 + c I)^{-1}``; see :class:`PBRWPConfig`.
    T, step, c, ... : see :class:`PBRWPConfig`.

    Examples
    --------
    >>> import torch
    >>> from invprob.solvers.samplers import PBRWP, GaussianPotential
    >>> pot = GaussianPotential(torch.diag(torch.tensor([1.0, 0.1], dtype=torch.float64)))
    >>> res = PBRWP(preconditioner=pot.cov, T=0.5, step=0.2).run(pot, n_particles=64, n_iter=200, rng=0,
    ...     init_spread=1.0, progress=False)
    >>> res.info["uncertainty"]["estimator"]
    'kernel-exact'
    """

    name = "PBRWP"
    default_init_spread = 0.01

    def __init__(self, preconditioner: Any = "auto", *, T: float = 1.0, step: float | None = None, **kwargs):
        super().__init__(PBRWPConfig(preconditioner=preconditioner, T=T, step=step, **kwargs))

    def _target_options(self):
        return {"prior_gradient": self.config.prior_gradient, "lam": self.config.lam}

    # ------------------------------------------------------------------------------------------------- setup
    def _prepare(self, target, x, gen):
        cfg = self.config
        tv_curv = cfg.tv_curvature
        if tv_curv is None and cfg.preconditioner == "auto" and _is_tv_on_circular_blur(target):
            tv_curv = cfg.tv_curvature_scale * tv_curvature_from_map(target.obj.prior.weight, target.center)
        precond = make_preconditioner(cfg.preconditioner, target.obj, c=cfg.c, tv_curvature=tv_curv)
        L = target.lipschitz(precond)
        step = cfg.step if cfg.step is not None else cfg.step_scale / L
        state: dict[str, Any] = {"precond": precond, "step": float(step), "lipschitz": L, "T": float(cfg.T)}
        closed = self._closed_form(target, precond, x)
        state["closed"] = closed
        logz = cfg.logz
        if logz == "auto":
            logz = "exact" if closed is not None or hasattr(target.obj, "moreau_envelope") else "envelope"
        if logz == "exact" and closed is None and not hasattr(target.obj, "moreau_envelope"):
            raise ValueError("logz='exact' needs a potential with moreau_envelope or a Gaussian posterior with a "
                             "circular blur and a Fourier-diagonal preconditioner")
        state["logz"] = logz
        unc = cfg.uncertainty
        explicit = unc != "auto"
        has_kernel_closed = closed is not None or hasattr(target.obj, "kernel_moments")
        if unc == "auto":
            unc = "kernel-exact" if has_kernel_closed else ("kernel-langevin" if target.is_posterior else "particles")
        fallback = None
        if unc == "kernel-langevin" and not has_kernel_closed and target.is_posterior:
            try:
                precond.sqrt_apply(torch.zeros_like(x[:1]))
            except ValueError as err:
                if explicit:
                    raise ValueError(f"uncertainty='kernel-langevin' needs M^(1/2): {err}") from None
                fallback = f"kernel-langevin unavailable ({err}); raw particle spread reported"
                unc = "particles"
        if unc == "kernel-exact" and not has_kernel_closed:
            raise ValueError("uncertainty='kernel-exact' needs a quadratic potential (kernel_moments) or a Gaussian "
                             "posterior with a circular blur and a Fourier-diagonal preconditioner")
        state["uncertainty"] = unc
        state["fallback"] = fallback
        if unc == "kernel-exact":
            state["kernel_means"] = Welford()
        spectral = self._spectral_state(target, precond, x, L, float(cfg.T))
        if spectral is not None:
            state["spectral"] = spectral
        state["info"] = {"T": float(cfg.T), "logz": logz, "lipschitz_M": L, "fourier_step": spectral is not None}
        return state

    def _closed_form(self, target, precond, x):
        """FFT quantities of a quadratic posterior with a Fourier-diagonal ``M`` (else None)."""
        post = target.obj
        if not (target.is_posterior and post.has_closed_form and isinstance(precond, FourierPreconditioner)):
            return None
        H, W = target.event_shape[-2:]
        q = post.precision_symbol(device=x.device) / post.beta  # Hessian of V on the rfft grid
        m = precond.inv_symbol.to(x.device)
        T = float(self.config.T)
        mu, _ = post.closed_form_moments(dtype=torch.float64, device=x.device)
        wts = post.rfft_weights(H, W, device=x.device)
        kernel_var = float((wts / ((post.beta / 2) * (q + m / T))).sum() / (H * W))
        real = x.dtype
        return {
            "mu": mu.to(real),
            "env_symbol": (q * m / (m + T * q)).to(real),  # e_T(y) = (y - mu)^T [Q (I + T M Q)^{-1}] (y - mu) / 2
            "mean_symbol": (m / (m + T * q)).to(real),  # (I + T M Q)^{-1}
            "wts": wts.to(real),
            "kernel_var": kernel_var,
            "HW": H * W,
        }

    def _spectral_state(self, target, precond, x, L, T):
        """Fourier constants of the fused step (circulant blur and Fourier-diagonal ``M``), else None.

        Everything the step needs is then diagonal on the ``rfft2`` grid: ``rfft2(grad V)`` from one ``rfft2`` of
        the centred particles and one of the prior gradient, ``M grad V`` from one ``irfft2``, the ``M^-1`` Gram
        and every data value (``V`` at the envelope point, ``g^T M g``) by Parseval, without further FFTs.
        """
        sp = target.spectral(x)
        if sp is None or not isinstance(precond, FourierPreconditioner):
            return None
        if target.chunk_size is not None and x.shape[0] > target.chunk_size:
            return None  # chunked evaluation asked for: keep the generic (chunked) path
        m = precond.inv_symbol.to(device=x.device)  # eigenvalues of M^-1, float64
        if tuple(m.shape) != tuple(sp.K.shape[-2:]):
            return None
        real = x.dtype
        tau = T / (1.0 + T * L)  # step of the one-step envelope
        K64 = target.obj.operator.fourier_symbol(torch.float64, x.device)
        return {
            "data": sp,
            "minv": (1.0 / m).to(real),  # M on the rfft grid
            "sqrt_w_gram": (sp.w * m / sp.HW).sqrt().to(real),  # e_i^T M^-1 e_j = sum_k w m Re(E_i conj E_j) / HW
            "sqrt_w_gmg": (sp.w / (m * sp.HW)).sqrt().to(real),  # g^T M g = sum_k w |G_k|^2 / (m HW)
            "tau": tau,
            "tauK_M": (tau * K64 / m).to(sp.K.dtype),  # rfft2(A z - y) = R - tau K M G at z = x - tau M g
        }

    # ------------------------------------------------------------------------------------------------- log Z
    def _envelope(self, target, x, fn, gMg, Mg, state, spectral=None):
        """``e_T`` per particle (float64) by the configured rule (``gMg``: ``g^T M g`` per particle).

        ``spectral = (R, G)`` (residual and gradient spectra of the fused step): the data value at the envelope
        point by Parseval instead of another operator call.
        """
        T = state["T"]
        mode = state["logz"]
        if mode == "none":
            return torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        if mode == "exact":
            closed = state["closed"]
            if closed is not None:
                H, W = x.shape[-2:]
                d = torch.fft.rfft2(x - closed["mu"])
                val = (closed["wts"] * closed["env_symbol"] * d.abs() ** 2).flatten(1).sum(1) / closed["HW"]
                return 0.5 * val.double()
            return target.obj.moreau_envelope(x, T, state["precond"]).double()
        if mode == "surrogate":
            return fn.double() - (T / 2) * gMg.double()
        # "envelope": an upper bound of e_T from preconditioned gradient steps on z -> V(z) + ||z - y||^2_M^-1/(2T)
        precond = state["precond"]
        tau = T / (1.0 + T * state["lipschitz"])
        n_it = int(self.config.envelope_iters)
        z = torch.add(x, Mg, alpha=-tau)  # first step from z = y: ||z - y||^2_M^-1 = tau^2 g^T M g, no operator call
        if n_it == 1:
            quad = tau**2 * gMg / (2 * T)
            if spectral is not None:
                R, G = spectral
                sc = state["spectral"]
                value = sc["data"].data_value(torch.addcmul(R, G, sc["tauK_M"], value=-1)) + target.prior_value(z)
            else:
                value = target.value(z)
            return (value + quad).double()
        for _ in range(n_it - 1):
            _, gz, _ = target.evaluate(z, need_fn=False)
            z = z - tau * (precond.apply(gz) + (z - x) / T)
        dz = z - x
        quad = (dz * precond.inv_apply(dz)).flatten(1).sum(1) / (2 * T)
        return (target.value(z) + quad).double()

    # ------------------------------------------------------------------------------------------------- step
    def _step(self, target, x, state, gen, log):
        precond, eta, T = state["precond"], state["step"], state["T"]
        beta = target.beta
        need_fn = log or state["logz"] == "surrogate"
        need_gmg = state["logz"] in ("surrogate", "envelope")
        xm = x.mean(0, keepdim=True)
        e = x - xm  # distances are translation invariant: centre first (less cancellation)
        sc = state.get("spectral")
        if sc is not None:
            # fused Fourier step: rfft2 of the centred particles (exact Gram, no cancellation against the mean)
            sp = sc["data"]
            E = torch.fft.rfft2(e)
            R = torch.addcmul(sp.residual(torch.fft.rfft2(xm)), sp.K, E)  # rfft2(A x - y), x = xm + e
            pf, pg = target.prior_terms(x, need_fn)
            G = torch.addcmul(torch.fft.rfft2(pg), sp.Kc_s2, R)  # rfft2(grad V)
            Mg = torch.fft.irfft2(G * sc["minv"], s=sp.shape)
            fn = sp.data_value(R) + pf if need_fn else None
            gMg = weighted_sq_sum(G, sc["sqrt_w_gmg"]) if need_gmg else None
            a = torch.view_as_real(E * sc["sqrt_w_gram"]).flatten(1).double()
            Gram = a @ a.T  # e_i^T M^-1 e_j (Parseval)
            spectral = (R, G)
        else:
            fn, g, dg = target.evaluate(x, need_fn=need_fn)
            Mg = precond.apply(g)
            gMg = (g * Mg).flatten(1).sum(1) if need_gmg else None
            dgc = None if dg is None else dg - dg.mean(0, keepdim=True)
            Minv_e = precond.inv_apply_centered(e, dgc)
            Gram = e.flatten(1).double() @ Minv_e.flatten(1).double().T
            spectral = None
        gd = Gram.diagonal().clone()
        D = torch.add(gd[:, None], gd[None, :]).sub_(Gram, alpha=2.0).clamp_min_(0.0)  # Gram form, never N x N x d
        D.fill_diagonal_(0.0)
        env = self._envelope(target, x, fn, gMg, Mg, state, spectral)
        # W_ij = -beta D_ij / (4T) - log Z(x_j), with -log Z(x_j) = (beta/2) e_T(x_j)
        logits = D.mul_(-beta / (4 * T)).add_((beta / 2) * env[None, :])
        P = torch.softmax(logits, dim=1)
        # x_new = x - (eta/2) M g + (eta/(2T)) (I - P) e, with ((I - P) e)_i = x_i - sum_j P_ij x_j (rows of P sum
        # to one): one N x N x d product added in place
        c = eta / (2 * T)
        IP = torch.eye(P.shape[0], dtype=P.dtype, device=P.device).sub_(P)
        # weights below the working precision's smallest normal number would be subnormal after the cast, and a
        # matrix product with subnormal entries is an order of magnitude slower on the CPU: flush them to zero
        IP = IP.masked_fill_(IP.abs() < torch.finfo(x.dtype).tiny, 0.0).to(x.dtype)
        x_new = torch.addmm(torch.add(x, Mg, alpha=-eta / 2).flatten(1), IP, e.flatten(1), alpha=c).view_as(x)
        entry = {}
        if log:
            repulse = (IP @ e.flatten(1)).view_as(x)
            logp = torch.log_softmax(logits, dim=1)
            entropy = -(P * logp).sum(1).mean()
            entry = {
                "potential": fn.mean(),
                "entropy": entropy,
                # x.std(0).mean() from the centred particles (torch's std over dim 0 is ten times slower)
                "spread": ((e.square().sum(0) / (x.shape[0] - 1)).sqrt_().mean() if x.shape[0] > 1
                           else torch.zeros((), device=x.device)),
                "drift_norm": ((eta / 2) * Mg).flatten(1).norm(dim=1).mean(),
                "repulsion_norm": ((eta / (2 * T)) * repulse).flatten(1).norm(dim=1).mean(),
                "max_weight": P.max(1).values.mean(),
                "step": eta,
            }
        return x_new, entry

    # ------------------------------------------------------------------------------------------------- kernels
    def _accumulate(self, target, x, state):
        if state["uncertainty"] != "kernel-exact":
            return
        state["kernel_means"].update(self._kernel_means(target, x, state))

    def _sample_view(self, target, x, state, gen):
        """Stored samples are draws of the estimator that produces ``std``: kernel draws for kernel-exact."""
        if state["uncertainty"] != "kernel-exact":
            return x.detach().clone()
        means = self._kernel_means(target, x, state)
        closed = state["closed"]
        if closed is not None:
            H, W = x.shape[-2:]
            if "kernel_sd_symbol" not in closed:
                post = target.obj
                q = post.precision_symbol(device=x.device) / post.beta
                m = state["precond"].inv_symbol.to(x.device)
                closed["kernel_sd_symbol"] = (1.0 / ((post.beta / 2) * (q + m / state["T"]))).sqrt().to(x.dtype)
            xi = randn_like(x, gen)
            return means + torch.fft.irfft2(torch.fft.rfft2(xi) * closed["kernel_sd_symbol"], s=(H, W))
        _, cov = target.obj.kernel_moments(x[:1], state["T"], state["precond"])
        chol = torch.linalg.cholesky(cov).to(x)
        return means + randn_like(x, gen).flatten(1) @ chol.T

    def _kernel_means(self, target, x, state):
        closed = state["closed"]
        if closed is not None:
            H, W = x.shape[-2:]
            d = torch.fft.rfft2(x - closed["mu"])
            return closed["mu"] + torch.fft.irfft2(d * closed["mean_symbol"], s=(H, W))
        means, _ = target.obj.kernel_moments(x, state["T"], state["precond"])
        return means

    def _finalize(self, target, x, particles, state, gen):
        unc = state["uncertainty"]
        T = state["T"]
        if unc == "particles":
            return particles.mean, particles.variance().sqrt(), {
                "estimator": "particles",
                "calibration": "raw spread of the PBRWP particles over the post-burn-in iterations; at image scale "
                               "it collapses to a few per cent of the posterior std (algorithms.md)",
                **({"fallback": state["fallback"]} if state.get("fallback") else {}),
            }, None
        if unc == "kernel-exact":
            km = state["kernel_means"]
            closed = state["closed"]
            if closed is not None:
                kvar = torch.full_like(km.mean, closed["kernel_var"])
            else:
                _, cov = target.obj.kernel_moments(x[:1], T, state["precond"])
                kvar = cov.diagonal().to(km.mean)
            var = kvar + km.variance(ddof=0)
            return km.mean, var.sqrt(), {
                "estimator": "kernel-exact",
                "calibration": "moments of WProx(rho_N): exact Gaussian kernel variance (beta/2)(Q + M^-1/T) plus "
                               "the variance of the kernel means (Welford over post-burn-in iterations); exact for "
                               "quadratic V. Measured std ratio sqrt(2T/(1+T)) x (collapsed cloud) when M = Q^-1.",
                "kernel_variance_mean": float(kvar.mean()),
                "kernel_means_variance_mean": float(km.variance(ddof=0).mean()),
            }, None
        return self._kernel_langevin(target, x, state, gen)

    def _kernel_langevin(self, target, xs, state, gen):
        """Sample every kernel ``K(., x_j)`` with a short preconditioned Langevin chain; mixture moments of the
        chain states, with zero-variance control variates when ``diag(M)`` is known (module docstring)."""
        cfg = self.config
        precond, T, beta = state["precond"], state["T"], target.beta
        scale = 2 * T / (1 + T)  # kernel preconditioner P = scale * M
        # Lipschitz of P grad U_j in the P metric: scale * (L_M / 2 + 1/(2T))
        Lk = scale * (state["lipschitz"] / 2 + 1 / (2 * T))
        eta = cfg.kernel_step_scale / Lk
        noise = math.sqrt((eta * (2 - eta) if cfg.kernel_noise == "exact-quadratic" else 2 * eta) / beta)
        diag = precond.diagonal() if cfg.kernel_control_variates else None
        # E_K[(z - m)_i (P grad U)_i] = P_ii / beta for every kernel (integration by parts)
        p_over_beta = None if diag is None else _event_view(scale * diag / beta, xs)
        n_rounds = int(cfg.kernel_rounds)
        z = xs.clone()
        shift_total = torch.zeros_like(xs[:1])
        burn = int(cfg.kernel_burn_in)
        for rnd in range(n_rounds):
            last = rnd == n_rounds - 1
            anchors = xs + shift_total
            anchor_minv = precond.inv_apply(anchors)
            acc = _KernelChainMoments()
            n_post = int(cfg.kernel_steps) - burn
            n_keep = min(n_post, math.ceil(state.get("keep_samples", 0) / xs.shape[0])) if last else 0
            keep_at = {burn + round(i * (n_post - 1) / max(1, n_keep - 1)) for i in range(n_keep)}
            kept = []
            for k in range(int(cfg.kernel_steps)):
                _, g, _ = target.evaluate(z, need_fn=False)
                grad_u = 0.5 * g + (precond.inv_apply(z) - anchor_minv) / (2 * T)
                p_grad_u = scale * precond.apply(grad_u)
                if k >= burn:
                    acc.update(z, p_grad_u)
                if k in keep_at:
                    kept.append(z.detach().clone())
                z = z - eta * p_grad_u + noise * math.sqrt(scale) * precond.sqrt_apply(randn_like(z, gen))
            mean, var, coef = acc.moments(p_over_beta)
            if not last:
                # self-consistent anchors: move the cloud so that it sits on the mean of its own kernel mixture
                shift_total = (mean.to(xs.dtype) - xs.mean(0))[None]
        if not bool(torch.isfinite(mean).all()):
            raise FloatingPointError("PBRWP kernel chains produced non-finite values; lower kernel_step_scale")
        plain_mean, plain_var, _ = acc.moments(None)
        info = {
            "estimator": "kernel-langevin",
            "calibration": "moments of WProx(rho_N) by sampling each kernel exp(-beta[V/2 + ||z - x_j||^2_M^-1/(4T)]) "
                           "with a preconditioned Langevin chain (preconditioner P = 2T M/(1+T))"
                           + ("; zero-variance control variates (z - a P grad U_j, a fitted per pixel; variance "
                              "identity E[(z - m) (P grad U_j)] = diag(P)/beta)" if coef is not None else
                              "; plain pooled chain moments (diag(M) unavailable or control variates off)")
                           + "; calibration measured against exact posteriors and long reference chains in "
                             "benchmarks/deblur_samplers.py and benchmarks/deblur_cli.py",
            "control_variates": coef is not None,
            "kernel_steps": int(cfg.kernel_steps), "kernel_burn_in": burn,
            "kernel_step": eta, "kernel_noise": cfg.kernel_noise, "kernel_rounds": n_rounds,
            "anchor_shift_rms": float(shift_total.pow(2).mean().sqrt()),
            "plain_std_mean": float(plain_var.clamp_min(0).sqrt().mean()),
            "plain_mean_rms_difference": float((plain_mean - mean).pow(2).mean().sqrt()),
        }
        if coef is not None:
            q = torch.quantile(coef.flatten()[: 1 << 24].double(),
                               torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64, device=coef.device))
            info["cv_coefficient_quantiles"] = [float(v) for v in q]
            info["negative_variance_fraction"] = float((var < 0).double().mean())
        return mean, var.clamp_min(0).sqrt(), info, (torch.cat(kept) if kept else None)


def _event_view(d: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """``diag(P)/beta`` as a scalar or reshaped to one event of ``xs`` (float64, on its device)."""
    d = torch.as_tensor(d, dtype=torch.float64, device=xs.device)
    return d if d.ndim == 0 else d.reshape(xs.shape[1:])


class _KernelChainMoments:
    """Running per-chain sums of ``z``, ``g = P grad U(z)`` and their products (float64), and the kernel-mixture
    moments they give.

    Plain: pooled mean and variance of the states. With control variates (``p_over_beta`` given): per chain,
    ``m_j = mean(z) - a mean(g)`` and ``Var_j = var(z) - a (cov(z, g) - diag(P)/beta)``, where ``E[g] = 0`` and
    ``E[cov(z, g)] = diag(P)/beta`` hold exactly for the kernel; ``a = cov(z, g)/var(g)`` per pixel (pooled over
    chains, clamped to [0, 2]) is the variance-minimising coefficient. For a Gaussian kernel with ``P`` its
    covariance ``a = 1`` and both moments are exact from any single state, step bias included. Mixture: mean of
    ``m_j``, mean of ``Var_j`` plus the variance of the ``m_j``.
    """

    def __init__(self):
        self.n = 0
        self.sums: list[torch.Tensor] | None = None

    def update(self, z: torch.Tensor, g: torch.Tensor) -> None:
        z, g = z.detach().double(), g.detach().double()
        if self.sums is None:
            self.sums = [torch.zeros_like(z) for _ in range(5)]
        for s, v in zip(self.sums, (z, g, z * z, g * g, z * g), strict=True):
            s.add_(v)
        self.n += 1

    def moments(self, p_over_beta: torch.Tensor | None):
        if self.n == 0:
            raise ValueError("kernel_steps must exceed kernel_burn_in")
        mz, mg, mzz, mgg, mzg = (s / self.n for s in self.sums)
        var_z = mzz - mz * mz
        if p_over_beta is None:
            return mz.mean(0), var_z.mean(0) + mz.var(0, unbiased=False), None
        var_g, cov_zg = mgg - mg * mg, mzg - mz * mg
        a = (cov_zg.mean(0, keepdim=True) / var_g.mean(0, keepdim=True).clamp_min(1e-300)).clamp(0.0, 2.0)
        m_j = mz - a * mg
        var_j = var_z - a * (cov_zg - p_over_beta)
        return m_j.mean(0), var_j.mean(0) + m_j.var(0, unbiased=False), a[0]


def _is_tv_on_circular_blur(target) -> bool:
    from invprob.priors import TV

    post = target.obj
    return bool(target.is_posterior and isinstance(post.prior, TV) and post.is_linear
                and getattr(post.operator, "is_circulant", False) and hasattr(post.operator, "fourier_symbol"))


class BRWP(PBRWP):
    """BRWP: PBRWP with ``M = I`` (no preconditioning)."""

    name = "BRWP"

    def __init__(self, *, T: float = 1.0, step: float | None = None, **kwargs):
        if "preconditioner" in kwargs:
            raise ValueError("BRWP has M = I; use PBRWP for another preconditioner")
        super().__init__("identity", T=T, step=step, **kwargs)
