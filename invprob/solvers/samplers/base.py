"""The machinery every sampler shares: target wrapper, Welford accumulator, seeding, the run loop, the result.

A sampler subclasses :class:`Sampler` and implements ``_prepare`` (once per run), ``_step`` (one iteration on
the particle batch) and optionally ``_accumulate``/``_finalize`` (extra estimators such as PBRWP's kernel
mixture). The loop, burn-in, streaming moments, thinning, logging, progress bar and result assembly live here.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any

import torch

from invprob._checks import check_positive
from invprob.results import PosteriorResult

__all__ = ["Sampler", "SpectralData", "Target", "Welford", "make_generator"]


# ---------------------------------------------------------------------------------------------------- helpers
def make_generator(rng, device: torch.device) -> tuple[torch.Generator, int]:
    """``rng`` (int seed, ``torch.Generator`` or None) -> (generator on ``device`` when possible, seed)."""
    if isinstance(rng, torch.Generator):
        return rng, int(rng.initial_seed())
    if rng is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    elif isinstance(rng, int | float) and float(rng) == int(rng) and int(rng) >= 0:
        seed = int(rng)
    else:
        raise ValueError(f"rng must be a non-negative int seed or a torch.Generator, got {rng!r}")
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g, seed


def randn_like(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` from ``gen`` (drawn on the generator's device)."""
    if gen.device == x.device:
        return torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
    return torch.randn(x.shape, generator=gen, dtype=x.dtype, device=gen.device).to(x.device)


def chunked(fn, x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """Apply a batched ``fn`` to ``x`` in slices of ``chunk`` batch items (bounds peak memory)."""
    if chunk is None or x.shape[0] <= chunk:
        return fn(x)
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


class Welford:
    """Streaming mean and variance over batches (Chan et al.'s parallel update), float64 accumulators."""

    def __init__(self):
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, batch: torch.Tensor) -> None:
        b = batch.detach().to(torch.float64)
        nb = b.shape[0]
        mb = b.mean(0)
        m2b = (b - mb).pow(2).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.count + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta.pow(2) * (self.count * nb / n)
        self.count = n

    def variance(self, ddof: int = 1) -> torch.Tensor:
        if self.mean is None or self.count <= ddof:
            raise ValueError("not enough accumulated samples for a variance")
        return self.m2 / (self.count - ddof)


def versions() -> dict:
    import invprob

    return {"torch": torch.__version__, "invprob": getattr(invprob, "__version__", "?")}


# ---------------------------------------------------------------------------------------------------- spectral
def weighted_sq_sum(z: torch.Tensor, sqrt_weight: torch.Tensor) -> torch.Tensor:
    """``sum_k weight_k |z_k|^2`` per batch item of a complex ``z`` (``torch.sum``'s cascade sum, as a spatial one)."""
    return torch.view_as_real(z * sqrt_weight).square_().flatten(1).sum(1)


def tv_smooth_value(x: torch.Tensor, weight: float, eps: float) -> torch.Tensor:
    """``TV.fn_smooth``: ``weight * sum sqrt(dy^2 + dx^2 + eps^2)`` (zero difference on the last row/column), in
    one buffer instead of :func:`grad2d`'s zero-filled ``(B, C, 2, H, W)`` one (equal up to float rounding)."""
    q = torch.empty_like(x)
    torch.sub(x[..., 1:, :], x[..., :-1, :], out=q[..., :-1, :])
    q[..., -1, :] = 0
    q.square_()
    dx = x[..., :, 1:] - x[..., :, :-1]
    q[..., :, :-1].addcmul_(dx, dx)
    return weight * q.add_(eps**2).sqrt_().flatten(1).sum(1)


