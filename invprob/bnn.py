"""Bayesian neural-network regression: the posterior as a potential, data sets, splits and predictive scores.

The model is the one of Liu & Wang's SVGD experiments (2016, section 5.3), which the BRWP paper's BNN table
follows: one hidden layer of ``n_hidden`` (50) ReLU units with biases,

.. code-block:: text

    f(x; w)   = w2^T relu(W1^T x + b1) + b2                     (w = (W1, b1, w2, b2): m weights)
    y | x, w  ~ N(f(x; w), 1 / gamma)                            (gamma: noise precision)
    w         ~ N(0, I / lambda)                                 (lambda: weight precision)
    gamma, lambda ~ Gamma(a0, b0)   (shape a0 = 1, rate b0 = 0.1)

sampled in ``theta = (W1, b1, w2, b2, log gamma, log lambda)`` (``d = p H + 2 H + 3``), so the potential

.. code-block:: text

    V(theta) = -log p(y | x, w, gamma) - log p(w | lambda) - log p(log gamma) - log p(log lambda)
             = gamma/2 ||f - y||^2 - n/2 (log gamma - log 2 pi) + lambda/2 ||w||^2 - m/2 (log lambda - log 2 pi)
               - [a0 log gamma - b0 gamma] - [a0 log lambda - b0 lambda] - 2 (a0 log b0 - lgamma(a0))

is the full-batch negative log posterior (the ``a0 log`` terms include the Jacobian of the log transform). Inputs
and targets are standardised with the training part's mean and std (:class:`Standardizer`); the predictive
scores are reported in the original units (:func:`predictive_scores`).

Differences from the public BRWP code (``paper_exps/BNN.py`` of the BRWP repository): there the network has two
hidden layers of 50 units without biases, the noise variance is fixed at 0.5, the potential is the *mean* squared
error over a mini-batch of 100 without a prior (a posterior tempered by ``1/n``), 10 particles are run for 20-500
epochs with step 0.5 (divided by 10 at half-time) and a data-set dependent ``T`` (``1e-5`` to ``1e-2``), and the
test log-likelihood uses one noise variance fitted to the training residual of the particle average. This module
keeps Liu & Wang's posterior (learned precisions, Gamma priors, full data) so that the samplers are compared on a
proper posterior; the networks are the same size as theirs.

Everything is batched over particles: ``theta`` is ``(B, d)``, the forward pass is two batched matrix products,
``fn``/``grad`` are closed form (checked against finite differences in ``tests/test_bnn.py``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from invprob._checks import check_int, check_positive
from invprob.potential import Potential

__all__ = [
    "BNNConfig",
    "BNNParams",
    "BNNRegression",
    "PredictiveScores",
    "RegressionDataset",
    "RegressionSplit",
    "Standardizer",
    "fit_map",
    "load_csv_regression",
    "load_diabetes",
    "make_friedman",
    "make_sine",
    "predictive_scores",
    "split_dataset",
    "train_test_splits",
]

LOG_2PI = math.log(2 * math.pi)
MIN_ROWS = 10  # fewer rows cannot give a training part, a test part and a standardisation


# ---------------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class BNNConfig:
    """The network and its priors.

    Attributes
    ----------
    n_hidden : int
        Hidden ReLU units (50 in Liu & Wang's and the BRWP paper's BNN experiments).
    a0, b0 : float
        Shape and rate of the Gamma priors on the noise precision ``gamma`` and the weight precision ``lambda``
        (Liu & Wang: ``Gamma(1, 0.1)``).
    """

    n_hidden: int = 50
    a0: float = 1.0
    b0: float = 0.1

    def __post_init__(self):
        check_int("n_hidden", self.n_hidden)
        check_positive("a0", self.a0)
        check_positive("b0", self.b0)


@dataclass(frozen=True)
class BNNParams:
    """One batch of ``theta`` unpacked: ``W1 (B, p, H)``, ``b1 (B, H)``, ``w2 (B, H)``, ``b2 (B,)``,
    ``log_gamma (B,)``, ``log_lambda (B,)`` (views into a contiguous ``theta``)."""

    W1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    log_gamma: torch.Tensor
    log_lambda: torch.Tensor


# ---------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class RegressionDataset:
    """A regression data set in its original units: ``x (n, p)`` and ``y (n,)``, float64 NumPy arrays.

    Raises
    ------
    ValueError
        When the shapes disagree, a value is not finite, or there are fewer than 10 rows.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...] = ()
    target_name: str = "y"

    def __post_init__(self):
        x = np.asarray(self.x, dtype=np.float64)
        y = np.asarray(self.y, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"x must be (n, p) and y (n,), got {np.shape(self.x)} and {np.shape(self.y)}")
        if x.shape[0] < MIN_ROWS:
            raise ValueError(f"a regression data set needs at least {MIN_ROWS} rows, got {x.shape[0]}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError(f"data set {self.name!r} has non-finite values")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        if not self.feature_names:
            object.__setattr__(self, "feature_names", tuple(f"x{i}" for i in range(x.shape[1])))

    @property
    def n(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class Standardizer:
    """Per-feature and target mean/std fitted on a training part (a constant feature gets std 1)."""

    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> Standardizer:
        """Fit on ``x (n, p)``, ``y (n,)`` (population std, ``ddof=0``)."""
        x_std = x.std(0)
        y_std = float(y.std())
        return cls(x.mean(0), np.where(x_std > 0, x_std, 1.0), float(y.mean()), y_std if y_std > 0 else 1.0)

    def transform_x(self, x: np.ndarray) -> np.ndarray:
        return (x - self.x_mean) / self.x_std

    def transform_y(self, y: np.ndarray) -> np.ndarray:
        return (y - self.y_mean) / self.y_std

    def inverse_y(self, y_std_units):
        """Standardised targets back to the original units (arrays or tensors)."""
        return y_std_units * self.y_std + self.y_mean


@dataclass(frozen=True)
class RegressionSplit:
    """One train/test split, standardised with the training part: float64 tensors ``x_train (n, p)``,
    ``y_train (n,)``, ``x_test``, ``y_test`` (standardised), ``y_test_raw`` (original units) and the scaler."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    y_test_raw: torch.Tensor
    scaler: Standardizer
    name: str = ""


def train_test_splits(n: int, n_splits: int = 20, test_fraction: float = 0.1, *,
                      seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_splits`` random partitions of ``range(n)`` into sorted, disjoint train and test indices.

    Parameters
    ----------
    n : int
        Number of rows (>= 10).
    n_splits : int
    test_fraction : float
        In ``(0, 1)``; the test part has ``max(1, round(test_fraction n))`` rows.
    seed : int
        The same seed gives the same splits.

    Returns
    -------
    list of (train, test)
        int64 index arrays.

    Examples
    --------
    >>> tr, te = train_test_splits(20, n_splits=1, test_fraction=0.25, seed=0)[0]
    >>> len(tr), len(te), sorted(set(tr) | set(te)) == list(range(20))
    (15, 5, True)
    """
    n = check_int("n", n, minimum=MIN_ROWS)
    n_splits = check_int("n_splits", n_splits)
    if not 0 < float(test_fraction) < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    n_test = max(1, round(float(test_fraction) * n))
    if n - n_test < 2:
        raise ValueError(f"test_fraction={test_fraction} leaves fewer than 2 training rows out of {n}")
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    out = []
    for _ in range(n_splits):
        perm = rng.permutation(n)
        out.append((np.sort(perm[n_test:]).astype(np.int64), np.sort(perm[:n_test]).astype(np.int64)))
    return out


def split_dataset(data: RegressionDataset, train: np.ndarray, test: np.ndarray) -> RegressionSplit:
    """Standardise ``data`` with its rows ``train`` and return the split as float64 tensors."""
    train, test = np.asarray(train), np.asarray(test)
    if np.intersect1d(train, test).size:
        raise ValueError("train and test indices overlap")
    if train.size < 2 or test.size < 1:
        raise ValueError(f"a split needs at least 2 training rows and 1 test row, got {train.size} and {test.size}")
    sc = Standardizer.fit(data.x[train], data.y[train])

    def t(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)

    return RegressionSplit(t(sc.transform_x(data.x[train])), t(sc.transform_y(data.y[train])),
                           t(sc.transform_x(data.x[test])), t(sc.transform_y(data.y[test])), t(data.y[test]), sc,
                           data.name)


def load_diabetes() -> RegressionDataset:
    """scikit-learn's bundled diabetes data (442 rows, 10 features, no download); needs scikit-learn."""
    try:
        from sklearn.datasets import load_diabetes as sk_load
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("load_diabetes needs scikit-learn (pip install scikit-learn)") from err
    d = sk_load()
    return RegressionDataset("diabetes", d.data, d.target, tuple(d.feature_names), "disease progression")


def make_sine(n: int = 400, *, noise: float = 0.3, seed: int) -> RegressionDataset:
    """1-D synthetic regression ``y = sin(2x) + 0.3 x + noise N(0, noise^2)``, ``x ~ U(-3, 3)``."""
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    x = rng.uniform(-3.0, 3.0, size=check_int("n", n, minimum=MIN_ROWS))
    y = np.sin(2 * x) + 0.3 * x + check_positive("noise", noise) * rng.standard_normal(x.shape)
    return RegressionDataset("sine", x[:, None], y, ("x",))


def make_friedman(n: int = 500, *, n_features: int = 10, noise: float = 1.0, seed: int) -> RegressionDataset:
    """Friedman's first synthetic regression (1991), generated here: ``x ~ U(0, 1)^p`` (``p >= 5``),
    ``y = 10 sin(pi x1 x2) + 20 (x3 - 1/2)^2 + 10 x4 + 5 x5 + noise N(0, noise^2)``; the other features are
    irrelevant."""
    p = check_int("n_features", n_features, minimum=5)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    x = rng.uniform(size=(check_int("n", n, minimum=MIN_ROWS), p))
    y = (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
         + check_positive("noise", noise) * rng.standard_normal(x.shape[0]))
    return RegressionDataset("friedman", x, y)


def load_csv_regression(path: str | Path, target: str | int, *, features: list[str] | None = None,
                        delimiter: str | None = None) -> RegressionDataset:
    """A numeric regression table from a local file (a UCI ``data.txt`` or any CSV).

    Parameters
    ----------
    path : str or Path
    target : str or int
        The target column: a header name, or a 0-based column index (also for files without a header; a header
        is recognised when the first row is not all numbers).
    features : list of str, optional
        Feature columns by header name (default: every other column).
    delimiter : str, optional
        Field separator; default: ``","`` if the first line has one, else ``";"`` or a tab, else whitespace.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        One line: an unknown target or feature column, a non-numeric value (row and column named), ragged rows,
        fewer than 10 rows.
    """
    path = Path(path)
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    rows = _split_rows(lines, delimiter)
    header = None if all(_is_number(v) for v in rows[0]) else [v.strip() for v in rows[0]]
    body = rows[1:] if header is not None else rows
    width = len(rows[0])
    names = header or [f"column {i}" for i in range(width)]
    t_col = _column_index(target, header, width, "target")
    f_cols = ([_column_index(f, header, width, "feature") for f in features] if features is not None
              else [i for i in range(width) if i != t_col])
    if not f_cols:
        raise ValueError(f"{path}: no feature columns besides the target")
    table = np.empty((len(body), width))
    for r, row in enumerate(body, start=2 if header else 1):
        if len(row) != width:
            raise ValueError(f"{path}: line {r} has {len(row)} fields, expected {width}")
        for c, v in enumerate(row):
            try:
                table[r - (2 if header else 1), c] = float(v)
            except ValueError:
                raise ValueError(f"{path}: non-numeric value {v.strip()!r} at line {r}, column {names[c]!r}") from None
    if table.shape[0] < MIN_ROWS:
        raise ValueError(f"{path}: a regression data set needs at least {MIN_ROWS} rows, got {table.shape[0]}")
    return RegressionDataset(path.stem, table[:, f_cols], table[:, t_col], tuple(names[i] for i in f_cols),
                             names[t_col])


def _split_rows(lines: list[str], delimiter: str | None) -> list[list[str]]:
    if delimiter is None:
        first = lines[0]
        delimiter = next((d for d in (",", ";", "\t") if d in first), None)
    if delimiter is None:
        return [ln.split() for ln in lines]
    return [row for row in csv.reader(lines, delimiter=delimiter)]


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _column_index(col: str | int, header: list[str] | None, width: int, what: str) -> int:
    if isinstance(col, int | np.integer) and not isinstance(col, bool):
        if not 0 <= int(col) < width:
            raise ValueError(f"{what} column index {col} is out of range for {width} columns")
        return int(col)
    if header is None:
        raise ValueError(f"{what} column {col!r} given by name but the file has no header row; pass an index")
    if col not in header:
        raise ValueError(f"{what} column {col!r} not found; columns are {header}")
    return header.index(col)


# ---------------------------------------------------------------------------------------------------- model
class BNNRegression(Potential):
    """The negative log posterior of a one-hidden-layer ReLU network (module docstring) on batches ``(B, d)``.

    Parameters
    ----------
    x, y : torch.Tensor
        Standardised training inputs ``(n, p)`` and targets ``(n,)``.
    config : BNNConfig
        Hidden units and the Gamma priors.

    Examples
    --------
    >>> import torch
    >>> from invprob.bnn import BNNRegression, BNNConfig, make_sine, split_dataset, train_test_splits
    >>> data = make_sine(50, seed=0)
    >>> split = split_dataset(data, *train_test_splits(data.n, n_splits=1, seed=0)[0])
    >>> model = BNNRegression(split.x_train, split.y_train, BNNConfig(n_hidden=8))
    >>> theta = model.initial_particles(4, seed=0)
    >>> model.event_shape, tuple(model.fn(theta).shape), tuple(model.grad(theta).shape)
    ((27,), (4,), (4, 27))
    """

    beta = 1.0

    def __init__(self, x: torch.Tensor, y: torch.Tensor, config: BNNConfig = BNNConfig()):
        x = torch.as_tensor(x)
        y = torch.as_tensor(y)
        if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] < 1:
            raise ValueError(f"x must be (n, p) and y (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
        if not (x.is_floating_point() and torch.isfinite(x).all() and torch.isfinite(y).all()):
            raise ValueError("x and y must be finite floating-point tensors")
        self.config = config
        self.x, self.y = x, y.to(x.dtype)
        self.n, self.p = x.shape
        H = config.n_hidden
        self.n_weights = self.p * H + 2 * H + 1
        self.dim = self.n_weights + 2
        self.event_shape = (self.dim,)
        self._const = 2 * (config.a0 * math.log(config.b0) - math.lgamma(config.a0))
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"BNNRegression(n={self.n}, p={self.p}, n_hidden={self.config.n_hidden}, d={self.dim})"

    def _data(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = (self.x.to(dtype=like.dtype, device=like.device),
                                self.y.to(dtype=like.dtype, device=like.device))
        return self._cache[key]

    def unpack(self, theta: torch.Tensor) -> BNNParams:
        """The weights and log precisions of ``theta (B, d)`` (views when ``theta`` is contiguous)."""
        if theta.ndim != 2 or theta.shape[1] != self.dim:
            raise ValueError(f"theta must have shape (B, {self.dim}), got {tuple(theta.shape)}")
        p, H, B = self.p, self.config.n_hidden, theta.shape[0]
        i = p * H
        return BNNParams(theta[:, :i].reshape(B, p, H), theta[:, i : i + H], theta[:, i + H : i + 2 * H],
                         theta[:, i + 2 * H], theta[:, -2], theta[:, -1])

    def forward(self, theta: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Network outputs ``(B, n)`` (standardised units) of every particle at ``x`` (default: training inputs)."""
        return self._forward(self.unpack(theta), self._data(theta)[0] if x is None else x.to(theta))[0]

    @staticmethod
    def _forward(w: BNNParams, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(outputs (B, n), hidden activations (n, B, H))``: the first layer of all particles is one matrix
        product ``x (n, p) @ [W1_1 ... W1_B] (p, B H)`` (no broadcast copies of ``x``)."""
        B, p, H = w.W1.shape
        a = (x @ w.W1.permute(1, 0, 2).reshape(p, B * H)).view(-1, B, H).add_(w.b1).clamp_min_(0.0)
        out = (a * w.w2).sum(-1).T + w.b2[:, None]
        return out, a

    def _terms(self, theta: torch.Tensor):
        w = self.unpack(theta)
        x, y = self._data(theta)
        out, a = self._forward(w, x)
        r = out - y
        sse = r.square().sum(1)
        wsq = theta[:, : self.n_weights].square().sum(1)
        return w, a, r, sse, wsq

    def _value(self, w: BNNParams, sse, wsq) -> torch.Tensor:
        a0, b0 = self.config.a0, self.config.b0
        lg, ll = w.log_gamma, w.log_lambda
        g, lam = lg.exp(), ll.exp()
        log_lik = 0.5 * self.n * (lg - LOG_2PI) - 0.5 * g * sse
        log_prior_w = 0.5 * self.n_weights * (ll - LOG_2PI) - 0.5 * lam * wsq
        log_hyper = a0 * (lg + ll) - b0 * (g + lam) + self._const
        return -(log_lik + log_prior_w + log_hyper)

    def fn(self, theta: torch.Tensor) -> torch.Tensor:
        """``V(theta)`` per particle, ``(B,)``."""
        w, _, _, sse, wsq = self._terms(theta)
        return self._value(w, sse, wsq)

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        """``grad V(theta)``, ``(B, d)`` (closed form, backpropagation written out)."""
        return self.value_and_grad(theta, need_fn=False)[1]

    def value_and_grad(self, theta: torch.Tensor, need_fn: bool = True):
        """``(V or None, grad V, None)`` from one forward pass."""
        w, a, r, sse, wsq = self._terms(theta)
        a0, b0 = self.config.a0, self.config.b0
        g, lam = w.log_gamma.exp(), w.log_lambda.exp()
        e = g[:, None] * r  # dV/d out, (B, n)
        et = e.T[:, :, None]
        dz = (et * w.w2).masked_fill_(a == 0, 0.0)  # dV/d pre-activation, (n, B, H)
        x = self._data(theta)[0]
        B, p, H = w.W1.shape
        i = p * H
        out = theta.new_empty(theta.shape)
        out[:, :i].view(B, p, H).copy_((x.T @ dz.view(-1, B * H)).view(p, B, H).transpose(0, 1))
        out[:, i : i + H] = dz.sum(0)
        out[:, i + H : i + 2 * H] = (a * et).sum(0)
        out[:, i + 2 * H] = e.sum(1)
        out[:, : self.n_weights].add_(lam[:, None] * theta[:, : self.n_weights])
        out[:, -2] = -0.5 * self.n + 0.5 * g * sse - a0 + b0 * g
        out[:, -1] = -0.5 * self.n_weights + 0.5 * lam * wsq - a0 + b0 * lam
        return (self._value(w, sse, wsq) if need_fn else None), out, None

    def initial_particles(self, n_particles: int, *, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``(n_particles, d)`` starting networks, Liu & Wang's initialisation: ``W1 ~ N(0, 1/(p+1))``,
        ``w2 ~ N(0, 1/(H+1))``, zero biases, and each log precision at its conditional mode given the network
        (``lambda = (m/2 + a0) / (||w||^2/2 + b0)``; ``gamma`` likewise from the training residual), where
        ``dV/d log lambda = dV/d log gamma = 0``."""
        n_particles = check_int("n_particles", n_particles)
        gen = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
        p, H = self.p, self.config.n_hidden
        theta = torch.zeros(n_particles, self.dim, dtype=dtype)
        theta[:, : p * H] = torch.randn(n_particles, p * H, generator=gen, dtype=dtype) / math.sqrt(p + 1)
        theta[:, p * H + H : p * H + 2 * H] = torch.randn(n_particles, H, generator=gen, dtype=dtype) / math.sqrt(H + 1)
        a0, b0 = self.config.a0, self.config.b0
        _, _, _, sse, wsq = self._terms(theta)
        theta[:, -2] = torch.log((0.5 * self.n + a0) / (0.5 * sse + b0))
        theta[:, -1] = torch.log((0.5 * self.n_weights + a0) / (0.5 * wsq + b0))
        return theta


# ---------------------------------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class PredictiveScores:
    """Test scores of a particle ensemble, in the target's original units.

    Attributes
    ----------
    rmse : float
        Root mean squared error of the predictive mean (the particle average of the network outputs).
    log_likelihood : float
        Mean over test points of ``log (1/N) sum_i N(y; mu_i(x), sigma_i^2)``: the mixture over particles with
        ``mu_i = y_std f_i + y_mean`` and ``sigma_i^2 = y_std^2 / gamma_i``.
    mean, std : torch.Tensor
        Predictive mean and std ``(n_test,)`` of that mixture.
    """

    rmse: float
    log_likelihood: float
    mean: torch.Tensor = field(repr=False)
    std: torch.Tensor = field(repr=False)


def predictive_scores(model: BNNRegression, theta: torch.Tensor, x_test: torch.Tensor, y_test_raw: torch.Tensor,
                      scaler: Standardizer) -> PredictiveScores:
    """RMSE and test log-likelihood of the ensemble ``theta (N, d)`` (one network: ``N = 1``).

    ``x_test`` is standardised (as :class:`RegressionSplit`'s), ``y_test_raw`` in the original units.
    """
    theta = theta.detach().to(torch.float64)
    if theta.ndim == 1:
        theta = theta[None]
    if not torch.isfinite(theta).all():
        raise ValueError("theta has non-finite entries (the sampler diverged)")
    y = torch.as_tensor(y_test_raw, dtype=torch.float64)
    mu = scaler.inverse_y(model.forward(theta, x_test.to(torch.float64)))  # (N, n_test)
    log_var = 2 * math.log(scaler.y_std) - model.unpack(theta).log_gamma  # (N,)
    log_dens = -0.5 * (LOG_2PI + log_var[:, None] + (y[None] - mu).square() * (-log_var[:, None]).exp())
    ll = (torch.logsumexp(log_dens, 0) - math.log(theta.shape[0])).mean()
    mean = mu.mean(0)
    var = (mu.square() + log_var.exp()[:, None]).mean(0) - mean.square()
    return PredictiveScores(float((mean - y).square().mean().sqrt()), float(ll), mean, var.clamp_min(0).sqrt())


def fit_map(model: BNNRegression, init: torch.Tensor, *, n_iter: int = 2000, lr: float = 1e-2,
            betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.Tensor:
    """A MAP network by Adam (Kingma & Ba 2015; ``torch.optim.Adam``'s update and defaults, written out so that the
    baseline does not import ``torch._dynamo``, which ``torch.optim`` does, for seconds) on ``V`` from
    ``init (1, d)`` (or ``(d,)``); returns ``(1, d)``.

    ``log lambda`` stays at its initial value: the joint mode in ``(w, lambda)`` is degenerate (``V -> -inf`` as
    ``w -> 0``, ``lambda -> inf``: the hierarchical prior's funnel), so the MAP is the mode in ``(w, log gamma)``
    for that weight precision. The gradient is the closed form of :meth:`BNNRegression.grad`.
    """
    n_iter = check_int("n_iter", n_iter)
    lr = check_positive("lr", lr)
    b1, b2 = betas
    theta = init.detach().clone().reshape(1, model.dim)
    m = torch.zeros_like(theta)
    v = torch.zeros_like(theta)
    for k in range(1, n_iter + 1):
        g = model.grad(theta)
        g[:, -1] = 0.0
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2**k)).sqrt_().add_(eps)
        theta.addcdiv_(m, denom, value=-lr / (1 - b1**k))
    return theta
