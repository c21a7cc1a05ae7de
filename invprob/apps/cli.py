"""The ``invprob`` command line: ``deblur``, ``blur``, ``demo`` (and ``eit``, ``train`` when installed).

Every user error (missing or unreadable input, bad PSF, bad option, refused overwrite, no CUDA) prints one line
``invprob: error: ...`` on stderr and returns exit code 2 before anything is written. Outputs are written into a
temporary folder next to the target and renamed into place at the end, so an interrupted run never leaves a
half-written result; Ctrl-C during the computation writes the partial result (with a note in
``summary.json``) and returns 130.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
import warnings
from pathlib import Path

from invprob.apps import signals
from invprob.apps.common import (
    DEVICE_HELP,
    MAX_ITERS,
    MAX_PARTICLES,
    Formatter,
    Parser,
    bounded_int,
    capped_threads,
    check_free_space,
    check_out_dir,
    check_out_file,
    cli_device,
    seed_type,
)
from invprob.apps.errors import EXIT_INTERRUPTED, EXIT_USAGE, CLIError
from invprob.apps.io import normal_permissions, staged_directory

__all__ = ["build_parser", "main"]

FORMATS = ("png", "tiff", "npz")
PROG = "invprob"
#: The boundary models ``invprob blur`` offers (same-size output: the frame-to-frame models of Blur).
BLUR_BOUNDARIES = ("circular", "reflect", "replicate", "zero")


def _psf(spec: str, voxel_size: tuple[float, float, float] | None = None):
    """The PSF of ``--psf`` (:func:`invprob.operators.kernel_from_spec`), or a one-line CLIError."""
    from invprob.operators import kernel_from_spec

    try:
        return kernel_from_spec(spec, spacing=voxel_size)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _validate(config, shape):
    """:func:`invprob.solvers.deblur.validate_config` with its ValueError as a CLIError."""
    from invprob.solvers import deblur as pipeline

    try:
        return pipeline.validate_config(config, shape)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


# ------------------------------------------------------------------------------------------------------ parsing
def _noise_arg(text: str, *, allow_zero: bool = False, allow_auto: bool = True):
    s = str(text).strip().lower()
    if allow_auto and s == "auto":
        return "auto"
    try:
        v = float(s)
    except ValueError:
        raise CLIError(f"--noise-std must be a number{' or auto' if allow_auto else ''}, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise CLIError(f"--noise-std must be finite, got {text!r}")
    if v < 0:
        raise CLIError(f"--noise-std must not be negative, got {text}")
    if v == 0 and not allow_zero:
        raise CLIError("--noise-std must be positive (or auto), got 0")
    return v


def _weight_arg(text: str):
    s = str(text).strip().lower()
    if s == "auto":
        return "auto"
    try:
        v = float(s)
    except ValueError:
        raise CLIError(f"--weight must be a number or auto, got {text!r}") from None
    if not (v >= 0 and v != float("inf")):
        raise CLIError(f"--weight must be a non-negative finite number or auto, got {text}")
    return v


def _voxel_size_arg(text: str | None) -> tuple[float, float, float] | None:
    """``--voxel-size DZ,DY,DX``: three positive finite numbers (None when not given)."""
    if text is None:
        return None
    try:
        vals = tuple(float(p) for p in str(text).split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) and v > 0 for v in vals):
        raise CLIError(f"--voxel-size takes three positive numbers DZ,DY,DX, got {text!r}")
    return vals


def _formats_arg(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(p.strip().lower() for p in str(text).split(",") if p.strip()))
    bad = [p for p in items if p not in FORMATS]
    if bad or not items:
        raise CLIError(f"--format takes a comma-separated list of {', '.join(FORMATS)}; got {text!r}")
    return items


def _add_common(p: argparse.ArgumentParser, *, out_default: str | None, out_help: str) -> None:
    p.add_argument("--out", default=out_default, metavar="DIR", help=out_help)
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--seed", type=seed_type(), default=0, help="random seed (noise probes, sampler), 0 to 2^63 - 1")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (auto: CUDA when available)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no messages")
    p.add_argument("--threads", type=bounded_int("--threads", 1), default=None, metavar="N",
                   help="CPU threads for torch (default: 1 up to 512x512 pixels, where more threads were measured "
                        "slower, else torch's default; capped to the available cores)")


def _add_deblur_options(p: argparse.ArgumentParser, method_default: str) -> None:
    from invprob.solvers.deblur import BOUNDARIES, DEFAULT_PRIOR, METHODS, PRIORS

    p.add_argument("--prior", default=DEFAULT_PRIOR, choices=PRIORS,
                   help="tv: total variation; l1: L1 on Haar wavelets; gaussian: Gaussian smoothness")
    p.add_argument("--weight", default="auto", metavar="W|auto",
                   help="prior weight (1/intensity for tv and l1); auto: minimum of the predictive SURE risk")
    p.add_argument("--method", default=method_default, choices=METHODS,
                   help="map: MAP only; a sampler adds the posterior mean and pixelwise std")
    p.add_argument("--particles", type=bounded_int("--particles", 1, MAX_PARTICLES), default=None, metavar="N",
                   help=f"particles or chains, at most {MAX_PARTICLES} (default: per sampler)")
    p.add_argument("--iters", type=bounded_int("--iters", 1, MAX_ITERS), default=None, metavar="K",
                   help=f"sampler iterations, fixed exactly (pbrwp: also its posterior chains), at most {MAX_ITERS}; "
                        "default: pbrwp's chains run until their convergence diagnostics pass or --time-limit")
    p.add_argument("--time-limit", type=float, default=60.0, metavar="SECONDS",
                   help="stop pbrwp's self-checking chains after this long and say they did not converge "
                        "(default 60; 0: no limit)")
    p.add_argument("--boundary", default="free", choices=BOUNDARIES,
                   help="free: nothing assumed outside the frame (reconstructs a margin, then crops); circular: "
                        "periodic scene (right for data made by 'invprob blur', wrong for real photos)")
    p.add_argument("--format", default="png,npz", metavar="LIST",
                   help="comma-separated output formats among png, tiff, npz (summary.json and report.png always)")


DEBLUR_EPILOG = """\
examples:
  invprob blur photo.png --psf gaussian:2 --noise-std 0.01 --seed 1 --out blurred.png
  invprob deblur blurred.png --psf gaussian:2 --noise-std 0.01 --out result
  invprob deblur blurred.png --psf motion:9,30 --noise-std auto --truth photo.png --out result --force
  invprob deblur scan.tif --psf psf.npy --noise-std 0.003 --method pbrwp --format png,tiff,npz --out result

  invprob deblur stack.tif --psf psf.tif --voxel-size 0.3,0.1,0.1 --out result3d
  invprob deblur stack.npy --volume --psf gaussian3d:0.45,0.15,0.15 --voxel-size 0.3,0.1,0.1 --out result3d

