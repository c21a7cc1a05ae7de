"""The shipped learned KIT4 reconstruction: it loads, reproduces its held-out figures, refuses other geometries,
and runs from the command line."""

from __future__ import annotations

import copy
import json
import math
from functools import cache

import numpy as np
import pytest
import torch

eit = pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")

from invprob.solvers.learned.kit4 import (  # noqa: E402
    KIT4Problem,
    LearnedKIT4Model,
    default_model_dir,
    fit_reference,
    gaussian_crps,
    kit4_mesh,
    normalised_difference,
    reconstruct_learned,
)

KIT4 = eit.kit4_data_dir()
needs_kit4 = pytest.mark.skipif(not (KIT4 / "datamat_1_0.mat").exists(), reason="KIT4 data not available")
needs_model = pytest.mark.skipif(not (default_model_dir() / "model.pt").exists(), reason="no shipped model")


@cache
def _model():
    return LearnedKIT4Model.load()


@cache
def _reference():
    return eit.load_kit4(KIT4 / "datamat_1_0.mat")


@cache
def _heldout8():
    """The first 8 held-out cases, regenerated from the benchmark's fixed seed, and their background fits."""
    problem = KIT4Problem.from_reference(_reference())
    held = _model().meta["heldout"]
    test = problem.simulate(8, seed=held["seed"])
    shape = (problem.currents.shape[0], problem.measurements.shape[0])
    fits = [fit_reference(eit.EITData(problem.currents, problem.measurements, test.reference[i].reshape(shape)),
                          problem.mesh)["sigma"] for i in range(8)]
    return problem, test, np.asarray(fits)


def _errors(model, test, fits):
    """Per-case rel. L1 error of the particle mean of the log-contrast, as the benchmark computes it."""
    held = model.meta["heldout"]
    xs = model.particles(test.cond, held["n_particles"], seed=held["particle_seed"]).double().numpy()
    theta_mean = xs.mean(1) + np.log(fits)[:, None]
    x_hat = theta_mean - np.log(test.sigma_bg)[:, None]
    return np.abs(x_hat - test.x).sum(1) / np.abs(test.x).sum(1)


def test_gaussian_crps_closed_form():
    rng = np.random.default_rng(0)
    z = rng.normal(size=200_000)
    mc = np.mean(np.abs(z - 0.7)) - 0.5 * np.mean(np.abs(z - rng.permutation(z)))
    assert abs(float(gaussian_crps(0.0, 1.0, 0.7)) - mc) < 5e-3
    assert float(gaussian_crps(1.0, 2.0, 3.0)) == pytest.approx(2 * float(gaussian_crps(0.0, 1.0, 1.0)))


def test_normalised_difference_is_scale_invariant():
    y, y_ref = np.array([1.0, -2.0, 3.0]), np.array([1.0, -2.5, 2.0])
    assert np.allclose(normalised_difference(3 * y, 3 * y_ref), normalised_difference(y, y_ref))
    with pytest.raises(ValueError, match="differ in shape"):
        normalised_difference(y, y_ref[:2])


@needs_kit4
@needs_model
def test_shipped_model_reproduces_heldout_figures():
    model = _model()
    fp = model.fingerprint
    assert fp["n_electrodes"] == 16 and fp["n_injections"] == 79 and fp["n_cells"] == model.network.config.dim
    size = sum(f.stat().st_size for f in default_model_dir().iterdir() if f.is_file())
    assert size < 8e6  # a few MB
    problem, test, fits = _heldout8()
    assert problem.fingerprint() == fp  # same mesh and protocol as the training problem
    err = _errors(model, test, fits)
    stored = np.asarray(model.meta["heldout"]["per_case_l1_log_first8"])
    assert np.allclose(err, stored, atol=0.02), (err, stored)
    assert abs(err.mean() - stored.mean()) < 0.01


@needs_kit4
@needs_model
def test_wrong_weights_fail_the_heldout_check():
    model = _model()
    _, test, fits = _heldout8()
    stored = np.asarray(model.meta["heldout"]["per_case_l1_log_first8"])
    bad = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in bad.network.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    err = _errors(bad, test, fits)
    assert not np.allclose(err, stored, atol=0.02)
    assert err.mean() > stored.mean() + 0.1


