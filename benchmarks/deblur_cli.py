"""Benchmark of ``invprob deblur`` defaults: wall time on 256x256, and default quality vs an oracle-tuned TV-MAP.

1. Timing: the installed ``invprob`` script with only ``--psf`` and ``--noise-std`` on a 256x256 image (grey
   cameraman, and the colour astronaut), wall time including start-up, and the run's own breakdown.
2. Quality: on scikit-image photos never used to tune anything (cameraman was the tuning image), grey and
   colour, square and not, with Gaussian and motion PSFs: the PSNR of the default MAP (automatic weight,
   ``--weight auto``) and of each sampler's posterior mean, against the best TV-MAP over a grid of weights
   (the oracle, which knows the truth). Pass: MAP within 0.5 dB, mean within 1.5 dB of the oracle.
3. Calibration of the std map the CLI writes: on the free-boundary TV posterior that ``invprob deblur`` builds
   (cameraman frame 128x128, Gaussian PSF 1.5, noise 0.01, the SURE weight), each sampler's default output
   against a long preconditioned-Langevin reference chain on the same posterior, with a second independent
   reference to show how far two references agree.

Usage::

    python benchmarks/deblur_cli.py                   # everything, writes the deblur_cli section of RESULTS.md
    python benchmarks/deblur_cli.py --quick           # 4 cases, no RESULTS.md unless --write
    python benchmarks/deblur_cli.py --methods map,pbrwp,mla --no-timing

Runs on one torch thread (the CLI's default for images up to 512x512).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import header, markdown_table, write_section  # noqa: E402

from invprob.operators import Blur, kernel_from_spec  # noqa: E402
from invprob.solvers.deblur import DEFAULT_METHOD, DeblurConfig, deblur  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("invprob")


def photo(name: str, shape: tuple[int, int], crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A scikit-image photo as ``(C, H, W)`` float64 in [0, 1]: optional native-resolution crop, then resize."""
    from skimage import data
    from skimage.transform import resize

    a = getattr(data, name)() / 255.0
    if crop is not None:
        i, j, h, w = crop
        a = a[i : i + h, j : j + w]
    a = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]
    if a.shape[1:] != tuple(shape):
        a = resize(a, (a.shape[0], *shape), anti_aliasing=True)
    return np.clip(a, 0, 1)


# name, image, shape, crop, psf, sigma
CASES = [
    ("astronaut (colour)", "astronaut", (160, 160), None, "gaussian:1.5", 0.01),
    ("astronaut (colour)", "astronaut", (160, 160), None, "motion:9,30", 0.01),
    ("coffee (colour)", "coffee", (128, 192), None, "gaussian:1.5", 0.01),
    ("coffee (colour)", "coffee", (128, 192), None, "motion:9,30", 0.01),
    ("chelsea (colour)", "chelsea", (120, 180), None, "gaussian:1.5", 0.01),
    ("chelsea (colour)", "chelsea", (120, 180), None, "motion:9,30", 0.01),
    ("immunohistochemistry (colour)", "immunohistochemistry", (128, 128), None, "gaussian:2", 0.02),
    ("moon (grey)", "moon", (160, 160), None, "gaussian:1.5", 0.01),
    ("moon (grey)", "moon", (160, 160), None, "motion:9,30", 0.005),
    ("text (grey)", "text", (120, 312), (20, 40, 120, 312), "gaussian:1.5", 0.01),
    ("camera crop 144x208 (grey)", "camera", (144, 208), (40, 200, 144, 208), "motion:15,120", 0.02),
    ("camera crop 100x100 (grey)", "camera", (100, 100), (300, 300, 100, 100), "gaussian:1", 0.005),
]
QUICK = [0, 3, 8, 10]


MARGIN = 16  # scene outside the frame, seen through the blur (>= the largest PSF half-size used here)


def scene(name: str, shape: tuple[int, int], crop=None, periodic: bool = False) -> np.ndarray:
    """The scene: the photo with a ``MARGIN`` band around the frame (or exactly the frame if ``periodic``)."""
    if periodic:
        return photo(name, shape, crop)
    if crop is not None:
        i, j, h, w = crop
        crop = (i - MARGIN, j - MARGIN, h + 2 * MARGIN, w + 2 * MARGIN)
        return photo(name, (shape[0] + 2 * MARGIN, shape[1] + 2 * MARGIN), crop)
    H, W = shape
    return photo(name, (H + 2 * MARGIN, W + 2 * MARGIN))