outputs in DIR: map.png, mean.png, std.png (own scale, see summary.json), report.png, result.npz,
summary.json (parameters, estimated noise and weight, timings, device, versions, PSNR/SSIM with --truth).
Intensities: integer images are scaled to [0, 1] (noise std and result.npz in those units), float images
are used as stored. PNG outputs keep the input's bit depth.

volumes: a 3-D PSF (a multi-page TIFF or 3-D NPY stack, or gaussian3d:SZ,SY,SX) deblurs a volume in 3-D.
The outputs are then map.tif, mean.tif, std.tif (float32 stacks, one page per plane, working units),
report.png (XY, XZ and YZ sections through the centre of input, MAP, mean and std), summary.json (with the
peak memory) and result.npz (C, D, H, W) when --format has npz; --format png is ignored for volumes.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``invprob`` argument parser (subcommands ``deblur``, ``blur``, ``demo``; ``eit``/``train`` if present)."""
    from invprob import __version__
    from invprob.apps.io import VOLUME_RULE
    from invprob.operators import PSF_HELP
    from invprob.solvers.deblur import DEFAULT_METHOD

    parser = Parser(
        prog=PROG,
        description="Bayesian imaging from the command line: MAP, posterior mean and pixelwise uncertainty.",
        epilog="examples:\n  invprob demo --out demo_output\n  invprob deblur blurred.png --psf gaussian:2 "
               "--noise-std 0.01 --out result\n\nRun 'invprob COMMAND --help' for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"invprob {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("deblur", help="deblur an image: MAP, posterior mean and std, figure and numbers",
                       description="Deblur INPUT (PNG, JPEG, TIFF 8/16-bit/float, NPY; grey or RGB), or a 3-D "
                                   "stack (multi-page TIFF, NPY with --volume) with a 3-D PSF.",
                       epilog=DEBLUR_EPILOG, formatter_class=Formatter)
    p.add_argument("input", metavar="INPUT", help="blurred image, or a volume: " + VOLUME_RULE)
    p.add_argument("--psf", required=True, metavar="SPEC", help=PSF_HELP)
    p.add_argument("--volume", action="store_true",
                   help="read INPUT as a 3-D stack (needed for an .npy or single-page TIFF volume)")
    p.add_argument("--voxel-size", default=None, metavar="DZ,DY,DX",
                   help="voxel size of a volume (any unit): the unit of gaussian3d sigmas and the aspect of the "
                        "report's sections (default: 1,1,1, sigmas in voxels)")
    p.add_argument("--noise-std", default="auto", metavar="S|auto",
                   help="noise standard deviation in working units; auto: wavelet MAD estimate")
    p.add_argument("--truth", default=None, metavar="CLEAN", help="clean image: adds PSNR/SSIM and error maps")
    _add_deblur_options(p, DEFAULT_METHOD)
    _add_common(p, out_default=None, out_help="output folder (default: INPUT's name + '_deblurred')")

    p = sub.add_parser("blur", help="blur (and add noise to) a clean image: make test data",
                       description="Blur CLEAN with a PSF and add white Gaussian noise (test data for deblur).",
                       epilog="examples:\n  invprob blur clean.png --psf gaussian:1.5 --noise-std 0.01 --seed 0 "
                              "--out blurred.png\n  invprob blur clean.tif --psf motion:15,45 --noise-std 0.005 "
                              "--out blurred.npy\n\n.png keeps the input's bit depth (rounded and clipped); "
                              ".tif/.tiff (float32) and .npy (float64) keep the exact values.",
                       formatter_class=Formatter)
    p.add_argument("clean", metavar="CLEAN", help="clean image")
    p.add_argument("--psf", required=True, metavar="SPEC", help=PSF_HELP)
    p.add_argument("--noise-std", default="0.01", metavar="S",
                   help="noise standard deviation in working units ([0, 1] for integer images); 0: no noise")
    p.add_argument("--boundary", default="circular", choices=BLUR_BOUNDARIES,
                   help="blur boundary condition (circular: periodic test data; 'invprob deblur --boundary "
                        "circular' is then the exact model, the default --boundary free also fits it)")
    _add_common(p, out_default=None, out_help="output image file (.png, .tif/.tiff or .npy); required")

    p = sub.add_parser("demo", help="blur scikit-image's camera and deblur it end to end",
                       description="Blur scikit-image's cameraman (the frame of a blurred scene larger than "
                                   "it), add noise, and deblur it with the default method, with the truth for "
                                   "the metrics. Writes the deblur outputs plus input.png and truth.png.",
                       epilog="examples:\n  invprob demo\n  invprob demo --out demo_output --force\n"
                              "  invprob demo --size 128 --psf motion:9,30 --method map",
                       formatter_class=Formatter)
    p.add_argument("--size", type=bounded_int("--size", 32, 2048), default=256,
                   help="side of the (resized) cameraman image, 32 to 2048")
    p.add_argument("--psf", default="gaussian:1.5", metavar="SPEC", help=PSF_HELP)
    p.add_argument("--noise-std", default="0.01", metavar="S", help="noise standard deviation (image in [0, 1])")
    _add_deblur_options(p, DEFAULT_METHOD)
    _add_common(p, out_default="demo_output", out_help="output folder")

    _add_plugins(sub)
    return parser


def _add_plugins(sub) -> None:
    """``eit`` (invprob.apps.eit_cli) and ``train`` (invprob.apps.train_cli), only when those modules exist."""
    for mod_name, add_name, run_name, cmd in (
        ("invprob.apps.eit_cli", "add_parser", "run", "eit"),
        ("invprob.apps.train_cli", "add_train_parser", "run_train", "train"),
    ):
        try:
            if importlib.util.find_spec(mod_name) is None:
                continue
        except (ImportError, ValueError):
            continue
        try:
            mod = importlib.import_module(mod_name)
            before = set(sub.choices)
            getattr(mod, add_name)(sub)
            for name in set(sub.choices) - before:
                sub.choices[name].set_defaults(_plugin_run=getattr(mod, run_name))
        except Exception as exc:  # a broken plugin must not break the other commands
            reason = " ".join(str(exc).split()) or type(exc).__name__
            p = sub.add_parser(cmd, help=f"(unavailable: {reason})", add_help=True)
            p.set_defaults(_plugin_error=f"invprob {cmd} is unavailable: {reason}")


# ------------------------------------------------------------------------------------------------------ outputs
def _write_arrays(tmp: Path, result, data, meta, truth, formats, extra: dict, files: dict, png_maps: dict):
    """Write the maps (PNG/TIFF/NPZ as asked) into ``tmp``; fills ``files`` and ``png_maps``, returns the std
    PNG's scale."""

    import numpy as np

    from invprob.apps import io as iio

    std_scale = None
    if result.std is not None:
        std_scale = float(np.max(result.std)) or 1.0
    if "png" in formats:
        for name, arr in (("map", result.map), ("mean", result.mean)):
            if arr is not None:
                png_maps[f"{name}.png"] = iio.write_png(tmp / f"{name}.png", arr, meta)
                files[f"{name}.png"] = f"{'MAP estimate' if name == 'map' else 'posterior mean'}, input's bit depth"
        if result.std is not None:
            png_maps["std.png"] = iio.write_png(tmp / "std.png", result.std, meta, value_range=(0.0, std_scale))
            files["std.png"] = f"posterior std on its own scale: full white = {std_scale:.4g} (working units)"
    if "tiff" in formats:
        for name, arr in (("map", result.map), ("mean", result.mean), ("std", result.std)):
            if arr is not None:
                iio.write_tiff(tmp / f"{name}.tiff", arr)
                files[f"{name}.tiff"] = f"{name}, float32, working units"
    if "npz" in formats:
        _write_npz(tmp, result, data, truth, extra, files, "(C, H, W)")
    for name, (arr, desc) in extra.get("images", {}).items():
        png_maps[name] = iio.write_png(tmp / name, arr, meta)
        files[name] = desc
    return std_scale


