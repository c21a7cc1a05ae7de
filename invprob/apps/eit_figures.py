"""Figures of per-cell EIT results: matplotlib ``tripcolor`` on the mesh with common colour scales.

Conductivity panels (truth, MAP, mean) share one colour scale; std panels share another; the error panel is
symmetric about 0. Figures are written with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["panel_figure", "result_figure", "std_profile_figure", "truth_figure", "write_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def write_figure(fig, path) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    import io

    from invprob.results import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _tri(mesh):
    import matplotlib.tri as mtri

    return mtri.Triangulation(mesh.points[:, 0], mesh.points[:, 1], mesh.triangles)


def _electrodes(ax, mesh, radius):
    ang = np.asarray(mesh.electrode_angles)
    c = np.asarray(mesh.centre)
    ax.plot(c[0] + 1.03 * radius * np.cos(ang), c[1] + 1.03 * radius * np.sin(ang), "k.", ms=3)
    ax.annotate(
        "1",
        (c[0] + 1.12 * radius * np.cos(ang[0]), c[1] + 1.12 * radius * np.sin(ang[0])),
        ha="center",
        va="center",
        fontsize=7,
    )


def _panel(ax, tri, values, *, vmin, vmax, cmap, title, mesh=None, radius=None):
    im = ax.tripcolor(tri, facecolors=np.asarray(values, dtype=float), vmin=vmin, vmax=vmax, cmap=cmap, shading="flat")
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    if mesh is not None and radius is not None:
        _electrodes(ax, mesh, radius)
    return im


def truth_figure(mesh, values: np.ndarray, path, *, radius: float) -> Path:
    """The true conductivity of a simulated phantom on the simulation mesh (``truth.png``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.4, 3))
    im = _panel(ax, _tri(mesh), values, vmin=float(values.min()), vmax=float(values.max()), cmap="viridis",
                title="true conductivity", mesh=mesh, radius=radius)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return write_figure(fig, path)


def result_figure(
    mesh, result, path, *, truth: np.ndarray | None = None, title: str | None = None, radius: float | None = None
) -> Path:
    """MAP | mean | std (| truth | error of the mean) on the inversion mesh, common colour scales."""
    plt = _plt()
    tri = _tri(mesh)
    R = radius or float(np.linalg.norm(mesh.points - mesh.centre, axis=1).max())
    cond = [("MAP", result.map), ("posterior mean", result.mean)]
    if truth is not None:
        cond.insert(0, ("truth", truth))
    vals = np.concatenate([np.asarray(v) for _, v in cond])
    vmin, vmax = float(np.quantile(vals, 0.005)), float(np.quantile(vals, 0.995))
    n = len(cond) + 1 + (truth is not None)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8))
    im = None
    for ax, (name, v) in zip(axes, cond, strict=False):
        im = _panel(ax, tri, v, vmin=vmin, vmax=vmax, cmap="viridis", title=name, mesh=mesh, radius=R)
    fig.colorbar(im, ax=axes[: len(cond)], shrink=0.75, label="conductivity")
    k = len(cond)
    ims = _panel(
        axes[k],
        tri,
        result.std,
        vmin=0.0,
        vmax=float(np.max(result.std)),
        cmap="magma",
        title=f"posterior std ({result.info.get('uncertainty', {}).get('estimator', '?')})",
        mesh=mesh,
        radius=R,
    )
    fig.colorbar(ims, ax=axes[k], shrink=0.75)
    if truth is not None:
        err = np.asarray(result.mean) - np.asarray(truth)
        e = float(np.max(np.abs(err))) or 1.0
        ime = _panel(axes[k + 1], tri, err, vmin=-e, vmax=e, cmap="RdBu_r", title="mean - truth", mesh=mesh, radius=R)
        fig.colorbar(ime, ax=axes[k + 1], shrink=0.75)
    if title:
        fig.suptitle(title, fontsize=9)
    return write_figure(fig, path)


def panel_figure(
    mesh,
    rows: list[tuple[str, object]],
    path,
    *,
    radius: float | None = None,
    std_vmax: float | None = None,
    title: str | None = None,
    cases_per_row: int = 4,
) -> Path:
    """All cases in one figure, ``cases_per_row`` cases per row, each as MAP | mean | std.

    MAP and mean of a case share a colour scale (colour bar under them); all std panels share one scale.
    """
    plt = _plt()
    tri = _tri(mesh)
    R = radius or float(np.linalg.norm(mesh.points - mesh.centre, axis=1).max())
    n = len(rows)
    k = max(1, min(int(cases_per_row), n))
    nr = -(-n // k)
    smax = std_vmax or max(float(np.quantile(r.std, 0.99)) for _, r in rows)
    fig, axes = plt.subplots(nr, 3 * k, figsize=(2.0 * 3 * k, 2.5 * nr), squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.9, wspace=0.08, hspace=0.45)
    ims = None
    for idx in range(nr * k):
        a = axes[idx // k, 3 * (idx % k) : 3 * (idx % k) + 3]
        if idx >= n:
            for ax in a:
                ax.axis("off")
            continue
        label, res = rows[idx]
        vals = np.concatenate([res.map, res.mean])
        vmin, vmax = float(np.quantile(vals, 0.005)), float(np.quantile(vals, 0.995))
        im = _panel(
            a[0], tri, res.map, vmin=vmin, vmax=vmax, cmap="viridis", title=f"{label}: MAP", mesh=mesh, radius=R
        )
        _panel(a[1], tri, res.mean, vmin=vmin, vmax=vmax, cmap="viridis", title="mean", mesh=mesh, radius=R)
        cax = a[0].inset_axes([0.1, -0.14, 2.0, 0.07])  # under MAP and mean, no space stolen
        cb = fig.colorbar(im, cax=cax, orientation="horizontal")
        cb.ax.tick_params(labelsize=6)
        ims = _panel(a[2], tri, res.std, vmin=0, vmax=smax, cmap="magma", title="std", mesh=mesh, radius=R)
    if ims is not None:
        cax = fig.add_axes([0.92, 0.3, 0.008, 0.4])
        cb = fig.colorbar(ims, cax=cax, label="posterior std (common scale)")
        cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return write_figure(fig, path)


def std_profile_figure(results: list[tuple[str, object]], path, *, radius: float) -> Path:
    """Relative std ``std / mean`` against the distance from the centre (binned medians): the data are least
    informative in the centre."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3))
    bins = np.linspace(0, 1, 11)
    for name, res in results:
        r = np.linalg.norm(res.cells_xy, axis=1) / radius
        rel = np.asarray(res.std) / np.asarray(res.mean)
        med = [
            np.median(rel[(r >= a) & (r < b)]) if np.any((r >= a) & (r < b)) else np.nan
            for a, b in zip(bins[:-1], bins[1:], strict=True)
        ]
        ax.plot((bins[:-1] + bins[1:]) / 2, med, "o-", ms=3, label=name)
    ax.set_xlabel("distance from centre / radius")
    ax.set_ylabel("median std / mean")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return write_figure(fig, path)
