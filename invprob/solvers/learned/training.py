"""Training the RWPO transformer: generative (sampling) mode and amortised reconstruction.

Generative mode (against an unnormalised target ``exp(-beta V)``): particles ``x_0`` from the Gaussian base law
are pushed through the blocks with their log density tracked (see :mod:`.transformer`), and the loss is the
reverse KL up to the target's constant plus the viscous HJB residual penalty,

.. code-block:: text

    L = mean_i [ log rho_0(x_0,i) - logdet_i + beta V(x_K,i) ] + hjb_weight * mean_k,i R_k(x_k,i)^2.

Amortised reconstruction: on simulated pairs ``(x, y)`` the particle set produced for ``y`` is scored against
``x`` by the (fair) CRPS summed over coordinates,
``sum_c [ mean_i |X_ic - x_c| - (1 / (2 N (N-1))) sum_{i != j} |X_ic - X_jc| ]``, a strictly proper scoring
rule: its minimiser over particle laws is the posterior's marginals, so the particles carry the uncertainty
(a mean-squared or L1 loss on each particle would collapse them onto one point estimate). Optionally the
energy score (the same with Euclidean norms over whole vectors) instead.

Both loops write atomic checkpoints (model, optimiser, random-generator state, step, history) and resume to
an identical continuation.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from invprob._checks import check_positive
from invprob.devices import resolve_device
from invprob.solvers.learned.targets import SparseLinearProblem, knn_kl, make_target, sliced_wasserstein
from invprob.solvers.learned.transformer import RWPOConfig, RWPOTransformer

__all__ = [
    "ReconstructionTrainConfig",
    "TrainConfig",
    "TrainResult",
    "crps_loss",
    "energy_score",
    "evaluate_generative",
    "evaluate_reconstruction",
    "train_from_config",
    "train_generative",
    "train_reconstruction",
]


@dataclass(frozen=True)
class TrainConfig:
    """Generative (sampling-mode) training.

    Parameters
    ----------
    n_iter : int
        Optimiser steps (``"steps"`` is accepted as its old name in config files).
    lr, lr_final : float
        Adam learning rate, cosine-annealed to ``lr * lr_final``.
    n_particles, n_sets : int
        Particles per set (tokens per attention) and independent sets per step.
    logdet : {"auto", "joint", "exact", "divergence", "hutchinson"}
        Log-density tracking (see :mod:`.transformer`); ``"auto"``: ``"joint"`` when ``n_particles * d <= 1024``,
        else ``"exact"`` for ``d <= 16``, else ``"hutchinson"``.
    n_probes : int
        Rademacher probes for the Hutchinson estimator.
    hjb_weight : float
        Weight of the viscous HJB residual penalty.
    grad_clip : float
        Gradient-norm clipping (``0``: none).
    seed : int
        Seeds the parameters and the training and evaluation random streams.
    eval_every, eval_samples : int
        Evaluate the kNN KL on ``eval_samples`` fresh samples every ``eval_every`` steps (``0``: never).
    log_every, checkpoint_every : int
        History and checkpoint periods in steps.
    """

    n_iter: int = 500
    lr: float = 3e-3
    lr_final: float = 0.1
    n_particles: int = 256
    n_sets: int = 1
    logdet: str = "auto"
    n_probes: int = 1
    hjb_weight: float = 1e-3
    grad_clip: float = 10.0
    seed: int = 0
    eval_every: int = 100
    eval_samples: int = 2048
    log_every: int = 10
    checkpoint_every: int = 100

    def __post_init__(self):
        for name in ("n_iter", "n_particles", "n_sets", "n_probes", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("eval_every", "eval_samples", "checkpoint_every"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        check_positive("lr", self.lr)
        check_positive("lr_final", self.lr_final)
        check_positive("hjb_weight", self.hjb_weight, allow_zero=True)
        check_positive("grad_clip", self.grad_clip, allow_zero=True)
        if self.logdet not in ("auto", "joint", "exact", "divergence", "hutchinson"):
            raise ValueError(
                f"logdet must be 'auto', 'joint', 'exact', 'divergence' or 'hutchinson', got {self.logdet!r}"
            )


@dataclass(frozen=True)
class ReconstructionTrainConfig:
    """Amortised reconstruction training on simulated pairs.

    Parameters
    ----------
    n_iter, lr, lr_final, hjb_weight, grad_clip, seed, log_every, checkpoint_every
        As in :class:`TrainConfig`.
    batch_size : int
        Simulated data sets per step (independent particle sets).
    n_particles : int
        Particles per data set.
    loss : {"crps", "energy"}
        Scoring rule (see the module docstring).
    eval_every, eval_sets : int
        Evaluate on ``eval_sets`` held-out pairs (fixed) every ``eval_every`` steps.
    """

    n_iter: int = 1000
    lr: float = 3e-3
    lr_final: float = 0.1
    batch_size: int = 32
    n_particles: int = 32
    loss: str = "crps"
    hjb_weight: float = 0.0
    grad_clip: float = 10.0
    seed: int = 0
    eval_every: int = 100
    eval_sets: int = 256
    log_every: int = 10
    checkpoint_every: int = 100

    def __post_init__(self):
        for name in ("n_iter", "batch_size", "log_every", "eval_sets"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if int(self.n_particles) < 2:
            raise ValueError(f"n_particles must be at least 2, got {self.n_particles!r}")
        for name in ("eval_every", "checkpoint_every"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        check_positive("lr", self.lr)
        check_positive("lr_final", self.lr_final)
        check_positive("hjb_weight", self.hjb_weight, allow_zero=True)
        check_positive("grad_clip", self.grad_clip, allow_zero=True)
        if self.loss not in ("crps", "energy"):
            raise ValueError(f"loss must be 'crps' or 'energy', got {self.loss!r}")


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a training run: the model, its history and where it was written."""

    model: RWPOTransformer
    history: dict[str, list]
    out_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


