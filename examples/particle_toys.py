"""Particle samplers on a 2-D bimodal Gaussian mixture: PBRWP, BRWP, ULA, MLA (Adam preconditioner) and SVGD.

Run: ``python examples/particle_toys.py --out DIR [--quick] [--force]``. Every sampler starts from the same 100
particles drawn from a broad Gaussian covering both modes of ``0.5 N((-3, 0), 0.6^2 I) + 0.5 N((3, 0), 0.6^2 I)``
and runs 200 iterations (``--quick``: 50). The script writes ``particle_toys.png`` (the final particles over the
density contours) and prints the fraction of particles in each mode (``x_0 < 0`` / ``x_0 > 0``) against the truth
0.5 / 0.5. The Langevin baselines are 100 independent chains (their final states are shown); PBRWP and BRWP
interact through their softmax kernel, SVGD through its RBF kernel.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from invprob.solvers.samplers import BRWP, MLA, PBRWP, SVGD, ULA

SEP, SD = 3.0, 0.6


class Mixture:
    """``0.5 N(-m, SD^2 I) + 0.5 N(m, SD^2 I)``, ``m = (SEP, 0)``, as a batched potential ``V = -log density``."""

    event_shape = (2,)

    def __init__(self):
        self.means = torch.tensor([[-SEP, 0.0], [SEP, 0.0]], dtype=torch.float64)

    def _logits(self, x: torch.Tensor):
        d = x[:, None, :] - self.means.to(x)[None]
        return -0.5 * d.pow(2).sum(-1) / SD**2, d

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.logsumexp(self._logits(x)[0], 1) + math.log(2.0) + math.log(2 * math.pi * SD**2)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        logits, d = self._logits(x)
        return (torch.softmax(logits, 1)[..., None] * d).sum(1) / SD**2


def samplers() -> dict:
    """The five samplers, each with a step that is stable on this target (``L = 1 / SD^2`` near the modes; PBRWP's
    ``M = SD^2 I`` makes its ``M grad V`` unit-Lipschitz there)."""
    within = SD**2 * torch.eye(2, dtype=torch.float64)  # M = the inverse Hessian at either mode
    return {
        "PBRWP": PBRWP(preconditioner=within, T=0.1, step=0.1, uncertainty="particles"),
        "BRWP": BRWP(T=0.1, step=0.05, uncertainty="particles"),
        "ULA": ULA(step=0.05),
        "MLA": MLA(step=0.05, preconditioner="adam"),
        "SVGD": SVGD(),
    }


def run_all(n_iter: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Final particles of every sampler from one shared initialisation."""
    target = Mixture()
    init = 3.0 * torch.randn(100, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = {}
    for name, smp in samplers().items():
        final = {}
        smp.run(target, n_particles=100, n_iter=n_iter, rng=seed, init=init, progress=False,
                callback=lambda it, x, logs, final=final: final.update(x=x))
        out[name] = final["x"]
    return {"init": init, **out}


def table(particles: dict[str, torch.Tensor]) -> str:
    """Mode weights (left, right) of each sampler against the truth 0.5 / 0.5."""
    rows = [f"{'sampler':8s} {'left':>6s} {'right':>6s} {'|right - 0.5|':>14s}"]
    for name, x in particles.items():
        right = float((x[:, 0] > 0).double().mean())
        rows.append(f"{name:8s} {1 - right:6.2f} {right:6.2f} {abs(right - 0.5):14.2f}")
    rows.append(f"{'truth':8s} {0.5:6.2f} {0.5:6.2f} {0.0:14.2f}")
    return "\n".join(rows)


def plot(particles: dict[str, torch.Tensor], path: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    g = torch.linspace(-6, 6, 200, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    dens = torch.exp(-Mixture().fn(torch.stack([xx.ravel(), yy.ravel()], 1))).reshape(xx.shape)
    fig, axes = plt.subplots(1, len(particles), figsize=(3 * len(particles), 3.2), sharex=True, sharey=True)
    for ax, (name, x) in zip(axes, particles.items(), strict=True):
        ax.contour(xx.numpy(), yy.numpy(), dens.numpy(), levels=8, cmap="Greys", linewidths=0.7)
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=6, color="C3" if name != "init" else "C0")
        ax.set_title(name)
        ax.set_xlim(-6, 6)
        ax.set_ylim(-6, 6)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (refused when it exists and is not empty)")
    p.add_argument("--quick", action="store_true", help="50 iterations instead of 200")
    p.add_argument("--force", action="store_true", help="write into an existing non-empty folder")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        p.error(f"{out} exists and is not empty; pass --force to write into it")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    particles = run_all(50 if args.quick else 200, args.seed)
    print(table({k: v for k, v in particles.items() if k != "init"}))
    plot(particles, out / "particle_toys.png", dpi=80 if args.quick else 120)
    print(f"wrote {out / 'particle_toys.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
