"""Field metrics of EIT reconstructions as the learned-EIT literature reports them (e.g. on the KIT4 data).

- :func:`relative_lp_error`: area-weighted relative ``L^p`` error ``||e - t||_p / ||t||_p`` of the conductivity (or,
  ``log=True``, of ``log sigma``), ``p = 1, 2``;
- :func:`segment_three_class`: a three-class segmentation of a conductivity field (0 background, 1 resistive,
  2 conductive) by thresholding its contrast to the background;
- :func:`dice_scores`: area-weighted Dice score per class and their mean;
- :func:`coverage`: the share of cells (and of area) whose truth lies within ``mean +- k std``.

The learned-EIT papers on KIT4 (e.g. Hamilton & Hauptmann's deep D-bar and its successors) compare
reconstructions with a segmentation of the tank into background, resistive and conductive targets obtained by
thresholding; the exact threshold differs between papers. :func:`segment_three_class` therefore states its rule and
takes it as a parameter: a relative threshold ``t`` around the background (default 0.2: more than 20 % below or above
the background), or ``"otsu"``, a threshold on the log-contrast chosen from the field itself.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BACKGROUND", "CLASS_NAMES", "CONDUCTIVE", "RESISTIVE", "coverage", "dice_scores", "field_metrics",
           "otsu_threshold", "relative_lp_error", "segment_three_class"]

BACKGROUND, RESISTIVE, CONDUCTIVE = 0, 1, 2
CLASS_NAMES = ("background", "resistive", "conductive")


def _weights(areas, n: int) -> np.ndarray:
    a = np.ones(n) if areas is None else np.asarray(areas, dtype=np.float64).reshape(-1)
    if a.shape != (n,) or not np.all(a > 0):
        raise ValueError(f"areas must be {n} positive numbers")
    return a


def relative_lp_error(sigma, truth, areas=None, p: float = 1, *, log: bool = False) -> float:
    """Area-weighted relative ``L^p`` error ``(sum_i a_i |s_i - t_i|^p / sum_i a_i |t_i|^p)^(1/p)``.

    Parameters
    ----------
    sigma, truth : array_like (n_cells,)
        Estimate and true conductivity per cell (positive when ``log``).
    areas : array_like (n_cells,), optional
        Cell areas (default: all 1, i.e. unweighted).
    p : float
        The exponent (>= 1; 1 and 2 are the reported ones).
    log : bool
        Compare ``log sigma`` with ``log truth`` instead.

    Returns
    -------
    float

    Examples
    --------
    A constant offset ``c`` on a constant truth ``t`` gives ``|c| / t`` for every ``p``:

    >>> relative_lp_error([1.1, 1.1], [1.0, 1.0], [1.0, 3.0], 1)
    0.10000000000000009
    >>> round(relative_lp_error([1.1, 1.1], [1.0, 1.0], [1.0, 3.0], 2), 12)
    0.1
    """
    s = np.asarray(sigma, dtype=np.float64).reshape(-1)
    t = np.asarray(truth, dtype=np.float64).reshape(-1)
    if s.shape != t.shape:
        raise ValueError(f"sigma and truth differ in shape: {s.shape} vs {t.shape}")
    if not (np.isfinite(p) and p >= 1):
        raise ValueError(f"p must be a number >= 1, got {p!r}")
    a = _weights(areas, t.shape[0])
    if log:
        if not (np.all(s > 0) and np.all(t > 0)):
            raise ValueError("log=True needs positive sigma and truth")
        s, t = np.log(s), np.log(t)
    den = float((a * np.abs(t) ** p).sum())
    if den == 0:
        raise ValueError("the truth is zero: its relative error is undefined")
    return float(((a * np.abs(s - t) ** p).sum() / den) ** (1.0 / p))


def otsu_threshold(values, weights=None) -> float:
    """Otsu's threshold of weighted values: the split maximising the weighted between-class variance.

    Returns the midpoint between the two sorted values the best split falls between (the largest value when all
    are equal).

    Examples
    --------
    >>> otsu_threshold([0.0, 0.1, 0.0, 1.0, 1.1])
    0.55
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    w = _weights(weights, v.shape[0])
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cw = np.cumsum(w)[:-1]
    cm = np.cumsum(w * v)[:-1]
    total_w, total_m = float(w.sum()), float((w * v).sum())
    distinct = v[1:] > v[:-1]
    if v.shape[0] < 2 or not distinct.any():
        return float(v[-1])
    m0 = cm / cw
    m1 = (total_m - cm) / (total_w - cw)
    between = np.where(distinct, cw * (total_w - cw) * (m0 - m1) ** 2, -np.inf)
    k = int(np.argmax(between))
    return float(0.5 * (v[k] + v[k + 1]))