# -- scoring rules ------------------------------------------------------------------------------------------
def crps_loss(particles: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Fair CRPS summed over coordinates, per set: ``(S, N, d)``, ``(S, d)`` -> ``(S,)``."""
    n = particles.shape[-2]
    term1 = (particles - x.unsqueeze(-2)).abs().mean(-2).sum(-1)
    srt = particles.sort(dim=-2).values  # sum_{i,j}|X_i - X_j| = 2 sum_i (2i - n + 1) X_(i) (0-based)
    w = (2 * torch.arange(n, device=particles.device, dtype=particles.dtype) - n + 1).unsqueeze(-1)
    pair = 2 * (w * srt).sum(-2).sum(-1)
    return term1 - pair / (2 * n * (n - 1))


def energy_score(particles: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Fair energy score per set: ``mean_i ||X_i - x|| - (1/(2N(N-1))) sum_{i != j} ||X_i - X_j||``."""
    n = particles.shape[-2]
    term1 = (particles - x.unsqueeze(-2)).norm(dim=-1).mean(-1)
    d2 = torch.cdist(particles, particles)
    return term1 - d2.sum((-2, -1)) / (2 * n * (n - 1))


# -- shared loop -------------------------------------------------------------------------------------------
def _lr_at(step: int, total: int, lr: float, final: float) -> float:
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


def _save_checkpoint(path: Path, model, opt, gen, step: int, history: dict, meta: dict) -> None:
    from invprob.results import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "generator": gen.get_state(),
            "step": step,
            "history": history,
            "meta": meta,
            "model_config": asdict(model.config),
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class _Run:
    """The mutable state of one training run: optimiser, random stream, history, where it stands."""

    opt: torch.optim.Optimizer
    gen: torch.Generator
    history: dict[str, list]
    start: int
    end: int
    ckpt: Path | None
    elapsed0: float


def _start_run(model: RWPOTransformer, cfg, out_dir, resume: bool, stop_at: int | None) -> _Run:
    """A fresh run, or the one saved in ``out_dir/checkpoint.pt`` when ``resume``."""
    dev = model.device
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(cfg.seed) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "time_s": []}
    start = 0
    ckpt = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if resume:
        if ckpt is None or not ckpt.exists():
            raise ValueError(f"resume=True but there is no checkpoint at {ckpt}")
        state = torch.load(ckpt, map_location=dev, weights_only=False)
        if state["model_config"] != asdict(model.config):
            raise ValueError("resume: the checkpoint's model config differs from this model's")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"].cpu())
        start, history = int(state["step"]), state["history"]
    elapsed0 = history["time_s"][-1] if history["time_s"] else 0.0
    end = cfg.n_iter if stop_at is None else max(start, min(int(stop_at), cfg.n_iter))
    return _Run(opt=opt, gen=gen, history=history, start=start, end=end, ckpt=ckpt, elapsed0=elapsed0)