class SpectralData:
    """The data term of a linear posterior whose operator is a circulant blur ``A = F^-1 diag(K) F``, in Fourier.

    With ``X = rfft2(x)``: ``rfft2(A x - y) = K X - Y``, ``rfft2(A^T (A x - y)) = conj(K) (K X - Y)``, and
    Parseval on the half spectrum ``||v||^2 = sum_k w_k |rfft2(v)_k|^2 / (H W)`` (``w``: column multiplicity,
    :meth:`Posterior.rfft_weights`). The data gradient then costs one ``rfft2`` and one ``irfft2`` (instead of an
    ``A`` and an ``A^T``: two of each) and the data value none. ``K`` is the operator's own ``fourier_symbol``.
    """

    def __init__(self, post, ref: torch.Tensor):
        from invprob.posterior import Posterior

        H, W = post.event_shape[-2:]
        real, device = ref.dtype, ref.device
        s2 = post.noise_std**2
        self.shape = (H, W)
        self.K = post.operator.fourier_symbol(real, device)
        self.Kc_s2 = (post.operator.fourier_symbol(torch.float64, device).conj() / s2).to(self.K.dtype)
        self.neg_Y = -torch.fft.rfft2(post.y.to(ref))
        self.w = Posterior.rfft_weights(H, W, device=device)  # float64
        self.HW = H * W
        self.sqrt_w_data = (self.w / (self.HW * 2 * s2)).sqrt().to(real)  # data value = sum |R sqrt_w_data|^2

    def residual(self, X: torch.Tensor) -> torch.Tensor:
        """``rfft2(A x - y)`` from ``X = rfft2(x)``."""
        return torch.addcmul(self.neg_Y, self.K, X)  # K X - Y in one pass

    def data_grad(self, R: torch.Tensor) -> torch.Tensor:
        """``A^T (A x - y) / sigma_n^2`` (spatial) from the residual spectrum ``R``."""
        return torch.fft.irfft2(self.Kc_s2 * R, s=self.shape)

    def data_value(self, R: torch.Tensor) -> torch.Tensor:
        """``||A x - y||^2 / (2 sigma_n^2)`` per batch item from the residual spectrum ``R`` (Parseval)."""
        return weighted_sq_sum(R, self.sqrt_w_data)


