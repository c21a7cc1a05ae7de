"""The RWPO transformer: stacked (learned gradient drift, sparse RWPO attention) blocks acting on particles.

Block ``k`` (forward-backward splitting of ``exp(-beta (f + lambda ||x||_1))``):

.. code-block:: text

    x <- x - h grad_x phi_k(x, c)          forward step on the smooth part, phi_k a ResNet potential
    x <- RWPOAttention(x)                  backward (regularized Wasserstein proximal) step on lambda||x||_1

``c`` is an optional condition (a measurement vector) for learned reconstruction. Tokens are particles; a
batch ``(S, N, d)`` holds ``S`` independent particle sets (one per data set when conditioning).

The log density of the particles is tracked through the blocks (mean-field: the Jacobian of a block is
taken in the query with the other particles held fixed), ``log rho_{k+1}(x') = log rho_k(x) - log|det J|``:

- ``"joint"``: the exact change of variables of the whole particle set: ``log|det|`` of the ``Nd x Nd``
  Jacobian of each block (queries, keys and values moved), shared equally among the set's particles, so the
  loss is the reverse KL of the joint particle law to ``pi^N`` per particle. Nothing to exploit, but
  ``O((Nd)^3)`` per block: small sets in low dimension. The per-particle modes below ignore the interaction
  (an ``O(1/N)`` effect only when each query sees many keys) and a trained flow can exploit that bias;
- ``"exact"``: ``log|det J|`` from full ``d x d`` Jacobians (drift Hessian by ``d`` backward passes, attention
  Jacobian in closed form): for small ``d``;
- ``"divergence"``: the accumulated divergence ``tr(J - I)`` (the continuous-time formula), exact traces;
- ``"hutchinson"``: the same divergence by Rademacher probes, for large ``d``;
- ``"none"``: no tracking (inference).
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from invprob._checks import check_int, check_positive
from invprob.solvers.learned.attention import RWPOAttention

__all__ = ["FlowOutput", "RWPOConfig", "RWPOTransformer", "ResNetPotential"]

_ATTENTION = ("l1", "dense", "none")
_LOGDET = ("joint", "exact", "divergence", "hutchinson", "none")


@dataclass(frozen=True)
class RWPOConfig:
    """Architecture of an :class:`RWPOTransformer`.

    Parameters
    ----------
    dim : int
        Token (particle) dimension ``d``.
    n_blocks : int
        Number of (drift, attention) blocks ``n_t``.
    hidden, n_layers : int
        Width and number of residual layers of each potential ``phi_k``.
    cond_dim : int
        Length of the condition (measurement) vector; ``0`` for unconditional sampling.
    attention : {"l1", "dense", "none"}
        ``"l1"``: sparse RWPO attention with ``lambda_``; ``"dense"``: the same with ``lambda_ = 0`` (baseline);
        ``"none"``: no attention, a plain ResNet / discretised neural-ODE gradient flow (baseline).
    lambda_, h, beta, T : float
        Layer constants (``T = None`` ties ``T`` to ``h``).
    learn_lambda, learn_h : bool
        Train ``lambda_`` / ``h`` (per block) as well.
    base_std : float
        Standard deviation of the Gaussian base law.
    first_guess : bool
        With a condition, centre the base law at a learned linear map of it (``x_0 = G c + base_std eps``).
    """

    dim: int
    n_blocks: int = 8
    hidden: int = 64
    n_layers: int = 2
    cond_dim: int = 0
    attention: str = "l1"
    lambda_: float = 1.0
    h: float = 0.1
    beta: float = 1.0
    T: float | None = None
    learn_lambda: bool = False
    learn_h: bool = False
    base_std: float = 1.0
    first_guess: bool = False

    def __post_init__(self):
        for name in ("dim", "n_blocks", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if int(self.n_layers) < 0 or int(self.cond_dim) < 0:
            raise ValueError("n_layers and cond_dim must be non-negative integers")
        if self.attention not in _ATTENTION:
            raise ValueError(f"attention must be one of {_ATTENTION}, got {self.attention!r}")
        check_positive("lambda_", self.lambda_, allow_zero=True)
        check_positive("h", self.h)
        check_positive("beta", self.beta)
        check_positive("base_std", self.base_std)
        if self.T is not None:
            check_positive("T", self.T)
        if self.first_guess and self.cond_dim == 0:
            raise ValueError("first_guess needs cond_dim > 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RWPOConfig:
        """Build from a dict (e.g. JSON), refusing unknown keys with one line naming them."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model config key(s): {sorted(unknown)}")
        return cls(**d)


