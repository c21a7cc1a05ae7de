"""The calibration suite: the default ``invprob deblur`` std map against independent reference chains.

Twelve deblurring posteriors the tests do not contain (Gaussian blur std 1-4 and motion PSFs, noise 0.002-0.05,
TV / Haar-L1 / Gaussian priors, photos, textures, astronomy and microscopy images, grey and colour, square and
non-square, free and circular boundaries, 128^2 and 256^2). Each posterior is exactly the one the pipeline builds
(:func:`invprob.solvers.deblur.deblur` with the true noise std and the oracle weight: the MAP-PSNR-best weight on a
geometric grid): ``Blur(psf, boundary)``, the data padded for the free boundary, TV smoothed with
``TV_SAMPLING_EPS``, the Haar tiling anchored to the frame.

Reference (``--make-references``): two independent groups of 8 chains from the MAP, each its own seed: invprob's
posterior Fourier-preconditioned SK-ROCK chains (s = 10) at step 0.3 l_s/L (the default uses 0.5) with control
variates, moments of the second half. Why this sampler: on an exact Gaussian posterior its moments are exact (the
test ``test_skrock_chains_with_control_variates_are_exact_on_a_gaussian``; SK-ROCK's plain moments are 10-18 %
low there), and on the TV posteriors c01/c02 it agrees with small-step Euler chains (step 0.1/L, 6000-8000
iterations) to a median std ratio of 1.015 / 0.974 and corr 0.99 / 0.88 (the Euler chains had not converged on
c01: R-hat 1.21), while the SK-ROCK chains at steps 0.1, 0.3, 0.5 agree with each other to 1.002 / 0.995 (corr
0.998). The groups' mutual agreement (mean PSNR between groups, smoothed std correlation, median std ratio) is
stored; a reference whose groups disagree (corr < 0.95 or mean < 45 dB) is rerun twice as long, up to 4x. Kept as
npz in ``benchmarks/data/calibration_suite/`` (the data ``y`` float32, the pooled and per-group mean/std float16,
the band variances of the reference draws, the definition, the weight grid, the settings).

Evaluation (``--evaluate``): the default pipeline (PBRWP, its self-checking posterior chains, ``--time-limit`` 60 s)
on each posterior; pass = mean >= 36 dB vs the reference mean, median std ratio in [0.85, 1.15], the three band
ratios in [0.7, 1.4], smoothed (2 px) std correlation >= 0.85. A case that misses them must not be labelled
converged by the run's own diagnostics ("FALSE CONVERGED" in the table is a defect).

    .venv/bin/python benchmarks/calibration_suite.py --make-references            # all missing references
    .venv/bin/python benchmarks/calibration_suite.py --make-references --only c02 --force
    .venv/bin/python benchmarks/calibration_suite.py --evaluate --write             # table into RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _report import header, markdown_table, write_section  # noqa: E402

from invprob import Posterior  # noqa: E402
from invprob.operators import Blur  # noqa: E402
from invprob.solvers.deblur import TV_SAMPLING_EPS, DeblurConfig, deblur, make_prior, validate_config  # noqa: E402
from invprob.solvers.samplers import PBRWP, PosteriorLangevinConfig, posterior_preconditioner  # noqa: E402
from invprob.solvers.samplers.uncertainty import (  # noqa: E402
    band_variances,
    psnr,
    smoothed_correlation,
    std_ratio_median,
)

DATA = Path(__file__).resolve().parent / "data" / "calibration_suite"
VALIDATION = (
    "Why these references can be trusted (measured once during development, 1 thread, 16 chains from the MAP; the "
    "figures are median std ratio / smoothed std corr / mean PSNR against the first row): on an exact Gaussian "
    "posterior (64^2, FFT) SK-ROCK chains with control variates give std ratio 1.000 (steps 0.3-0.5 l_s/L), while "
    "SK-ROCK's plain moments are 0.82-0.94 and Euler's 1.07 at step 0.5/L (so the references keep the control "
    "variates, and the default too). On the TV posterior c02 (blur 3, noise 0.004), Euler chains at step 0.1/L "
    "(6000 iterations) vs SK-ROCK + CV at 0.3: 1.015 / 0.989 / 40.3 dB; Euler 0.25/L vs 0.1/L: 1.011 / 0.996. On "
    "c01 (a diffuse posterior, std 0.12): SK-ROCK + CV at steps 0.1 and 0.5 vs 0.3: 1.002 / 0.999 / 59 dB and "
    "0.995 / 0.998 / 55 dB; Euler 0.1/L (8000 iterations) had not converged (R-hat 1.21) and gave 0.974 / 0.884. "
    "Band ratios compare raw chain draws (no control variates): on the Gaussian-prior case c10 they sit near 0.8 "
    "because both the default's and the reference's SK-ROCK draws are under-dispersed there while their "
    "control-variate std maps agree (ratio 1.000)."
)
AGREE_PSNR, AGREE_CORR = 45.0, 0.95
# Cases whose reference is missing or whose two chain groups do not agree to AGREE_PSNR / AGREE_CORR yet, after the
# 4x lengthening cap (declared, marked in RESULTS.md, and checked by tests/test_calibration_suite.py to be exactly
# those cases): the suite is not complete while any is.
PENDING: tuple[str, ...] = ("c05",)
PASS = {"mean_db": 36.0, "ratio": (0.85, 1.15), "band": (0.7, 1.4), "corr": 0.85}


@dataclass(frozen=True)
class Case:
    """One suite posterior: a scikit-image picture resized to ``shape`` (H, W), blurred by ``psf`` with ``noise``."""

    name: str
    image: str
    kind: str  # photo, texture, astronomy, microscopy
    shape: tuple[int, int]
    psf: str
    noise: float
    prior: str
    boundary: str = "free"
    colour: bool = False
    n_iter: int = 600  # reference chain length per group (doubled while the groups disagree)


CASES = (
    Case("c01", "camera", "photo", (128, 128), "gaussian:1.5", 0.01, "tv"),
    Case("c02", "camera", "photo", (96, 128), "gaussian:3", 0.004, "tv"),
    Case("c03", "camera", "photo", (96, 128), "gaussian:3", 0.004, "tv", "circular"),
    Case("c04", "brick", "texture", (128, 128), "motion:9,30", 0.02, "tv"),
    Case("c05", "hubble_deep_field", "astronomy", (128, 128), "gaussian:4", 0.002, "tv"),
    Case("c06", "cell", "microscopy", (128, 160), "gaussian:2", 0.05, "tv"),
    Case("c07", "astronaut", "photo", (128, 128), "gaussian:2", 0.01, "tv", colour=True),
    Case("c08", "camera", "photo", (128, 128), "gaussian:2", 0.02, "l1", "circular"),
    Case("c09", "moon", "photo", (128, 128), "gaussian:1", 0.01, "l1"),
    Case("c10", "coins", "photo", (128, 128), "gaussian:2.5", 0.01, "gaussian"),
    Case("c11", "camera", "photo", (256, 256), "gaussian:2", 0.01, "tv"),
    Case("c12", "grass", "texture", (256, 256), "motion:15,60", 0.005, "tv", n_iter=300),
)


# ------------------------------------------------------------------------------------------------- the problem
def picture(case: Case, shape: tuple[int, int]) -> np.ndarray:
    """The clean picture ``(C, H, W)`` in [0, 1] at ``shape`` (a centred square-ish crop, then resized)."""
    from skimage import data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    img = getattr(data, case.image)()
    img = img.astype(np.float64) / (255.0 if img.max() > 1 else 1.0)
    if img.ndim == 3 and not case.colour:
        img = rgb2gray(img)
    img = img if img.ndim == 3 else img[..., None]
    H, W = img.shape[:2]
    aspect = shape[1] / shape[0]
    h = min(H, int(W / aspect))
    w = int(h * aspect)
    img = img[(H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w]
    return np.moveaxis(resize(img, shape, anti_aliasing=True), -1, 0)


def observation(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """(truth, y), both ``(C, H, W)``: the frame of a larger blurred scene (free boundary) or a periodic blur."""
    kernel = validate_config(DeblurConfig(psf=case.psf), (1, *case.shape)).kernel
    m = max(kernel.shape) // 2 + 8 if case.boundary == "free" else 0
    scene = picture(case, (case.shape[0] + 2 * m, case.shape[1] + 2 * m))
    op = Blur(kernel, scene.shape, boundary="circular")
    blurred = op.A(torch.as_tensor(scene)[None])[0].numpy()
    if m:
        scene, blurred = scene[:, m:-m, m:-m], blurred[:, m:-m, m:-m]
    rng = np.random.default_rng(int(case.name[1:]))  # one fixed noise draw per case
    return scene, blurred + case.noise * rng.standard_normal(blurred.shape)


def config(case: Case, weight: float, **kw) -> DeblurConfig:
    return DeblurConfig(psf=case.psf, noise_std=case.noise, prior=case.prior, weight=float(weight),
                        boundary=case.boundary, **kw)


def target(case: Case, y: np.ndarray, weight: float) -> tuple[Posterior, Blur]:
    """The posterior the pipeline samples (TV with the sampling eps), and its operator."""
    kernel = validate_config(config(case, weight), y.shape).kernel
    op = Blur(kernel, tuple(y.shape), boundary=case.boundary)
    eps = TV_SAMPLING_EPS if case.prior == "tv" else None
    prior = make_prior(case.prior, weight, eps=eps, origin=op.frame_origin)
    yt = torch.as_tensor(y, dtype=torch.float32)[None]
    return Posterior(op, op.pad_data(yt), case.noise, prior), op


def map_start(case: Case, y: np.ndarray, weight: float, op: Blur) -> torch.Tensor:
    """The pipeline's MAP on the operator's domain (extended for the free boundary): where every chain starts."""
    x_map = torch.as_tensor(deblur(y, config(case, weight, method="map")).map, dtype=torch.float32)[None]
    return op.extend(x_map) if case.boundary == "free" else x_map


def oracle_weight(case: Case, truth: np.ndarray, y: np.ndarray) -> tuple[float, list]:
    """The MAP-PSNR-best weight: powers of 2, then the sqrt(2) neighbours of the best."""
    def score(w):
        res = deblur(y, config(case, w, method="map"), truth=truth)
        return float(res.info["metrics"]["map"]["psnr_db"])

    lo, hi = (0, 14) if case.prior == "gaussian" else (-1, 11)
    grid = {2.0**k: score(2.0**k) for k in range(lo, hi)}
    best = max(grid, key=grid.get)
    for w in (best / math.sqrt(2), best * math.sqrt(2)):
        grid[w] = score(w)
    best = max(grid, key=grid.get)
    return best, sorted([round(w, 4), round(p, 3)] for w, p in grid.items())


# ------------------------------------------------------------------------------------------------- references
REF_CHAINS = {"stages": 10, "step_scale": 0.3, "control_variates": True, "overdispersion": 0.0, "adaptive": False}


def chain_group(post, op, x_map, m_post, n_iter: int, seed: int):
    """8 chains from the MAP: invprob's preconditioned SK-ROCK posterior chains (control variates on: exact on
    Gaussian posteriors, where SK-ROCK's plain moments are 10-18 % low) at a smaller step than the default and
    much longer, moments of the second half, hosted by a 2-iteration PBRWP run."""
    chains = PosteriorLangevinConfig(n_iter=n_iter, **REF_CHAINS)
    res = PBRWP(preconditioner=m_post, chains=chains, progress_chains=True).run(
        post, n_particles=8, n_iter=2, rng=seed, init=x_map, progress=False, keep_samples=400)
    return op.crop(res.mean)[0], op.crop(res.std)[0], op.crop(res.samples)


def agreement(a, b) -> dict:
    return {"mean_psnr_db": psnr(a[0], b[0]), "std_corr_smoothed": smoothed_correlation(a[1], b[1]),
            "std_ratio_median": std_ratio_median(a[1], b[1])}


def make_reference(case: Case, start_iter: int | None = None, max_factor: int = 4) -> dict:
    """Two independent chain groups of ``start_iter`` (default ``case.n_iter``) iterations, doubled until they agree
    or reach ``max_factor * case.n_iter``."""
    t0 = time.perf_counter()
    truth, y = observation(case)
    weight, grid = oracle_weight(case, truth, y)
    post, op = target(case, y, weight)
    x_map = map_start(case, y, weight, op)
    m_post = posterior_preconditioner(post, x_ref=x_map)
    n_iter = start_iter or case.n_iter
    while True:
        groups = [chain_group(post, op, x_map, m_post, n_iter, seed) for seed in (1, 2)]
        agree = agreement(*groups)
        print(case.name, n_iter, agree, flush=True)
        if (agree["mean_psnr_db"] >= AGREE_PSNR and agree["std_corr_smoothed"] >= AGREE_CORR) \
                or n_iter >= max_factor * case.n_iter:
            break
        n_iter *= 2
    samples = torch.cat([g[2] for g in groups])
    mean = 0.5 * (groups[0][0] + groups[1][0])
    var = 0.5 * (groups[0][1] ** 2 + groups[1][1] ** 2) + 0.25 * (groups[0][0] - groups[1][0]) ** 2
    return {"definition": json.dumps(asdict(case)), "y": y.astype(np.float32), "weight": weight,
            "weight_grid": json.dumps(grid), "mean": mean.numpy().astype(np.float16),
            "std": var.sqrt().numpy().astype(np.float16),
            "group_means": np.stack([g[0].numpy() for g in groups]).astype(np.float16),
            "group_stds": np.stack([g[1].numpy() for g in groups]).astype(np.float16),
            "band_variances": np.array(band_variances(samples)), "agreement": json.dumps(agree),
            "settings": json.dumps({"sampler": "posterior SK-ROCK chains, posterior Fourier preconditioner at the MAP",
                                    **REF_CHAINS, "groups": 2, "chains_per_group": 8, "n_iter": n_iter,
                                    "burn_in": n_iter // 2,
                                    "wall_s": round(time.perf_counter() - t0, 1),
                                    "threads": torch.get_num_threads()})}


def save_reference(case: Case, ref: dict, *, force: bool) -> Path:
    path = DATA / f"{case.name}.npz"
    if path.exists() and not force:
        raise SystemExit(f"{path} exists: pass --force to replace it")
    DATA.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **ref)
    tmp.replace(path)
    return path


def load_reference(case: Case) -> dict:
    with np.load(DATA / f"{case.name}.npz") as z:
        out = {k: z[k] for k in z.files}
    for k in ("definition", "agreement", "settings", "weight_grid"):
        out[k] = json.loads(str(out[k]))
    return out


# ------------------------------------------------------------------------------------------------- evaluation
def compare(mean, std, samples, ref: dict) -> dict:
    rm, rs = torch.as_tensor(ref["mean"].astype(np.float64)), torch.as_tensor(ref["std"].astype(np.float64))
    mean, std = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
    out = {"mean_db": psnr(mean, rm), "ratio": std_ratio_median(std, rs), "corr": smoothed_correlation(std, rs)}
    if samples is not None:
        est = band_variances(torch.as_tensor(samples))
        out["bands"] = [e / r for e, r in zip(est, ref["band_variances"], strict=True)]
    return out


def passes(fig: dict) -> bool:
    lo, hi = PASS["ratio"]
    blo, bhi = PASS["band"]
    return (fig["mean_db"] >= PASS["mean_db"] and lo <= fig["ratio"] <= hi and fig["corr"] >= PASS["corr"]
            and all(blo <= b <= bhi for b in fig.get("bands", [1.0])))


def verdict(ok: bool, converged: bool) -> str:
    if ok:
        return "pass" if converged else "pass (not labelled converged)"
    return "FALSE CONVERGED" if converged else "missed, flagged by the run"


def evaluate(case: Case, ref: dict) -> dict:
    t0 = time.perf_counter()
    res = deblur(ref["y"].astype(np.float64), config(case, float(ref["weight"]), keep_samples=400))
    wall = time.perf_counter() - t0
    fig = compare(res.mean, res.std, res.samples, ref)
    unc = res.info["uncertainty"]
    converged = str(unc.get("calibration_status", "")).startswith(("converged", "exact"))
    agree = ref["agreement"]
    d = ref["definition"]
    return {"case": case.name, "image": f"{d['image']} ({d['kind']}{', colour' if d['colour'] else ''})",
            "size": "x".join(map(str, d["shape"])), "psf": d["psf"], "noise": d["noise"], "prior": d["prior"],
            "boundary": d["boundary"], "weight": round(float(ref["weight"]), 3),
            "mean dB": fig["mean_db"], "std ratio": fig["ratio"],
            "bands": [round(float(b), 2) for b in fig.get("bands", [])], "corr": fig["corr"],
            "wall s": wall, "chain it": unc.get("chain_iterations"), "stopped by": unc.get("stopped_by"),
            "status": "converged" if converged else "not converged",
            "verdict": verdict(passes(fig), converged),
            "ref agreement (dB / corr)": f"{agree['mean_psnr_db']:.1f} / {agree['std_corr_smoothed']:.3f}"
                                         + (" (short)" if case.name in PENDING else ""),
            "_status": unc.get("calibration_status")}


# ------------------------------------------------------------------------------------------------- command line
def selected(only: list[str] | None) -> list[Case]:
    names = {c.name for c in CASES}
    bad = [n for n in only or [] if n not in names]
    if bad:
        raise SystemExit(f"unknown case(s) {', '.join(bad)}: use {', '.join(sorted(names))}")
    return [c for c in CASES if not only or c.name in only]


def report(rows: list[dict], threads: int) -> str:
    cmd = "`.venv/bin/python benchmarks/calibration_suite.py --evaluate --write`"
    n_false = sum(r["verdict"] == "FALSE CONVERGED" for r in rows)
    n_pass = sum(r["verdict"].startswith("pass") for r in rows)
    lines = [header("Calibration suite: default `invprob deblur` std maps against reference chains"), "",
             f"Command: {cmd} ({threads} torch thread(s)); references: "
             "`--make-references` (two independent groups of 8 SK-ROCK chains with control variates each, posterior "
             "Fourier preconditioner, step 0.3 l_s/L; their agreement in the last column). Pass: mean >= 36 dB vs "
             "the reference mean, median std ratio in [0.85, 1.15], bands in [0.7, 1.4], smoothed (2 px) corr >= "
             "0.85. Default run: PBRWP 8 x 20, SK-ROCK posterior chains until their diagnostics pass, time limit "
             "60 s; true noise std and oracle weight given.", "",
             markdown_table([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]), "",
             f"{n_pass} of {len(rows)} pass; {n_false} labelled converged while missing the figures."
             + (f" References missing or short of the agreement target (45 dB / 0.95) after the 4x lengthening "
                f"cap: {', '.join(PENDING)}." if PENDING else ""), "",
             VALIDATION]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--make-references", action="store_true")
    what.add_argument("--evaluate", action="store_true")
    ap.add_argument("--only", nargs="+", help="case names (c01 ...)")
    ap.add_argument("--force", action="store_true", help="replace existing references")
    ap.add_argument("--write", action="store_true", help="write the table into RESULTS.md")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--start-iter", type=int, default=None,
                    help="reference chain length to start from (default: the case's; then doubled)")
    ap.add_argument("--max-factor", type=int, default=4, help="longest reference: this many times the case's length")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = selected(args.only)
    if args.make_references:
        for case in cases:
            if (DATA / f"{case.name}.npz").exists() and not args.force:
                print(f"{case.name}: reference exists (use --force to remake)")
                continue
            ref = make_reference(case, args.start_iter, args.max_factor)
            print(f"{case.name}: saved {save_reference(case, ref, force=args.force)}", flush=True)
        return
    rows = []
    for case in cases:
        if not (DATA / f"{case.name}.npz").exists():
            print(f"{case.name}: no reference, not evaluated", flush=True)
            continue
        rows.append(evaluate(case, load_reference(case)))
        print(json.dumps(rows[-1], default=float), flush=True)
    text = report(rows, torch.get_num_threads())
    print(text)
    if args.write:
        write_section("calibration_suite", text)


if __name__ == "__main__":
    main()