@needs_kit4
@needs_model
def test_wrong_geometry_or_protocol_is_one_line_error():
    model, ref = _model(), _reference()
    data = eit.load_kit4(KIT4 / "datamat_4_2.mat")
    p32 = eit.pyeit_protocol(32)
    other = eit.EITData(p32.currents, p32.measurements, np.ones((p32.currents.shape[0], p32.measurements.shape[0])))
    with pytest.raises(ValueError, match="32 electrodes") as exc:
        reconstruct_learned(other, ref, model=model)
    assert "\n" not in str(exc.value)
    p16 = eit.pyeit_protocol(16)
    adj = eit.EITData(p16.currents, p16.measurements, np.ones((p16.currents.shape[0], p16.measurements.shape[0])))
    with pytest.raises(ValueError, match="protocol of 16 injections"):
        reconstruct_learned(adj, adj, model=model)
    swapped = eit.EITData(data.currents[::-1].copy(), data.measurements, data.voltages)
    with pytest.raises(ValueError, match="patterns differ"):
        reconstruct_learned(swapped, ref, model=model)
    with pytest.raises(ValueError, match="mesh"):
        reconstruct_learned(data, ref, model=model, mesh=kit4_mesh(16, 0.1))
    with pytest.raises(ValueError, match="reference frame"):
        reconstruct_learned(data, None, model=model)


@needs_kit4
@needs_model
def test_reconstruct_learned_on_kit4_result():
    res = reconstruct_learned(eit.load_kit4(KIT4 / "datamat_4_2.mat"), _reference(), model=_model(), n_particles=16)
    n = _model().fingerprint["n_cells"]
    assert res.mean.shape == res.std.shape == res.map.shape == (n,)
    assert np.array_equal(res.map, res.mean) and np.all(res.std > 0) and np.all(np.isnan(res.std_laplace))
    m = res.theta_mean
    assert np.allclose(res.mean, np.exp(m + np.minimum(res.theta_std, 3) ** 2 / 2))
    assert res.info["method"]["used"] == "learned"
    assert "held-out synthetic" in res.info["uncertainty"]["calibration_status"]
    assert math.isfinite(res.info["timings_s"]["total_s"])
    assert res.info["condition"]["in_training_range"]
    json.dumps(res.info)  # JSON-serialisable, as summary.json needs


@needs_kit4
@needs_model
def test_frame_outside_training_range_is_flagged():
    said = []
    res = reconstruct_learned(eit.load_kit4(KIT4 / "datamat_6_5.mat"), _reference(), model=_model(), n_particles=8,
                              log=said.append)
    assert not res.info["condition"]["in_training_range"]
    assert "OUTSIDE THE TRAINING RANGE" in res.info["uncertainty"]["calibration_status"]
    assert any("outside the learned model's training range" in m for m in said)


def _cli(argv):
    from invprob.apps.cli import main

    return main(argv)


@needs_kit4
@needs_model
def test_cli_method_learned(tmp_path):
    out = tmp_path / "learned"
    rc = _cli(["eit", "reconstruct", str(KIT4 / "datamat_4_2.mat"), "--difference", str(KIT4 / "datamat_1_0.mat"),
               "--method", "learned", "--out", str(out), "--no-xdmf", "-q"])
    assert rc == 0
    for name in ("result.npz", "summary.json", "result.png"):
        assert (out / name).exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"]["used"] == "learned" and summary["uncertainty"]["estimator"] == "particles"
    with np.load(out / "result.npz") as z:
        assert z["mean"].shape == (summary["n_cells"],)


@needs_kit4
def test_cli_method_learned_wrong_use(tmp_path, capsys):
    rc = _cli(["eit", "reconstruct", str(KIT4 / "datamat_4_2.mat"), "--method", "learned", "--out",
               str(tmp_path / "a"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--difference" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()


@needs_kit4
@needs_model
def test_cli_method_learned_other_geometry(tmp_path, capsys):
    p = eit.pyeit_protocol(16)
    volts = np.random.default_rng(0).normal(size=(p.currents.shape[0], p.measurements.shape[0]))
    np.savez(tmp_path / "d.npz", currents=p.currents, measurements=p.measurements, voltages=volts)
    rc = _cli(["eit", "reconstruct", str(tmp_path / "d.npz"), "--difference", str(tmp_path / "d.npz"),
               "--method", "learned", "--out", str(tmp_path / "b"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "learned KIT4 model" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err and not (tmp_path / "b").exists()


def test_reconconfig_learned_needs_difference():
    from invprob.solvers.eit import ReconConfig, reconstruct

    with pytest.raises(ValueError, match="difference imaging only"):
        reconstruct(None, None, ReconConfig(method="learned"))
