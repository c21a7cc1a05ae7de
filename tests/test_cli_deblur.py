"""End-to-end tests of ``invprob deblur`` on real scikit-image photos (grey and colour, several sizes, non-square),
through ``main([...])`` and the installed ``invprob`` script; every error case; Ctrl-C."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from skimage import data
from skimage.transform import resize

from invprob.apps.cli import main
from invprob.apps.io import read_image

HAS_SAMPLERS = importlib.util.find_spec("invprob.solvers.samplers") is not None
SCRIPT = Path(sys.executable).with_name("invprob")
SUMMARY_KEYS = {
    "command", "argv", "input", "parameters", "noise_std", "noise_std_source", "weight", "weight_rule", "method",
    "device", "seed", "versions", "timings_s", "metrics", "map_solver", "sampler", "uncertainty", "outputs",
    "interrupted", "psf", "std_png_scale", "png", "threads",
}


def _u8(img: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Clean photos and their blurred versions made by ``invprob blur``."""
    d = tmp_path_factory.mktemp("cli_images")
    cam = resize(data.camera() / 255.0, (64, 88), anti_aliasing=True)  # grey, non-square
    iio.imwrite(d / "camera.png", _u8(cam))
    astro = resize(data.astronaut() / 255.0, (64, 64, 3), anti_aliasing=True)  # colour, square
    iio.imwrite(d / "astronaut.png", _u8(astro))
    coffee = resize(data.coffee() / 255.0, (48, 72, 3), anti_aliasing=True)  # colour, non-square, float
    np.save(d / "coffee.npy", coffee)
    assert main(["blur", str(d / "camera.png"), "--psf", "gaussian:1.2", "--noise-std", "0.01", "--seed", "1",
                 "--out", str(d / "camera_blur.png"), "--quiet"]) == 0
    assert main(["blur", str(d / "astronaut.png"), "--psf", "motion:7,30", "--noise-std", "0.01", "--seed", "2",
                 "--out", str(d / "astronaut_blur.tiff"), "--quiet"]) == 0
    assert main(["blur", str(d / "coffee.npy"), "--psf", "gaussian:1", "--noise-std", "0.02", "--seed", "3",
                 "--out", str(d / "coffee_blur.npy"), "--quiet"]) == 0
    return d


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _listing(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_deblur_grey_png_every_output(images, tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["deblur", str(images / "camera_blur.png"), "--psf", "gaussian:1.2", "--noise-std", "0.01",
               "--truth", str(images / "camera.png"), "--method", "map", "--format", "png,tiff,npz", "--out", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert str(out) in stdout and "PSNR" in stdout
    files = {p.name for p in out.iterdir()}
    assert files == {"map.png", "map.tiff", "report.png", "result.npz", "summary.json", ".invprob-output.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    m = iio.imread(out / "map.png")
    assert m.dtype == np.uint8 and m.shape == (64, 88)  # the input's bit depth and layout
    t = tifffile.imread(out / "map.tiff")
    assert t.dtype == np.float32 and t.shape == (64, 88)
    with np.load(out / "result.npz") as z:
        assert z["map"].shape == (1, 64, 88) and z["map"].dtype == np.float32
        assert {"map", "input", "truth", "psf"} <= set(z.files)
        np.testing.assert_allclose(z["map"][0], t)
    rep = iio.imread(out / "report.png")
    assert rep.ndim == 3 and rep.shape[0] > 200
    s = _summary(out)
    assert SUMMARY_KEYS <= set(s)
    assert s["noise_std"] == 0.01 and s["noise_std_source"] == "given"
    assert s["weight_rule"]["source"] == "auto" and s["weight"] > 0 and len(s["weight_rule"]["evaluations"]) >= 3
    assert s["device"] == "cpu" and s["seed"] == 0 and s["method"] == "map"
    assert s["versions"]["torch"] and s["versions"]["invprob"]
    assert s["timings_s"]["total_s"] > 0 and "map_s" in s["timings_s"]
    assert s["psf"]["kind"] == "gaussian" and s["psf"]["shape"] == [9, 9]
    assert s["interrupted"] is None and s["uncertainty"] is None
    met = s["metrics"]
    assert met["map"]["psnr_db"] > met["input"]["psnr_db"] + 1.0
    assert met["map"]["ssim"] > met["input"]["ssim"]


@pytest.mark.skipif(not HAS_SAMPLERS, reason="invprob.solvers.samplers not available")
def test_deblur_colour_tiff_with_sampler(images, tmp_path):
    out = tmp_path / "res"
    rc = main(["deblur", str(images / "astronaut_blur.tiff"), "--psf", "motion:7,30", "--noise-std", "0.01",
               "--truth", str(images / "astronaut.png"), "--method", "myula", "--particles", "2", "--iters", "40",
               "--seed", "5", "--out", str(out), "--quiet"])
    assert rc == 0
    files = {p.name for p in out.iterdir()}
    assert files == {"map.png", "mean.png", "std.png", "report.png", "result.npz", "summary.json",
                     ".invprob-output.json"}
    for name in ("map.png", "mean.png", "std.png"):
        img, meta = read_image(out / name)  # Pillow would read 16-bit colour PNGs as 8-bit
        assert img.shape == (3, 64, 64) and meta.kind == "uint16"  # float TIFF input -> 16-bit PNGs
    with np.load(out / "result.npz") as z:
        assert z["mean"].shape == z["std"].shape == (3, 64, 64)
        assert (z["std"] >= 0).all() and z["std"].max() > 0
        std_max = float(z["std"].max())
    s = _summary(out)
    assert s["method"] == "myula" and s["seed"] == 5
    assert s["std_png_scale"] == pytest.approx(std_max, rel=1e-5)
    assert s["uncertainty"]["estimator"]
    assert s["sampler"]["n_particles"] == 2 and s["sampler"]["n_iter"] == 40 and "sampler_s" in s["timings_s"]
    assert s["metrics"]["map"]["psnr_db"] > s["metrics"]["input"]["psnr_db"] + 1.0
    assert s["metrics"]["mean"]["psnr_db"] > s["metrics"]["input"]["psnr_db"]
    assert 0 <= s["metrics"]["coverage_2std"] <= 1


def test_installed_script_colour_npy_noise_auto(images, tmp_path):
    out = tmp_path / "res"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [str(SCRIPT), "deblur", str(images / "coffee_blur.npy"), "--psf", "gaussian:1", "--noise-std", "auto",
           "--truth", str(images / "coffee.npy"), "--method", "map", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "estimated noise std" in r.stdout and str(out) in r.stdout
    s = _summary(out)
    assert s["noise_std_source"].startswith("estimated")
    assert 0.014 < s["noise_std"] < 0.026  # true 0.02
    assert s["input"]["kind"] == "float" and s["input"]["channels"] == 3
    assert s["metrics"]["map"]["psnr_db"] > s["metrics"]["input"]["psnr_db"] + 1.0
    m, meta = read_image(out / "map.png")
    assert m.shape == (3, 48, 72) and meta.kind == "uint16"


def test_installed_script_help_and_error():
    r = subprocess.run([str(SCRIPT), "deblur", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "examples:" in r.stdout and "--psf" in r.stdout
    r = subprocess.run([str(SCRIPT), "deblur", "/nonexistent/x.png", "--psf", "gaussian:1"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "input file not found" in r.stderr


def test_force_replaces_and_default_out(images, tmp_path, monkeypatch):
    out = tmp_path / "res"
    args = ["deblur", str(images / "camera_blur.png"), "--psf", "gaussian:1.2", "--noise-std", "0.01",
            "--weight", "8", "--method", "map", "--format", "npz", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert {p.name for p in out.iterdir()} == {"report.png", "result.npz", "summary.json", ".invprob-output.json"}
    (out / "stale.txt").write_text("old")
    assert main(args) == 2  # refused without --force
    assert main(args + ["--force"]) == 2  # a file invprob did not write: --force refuses too
    assert (out / "stale.txt").read_text() == "old"
    (out / "stale.txt").unlink()
    assert main(args + ["--force"]) == 0
    s = _summary(out)
    assert s["weight"] == 8 and s["weight_rule"]["source"] == "given"
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # not the private mode of the temporary folder
    assert (out / "summary.json").stat().st_mode & 0o777 == 0o666 & ~mask
    monkeypatch.chdir(tmp_path)
    assert main(args[:-3] + ["--quiet"]) == 0  # no --out: INPUT's stem + _deblurred
    assert (tmp_path / "camera_blur_deblurred" / "summary.json").exists()


def test_quiet_prints_nothing(images, tmp_path, capsys):
    rc = main(["deblur", str(images / "camera_blur.png"), "--psf", "gaussian:1.2", "--noise-std", "0.01",
               "--weight", "8", "--method", "map", "--out", str(tmp_path / "r"), "--quiet"])
    assert rc == 0
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""


# ------------------------------------------------------------------------------------------------------ errors
def _garbage(d: Path) -> Path:
    p = d / "garbage.png"
    p.write_bytes(b"\x89PNG not really")
    return p


def _nan_image(d: Path) -> Path:
    a = resize(data.camera() / 255.0, (32, 32))
    a[5, 7] = np.nan
    np.save(d / "nan.npy", a)
    return d / "nan.npy"


ERROR_CASES = {
    "missing input": (lambda d, img: ["/nonexistent/in.png", "--psf", "gaussian:1"], "input file not found"),
    "unreadable input": (lambda d, img: [str(_garbage(d)), "--psf", "gaussian:1"], "cannot read input image"),
    "unknown psf": (lambda d, img: [img, "--psf", "airy:3"], "unknown PSF spec"),
    "malformed psf": (lambda d, img: [img, "--psf", "motion:5"], "malformed PSF spec"),
    "missing psf file": (lambda d, img: [img, "--psf", str(d / "nopsf.npy")], "PSF file not found"),
    "psf bigger than image": (lambda d, img: [img, "--psf", "gaussian:15"], "bigger than the image"),
    "nan pixels": (lambda d, img: [str(_nan_image(d)), "--psf", "gaussian:1"], "NaN"),
    "negative noise": (lambda d, img: [img, "--psf", "gaussian:1", "--noise-std", "-0.1"], "must not be negative"),
    "bad noise": (lambda d, img: [img, "--psf", "gaussian:1", "--noise-std", "loud"], "--noise-std must be a number"),
    "negative weight": (lambda d, img: [img, "--psf", "gaussian:1", "--weight", "-1"], "--weight"),
    "bad format": (lambda d, img: [img, "--psf", "gaussian:1", "--format", "png,gif"], "--format"),
    "unknown option": (lambda d, img: [img, "--psf", "gaussian:1", "--colour", "red"], "unrecognized arguments"),
    "bad method": (lambda d, img: [img, "--psf", "gaussian:1", "--method", "magic"], "invalid choice"),
    "truth shape": (lambda d, img: [img, "--psf", "gaussian:1", "--truth", str(d / "small.png")], "truth image"),
}


@pytest.fixture
def error_dir(tmp_path):
    cam = resize(data.camera() / 255.0, (40, 48), anti_aliasing=True)
    iio.imwrite(tmp_path / "in.png", _u8(cam))
    iio.imwrite(tmp_path / "small.png", _u8(cam[:32, :32]))
    return tmp_path


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_error_one_line_exit_2_nothing_written(case, error_dir, capsys):
    make_args, message = ERROR_CASES[case]
    args = make_args(error_dir, str(error_dir / "in.png"))
    before = _listing(error_dir)
    out = error_dir / "out"
    rc = main(["deblur", *args, "--method", "map", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err, err
    assert err.startswith("invprob: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert _listing(error_dir) == before


def test_error_cuda_missing(error_dir, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = _listing(error_dir)
    rc = main(["deblur", str(error_dir / "in.png"), "--psf", "gaussian:1", "--device", "cuda",
               "--out", str(error_dir / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "no CUDA device is available" in err and err.count("\n") == 1
    assert _listing(error_dir) == before


def test_error_existing_output_folder(error_dir, capsys):
    out = error_dir / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = _listing(error_dir)
    rc = main(["deblur", str(error_dir / "in.png"), "--psf", "gaussian:1", "--noise-std", "0.01",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "already exists; use --force" in err and err.count("\n") == 1
    assert _listing(error_dir) == before and (out / "keep.txt").read_text() == "mine"


@pytest.mark.cuda
def test_deblur_on_cuda(error_dir):
    out = error_dir / "out"
    assert main(["deblur", str(error_dir / "in.png"), "--psf", "gaussian:1", "--noise-std", "0.01", "--method",
                 "map", "--device", "cuda", "--out", str(out), "--quiet"]) == 0
    assert _summary(out)["device"].startswith("cuda")


# ------------------------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_during_map_writes_partial_result(error_dir, monkeypatch, capsys):
    import invprob.solvers.map as map_mod

    def interrupted_map(posterior, *a, callback=None, **k):
        x = posterior.y.clone()
        for it in range(1, 4):
            callback(it, x, 0.0)
        raise KeyboardInterrupt

    monkeypatch.setattr(map_mod, "map_estimate", interrupted_map)
    out = error_dir / "out"
    rc = main(["deblur", str(error_dir / "in.png"), "--psf", "gaussian:1", "--noise-std", "0.01", "--weight", "5",
               "--method", "map", "--out", str(out)])
    assert rc == 130
    assert "interrupted" in capsys.readouterr().err
    s = _summary(out)
    assert "MAP at iteration 3" in s["interrupted"] and "partial" in s["note"]
    assert (out / "map.png").exists() and (out / "report.png").exists()
    assert not [p for p in error_dir.iterdir() if p.name.startswith(".")]


def test_ctrl_c_during_sampling_writes_moments_so_far(error_dir, monkeypatch):
    import torch

    import invprob.solvers.deblur as deblur_mod

    class FakeSampler:
        def run(self, posterior, *, n_particles, n_iter, callback=None, init=None, **kw):
            gen = torch.Generator().manual_seed(0)
            for it in range(1, n_iter):
                x = init + 0.01 * torch.randn((n_particles, *init.shape[1:]), generator=gen)
                callback(it, x, None)
                if it == 3 * n_iter // 4:
                    raise KeyboardInterrupt

    monkeypatch.setattr(deblur_mod, "make_sampler", lambda method, **o: FakeSampler())
    monkeypatch.setattr(deblur_mod, "validate_config", _validate_without_sampler_check(deblur_mod))
    out = error_dir / "out"
    rc = main(["deblur", str(error_dir / "in.png"), "--psf", "gaussian:1", "--noise-std", "0.01", "--weight", "5",
               "--method", "myula", "--particles", "3", "--iters", "20", "--out", str(out), "--quiet"])
    assert rc == 130
    s = _summary(out)
    assert "interrupted during sampling" in s["interrupted"] and "after burn-in" in s["interrupted"]
    assert {"map.png", "mean.png", "std.png", "result.npz"} <= {p.name for p in out.iterdir()}
    with np.load(out / "result.npz") as z:
        assert 0.005 < float(z["std"].mean()) < 0.02  # std of the fake particles, 0.01


@pytest.mark.skipif(not HAS_SAMPLERS, reason="invprob.solvers.samplers not available")
@pytest.mark.parametrize("sig, code, named", [("SIGINT", 130, "Ctrl-C"), ("SIGTERM", 143, "SIGTERM"),
                                              ("SIGHUP", 129, "SIGHUP")])
def test_real_signal_to_the_script_writes_partial_result(images, tmp_path, sig, code, named):
    """A real SIGINT/SIGTERM/SIGHUP in the middle of sampling: exit 128 + signum, partial outputs and a note, no
    staging folder left."""
    import signal
    import time

    out = tmp_path / "res"
    cmd = [str(SCRIPT), "deblur", str(images / "camera_blur.png"), "--psf", "gaussian:1.2", "--noise-std", "0.01",
           "--weight", "8", "--method", "myula", "--particles", "2", "--iters", "100000", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until sampling has started
            if line.startswith("MAP done"):
                break
        time.sleep(2.0)
        proc.send_signal(getattr(signal, sig))
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "partial results written" in err and "Traceback" not in err
    assert "done in" not in rest  # an interrupted run does not say "done"
    s = _summary(out)
    assert "interrupted during sampling" in s["interrupted"] and s["note"].startswith(named)
    assert (out / "map.png").exists() and (out / "report.png").exists()
    with np.load(out / "result.npz") as z:
        assert np.isfinite(z["mean"]).all()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _validate_without_sampler_check(mod):
    real = mod.validate_config

    def validate(config, shape):
        from dataclasses import replace

        checked = real(replace(config, method="map"), shape)
        return checked

    return validate


# ------------------------------------------------------------------------------------------------------ boundary
def test_free_boundary_operator_adjoint_and_norm():
    import torch

    from invprob.operators import Blur, kernel_from_spec

    k = kernel_from_spec("motion:7,20").kernel
    op = Blur(k, (2, 20, 27), boundary="free")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *op.domain_shape, generator=g, dtype=torch.float64)
    y = torch.randn(3, *op.domain_shape, generator=g, dtype=torch.float64)
    lhs, rhs = (op.A(x) * y).sum(), (x * op.A_adjoint(y)).sum()
    assert abs(float(lhs - rhs)) <= 1e-12 * float(op.A(x).norm() * y.norm())
    band = op.A(x).clone()
    band[..., op.ph : op.ph + 20, op.pw : op.pw + 27] = 0
    assert float(band.abs().max()) == 0.0  # nothing observed outside the frame
    assert op.crop(x).shape == (3, 2, 20, 27)
    assert float((op.A(x) ** 2).sum()) <= op.norm_squared() * float((x**2).sum()) * (1 + 1e-9)


def test_free_boundary_default_on_the_frame_of_a_larger_scene(tmp_path):
    """Real photos are not periodic: the default free boundary must deblur them, where circular fails badly."""
    import torch

    from invprob.operators import Blur, kernel_from_spec

    scene = resize(data.astronaut() / 255.0, (96, 112, 3), anti_aliasing=True)
    k = kernel_from_spec("motion:7,30").kernel
    blurred = Blur(k, (3, 96, 112)).A(torch.tensor(np.moveaxis(scene, -1, 0))[None])[0].numpy()
    frame = (slice(None), slice(16, 80), slice(16, 96))
    y = np.moveaxis(blurred[frame], 0, -1) + 0.01 * np.random.default_rng(0).standard_normal((64, 80, 3))
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "x.npy", scene[16:80, 16:96])
    common = [str(tmp_path / "y.npy"), "--psf", "motion:7,30", "--noise-std", "0.01", "--truth",
              str(tmp_path / "x.npy"), "--method", "map", "--quiet"]
    assert main(["deblur", *common, "--out", str(tmp_path / "free")]) == 0
    assert main(["deblur", *common, "--boundary", "circular", "--weight", "8", "--out", str(tmp_path / "circ")]) == 0
    free, circ = _summary(tmp_path / "free"), _summary(tmp_path / "circ")
    assert free["parameters"]["boundary"] == "free"
    assert free["metrics"]["map"]["psnr_db"] > free["metrics"]["input"]["psnr_db"] + 2.0
    assert free["metrics"]["map"]["psnr_db"] > circ["metrics"]["map"]["psnr_db"] + 5.0
    with np.load(tmp_path / "free" / "result.npz") as z:
        assert z["map"].shape == (3, 64, 80)  # the frame, not the extended grid


@pytest.mark.parametrize("suffix", [".npy", ".png", ".tif"])
def test_psf_from_a_file(images, tmp_path, suffix):
    from invprob.operators import kernel_from_spec

    k = kernel_from_spec("gaussian:1.2").kernel.numpy()
    path = tmp_path / f"psf{suffix}"
    if suffix == ".npy":
        np.save(path, k)
    elif suffix == ".png":
        iio.imwrite(path, np.rint(k / k.max() * 65535).astype(np.uint16))
    else:
        tifffile.imwrite(path, k.astype(np.float32))
    out = tmp_path / "res"
    assert main(["deblur", str(images / "camera_blur.png"), "--psf", str(path), "--noise-std", "0.01", "--weight",
                 "8", "--method", "map", "--truth", str(images / "camera.png"), "--out", str(out), "--quiet"]) == 0
    s = _summary(out)
    assert s["psf"]["kind"] == "file" and s["psf"]["shape"] == [9, 9]
    assert s["metrics"]["map"]["psnr_db"] > s["metrics"]["input"]["psnr_db"] + 1.0
