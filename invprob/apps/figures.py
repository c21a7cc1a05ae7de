"""The ``report.png`` figure of a deblurring run (matplotlib, imported only when a figure is drawn): panels of an
image (:func:`report_figure`) or orthogonal slices of a volume (:func:`volume_report_figure`)."""

from __future__ import annotations

import io as _io
from pathlib import Path

import numpy as np

from invprob.results import atomic_write_bytes

__all__ = ["orthogonal_slices", "report_figure", "volume_report_figure"]


def _show(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(C, H, W)`` working units -> something ``imshow`` draws: ``(H, W)`` grey or ``(H, W, 3)`` in [0, 1]."""
    a = np.asarray(arr, dtype=np.float64)
    a = (a - lo) / (hi - lo if hi > lo else 1.0)
    a = np.clip(a, 0.0, 1.0)
    return a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)


def _std_map(std: np.ndarray) -> np.ndarray:
    """Std for display: one channel (the root-mean-square over colour channels)."""
    s = np.asarray(std, dtype=np.float64)
    return np.sqrt((s**2).mean(0))


def report_figure(
    path: str | Path,
    data: np.ndarray,
    map_x: np.ndarray | None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    *,
    truth: np.ndarray | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    titles: dict[str, str] | None = None,
    suptitle: str | None = None,
    footnote: str | None = None,
    dpi: int = 100,
) -> None:
    """Draw the report figure and write it atomically as a PNG.

    Panels, left to right: the blurred input, the MAP estimate, the posterior mean, the pixelwise posterior
    std (own colour scale, with a colourbar; RMS over colour channels), and with ``truth`` a second row with the
    truth, the error of the MAP and of the mean (shared colour scale, colourbar) and the ratio |error| / std.
    Arrays are ``(C, H, W)`` in working units; ``value_range`` maps them to black and white. Missing panels
    (``None``) are skipped. ``footnote`` (e.g. the std map's convergence verdict) is printed, wrapped, under the
    panels.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    titles = titles or {}
    lo, hi = value_range
    top = [("input", data, titles.get("input", "blurred input"))]
    if map_x is not None:
        top.append(("map", map_x, titles.get("map", "MAP")))
    if mean is not None:
        top.append(("mean", mean, titles.get("mean", "posterior mean")))
    ncols = len(top) + (std is not None)
    nrows = 2 if truth is not None else 1
    if truth is not None:
        ncols = max(ncols, 1 + (map_x is not None) + (mean is not None) + (std is not None and mean is not None))
    H, W = np.asarray(data).shape[-2:]
    panel = 3.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols * max(W / H, 0.6), panel * nrows + 0.6),
                             squeeze=False, constrained_layout=True)
    for ax in axes.ravel():
        ax.set_axis_off()
    grey = "gray" if np.asarray(data).shape[0] == 1 else None
    for j, (_, img, title) in enumerate(top):
        axes[0, j].imshow(_show(img, lo, hi), cmap=grey, vmin=0, vmax=1, interpolation="nearest")
        axes[0, j].set_title(title, fontsize=10)
    if std is not None:
        s = _std_map(std)
        im = axes[0, len(top)].imshow(s, cmap="magma", vmin=0, vmax=float(s.max()) or 1.0, interpolation="nearest")
        axes[0, len(top)].set_title(titles.get("std", "posterior std"), fontsize=10)
        fig.colorbar(im, ax=axes[0, len(top)], fraction=0.046, pad=0.02)
    if truth is not None:
        axes[1, 0].imshow(_show(truth, lo, hi), cmap=grey, vmin=0, vmax=1, interpolation="nearest")
        axes[1, 0].set_title(titles.get("truth", "truth"), fontsize=10)
        errs = [(n, np.sqrt(((np.asarray(e) - truth) ** 2).mean(0))) for n, e in (("MAP", map_x), ("mean", mean))
                if e is not None]
        vmax = max(float(e.max()) for _, e in errs) if errs else 1.0
        j = 1
        im = None
        for n, e in errs:
            im = axes[1, j].imshow(e, cmap="inferno", vmin=0, vmax=vmax or 1.0, interpolation="nearest")
            axes[1, j].set_title(f"|error| of {n}", fontsize=10)
            j += 1
        if im is not None:
            fig.colorbar(im, ax=axes[1, j - 1], fraction=0.046, pad=0.02)
        if std is not None and mean is not None and j < ncols:
            ratio = np.sqrt(((np.asarray(mean) - truth) ** 2).mean(0)) / np.maximum(_std_map(std), 1e-12)
            im = axes[1, j].imshow(ratio, cmap="viridis", vmin=0, vmax=3, interpolation="nearest")
            axes[1, j].set_title("|error of mean| / std", fontsize=10)
            fig.colorbar(im, ax=axes[1, j], fraction=0.046, pad=0.02)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    if footnote:
        import textwrap

        fig.supxlabel(textwrap.fill(footnote, width=int(40 * ncols)), fontsize=8)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def orthogonal_slices(vol: np.ndarray) -> dict[str, np.ndarray]:
    """The three central sections of a volume ``(C, D, H, W)`` (display only): ``"xy"`` ``(C, H, W)`` at the
    central plane, ``"xz"`` ``(C, D, W)`` through the central row, ``"yz"`` ``(C, D, H)`` through the central
    column."""
    v = np.asarray(vol)
    D, H, W = v.shape[-3:]
    return {"xy": v[:, D // 2], "xz": v[:, :, H // 2, :], "yz": v[:, :, :, W // 2]}


def volume_report_figure(
    path: str | Path,
    data: np.ndarray,
    map_x: np.ndarray | None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    *,
    truth: np.ndarray | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    titles: dict[str, str] | None = None,
    suptitle: str | None = None,
    footnote: str | None = None,
    dpi: int = 100,
) -> None:
    """Orthogonal slices of a volume run, written atomically as a PNG.

    One row per volume (the input, the truth when given, the MAP, the posterior mean, the posterior std on its
    own colour scale with a colourbar), three columns: the XY section at the central plane, the XZ section
    through the central row and the YZ section through the central column (:func:`orthogonal_slices`). Arrays
    are ``(C, D, H, W)`` in working units; ``voxel_size`` ``(dz, dy, dx)`` sets the aspect of the sections
    (square voxels when None). Missing volumes (``None``) are skipped.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    titles = titles or {}
    lo, hi = value_range
    dz, dy, dx = voxel_size if voxel_size is not None else (1.0, 1.0, 1.0)
    aspects = {"xy": dy / dx, "xz": dz / dx, "yz": dz / dy}
    rows = [(k, v, titles.get(k, k)) for k, v in (("input", data), ("truth", truth), ("map", map_x),
                                                   ("mean", mean), ("std", std)) if v is not None]
    fig, axes = plt.subplots(len(rows), 3, figsize=(10.0, 2.6 * len(rows) + 0.8), squeeze=False,
                             constrained_layout=True)
    for i, (key, vol, title) in enumerate(rows):
        cuts = orthogonal_slices(vol)
        if key == "std":
            vmax = float(np.max(vol)) or 1.0
        for j, plane in enumerate(("xy", "xz", "yz")):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if key == "std":
                im = ax.imshow(_std_map(cuts[plane]), cmap="magma", vmin=0, vmax=vmax, aspect=aspects[plane],
                               interpolation="nearest")
            else:
                grey = "gray" if cuts[plane].shape[0] == 1 else None
                ax.imshow(_show(cuts[plane], lo, hi), cmap=grey, vmin=0, vmax=1, aspect=aspects[plane],
                          interpolation="nearest")
            ax.set_title(f"{title}: {plane.upper()}" if j == 0 else plane.upper(), fontsize=9)
        if key == "std":
            fig.colorbar(im, ax=axes[i, 2], fraction=0.046, pad=0.02)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    if footnote:
        import textwrap

        fig.supxlabel(textwrap.fill(footnote, width=120), fontsize=8)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
