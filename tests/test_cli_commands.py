"""``invprob blur``, ``invprob demo``, help texts, and the optional ``eit``/``train`` plugins."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize

from invprob.apps.cli import main
from invprob.operators import Blur, kernel_from_spec
from invprob.solvers.deblur import DEFAULT_METHOD


@pytest.fixture
def clean(tmp_path):
    img = resize(data.chelsea() / 255.0, (40, 56, 3), anti_aliasing=True)
    iio.imwrite(tmp_path / "cat.png", np.rint(img * 255).astype(np.uint8))
    return tmp_path / "cat.png"


def test_blur_npy_is_exact_blur_plus_seeded_noise(clean, tmp_path, capsys):
    out = tmp_path / "b.npy"
    assert main(["blur", str(clean), "--psf", "motion:5,45", "--noise-std", "0.02", "--seed", "4",
                 "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    y = np.load(out)
    assert y.shape == (40, 56, 3) and y.dtype == np.float64
    x = iio.imread(clean) / 255.0
    k = kernel_from_spec("motion:5,45").kernel
    ax = Blur(k, (3, 40, 56)).A(torch.tensor(np.moveaxis(x, -1, 0))[None])[0].numpy()
    noise = y - np.moveaxis(ax, 0, -1)
    assert abs(noise.std() - 0.02) < 0.002 and abs(noise.mean()) < 0.002
    assert main(["blur", str(clean), "--psf", "motion:5,45", "--noise-std", "0.02", "--seed", "4",
                 "--out", str(tmp_path / "again.npy"), "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), y)  # same seed, same data


def test_blur_png_keeps_bit_depth_and_refuses_overwrite(clean, tmp_path, capsys):
    out = tmp_path / "b.png"
    assert main(["blur", str(clean), "--psf", "uniform:3", "--noise-std", "0", "--out", str(out), "--quiet"]) == 0
    b = iio.imread(out)
    assert b.dtype == np.uint8 and b.shape == (40, 56, 3)
    capsys.readouterr()
    before = out.read_bytes()
    assert main(["blur", str(clean), "--psf", "uniform:3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists; use --force" in err and err.count("\n") == 1
    assert out.read_bytes() == before
    assert main(["blur", str(clean), "--psf", "uniform:3", "--noise-std", "0.05", "--out", str(out), "--force",
                 "--quiet"]) == 0
    assert out.read_bytes() != before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--psf", "gaussian:1", "--noise-std", "-1", "--out", "x.npy"], "must not be negative"),
        (["--psf", "box:3", "--out", "x.npy"], "unknown PSF spec"),
        (["--psf", "gaussian:1", "--out", "x.gif"], "use a .png, .tif/.tiff or .npy"),
        (["--psf", "gaussian:1"], "--out BLURRED is required"),
        (["--psf", "uniform:60", "--out", "x.npy"], "bigger than the image"),
    ],
)
def test_blur_errors(clean, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    assert main(["blur", str(clean), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("invprob: error: ")
    assert set(tmp_path.iterdir()) == before


def test_demo_small(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--size", "64", "--out", str(out), "--particles", "2", "--iters", "20"]
              if DEFAULT_METHOD != "map" else ["demo", "--size", "64", "--out", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert f"outputs in {out}" in stdout
    files = {p.name for p in out.iterdir()}
    assert {"map.png", "report.png", "result.npz", "summary.json", "input.png", "truth.png"} <= files
    if DEFAULT_METHOD != "map":
        assert {"mean.png", "std.png"} <= files
    s = json.loads((out / "summary.json").read_text())
    assert s["command"] == "demo" and s["method"] == DEFAULT_METHOD
    assert s["metrics"]["map"]["psnr_db"] > s["metrics"]["input"]["psnr_db"] + 1.0
    assert iio.imread(out / "truth.png").shape == (64, 64)
    assert main(["demo", "--size", "64", "--out", str(out), "--method", "map", "--quiet"]) == 2  # exists
    assert main(["demo", "--size", "64", "--out", str(out), "--method", "map", "--quiet", "--force"]) == 0


@pytest.mark.parametrize("command", ["deblur", "blur", "demo"])
def test_every_command_has_help_with_an_example(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "example" in text and f"invprob {command}" in text


def test_top_level_help_and_no_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for cmd in ("deblur", "blur", "demo"):
        assert cmd in text
    assert main([]) == 2


def _fake_module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


def test_plugins_are_wired_when_present(monkeypatch, capsys):
    calls = {}

    def add_parser(sub):
        p = sub.add_parser("eit", help="EIT")
        p.add_argument("action")

    def add_train_parser(sub):
        sub.add_parser("train", help="train")

    monkeypatch.setitem(sys.modules, "invprob.apps.eit_cli",
                        _fake_module("invprob.apps.eit_cli", add_parser=add_parser,
                                     run=lambda args: calls.setdefault("eit", args.action) and 0))
    monkeypatch.setitem(sys.modules, "invprob.apps.train_cli",
                        _fake_module("invprob.apps.train_cli", add_train_parser=add_train_parser,
                                     run_train=lambda args: calls.setdefault("train", True) and 3))
    assert main(["eit", "simulate"]) == 0 and calls["eit"] == "simulate"
    assert main(["train"]) == 3 and calls["train"]


def test_broken_plugin_does_not_break_the_cli(monkeypatch, capsys, tmp_path):
    def add_parser(sub):
        raise ImportError("dolfinx is not installed")

    monkeypatch.setitem(sys.modules, "invprob.apps.eit_cli", _fake_module("invprob.apps.eit_cli",
                                                                          add_parser=add_parser))
    assert main(["eit"]) == 2
    err = capsys.readouterr().err
    assert "invprob eit is unavailable: dolfinx is not installed" in err and err.count("\n") == 1
    assert main(["blur", "--help"]) == 0  # everything else still works


def test_unexpected_error_is_one_line_exit_1(monkeypatch, capsys, tmp_path):
    import invprob.solvers.deblur as deblur_mod

    def boom(*a, **k):
        raise FloatingPointError("non-finite particles at iteration 7")

    monkeypatch.delenv("INVPROB_DEBUG", raising=False)
    monkeypatch.setattr(deblur_mod, "deblur", boom)
    img = np.rint(resize(data.camera(), (32, 32)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "in.png", img)
    rc = main(["deblur", str(tmp_path / "in.png"), "--psf", "gaussian:1", "--noise-std", "0.01",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "internal error: FloatingPointError: non-finite particles" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("invprob.solvers.samplers") is None, reason="no samplers")
@pytest.mark.parametrize("method", ["pbrwp", "mla", "myula"])
def test_each_sampler_runs_through_the_cli(method, tmp_path):
    img = resize(data.camera() / 255.0, (40, 48), anti_aliasing=True)
    np.save(tmp_path / "x.npy", img)
    assert main(["blur", str(tmp_path / "x.npy"), "--psf", "gaussian:1", "--noise-std", "0.02",
                 "--out", str(tmp_path / "y.npy"), "--quiet"]) == 0
    out = tmp_path / method
    assert main(["deblur", str(tmp_path / "y.npy"), "--psf", "gaussian:1", "--noise-std", "0.02", "--weight", "5",
                 "--method", method, "--particles", "3", "--iters", "12", "--truth", str(tmp_path / "x.npy"),
                 "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == method and s["uncertainty"]["estimator"]
    with np.load(out / "result.npz") as z:
        assert z["mean"].shape == z["std"].shape == (1, 40, 48) and np.isfinite(z["std"]).all()


# ------------------------------------------------------------------------------------------------------ --device
def _device_cases(tmp_path):
    img = np.rint(resize(data.camera(), (32, 32)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "in.png", img)
    common = ["--psf", "gaussian:1", "--quiet"]
    return {
        "deblur": ["deblur", str(tmp_path / "in.png"), *common, "--noise-std", "0.01", "--weight", "5",
                   "--method", "map", "--out", str(tmp_path / "d")],
        "blur": ["blur", str(tmp_path / "in.png"), *common, "--noise-std", "0.01", "--out", str(tmp_path / "b.npy")],
        "demo": ["demo", "--size", "32", *common, "--method", "map", "--weight", "5", "--out", str(tmp_path / "m")],
    }


@pytest.mark.parametrize("command", ["deblur", "blur", "demo"])
@pytest.mark.parametrize("device", ["cuda:1", "tpu"])
def test_bad_device_is_one_line_exit_2(command, device, tmp_path, capsys):
    if device == "cuda:1" and torch.cuda.device_count() > 1:
        pytest.skip("cuda:1 exists here")
    argv = _device_cases(tmp_path)[command] + ["--device", device]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device" in err and "Traceback" not in err, err
    assert not (tmp_path / "d").exists() and not (tmp_path / "m").exists() and not (tmp_path / "b.npy").exists()


@pytest.mark.parametrize("command", ["deblur", "blur", "demo"])
def test_device_cpu_reaches_the_computation(command, tmp_path):
    assert main(_device_cases(tmp_path)[command] + ["--device", "cpu"]) == 0
    if command != "blur":
        out = tmp_path / ("d" if command == "deblur" else "m")
        assert json.loads((out / "summary.json").read_text())["device"] == "cpu"


@pytest.mark.cuda
@pytest.mark.parametrize("command", ["deblur", "blur", "demo"])
def test_device_cuda0_reaches_the_computation(command, tmp_path):
    assert main(_device_cases(tmp_path)[command] + ["--device", "cuda:0"]) == 0
    if command != "blur":
        out = tmp_path / ("d" if command == "deblur" else "m")
        assert json.loads((out / "summary.json").read_text())["device"] == "cuda:0"