# ---------------------------------------------------------------------------------------------------- target
class Target:
    """A :class:`~invprob.Posterior` or a plain potential behind one interface.

    ``evaluate(x, need_fn)`` returns ``(V(x) or None, grad V(x), data_grad or None)``; for a linear posterior the
    residual ``A x - y`` is formed once, and for a circulant blur in Fourier (:class:`SpectralData`: one FFT pair
    per gradient, Parseval for the value). Non-smooth priors enter through ``prior_gradient``:

    - ``"smooth"``: the prior's own ``grad`` (TV: the ``eps``-smoothed gradient, Lipschitz ``8 weight / eps``,
      and the value is then the smoothed TV ``fn_smooth`` so that value and gradient belong together);
    - ``"moreau"``: the Moreau-Yosida gradient ``(x - prox_{lam R}(x)) / lam`` (Lipschitz ``1 / lam``), and
      ``V`` then uses the Moreau envelope of ``R`` so that value and gradient belong to one smooth potential.
      This is MYULA's choice (Durmus, Moulines, Pereyra 2018).

    ``"auto"`` is ``"smooth"``: the sampled density is then the one whose gradient :meth:`Posterior.grad` gives
    (for TV the ``eps``-smoothed TV; ``eps`` sets the stiffness ``8 weight / eps`` and the step). A TV prox
    costs about five smoothed-TV gradients on the CPU (measured at 128^2), and for equal Lipschitz constants
    the two smoothings blur the prior on the same scale, so the cheaper one is the default.
    """

    def __init__(self, obj, *, prior_gradient: str = "auto", lam: float | None = None, chunk_size: int | None = None):
        from invprob.posterior import Posterior

        if not (hasattr(obj, "fn") and hasattr(obj, "grad")):
            raise ValueError("target must be an invprob.Posterior or provide batched fn and grad, "
                             f"got {type(obj).__name__}")
        self.obj = obj
        self.is_posterior = isinstance(obj, Posterior)
        self.beta = float(getattr(obj, "beta", 1.0))
        self.chunk_size = chunk_size
        if prior_gradient not in ("auto", "smooth", "moreau"):
            raise ValueError(f"prior_gradient must be 'auto', 'smooth' or 'moreau', got {prior_gradient!r}")
        if prior_gradient == "auto":
            prior_gradient = "smooth"  # the posterior's own gradient (TV: eps-smoothed), as Posterior.grad
        if prior_gradient == "moreau":
            if not self.is_posterior:
                raise ValueError("prior_gradient='moreau' needs an invprob.Posterior (the prox of its prior)")
            if lam is None:
                lam = 1.0 / obj.data_lipschitz()
            lam = check_positive("lam", lam)
        self.prior_gradient = prior_gradient
        self.lam = lam
        from invprob.priors import TV

        self._is_tv = self.is_posterior and isinstance(obj.prior, TV) and prior_gradient == "smooth"
        op = getattr(obj, "operator", None)
        # a circulant blur: the data term goes through Fourier (SpectralData), one FFT pair per gradient
        self.is_spectral = bool(self.is_posterior and obj.is_linear and getattr(op, "is_circulant", False)
                                and hasattr(op, "fourier_symbol"))
        self._spectral_cache: dict = {}
        self.event_shape = tuple(obj.event_shape) if hasattr(obj, "event_shape") and obj.event_shape else None

    # --------------------------------------------------------------------------------------------------
    def prior_terms(self, x: torch.Tensor, need_fn: bool = False):
        """``(prior value or None, prior part of the drift)``: the prior half of :meth:`evaluate`."""
        return self._prior_terms(x, need_fn)

    def _prior_terms(self, x, need_fn):
        post = self.obj
        if self.prior_gradient == "moreau":
            p = post.prior.prox(x, self.lam)
            g = (x - p) / self.lam
            f = None
            if need_fn:
                f = post.prior.fn(p) + (x - p).pow(2).flatten(1).sum(1) / (2 * self.lam)
            return f, g
        prior = post.prior
        if self._is_tv:
            # smoothed TV value and gradient from one finite-difference pass (the value matches the gradient)
            from invprob.priors.tv import div2d, grad2d

            gx = grad2d(x)
            nrm = (gx.pow(2).sum(-3, keepdim=True) + prior.eps**2).sqrt()
            f = prior.weight * nrm.flatten(1).sum(1) if need_fn else None
            return f, -prior.weight * div2d(gx / nrm)
        return (prior.fn(x) if need_fn else None), prior.grad(x)

    def spectral(self, ref: torch.Tensor) -> SpectralData | None:
        """The Fourier data term for ``ref``'s dtype and device (None unless the operator is a circulant blur)."""
        if not self.is_spectral:
            return None
        key = (ref.dtype, ref.device)
        if key not in self._spectral_cache:
            self._spectral_cache[key] = SpectralData(self.obj, ref)
        return self._spectral_cache[key]

    def prior_value(self, x: torch.Tensor) -> torch.Tensor:
        """The prior part of :meth:`value` (the value that belongs to the drift's prior gradient)."""
        post = self.obj
        if self.prior_gradient == "moreau":
            return self._prior_terms(x, True)[0]
        if self._is_tv:
            return tv_smooth_value(x, post.prior.weight, post.prior.eps)
        return post.prior.fn(x)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """``V(x)`` only (no gradient): one forward operator call for a linear posterior (none for a circulant one)."""
        if not self.is_posterior:
            return self.obj.fn(x)
        post = self.obj
        sp = self.spectral(x)
        if sp is not None:
            df = sp.data_value(sp.residual(torch.fft.rfft2(x)))
        elif post.is_linear:
            df = (post.operator.A(x) - post.y.to(x)).pow(2).flatten(1).sum(1) / (2 * post.noise_std**2)
        else:
            df = post.data_fidelity(x)
        return df + self.prior_value(x)

    def _evaluate(self, x, need_fn):
        if not self.is_posterior:
            return (self.obj.fn(x) if need_fn else None), self.obj.grad(x), None
        post = self.obj
        sp = self.spectral(x)
        if sp is not None:
            R = sp.residual(torch.fft.rfft2(x))
            dg = sp.data_grad(R)
            df = sp.data_value(R) if need_fn else None
        elif post.is_linear:
            r = post.operator.A(x) - post.y.to(x)
            dg = post.operator.A_adjoint(r) / post.noise_std**2
            df = r.pow(2).flatten(1).sum(1) / (2 * post.noise_std**2) if need_fn else None
        else:
            dg = post.data_grad(x)
            df = post.data_fidelity(x) if need_fn else None
        pf, pg = self._prior_terms(x, need_fn)
        return (df + pf if need_fn else None), dg + pg, dg

    def evaluate(self, x: torch.Tensor, need_fn: bool = True):
        if self.chunk_size is None or x.shape[0] <= self.chunk_size:
            return self._evaluate(x, need_fn)
        parts = [self._evaluate(x[i : i + self.chunk_size], need_fn) for i in range(0, x.shape[0], self.chunk_size)]
        f = torch.cat([p[0] for p in parts]) if need_fn else None
        g = torch.cat([p[1] for p in parts])
        dg = torch.cat([p[2] for p in parts]) if parts[0][2] is not None else None
        return f, g, dg

    def fn(self, x):
        return self.evaluate(x, True)[0]

    def grad(self, x):
        return self.evaluate(x, False)[1]

    def lipschitz(self, precond) -> float:
        """An upper estimate of the Lipschitz constant of ``M grad V`` in the ``M`` metric (default steps)."""
        from invprob.solvers.samplers.preconditioners import FourierPreconditioner, IdentityPreconditioner

        if not self.is_posterior:
            return _power_lipschitz(self, precond)
        post = self.obj
        norm_m = precond.norm()
        if isinstance(precond, FourierPreconditioner):
            d = post.operator.fourier_symbol(torch.float64, "cpu").abs() ** 2 / post.noise_std**2
            data = float((d / precond.inv_symbol).max())
        elif isinstance(precond, IdentityPreconditioner):
            data = post.data_lipschitz()
        elif precond.kind == "normal":
            data = 1.0
        else:
            data = post.data_lipschitz() * norm_m
        prior = post.prior
        if self.prior_gradient == "moreau":
            pl = 1.0 / self.lam
        elif getattr(prior, "is_quadratic", False) and hasattr(prior, "precision_symbol"):
            H, W = self.event_shape[-2:]
            ps = prior.precision_symbol(H, W, dtype=torch.float64)
            if isinstance(precond, FourierPreconditioner):
                return data + float((ps / precond.inv_symbol).max())
            pl = float(ps.max())
        elif hasattr(prior, "eps"):
            pl = 8.0 * prior.weight / prior.eps  # TV: ||D||^2 <= 8; L1 in an orthonormal basis: weight / eps
            if type(prior).__name__ == "L1":
                pl = prior.weight / prior.eps
        else:
            pl = 0.0
        return data + pl * norm_m


