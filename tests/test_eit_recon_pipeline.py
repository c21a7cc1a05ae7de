"""EIT reconstruction pipeline and CLI: noise by reciprocity, synthetic reconstruction quality, uncertainty
larger in the centre, bad inputs, and ``invprob eit simulate``/``reconstruct`` end to end."""

from __future__ import annotations

import json
import math
from functools import cache

import numpy as np
import pytest

eit = pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")

from invprob.solvers.eit import (  # noqa: E402
    Phantom,
    ReconConfig,
    reconstruct,
    relative_errors,
    simulate,
)
from invprob.tuning import estimate_noise_reciprocity  # noqa: E402


@cache
def _meshes():
    layout = eit.ElectrodeLayout.uniform(16, 0.5, first_angle=math.pi, clockwise=True)
    return eit.disk_mesh(1.0, layout, h=0.12), eit.disk_mesh(1.0, layout, h=0.07)


@cache
def _sim(seed=1):
    coarse, fine = _meshes()
    return simulate(fine, Phantom.two_inclusions(), noise=0.01, seed=seed)


def test_reciprocity_noise_estimate():
    sim = _sim()
    est = estimate_noise_reciprocity(sim.reference)
    assert est.n_pairs == 104
    assert abs(est.std / sim.noise_std - 1) < 0.2


@cache
def _result():
    coarse, _ = _meshes()
    truth = coarse.cell_values(Phantom.two_inclusions())
    sim = _sim()
    return (
        coarse,
        truth,
        reconstruct(sim.data, coarse, ReconConfig(method="gn"), reference=sim.reference, truth=truth, radius=1.0),
    )


def test_synthetic_reconstruction_beats_constant_and_covers_truth():
    coarse, truth, res = _result()
    e = res.info["errors"]
    assert e["mean"]["rel_l1"] < e["constant_background"]["rel_l1"]
    assert e["mean"]["rel_l2"] < e["constant_background"]["rel_l2"]
    assert e["coverage_2std"] >= 0.8
    assert res.info["relative_misfit"]["map"] < 1.5 * res.info["relative_misfit"]["noise_plus_model_error"]
    assert res.map.shape == res.mean.shape == res.std.shape == (coarse.n_cells,)
    assert np.all(res.std > 0) and np.all(res.map > 0)
    assert res.cells_xy.shape == (coarse.n_cells, 2)
    # the resistive inclusion is lower and the conductive one higher than the background in the MAP
    c = coarse.centroids
    assert np.median(res.map[np.hypot(c[:, 0] - 0.35, c[:, 1] - 0.3) < 0.15]) > 1.2
    assert np.median(res.map[np.hypot(c[:, 0] + 0.35, c[:, 1] + 0.3) < 0.15]) < 0.85
    assert relative_errors(truth, truth)["rel_l1"] == 0.0


def test_std_larger_in_the_centre_than_near_electrodes():
    coarse, _, res = _result()
    c = coarse.centroids
    ang = np.asarray(coarse.electrode_angles)
    el = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    d_el = np.min(np.linalg.norm(c[:, None] - el[None], axis=2), axis=1)
    rel = res.std / res.mean
    assert np.median(rel[np.hypot(c[:, 0], c[:, 1]) < 0.3]) > 1.1 * np.median(rel[d_el < 0.15])


def test_difference_imaging_and_background_change_detection():
    coarse, fine = _meshes()
    sim = _sim()
    res = reconstruct(sim.data, coarse, ReconConfig(method="gn", difference=True), reference=sim.reference)
    assert res.info["background_check"]["background_changed"] is False
    c = coarse.centroids
    assert np.median(res.map[np.hypot(c[:, 0] - 0.35, c[:, 1] - 0.3) < 0.15]) > 1.2
    # a frame whose whole background is 1.6x: detected
    bg = simulate(fine, Phantom(1.6), noise=0.01, seed=2)
    res2 = reconstruct(
        bg.data, coarse, ReconConfig(method="gn", difference=True, map_max_iter=2), reference=sim.reference
    )
    assert res2.info["background_check"]["background_changed"] is True