def segment_three_class(sigma, background: float, *, threshold: float | str = 0.2, areas=None) -> np.ndarray:
    """Three-class segmentation of a conductivity field: 0 background, 1 resistive, 2 conductive.

    Rule: a cell is resistive when ``sigma < background / (1 + t)`` and conductive when
    ``sigma > background (1 + t)``, else background, i.e. a threshold ``log(1 + t)`` on the log-contrast
    ``|log(sigma / background)|`` (symmetric for resistive and conductive targets).

    Parameters
    ----------
    sigma : array_like (n_cells,)
        Conductivity per cell (positive).
    background : float
        The background conductivity (e.g. the fitted one, or the truth's).
    threshold : float or "otsu"
        ``t`` above (default 0.2: a contrast of 20 %); ``"otsu"``: the log-contrast threshold is
        :func:`otsu_threshold` of ``|log(sigma / background)|`` (area weighted with ``areas``).
    areas : array_like (n_cells,), optional
        Cell areas for ``"otsu"``.

    Returns
    -------
    numpy.ndarray of int64 (n_cells,)

    Examples
    --------
    >>> segment_three_class([1.0, 0.5, 1.1, 3.0], 1.0).tolist()
    [0, 1, 0, 2]
    """
    s = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if not np.all(s > 0):
        raise ValueError("sigma must be positive")
    if not (np.isfinite(background) and background > 0):
        raise ValueError(f"background must be a positive conductivity, got {background!r}")
    contrast = np.log(s / float(background))
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ValueError(f"threshold must be a positive number or 'otsu', got {threshold!r}")
        cut = otsu_threshold(np.abs(contrast), areas)
    elif np.isfinite(threshold) and threshold > 0:
        cut = float(np.log1p(threshold))
    else:
        raise ValueError(f"threshold must be a positive number or 'otsu', got {threshold!r}")
    seg = np.full(s.shape, BACKGROUND, dtype=np.int64)
    seg[contrast < -cut] = RESISTIVE
    seg[contrast > cut] = CONDUCTIVE
    return seg


def dice_scores(seg, seg_truth, areas=None) -> dict[str, float]:
    """Area-weighted Dice score ``2 |A n B| / (|A| + |B|)`` of each class and their mean.

    A class absent from both segmentations scores 1 (nothing to find, nothing found); the mean is over the three
    classes. ``|.|`` is the area (with ``areas``) or the cell count.

    Returns
    -------
    dict
        ``{"background", "resistive", "conductive", "mean"}``.

    Examples
    --------
    >>> d = dice_scores([0, 1, 1, 2], [0, 1, 0, 2], areas=[1.0, 1.0, 2.0, 1.0])
    >>> round(d["background"], 6), round(d["resistive"], 6), d["conductive"], round(d["mean"], 6)
    (0.5, 0.5, 1.0, 0.666667)
    """
    a_seg = np.asarray(seg).reshape(-1)
    b_seg = np.asarray(seg_truth).reshape(-1)
    if a_seg.shape != b_seg.shape:
        raise ValueError(f"seg and seg_truth differ in shape: {a_seg.shape} vs {b_seg.shape}")
    w = _weights(areas, a_seg.shape[0])
    out = {}
    for k, name in enumerate(CLASS_NAMES):
        ia, ib = a_seg == k, b_seg == k
        den = float(w[ia].sum() + w[ib].sum())
        out[name] = 1.0 if den == 0 else float(2 * w[ia & ib].sum() / den)
    out["mean"] = float(np.mean([out[n] for n in CLASS_NAMES]))
    return out