def make_data(big: np.ndarray, psf: str, sigma: float, seed: int, periodic: bool = False):
    """Blur the scene, keep the frame, add noise: ``(truth, data)``. Periodic: circular blur of the frame."""
    kernel = kernel_from_spec(psf).kernel
    y = Blur(kernel, big.shape).A(torch.as_tensor(big)[None])[0].numpy()
    if not periodic:
        m = MARGIN
        big, y = big[:, m:-m, m:-m], y[:, m:-m, m:-m]
    return big, y + sigma * np.random.default_rng(seed).standard_normal(y.shape)


def psnr(truth, est) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(est, np.float64) - truth) ** 2)))


def oracle_tv_map(img, y, config: DeblurConfig) -> tuple[float, float]:
    """Best TV-MAP PSNR over 15 weights ``theta sigma`` in [0.02, 0.6] (log grid, factor 1.27): the same model
    (boundary), solver and stopping rule as the default run, only the weight differs."""
    best, best_theta = -np.inf, None
    for ts in np.geomspace(0.6, 0.02, 15):
        theta = float(ts / config.noise_std)
        res = deblur(y, replace(config, weight=theta, method="map"))
        p = psnr(img, res.map)
        if p > best:
            best, best_theta = p, theta
    return best, best_theta


def quality(methods: list[str], cases: list[int], seed: int, periodic: bool = False) -> list[dict]:
    rows = []
    for ci in cases:
        label, name, shape, crop, psf, sigma = CASES[ci]
        img, y = make_data(scene(name, shape, crop, periodic), psf, sigma, seed + ci, periodic)
        base = DeblurConfig(psf=psf, noise_std=sigma, method="map", seed=seed,
                            boundary="circular" if periodic else DeblurConfig.boundary)
        t = time.perf_counter()
        oracle, oracle_theta = oracle_tv_map(img, y, base)
        t_oracle = time.perf_counter() - t
        res = deblur(y, base, truth=img)
        weight = res.info["weight"]["value"]
        map_psnr = res.info["metrics"]["map"]["psnr_db"]
        row = {
            "image": label, "size": f"{shape[0]}x{shape[1]}", "psf": psf, "sigma": sigma,
            "input dB": res.info["metrics"]["input"]["psnr_db"],
            "oracle dB": oracle, "oracle w": oracle_theta, "auto w": weight,
            "MAP dB": map_psnr, "MAP-oracle": map_psnr - oracle,
            "auto s": res.info["timings"]["weight_s"] + res.info["timings"]["map_s"],
        }
        for m in methods:
            if m == "map":
                continue
            r = deblur(y, replace(base, method=m, weight=weight), truth=img)
            mean_psnr = r.info["metrics"]["mean"]["psnr_db"]
            row[f"{m} mean dB"] = mean_psnr
            row[f"{m} mean-oracle"] = mean_psnr - oracle
            row[f"{m} s"] = r.info["timings"].get("sampler_s", float("nan"))
            row[f"{m} cover2sd"] = r.info["metrics"].get("coverage_2std", float("nan"))
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}),
              f"(oracle grid {t_oracle:.0f} s)", flush=True)
    return rows


