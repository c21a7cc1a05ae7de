"""``invprob eit simulate`` and ``invprob eit reconstruct``: EIT data and reconstructions with uncertainty.

Loaded lazily by :mod:`invprob.apps.cli` (``add_parser(subparsers)``, ``run(args) -> int``). Every user error is
a :class:`~invprob.apps.errors.CLIError` raised before anything is written; outputs go to a temporary folder
beside ``--out`` that is renamed into place at the end (an interrupted run leaves nothing half-written).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from invprob.apps.common import (
    DEVICE_HELP,
    MAX_ITERS,
    MAX_PARTICLES,
    Formatter,
    bounded_int,
    check_out_dir,
    cli_device,
    seed_type,
)
from invprob.apps.errors import CLIError
from invprob.apps.io import safe_message, staged_directory

__all__ = ["add_parser", "run"]

SIM_EPILOG = """\
examples:
  invprob eit simulate --out sim                        # two inclusions, 16 electrodes, 1 % noise
  invprob eit simulate --phantom one --noise 0.005 --seed 3 --out sim1 --force
  invprob eit simulate --circle 0.3,0.2,0.25,3.0 --ellipse=-0.4,-0.2,0.3,0.15,30,0.3 --out sim2
(write --circle=X,... or --ellipse=X,... when X is negative)

outputs in DIR: data.npz (currents, measurements, voltages, reference_voltages, geometry, phantom; readable by
'invprob eit reconstruct'), truth.png, summary.json.
"""

REC_EPILOG = """\
examples:
  invprob eit reconstruct sim/data.npz --out rec                      # absolute, Gaussian prior: MAP + Laplace
  invprob eit reconstruct sim/data.npz --prior tv --out rec_tv        # TV prior: MAP + PBRWP (auto)
  invprob eit reconstruct datamat_1_1.mat --reference datamat_1_0.mat --out kit4_11
  invprob eit reconstruct datamat_1_1.mat --difference datamat_1_0.mat --out kit4_11_diff
  invprob eit reconstruct datamat_1_1.mat --difference datamat_1_0.mat --method learned --out kit4_11_learned
  invprob eit reconstruct volts.csv --currents cur.csv --measurements meas.csv --radius 0.15 --out rec_csv