def field_metrics(sigma, truth, areas, background: float, *, threshold: float | str = 0.2) -> dict[str, float]:
    """Relative L1/L2 of ``sigma`` and of ``log sigma`` (area weighted) and the Dice scores of the three-class
    segmentations (both fields segmented with the same rule about ``background``).

    Examples
    --------
    >>> m = field_metrics([1.0, 2.0], [1.0, 2.0], [1.0, 1.0], 1.0)
    >>> m["rel_l1"], m["dice_mean"]
    (0.0, 1.0)
    """
    d = dice_scores(segment_three_class(sigma, background, threshold=threshold, areas=areas),
                    segment_three_class(truth, background, threshold=threshold, areas=areas), areas)
    out = {f"rel_l{p}": relative_lp_error(sigma, truth, areas, p) for p in (1, 2)}
    t = np.asarray(truth, dtype=np.float64)
    if np.any(np.abs(np.log(t)) > 0):
        out.update({f"rel_l{p}_log": relative_lp_error(sigma, truth, areas, p, log=True) for p in (1, 2)})
    out.update({f"dice_{k}": v for k, v in d.items()})
    return out


def coverage(mean, std, truth, areas=None, *, k: float = 2.0) -> dict[str, float]:
    """Share of cells, and of area, whose truth lies within ``mean +- k std`` (the interval's coverage).

    A cell is covered when ``|mean_i - truth_i| <= k std_i`` (closed interval, the same rule as the pipeline's
    ``info["errors"]["coverage_2std"]``); a NaN in ``mean`` or ``std`` counts as not covered. Compare the three
    fields in one parametrisation (all ``sigma`` or all ``log sigma``). For Gaussian marginals the nominal coverage
    of ``k = 2`` is 0.954; much more means the std is too wide, much less too narrow.

    Parameters
    ----------
    mean, std, truth : array_like (n_cells,)
        Posterior mean, posterior std (non-negative or NaN) and the truth per cell.
    areas : array_like (n_cells,), optional
        Cell areas for the area-weighted share (default: all 1, then ``"area"`` equals ``"cells"``).
    k : float
        Half-width of the interval in stds (default 2).

    Returns
    -------
    dict
        ``{"cells": share of cells covered, "area": area-weighted share}``, both in ``[0, 1]``.

    Raises
    ------
    ValueError
        On empty arrays or arrays of different sizes, a negative std, non-positive areas or ``k``.

    Examples
    --------
    Four cells; the truth lies inside the +-2 std interval of the first, on the edge of the second (covered), and
    outside the third and fourth; the first cell has three times the area of each other one:

    >>> c = coverage([0.0, 1.0, 0.0, 0.0], [1.0, 0.5, 0.1, 1.0], [1.5, 2.0, 0.5, -3.0], areas=[3.0, 1.0, 1.0, 1.0])
    >>> c["cells"], c["area"]
    (0.5, 0.6666666666666666)
    >>> coverage([0.0, 0.0], [1.0, 1.0], [0.5, 1.5], k=1.0)["cells"]
    0.5
    """
    m = np.asarray(mean, dtype=np.float64).reshape(-1)
    s = np.asarray(std, dtype=np.float64).reshape(-1)
    t = np.asarray(truth, dtype=np.float64).reshape(-1)
    if not (m.shape == s.shape == t.shape):
        raise ValueError(f"mean, std and truth differ in shape: {m.shape}, {s.shape}, {t.shape}")
    if t.size == 0:
        raise ValueError("coverage of no cells is undefined")
    if np.any(s < 0):
        raise ValueError("std must be non-negative")
    if not (np.isfinite(k) and k > 0):
        raise ValueError(f"k must be a positive number, got {k!r}")
    a = _weights(areas, t.shape[0])
    with np.errstate(invalid="ignore"):
        inside = np.abs(m - t) <= k * s  # NaN compares False: not covered
    return {"cells": float(np.mean(inside)), "area": float((a * inside).sum() / a.sum())}