def _optimiser_step(model: RWPOTransformer, run: _Run, loss_fn, cfg, step: int):
    """One Adam step at the scheduled learning rate; returns the loss and its parts."""
    for gparam in run.opt.param_groups:
        gparam["lr"] = _lr_at(step, cfg.n_iter, cfg.lr, cfg.lr_final)
    run.opt.zero_grad(set_to_none=True)
    loss, parts = loss_fn(run.gen)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    run.opt.step()
    return loss, parts


def _log(run: _Run, done: int, loss: torch.Tensor, parts: dict, elapsed: float, bar) -> None:
    history = run.history
    history["step"].append(done)
    history["loss"].append(float(loss.detach()))
    for k, v in parts.items():
        history.setdefault(k, []).append(float(v.detach()))
    history["time_s"].append(run.elapsed0 + elapsed)
    if bar is not None:
        bar.set_postfix(loss=f"{history['loss'][-1]:.4g}")


def _evaluate(model: RWPOTransformer, run: _Run, eval_fn, done: int) -> None:
    model.eval()
    metrics = eval_fn()
    model.train()
    run.history["eval_step"].append(done)
    for k, v in metrics.items():
        run.history.setdefault(k, []).append(v)


def _loop(
    model: RWPOTransformer,
    loss_fn: Callable[[torch.Generator], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    eval_fn: Callable[[], dict[str, float]] | None,
    cfg,
    *,
    out_dir: str | os.PathLike | None,
    resume: bool,
    progress: bool,
    meta: dict,
    desc: str,
    stop_at: int | None = None,
) -> TrainResult:
    run = _start_run(model, cfg, out_dir, resume, stop_at)
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.n_iter, initial=run.start, desc=desc, dynamic_ncols=True)
    model.train()
    for step in range(run.start, run.end):
        loss, parts = _optimiser_step(model, run, loss_fn, cfg, step)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.n_iter:
            _log(run, done, loss, parts, time.perf_counter() - t0, bar)
        if eval_fn is not None and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.n_iter):
            _evaluate(model, run, eval_fn, done)
        if run.ckpt is not None and (
            (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done in (cfg.n_iter, run.end)
        ):
            _save_checkpoint(run.ckpt, model, run.opt, run.gen, done, run.history, meta)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    model.eval()
    if out_dir is not None:
        from invprob.results import atomic_write_json

        model.save(Path(out_dir) / "model")
        atomic_write_json(Path(out_dir) / "history.json", run.history)
    return TrainResult(model=model, history=run.history, out_dir=None if out_dir is None else Path(out_dir),
                       info=meta)


# -- generative mode ---------------------------------------------------------------------------------------
def _resolve_logdet(mode: str, dim: int, n_particles: int) -> str:
    if mode == "auto":
        if dim * n_particles <= 1024:
            return "joint"
        return "exact" if dim <= 16 else "hutchinson"
    return mode


def generative_loss(model: RWPOTransformer, target, cfg: TrainConfig, gen: torch.Generator):
    """One reverse-KL loss evaluation; returns ``(loss, parts)`` with the model's own KL estimate."""
    logdet = _resolve_logdet(cfg.logdet, model.config.dim, cfg.n_particles)
    x0, logp0 = model.base_sample(cfg.n_particles, n_sets=cfg.n_sets, generator=gen)
    out = model.flow(x0, logdet=logdet, hjb=cfg.hjb_weight > 0, n_probes=cfg.n_probes, generator=gen)
    logq = logp0 - out.logdet
    kl = (logq - target.log_prob(out.x)).mean()
    loss = kl
    parts = {"kl_model": kl}
    if cfg.hjb_weight > 0:
        loss = loss + cfg.hjb_weight * out.hjb
        parts["hjb"] = out.hjb
    return loss, parts


def evaluate_generative(model: RWPOTransformer, target, n_samples: int, n_particles: int, *, seed: int) -> dict:
    """Divergences of ``n_samples`` model samples drawn in sets of ``n_particles``.

    - ``kl_knn``: kNN KL (biased in high dimension: compare with the same statistic on exact samples);
    - ``sw1``: sliced W1 against as many exact target samples;
    - ``kl_joint`` (when ``n_particles * d <= 1024``, else NaN): the reverse KL of the joint particle law to
      ``pi^N`` per particle, from the exactly tracked density (joint change of variables) on the same sets. No
      estimator bias, only Monte Carlo error, and an upper bound on the KL of the particles' marginal law
      (``KL(P_N || pi^N) >= sum_i KL(P_i || pi)``).
    """
    gen = torch.Generator(device=model.device)
    gen.manual_seed(int(seed))
    n_sets = max(1, math.ceil(n_samples / n_particles))
    joint = n_particles * model.config.dim <= 1024
    with torch.no_grad():
        x0, logp0 = model.base_sample(n_particles, n_sets=n_sets, generator=gen)
        out = model.flow(x0, logdet="joint" if joint else "none")
    kl_joint = float((logp0 - out.logdet - target.log_prob(out.x)).mean()) if joint else float("nan")
    x = out.x.reshape(-1, model.config.dim)[:n_samples]
    if not bool(torch.isfinite(x).all()):
        return {"kl_knn": float("inf"), "sw1": float("inf"), "kl_joint": float("inf")}
    ref = target.sample(len(x), generator=torch.Generator().manual_seed(int(seed) + 1)).to(x)
    return {"kl_knn": knn_kl(x, target), "sw1": sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(0)),
            "kl_joint": kl_joint}