class ResNetPotential(nn.Module):
    """Scalar potential ``phi(x, c)``: a residual MLP plus a diagonal quadratic and a (conditioned) linear term.

    ``phi(x, c) = w^T z_L + (1/2) sum_i a_i x_i^2 + b(c)^T x``, ``z_0 = silu(W_0 [x, c])``,
    ``z_{l+1} = z_l + silu(W_l z_l)``. The output layer, ``a`` and ``b`` start at zero, so an untrained block
    is the identity drift. SiLU keeps ``phi`` smooth (its Hessian enters the log-density tracking).
    """

    def __init__(self, dim: int, hidden: int, n_layers: int, cond_dim: int = 0):
        super().__init__()
        for name, v, low in (("dim", dim, 1), ("hidden", hidden, 1), ("n_layers", n_layers, 0),
                             ("cond_dim", cond_dim, 0)):
            check_int(name, v, minimum=low)
        self.dim, self.cond_dim = dim, cond_dim
        self.inp = nn.Linear(dim + cond_dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_layers))
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.quad = nn.Parameter(torch.zeros(dim))
        self.lin = nn.Linear(cond_dim, dim) if cond_dim else None
        self.lin0 = nn.Parameter(torch.zeros(dim))
        if self.lin is not None:
            nn.init.zeros_(self.lin.weight)
            nn.init.zeros_(self.lin.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """``(..., N, d)`` (and ``c`` broadcastable to ``(..., N, cond_dim)``) -> ``(..., N)``."""
        if self.cond_dim:
            c = c.expand(*x.shape[:-1], self.cond_dim)
            z = F.silu(self.inp(torch.cat([x, c], dim=-1)))
        else:
            z = F.silu(self.inp(x))
        for layer in self.layers:
            z = z + F.silu(layer(z))
        b = self.lin0 if self.lin is None else self.lin0 + self.lin(c)
        return self.out(z).squeeze(-1) + 0.5 * (self.quad * x * x).sum(-1) + (b * x).sum(-1)


@dataclass
class FlowOutput:
    """What :meth:`RWPOTransformer.flow` returns.

    Attributes
    ----------
    x : torch.Tensor
        Final particles ``(..., N, d)``.
    logdet : torch.Tensor or None
        ``sum_k log|det J_k|`` per particle ``(..., N)`` (or its divergence estimate), so that
        ``log rho_K(x_K) = log rho_0(x_0) - logdet``.
    hjb : torch.Tensor or None
        Mean squared viscous HJB residual over blocks and particles (scalar), when asked.
    path : list of torch.Tensor
        Particles after each block (detached), when asked.
    entropy : float
        Mean attention entropy (nats) over blocks, queries and sets (diagnostic).
    """

    x: torch.Tensor
    logdet: torch.Tensor | None = None
    hjb: torch.Tensor | None = None
    path: list[torch.Tensor] = field(default_factory=list)
    entropy: float = float("nan")


class RWPOTransformer(nn.Module):
    """Transformer whose attention is the sparse regularized Wasserstein proximal (RWPO) kernel.

    Parameters
    ----------
    config : RWPOConfig or dict
        Architecture; a dict is validated by :meth:`RWPOConfig.from_dict`.

    Examples
    --------
    >>> model = RWPOTransformer(RWPOConfig(dim=2, n_blocks=4, hidden=16))
    >>> x = model.sample(128, generator=torch.Generator().manual_seed(0))
    >>> x.shape
    torch.Size([1, 128, 2])
    """

    def __init__(self, config: RWPOConfig | dict):
        super().__init__()
        if isinstance(config, dict):
            config = RWPOConfig.from_dict(config)
        self.config = config
        c = config
        self.potentials = nn.ModuleList(
            ResNetPotential(c.dim, c.hidden, c.n_layers, c.cond_dim) for _ in range(c.n_blocks)
        )
        if c.attention == "none":
            self.attentions = None
        else:
            lam = c.lambda_ if c.attention == "l1" else 0.0
            self.attentions = nn.ModuleList(
                RWPOAttention(lam, c.h, c.beta, c.T, learn_lambda=c.learn_lambda and lam > 0, learn_h=c.learn_h)
                for _ in range(c.n_blocks)
            )
        if c.learn_h and c.attention == "none":
            self.log_h = nn.Parameter(torch.full((c.n_blocks,), math.log(c.h)))
        else:
            self.register_buffer("h_buf", torch.full((c.n_blocks,), float(c.h)))
        self.guess = nn.Linear(c.cond_dim, c.dim) if c.first_guess else None
        if self.guess is not None:
            nn.init.zeros_(self.guess.weight)
            nn.init.zeros_(self.guess.bias)

    # -- helpers ---------------------------------------------------------------------------------------
    def step(self, k: int) -> torch.Tensor:
        """Drift step ``h_k`` of block ``k`` (the attention's own ``h`` when attention is used)."""
        if self.attentions is not None:
            return self.attentions[k].h
        return self.log_h[k].exp() if hasattr(self, "log_h") else self.h_buf[k]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _cond(self, cond: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """Check the condition and shape it ``(..., 1, cond_dim)`` to broadcast against ``(..., N, d)``."""
        cd = self.config.cond_dim
        if cd == 0:
            if cond is not None:
                raise ValueError("cond was given but the model has cond_dim=0")
            return None
        if cond is None:
            raise ValueError(f"cond is required: the model is conditioned on vectors of length {cd}")
        if cond.shape[-1] != cd:
            raise ValueError(f"cond must have last dimension cond_dim={cd}, got shape {tuple(cond.shape)}")
        cond = cond.to(x)
        if x.ndim == 2:
            if cond.ndim != 1:
                raise ValueError(f"cond must have shape ({cd},) for x of shape (N, d), got {tuple(cond.shape)}")
        elif cond.shape[:-1] != x.shape[:-2]:
            raise ValueError(
                f"cond must have shape {(*x.shape[:-2], cd)} for x of shape {tuple(x.shape)}, got {tuple(cond.shape)}"
            )
        return cond.unsqueeze(-2)

    def base_sample(
        self, n_particles: int, cond: torch.Tensor | None = None, *, n_sets: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Base particles ``x_0`` ``(S, N, d)`` and their log density ``(S, N)``.

        ``S`` is ``cond.shape[0]`` for a batch of conditions ``(S, cond_dim)``, else ``n_sets`` (default 1).
        """
        c = self.config
        if int(n_particles) < 1:
            raise ValueError(f"n_particles must be a positive integer, got {n_particles!r}")
        if cond is not None and cond.ndim == 1:
            cond = cond.unsqueeze(0)
        s = cond.shape[0] if cond is not None else (1 if n_sets is None else int(n_sets))
        dev = generator.device if generator is not None else self.device
        dtype = next(self.parameters()).dtype
        eps = torch.randn(s, int(n_particles), c.dim, generator=generator, device=dev, dtype=dtype)
        eps = eps.to(self.device)
        x0 = c.base_std * eps
        if self.guess is not None:
            if cond is None:
                raise ValueError("cond is required: the model has a learned first guess")
            x0 = x0 + self.guess(cond.to(x0)).unsqueeze(-2)
        logp = -0.5 * (eps * eps).sum(-1) - c.dim * (math.log(c.base_std) + 0.5 * math.log(2 * math.pi))
        return x0, logp

    # -- the flow --------------------------------------------------------------------------------------
    def flow(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        *,
        logdet: str = "none",
        hjb: bool = False,
        n_probes: int = 1,
        generator: torch.Generator | None = None,
        return_path: bool = False,
    ) -> FlowOutput:
        """Push particle sets ``x`` ``(N, d)`` or ``(S, N, d)`` through all blocks.

        Parameters
        ----------
        x : torch.Tensor
            Particles.
        cond : torch.Tensor, optional
            ``(cond_dim,)`` for ``(N, d)`` input, ``(S, cond_dim)`` for ``(S, N, d)``.
        logdet : {"none", "joint", "exact", "divergence", "hutchinson"}
            Log-density tracking (see the module docstring).
        hjb : bool
            Also return the mean squared viscous HJB residual
            ``R_k = (phi_{k+1} - phi_k)/h - |grad phi_k|^2 / 2 + (1/beta) Laplacian phi_k`` at the block inputs
            (``v = -grad phi``; ``k < n_blocks - 1``).
        n_probes : int
            Rademacher probes per block for ``"hutchinson"``.
        generator : torch.Generator, optional
            For the probes.
        return_path : bool
            Keep the (detached) particles after each block.
        """
        c = self.config
        if logdet not in _LOGDET:
            raise ValueError(f"logdet must be one of {_LOGDET}, got {logdet!r}")
        if x.ndim not in (2, 3) or x.shape[-1] != c.dim:
            raise ValueError(f"x must have shape (N, {c.dim}) or (S, N, {c.dim}), got {tuple(x.shape)}")
        cnd = self._cond(cond, x)
        train = torch.is_grad_enabled()
        need_lap = hjb or logdet in ("joint", "exact", "divergence", "hutchinson")
        total = None if logdet == "none" else torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        hjb_terms = []
        path, entropies = [], []
        for k in range(c.n_blocks):
            h = self.step(k).to(x.dtype)
            probes = None
            if logdet == "hutchinson" or (hjb and logdet == "none"):
                probes = self._rademacher(n_probes, x, generator)
            phi, g, hess, lap_est = self._drift(k, x, cnd, logdet=logdet, need_lap=need_lap, probes=probes, train=train)
            if total is not None:
                if logdet in ("exact", "joint"):
                    eye = torch.eye(c.dim, dtype=x.dtype, device=x.device)
                    total = total + torch.linalg.slogdet(eye - h * hess)[1]
                else:
                    total = total - h * lap_est
            if hjb and k + 1 < c.n_blocks:
                phi_next = self.potentials[k + 1](x, cnd)
                res = (phi_next - phi) / h - 0.5 * (g * g).sum(-1) + lap_est / c.beta
                hjb_terms.append((res * res).mean())
            x = x - h * g
            if self.attentions is not None:
                att = self.attentions[k]
                x_new, p = att(x, return_weights=True)
                if total is not None:
                    if logdet == "joint":
                        n, d = x.shape[-2], x.shape[-1]
                        jac = att.joint_jacobian(x, p).reshape(*x.shape[:-2], n * d, n * d)
                        total = total + (torch.linalg.slogdet(jac)[1] / n).unsqueeze(-1)
                    elif logdet == "exact":
                        total = total + torch.linalg.slogdet(att.query_jacobian(x, p))[1]
                    elif logdet == "divergence":
                        total = total + att.query_divergence(x, p)
                    else:
                        pr = self._rademacher(n_probes, x, generator)
                        total = total + att.query_divergence(x, p, probes=pr)
                if return_path:
                    with torch.no_grad():
                        entropies.append(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())
                x = x_new
            if not train:
                x = x.detach()
            if return_path:
                path.append(x.detach())
        out = FlowOutput(x=x, logdet=total, path=path)
        if hjb:
            out.hjb = torch.stack(hjb_terms).mean() if hjb_terms else torch.zeros((), dtype=x.dtype, device=x.device)
        if entropies:
            out.entropy = float(torch.stack(entropies).mean())
        return out

    @staticmethod
    def _rademacher(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        dev = generator.device if generator is not None else x.device
        r = torch.randint(0, 2, (int(n), *x.shape), generator=generator, device=dev).to(x.device, x.dtype)
        return 2 * r - 1

    def _drift(self, k, x, cnd, *, logdet, need_lap, probes, train):
        """``phi_k``, ``grad phi_k``, the Hessian (``"exact"``) and the Laplacian (estimate) at ``x``."""
        pot = self.potentials[k]
        create = train
        with torch.enable_grad():
            xr = x if x.requires_grad else x.detach().requires_grad_(True)
            phi = pot(xr, cnd)
            g = torch.autograd.grad(phi.sum(), xr, create_graph=create or need_lap)[0]
            hess, lap = None, None
            if need_lap and logdet in ("joint", "exact", "divergence"):
                rows = [
                    torch.autograd.grad(g[..., i].sum(), xr, create_graph=create, retain_graph=True)[0]
                    for i in range(self.config.dim)
                ]
                hess = torch.stack(rows, dim=-2)
                lap = hess.diagonal(dim1=-2, dim2=-1).sum(-1)
            elif need_lap:
                ests = []
                for v in probes:
                    hv = torch.autograd.grad((g * v).sum(), xr, create_graph=create, retain_graph=True)[0]
                    ests.append((hv * v).sum(-1))
                lap = torch.stack(ests).mean(0)
        if not train:
            phi, g = phi.detach(), g.detach()
            hess = None if hess is None else hess.detach()
            lap = None if lap is None else lap.detach()
        return phi, g, hess, lap

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Final particles of :meth:`flow` (no density tracking)."""
        return self.flow(x, cond).x

    # -- sampling and reconstruction --------------------------------------------------------------------
    def sample(
        self, n_particles: int, cond: torch.Tensor | None = None, *, n_sets: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw base particles and push them through the flow (no gradient): ``(S, N, d)``."""
        with torch.no_grad():
            x0, _ = self.base_sample(n_particles, cond, n_sets=n_sets, generator=generator)
            c = None if cond is None else (cond if cond.ndim > 1 else cond.unsqueeze(0))
            return self.flow(x0, c).x

    def reconstruct(
        self, y: torch.Tensor, n_particles: int = 64, *, generator: torch.Generator | None = None,
        seed: int | None = None,
    ):
        """Posterior summaries for one data set ``y`` ``(cond_dim,)`` from ``n_particles`` output particles.

        Returns
        -------
        PosteriorResult
            ``mean`` and ``std`` ``(1, d)`` (particle mean and unbiased std), ``samples`` ``(N, d)``,
            ``map=None``, ``info`` with the wall time, seed, configuration and mean attention entropy.
        """
        from invprob.results import PosteriorResult

        if self.config.cond_dim == 0:
            raise ValueError("reconstruct needs a conditioned model (cond_dim > 0); use sample()")
        y = torch.as_tensor(y)
        if y.ndim == 2 and y.shape[0] == 1:
            y = y[0]
        if y.ndim != 1 or y.shape[0] != self.config.cond_dim:
            raise ValueError(f"y must have shape ({self.config.cond_dim},), got {tuple(y.shape)}")
        if int(n_particles) < 2:
            raise ValueError(f"n_particles must be at least 2, got {n_particles!r}")
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(0 if seed is None else int(seed))
        t0 = time.perf_counter()
        with torch.no_grad():
            x0, _ = self.base_sample(n_particles, y.to(self.device).unsqueeze(0), generator=generator)
            out = self.flow(x0, y.to(self.device).unsqueeze(0), return_path=self.attentions is not None)
        xs = out.x[0]
        wall = time.perf_counter() - t0
        info = {
            "method": f"rwpo-transformer ({self.config.attention} attention)",
            "n_particles": int(n_particles),
            "n_blocks": self.config.n_blocks,
            "seed": seed,
            "time_s": wall,
            "config": asdict(self.config),
            "attention_entropy": out.entropy,
            "uncertainty": "particles: unbiased std of the output particles of the trained flow",
            "versions": {"torch": torch.__version__},
        }
        return PosteriorResult(
            mean=xs.mean(0, keepdim=True), std=xs.std(0, keepdim=True), map=None, samples=xs, info=info
        )

    # -- persistence -------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``model.pt`` (state dict) and ``config.json`` into ``directory``, atomically."""
        from invprob.results import atomic_write_bytes, atomic_write_json

        directory = Path(directory)
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        atomic_write_bytes(directory / "model.pt", buf.getvalue())
        atomic_write_json(directory / "config.json", asdict(self.config))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> RWPOTransformer:
        """Rebuild a model written by :meth:`save`."""
        directory = Path(directory)
        if not (directory / "config.json").exists():
            raise ValueError(f"directory has no config.json: {directory}")
        config = RWPOConfig.from_dict(json.loads((directory / "config.json").read_text()))
        model = cls(config)
        state = torch.load(directory / "model.pt", map_location=map_location, weights_only=True)
        model.load_state_dict(state)
        return model.to(map_location)