def test_bad_inputs():
    coarse, _ = _meshes()
    sim = _sim()
    with pytest.raises(ValueError, match="reference"):
        reconstruct(sim.data, coarse, ReconConfig(method="gn", difference=True))
    with pytest.raises(ValueError, match="electrodes"):
        reconstruct(sim.data, eit.disk_mesh(1.0, 8, h=0.3), ReconConfig(method="gn"))
    with pytest.raises(ValueError, match="method"):
        ReconConfig(method="magic")
    with pytest.raises(ValueError, match="n_particles"):
        ReconConfig(n_particles=1)
    with pytest.raises(ValueError, match="truth"):
        reconstruct(sim.data, coarse, ReconConfig(method="gn"), truth=np.ones(3))
    d = sim.data
    scrambled = eit.EITData(
        d.currents,
        d.measurements,
        np.random.default_rng(0).permutation(d.voltages.ravel()).reshape(d.voltages.shape),
        d.keep,
    )
    with pytest.raises(ValueError, match="do not match the model"):
        reconstruct(scrambled, coarse, ReconConfig(method="gn"))
    with pytest.raises(ValueError, match="circle"):
        Phantom(1.0, ((0.0, 0.0, -1.0, 2.0),))


def test_pbrwp_pipeline_small():
    coarse, _ = _meshes()
    sim = _sim()
    res = reconstruct(
        sim.data,
        coarse,
        ReconConfig(method="pbrwp", n_particles=8, n_iter=6, kernel_n_iter=40),
        reference=sim.reference,
    )
    smp = res.info["sampler"]
    assert smp["sampler"] == "PBRWP" and smp["n_particles"] == 8
    assert smp["fallback"] is None and smp["uncertainty"]["estimator"] == "kernel-langevin"
    assert res.std_sampler is not None and res.info["uncertainty"]["estimator"] == "laplace"
    # the kernel std agrees with the Laplace std to within the PBRWP T-bias and Monte Carlo error (8 x 27 states)
    assert 0.7 < smp["std_ratio_to_laplace"]["median"] < 1.15
    assert np.all(np.isfinite(res.mean))


# ------------------------------------------------------------------------------------------------------ CLI
def _cli(argv):
    from invprob.apps.cli import main

    return main(argv)