def _power_lipschitz(target: Target, precond, n_iter: int = 50) -> float:
    """Largest eigenvalue of ``M Hess V`` by power iteration on gradient differences (plain potentials)."""
    shape = target.event_shape
    if shape is None:
        raise ValueError("a plain potential needs event_shape (or pass step=...) for the default step")
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros((1, *shape), dtype=torch.float64)
    g0 = target.grad(x0)
    v = torch.randn((1, *shape), generator=g, dtype=torch.float64)
    lam = 1.0
    for _ in range(n_iter):
        v = v / v.norm()
        w = precond.apply(target.grad(x0 + v) - g0)
        lam = float((w * precond.inv_apply(v)).sum() / (v * precond.inv_apply(v)).sum())
        v = w
    return abs(lam)


# ---------------------------------------------------------------------------------------------------- sampler
class Sampler:
    """Base class of the samplers: ``run(target, n_particles=..., n_iter=..., ...) -> PosteriorResult``."""

    name = "sampler"
    default_init_spread = 0.0

    def __init__(self, config):
        self.config = config

    # hooks ------------------------------------------------------------------------------------------------
    def _prepare(self, target: Target, x: torch.Tensor, gen: torch.Generator) -> dict:
        return {}

    def _step(self, target: Target, x: torch.Tensor, state: dict, gen: torch.Generator, log: bool):
        raise NotImplementedError

    def _accumulate(self, target: Target, x: torch.Tensor, state: dict) -> None:
        pass

    def _sample_view(self, target: Target, x: torch.Tensor, state: dict, gen: torch.Generator) -> torch.Tensor:
        """What a stored sample is, given the particles of a kept iteration (default: the particles)."""
        return x.detach().clone()

    def _finalize(self, target, x, particles: Welford, state, gen):
        """-> (mean, std, uncertainty info, samples or None to keep the stored ones)."""
        std = particles.variance().sqrt()
        return particles.mean, std, {"estimator": "particles",
                                     "calibration": "pooled moments of the chains after burn-in (Welford)"}, None

    def _target_options(self) -> dict:
        return {}

    # the loop ---------------------------------------------------------------------------------------------
    def run(
        self,
        target,
        *,
        n_particles: int = 40,
        n_iter: int = 1000,
        burn_in: int | None = None,
        rng: int | torch.Generator | None = None,
        init: torch.Tensor | None = None,
        init_spread: float | None = None,
        progress: bool = True,
        callback=None,
        keep_samples: int = 0,
        chunk_size: int | None = None,
        log_every: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> PosteriorResult:
        """Run the sampler on ``target`` and return its posterior summaries.

        Parameters
        ----------
        target : invprob.Posterior or potential
            A posterior, or any object with batched ``fn``/``grad`` on ``(B, *event_shape)`` (plus
            ``event_shape`` or an ``init``).
        n_particles : int
            Number of particles (PBRWP) or parallel chains (Langevin): the batch dimension.
        n_iter : int
            Total iterations, burn-in included.
        burn_in : int, optional
            Iterations discarded before the moments accumulate (default ``n_iter // 2``). The initial state is
            never counted; the state after each iteration ``burn_in + 1 ... n_iter`` is.
        rng : int or torch.Generator, optional (keyword-only)
            Seed or generator; the same seed on the same device and dtype gives bit-identical results on the CPU.
        init : torch.Tensor, optional
            ``(*event_shape)`` or ``(1, *event_shape)`` (spread by ``init_spread``) or ``(n_particles,
            *event_shape)`` (used as is). Default: the MAP estimate (:func:`~invprob.solvers.map_estimate`) of a
            posterior, the mean/zero of a plain potential, plus ``init_spread`` times standard normal noise.
        init_spread : float, optional
            Standard deviation of the initial noise around ``init`` (default: sampler-specific, 0.01 for PBRWP
            whose particles must differ, 0 for Langevin chains).
        progress : bool
            tqdm progress bar (postfix refreshed at the logging iterations only).
        callback : callable, optional
            ``callback(iteration, particles, logs)`` after every iteration; ``logs`` is a dict at logging
            iterations and ``None`` otherwise.
        keep_samples : int
            Store this many samples, thinned evenly over the post-burn-in iterations (all particles of a stored
            iteration, truncated to ``keep_samples``); 0 stores none.
        chunk_size : int, optional
            Evaluate the potential on at most this many particles at a time.
        log_every : int, optional
            Log diagnostics every ``log_every`` iterations (default ``max(1, n_iter // 100)``).
        dtype, device : optional
            Working precision and device (default: those of ``init`` or of the posterior's data).

        Returns
        -------
        PosteriorResult
            ``mean``, ``std`` of shape ``(1, *event_shape)``, ``map`` (the MAP used for initialisation, if any),
            ``samples`` when asked, and ``info`` (see the package docstring).
        """
        n_particles = _check_int("n_particles", n_particles, 1)
        n_iter = _check_int("n_iter", n_iter, 1)
        burn_in = n_iter // 2 if burn_in is None else _check_int("burn_in", burn_in, 0)
        if burn_in >= n_iter:
            raise ValueError(f"burn_in must be smaller than n_iter ({n_iter}), got {burn_in}")
        keep_samples = _check_int("keep_samples", keep_samples, 0)
        log_every = max(1, n_iter // 100) if log_every is None else _check_int("log_every", log_every, 1)
        if chunk_size is not None:
            chunk_size = _check_int("chunk_size", chunk_size, 1)
        spread = (self.default_init_spread if init_spread is None
                  else check_positive("init_spread", init_spread, allow_zero=True))

        tgt = Target(target, chunk_size=chunk_size, **self._target_options())
        prior = getattr(target, "prior", None)
        if hasattr(prior, "reset"):
            prior.reset()  # warm-start caches (TV's dual prox) change results in the last bits: start clean
        t_start = time.perf_counter()
        x, x_map, dtype, device, explicit = self._initial(tgt, init, n_particles, dtype, device)
        gen, seed = make_generator(rng, device)
        center = x.mean(0, keepdim=True)
        if spread > 0 and not explicit:  # an explicit particle set is used as is
            x = x + spread * randn_like(x, gen)
        if tgt.event_shape is None:
            tgt.event_shape = tuple(x.shape[1:])
        tgt.center = center  # the initial point before spreading (MAP by default)
        state = self._prepare(tgt, x, gen)
        state["keep_samples"] = keep_samples

        stats = Welford()
        n_keep_iters = 0 if keep_samples == 0 else min(n_iter - burn_in, math.ceil(keep_samples / n_particles))
        keep_at = set()
        if n_keep_iters:
            span = (n_iter - burn_in - 1) / max(1, n_keep_iters - 1)
            keep_at = {burn_in + 1 + round(i * span) for i in range(n_keep_iters)}
        kept: list[torch.Tensor] = []
        logs: list[dict] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_iter, desc=self.name, leave=False)
        t_loop = time.perf_counter()
        for it in range(1, n_iter + 1):
            do_log = it % log_every == 0 or it == n_iter or it == 1
            x, entry = self._step(tgt, x, state, gen, do_log)
            if it > burn_in:
                stats.update(x)
                self._accumulate(tgt, x, state)
                if it in keep_at:
                    kept.append(self._sample_view(tgt, x, state, gen))
            if do_log:
                entry = {"iteration": it, **entry}
                logs.append(entry)
                # the one sync of a logging iteration; min and max are finite iff every entry is (NaN propagates),
                # one reduction instead of isfinite's full boolean tensor (4x faster on the CPU)
                finite = bool(torch.isfinite(torch.stack(torch.aminmax(x))).all())
                if not finite:
                    if bar is not None:
                        bar.close()
                    raise FloatingPointError(f"{self.name}: non-finite particles at iteration {it}; reduce the step "
                                             f"(now {state.get('step')}) or check the potential")
                if bar is not None:
                    bar.set_postfix({k: f"{float(v):.4g}" for k, v in entry.items()
                                     if k in ("potential", "entropy", "spread")})
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(it, x, entry if do_log else None)
        loop_time = time.perf_counter() - t_loop
        if bar is not None:
            bar.close()
        t_fin = time.perf_counter()
        mean, std, unc, fin_samples = self._finalize(tgt, x, stats, state, gen)
        fin_time = time.perf_counter() - t_fin
        shape = (1, *x.shape[1:])
        if fin_samples is not None:
            kept = [fin_samples]
        samples = torch.cat(kept)[:keep_samples].cpu() if kept and keep_samples else None
        part_mean, part_std = stats.mean.reshape(shape), stats.variance().sqrt().reshape(shape)
        info: dict[str, Any] = {
            "sampler": self.name,
            "config": asdict(self.config),
            "iterations": n_iter,
            "burn_in": burn_in,
            "n_particles": n_particles,
            "accumulated_states": stats.count,
            "seed": seed,
            "device": str(device),
            "dtype": str(dtype).replace("torch.", ""),
            "versions": versions(),
            "wall_time_s": time.perf_counter() - t_start,
            "loop_time_s": loop_time,
            "time_per_iteration_s": loop_time / n_iter,
            "finalize_time_s": fin_time,
            "step": state.get("step"),
            "preconditioner": state["precond"].describe() if "precond" in state else None,
            "prior_gradient": tgt.prior_gradient if tgt.is_posterior else "potential",
            "lam": tgt.lam,
            "log": _logs_to_lists(logs),
            "uncertainty": unc,
            "particle_mean": part_mean.to(dtype).cpu(),
            "particle_std": part_std.to(dtype).cpu(),
            "final_particles_std": x.double().std(0).mean().item() if n_particles > 1 else 0.0,
        }
        if "info" in state:
            info.update(state["info"])
        return PosteriorResult(mean=mean.reshape(shape).to(dtype), std=std.reshape(shape).to(dtype),
                               map=None if x_map is None else x_map.to(dtype), samples=samples, info=info)

    # ------------------------------------------------------------------------------------------------------
    def _initial(self, tgt: Target, init, n, dtype, device):
        x_map = None
        if init is not None:
            if not torch.is_tensor(init):
                init = torch.as_tensor(init)
            dtype = dtype or (init.dtype if init.is_floating_point() else torch.get_default_dtype())
            device = torch.device(device) if device is not None else init.device
            x = init.to(dtype=dtype, device=device)
            shape = tgt.event_shape
            if shape is not None and tuple(x.shape) == tuple(shape):
                x = x[None]
            elif shape is None and x.ndim == 1:
                x = x[None]
            explicit = x.shape[0] == n and n > 1
            if x.shape[0] == 1:
                x = x.expand(n, *x.shape[1:]).clone()
            elif x.shape[0] != n:
                raise ValueError(f"init must have leading dimension 1 or n_particles={n}, "
                                 f"got shape {tuple(init.shape)}")
            if shape is not None and tuple(x.shape[1:]) != tuple(shape):
                raise ValueError(f"init has event shape {tuple(x.shape[1:])}, the target's is {tuple(shape)}")
            return x.clone(), None, dtype, device, explicit
        if tgt.is_posterior:
            from invprob.solvers.map import map_estimate

            post = tgt.obj
            dtype = dtype or post.y.dtype
            device = torch.device(device) if device is not None else post.y.device
            x_map = map_estimate(post, dtype=dtype, device=device, max_iter=500, tol=1e-6).x
            return x_map.expand(n, *x_map.shape[1:]).clone(), x_map, dtype, device, False
        if tgt.event_shape is None:
            raise ValueError("a plain potential without event_shape needs init=")
        dtype = dtype or torch.get_default_dtype()
        device = torch.device(device) if device is not None else torch.device("cpu")
        m = getattr(tgt.obj, "mean", None)
        x = torch.zeros((n, *tgt.event_shape), dtype=dtype, device=device)
        if torch.is_tensor(m) and tuple(m.shape) == tuple(tgt.event_shape):
            x = x + m.to(dtype=dtype, device=device)
        return x, None, dtype, device, False


def _check_int(name: str, value, minimum: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if v != value or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def _logs_to_lists(logs: list[dict]) -> dict:
    """Per-iteration log entries (tensors on the device) -> lists of floats (one sync at the end)."""
    out: dict[str, list] = {}
    for e in logs:
        for k, v in e.items():
            out.setdefault(k, []).append(float(v) if torch.is_tensor(v) else v)
    return out