def timing(size: int = 256, methods: tuple[str | None, ...] = (None,)) -> list[dict]:
    """Wall time of the installed script, defaults only, on 256x256 grey and colour (other methods: grey)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="cli_bench_") as tmp:
        tmp = Path(tmp)
        runs = [("camera (grey)", "camera", None), ("astronaut (colour)", "astronaut", None)]
        runs += [("camera (grey)", "camera", m) for m in methods if m is not None]
        for label, name, method in runs:
            img, y = make_data(scene(name, (size, size)), "gaussian:1.5", 0.01, 0)
            np.save(tmp / f"{name}.npy", np.moveaxis(y, 0, -1) if y.shape[0] == 3 else y[0])
            np.save(tmp / f"{name}_truth.npy", np.moveaxis(img, 0, -1) if img.shape[0] == 3 else img[0])
            cmd = [str(SCRIPT), "deblur", str(tmp / f"{name}.npy"), "--psf", "gaussian:1.5", "--noise-std", "0.01",
                   "--truth", str(tmp / f"{name}_truth.npy"), "--out", str(tmp / f"out_{name}"), "--quiet",
                   "--force"]
            if method:
                cmd += ["--method", method]
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t
            if r.returncode != 0:
                raise RuntimeError(r.stderr)
            s = json.loads((tmp / f"out_{name}" / "summary.json").read_text())
            tm = s["timings_s"]
            row = {"image": f"{label} {size}x{size}", "method": s["method"], "device": s["device"],
                   "threads": s["threads"], "wall s (script)": wall, "run s": tm["total_s"] + tm["write_s"],
                   "weight s": tm["weight_s"], "MAP s": tm["map_s"], "sampler s": tm.get("sampler_s", 0.0),
                   "write s": tm["write_s"], "input dB": s["metrics"]["input"]["psnr_db"],
                   "MAP dB": s["metrics"]["map"]["psnr_db"]}
            if s["metrics"].get("mean"):
                row["mean dB"] = s["metrics"]["mean"]["psnr_db"]
            rows.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return rows


def _crop_result(op, r):
    from invprob.results import PosteriorResult

    return PosteriorResult(map=op.crop(r.map) if r.map is not None else None, mean=op.crop(r.mean),
                           std=op.crop(r.std), samples=op.crop(r.samples) if r.samples is not None else None,
                           info=r.info)


def calibration(size: int = 128, ref_iters: int = 6000) -> tuple[list[dict], str]:
    """Std maps of the CLI's samplers (their default particles/iterations and preconditioners) against reference
    MLA chains on the free-boundary TV posterior of ``deblur`` (centre frame only)."""
    from invprob import Posterior
    from invprob.solvers.deblur import SAMPLER_DEFAULTS, TV_SAMPLING_EPS, make_prior
    from invprob.solvers.map import map_estimate
    from invprob.solvers.samplers import MLA, PBRWP, posterior_preconditioner
    from invprob.solvers.samplers.uncertainty import calibration_report
    from invprob.solvers.samplers.uncertainty import psnr as tpsnr

    img, y_np = make_data(scene("camera", (size, size)), "gaussian:1.5", 0.01, 0)
    base = DeblurConfig(psf="gaussian:1.5", noise_std=0.01, method="map", seed=0)
    weight = deblur(y_np, base).info["weight"]["value"]
    kernel = kernel_from_spec("gaussian:1.5").kernel
    op = Blur(kernel, tuple(y_np.shape), boundary="free")
    y = torch.as_tensor(y_np, dtype=torch.float32)[None]
    post = Posterior(op, op.pad_data(y), 0.01, make_prior("tv", weight))
    x_map = map_estimate(post, method="fista", x0=op.extend(y), max_iter=500).x
    post = Posterior(op, op.pad_data(y), 0.01, make_prior("tv", weight, eps=TV_SAMPLING_EPS))  # what samplers see
    m_post = posterior_preconditioner(post, x_ref=x_map)
    rows, runs = [], {}
    t = time.perf_counter()
    runs["reference"] = (MLA(preconditioner=m_post, step_scale=0.25).run(
        post, n_particles=16, n_iter=ref_iters, burn_in=ref_iters // 5, rng=1, init=x_map, progress=False,
        keep_samples=400), time.perf_counter() - t, f"MLA 16 x {ref_iters} (step 0.25/L)")
    t = time.perf_counter()
    runs["reference 2"] = (MLA(preconditioner=m_post, step_scale=0.5).run(
        post, n_particles=16, n_iter=ref_iters // 2, burn_in=ref_iters // 10, rng=7, init=x_map, progress=False,
        keep_samples=400), time.perf_counter() - t, f"MLA 16 x {ref_iters // 2} (step 0.5/L), other seed")
    n, k = SAMPLER_DEFAULTS["pbrwp"]
    for label, pc in (("pbrwp (CLI default: posterior-unmasked M)", m_post),
                      ("pbrwp with the normal-equation M (before)", posterior_preconditioner(post))):
        t = time.perf_counter()
        runs[label] = (PBRWP(preconditioner=pc).run(post, n_particles=n, n_iter=k, rng=0, init=x_map,
                                                     progress=False, keep_samples=400),
                       time.perf_counter() - t, f"{n} particles x {k} it")
    n, k = SAMPLER_DEFAULTS["mla"]
    t = time.perf_counter()
    runs["mla (CLI default)"] = (MLA(preconditioner=m_post).run(post, n_particles=n, n_iter=k, burn_in=k // 2,
                                                               rng=0, init=x_map, progress=False, keep_samples=400),
                                 time.perf_counter() - t, f"{n} chains x {k} it")
    ref = _crop_result(op, runs["reference"][0])
    for label, (r, secs, what) in runs.items():
        rc = _crop_result(op, r)
        rep = calibration_report(rc, std_ref=ref.std, mean_ref=ref.mean, reference_samples=ref.samples)
        rows.append({"output": label, "run": what, "estimator": rep["estimator"],
                     "std ratio median": rep["std_ratio_median"],
                     "bands low/mid/high": "/".join(f"{b:.2f}" for b in rep.get("band_ratios", [])),
                     "corr smoothed std": rep["corr_smoothed"], "PSNR mean vs ref": rep["psnr_mean_vs_ref"],
                     "PSNR mean vs truth": psnr(img, rc.mean[0].numpy()), "mean std": float(rc.std.mean()),
                     "wall s": secs})
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()}), flush=True)
    note = (f"Cameraman frame {size}x{size}, gaussian:1.5, noise 0.01, TV weight {weight:.3g} (SURE), sampled with "
            f"eps {TV_SAMPLING_EPS} (the CLI's sampling posterior; its MAP uses the exact TV prox); "
            f"MAP: {tpsnr(op.crop(x_map), ref.mean):.2f} dB vs the reference mean, "
            f"{psnr(img, op.crop(x_map)[0].numpy()):.2f} dB vs the truth. Ratios and PSNR on the observed frame.\n")
    return rows, note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--methods", default=f"map,{DEFAULT_METHOD}" if DEFAULT_METHOD != "map" else "map,pbrwp,mla")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--timing-methods", default="pbrwp,mla",
                    help="methods timed on the grey image besides the default (comma-separated, may be empty)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-periodic", action="store_true",
                    help="skip the second study (periodic data deblurred with --boundary circular, MAP only)")
    ap.add_argument("--write", action="store_true", help="write RESULTS.md even with --quick")
    ap.add_argument("--no-calibration", action="store_true", help="skip the std calibration study")
    args = ap.parse_args()
    torch.set_num_threads(1)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    cases = QUICK if args.quick else list(range(len(CASES)))
    text = header("invprob deblur: default wall time and default quality vs oracle TV-MAP")
    text += f"- DEFAULT_METHOD = `{DEFAULT_METHOD}`; weight rule: predictive SURE (`--weight auto`)\n\n"
    if not args.no_timing:
        extra = tuple(m.strip() for m in args.timing_methods.split(",") if m.strip() and m.strip() != DEFAULT_METHOD)
        trows = timing(methods=(None, *extra))
        text += ("### Wall time, `invprob deblur IN --psf gaussian:1.5 --noise-std 0.01 [--method M]` on 256x256 "
                 "(the frame of a blurred scene)\n\n")
        text += markdown_table(trows) + "\n"
    if not args.no_calibration:
        crows, note = calibration(ref_iters=1500 if args.quick else 6000)
        text += ("### Calibration of the std map `invprob deblur` writes (free boundary, TV), against reference "
                 "chains on the same posterior\n\n" + note + "\n" + markdown_table(crows) + "\n")
    studies = [] if args.no_quality else [(False, methods)] + ([] if args.no_periodic else [(True, ["map"])])
    for periodic, ms in studies:
        qrows = quality(ms, cases, args.seed, periodic)
        what = ("periodic data (circular blur of the frame) with `--boundary circular`" if periodic else
                f"realistic data (the frame of a blurred scene {MARGIN} px larger on every side) with the default "
                "`--boundary free`")
        text += (f"### Default quality on held-out photos: {what}\n\nPSNR in dB; oracle = best TV-MAP over 15 "
                 "weights with the same model and solver, knowing the truth.\n\n")
        text += markdown_table(qrows) + "\n"
        d = np.array([r["MAP-oracle"] for r in qrows])
        text += (f"MAP - oracle: worst {d.min():+.2f} dB, median {np.median(d):+.2f} dB; "
                 f"{int((d >= -0.5).sum())}/{len(d)} within 0.5 dB.\n")
        for m in ms:
            if m != "map" and f"{m} mean-oracle" in qrows[0]:
                e = np.array([r[f"{m} mean-oracle"] for r in qrows])
                text += (f"{m} mean - oracle: worst {e.min():+.2f} dB, median {np.median(e):+.2f} dB; "
                         f"{int((e >= -1.5).sum())}/{len(e)} within 1.5 dB.\n")
        text += "\n"
    print(text)
    if not args.quick or args.write:
        write_section("deblur_cli", text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