def train_generative(
    model: RWPOTransformer,
    target,
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
) -> TrainResult:
    """Train ``model`` to sample ``target`` (``V``, ``log_prob``, ``dim``; normalised ``log_prob`` for the KL).

    Parameters
    ----------
    model : RWPOTransformer
        Unconditioned (``cond_dim=0``), ``config.dim == target.dim``.
    target : object
        E.g. :class:`~invprob.solvers.learned.targets.SparseLaplaceTarget`.
    config : TrainConfig
        Optimisation settings.
    out_dir : path, optional
        Where ``checkpoint.pt``, ``model/`` and ``history.json`` go.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` (identical continuation).
    progress : bool
        tqdm progress bar.
    stop_at : int, optional
        Stop (with a checkpoint) after this many steps in total; the learning-rate schedule still follows
        ``config.n_iter``, so resuming later continues the same run.

    Returns
    -------
    TrainResult
        ``history`` holds ``loss``, ``kl_model`` (the tracked-density KL), ``hjb`` and, every ``eval_every``
        steps, ``kl_knn`` (sample-based, see :func:`~invprob.solvers.learned.targets.knn_kl`).
    """
    cfg = config or TrainConfig()
    if model.config.cond_dim:
        raise ValueError("model must be unconditioned (cond_dim=0) for generative training")
    if model.config.dim != target.dim:
        raise ValueError(f"model dim {model.config.dim} differs from target dim {target.dim}")

    def eval_fn():
        return evaluate_generative(model, target, cfg.eval_samples, cfg.n_particles, seed=cfg.seed + 10_000)

    meta = {"mode": "generative", "target": getattr(target, "name", type(target).__name__), "train": asdict(cfg)}
    return _loop(
        model, lambda g: generative_loss(model, target, cfg, g), eval_fn if cfg.eval_every else None, cfg,
        out_dir=out_dir, resume=resume, progress=progress, meta=meta, desc=f"rwpo {model.config.attention}",
        stop_at=stop_at,
    )


# -- amortised reconstruction ------------------------------------------------------------------------------
def reconstruction_loss(model: RWPOTransformer, problem, cfg: ReconstructionTrainConfig, gen: torch.Generator):
    x, y = problem.simulate(cfg.batch_size, generator=gen)
    x, y = x.to(model.device), y.to(model.device)
    x0, _ = model.base_sample(cfg.n_particles, y, generator=gen)
    out = model.flow(x0, y, hjb=cfg.hjb_weight > 0, generator=gen)
    score = crps_loss(out.x, x) if cfg.loss == "crps" else energy_score(out.x, x)
    loss = score.mean()
    parts = {"score": loss.detach()}
    if cfg.hjb_weight > 0:
        loss = loss + cfg.hjb_weight * out.hjb
        parts["hjb"] = out.hjb
    return loss, parts


