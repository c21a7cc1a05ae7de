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
thread): 1.3-1.4x the time of N batched ULA steps, against 2.1x for the spatial path (benchmark
``pbrwp_cost`` of the repository's ``benchmarks/RESULTS.md``). On a volume (a 3-D circulant blur,
``posterior.spatial_ndim == 3``) every transform is the ``rfftn`` over ``(D, H, W)``, with the same formulas.

The particles of this deterministic scheme collapse at image scale (``algorithms.md``, "the high-dimensional
trap"): their spread is a few per cent of the posterior std. The particle moments stay available
(``uncertainty="particles"``, and always in ``info["particle_mean"]``/``info["particle_std"]``); the default
output (the estimators of :mod:`invprob.solvers.samplers.estimators`) is the moments of the regularized density
``WProx(rho_N) = (1/N) sum_j K(., x_j)``,

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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from invprob._checks import check_positive
from invprob.posterior import weighted_sq_sum
from invprob.solvers.samplers.base import FLOAT64_BLOCK, Sampler, SamplerState, check_step_options
from invprob.solvers.samplers.estimators import (
    KernelExact,
    KernelLangevin,
    KernelLangevinConfig,
    ParticleMoments,
    UncertaintyEstimator,
)
from invprob.solvers.samplers.posterior_chains import PosteriorLangevin, PosteriorLangevinConfig
from invprob.solvers.samplers.preconditioners import (
    FourierPreconditioner,
    check_preconditioner_spec,
    make_preconditioner,
)

__all__ = ["BRWP", "PBRWP", "PBRWPConfig", "PBRWPState"]

LOGZ = ("auto", "exact", "envelope", "surrogate", "none")
UNCERTAINTY = ("auto", "particles", "kernel-exact", "kernel-langevin", "posterior-langevin")
PARTICLES_CALIBRATION = ("raw spread of the PBRWP particles over the post-burn-in iterations; at image scale it "
                         "collapses to a few per cent of the posterior std (algorithms.md)")
ADAPTIVE_STATUS = ("unchecked: the raw spread of PBRWP particles under a variable preconditioner (a heuristic "
                   "without the fixed-M invariance; no convergence diagnostics apply)")
PARTICLES_STATUS = ("unchecked: the raw spread of interacting PBRWP particles (no convergence diagnostics apply; at "
                    "image scale it is a few per cent of the posterior std)")


@dataclass(frozen=True)
class PBRWPConfig:
    """Configuration of the PBRWP sampler itself (the uncertainty estimator has its own, see :class:`PBRWP`).

    T : float
        Kernel time (> 0). Default 1: with ``M`` equal to the posterior covariance the kernel ``K(., x)`` is then
        the posterior itself for a Gaussian target (kernel std ratio ``sqrt(2T/(1+T))``), while the faithful
        particles collapse (their invariant law ``(1 - T^2) Sigma`` is a point mass); use ``T < 1`` to study the
        particles themselves (the closed-form invariant law needs ``T M < Sigma``).
    step : float or None
        Step ``eta`` (> 0); ``None`` -> ``step_scale / L`` (``L``: Lipschitz constant of ``M grad V`` in the
        ``M`` metric).
    preconditioner : "auto" | "normal" | "posterior" | "identity" | callable | matrix | Preconditioner
        ``"auto"``: ``"posterior"`` (the posterior precision by FFT, with the prior's ``curvature_symbol`` at the
        starting point: exact for a GaussianPrior, ``kappa D^T D`` for TV) for a circular blur and a prior with
        a curvature symbol; ``"normal"`` for other linear posteriors; ``"identity"`` for plain potentials.
        Measured on the 64^2 Gaussian deblur (N = 40, T = 0.9): ``"posterior"`` gives band variance ratios
        0.95/0.95/0.94, ``"normal"`` with c = 1 gives 1.05/1.22/1.95 (the high band, set by the prior, is
        miscalibrated because M^-1 lacks the prior's curvature).
    c : float
        Shift of ``M^{-1} = A^T A/sigma_n^2 + c I`` (``"normal"``) or of ``"posterior"``.
    logz : {"auto", "exact", "envelope", "surrogate", "none"}
        ``"exact"``: the potential's ``moreau_envelope`` or the FFT closed form (quadratic posterior, Fourier
        ``M``); ``"envelope"``: ``e_T`` bounded above by ``envelope_n_iter`` preconditioned gradient steps on
        ``z -> V(z) + ||z - y||^2_{M^-1}/(2T)`` from ``y``; ``"surrogate"``: ``V(y) - (T/2) grad V^T M grad V``;
        ``"none"``: ``Z`` constant. ``"auto"``: exact when available, else envelope.
    envelope_n_iter : int
    prior_gradient, lam
        Drift of non-smooth priors (see :class:`~invprob.solvers.samplers.base.Target`): ``"smooth"`` (default:
        the prior's ``eps``-smoothed gradient, as :meth:`Posterior.grad`) or ``"moreau"``
        (``(x - prox_{lam R}(x))/lam``, ``lam = 1/L_data`` unless given).
    lipschitz : float or None
        The Lipschitz constant of ``M grad V`` in the ``M`` metric behind the default step, the envelope step and
        the kernel chains' step; None: the potential's own ``lipschitz(M)`` or a power iteration.
    drift : callable or None
        A nonlinear drift preconditioner ``grad h*`` (Bonet et al. 2024), applied to each particle's velocity
        ``v_i = (1/2) [M grad V(x_i) - (x_i - sum_j P_ij x_j)/T]`` flattened to ``(N, d)``: the step becomes
        ``x_i <- x_i - eta grad h*(v_i)`` (``None``: ``grad h* = identity``, PBRWP itself). A ``grad h*`` with
        ``grad h*(0) = 0`` that is injective keeps the scheme's fixed points (``v_i = 0`` for all ``i``) and
        changes only the path to them, e.g. :func:`invprob.solvers.particles.power_h_star_grad`.
    momentum : float or None
        Friction ``alpha >= 0`` of the accelerated (momentum) density dynamics ``dX = Q dt``,
        ``dQ = -alpha Q dt - v(X) dt`` with ``v = (1/2) M [grad V + beta^-1 grad log rho]`` (the regularized
        Wasserstein proximal score, as in the plain step), discretised by symplectic Euler with time step
        ``h = sqrt(step)``: ``q <- (1 - alpha h) q - h v``, ``x <- x + h q`` (``q_0 = 0``). ``alpha h = 1`` is the
        plain PBRWP step; ``alpha`` near ``2 sqrt(lambda_min)`` (the smallest curvature of ``V`` in the ``M``
        metric) is the critically damped choice for ill-conditioned targets. The fixed points are PBRWP's
        (``q = 0``, ``v = 0``). ``alpha = 0`` conserves the (modified) Hamiltonian
        ``E[q^T M^-1 q]/2 + (1/2)(E V + beta^-1 E log rho)``; ``alpha > 0`` dissipates it. None: no momentum.
    """

    T: float = 1.0
    step: float | None = None
    step_scale: float = 0.5
    preconditioner: Any = "auto"
    c: float = 1.0
    logz: Literal["auto", "exact", "envelope", "surrogate", "none"] = "auto"
    envelope_n_iter: int = 1
    prior_gradient: Literal["auto", "smooth", "moreau"] = "auto"
    lam: float | None = None
    lipschitz: float | None = None
    drift: Callable[[torch.Tensor], torch.Tensor] | None = None
    momentum: float | None = None

    def __post_init__(self):
        check_positive("T", self.T)
        check_step_options(self)
        if self.logz not in LOGZ:
            raise ValueError(f"logz must be one of {LOGZ}, got {self.logz!r}")
        check_preconditioner_spec(self.preconditioner, adaptive=True)
        if getattr(self.preconditioner, "state_dependent", False) is True:
            raise ValueError("preconditioner: PBRWP's kernel needs one M for all particles; a state-dependent M(x) "
                             "is for ULA/MLA")
        if self.drift is not None and not callable(self.drift):
            raise ValueError(f"drift must be a callable v -> grad h*(v) on (N, d) velocities, got {self.drift!r}")
        if self.momentum is not None:
            check_positive("momentum", self.momentum, allow_zero=True)
            if self.drift is not None:
                raise ValueError("momentum and drift cannot be combined: give one of them")
        if int(self.envelope_n_iter) < 1:
            raise ValueError(f"envelope_n_iter must be a positive integer, got {self.envelope_n_iter!r}")


@dataclass
class PBRWPState(SamplerState):
    """PBRWP's run state: ``T``, the Lipschitz constant ``L``, the log-Z rule (resolved once, ``envelope`` is the
    bound method that computes ``e_T``), the FFT closed form of a quadratic posterior and the constants of the
    fused Fourier step (None when absent)."""

    T: float = 1.0
    lipschitz: float = 0.0
    logz: str = "envelope"
    envelope: Callable | None = None
    need_fn: bool = False
    need_gmg: bool = False
    closed: dict | None = None
    spectral: dict | None = None
    velocity: torch.Tensor | None = None  # the momentum variable q (momentum dynamics only), (N, d)


class PBRWP(Sampler):
    """Preconditioned backward regularized Wasserstein proximal sampler (interacting particles).

    Parameters
    ----------
    preconditioner : "auto" | "normal" | "posterior" | "identity" | callable | matrix
        ``M``; ``"normal"`` = ``(A^T A/sigma_n^2 + c I)^{-1}``; see :class:`PBRWPConfig`.
    T, step, step_scale, c, logz, envelope_n_iter, prior_gradient, lam, lipschitz
        See :class:`PBRWPConfig`.
    uncertainty : "auto" | "particles" | "kernel-exact" | "kernel-langevin" | "posterior-langevin" | estimator
        Which estimator produces ``mean``/``std`` (module docstring); ``"auto"`` = kernel-exact where it exists,
        posterior-langevin (self-checking chains on the posterior itself, started from the particles) for other
        posteriors, particles for plain potentials without closed forms (decided once, when the run is prepared).
    chains : PosteriorLangevinConfig, optional
        The chains of ``"posterior-langevin"`` (budget, diagnostics targets, time limit).
    kernel : KernelLangevinConfig, optional
        The kernel chains of ``"kernel-langevin"``; the keywords ``kernel_n_iter``, ``kernel_burn_in``,
        ``kernel_step_scale``, ``kernel_noise``, ``kernel_rounds`` and ``kernel_control_variates`` are accepted
        too and fill it.

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

    def __init__(self, preconditioner: Any = "auto", *, T: float = 1.0, step: float | None = None,
                 uncertainty: str | UncertaintyEstimator = "auto", kernel: KernelLangevinConfig | None = None,
                 chains: PosteriorLangevinConfig | None = None, progress_chains: bool = False, **kwargs):
        legacy = KernelLangevinConfig.from_kwargs(kwargs)
        if kernel is not None and legacy != KernelLangevinConfig():
            raise ValueError("kernel: give a KernelLangevinConfig or the kernel_* keywords, not both")
        if not (isinstance(uncertainty, UncertaintyEstimator) or uncertainty in UNCERTAINTY):
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY} or an estimator, got {uncertainty!r}")
        super().__init__(PBRWPConfig(preconditioner=preconditioner, T=T, step=step, **kwargs))
        self.uncertainty = uncertainty
        self.kernel = kernel or legacy
        self.chains = chains or PosteriorLangevinConfig()
        self.progress_chains = progress_chains

    def _target_options(self):
        cfg = self.config
        return {"prior_gradient": cfg.prior_gradient, "lam": cfg.lam, "lipschitz": cfg.lipschitz}

    def _config_dict(self) -> dict:
        unc = self.uncertainty if isinstance(self.uncertainty, str) else self.uncertainty.name
        cfg = {**asdict(self.config), "drift": _drift_name(self.config.drift)}
        return {**cfg, "uncertainty": unc,
                **{f"kernel_{k}": v for k, v in asdict(self.kernel).items()}, "chains": asdict(self.chains)}

    # ------------------------------------------------------------------------------------------------- setup
    def _prepare(self, target, x, gen) -> PBRWPState:
        cfg = self.config
        spec = target.posterior if target.posterior is not None else target.potential
        precond = make_preconditioner(cfg.preconditioner, spec, c=cfg.c, x_ref=target.center, adaptive=True)
        if precond.adaptive:
            precond.reset()  # a passed adaptive object starts each run afresh (M = I)
        L = target.lipschitz(precond)
        step = cfg.step if cfg.step is not None else cfg.step_scale / L
        closed = self._closed_form(target, precond, x)
        exact_available = closed is not None or target.potential.moreau_envelope is not None
        logz = ("exact" if exact_available else "envelope") if cfg.logz == "auto" else cfg.logz
        if logz == "exact" and not exact_available:
            raise ValueError("logz='exact' needs a potential with moreau_envelope or a Gaussian posterior with a "
                             "circular blur and a Fourier-diagonal preconditioner")
        envelope = {"none": self._envelope_none, "exact": self._envelope_exact,
                    "surrogate": self._envelope_surrogate, "envelope": self._envelope_steps}[logz]
        estimator = self._estimator(target, precond, closed, x)
        spectral = self._spectral_state(target, precond, x, L, float(cfg.T))
        info = {"T": float(cfg.T), "logz": logz, "lipschitz_M": L, "fourier_step": spectral is not None,
                "drift": _drift_name(cfg.drift), "adaptive_preconditioner": bool(precond.adaptive)}
        return PBRWPState(precond=precond, step=float(step), estimator=estimator, info=info, T=float(cfg.T),
                          lipschitz=L, logz=logz, envelope=envelope, need_fn=logz == "surrogate",
                          need_gmg=logz in ("surrogate", "envelope"), closed=closed, spectral=spectral)

    def _estimator(self, target, precond, closed, x) -> UncertaintyEstimator:
        """The uncertainty estimator of this run (``"auto"`` resolved here, once)."""
        unc = self.uncertainty
        if isinstance(unc, UncertaintyEstimator):
            return unc
        if precond.adaptive:
            if unc not in ("auto", "particles"):
                raise ValueError(f"uncertainty={unc!r} needs a fixed preconditioner M; with an adaptive one "
                                 "(e.g. 'adam') only uncertainty='particles' is available")
            return ParticleMoments(PARTICLES_CALIBRATION, status=ADAPTIVE_STATUS)
        has_kernel_closed = closed is not None or target.potential.kernel_moments is not None
        explicit = unc != "auto"
        if unc == "auto":
            fallback = "posterior-langevin" if target.is_posterior else "particles"
            unc = "kernel-exact" if has_kernel_closed else fallback
        if unc in ("kernel-langevin", "posterior-langevin") and not has_kernel_closed:
            reason = KernelLangevin.available(precond, x)
            if reason is not None:
                if explicit:
                    raise ValueError(f"uncertainty={unc!r} needs M^(1/2): {reason}")
                return ParticleMoments(PARTICLES_CALIBRATION, status=PARTICLES_STATUS,
                                       fallback=f"{unc} unavailable ({reason}); raw particle spread reported")
        if unc == "kernel-exact":
            if not has_kernel_closed:
                raise ValueError("uncertainty='kernel-exact' needs a quadratic potential (kernel_moments) or a "
                                 "Gaussian posterior with a circular blur and a Fourier-diagonal preconditioner")
            return KernelExact()
        if unc == "kernel-langevin":
            return KernelLangevin(self.kernel)
        if unc == "posterior-langevin":
            return PosteriorLangevin(self.chains, progress=self.progress_chains)
        return ParticleMoments(PARTICLES_CALIBRATION, status=PARTICLES_STATUS)

    def _closed_form(self, target, precond, x):
        """FFT quantities of a quadratic posterior with a Fourier-diagonal ``M`` (else None)."""
        post = target.posterior
        if not (post is not None and post.has_closed_form and isinstance(precond, FourierPreconditioner)):
            return None
        shape = post.spatial_shape  # (H, W), or (D, H, W) for a volume: every transform is rfftn over it
        q = post.precision_symbol(device=x.device) / post.beta  # Hessian of V on the rfft grid
        m = precond.inv_symbol.to(x.device)
        T = float(self.config.T)
        mu, _ = post.closed_form_moments(dtype=torch.float64, device=x.device)
        wts = post.rfft_weights(*shape, device=x.device)
        kernel_var = float((wts / ((post.beta / 2) * (q + m / T))).sum() / math.prod(shape))
        real = x.dtype
        return {
            "mu": mu.to(real),
            "env_symbol": (q * m / (m + T * q)).to(real),  # e_T(y) = (y - mu)^T [Q (I + T M Q)^{-1}] (y - mu) / 2
            "mean_symbol": (m / (m + T * q)).to(real),  # (I + T M Q)^{-1}
            "wts": wts.to(real),
            "kernel_var": kernel_var,
            "HW": math.prod(shape),
            "shape": tuple(shape),
            "dims": tuple(range(-len(shape), 0)),
            "q": q,
            "m": m,
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
        if tuple(m.shape) != tuple(sp.K.shape[-m.ndim:]) or m.ndim != len(sp.shape):
            return None
        real = x.dtype
        tau = T / (1.0 + T * L)  # step of the one-step envelope
        K64 = target.posterior.operator.fourier_symbol(torch.float64, x.device)
        return {
            "data": sp,
            "minv": (1.0 / m).to(real),  # M on the rfft grid
            "sqrt_w_gram": (sp.w * m / sp.HW).sqrt().to(real),  # e_i^T M^-1 e_j = sum_k w m Re(E_i conj E_j) / HW
            "sqrt_w_gmg": (sp.w / (m * sp.HW)).sqrt().to(real),  # g^T M g = sum_k w |G_k|^2 / (m HW)
            "tau": tau,
            "tauK_M": (tau * K64 / m).to(sp.K.dtype),  # rfft2(A z - y) = R - tau K M G at z = x - tau M g
        }

    # ------------------------------------------------------------------------------------------------- log Z
    # ``e_T`` per particle (float64) by the rule chosen in ``_prepare`` (``gMg``: ``g^T M g`` per particle;
    # ``spectral = (R, G)``: residual and gradient spectra of the fused step)
    def _envelope_none(self, target, x, fn, gMg, Mg, state, spectral=None):
        return torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)

    def _envelope_exact(self, target, x, fn, gMg, Mg, state, spectral=None):
        closed = state.closed
        if closed is not None:
            d = torch.fft.rfftn(x - closed["mu"], dim=closed["dims"])
            val = (closed["wts"] * closed["env_symbol"] * d.abs() ** 2).flatten(1).sum(1) / closed["HW"]
            return 0.5 * val.double()
        return target.potential.moreau_envelope(x, state.T, state.precond).double()

    def _envelope_surrogate(self, target, x, fn, gMg, Mg, state, spectral=None):
        return fn.double() - (state.T / 2) * gMg.double()

    def _envelope_steps(self, target, x, fn, gMg, Mg, state, spectral=None):
        """An upper bound of ``e_T`` from preconditioned gradient steps on ``z -> V(z) + ||z - y||^2_M^-1/(2T)``;
        with ``spectral`` the data value at the one-step point by Parseval instead of another operator call."""
        precond, T = state.precond, state.T
        tau = T / (1.0 + T * state.lipschitz)
        n_it = int(self.config.envelope_n_iter)
        z = torch.add(x, Mg, alpha=-tau)  # first step from z = y: ||z - y||^2_M^-1 = tau^2 g^T M g, no operator call
        if n_it == 1:
            quad = tau**2 * gMg / (2 * T)
            if spectral is not None:
                R, G = spectral
                sc = state.spectral
                value = sc["data"].data_value(torch.addcmul(R, G, sc["tauK_M"], value=-1)) + target.prior_value(z)
            else:
                value = target.value(z)
            return (value + quad).double()
        for _ in range(n_it - 1):
            _, gz, _ = target.evaluate(z, need_fn=False, need_data_grad=False)
            z = z - tau * (precond.apply(gz) + (z - x) / T)
        dz = z - x
        quad = (dz * precond.inv_apply(dz)).flatten(1).sum(1) / (2 * T)
        return (target.value(z) + quad).double()

    # ------------------------------------------------------------------------------------------------- layout
    # One process holds and updates all N particles. A sharded run (:mod:`invprob.solvers.samplers.distributed`)
    # holds only its rows and overrides these hooks with collectives over the ranks; here they are plain tensor
    # operations on all N.
    def _row_offset(self, state: PBRWPState) -> int:
        """The index among all ``N`` particles of this process's first row (0 here)."""
        return 0

    def _gram_rows(self, a: torch.Tensor, b: torch.Tensor, state: PBRWPState) -> torch.Tensor:
        """``a_i^T b_j`` in float64 for this process's rows ``i`` and all ``N`` particles ``j`` (``a``, ``b``: this
        process's rows, flattened)."""
        return gram64(a, b)

    def _mix_into(self, out: torch.Tensor, W: torch.Tensor, e: torch.Tensor, state: PBRWPState,
                  alpha: float = 1.0) -> torch.Tensor:
        """``out_i += alpha sum_j W_ij e_j`` over all ``N`` particles ``j`` for this process's rows ``i`` (``W``:
        rows x N; ``e``, ``out``: this process's rows, flattened), in place."""
        return out.addmm_(W, e, alpha=alpha)

    def _all_rows_each(self, state: PBRWPState, *ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-particle vectors of this process's rows -> those of all ``N`` particles (one collective for all of
        them in a sharded run; ``ts`` here)."""
        return ts

    def _particle_sum(self, t: torch.Tensor, state: PBRWPState) -> torch.Tensor:
        """The sum over all ``N`` particles of the per-particle rows ``t`` of this process's particles."""
        return t.sum(0, keepdim=True)

    def _particle_mean(self, t: torch.Tensor, state: PBRWPState) -> torch.Tensor:
        """The mean over all ``N`` particles of the per-particle rows ``t`` of this process's particles."""
        return t.mean(0, keepdim=True)

    # ------------------------------------------------------------------------------------------------- step
    def _step(self, target, x, state, gen, log):
        eta, T = state.step, state.T
        beta = target.beta
        lo = self._row_offset(state)  # x: this process's particles (all N in one process), rows lo, lo + 1, ...
        xm = self._particle_mean(x, state)
        e = x - xm  # distances are translation invariant: centre first (less cancellation)
        fn, Mg, gMg, Gram, spectral = self._forces(target, x, xm, e, state, log or state.need_fn)
        # Gram: e_i^T M^-1 e_j for this process's rows i and all N particles j (N x N in one process)
        gdl = Gram.diagonal(lo).clone()
        gd, env = self._all_rows_each(state, gdl, state.envelope(target, x, fn, gMg, Mg, state, spectral))
        D = torch.add(gdl[:, None], gd[None, :]).sub_(Gram, alpha=2.0).clamp_min_(0.0)  # Gram form, never N x N x d
        D.diagonal(lo).fill_(0.0)
        # W_ij = -beta D_ij / (4T) - log Z(x_j), with -log Z(x_j) = (beta/2) e_T(x_j)
        logits = D.mul_(-beta / (4 * T)).add_((beta / 2) * env[None, :])
        P = torch.softmax(logits, dim=1)
        # x_new = x - (eta/2) M g + (eta/(2T)) (I - P) e, with ((I - P) e)_i = x_i - sum_j P_ij x_j (rows of P sum
        # to one): one N x N x d product added in place
        c = eta / (2 * T)
        IP = torch.zeros_like(P)
        IP.diagonal(lo).fill_(1.0)
        IP = IP.sub_(P)
        # weights below the working precision's smallest normal number would be subnormal after the cast, and a
        # matrix product with subnormal entries is an order of magnitude slower on the CPU: flush them to zero
        IP = IP.masked_fill_(IP.abs() < torch.finfo(x.dtype).tiny, 0.0).to(x.dtype)
        ef = e.flatten(1)
        cfg = self.config
        if cfg.drift is None and cfg.momentum is None:
            x_new = self._mix_into(torch.add(x, Mg, alpha=-eta / 2).flatten(1), IP, ef, state, alpha=c).view_as(x)
        else:  # the velocity v_i = (1/2) [M g_i - ((I - P) e)_i / T] of the plain step x_i <- x_i - eta v_i
            v = self._mix_into(Mg.flatten(1).clone(), IP, ef, state, alpha=-1.0 / T).mul_(0.5)
            if cfg.drift is not None:  # x_i <- x_i - eta grad h*(v_i)
                x_new = torch.add(x, cfg.drift(v).view_as(x), alpha=-eta)
            else:
                x_new = self._momentum_step(x, v, state)
        entry = self._log_entry(state, e, fn, Mg, IP, P, logits) if log else {}
        return x_new, entry

    def _forces(self, target, x, xm, e, state, need_fn):
        """``(V or None, M grad V, g^T M g or None, Gram rows, spectral or None)`` of the particles ``x`` (this
        process's rows; ``xm`` the mean and ``e`` the centred rows): the fused Fourier step or the generic one."""
        precond = state.precond
        sc = state.spectral
        if sc is not None:
            # fused Fourier step: rfft2 of the centred particles (exact Gram, no cancellation against the mean)
            sp = sc["data"]
            E = sp.forward(e)  # rfft2, or rfftn over (D, H, W) for a volume
            R = torch.addcmul(sp.residual(sp.forward(xm)), sp.K, E)  # rfft2(A x - y), x = xm + e
            pf, pg = target.prior_terms(x, need_fn)
            G = torch.addcmul(sp.forward(pg), sp.Kc_s2, R)  # rfft2(grad V)
            Mg = torch.fft.irfftn(G * sc["minv"], s=sp.shape, dim=sp.dims)
            fn = sp.data_value(R) + pf if need_fn else None
            gMg = weighted_sq_sum(G, sc["sqrt_w_gmg"]) if state.need_gmg else None
            a = torch.view_as_real(E * sc["sqrt_w_gram"]).flatten(1)
            Gram = self._gram_rows(a, a, state)  # e_i^T M^-1 e_j (Parseval)
            return fn, Mg, gMg, Gram, (R, G)
        fn, g, dg = target.evaluate(x, need_fn=need_fn)
        if precond.adaptive:
            precond.observe(g)
        Mg = precond.apply(g)
        gMg = (g * Mg).flatten(1).sum(1) if state.need_gmg else None
        dgc = None if dg is None else dg - self._particle_mean(dg, state)
        Minv_e = precond.inv_apply_centered(e, dgc)
        Gram = self._gram_rows(e.flatten(1), Minv_e.flatten(1), state)
        return fn, Mg, gMg, Gram, None

    def _log_entry(self, state, e, fn, Mg, IP, P, logits) -> dict:
        """The diagnostics of a logging iteration (this process's rows; ``e`` centred), each a mean over all ``N``
        particles."""
        eta, T = state.step, state.T
        n = logits.shape[1]
        entry: dict = {}
        if state.velocity is not None:
            q = state.velocity.view(-1, *e.shape[1:])
            entry["kinetic"] = (q * state.precond.inv_apply(q)).flatten(1).sum(1).mean() / 2
        ef = e.flatten(1)
        repulse = self._mix_into(torch.zeros_like(ef), IP, ef, state)  # ((I - P) e)_i
        logp = torch.log_softmax(logits, dim=1)
        fn, plogp, drift, repulsion, top = self._all_rows_each(
            state, fn, (P * logp).sum(1), ((eta / 2) * Mg).flatten(1).norm(dim=1),
            ((eta / (2 * T)) * repulse).norm(dim=1), P.max(1).values)
        # x.std(0).mean() from the centred particles (torch's std over dim 0 is ten times slower)
        sq = self._particle_sum(ef.square(), state)
        entry |= {
            "potential": fn.mean(),
            "entropy": -plogp.mean(),
            "spread": ((sq / (n - 1)).sqrt_().mean() if n > 1 else torch.zeros((), device=e.device)),
            "drift_norm": drift.mean(),
            "repulsion_norm": repulsion.mean(),
            "max_weight": top.mean(),
            "step": eta,
        }
        return entry

    def _momentum_step(self, x, v, state):
        """Symplectic Euler of the momentum dynamics: ``q <- (1 - alpha h) q - h v``, ``x <- x + h q``."""
        h = state.step ** 0.5
        q = torch.zeros_like(v) if state.velocity is None else state.velocity
        q = q.mul_(1.0 - float(self.config.momentum) * h).sub_(v, alpha=h)
        state.velocity = q
        return torch.add(x, q.view_as(x), alpha=h)


def gram64(a: torch.Tensor, b: torch.Tensor, block: int = FLOAT64_BLOCK) -> torch.Tensor:
    """``a @ b.T`` accumulated in float64 (``a``: ``(n, d)``, ``b``: ``(N, d)``, any real dtype).

    The Gram of float32 particles needs float64 sums (pairwise distances cancel), but float64 copies of whole
    rows cost two batches of float64 particles: measured at 2048^2 (8 particles), half a gigabyte of PBRWP's peak.
    Above ``block`` values a row (:data:`~invprob.solvers.samplers.base.FLOAT64_BLOCK`), the columns are converted
    and multiplied a block at a time.

    Examples
    --------
    >>> import torch
    >>> a = torch.randn(3, 2**19); b = torch.randn(5, 2**19)
    >>> bool(torch.allclose(gram64(a, b), a.double() @ b.double().T))
    True
    """
    d = a.shape[1]
    if d <= block or (a.dtype == torch.float64 and b.dtype == torch.float64):
        return a.double() @ b.double().T
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for j in range(0, d, block):
        cols = slice(j, j + block)
        out.addmm_(a[:, cols].double(), b[:, cols].double().T)
    return out


def _drift_name(drift) -> str | None:
    """A printable name of a drift map (configs are saved as JSON)."""
    if drift is None:
        return None
    return getattr(drift, "__qualname__", None) or repr(drift)


class BRWP(PBRWP):
    """BRWP: PBRWP with ``M = I`` (no preconditioning)."""

    name = "BRWP"

    def __init__(self, *, T: float = 1.0, step: float | None = None, **kwargs):
        if "preconditioner" in kwargs:
            raise ValueError("BRWP has M = I; use PBRWP for another preconditioner")
        super().__init__("identity", T=T, step=step, **kwargs)