def _write_npz(tmp: Path, result, data, truth, extra: dict, files: dict, layout: str) -> None:
    """``result.npz``: MAP, mean, std, the input (and truth, PSF when known), float arrays in ``layout``."""
    import io as _io

    import numpy as np

    from invprob.results import atomic_write_bytes

    arrays = {k: v for k, v in (("map", result.map), ("mean", result.mean), ("std", result.std)) if v is not None}
    arrays["input"] = np.asarray(data, dtype=np.float32)
    if truth is not None:
        arrays["truth"] = np.asarray(truth, dtype=np.float32)
    if "kernel" in extra:
        arrays["psf"] = np.asarray(extra["kernel"], dtype=np.float64)
    buf = _io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(tmp / "result.npz", buf.getvalue())
    files["result.npz"] = f"float arrays {sorted(arrays)} {layout}, working units"


def _write_volume_outputs(tmp: Path, result, data, truth, formats, extra: dict, files: dict) -> None:
    """A volume's maps: ``map.tif``/``mean.tif``/``std.tif`` float32 stacks, and ``result.npz`` when asked."""


    from invprob.apps import io as iio

    names = {"map": "MAP estimate", "mean": "posterior mean", "std": "posterior std"}
    for name, arr in (("map", result.map), ("mean", result.mean), ("std", result.std)):
        if arr is not None:
            iio.write_tiff_stack(tmp / f"{name}.tif", arr)
            files[f"{name}.tif"] = f"{names[name]}, float32 stack (one page per plane), working units"
    if "npz" in formats:
        _write_npz(tmp, result, data, truth, extra, files, "(C, D, H, W)")