def evaluate_reconstruction(model: RWPOTransformer, x: torch.Tensor, y: torch.Tensor, n_particles: int, *, seed: int):
    """Relative L1 error of the particle mean, CRPS and mean std on held-out pairs ``x`` ``(B, d)``, ``y``."""
    gen = torch.Generator(device=model.device)
    gen.manual_seed(int(seed))
    xs = model.sample(n_particles, y.to(model.device), generator=gen)
    mean = xs.mean(-2)
    rel = ((mean - x).abs().sum(-1) / x.abs().sum(-1).clamp_min(1e-12)).mean()
    return {
        "rel_l1": float(rel),
        "crps": float(crps_loss(xs, x).mean()),
        "mean_std": float(xs.std(-2).mean()),
    }


def train_reconstruction(
    model: RWPOTransformer,
    problem,
    config: ReconstructionTrainConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
) -> TrainResult:
    """Amortised training of a conditioned ``model`` on pairs from ``problem.simulate(n, generator=...)``.

    ``problem`` returns ``(x, y)`` with ``x`` ``(n, model.config.dim)`` and ``y`` ``(n, model.config.cond_dim)``
    (e.g. :class:`~invprob.solvers.learned.targets.SparseLinearProblem`). The held-out evaluation set is drawn
    once from a generator seeded ``seed + 20000``. Other arguments as in :func:`train_generative`.
    """
    cfg = config or ReconstructionTrainConfig()
    if model.config.cond_dim == 0:
        raise ValueError("model must be conditioned (cond_dim > 0) for reconstruction training")
    gen_eval = torch.Generator(device=model.device)
    gen_eval.manual_seed(int(cfg.seed) + 20_000)
    x_ev, y_ev = problem.simulate(cfg.eval_sets, generator=gen_eval)
    x_ev, y_ev = x_ev.to(model.device), y_ev.to(model.device)

    def eval_fn():
        return evaluate_reconstruction(model, x_ev, y_ev, cfg.n_particles, seed=cfg.seed + 10_000)

    meta = {"mode": "reconstruction", "problem": type(problem).__name__, "train": asdict(cfg)}
    return _loop(
        model, lambda g: reconstruction_loss(model, problem, cfg, g), eval_fn if cfg.eval_every else None, cfg,
        out_dir=out_dir, resume=resume, progress=progress, meta=meta, desc=f"rwpo-rec {model.config.attention}",
        stop_at=stop_at,
    )


# -- config files ------------------------------------------------------------------------------------------
def _make_problem(spec: dict):
    spec = dict(spec)
    name = spec.pop("name", "sparse_linear")
    if name == "sparse_linear":
        return SparseLinearProblem(**spec)
    if name == "eit":
        from invprob.solvers.learned.eit_problem import EITPhantomProblem

        return EITPhantomProblem(**spec)
    raise ValueError(f"problem name must be 'sparse_linear' or 'eit', got {name!r}")


def _read_spec(path: Path, seed: int | None) -> dict:
    """The JSON config at ``path`` (with the training seed replaced by ``seed`` when given)."""
    if not path.exists():
        raise ValueError(f"config file not found: {path}")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"config file {path} is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not a text (JSON) file") from None
    if not isinstance(spec, dict):
        raise ValueError(f"config file {path} must hold a JSON object, got a {type(spec).__name__}")
    unknown = set(spec) - {"mode", "model", "training", "target", "problem", "comment", "description"}
    if unknown:
        raise ValueError(f"unknown config key(s) in {path}: {sorted(unknown)} (known: mode, model, training, "
                         "target, problem)")
    for key in ("model", "training", "target", "problem"):
        if key in spec and not isinstance(spec[key], dict):
            raise ValueError(f"config file {path}: {key!r} must be an object")
    if seed is not None:
        if not isinstance(spec.get("training", {}), dict):
            raise ValueError(f"config file {path}: 'training' must be an object")
        spec.setdefault("training", {})["seed"] = int(seed)
    return spec