def test_cli_simulate_and_reconstruct(tmp_path, capsys):
    sim_dir, rec_dir = tmp_path / "sim", tmp_path / "rec"
    assert _cli(["eit", "simulate", "--out", str(sim_dir), "--h", "0.1", "--quiet"]) == 0
    assert (sim_dir / "data.npz").exists() and (sim_dir / "truth.png").exists()
    assert (
        _cli(
            [
                "eit",
                "reconstruct",
                str(sim_dir / "data.npz"),
                "--out",
                str(rec_dir),
                "--method",
                "gn",
                "--h",
                "0.15",
                "--quiet",
            ]
        )
        == 0
    )
    with np.load(rec_dir / "result.npz") as z:
        for k in ("map", "mean", "std", "cells_xy", "truth"):
            assert k in z
        assert z["cells_xy"].shape == (z["map"].shape[0], 2)
    s = json.loads((rec_dir / "summary.json").read_text())
    assert s["errors"]["mean"]["rel_l2"] < s["errors"]["constant_background"]["rel_l2"]
    assert (rec_dir / "result.png").exists() and (rec_dir / "result.xdmf").exists()
    # refuses to overwrite without --force
    assert _cli(["eit", "reconstruct", str(sim_dir / "data.npz"), "--out", str(rec_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1


def test_cli_bad_inputs_write_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    bad = tmp_path / "bad.npz"
    np.savez(bad, nothing=np.zeros(3))
    for argv in (
        ["eit", "reconstruct", str(tmp_path / "missing.mat"), "--out", str(out)],
        ["eit", "reconstruct", str(bad), "--out", str(out)],
        ["eit", "simulate", "--out", str(out), "--noise", "-1"],
        ["eit", "simulate", "--out", str(out), "--circle", "1,2,3"],
        ["eit", "reconstruct", str(bad), "--out", str(out), "--device", "tpu"],
    ):
        assert _cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert not list(tmp_path.glob(".never*"))


def test_cli_kit4_difference(tmp_path):
    from invprob.operators.eit import kit4_data_dir

    d = kit4_data_dir()
    if not (d / "datamat_1_1.mat").exists():
        pytest.skip("KIT4 data not available")
    out = tmp_path / "kit4"
    assert (
        _cli(
            [
                "eit",
                "reconstruct",
                str(d / "datamat_1_1.mat"),
                "--difference",
                str(d / "datamat_1_0.mat"),
                "--method",
                "gn",
                "--h",
                "0.15",
                "--out",
                str(out),
                "--quiet",
                "--no-xdmf",
            ]
        )
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["format"] == "kit4" and s["config"]["difference"] is True
    assert "reciprocity" in s["noise_std_source"]
    with np.load(out / "result.npz") as z:
        assert np.max(np.linalg.norm(z["cells_xy"], axis=1)) < 14.0  # the tank's units (cm)


def test_cli_help_has_examples(capsys):
    for sub in ("simulate", "reconstruct"):
        assert _cli(["eit", sub, "--help"]) == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"invprob eit {sub}" in out


@pytest.mark.parametrize("device", ["cuda:1", "tpu"])
def test_cli_device_reaches_the_computation_or_is_refused(tmp_path, capsys, device):
    """--device is resolved before anything runs: an unavailable or unknown device is one line, exit 2."""
    import torch

    if device == "cuda:1" and torch.cuda.device_count() > 1:
        pytest.skip("a second CUDA device exists here")
    sim_dir = tmp_path / "sim"
    assert _cli(["eit", "simulate", "--out", str(sim_dir), "--h", "0.15", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "rec"
    argv = ["eit", "reconstruct", str(sim_dir / "data.npz"), "--out", str(out), "--device", device, "--quiet"]
    assert _cli(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--device" in err, err
    assert not out.exists()
    assert _cli(["eit", "simulate", "--out", str(tmp_path / "s2"), "--device", device, "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_device_cpu_is_recorded(tmp_path):
    sim_dir, rec_dir = tmp_path / "sim", tmp_path / "rec"
    assert _cli(["eit", "simulate", "--out", str(sim_dir), "--h", "0.15", "--quiet"]) == 0
    argv = ["eit", "reconstruct", str(sim_dir / "data.npz"), "--out", str(rec_dir), "--h", "0.25", "--method",
            "pbrwp", "--particles", "4", "--iters", "3", "--device", "cpu", "--quiet", "--no-xdmf"]
    assert _cli(argv) == 0
    s = json.loads((rec_dir / "summary.json").read_text())
    assert s["device"] == "cpu" and s["fem_device"] == "cpu (float64)"
    assert s["sampler"]["n_particles"] == 4


def test_reconstruct_sampler_on_the_gpu_matches_the_cpu():
    """The particles on a CUDA device (finite elements on the CPU): same Laplace std, close sampler moments."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    coarse, _ = _meshes()
    sim = _sim()
    cfg = ReconConfig(method="pbrwp", n_particles=8, n_iter=6, kernel_n_iter=20)
    cpu = reconstruct(sim.data, coarse, cfg, reference=sim.reference, device="cpu")
    gpu = reconstruct(sim.data, coarse, cfg, reference=sim.reference, device="cuda")
    np.testing.assert_allclose(gpu.std_laplace, cpu.std_laplace, rtol=1e-12)
    np.testing.assert_allclose(gpu.theta_mean, cpu.theta_mean, rtol=0, atol=1e-6)