def _report_titles(info: dict) -> tuple[str, dict]:
    """The report figure's title and panel titles."""
    m = info.get("metrics", {})
    sup = f"{info['psf']['spec']}, noise std {info['noise_std']:.3g}, {info['config']['prior']} weight "
    sup += f"{info['weight']['value']:.3g}" if info["weight"]["value"] is not None else "n/a"
    sup += f", method {info['config']['method']}"
    titles = {}
    for k in ("input", "map", "mean"):
        if k in m:
            base = {"input": "blurred input", "map": "MAP", "mean": "posterior mean"}[k]
            titles[k] = f"{base}\n{m[k]['psnr_db']:.2f} dB, SSIM {m[k]['ssim']:.3f}"
    unc = info.get("uncertainty") or {}
    if unc.get("estimator"):
        status = unc.get("calibration_status", "unchecked")
        verdict = status.split(":")[0]
        diag = unc.get("diagnostics") or {}
        if verdict == "converged" and diag:
            verdict = f"converged, std MC error {100 * diag['std_mcse']:.1f} %"
        elif verdict != "exact":
            verdict = verdict.upper() + ": see summary.json"
        titles["std"] = f"posterior std ({unc['estimator']})\n{verdict}"
        titles["footnote"] = f"std map {status}"
    return sup, titles