inputs: KIT4 datamat_*.mat (radius 14 cm, electrode 1 at the top, clockwise), KTC2023 .mat (give the geometry),
NPZ from 'invprob eit simulate' (geometry inside) or with currents/measurements/voltages, CSV (three files).
outputs in DIR: result.npz (per-cell map, mean, std, std_laplace, cells_xy in the data's frame and units,
areas, truth when known), summary.json (noise, background fit, misfits, timings, errors vs truth and vs the
constant background), result.png (MAP | mean | std [| truth | error]), result.xdmf/.h5 (ParaView).
"""


def _common(p):
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--seed", type=seed_type(), default=0, help="random seed (noise, sampler), 0 to 2^63 - 1")
    p.add_argument(
        "--device",
        default="auto",
        help=f"{DEVICE_HELP}: where the sampler's particles live (pbrwp/mla); the finite elements, the MAP and the "
        "Laplace std always run on the CPU in float64",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no messages")


def add_parser(subparsers) -> None:
    """Add ``eit`` with ``simulate`` and ``reconstruct`` to the ``invprob`` subcommands."""
    eit = subparsers.add_parser(
        "eit",
        help="electrical impedance tomography: simulate data, reconstruct with uncertainty",
        description="EIT on a disk with electrodes (complete electrode model, DOLFINx): "
        "simulate data and reconstruct MAP, posterior mean and per-cell std.",
        epilog="examples:\n  invprob eit simulate --out sim\n  invprob eit reconstruct "
        "sim/data.npz --out rec\n\nRun 'invprob eit simulate --help' or "
        "'invprob eit reconstruct --help' for the options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = eit.add_subparsers(dest="eit_command", metavar="SUBCOMMAND")

    p = sub.add_parser(
        "simulate",
        help="simulate EIT data for a phantom (finer mesh than the inversion's)",
        description="Simulate electrode voltages for a phantom on a fine mesh, with white noise, and "
        "a homogeneous reference frame.",
        epilog=SIM_EPILOG,
        formatter_class=Formatter,
    )
    p.add_argument(
        "--phantom",
        default="two",
        choices=("two", "one", "empty"),
        help="built-in phantom (ignored with --circle/--ellipse/--values)",
    )
    p.add_argument(
        "--circle", action="append", default=[], metavar="X,Y,R,VALUE", help="circular inclusion (repeatable)"
    )
    p.add_argument(
        "--ellipse", action="append", default=[], metavar="X,Y,A,B,DEG,VALUE", help="elliptic inclusion (repeatable)"
    )
    p.add_argument(
        "--values",
        default=None,
        metavar="FILE.npz",
        help="user conductivity: NPZ with 'xy' (k, 2) and 'values' (k,), nearest point per cell",
    )
    p.add_argument("--background", type=float, default=1.0, help="background conductivity")
    p.add_argument("--electrodes", type=bounded_int("--electrodes", 4, 256), default=16,
                   help="number of electrodes, 4 to 256")
    p.add_argument("--radius", type=float, default=1.0, help="disk radius")
    p.add_argument("--coverage", type=float, default=0.5, help="fraction of the boundary under electrodes")
    p.add_argument("--h", type=float, default=0.035, help="cell size of the simulation mesh (relative to the radius)")
    p.add_argument("--noise", type=float, default=0.01, help="relative noise (std / rms of the data)")
    p.add_argument("--contact-impedance", type=float, default=0.01, help="contact impedance")
    _common(p)

    p = sub.add_parser(
        "reconstruct",
        help="reconstruct conductivity: MAP, posterior mean and per-cell std",
        description="Reconstruct the per-cell conductivity from one EIT frame (absolute, or "
        "difference against a reference frame).",
        epilog=REC_EPILOG,
        formatter_class=Formatter,
    )
    p.add_argument("input", metavar="INPUT", help="data file (.mat KIT4/KTC2023, .npz, .csv)")
    p.add_argument("--format", default="auto", choices=("auto", "kit4", "ktc2023", "npz", "csv"), help="input format")
    p.add_argument(
        "--reference",
        default=None,
        metavar="REF",
        help="reference frame (empty tank): noise, background and contact fit, model error",
    )
    p.add_argument(
        "--difference", default=None, metavar="REF", help="difference imaging against REF (implies --reference REF)"
    )
    p.add_argument(
        "--method",
        default="auto",
        choices=("auto", "gn", "lbfgs", "pbrwp", "mla", "mala", "learned"),
        help="auto: gn for the Gaussian prior (Laplace is exact in difference mode, calibrated in absolute mode), "
             "pbrwp for tv/l1; gn/lbfgs: MAP + Laplace std; pbrwp/mla: MAP + sampler (40 particles); mala: "
             "Metropolis-adjusted chains on the posterior itself, self-checked (the TV/L1 posterior's own std); "
             "learned: the "
             "shipped KIT4 model (sparse RWPO transformer; KIT4 files with --difference only; map = mean)",
    )
    p.add_argument("--prior", default="gaussian", choices=("gaussian", "tv", "l1"), help="prior on log-conductivity")
    p.add_argument("--weight", type=float, default=None, help="prior weight (default 10)")
    p.add_argument("--length-scale", type=float, default=0.3, help="Gaussian prior correlation length / radius")
    p.add_argument(
        "--noise-std",
        default="auto",
        metavar="S|auto",
        help="absolute noise std of one measurement; auto: reciprocity of the reference (or data) frame",
    )
    p.add_argument(
        "--std",
        default="laplace",
        choices=("laplace", "sampler"),
        dest="std_estimator",
        help="which std is published (both are in result.npz)",
    )
    p.add_argument("--particles", type=bounded_int("--particles", 2, MAX_PARTICLES), default=40,
                   help="particles (PBRWP) or chains (MLA)")
    p.add_argument("--iters", type=bounded_int("--iters", 2, MAX_ITERS), default=30, help="sampler iterations")
    p.add_argument(
        "--h",
        type=float,
        default=None,
        help="cell size of the inversion mesh relative to the radius (default 0.07; KIT4 0.06)",
    )
    p.add_argument("--radius", type=float, default=None, help="disk radius (npz/csv/ktc2023; default 1, KTC 0.115)")
    p.add_argument("--coverage", type=float, default=None, help="electrode coverage of the boundary (default 0.5)")
    p.add_argument(
        "--first-angle",
        type=float,
        default=None,
        metavar="DEG",
        help="polar angle of electrode 1 in degrees (default 180 as pyEIT; KTC 90)",
    )
    p.add_argument(
        "--clockwise", default=None, choices=("yes", "no"), help="electrode numbering direction (default yes)"
    )
    p.add_argument("--currents", default=None, metavar="CSV", help="CSV input: currents (n_injections, L)")
    p.add_argument("--measurements", default=None, metavar="CSV", help="CSV input: measurements (n_meas, L)")
    p.add_argument("--no-xdmf", action="store_true", help="skip the XDMF output")
    _common(p)


# ------------------------------------------------------------------------------------------------------ helpers
def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        v = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise CLIError(f"--{what} takes {n} comma-separated numbers, got {text!r}") from None
    if len(v) != n or not all(math.isfinite(x) for x in v):
        raise CLIError(f"--{what} takes {n} comma-separated finite numbers, got {text!r}")
    return v


def _positive(name: str, v, allow_zero=False):
    if v is None:
        return v
    if not (math.isfinite(v) and (v >= 0 if allow_zero else v > 0)):
        raise CLIError(f"--{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {v}")
    return v


def _say(args):
    return (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))


# ------------------------------------------------------------------------------------------------------ simulate
def _check_simulate(args) -> None:
    for name in ("radius", "h", "contact_impedance", "background"):
        _positive(name.replace("_", "-"), getattr(args, name))
    _positive("noise", args.noise, allow_zero=True)
    if not 0 < args.coverage < 1:
        raise CLIError(f"--coverage must lie in (0, 1), got {args.coverage}")
    if args.electrodes < 4:
        raise CLIError(f"--electrodes must be at least 4, got {args.electrodes}")
    if not 0.01 <= args.h <= 0.3:
        raise CLIError(f"--h must lie in [0.01, 0.3] (relative to the radius), got {args.h}")
    arc = 2 * math.pi / args.electrodes  # one electrode plus one gap, relative to the radius
    if min(args.coverage, 1 - args.coverage) * arc < args.h:
        raise CLIError(f"{args.electrodes} electrodes at coverage {args.coverage:g} are smaller than the mesh cells "
                       f"(--h {args.h:g}): use fewer electrodes or a smaller --h")


def _read_values(path_text: str):
    """``--values FILE.npz``: ``(xy (k, 2), values (k,))``."""
    pv = Path(path_text)
    if not pv.exists():
        raise CLIError(f"--values: no such file {pv}")
    try:
        with np.load(pv) as z:
            xy, vals = np.asarray(z["xy"], float), np.asarray(z["values"], float)
    except Exception as exc:
        raise CLIError(f"--values: cannot read {pv} as an NPZ with 'xy' and 'values' ({exc})") from None
    if xy.ndim != 2 or xy.shape[1] != 2 or vals.shape != (xy.shape[0],) or not np.all(vals > 0):
        raise CLIError("--values: 'xy' must be (k, 2) and 'values' (k,) positive")
    if xy.shape[0] == 0:
        raise CLIError(f"--values: {pv} holds no points (k = 0)")
    if not (np.all(np.isfinite(xy)) and np.all(np.isfinite(vals))):
        raise CLIError(f"--values: {pv} holds NaN or infinite values")
    return xy, vals


def _phantom(args, R: float):
    """The phantom of ``--circle``/``--ellipse`` or ``--phantom`` (None with ``--values``)."""
    from invprob.solvers.eit import Phantom

    if args.values is not None:
        return None
    if args.circle or args.ellipse:
        try:
            return Phantom(
                args.background,
                tuple(_floats(c, 4, "circle") for c in args.circle),
                tuple(_floats(e, 6, "ellipse") for e in args.ellipse),
            )
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    base = {"two": Phantom.two_inclusions(R), "one": Phantom.one_inclusion(R), "empty": Phantom(1.0)}[args.phantom]
    return Phantom(args.background, tuple((c[0], c[1], c[2], c[3] * args.background) for c in base.circles))


def _phantom_record(phantom) -> dict | None:
    if phantom is None:
        return None
    return {"background": phantom.background, "circles": phantom.circles, "ellipses": phantom.ellipses}


def _write_simulation(tmp: Path, args, sim, fine, phantom, R: float, t0: float) -> None:
    from invprob.apps.eit_figures import truth_figure
    from invprob.results import atomic_write_json

    d = sim.data
    arrays = {
        "currents": d.currents, "measurements": d.measurements, "voltages": d.voltages,
        "reference_voltages": sim.reference.voltages, "truth_fine": sim.truth_fine, "truth_fine_xy": fine.centroids,
        "radius": np.float64(R), "n_electrodes": np.int64(args.electrodes), "coverage": np.float64(args.coverage),
        "first_angle": np.float64(math.pi), "clockwise": np.bool_(True),
        "contact_impedance": np.float64(args.contact_impedance), "noise_std": np.float64(sim.noise_std),
        "phantom": np.str_(json.dumps(_phantom_record(phantom))),
    }
    if d.keep is not None:
        arrays["keep"] = d.keep
    _write_npz(tmp / "data.npz", arrays)
    truth_figure(fine, sim.truth_fine, tmp / "truth.png", radius=R)
    atomic_write_json(tmp / "summary.json", {
        "command": "eit simulate", "argv": sys.argv[1:], "n_cells_fine": fine.n_cells, "n_meas": int(d.data.size),
        "noise_relative": args.noise, "noise_std": sim.noise_std, "seed": args.seed, "radius": R,
        "electrodes": {"n": args.electrodes, "coverage": args.coverage, "first_angle_deg": 180.0, "clockwise": True,
                       "protocol": "adjacent drive, adjacent measurements (pyEIT 'std')"},
        "phantom": _phantom_record(phantom), "time_s": time.perf_counter() - t0,
        "outputs": {"data.npz": "EIT frame + reference frame + geometry + truth", "truth.png": "figure"},
    })


def _write_npz(path: Path, arrays: dict) -> None:
    import io

    from invprob.results import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _run_simulate(args) -> int:
    out = Path(args.out)
    check_out_dir(out, args.force)
    cli_device(args.device)  # the simulation runs on the CPU (finite elements); the flag is still checked
    _check_simulate(args)
    R = float(args.radius)
    values = _read_values(args.values) if args.values is not None else None
    phantom = _phantom(args, R)
    say = _say(args)
    t0 = time.perf_counter()
    import invprob.operators.eit as eit
    from invprob.apps.eit_figures import result_figure  # noqa: F401  (fail early if matplotlib is missing)
    from invprob.solvers.eit import simulate

    layout = eit.ElectrodeLayout.uniform(args.electrodes, args.coverage, first_angle=math.pi, clockwise=True)
    say(f"meshing (h = {args.h} R) and simulating {args.electrodes} electrodes, noise {100 * args.noise:g} %")
    fine = eit.disk_mesh(R, layout, h=args.h * R)
    if values is not None:
        from scipy.spatial import cKDTree

        _, idx = cKDTree(values[0]).query(fine.centroids)
        ph = values[1][idx]
    else:
        ph = phantom
    sim = simulate(fine, ph, contact_impedance=args.contact_impedance, noise=args.noise, seed=args.seed)
    with staged_directory(out) as tmp:
        _write_simulation(tmp, args, sim, fine, phantom, R, t0)
    say(f"wrote {out}/data.npz ({sim.data.data.size} measurements, {fine.n_cells} cells)")
    return _finished(out, None)


# ------------------------------------------------------------------------------------------------------ reconstruct
def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suf = path.suffix.lower()
    if suf == ".npz":
        return "npz"
    if suf == ".csv":
        return "csv"
    if suf == ".mat":
        from scipy.io import whosmat

        try:
            names = {n for n, _, _ in whosmat(str(path))}
        except Exception as exc:
            raise CLIError(f"cannot read {path} as a MATLAB file ({exc})") from None
        if {"CurrentPattern", "MeasPattern", "Uel"} <= names:
            return "kit4"
        if "Inj" in names or "Injref" in names:
            return "ktc2023"
        raise CLIError(f"{path}: neither a KIT4 (CurrentPattern, MeasPattern, Uel) nor a KTC2023 (Inj, Uel) file")
    raise CLIError(f"{path}: unknown input format (use .mat, .npz or .csv, or --format)")


def _load(path: Path, fmt: str, args):
    import invprob.operators.eit as eit

    if not path.exists():
        raise CLIError(f"input {path} does not exist")
    extra: dict = {}
    try:
        if fmt == "kit4":
            data = eit.load_kit4(path)
        elif fmt == "ktc2023":
            data = eit.load_ktc2023(path)
        elif fmt == "csv":
            if args.currents is None or args.measurements is None:
                raise CLIError("CSV input needs --currents and --measurements")
            data = eit.load_csv(path, args.currents, args.measurements)
        else:
            data = eit.load_npz(path)
            with np.load(path) as z:
                for k in (
                    "reference_voltages",
                    "radius",
                    "n_electrodes",
                    "coverage",
                    "first_angle",
                    "clockwise",
                    "phantom",
                    "truth_fine",
                    "truth_fine_xy",
                ):
                    if k in z:
                        extra[k] = z[k]
    except CLIError:
        raise
    except ValueError as exc:
        raise CLIError(f"{path}: {safe_message(exc)}") from None
    except Exception as exc:
        raise CLIError(f"cannot read {path} ({type(exc).__name__}: {safe_message(exc)})") from None
    _check_voltages(path, data, extra)
    return data, extra


def _check_voltages(path: Path, data, extra: dict) -> None:
    """Refuse non-finite or all-zero voltages (of the data and of a reference stored with it), naming the file."""
    frames = [("voltages", np.asarray(data.voltages, dtype=float))]
    if "reference_voltages" in extra:
        frames.append(("reference_voltages", np.asarray(extra["reference_voltages"], dtype=float)))
    for name, v in frames:
        if v.size == 0:
            raise CLIError(f"{path}: {name} is empty")
        bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
        if bad:
            raise CLIError(f"{path}: {name} holds {bad} NaN or infinite value(s)")
        if not np.any(v != 0):
            raise CLIError(f"{path}: every value of {name} is zero (no signal to reconstruct from)")


def _geometry(fmt: str, data, extra: dict, args):
    import invprob.operators.eit as eit

    L = data.n_electrodes
    if fmt == "kit4" and all(getattr(args, k) is None for k in ("radius", "coverage", "first_angle", "clockwise")):
        R, layout = eit.kit4_layout(L)
        return R, layout, "KIT4 tank: radius 14 cm, 16 electrodes covering 45.47 %, electrode 1 at the top, clockwise"
    R = args.radius if args.radius is not None else float(extra.get("radius", 0.115 if fmt == "ktc2023" else 1.0))
    cov = args.coverage if args.coverage is not None else float(extra.get("coverage", 0.5))
    if args.first_angle is not None:
        first = math.radians(args.first_angle)
    else:
        first = float(extra.get("first_angle", math.pi / 2 if fmt == "ktc2023" else math.pi))
    cw = (args.clockwise != "no") if args.clockwise is not None else bool(extra.get("clockwise", True))
    _positive("radius", R)
    if not 0 < cov < 1:
        raise CLIError(f"--coverage must lie in (0, 1), got {cov}")
    if "n_electrodes" in extra and int(extra["n_electrodes"]) != L:
        raise CLIError(f"the file's geometry says {int(extra['n_electrodes'])} electrodes, the patterns have {L}")
    layout = eit.ElectrodeLayout.uniform(L, cov, first_angle=first, clockwise=cw)
    return (
        R,
        layout,
        (
            f"disk radius {R:g}, {L} electrodes covering {100 * cov:g} %, electrode 1 at "
            f"{math.degrees(first) % 360:g} deg, {'clockwise' if cw else 'counter-clockwise'}"
        ),
    )


def _noise_std(args) -> float | None:
    if str(args.noise_std).lower() == "auto":
        return None
    try:
        noise = float(args.noise_std)
    except ValueError:
        raise CLIError(f"--noise-std must be a number or auto, got {args.noise_std!r}") from None
    return _positive("noise-std", noise)


def _check_reconstruct(args) -> None:
    if args.difference and args.reference and Path(args.difference) != Path(args.reference):
        raise CLIError("--difference REF and --reference REF2 disagree; give one")
    if args.method == "learned" and not args.difference:
        raise CLIError("--method learned is difference imaging: give --difference REF (the empty-tank frame)")
    for name in ("weight", "length_scale", "h"):
        _positive(name.replace("_", "-"), getattr(args, name))
    if args.particles < 2:
        raise CLIError(f"--particles must be at least 2, got {args.particles}")
    if args.iters < 2:
        raise CLIError(f"--iters must be at least 2, got {args.iters}")
    if args.h is not None and not 0.01 <= args.h <= 0.3:
        raise CLIError(f"--h must lie in [0.01, 0.3] (relative to the radius), got {args.h}")


def _reference(args, path: Path, data, extra: dict):
    """The reference frame: ``--difference``/``--reference``, or the simulated one inside an NPZ, or None."""
    import invprob.operators.eit as eit

    ref_path = args.difference or args.reference
    if ref_path is not None:
        rp = Path(ref_path)
        reference, _ = _load(rp, _detect_format(rp, args.format if args.format != "csv" else "auto"), args)
        if reference.voltages.shape != data.voltages.shape:
            raise CLIError(f"reference {rp} has {reference.voltages.shape} voltages, the input {data.voltages.shape}")
        return reference
    if "reference_voltages" in extra:
        return eit.EITData(data.currents, data.measurements, extra["reference_voltages"], data.keep,
                           {"source": f"{path}:reference_voltages"})
    return None


def _config(args, noise: float | None):
    from invprob.solvers.eit import ReconConfig

    try:
        return ReconConfig(
            method=args.method, prior=args.prior, weight=args.weight, length_scale=args.length_scale,
            difference=args.difference is not None, noise_std=noise, n_particles=args.particles, n_iter=args.iters,
            std_estimator=args.std_estimator, seed=args.seed,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _truth(mesh, extra: dict):
    """The true conductivity on the inversion mesh when the input carries it (simulated NPZ), else None."""
    from invprob.solvers.eit import Phantom

    if "phantom" in extra and str(extra["phantom"]) not in ("null", "None"):
        ph = json.loads(str(extra["phantom"]))
        return mesh.cell_values(Phantom(ph["background"], tuple(ph["circles"]), tuple(ph["ellipses"])))
    if "truth_fine" in extra:
        from scipy.spatial import cKDTree

        _, idx = cKDTree(np.asarray(extra["truth_fine_xy"])).query(mesh.centroids)
        return np.asarray(extra["truth_fine"])[idx]
    return None


def _write_reconstruction(tmp: Path, args, res, mesh, truth, run: dict, say) -> None:
    import invprob.operators.eit as eit
    from invprob.apps.eit_figures import result_figure
    from invprob.results import atomic_write_json

    res.save(tmp)
    path = Path(args.input)
    mode = " (difference)" if args.difference else ""
    title = f"{path.name}: {res.info['method']['used']}, {args.prior} prior{mode}"
    result_figure(mesh, res, tmp / "result.png", truth=truth, title=title, radius=run["radius"])
    files = {
        "result.npz": "per-cell arrays (map, mean, std, std_laplace, std_sampler, cells_xy, areas, theta_*, truth)",
        "summary.json": "this file",
        "result.png": "figure",
    }
    if not args.no_xdmf:
        fields = (("map", res.map), ("mean", res.mean), ("std", res.std), ("truth", truth))
        eit.write_cell_fields(mesh, tmp / "result.xdmf", {k: v for k, v in fields if v is not None})
        files["result.xdmf"] = "ParaView (with result.h5): map, mean, std (cell data)"
    info = dict(res.info)
    info.update({"command": "eit reconstruct", "argv": sys.argv[1:], "input": str(path), "format": run["format"],
                 "reference": run["reference"], "geometry": run["geometry"], "mesh_h_relative": run["h"],
                 "device": run["device"], "fem_device": "cpu (float64)", "seed": args.seed, "outputs": files})
    if "errors" in info:
        e = info["errors"]
        info["errors_summary"] = (
            f"mean rel L1 {e['mean']['rel_l1']:.4f} / L2 {e['mean']['rel_l2']:.4f}; MAP "
            f"{e['map']['rel_l1']:.4f} / {e['map']['rel_l2']:.4f}; constant background "
            f"{e['constant_background']['rel_l1']:.4f} / {e['constant_background']['rel_l2']:.4f}"
        )
        say(info["errors_summary"])
    atomic_write_json(tmp / "summary.json", info)


def _run_reconstruct(args) -> int:
    import invprob.operators.eit as eit
    from invprob.solvers.eit import reconstruct

    out = Path(args.out)
    check_out_dir(out, args.force)
    device = cli_device(args.device)
    path = Path(args.input)
    if not path.exists():
        raise CLIError(f"input {path} does not exist")
    fmt = _detect_format(path, args.format)
    _check_reconstruct(args)
    config = _config(args, _noise_std(args))
    data, extra = _load(path, fmt, args)
    reference = _reference(args, path, data, extra)
    R, layout, geo_desc = _geometry(fmt, data, extra, args)
    say = _say(args)
    progress = not args.quiet and sys.stdout.isatty()
    h = args.h if args.h is not None else (0.06 if fmt == "kit4" else 0.07)
    say(f"meshing the disk (h = {h:g} R): {geo_desc}")
    mesh = eit.disk_mesh(R, layout, h=h * R)
    truth = _truth(mesh, extra)
    ref_path = args.difference or args.reference
    say(
        f"reconstructing {data.data.size} measurements on {mesh.n_cells} cells, method {config.resolved_method}, "
        f"prior {args.prior}{', difference against ' + str(ref_path) if args.difference else ''}"
    )
    try:
        res = reconstruct(data, mesh, config, reference=reference, truth=truth, radius=R, progress=progress, log=say,
                          device=device)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    run = {"radius": R, "format": fmt, "geometry": geo_desc, "h": h, "device": str(device),
           "reference": None if reference is None else str(reference.meta.get("source", ref_path))}
    with staged_directory(out) as tmp:
        _write_reconstruction(tmp, args, res, mesh, truth, run, say)
    say(f"wrote {out}/ (result.npz, summary.json, result.png{'' if args.no_xdmf else ', result.xdmf'})")
    return _finished(out, res.info.get("interrupted"))


def _finished(out: Path, interrupted: str | None) -> int:
    """0, or the signal's exit code with one line when the run was interrupted (its partial result written)."""
    from invprob.apps import signals

    if interrupted:
        print(f"invprob: interrupted: partial results written to {out} ({interrupted})", file=sys.stderr)
        return signals.exit_code()
    if signals.received() is not None:
        print(f"invprob: {signals.signal_name(signals.received())} received while writing; the outputs in {out} "
              "are complete", file=sys.stderr)
        return signals.exit_code()
    return 0


def run(args) -> int:
    """Run ``invprob eit ...``; returns the exit code (user errors raise CLIError -> exit 2)."""
    cmd = getattr(args, "eit_command", None)
    if cmd == "simulate":
        return _run_simulate(args)
    if cmd == "reconstruct":
        return _run_reconstruct(args)
    raise CLIError("invprob eit needs a subcommand: simulate or reconstruct (see 'invprob eit --help')")
