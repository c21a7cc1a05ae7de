"""Result objects: atomic NPZ + JSON saving, round trips, credible intervals."""

import json
import os
from statistics import NormalDist

import numpy as np
import pytest
import torch

import invprob.results as results
from invprob.results import MAPResult, PosteriorResult, atomic_write_bytes, jsonable


def _result(with_samples=True):
    g = torch.Generator().manual_seed(0)
    mean = torch.rand(1, 1, 6, 5, generator=g, dtype=torch.float64)
    std = torch.rand(1, 1, 6, 5, generator=g, dtype=torch.float64) + 0.1
    samples = torch.randn(4, 1, 6, 5, generator=g) if with_samples else None
    info = {"iterations": 10, "seed": 3, "wall_time_s": 1.5, "config": {"T": 0.1, "name": "pbrwp"},
            "history": torch.arange(3.0), "nan": float("nan"), "dtype": torch.float32}
    return PosteriorResult(mean=mean, std=std, map=mean * 0.5, samples=samples, info=info)


def test_posterior_result_save_round_trip(tmp_path):
    r = _result()
    out = r.save(tmp_path / "run")
    assert out == tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == ["info.json", "result.npz"]  # no temporary files left
    with np.load(out / "result.npz") as z:
        assert sorted(z.files) == ["map", "mean", "samples", "std"]
        np.testing.assert_array_equal(z["mean"], r.mean.numpy())
        np.testing.assert_array_equal(z["std"], r.std.numpy())
        np.testing.assert_array_equal(z["map"], r.map.numpy())
        np.testing.assert_array_equal(z["samples"], r.samples.numpy())
        assert z["mean"].dtype == np.float64 and z["samples"].dtype == np.float32
    info = json.loads((out / "info.json").read_text())
    assert info["iterations"] == 10 and info["config"] == {"T": 0.1, "name": "pbrwp"}
    assert info["history"] == [0.0, 1.0, 2.0] and info["nan"] == "nan"
    assert isinstance(info["dtype"], str)


def test_optional_arrays_are_omitted_and_overwrite(tmp_path):
    r = _result(with_samples=False)
    r.save(tmp_path)
    with np.load(tmp_path / "result.npz") as z:
        assert "samples" not in z.files
    r2 = PosteriorResult(mean=r.mean + 1, std=r.std)
    r2.save(tmp_path)  # replaces the previous files
    with np.load(tmp_path / "result.npz") as z:
        np.testing.assert_array_equal(z["mean"], (r.mean + 1).numpy())
        assert "map" not in z.files


def test_map_result_save(tmp_path):
    m = MAPResult(torch.ones(1, 1, 3, 3), {"method": "fista", "objective": [3.0, 2.0], "converged": True})
    m.save(tmp_path / "m")
    with np.load(tmp_path / "m" / "result.npz") as z:
        np.testing.assert_array_equal(z["map"], np.ones((1, 1, 3, 3), dtype=np.float32))
    assert json.loads((tmp_path / "m" / "info.json").read_text())["objective"] == [3.0, 2.0]


def test_results_are_frozen():
    r = _result()
    with pytest.raises(AttributeError):
        r.mean = r.std


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "info.json"
    atomic_write_bytes(target, b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["info.json"]  # the temporary file was removed


def test_credible_interval():
    r = _result()
    lo, hi = r.credible_interval(0.95)
    z = NormalDist().inv_cdf(0.975)
    assert torch.allclose(lo, r.mean - z * r.std, rtol=0, atol=1e-15)
    assert torch.allclose(hi, r.mean + z * r.std, rtol=0, atol=1e-15)
    assert abs(z - 1.959963984540054) < 1e-12
    lo68, hi68 = r.credible_interval(0.6826894921370859)
    assert torch.allclose(hi68 - lo68, 2 * r.std, rtol=1e-10, atol=0)
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="level"):
            r.credible_interval(bad)


def test_jsonable_large_arrays_summarised():
    assert jsonable(np.zeros((200, 200))) == "<array shape=[200, 200]>"
    assert jsonable({"a": np.float32(1.5), 2: (1, 2)}) == {"a": 1.5, "2": [1, 2]}