def _write_deblur_outputs(tmp: Path, result, data, meta, truth, formats, extra: dict, argv) -> dict:
    from invprob.apps.figures import report_figure, volume_report_figure
    from invprob.results import atomic_write_json

    t0 = time.perf_counter()
    files: dict[str, str] = {}
    png_maps: dict[str, dict] = {}
    info = result.info
    sup, titles = _report_titles(info)
    footnote = titles.pop("footnote", None)
    if meta.volume:
        std_scale = None
        _write_volume_outputs(tmp, result, data, truth, formats, extra, files)
        volume_report_figure(tmp / "report.png", data, result.map, result.mean, result.std, truth=truth,
                             voxel_size=info["config"].get("voxel_size"), value_range=meta.png_range(),
                             titles=titles, suptitle=sup, footnote=footnote)
        files["report.png"] = "figure: XY, XZ, YZ sections through the centre of input, (truth,) MAP, mean, std"
    else:
        std_scale = _write_arrays(tmp, result, data, meta, truth, formats, extra, files, png_maps)
        report_figure(tmp / "report.png", data, result.map, result.mean, result.std, truth=truth,
                      value_range=meta.png_range(), titles=titles, suptitle=sup, footnote=footnote)
        files["report.png"] = "figure: input, MAP, mean, std (colourbar), and truth/errors with --truth"
    files["summary.json"] = "this file"
    write_s = time.perf_counter() - t0
    summary = {
        "command": extra.get("command", "deblur"),
        "argv": list(argv),
        "input": {**extra.get("input_desc", {}), **{k: getattr(meta, k) for k in meta.__dataclass_fields__}},
        "truth": extra.get("truth_path"),
        "intensity_units": ("working units: integer images scaled to [0, 1] (stored value = working value x "
                            f"{meta.scale:g}); float images as stored"),
        "parameters": info["config"],
        "noise_std": info["noise_std"],
        "noise_std_source": info["noise_std_source"],
        "weight": info["weight"]["value"],
        "weight_rule": info["weight"],
        "method": info["config"]["method"],
        "device": info["device"],
        "threads": extra.get("threads"),
        "seed": info["seed"],
        "versions": info["versions"],
        "timings_s": {**info["timings"], "write_s": write_s},
        "metrics": info.get("metrics"),
        "map_solver": info.get("map"),
        "sampler": info.get("sampler"),
        "uncertainty": info.get("uncertainty"),
        "calibration_status": (info.get("uncertainty") or {}).get("calibration_status"),
        "png": png_maps,
        "std_png_scale": std_scale,
        "outputs": files,
        "interrupted": info.get("interrupted"),
        "note": (f"{_signal_text()} stopped the run; these outputs are partial: " + info["interrupted"])
        if info.get("interrupted") else None,
    }
    for k in ("psf", "image", "volume", "device_name", "dtype", "memory"):
        if k in info:
            summary[k] = info[k]
    atomic_write_json(tmp / "summary.json", summary)
    return summary


def _signal_text() -> str:
    sig = signals.received()
    return "Ctrl-C" if sig is None else signals.describe(sig)