def _generative_runner(spec: dict, dev: torch.device, **run_kw) -> Callable[[], TrainResult]:
    model_spec = dict(spec.get("model", {}))
    tspec = dict(spec.get("target", {}))
    name = tspec.pop("name", "sparse_laplace")
    dim = int(tspec.pop("dim", model_spec.get("dim", 2)))
    target = make_target(name, dim, **tspec)
    model_spec["dim"] = dim
    if name == "sparse_laplace" and "lambda_" not in model_spec:
        model_spec = {**model_spec, "lambda_": target.lambda_}
    cfg = _dataclass_from(TrainConfig, dict(spec.get("training", {})), "training")
    torch.manual_seed(cfg.seed)
    model = RWPOTransformer(RWPOConfig.from_dict(model_spec)).to(dev)
    return lambda: train_generative(model, target, cfg, **run_kw)


def _reconstruction_runner(spec: dict, dev: torch.device, **run_kw) -> Callable[[], TrainResult]:
    model_spec = dict(spec.get("model", {}))
    problem = _make_problem(spec.get("problem", {}))
    model_spec["dim"] = problem.dim
    model_spec["cond_dim"] = problem.n_meas
    cfg = _dataclass_from(ReconstructionTrainConfig, dict(spec.get("training", {})), "training")
    torch.manual_seed(cfg.seed)
    model = RWPOTransformer(RWPOConfig.from_dict(model_spec)).to(dev)
    return lambda: train_reconstruction(model, problem, cfg, **run_kw)


def train_from_config(
    path: str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device = "auto",
    force: bool = False,
    seed: int | None = None,
) -> TrainResult:
    """Train from a JSON config file (the entry point of ``invprob train rwpo --config FILE``).

    The file holds ``mode`` (``"generative"`` or ``"reconstruction"``), ``model`` (:class:`RWPOConfig`
    fields; ``dim`` / ``cond_dim`` are filled from the target or problem), ``training`` (:class:`TrainConfig`
    or :class:`ReconstructionTrainConfig` fields) and ``target`` (``{"name": "sparse_laplace" |
    "gaussian_mixture", "dim": ..., ...}``) or ``problem`` (``{"name": "sparse_linear", ...}``, or
    ``{"name": "eit", "h": 0.075, ...}`` which needs DOLFINx: see
    :class:`~invprob.solvers.learned.eit_problem.EITPhantomProblem`).
    See ``examples/configs/rwpo_*.json``.

    Parameters
    ----------
    path : path
        The JSON config file.
    out_dir : path
        Receives ``config.json`` (a copy of the config as run), ``checkpoint.pt``, ``model/`` and
        ``history.json``. One that already holds a checkpoint is refused unless ``resume`` or ``force``.
    resume, progress
        As in :func:`train_generative`.
    device : str or torch.device
        Where to train (:func:`invprob.devices.resolve_device`: ``"auto"`` is CUDA when available).
    force : bool
        Start afresh over an existing checkpoint.
    seed : int, optional
        Replaces the config's ``training.seed``.

    Returns
    -------
    TrainResult
        As returned by :func:`train_generative` or :func:`train_reconstruction`.
    """
    path = Path(path)
    spec = _read_spec(path, seed)
    out_dir = Path(out_dir)
    if (out_dir / "checkpoint.pt").exists() and not (resume or force):
        raise ValueError(
            f"out_dir {out_dir} already holds a checkpoint: pass resume=True (--resume) or force=True (--force)"
        )
    if resume and not (out_dir / "checkpoint.pt").exists():
        raise ValueError(f"nothing to resume: {out_dir} holds no checkpoint.pt")
    dev = resolve_device(device)
    mode = spec.get("mode", "generative")
    builders = {"generative": _generative_runner, "reconstruction": _reconstruction_runner}
    if mode not in builders:
        raise ValueError(f"mode must be 'generative' or 'reconstruction', got {mode!r}")
    runner = builders[mode](spec, dev, out_dir=out_dir, resume=resume, progress=progress)
    from invprob.results import atomic_write_json

    atomic_write_json(out_dir / "config.json", spec)
    return runner()


def _dataclass_from(cls, d: dict, what: str):
    if "steps" in d and "n_iter" in cls.__dataclass_fields__:  # the old name of n_iter in config files
        if "n_iter" in d:
            raise ValueError(f"{what} config: give n_iter or its old name steps, not both")
        d = {("n_iter" if k == "steps" else k): v for k, v in d.items()}
    unknown = set(d) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown {what} config key(s): {sorted(unknown)}")
    return cls(**d)

