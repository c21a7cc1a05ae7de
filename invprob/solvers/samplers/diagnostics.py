"""Convergence diagnostics of a published mean and std map, from independent chain groups.

The chains of a run are dealt into ``G`` groups (chain ``i`` -> group ``i % G``) and their states are summed per
group in blocks of iterations (:class:`ChainBlocks`, float64 sums centred on a reference image). The first half
of the blocks is burn-in; the kept half is cut into its two halves, so the kept states form ``S = 2G`` *splits*
(group x half). From the per-split moments (with zero-variance control variates when the sampler supplies
``g = P grad V`` and ``diag(P)/beta``):

- **split-R-hat** per pixel (Gelman et al. 2013, ch. 11): ``sqrt(((n-1)/n W + B/n) / W)`` with ``W`` the mean
  within-split variance and ``B/n`` the variance of the split means;
- **effective sample size** per pixel, by batch means over the splits: ``ESS = S W / Var_s(m_s)``;
- **Monte-Carlo standard error of the std map**: ``sd_g(std_g) / sqrt(G)`` over the ``G`` independent groups
  (halves of one chain are not independent: measured, their spread understates the error about 1.5-fold),
  relative to the pooled std, its median over pixels divided by the median of ``sqrt(chi^2_{G-1}/(G-1))`` so
  that it estimates the median error rather than understating it with few groups;
- **drift between the two halves**: the median over pixels of ``(std_second - std_first) / std`` (a chain that is
  still spreading out from a collapsed start, or still contracting from an overdispersed one, shows here even
  when every group is equally wrong, which R-hat cannot see);
- **mean trend**: the median over pixels of ``|t|``, the t-statistic over the groups of the change of the mean
  from the first to the second half (chains that all still travel the same way);
- **mean error**: the root-mean-square over pixels of the posterior mean's Monte-Carlo standard error (from the
  spread of the ``G`` group means), relative to the mean's dynamic range (its max - min; the median std when the
  mean is flat). The std target alone does not bound it: on a diffuse posterior (std 0.2 of the range) a 5 % std
  error leaves the mean at about 33 dB (measured);
- **std-map pattern**: the correlation that the published std map, smoothed by a Gaussian of 2 px, is expected to
  have with the converged one, ``sqrt(S / (S + N))`` with ``N`` the Monte-Carlo variance of the smoothed map (from
  the group maps) and ``S`` its spatial variance less ``N``. A map with no pattern above its noise (``S < N/4``)
  passes once ``sqrt(N)`` is under 1 % of its level (a flat map: its pattern is its level). A map with a faint
  pattern (1-2 % of its level) must resolve it: under a looser flat-map rule (any map flat to 2 %) suite case c02
  passed at 1 % noise with a measured correlation of 0.80. The median std error alone does not bound this
  either: measured 0.60 at a 4.6 % median error on that map.

:class:`DiagnosticsTargets` holds the thresholds; :meth:`ConvergenceDiagnostics.status` turns the figures into
the run's ``calibration_status`` ("converged: ..." only when every check passes, else "not converged: ..." in plain
words). What these checks cannot see is said in :data:`BLIND_SPOT`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from invprob._checks import check_positive

__all__ = ["BLIND_SPOT", "ChainBlocks", "ConvergenceDiagnostics", "DiagnosticsTargets", "coarse_view", "detail_view",
           "split_moments"]

#: What a convergence check of the chains cannot see (said in every status string).
BLIND_SPOT = ("checks the Monte-Carlo convergence of the chains, not the bias of the sampled law (Langevin step, "
              "smoothing of the prior); chains that all start near the MAP could still agree before they have "
              "explored modes slower and coarser than these checks see (on invprob's 12-posterior calibration suite "
              "none was labelled converged while wrong; before the mean-error, std-pattern and 8x8-pixel-scale "
              "checks, 4 were)")

_QUANTILE_CAP = 1 << 24  # torch.quantile refuses larger inputs
#: Event size (values) above which :class:`ChainBlocks` sums in float32 (bounded memory on large images).
LARGE_EVENT = 1 << 20
#: Event size above which the chains' callers pass a :func:`detail_view`: the full-resolution block sums are then
#: pooled over the groups (they serve the published moments only) and the per-group sums that the diagnostics need
#: are kept on a central window of at most :data:`DETAIL_VALUES` values of the published frame. At 2048 x 2048 this
#: stores one event-sized sum per term and block instead of one per group (4x less) and runs the diagnostics'
#: temporaries on 1/16 of the pixels.
POOLED_EVENT = 1 << 21
DETAIL_VALUES = 1 << 18


@dataclass(frozen=True)
class DiagnosticsTargets:
    """Thresholds of the convergence checks.

    std_mcse : float
        Largest median relative Monte-Carlo standard error of the std map (default 5 %).
    rhat : float
        Largest 99th percentile of the per-pixel split-R-hat of the mean. With ``S = 8`` splits the 99th percentile
        of ``R^2 - 1`` is about ``2.6 / ESS_split``, so 1.2 asks for an ESS of about 60 in the worst 1 % of pixels;
        the median pixel is held by the std target.
    drift : float
        Largest ``|median (std_second_half - std_first_half) / std|``.
    min_ess : float
        Smallest 1st percentile of the per-pixel effective sample size of the mean.
    trend : float
        Largest median over pixels of ``|t|``, the t-statistic over the chain groups of the change of the mean from
        the first to the second half of the kept window: chains that all still travel the same way (started in
        one place, far from the posterior mean, and mixing slowly) have a consistent change however small it is
        against the std. Stationary chains give ``|t|`` of a Student t with ``G - 1`` degrees of freedom (median
        0.77 for ``G = 4``).
    mean_error : float
        Largest RMS Monte-Carlo error of the mean relative to its dynamic range (default 1 %: 40 dB).
    pattern_corr : float
        Smallest expected correlation of the 2-px-smoothed std map with the converged one (images only).
    """

    std_mcse: float = 0.05
    rhat: float = 1.2
    drift: float = 0.03
    min_ess: float = 10.0
    trend: float = 1.2
    mean_error: float = 0.01
    pattern_corr: float = 0.9

    def __post_init__(self):
        check_positive("std_mcse", self.std_mcse)
        if not self.rhat > 1:
            raise ValueError(f"rhat target must exceed 1, got {self.rhat!r}")
        check_positive("drift", self.drift)
        check_positive("min_ess", self.min_ess)
        check_positive("trend", self.trend)
        check_positive("mean_error", self.mean_error)
        if not 0 <= self.pattern_corr < 1:
            raise ValueError(f"pattern_corr must be in [0, 1), got {self.pattern_corr!r}")


@dataclass(frozen=True)
class ConvergenceDiagnostics:
    """The figures of one check (all medians/quantiles over pixels) and what failed, in plain words."""

    n_groups: int
    n_splits: int
    kept_iterations: int
    burn_in_iterations: int
    rhat_median: float
    rhat_q99: float
    ess_median: float
    ess_q01: float
    std_mcse: float
    mean_mcse: float
    drift: float
    trend: float
    mean_error: float
    pattern_corr: float
    failed: tuple[str, ...]
    targets: DiagnosticsTargets
    coarse: dict | None = None

    @property
    def converged(self) -> bool:
        return not self.failed

    def status(self) -> str:
        """``"converged: ..."`` with the figures when every check passed, else ``"not converged: <what failed>"``."""
        figures = (f"std Monte-Carlo error {100 * self.std_mcse:.1f} % (target {100 * self.targets.std_mcse:.0f} %), "
                   f"split-R-hat q99 {self.rhat_q99:.3f}, ESS q01 {self.ess_q01:.0f}, half-to-half std drift "
                   f"{100 * self.drift:+.1f} %, mean trend |t| {self.trend:.2f}, mean error "
                   f"{100 * self.mean_error:.2f} % of its range, expected std-map pattern corr "
                   f"{self.pattern_corr:.2f}, {self.n_groups} chain groups x {self.kept_iterations} kept iterations")
        if self.converged:
            return f"converged: {figures}; {BLIND_SPOT}"
        return f"not converged: {'; '.join(self.failed)} ({figures}); do not trust the std map as calibrated"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["failed"] = list(self.failed)
        d["converged"] = self.converged
        return d


class ChainBlocks:
    """Per-group block sums of the chain states (and, with control variates, of ``g`` and ``z g``).

    Parameters
    ----------
    n_chains, n_groups : int
        Chains in the batch and groups they are dealt into (``min(n_groups, n_chains)`` are used).
    block_len : int
        Iterations per block; when ``max_blocks`` (even, >= 8) blocks are complete, neighbours are merged in pairs
        and ``block_len`` doubles, so every block has the same length and memory stays bounded (``max_blocks`` x
        groups x 5 event-sized float64 arrays).
    center : torch.Tensor
        ``(1, *event)``: the sums are of ``z - center`` (fewer cancellations in float64).
    control_variates : bool
        Also sum ``g``, ``g^2`` and ``z g`` (``update`` then needs ``g``).
    discard_burn_in : bool
        Treat the first half of the blocks as burn-in (True), or keep every block (the caller already discarded
        its burn-in).
    coarse : callable or None
        A coarse view of the states (e.g. :func:`coarse_view`: 8x8-pixel block means of the published frame),
        summed in its own :attr:`coarse_blocks` (plain moments) so that :func:`diagnose` also checks the slow,
        large-scale modes.
    detail : callable or None
        A central window of the published frame (:func:`detail_view`, large events only). With it the blocks store
        full-resolution sums pooled over the groups (for the published moments) and :attr:`detail_blocks` the
        per-group sums of the window (for the diagnostics), with the same block schedule.
    max_bytes : int
        Memory budget of the stored blocks. Events of more than :data:`LARGE_EVENT` values (images above about
        1024 x 1024) are summed in float32 (the sums are of states centred on ``center``, so float32 keeps about
        six digits of the variances), and ``max_blocks`` is lowered (to 8 at least) so that the blocks fit the
        budget: at 2048 x 2048 with control variates and four groups one float32 block is about 350 MB, against
        1.4 GB for 16 float64 blocks at 1024 x 1024 before.
    """

    def __init__(self, n_chains: int, n_groups: int, block_len: int, center: torch.Tensor, *,
                 control_variates: bool = False, max_blocks: int = 16, discard_burn_in: bool = True,
                 coarse=None, detail=None, max_bytes: int = 1 << 30):
        if n_chains < 1 or n_groups < 1 or block_len < 1 or max_blocks < 8 or max_blocks % 2:
            raise ValueError("n_chains, n_groups, block_len must be >= 1 and max_blocks even and >= 8")
        self.n_groups = min(n_groups, n_chains)
        stored_groups = 1 if detail is not None else self.n_groups  # pooled full-resolution sums with a detail
        self.gid = torch.arange(n_chains, device=center.device) % stored_groups
        self.group_size = torch.bincount(self.gid, minlength=stored_groups).double()
        self.n_sums = 5 if control_variates else 2
        numel = center[0].numel()
        self.dtype = torch.float32 if numel > LARGE_EVENT else torch.float64
        per_block = self.n_sums * stored_groups * numel * (4 if self.dtype == torch.float32 else 8)
        fits = 2 * (int(max_bytes) // max(per_block, 1) // 2)
        self.block_len, self.max_blocks = int(block_len), max(8, min(int(max_blocks), fits))
        self.center = center.detach().to(self.dtype)
        self.blocks: list[tuple[int, torch.Tensor]] = []  # (iterations, sums (n_sums, G, *event))
        self._open: torch.Tensor | None = None
        self._open_iters = 0
        self.discard_burn_in = bool(discard_burn_in)
        self.coarse = coarse
        self.coarse_blocks = None if coarse is None else ChainBlocks(
            n_chains, n_groups, block_len, coarse(center), max_blocks=max_blocks, discard_burn_in=discard_burn_in)
        self.detail = detail
        self.detail_blocks = None if detail is None else ChainBlocks(
            n_chains, n_groups, block_len, detail(center), control_variates=control_variates,
            max_blocks=self.max_blocks, discard_burn_in=discard_burn_in, max_bytes=1 << 62)

    @property
    def iterations(self) -> int:
        """Iterations summed in complete blocks."""
        return sum(n for n, _ in self.blocks)

    @property
    def open_iterations(self) -> int:
        """Iterations summed in the block not yet complete."""
        return self._open_iters

    def update(self, z: torch.Tensor, g: torch.Tensor | None = None) -> None:
        """Add one iteration's states ``z`` (``(n_chains, *event)``) and, with control variates, ``g``."""
        if self.coarse_blocks is not None:
            self.coarse_blocks.update(self.coarse(z.detach()))
        if self.detail_blocks is not None:
            self.detail_blocks.update(self.detail(z.detach()), None if g is None else self.detail(g.detach()))
        if self.n_sums == 5 and g is None:
            raise ValueError("ChainBlocks with control variates needs g")
        if self._open is None:
            self._open = torch.zeros((self.n_sums, self.group_size.shape[0], *z.shape[1:]), dtype=self.dtype,
                                     device=z.device)
        if self.center[0].numel() > LARGE_EVENT:
            self._add_each_chain(z.detach(), None if g is None else g.detach())
        else:
            zc = z.detach().to(self.dtype) - self.center
            terms = [zc, zc * zc]
            if self.n_sums == 5:
                gd = g.detach().to(self.dtype)
                terms += [gd, gd * gd, zc * gd]
            for k, v in enumerate(terms):
                self._open[k].index_add_(0, self.gid, v)
        self._open_iters += 1
        if self._open_iters == self.block_len:
            self.blocks.append((self._open_iters, self._open))
            self._open, self._open_iters = None, 0
            if len(self.blocks) == self.max_blocks:
                self._merge()

    def _add_each_chain(self, z: torch.Tensor, g: torch.Tensor | None) -> None:
        """The sums of :meth:`update` a chain at a time, in place (large events: the batched form held five
        batch-sized products at once, about 650 MB at 2048^2 with 8 chains; this holds two images)."""
        for i, gi in enumerate(self.gid.tolist()):
            sums = self._open[:, gi]
            zc = torch.sub(z[i].to(self.dtype), self.center[0])
            sums[0].add_(zc)
            sums[1].addcmul_(zc, zc)
            if g is not None:
                gd = g[i].to(self.dtype)
                sums[2].add_(gd)
                sums[3].addcmul_(gd, gd)
                sums[4].addcmul_(zc, gd)

    def shorten(self, block_len: int) -> None:
        """Shorten the blocks to ``block_len`` iterations before the first one is complete (a slow chain under a
        time limit: four blocks must fit in it); the open block closes at once if it is already that long."""
        if self.blocks:
            raise ValueError("the block length can only change before the first block is complete")
        self.block_len = max(1, min(self.block_len, int(block_len)))
        if self._open is not None and self._open_iters >= self.block_len:
            self.blocks.append((self._open_iters, self._open))
            self._open, self._open_iters = None, 0
        for sub in (self.coarse_blocks, self.detail_blocks):
            if sub is not None:
                sub.shorten(block_len)

    def _merge(self) -> None:
        self.blocks = [(n1 + n2, s1 + s2) for (n1, s1), (n2, s2) in zip(self.blocks[0::2], self.blocks[1::2],
                                                                         strict=True)]
        self.block_len *= 2

    def ready(self) -> bool:
        """Enough complete blocks for two kept halves (four, or two without burn-in)."""
        return len(self.blocks) >= (4 if self.discard_burn_in else 2)

    def split_sums(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """The kept window's sums per split ``(n_sums, 2G, *event)``, states per split ``(2G,)``, kept and burn-in
        iterations. The window is the last half of the blocks, cut into two halves of whole blocks."""
        if not self.ready():
            raise ValueError("not enough complete blocks for diagnostics")
        k = len(self.blocks)
        kept = self.blocks[k - k // 2:] if self.discard_burn_in else self.blocks
        half = len(kept) // 2
        parts = (kept[: len(kept) - half], kept[len(kept) - half:])
        sums, counts = [], []
        for part in parts:
            sums.append(sum(s for _, s in part))
            counts.append(sum(n for n, _ in part) * self.group_size)
        n_kept = sum(n for n, _ in kept)
        return torch.cat(sums, dim=1), torch.cat(counts).to(self.dtype), n_kept, self.iterations - n_kept


def split_moments(sums: torch.Tensor, counts: torch.Tensor, p_over_beta: torch.Tensor | None):
    """Per-split mean (relative to the blocks' centre) and variance, and the control-variate coefficient.

    Plain moments from ``(z, z^2)`` sums; with control variates (5 sums and ``p_over_beta = diag(P)/beta``, an
    event-shaped tensor or a scalar): ``m = mean(z) - a mean(g)``, ``v = var(z) - a (cov(z, g) - diag(P)/beta)``
    with ``a = cov(z, g) / var(g)`` pooled over the splits, clamped to [0, 2] (identities ``E[g] = 0`` and
    ``E[(z - m) g] = diag(P)/beta`` of the exact target).
    """
    n = counts.reshape(-1, *([1] * (sums.ndim - 2)))
    mz, mzz = sums[0] / n, sums[1] / n
    var_z = mzz - mz * mz
    if p_over_beta is None or sums.shape[0] < 5:
        return mz, var_z, None
    mg, mzg = sums[2] / n, sums[4] / n
    if torch.is_tensor(p_over_beta):
        p_over_beta = p_over_beta.to(sums.dtype)
    tot = counts.sum()
    pm_g, pm_z = sums[2].sum(0) / tot, sums[0].sum(0) / tot
    pooled_var_g = sums[3].sum(0) / tot - pm_g * pm_g
    pooled_cov = sums[4].sum(0) / tot - pm_z * pm_g
    a = (pooled_cov / _floor(pooled_var_g)).clamp(0.0, 2.0)
    m = mz - a * mg
    v = var_z - a * ((mzg - mz * mg) - p_over_beta)
    return m, v, a


def pooled(m: torch.Tensor, v: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixture mean and variance of the splits (weighted by their states)."""
    w = (counts / counts.sum()).reshape(-1, *([1] * (m.ndim - 1)))
    mean = (w * m).sum(0)
    var = (w * v).sum(0) + (w * (m - mean) ** 2).sum(0)
    return mean, var


#: The checks repeated on the coarse view (8x8-pixel block means): the slowest modes of an image posterior are
#: its large scales, and the chains' shared start shows there first. Measured on suite case c12 (256^2 texture,
#: motion blur): every pixel-scale check passed after 20 iterations while the mean was at 35 dB and the lowest
#: band's variance 33 % short.
COARSE_CHECKS = ("std_mcse", "rhat", "drift", "trend")
COARSE_FACTOR = 8


def coarse_view(published, event_shape: tuple[int, ...], factor: int = COARSE_FACTOR):
    """``z -> factor x factor`` block means of ``published(z)`` for image events ``(C, H, W)`` whose published
    frame is at least ``8 factor`` pixels a side (at least 8 x 8 block means, so that the medians over them are
    not noise); None otherwise. A volume event ``(C, D, H, W)`` is pooled plane by plane (``factor x factor``
    blocks of every z plane, no pooling along z), under the same rule on ``H`` and ``W``."""
    if len(event_shape) < 3:
        return None
    probe = published(torch.zeros((1, *event_shape)))
    if min(probe.shape[-2:]) < 8 * factor:
        return None

    def view(z: torch.Tensor) -> torch.Tensor:
        x = published(z)
        lead = x.shape[:-2]
        pooled_ = torch.nn.functional.avg_pool2d(x.reshape(-1, 1, *x.shape[-2:]), factor)
        return pooled_.reshape(*lead, *pooled_.shape[-2:])

    return view


def detail_view(published, event_shape: tuple[int, ...], *, max_values: int = DETAIL_VALUES):
    """``z -> central window of published(z)`` of at most ``max_values`` values (whole leading axes, a central
    square of the last two), for events of more than :data:`POOLED_EVENT` values; None for smaller events or
    events with fewer than two spatial axes (they keep per-group sums of the whole state)."""
    if len(event_shape) < 3 or math.prod(event_shape) <= POOLED_EVENT:
        return None
    probe = published(torch.zeros((1, *event_shape)))
    lead, (H, W) = math.prod(probe.shape[1:-2]), probe.shape[-2:]
    side = max(16, math.isqrt(max_values // max(lead, 1)))
    h, w = min(H, side), min(W, side)
    i, j = (H - h) // 2, (W - w) // 2

    def view(z: torch.Tensor) -> torch.Tensor:
        return published(z)[..., i:i + h, j:j + w]

    return view


def diagnose(blocks: ChainBlocks, targets: DiagnosticsTargets, p_over_beta: torch.Tensor | None = None, *,
             view=None):
    """``(mean, var, coef, ConvergenceDiagnostics)`` of a :class:`ChainBlocks` kept window. ``view`` (e.g. a
    potential's ``published``) picks the part of the state the figures are measured on; mean and var are whole.
    Blocks with a :func:`detail_view` measure the figures on their window (``view`` is then already applied)."""
    if blocks.detail_blocks is not None:
        return _diagnose_pooled(blocks, targets, p_over_beta)
    sums, counts, n_kept, n_burn = blocks.split_sums()
    m, v, a = split_moments(sums, counts, p_over_beta)
    mean_all, var_all = pooled(m, v, counts)
    if view is not None:
        m, v = view(m), view(v)
    mean, var = pooled(m, v, counts)
    n_splits = m.shape[0]
    W = _floor(v.mean(0))
    between = m.var(0, unbiased=True)  # = B / n
    n_states = float(counts.mean())
    rhat = (((n_states - 1) / n_states) * W + between).div(W).clamp_min(0).sqrt()
    ess = n_splits * W / _floor(between)
    std = var.clamp_min(0).sqrt()
    scale = _floor(std)
    g_mean, g_std = _group_moments(m, v, counts)
    std_mcse = g_std.std(0, unbiased=True) / math.sqrt(g_std.shape[0]) / scale  # sd_g(std_g) / sqrt(G)
    mean_mcse = (between / n_splits).sqrt() / scale
    h1, h2 = _half_std(m, v, counts)
    drift = (h2 - h1) / scale
    q = _quantiles
    n_groups = n_splits // 2
    center = blocks.center[0] if view is None else view(blocks.center[0])
    figures = {"mean_error": _mean_error(g_mean, mean + center, std), "pattern_corr": _pattern_corr(g_std),
               "rhat_median": q(rhat, 0.5), "rhat_q99": q(rhat, 0.99), "ess_median": q(ess, 0.5),
               "ess_q01": q(ess, 0.01), "std_mcse": q(std_mcse, 0.5) / _chi_median(n_groups - 1),
               "mean_mcse": q(mean_mcse, 0.5),
               "drift": q(drift, 0.5), "trend": q(_mean_trend(m), 0.5)}
    diag = ConvergenceDiagnostics(n_groups=n_splits // 2, n_splits=n_splits, kept_iterations=n_kept,
                                  burn_in_iterations=n_burn, failed=_failures(figures, targets), targets=targets,
                                  **figures)
    return mean_all + blocks.center[0], var_all, a, _with_coarse(blocks, targets, diag)


def _with_coarse(blocks: ChainBlocks, targets: DiagnosticsTargets, diag: ConvergenceDiagnostics):
    """``diag`` with the checks of the coarse view (:data:`COARSE_CHECKS`) added, when the blocks have one."""
    if blocks.coarse_blocks is None or not blocks.coarse_blocks.ready():
        return diag
    coarse = diagnose(blocks.coarse_blocks, targets)[3]
    coarse_failed = _failures(vars(coarse), targets, COARSE_CHECKS)
    failed = diag.failed + tuple(f"at the {COARSE_FACTOR}x{COARSE_FACTOR}-pixel scale, {f}" for f in coarse_failed)
    return replace(diag, failed=failed,
                   coarse={k: getattr(coarse, k) for k in ("std_mcse", "rhat_q99", "drift", "trend", "ess_q01")})


def _diagnose_pooled(blocks: ChainBlocks, targets: DiagnosticsTargets, p_over_beta):
    """:func:`diagnose` of blocks with a detail window: the figures from the window's per-group sums, the
    published moments from the pooled full-resolution sums (control-variate coefficient pooled as before; the two
    halves of the kept window are its splits)."""
    p_detail = p_over_beta
    if torch.is_tensor(p_over_beta) and p_over_beta.ndim:
        p_detail = blocks.detail(p_over_beta[None])[0]
    fine = diagnose(blocks.detail_blocks, targets, p_detail)[3]
    sums, counts, n_kept, n_burn = blocks.split_sums()
    m, v, a = split_moments(sums, counts, p_over_beta)
    mean_all, var_all = pooled(m, v, counts)
    if (n_kept, n_burn) != (fine.kept_iterations, fine.burn_in_iterations):
        raise RuntimeError("detail and full-resolution blocks out of step")  # same schedule by construction
    return mean_all + blocks.center[0], var_all, a, _with_coarse(blocks, targets, fine)


def _floor(t: torch.Tensor) -> torch.Tensor:
    """``t`` clamped away from zero: at 1e-300 in float64, at the smallest normal number in float32 (large
    images' block sums)."""
    return t.clamp_min(1e-300 if t.dtype == torch.float64 else torch.finfo(t.dtype).tiny)


def _mean_trend(m):
    """Per pixel ``|t|`` of the groups' half-to-half mean changes ``m[k + G] - m[k]`` (``nan``-free)."""
    g = m.shape[0] // 2
    d = m[g:] - m[:g]
    if g < 2:
        return torch.zeros_like(d[0])
    return (d.mean(0).abs() * math.sqrt(g) / _floor(d.std(0, unbiased=True)))


def _group_moments(m, v, counts):
    """Each group's mean and std (its two halves pooled), stacked ``(G, *event)``."""
    g = m.shape[0] // 2
    means, stds = [], []
    for k in range(g):
        idx = [k, k + g]
        mk, vk = pooled(m[idx], v[idx], counts[idx])
        means.append(mk)
        stds.append(vk.clamp_min(0).sqrt())
    return torch.stack(means), torch.stack(stds)


def _mean_error(g_mean, mean, std) -> float:
    """RMS over pixels of ``sd_g(mean_g) / sqrt(G)``, over the mean's range (the median std if that is larger)."""
    g = g_mean.shape[0]
    if g < 2:
        return math.inf
    scale = max(float(mean.max() - mean.min()), _quantiles(std, 0.5), 1e-300)
    return float((g_mean.var(0, unbiased=True) / g).mean().sqrt()) / scale


def _pattern_corr(g_std, sigma: float = 2.0) -> float:
    """Expected correlation ``sqrt(S / (S + N))`` of the smoothed pooled std map with the converged one; 1 for a
    map with no pattern above its noise (``S < N / 4``) whose smoothed Monte-Carlo noise is under 1 % of its level.
    Event shapes ``(..., H, W)`` with ``H, W`` over ``6 sigma`` are smoothed, others compared pixel by pixel."""
    from invprob.solvers.samplers.uncertainty import gaussian_smooth

    g = g_std.shape[0]
    if g < 2:
        return 0.0
    if g_std.ndim >= 3 and min(g_std.shape[-2:]) > 6 * sigma + 1:
        g_std = gaussian_smooth(g_std, sigma).reshape(g_std.shape)
    noise = float((g_std.var(0, unbiased=True) / g).mean())
    pooled_map = g_std.mean(0)
    level = float(pooled_map.mean())
    signal = max(float(pooled_map.var()) - noise, 0.0)
    if signal < 0.25 * noise and math.sqrt(noise) <= 0.01 * level:
        return 1.0  # no pattern above the noise, which is under 1 % of the level: a flat map, its level resolved
    return math.sqrt(signal / (signal + noise)) if signal + noise > 0 else 1.0


def _chi_median(dof: int) -> float:
    """Median of ``sqrt(chi^2_dof / dof)`` (Wilson-Hilferty), the median of a sample sd over the true sd."""
    if dof < 1:
        return 1.0
    c = 1 - 2 / (9 * dof)
    return math.sqrt(max(c, 1e-3) ** 3)


def _half_std(m, v, counts):
    """Pooled std of the first and of the second half of the kept window (splits ``[:G]`` and ``[G:]``)."""
    g = m.shape[0] // 2
    return (pooled(m[:g], v[:g], counts[:g])[1].clamp_min(0).sqrt(),
            pooled(m[g:], v[g:], counts[g:])[1].clamp_min(0).sqrt())


def _quantiles(t: torch.Tensor, p: float) -> float:
    flat = t.flatten()
    if flat.numel() > _QUANTILE_CAP:
        flat = flat[:: math.ceil(flat.numel() / _QUANTILE_CAP)]
    return float(torch.quantile(flat.double(), p))


def _failures(f: dict, t: DiagnosticsTargets, checks: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The failed checks in plain words (``checks``: only these, by figure name; None: all)."""
    every = _failure_sentences(f, t)
    return tuple(text for name, text in every if checks is None or name in checks)


def _failure_sentences(f: dict, t: DiagnosticsTargets) -> list[tuple[str, str]]:
    out = []
    if not f["std_mcse"] <= t.std_mcse:
        out.append(("std_mcse", f"the std map's Monte-Carlo error is {100 * f['std_mcse']:.1f} % "
                                f"(target {100 * t.std_mcse:.0f} %)"))
    if not f["rhat_q99"] <= t.rhat:
        out.append(("rhat", f"the chain groups disagree (split-R-hat q99 {f['rhat_q99']:.3f} > {t.rhat})"))
    if not abs(f["drift"]) <= t.drift:
        way = "growing" if f["drift"] > 0 else "shrinking"
        out.append(("drift", f"the std is still {way} between the two halves of the kept chains "
                             f"({100 * f['drift']:+.1f} %)"))
    if not f["trend"] <= t.trend:
        out.append(("trend", f"the chains' mean is still moving the same way in every group (median |t| "
                             f"{f['trend']:.2f} > {t.trend}): they have not yet left where they started"))
    if not f["mean_error"] <= t.mean_error:
        out.append(("mean_error", f"the posterior mean's Monte-Carlo error is {100 * f['mean_error']:.2f} % of its "
                                  f"range (target {100 * t.mean_error:g} %)"))
    if not f["pattern_corr"] >= t.pattern_corr:
        out.append(("pattern_corr", "the std map's pattern is not resolved yet (expected correlation of the "
                                    f"smoothed map with the converged one {f['pattern_corr']:.2f} < "
                                    f"{t.pattern_corr:g})"))
    if not f["ess_q01"] >= t.min_ess:
        out.append(("ess", f"too few effective samples (ESS q01 {f['ess_q01']:.1f} < {t.min_ess:.0f})"))
    return out