def _run_deblur_job(data, meta, truth, config, checked, out: Path, args, argv, extra: dict) -> int:
    from invprob.solvers import deblur as pipeline

    quiet = bool(args.quiet)
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    progress = not quiet and sys.stdout.isatty()
    say(f"deblurring {meta.path} ({'x'.join(map(str, meta.shape))}, {meta.channels} channel(s)) on "
        f"{checked.device} with method {config.method}")
    # maps as float32 NPZ/TIFF and PNGs, plus the report figure (a few MB): estimated up front, checked now
    check_free_space(out, int(40 * data.size) + 4_000_000)
    t0 = time.perf_counter()
    n_threads, note = capped_threads(args.threads)
    if note:
        say(note)
    with pipeline.torch_threads(n_threads, data.size) as threads:
        try:
            result = pipeline.deblur(data, config, truth=truth, progress=progress, checked=checked, log=say)
        except ValueError as exc:  # the pipeline's input checks (e.g. a constant image with --noise-std auto)
            raise CLIError(f"{meta.path}: {exc}") from None
    extra = {**extra, "threads": threads}
    formats = _formats_arg(args.format)
    extra = {**extra, "kernel": checked.kernel.numpy()}
    with staged_directory(out) as tmp:
        summary = _write_deblur_outputs(tmp, result, data, meta, truth, formats, extra, argv)
    total = time.perf_counter() - t0
    m = summary.get("metrics") or {}
    if m:
        parts = [f"{k} {m[k]['psnr_db']:.2f} dB" for k in ("input", "map", "mean") if k in m]
        say("PSNR: " + ", ".join(parts))
    say(f"noise std {summary['noise_std']:.4g} ({'estimated' if config.noise_std == 'auto' else 'given'}), "
        f"weight {summary['weight']:.4g} ({summary['weight_rule']['source']})" if summary["weight"] is not None else "")
    if result.interrupted:
        print(f"invprob: interrupted: partial results written to {out} ({result.interrupted})", file=sys.stderr)
        return signals.exit_code(EXIT_INTERRUPTED)
    say(f"done in {total:.1f} s on {summary['device']}; outputs in {out}/: {', '.join(sorted(summary['outputs']))}")
    if signals.received() is not None:
        print(f"invprob: {signals.signal_name(signals.received())} received while writing; the outputs in {out} "
              "are complete", file=sys.stderr)
        return signals.exit_code()
    return 0


def _config_from_args(args, psf: str, noise):
    from invprob.solvers.deblur import DeblurConfig

    weight = _weight_arg(args.weight)
    _formats_arg(args.format)
    limit = args.time_limit
    if not math.isfinite(limit) or limit < 0:
        raise CLIError(f"--time-limit must be a non-negative number of seconds, got {limit}")
    try:  # DeblurConfig checks its fields at construction
        return DeblurConfig(psf=psf, noise_std=noise, prior=args.prior, weight=weight, method=args.method,
                            n_particles=args.particles, n_iter=args.iters, seed=int(args.seed), device=args.device,
                            boundary=args.boundary, time_limit=limit or None,
                            voxel_size=_voxel_size_arg(getattr(args, "voxel_size", None)))
    except ValueError as exc:
        raise CLIError(str(exc)) from None


# ------------------------------------------------------------------------------------------------------ commands
def cmd_deblur(args, argv) -> int:
    from invprob.apps.io import is_volume_input, read_image, read_volume

    noise = _noise_arg(args.noise_std)
    config = _config_from_args(args, args.psf, noise)
    volume = is_volume_input(args.input, args.volume)
    read = read_volume if volume else read_image
    data, meta = read(args.input)
    if not volume and args.voxel_size is not None:
        raise CLIError(f"--voxel-size is for volumes, and {args.input} is a 2-D image (see --volume)")
    truth = None
    if args.truth is not None:
        truth, tmeta = read(args.truth, name="truth")
        if truth.shape != data.shape:
            raise CLIError(f"truth image {args.truth} has shape {truth.shape[1:]} x {truth.shape[0]} channel(s), "
                           f"the input {data.shape[1:]} x {data.shape[0]}")
        if tmeta.kind != meta.kind and "float" in (tmeta.kind, meta.kind):
            warnings.warn(f"the truth is {tmeta.kind} and the input {meta.kind}: check they share one intensity scale",
                          UserWarning, stacklevel=1)
    if not volume and _psf(config.psf, config.voxel_size).kernel.ndim == 3:
        raise CLIError(f"the PSF {args.psf} is 3-D but {args.input} is a 2-D image: give a multi-page TIFF stack, "
                       "or --volume for an .npy stack")
    checked = _validate(config, data.shape)
    out = Path(args.out) if args.out else Path(Path(args.input).stem + "_deblurred")
    check_out_dir(out, args.force, inputs=(args.input, args.truth))
    extra = {"command": "deblur", "truth_path": args.truth, "input_desc": {}}
    return _run_deblur_job(data, meta, truth, config, checked, out, args, argv, extra)


def cmd_blur(args, argv) -> int:
    from invprob.apps.io import _format_of, read_image, save_image
    from invprob.solvers.deblur import blur_image

    noise = _noise_arg(args.noise_std, allow_zero=True, allow_auto=False)
    if not args.out:
        raise CLIError("--out BLURRED is required (a .png, .tif/.tiff or .npy file)")
    out = Path(args.out)
    if _format_of(out) not in ("png", "tiff", "npy"):
        raise CLIError(f"--out {out}: use a .png, .tif/.tiff or .npy file name")
    data, meta = read_image(args.clean, name="clean")
    psf = _psf(args.psf)
    if psf.kernel.ndim != 2:
        raise CLIError(f"invprob blur takes a 2-D PSF, got {args.psf} of shape {tuple(psf.kernel.shape)} (3-D stacks: "
                       "blur them with invprob.solvers.deblur.blur_image)")
    H, W = data.shape[-2:]
    kh, kw = psf.kernel.shape
    if kh > H or kw > W:
        raise CLIError(f"the PSF ({kh}x{kw} pixels) is bigger than the image ({H}x{W})")
    device = cli_device(args.device)
    check_out_file(out, args.force, inputs=(args.clean,))
    y = blur_image(data, psf.kernel, boundary=args.boundary, noise_std=noise, seed=int(args.seed), device=device)
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = save_image(out, y, meta)
    normal_permissions(out)
    if not args.quiet:
        note = " (rounded and clipped to the PNG's range)" if fmt == "png" else ""
        print(f"wrote {out}: {psf.description['spec']} blur, noise std {noise:g}, seed {args.seed}{note}")
    return 0


def cmd_demo(args, argv) -> int:
    from invprob.apps.io import ImageMeta
    from invprob.solvers.deblur import camera_demo

    if not 32 <= args.size <= 2048:
        raise CLIError(f"--size must lie between 32 and 2048, got {args.size}")
    noise = _noise_arg(args.noise_std)
    if noise == "auto":
        raise CLIError("the demo needs a numeric --noise-std (the noise it adds)")
    config = _config_from_args(args, args.psf, noise)
    n = int(args.size)
    checked = _validate(config, (1, n, n))
    out = Path(args.out)
    check_out_dir(out, args.force)
    # a realistic blurred photo: the frame of a blurred scene that extends beyond it (no boundary artefact)
    problem = camera_demo(n, checked.kernel, float(noise), seed=int(args.seed))
    truth, y = problem.truth, problem.data
    meta = ImageMeta(path=f"skimage's camera, blurred ({args.psf}, noise {noise:g})",
                     format="generated", dtype="float64", kind="uint8", scale=255.0, channels=1, shape=(n, n),
                     value_range=(float(y.min()), float(y.max())))
    extra = {"command": "demo", "truth_path": "skimage.data.camera()",
             "input_desc": {"generated": {"image": "skimage.data.camera", "size": n, "psf": args.psf,
                                          "noise_std": noise, "seed": int(args.seed)}},
             "images": {"input.png": (y, "the blurred, noisy input (8-bit)"),
                        "truth.png": (truth, "the clean cameraman (8-bit)")}}
    return _run_deblur_job(y, meta, truth, config, checked, out, args, argv, extra)


# ------------------------------------------------------------------------------------------------------ main
def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``invprob`` console script; returns the exit code (0; 2 on user errors; 130, 143, 129 on
    SIGINT, SIGTERM, SIGHUP, with the partial result written where one exists: :mod:`invprob.apps.signals`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with signals.handled():
        return _main(argv)


def _main(argv: list[str]) -> int:
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0) if isinstance(exc.code, int | None) else EXIT_USAGE
        if getattr(args, "_plugin_error", None):
            raise CLIError(args._plugin_error)
        if getattr(args, "_plugin_run", None) is not None:
            return int(args._plugin_run(args) or 0)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        command = {"deblur": cmd_deblur, "blur": cmd_blur, "demo": cmd_demo}[args.command]
        return int(command(args, argv) or 0)
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        why = str(exc) or "Ctrl-C"
        print(f"{PROG}: interrupted ({why}) before a result existed; nothing was written", file=sys.stderr)
        return signals.exit_code(EXIT_INTERRUPTED)
    except OSError as exc:  # the file system refused (disk full, read-only, permissions): the user's to fix
        if os.environ.get("INVPROB_DEBUG"):
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{PROG}: error: cannot write or read{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug or a numerical failure: one line, the traceback on request
        if os.environ.get("INVPROB_DEBUG"):
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: internal error: {type(exc).__name__}: {msg} (set INVPROB_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = old_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
